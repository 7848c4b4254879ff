//! Serving stage of kiln: `kiln serve`, an HTTP server that speaks the KServe v2 / Open
//! Inference Protocol (the one Triton Inference Server and KServe use), so that existing
//! clients such as `tritonclient[http]`, load balancers and Prometheus dashboards work
//! unchanged.
//!
//! - Endpoints: `GET /v2`, `/v2/health/live`, `/v2/health/ready` (ready only after warm-up),
//!   `/v2/models/{name}[/versions/1]`, `.../ready`, `POST .../infer` (JSON `data` or Triton's
//!   binary tensor extension), `POST /v2/repository/index`, and `GET /metrics` (Prometheus).
//! - Concurrent requests are merged by kiln-infer's dynamic [`Batcher`] (up to `max_batch`
//!   rows within `max_delay`), and each request gets its own rows back.
//! - Limits: body size (413), queue depth (429 with `Retry-After`), per-request timeout
//!   (504), shape and datatype validation (400 naming the tensor). Errors use the protocol's
//!   `{"error": "..."}` form and never echo file system paths. Binds to 127.0.0.1 by default.
//! - [`Server::run`] drains in-flight requests when its shutdown future completes (the CLI
//!   wires it to SIGINT/SIGTERM).
//! - [`loadgen`] is a bounded load generator reporting throughput, p50/p95/p99 and the
//!   server's mean batch size, as Triton's perf_analyzer does.
//!
//! Design decision: one model per server process, version `1`. A fleet of models is a fleet of
//! processes behind a router; that keeps each server's memory and failure domain separate.
//!
//! ```no_run
//! use kiln_infer::{EngineKind, Model};
//! use kiln_serve::{ServeConfig, Server};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("model.onnx", EngineKind::Tract)?;
//! let server = Server::bind(model, "iris", ServeConfig::default()).await?;
//! println!("listening on http://{}", server.local_addr());
//! let summary = server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{} requests answered", summary.requests);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod app;
pub mod loadgen;
pub mod metrics;
pub mod protocol;

use app::AppState;
use kiln_infer::batcher::{Batcher, BatcherConfig};
use kiln_infer::{InferError, Model};
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The version every served model answers to.
pub const MODEL_VERSION: &str = "1";

/// Errors of the serving stage.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {reason}; pick another --port or stop the process using it")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The model failed to load, warm up or run.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// Warm-up failed, so the server never became ready.
    #[error("warm-up failed, the server never became ready: {0}")]
    Warmup(String),
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Http(String),
    /// Metrics could not be registered or rendered.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The load generator could not reach or use the server.
    #[error("load test against {url}: {reason}")]
    Load {
        /// The server's base URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen. Port 0 picks a free port ([`Server::local_addr`] says which).
    pub addr: SocketAddr,
    /// Dynamic batching limits and engine worker threads.
    pub batcher: BatcherConfig,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Longest time a request may take; longer ones get 504.
    pub request_timeout: Duration,
    /// Warm-up calls per batch size (1 and `max_batch`) before the server reports ready.
    pub warmup_iterations: usize,
    /// After shutdown begins, how long in-flight requests have to finish.
    pub drain_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            batcher: BatcherConfig::default(),
            max_body_bytes: 16 << 20,
            request_timeout: Duration::from_secs(10),
            warmup_iterations: 20,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What a server did, returned when it stops.
#[derive(Debug, Clone, Serialize)]
pub struct ServeSummary {
    /// Inference requests the batcher answered successfully or not.
    pub requests: u64,
    /// Rows inferred.
    pub rows: u64,
    /// Engine executions (requests / executions is the mean batch size in requests).
    pub executions: u64,
    /// Requests the engine failed.
    pub failures: u64,
    /// Seconds warm-up took, when it finished.
    pub warmup_s: Option<f64>,
    /// Seconds the server ran.
    pub uptime_s: f64,
    /// Whether in-flight requests all finished before the drain timeout.
    pub drained: bool,
}

/// A bound server, warming up; [`Server::run`] serves until shutdown.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    warmup: tokio::task::JoinHandle<Result<f64, InferError>>,
    started: Instant,
}

