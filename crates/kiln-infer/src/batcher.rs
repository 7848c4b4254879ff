//! The dynamic batcher: an async API over a [`Model`] that merges concurrent requests into
//! engine calls of up to `max_batch` rows, waiting at most `max_delay` for a batch to fill, and
//! answers each request with its own rows. It is the shared core of `kiln serve`.
//!
//! One dedicated thread owns the engine calls, so the async callers never block their runtime.
//! The queue is bounded: [`Batcher::predict`] waits for room (backpressure) and
//! [`Batcher::try_predict`] refuses at once with [`BatchError::QueueFull`], for servers that
//! answer 429/503 instead of queueing without bound.

use crate::{InferError, LatencyRecorder, LatencySummary, Model, Prediction};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most rows per engine call.
    pub max_batch: usize,
    /// Longest time the first request of a batch waits for others.
    pub max_delay: Duration,
    /// Most requests waiting in the queue.
    pub queue_depth: usize,
    /// Engine threads: while one runs a batch, the next collects the following one. 0 means 1.
    pub workers: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_delay: Duration::from_millis(2),
            queue_depth: 1024,
            workers: 1,
        }
    }
}

/// Why a batched request failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The queue is full; retry later.
    #[error("the request queue is full ({0} waiting); retry later")]
    QueueFull(usize),
    /// The batcher has shut down.
    #[error("the batcher has shut down")]
    Closed,
    /// The model failed on this request's rows.
    #[error(transparent)]
    Infer(#[from] InferError),
}

/// Counters and latency percentiles of a batcher.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatcherStats {
    /// Requests answered.
    pub requests: u64,
    /// Rows answered.
    pub rows: u64,
    /// Engine calls made (requests / executions is the mean batch size in requests).
    pub executions: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Panics caught in the engine (each failed its batch; the worker carried on).
    pub panics: u64,
    /// Time from enqueue to the start of the engine call.
    pub queue: LatencySummary,
    /// Engine time per call.
    pub compute: LatencySummary,
    /// Time from enqueue to the answer, per request.
    pub total: LatencySummary,
}

#[derive(Default)]
struct Shared {
    requests: u64,
    rows: u64,
    executions: u64,
    failures: u64,
    panics: u64,
    queue: LatencyRecorder,
    compute: LatencyRecorder,
    total: LatencyRecorder,
}

/// Where one request's time went, for servers that export per-request histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestTiming {
    /// From enqueue to the start of the engine call.
    pub queue: Duration,
    /// The engine time of the batch this request ran in.
    pub compute: Duration,
    /// Rows in that batch (all requests merged).
    pub batch_rows: usize,
}

type Answer = Result<(Vec<Prediction>, RequestTiming), InferError>;

/// The channel a request's answer comes back on.
type Reply = oneshot::Receiver<Answer>;

struct Request {
    features: Vec<f32>,
    rows: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Answer>,
}

/// A running dynamic batcher. Dropping it (or [`Batcher::shutdown`]) stops accepting requests,
/// answers those already queued, and joins the worker thread.
pub struct Batcher {
    tx: Option<mpsc::Sender<Request>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
    config: BatcherConfig,
    width: usize,
    closed: std::sync::atomic::AtomicBool,
}

