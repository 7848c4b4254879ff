//! The HTTP routes and their handlers.

use crate::metrics::Metrics;
use crate::protocol::{
    self, HEADER_LENGTH, InferRequest, InferResponse, OutputData, ResponseOutput,
};
use crate::{MODEL_VERSION, ServeConfig};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_infer::batcher::{BatchError, Batcher};
use kiln_infer::{InferError, Model, Prediction};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the handlers share.
pub(crate) struct AppState {
    pub model: Arc<Model>,
    pub batcher: Batcher,
    pub name: String,
    pub config: ServeConfig,
    pub metrics: Metrics,
    /// Set when shutdown begins: the server stops reporting ready.
    pub draining: AtomicBool,
    /// The served outputs: (name, datatype, declared rank, which part of a prediction).
    pub outputs: Vec<ServedOutput>,
    pub model_metadata: Value,
}

#[derive(Clone, Debug)]
pub(crate) struct ServedOutput {
    pub name: String,
    pub rank: usize,
    pub kind: OutputKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum OutputKind {
    Scores,
    Label,
}

impl AppState {
    pub fn ready(&self) -> bool {
        self.model.is_ready() && !self.draining.load(Ordering::Acquire)
    }
}

/// An error in the protocol's JSON form: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; kiln serve speaks the KServe v2 protocol under /v2 and exposes /metrics",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong HTTP method for this endpoint: inference is POST, metadata, health and metrics are GET",
    )
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "kiln",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository(index)"],
    }))
}

async fn live() -> axum::Json<Value> {
    axum::Json(json!({ "live": true }))
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let ready = st.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({ "ready": ready }))).into_response()
}

async fn repository_index(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    let state = if st.ready() { "READY" } else { "UNAVAILABLE" };
    axum::Json(json!([{ "name": st.name, "version": MODEL_VERSION, "state": state }]))
}

fn check_model(st: &AppState, name: &str, version: Option<&str>) -> Result<(), ApiError> {
    if name != st.name {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown model '{name}'; this server serves '{}'", st.name),
        ));
    }
    if let Some(v) = version.filter(|v| *v != MODEL_VERSION) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{name}' has no version '{v}'; it serves version {MODEL_VERSION}"),
        ));
    }
    Ok(())
}

async fn model_metadata(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    check_model(&st, &name, None)?;
    Ok(axum::Json(st.model_metadata.clone()))
}

async fn model_metadata_v(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    check_model(&st, &name, Some(&version))?;
    Ok(axum::Json(st.model_metadata.clone()))
}

fn readiness(st: &AppState) -> Response {
    let ready = st.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "name": st.name, "ready": ready })),
    )
        .into_response()
}

async fn model_ready(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_model(&st, &name, None)?;
    Ok(readiness(&st))
}

async fn model_ready_v(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_model(&st, &name, Some(&version))?;
    Ok(readiness(&st))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let stats = st.batcher.stats();
    match st.metrics.render(stats.executions, st.batcher.queued()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn infer(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_counted(st, name, None, headers, body).await
}

async fn infer_v(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_counted(st, name, Some(version), headers, body).await
}

async fn infer_counted(
    st: Arc<AppState>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let _inflight = st.metrics.inflight();
    match infer_inner(&st, &name, version.as_deref(), &headers, body).await {
        Ok((response, rows, timing)) => {
            st.metrics
                .success(rows, timing.queue, timing.compute, start.elapsed());
            response
        }
        Err(e) => {
            st.metrics.failure(start.elapsed());
            e.into_response()
        }
    }
}

/// Reads the body, refusing one over the limit with 413 before reading all of it.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the server's limit of {limit} bytes (--max-body-bytes)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let limited = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .any(|c| c.to_string().contains("length limit exceeded"));
        if limited {
            too_large()
        } else {
            ApiError::bad(format!("cannot read the request body: {e}"))
        }
    })
}

type Timing = kiln_infer::batcher::RequestTiming;