/// Checks that a model name is safe in a URL path.
fn check_name(name: &str) -> Result<(), ServeError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(ServeError::Config(format!(
            "model name {name:?} is not usable in a URL; use letters, digits, '_', '-' and '.' (--name)"
        )))
    }
}

impl Server {
    /// Binds `config.addr`, starts the batcher, and starts warming the model up in the
    /// background. The server answers `live` at once and `ready` once warm-up is done.
    pub async fn bind(model: Model, name: &str, config: ServeConfig) -> Result<Self, ServeError> {
        check_name(name)?;
        if model.info().input_width.is_none() {
            return Err(ServeError::Config(
                "the model's input width is not fixed, so requests cannot be validated; export it with a fixed feature count".into(),
            ));
        }
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| ServeError::Bind {
                addr: config.addr,
                reason: e.to_string(),
            })?;
        let model = Arc::new(model);
        let batcher = Batcher::spawn(Arc::clone(&model), config.batcher)?;
        let outputs = app::served_outputs(&model);
        let model_metadata = app::model_metadata_json(name, &model, &outputs);
        let warm_model = Arc::clone(&model);
        let sizes = [1, batcher.config().max_batch];
        let iterations = config.warmup_iterations;
        let warmup = tokio::task::spawn_blocking(move || warm_model.warmup(&sizes, iterations));
        let state = Arc::new(AppState {
            model,
            batcher,
            name: name.to_string(),
            config,
            metrics: metrics::Metrics::new(name)?,
            draining: Default::default(),
            outputs,
            model_metadata,
        });
        Ok(Self {
            listener,
            state,
            warmup,
            started: Instant::now(),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.addr)
    }

    /// Serves until `shutdown` completes, then stops reporting ready, refuses new requests,
    /// lets in-flight ones finish (up to the drain timeout) and stops the batcher. Returns
    /// an error when warm-up fails (the server shuts down rather than stay unready forever).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ServeSummary, ServeError> {
        let Server {
            listener,
            state,
            warmup,
            started,
        } = self;
        let warmup_result: Arc<std::sync::Mutex<Option<Result<f64, String>>>> = Default::default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Warm-up watcher: a failure stops the server.
        {
            let warmup_result = Arc::clone(&warmup_result);
            let stop_tx = stop_tx.clone();
            tokio::spawn(async move {
                let r = match warmup.await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the warm-up task failed: {e}")),
                };
                let failed = r.is_err();
                if let Ok(mut w) = warmup_result.lock() {
                    *w = Some(r);
                }
                if failed {
                    let _ = stop_tx.send(true);
                }
            });
        }
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let signal_state = Arc::clone(&state);
        let mut stop_a = stop_rx.clone();
        let graceful = async move {
            let _ = stop_a.wait_for(|s| *s).await;
            signal_state.draining.store(true, Ordering::Release);
            tracing::info!("shutdown requested; draining in-flight requests");
        };
        let router = app::router(Arc::clone(&state));
        let serve = axum::serve(listener, router).with_graceful_shutdown(graceful);
        let drain_timeout = state.config.drain_timeout;
        let mut stop_b = stop_rx;
        let deadline = async move {
            let _ = stop_b.wait_for(|s| *s).await;
            tokio::time::sleep(drain_timeout).await;
        };
        let drained = tokio::select! {
            r = serve => {
                r.map_err(|e| ServeError::Http(e.to_string()))?;
                true
            }
            () = deadline => false,
        };
        state.batcher.close();
        let stats = state.batcher.stats();
        let warm = warmup_result.lock().ok().and_then(|mut w| w.take());
        if let Some(Err(e)) = &warm {
            return Err(ServeError::Warmup(e.clone()));
        }
        Ok(ServeSummary {
            requests: stats.requests,
            rows: stats.rows,
            executions: stats.executions,
            failures: stats.failures,
            warmup_s: warm.and_then(Result::ok),
            uptime_s: started.elapsed().as_secs_f64(),
            drained,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_url_safe() {
        for good in ["iris", "model.int8", "a-b_c"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "..", "a/b", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