impl Batcher {
    /// Starts the worker thread for `model`.
    pub fn spawn(model: Arc<Model>, config: BatcherConfig) -> Result<Self, InferError> {
        let width = model
            .info()
            .input_width
            .ok_or_else(|| InferError::Input("the model's input width is not fixed".into()))?;
        let config = BatcherConfig {
            max_batch: config.max_batch.max(1),
            queue_depth: config.queue_depth.max(1),
            workers: config.workers.max(1),
            ..config
        };
        let (tx, rx) = mpsc::channel(config.queue_depth);
        // Workers take turns collecting a batch; the lock is held only while collecting.
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let (model, rx, shared) = (Arc::clone(&model), Arc::clone(&rx), Arc::clone(&shared));
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-batcher-{i}"))
                .spawn(move || worker_loop(model, rx, config, shared));
            match spawned {
                Ok(w) => workers.push(w),
                Err(e) => {
                    // Dropping the sender ends the workers already started.
                    drop(tx);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(InferError::Input(format!(
                        "cannot start batcher thread {i}: {e}"
                    )));
                }
            }
        }
        Ok(Self {
            tx: Some(tx),
            workers,
            shared,
            config,
            width,
            closed: Default::default(),
        })
    }

    fn request(&self, features: Vec<f32>, rows: usize) -> Result<(Request, Reply), BatchError> {
        if rows == 0 || features.len() != rows * self.width {
            return Err(BatchError::Infer(InferError::Input(format!(
                "{} values do not make {rows} rows of {} features",
                features.len(),
                self.width
            ))));
        }
        let (reply, rx) = oneshot::channel();
        Ok((
            Request {
                features,
                rows,
                enqueued: Instant::now(),
                reply,
            },
            rx,
        ))
    }

    /// Queues `rows` rows, waiting for room when the queue is full, and returns their
    /// predictions.
    pub async fn predict(
        &self,
        features: Vec<f32>,
        rows: usize,
    ) -> Result<Vec<Prediction>, BatchError> {
        Ok(self.predict_timed(features, rows).await?.0)
    }

    /// Like [`Batcher::try_predict`], but refuses at once when the queue is full.
    pub async fn try_predict(
        &self,
        features: Vec<f32>,
        rows: usize,
    ) -> Result<Vec<Prediction>, BatchError> {
        Ok(self.try_predict_timed(features, rows).await?.0)
    }

    /// [`Batcher::predict`] that also says where the request's time went.
    pub async fn predict_timed(
        &self,
        features: Vec<f32>,
        rows: usize,
    ) -> Result<(Vec<Prediction>, RequestTiming), BatchError> {
        let (req, rx) = self.request(features, rows)?;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(BatchError::Closed);
        }
        let tx = self.tx.as_ref().ok_or(BatchError::Closed)?;
        tx.send(req).await.map_err(|_| BatchError::Closed)?;
        rx.await
            .map_err(|_| BatchError::Closed)?
            .map_err(BatchError::Infer)
    }

    /// [`Batcher::predict_timed`] that refuses at once with [`BatchError::QueueFull`] when the
    /// queue is full.
    pub async fn try_predict_timed(
        &self,
        features: Vec<f32>,
        rows: usize,
    ) -> Result<(Vec<Prediction>, RequestTiming), BatchError> {
        let (req, rx) = self.request(features, rows)?;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(BatchError::Closed);
        }
        let tx = self.tx.as_ref().ok_or(BatchError::Closed)?;
        tx.try_send(req).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BatchError::QueueFull(self.config.queue_depth),
            mpsc::error::TrySendError::Closed(_) => BatchError::Closed,
        })?;
        rx.await
            .map_err(|_| BatchError::Closed)?
            .map_err(BatchError::Infer)
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.tx
            .as_ref()
            .map_or(0, |t| self.config.queue_depth - t.capacity())
    }

    /// Counters and percentiles so far.
    pub fn stats(&self) -> BatcherStats {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        BatcherStats {
            requests: s.requests,
            rows: s.rows,
            executions: s.executions,
            failures: s.failures,
            panics: s.panics,
            queue: s.queue.summary(),
            compute: s.compute.summary(),
            total: s.total.summary(),
        }
    }

    /// Stops accepting requests; those already queued are still answered. Use it when shutting
    /// a server down gracefully, then [`Batcher::shutdown`] once callers are gone.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Stops accepting requests, answers the queued ones, and joins the worker thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// The batching limits in force (after defaults were applied).
    pub fn config(&self) -> BatcherConfig {
        self.config
    }

    fn stop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker_loop(
    model: Arc<Model>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Request>>>,
    config: BatcherConfig,
    shared: Arc<Mutex<Shared>>,
) {
    // A current-thread runtime only for the timed receive; the engine runs on this thread.
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let mut staging = Vec::new();
        loop {
            let batch = {
                let mut rx = rx.lock().await;
                let Some(first) = rx.recv().await else {
                    break;
                };
                let deadline = tokio::time::Instant::from_std(first.enqueued + config.max_delay);
                let mut rows = first.rows;
                let mut batch = vec![first];
                while rows < config.max_batch {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) => {
                            rows += r.rows;
                            batch.push(r);
                        }
                        _ => break,
                    }
                }
                batch
            };
            run_batch(&model, batch, &shared, &mut staging);
        }
    });
}

/// Runs one merged batch. `features` is the worker's staging buffer, reused for every batch.
fn run_batch(model: &Model, batch: Vec<Request>, shared: &Mutex<Shared>, features: &mut Vec<f32>) {
    let start = Instant::now();
    let total: usize = batch.iter().map(|r| r.rows).sum();
    features.clear();
    features.extend(batch.iter().flat_map(|r| r.features.iter().copied()));
    let features: &[f32] = features;
    let guarded = |x: &[f32], n: usize| -> (Result<Vec<Prediction>, InferError>, bool) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.predict(x, n))) {
            Ok(r) => (r, false),
            Err(_) => (
                Err(InferError::Run {
                    engine: "batcher",
                    reason: "the engine panicked on this batch".into(),
                }),
                true,
            ),
        }
    };
    let (result, panicked) = guarded(features, total);
    let mut executions = 1;
    let mut panics = u64::from(panicked);
    let answers: Vec<Result<Vec<Prediction>, InferError>> = match result {
        Ok(mut preds) if preds.len() == total => batch
            .iter()
            .map(|r| Ok(preds.drain(..r.rows).collect()))
            .collect(),
        // One bad request must not fail its neighbours: retry each request on its own.
        _ => batch
            .iter()
            .map(|r| {
                executions += 1;
                let (res, p) = guarded(&r.features, r.rows);
                panics += u64::from(p);
                res
            })
            .collect(),
    };
    let compute = start.elapsed();
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.executions += executions;
    s.panics += panics;
    s.compute.record(compute);
    for (req, answer) in batch.into_iter().zip(answers) {
        let queue = start.saturating_duration_since(req.enqueued);
        s.queue.record(queue);
        s.total.record(req.enqueued.elapsed());
        s.requests += 1;
        if answer.is_ok() {
            s.rows += req.rows as u64;
        } else {
            s.failures += 1;
        }
        let timing = RequestTiming {
            queue,
            compute,
            batch_rows: total,
        };
        // The caller may have gone away; that is not an error here.
        let _ = req.reply.send(answer.map(|p| (p, timing)));
    }
}