async fn infer_inner(
    st: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Response, usize, Timing), ApiError> {
    check_model(st, name, version)?;
    // A request that arrived before shutdown began is answered: the HTTP layer stops taking
    // new connections and requests, and the batcher closes only after these finish.
    let body = read_body(headers, body, st.config.max_body_bytes).await?;
    if !st.model.is_ready() {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model '{name}' is not ready yet (warming up); poll /v2/health/ready"),
        );
        e.retry_after = Some(1);
        return Err(e);
    }
    let (json_part, binary) = split_binary(headers, &body)?;
    let req: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| ApiError::bad(format!("malformed inference request: {e}")))?;
    let (features, rows) = decode_input(st, &req, binary)?;
    let outputs = requested_outputs(st, &req)?;

    let mut timeout = st.config.request_timeout;
    if let Some(us) = protocol::u64_param(req.parameters.as_ref(), "timeout").filter(|&t| t > 0) {
        timeout = timeout.min(Duration::from_micros(us));
    }
    let answer = tokio::time::timeout(timeout, st.batcher.try_predict_timed(features, rows)).await;
    let (preds, timing) = match answer {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "inference did not finish within {} ms (--timeout-ms or the request's timeout parameter)",
                    timeout.as_millis()
                ),
            ));
        }
        Ok(Err(BatchError::QueueFull(n))) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the server's queue is full ({n} requests waiting); retry later"),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        Ok(Err(BatchError::Closed)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        }
        Ok(Err(BatchError::Infer(InferError::Input(m)))) => return Err(ApiError::bad(m)),
        Ok(Err(BatchError::Infer(e))) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("inference failed: {e}"),
            ));
        }
        Ok(Ok(v)) => v,
    };
    let response = encode_response(st, &req, &outputs, &preds, rows)?;
    Ok((response, rows, timing))
}

/// Splits a binary-extension body into its JSON header and tensor bytes.
fn split_binary<'a>(
    headers: &HeaderMap,
    body: &'a Bytes,
) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let n = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            ApiError::bad("the Inference-Header-Content-Length header is not a number")
        })?;
    if n > body.len() {
        return Err(ApiError::bad(format!(
            "Inference-Header-Content-Length says {n} bytes of JSON, the body has only {}",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

fn decode_input(
    st: &AppState,
    req: &InferRequest,
    binary: &[u8],
) -> Result<(Vec<f32>, usize), ApiError> {
    let info = st.model.info();
    protocol::decode_rows(req, binary, &info.input_name, info.input_width.unwrap_or(0))
        .map_err(ApiError::bad)
}

/// The outputs to return, with whether each travels as binary.
fn requested_outputs(
    st: &AppState,
    req: &InferRequest,
) -> Result<Vec<(ServedOutput, bool)>, ApiError> {
    let binary_default =
        protocol::bool_param(req.parameters.as_ref(), "binary_data_output").unwrap_or(false);
    match &req.outputs {
        None => Ok(st
            .outputs
            .iter()
            .map(|o| (o.clone(), binary_default))
            .collect()),
        Some(list) => list
            .iter()
            .map(|r| {
                if protocol::u64_param(r.parameters.as_ref(), "classification").is_some() {
                    return Err(ApiError::bad(format!(
                        "output '{}' asks for the classification extension, which kiln serve does not implement; request the label output instead",
                        r.name
                    )));
                }
                let o = st.outputs.iter().find(|o| o.name == r.name).ok_or_else(|| {
                    ApiError::bad(format!(
                        "unknown output '{}'; the model serves {}",
                        r.name,
                        st.outputs
                            .iter()
                            .map(|o| format!("'{}'", o.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let binary = protocol::bool_param(r.parameters.as_ref(), "binary_data")
                    .unwrap_or(binary_default);
                Ok((o.clone(), binary))
            })
            .collect(),
    }
}

fn encode_response(
    st: &AppState,
    req: &InferRequest,
    outputs: &[(ServedOutput, bool)],
    preds: &[Prediction],
    rows: usize,
) -> Result<Response, ApiError> {
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut binary_tail: Vec<u8> = Vec::new();
    for (o, binary) in outputs {
        let (data, per_row) = match o.kind {
            OutputKind::Scores => {
                let per_row = preds.first().map_or(0, |p| p.scores.len());
                let v: Vec<f32> = preds
                    .iter()
                    .flat_map(|p| p.scores.iter().copied())
                    .collect();
                (OutputData::F32(v), per_row)
            }
            OutputKind::Label => {
                let v: Vec<i64> = preds
                    .iter()
                    .map(|p| p.class_index.map_or(-1, |i| i as i64))
                    .collect();
                (OutputData::I64(v), 1)
            }
        };
        let shape = if o.rank == 1 {
            vec![rows * per_row]
        } else {
            vec![rows, per_row]
        };
        let datatype = match data {
            OutputData::F32(_) => "FP32",
            OutputData::I64(_) => "INT64",
        };
        if *binary {
            let bytes = data.to_le_bytes();
            let size = bytes.len();
            binary_tail.extend_from_slice(&bytes);
            tensors.push(ResponseOutput {
                name: o.name.clone(),
                datatype,
                shape,
                parameters: Some(json!({ "binary_data_size": size })),
                data: None,
            });
        } else {
            tensors.push(ResponseOutput {
                name: o.name.clone(),
                datatype,
                shape,
                parameters: None,
                data: Some(data),
            });
        }
    }
    let body = InferResponse {
        model_name: &st.name,
        model_version: MODEL_VERSION,
        id: req.id.clone(),
        outputs: tensors,
    };
    let json = serde_json::to_vec(&body).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}"),
        )
    })?;
    if binary_tail.is_empty() {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response());
    }
    let json_len = json.len();
    let mut all = json;
    all.extend_from_slice(&binary_tail);
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        all,
    )
        .into_response();
    r.headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(json_len));
    Ok(r)
}

/// The outputs a model serves: its score output and, when it has one, its label output.
pub(crate) fn served_outputs(model: &Model) -> Vec<ServedOutput> {
    let info = model.info();
    let rank = |i: usize| info.output_dims.get(i).map_or(2, Vec::len).clamp(1, 2);
    let mut out = vec![ServedOutput {
        name: info.output_names[info.scores_output].clone(),
        rank: rank(info.scores_output),
        kind: OutputKind::Scores,
    }];
    if let Some(l) = info.label_output {
        out.push(ServedOutput {
            name: info.output_names[l].clone(),
            rank: rank(l),
            kind: OutputKind::Label,
        });
    }
    out.sort_by_key(|o| {
        info.output_names
            .iter()
            .position(|n| *n == o.name)
            .unwrap_or(usize::MAX)
    });
    out
}

/// The model metadata document (`GET /v2/models/{name}`).
pub(crate) fn model_metadata_json(name: &str, model: &Model, outputs: &[ServedOutput]) -> Value {
    let info = model.info();
    let dims = |d: &[Option<i64>]| -> Vec<i64> { d.iter().map(|x| x.unwrap_or(-1)).collect() };
    let width = info.input_width.map_or(-1, |w| w as i64);
    let outs: Vec<Value> = outputs
        .iter()
        .map(|o| {
            let i = info
                .output_names
                .iter()
                .position(|n| *n == o.name)
                .unwrap_or(0);
            let mut shape = dims(info.output_dims.get(i).map_or(&[], Vec::as_slice));
            if shape.is_empty() {
                shape = if o.rank == 1 { vec![-1] } else { vec![-1, -1] };
            }
            json!({
                "name": o.name,
                "datatype": protocol::datatype_name(info.output_types.get(i).copied().unwrap_or(0)),
                "shape": shape,
            })
        })
        .collect();
    let mut params = serde_json::Map::new();
    params.insert("engine".into(), json!(model.engine_name()));
    params.insert(
        "task".into(),
        json!(format!("{:?}", info.task).to_lowercase()),
    );
    if let Some(c) = &info.class_names {
        params.insert("class_names".into(), json!(c));
    }
    if let Some(f) = &info.feature_names {
        params.insert("feature_names".into(), json!(f));
    }
    json!({
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "onnx",
        "inputs": [{ "name": info.input_name, "datatype": "FP32", "shape": [-1, width] }],
        "outputs": outs,
        "parameters": params,
    })
}
