//! The server in-process on a loopback port, driven over real HTTP: every endpoint, readiness
//! around warm-up, the error catalogue (each leaving the server up), limits, a concurrent
//! burst checked row by row against offline inference, and draining on shutdown.

use kiln_infer::batcher::BatcherConfig;
use kiln_infer::{EngineKind, Model};
use kiln_onnx::proto::data_type::{FLOAT, INT64};
use kiln_onnx::{Dim, GraphBuilder, attr_int};
use kiln_serve::{ServeConfig, ServeSummary, Server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// An MLP `width → hidden… → 3` with a softmax `probabilities` and an ArgMax `label` output.
fn mlp(width: usize, hidden: &[usize]) -> Model {
    let mut g = GraphBuilder::new("mlp");
    let n = || Dim::Symbol("N".into());
    g.input("features", FLOAT, &[n(), Dim::Fixed(width)]);
    let mut x = "features".to_string();
    let mut fan_in = width;
    for (layer, &fan_out) in hidden.iter().chain(&[3]).enumerate() {
        let w: Vec<f32> = (0..fan_in * fan_out)
            .map(|i| {
                ((i * (37 + layer * 16) % 101) as f32 / 101.0 - 0.5) * 0.4 / (fan_in as f32).sqrt()
            })
            .collect();
        let w = g.constant_f32(&format!("w{layer}"), &[fan_in, fan_out], &w);
        x = g.node("MatMul", &[&x, &w], &[]);
        if layer < hidden.len() {
            x = g.node("Relu", &[&x], &[]);
        }
        fan_in = fan_out;
    }
    g.node_named("Softmax", &[&x], &["probabilities"], &[attr_int("axis", 1)]);
    g.node_named(
        "ArgMax",
        &["probabilities"],
        &["label"],
        &[attr_int("axis", 1), attr_int("keepdims", 0)],
    );
    g.output("probabilities", FLOAT, &[n(), Dim::Fixed(3)]);
    g.output("label", INT64, &[n()]);
    let bytes = kiln_onnx::encode(&g.into_model(17));
    Model::from_bytes(&bytes, std::path::Path::new("<test>"), EngineKind::Tract).expect("model")
}

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<ServeSummary, kiln_serve::ServeError>>,
    client: reqwest::Client,
}

impl Running {
    async fn stop(mut self) -> ServeSummary {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.expect("join").expect("server result")
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .client
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }
    async fn wait_ready(&self) {
        for _ in 0..600 {
            if self.get("/v2/health/ready").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server never became ready");
    }
}

async fn start(model: Model, config: ServeConfig) -> Running {
    let config = ServeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..config
    };
    let server = Server::bind(model, "mlp", config).await.expect("bind");
    let base = format!("http://{}", server.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        base,
        stop: Some(tx),
        task,
        client: reqwest::Client::new(),
    }
}

fn request(rows: &[Vec<f32>]) -> String {
    let width = rows.first().map_or(0, Vec::len);
    json!({
        "id": "r1",
        "inputs": [{ "name": "features", "shape": [rows.len(), width], "datatype": "FP32", "data": rows }],
    })
    .to_string()
}

fn row(i: usize, width: usize) -> Vec<f32> {
    (0..width)
        .map(|j| ((i * 31 + j * 17) % 23) as f32 / 5.0 - 2.3)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_in_the_protocol_form() {
    let s = start(mlp(4, &[8]), ServeConfig::default()).await;
    s.wait_ready().await;
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    let (code, meta) = s.get("/v2").await;
    assert_eq!(code, 200);
    assert_eq!(meta["name"], "kiln");
    assert!(
        meta["extensions"]
            .to_string()
            .contains("binary_tensor_data")
    );

    for path in ["/v2/models/mlp", "/v2/models/mlp/versions/1"] {
        let (code, m) = s.get(path).await;
        assert_eq!(code, 200, "{path}");
        assert_eq!(m["name"], "mlp");
        assert_eq!(m["versions"], json!(["1"]));
        assert_eq!(
            m["inputs"],
            json!([{ "name": "features", "datatype": "FP32", "shape": [-1, 4] }])
        );
        assert_eq!(
            m["outputs"],
            json!([
                { "name": "probabilities", "datatype": "FP32", "shape": [-1, 3] },
                { "name": "label", "datatype": "INT64", "shape": [-1] }
            ])
        );
    }
    assert_eq!(s.get("/v2/models/mlp/ready").await.0, 200);
    assert_eq!(s.get("/v2/models/mlp/versions/1/ready").await.0, 200);
    let (code, index, _) = s.post("/v2/repository/index", "").await;
    assert_eq!(code, 200);
    assert_eq!(index[0]["name"], "mlp");
    assert_eq!(index[0]["state"], "READY");

    // JSON inference, flat and nested data, with and without a version in the path.
    let rows: Vec<Vec<f32>> = (0..3).map(|i| row(i, 4)).collect();
    let offline = mlp(4, &[8]).predict(&rows.concat(), 3).expect("offline");
    for path in ["/v2/models/mlp/infer", "/v2/models/mlp/versions/1/infer"] {
        let (code, r, _) = s.post(path, request(&rows)).await;
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["model_name"], "mlp");
        assert_eq!(r["id"], "r1");
        assert_eq!(r["outputs"][0]["name"], "probabilities");
        assert_eq!(r["outputs"][0]["shape"], json!([3, 3]));
        assert_eq!(r["outputs"][1]["datatype"], "INT64");
        let probs: Vec<f32> = serde_json::from_value(r["outputs"][0]["data"].clone()).expect("f32");
        let want: Vec<f32> = offline.iter().flat_map(|p| p.scores.clone()).collect();
        assert_eq!(probs, want);
        let labels: Vec<i64> =
            serde_json::from_value(r["outputs"][1]["data"].clone()).expect("i64");
        let want: Vec<i64> = offline
            .iter()
            .map(|p| p.class_index.expect("class") as i64)
            .collect();
        assert_eq!(labels, want);
    }
    // Only the requested output comes back.
    let body = json!({
        "inputs": [{ "name": "features", "shape": [1, 4], "datatype": "FP32", "data": row(0, 4) }],
        "outputs": [{ "name": "label" }],
    });
    let (code, r, _) = s.post("/v2/models/mlp/infer", body.to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(r["outputs"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["outputs"][0]["name"], "label");

    // Binary tensors both ways (Triton's extension, tritonclient's default).
    let x = rows.concat();
    let header = json!({
        "inputs": [{ "name": "features", "shape": [3, 4], "datatype": "FP32",
                     "parameters": { "binary_data_size": x.len() * 4 } }],
        "parameters": { "binary_data_output": true },
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    let r = s
        .client
        .post(s.url("/v2/models/mlp/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .expect("binary POST");
    assert_eq!(r.status().as_u16(), 200);
    let json_len: usize = r
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("response header length");
    let bytes = r.bytes().await.expect("bytes");
    let head: Value = serde_json::from_slice(&bytes[..json_len]).expect("json head");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 36);
    assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 24);
    let probs: Vec<f32> = bytes[json_len..json_len + 36]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(
        probs,
        offline
            .iter()
            .flat_map(|p| p.scores.clone())
            .collect::<Vec<_>>()
    );

    let r = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("text");
    for name in [
        "kiln_inference_requests_total{model=\"mlp\",outcome=\"success\"} 4",
        "kiln_inference_count_total{model=\"mlp\"} 10",
        "kiln_inference_exec_count_total",
        "kiln_inference_queue_duration_seconds_bucket",
        "kiln_inference_compute_duration_seconds_bucket",
        "kiln_inference_inflight_requests",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    let summary = s.stop().await;
    assert_eq!(summary.rows, 10);
    assert!(summary.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_warm_up() {
    // Enough warm-up work to take a while: live at once, ready (and inference) only after.
    let config = ServeConfig {
        warmup_iterations: 3000,
        ..ServeConfig::default()
    };
    let s = start(mlp(256, &[512]), config).await;
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    let (code, body) = s.get("/v2/health/ready").await;
    assert_eq!(code, 503, "ready before warm-up: {body}");
    assert_eq!(s.get("/v2/models/mlp/ready").await.0, 503);
    let (code, err, headers) = s
        .post("/v2/models/mlp/infer", request(&[row(0, 256)]))
        .await;
    assert_eq!(code, 503);
    assert!(
        err["error"].as_str().unwrap_or("").contains("warming up"),
        "{err}"
    );
    assert!(headers.contains_key("retry-after"));
    s.wait_ready().await;
    assert_eq!(s.get("/v2/models/mlp/ready").await.0, 200);
    let (code, _, _) = s
        .post("/v2/models/mlp/infer", request(&[row(0, 256)]))
        .await;
    assert_eq!(code, 200);
    let summary = s.stop().await;
    assert!(summary.warmup_s.is_some_and(|w| w > 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status_and_the_server_stays_up() {
    let config = ServeConfig {
        max_body_bytes: 4096,
        ..ServeConfig::default()
    };
    let s = start(mlp(4, &[8]), config).await;
    s.wait_ready().await;
    let good = request(&[row(1, 4)]);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"inputs\": [".into(), 400, "malformed"),
        ("not an object", "[1,2]".into(), 400, "malformed"),
        (
            "wrong shape",
            json!({"inputs":[{"name":"features","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}).to_string(),
            400,
            "input 'features' has shape [1, 5]",
        ),
        (
            "data does not fill the shape",
            json!({"inputs":[{"name":"features","shape":[2,4],"datatype":"FP32","data":[1,2,3,4]}]}).to_string(),
            400,
            "input 'features' has 4 values",
        ),
        (
            "wrong datatype",
            json!({"inputs":[{"name":"features","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}).to_string(),
            400,
            "input 'features' has datatype INT64",
        ),
        (
            "wrong input name",
            json!({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}).to_string(),
            400,
            "unknown input 'x'",
        ),
        (
            "strings as data",
            json!({"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":["a","b","c","d"]}]}).to_string(),
            400,
            "malformed",
        ),
        (
            "unknown output",
            json!({"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],
                   "outputs":[{"name":"logits"}]}).to_string(),
            400,
            "unknown output 'logits'",
        ),
        ("oversized body", format!("{{\"pad\":\"{}\"}}", "x".repeat(10_000)), 413, "larger than"),
    ];
    for (what, body, status, needle) in cases {
        let (code, err, _) = s.post("/v2/models/mlp/infer", body).await;
        assert_eq!(code, status, "{what}: {err}");
        let msg = err["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
        // The server is still up and still right after each bad request.
        let (code, _, _) = s.post("/v2/models/mlp/infer", good.clone()).await;
        assert_eq!(code, 200, "after {what}");
    }
    let (code, err, _) = s.post("/v2/models/other/infer", good.clone()).await;
    assert_eq!(code, 404);
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("unknown model 'other'")
    );
    assert_eq!(s.get("/v2/models/mlp/versions/7").await.0, 404);
    let (code, err) = s.get("/v2/models/mlp/infer").await;
    assert_eq!(code, 405);
    assert!(
        err["error"].as_str().unwrap_or("").contains("POST"),
        "{err}"
    );
    let (code, err) = s.get("/nowhere").await;
    assert_eq!(code, 404);
    assert!(err["error"].is_string());
    // No error message leaks a file system path.
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(
        text.contains("kiln_inference_requests_total{model=\"mlp\",outcome=\"failure\"} 10"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_burst_matches_offline_inference_row_by_row() {
    let config = ServeConfig {
        batcher: BatcherConfig {
            max_batch: 32,
            max_delay: Duration::from_millis(5),
            queue_depth: 1024,
            workers: 2,
        },
        ..ServeConfig::default()
    };
    let s = start(mlp(16, &[32]), config).await;
    s.wait_ready().await;
    let offline = mlp(16, &[32]);
    let mut tasks = Vec::new();
    for i in 0..150usize {
        let rows: Vec<Vec<f32>> = (0..1 + i % 4).map(|k| row(i * 7 + k, 16)).collect();
        let (client, url) = (s.client.clone(), s.url("/v2/models/mlp/infer"));
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .body(request(&rows))
                .send()
                .await
                .expect("POST");
            let status = r.status().as_u16();
            let v: Value = r.json_value().await;
            (rows, status, v)
        }));
    }
    for t in tasks {
        let (rows, status, v) = t.await.expect("task");
        assert_eq!(status, 200, "{v}");
        let want = offline
            .predict(&rows.concat(), rows.len())
            .expect("offline");
        let probs: Vec<f32> =
            serde_json::from_value(v["outputs"][0]["data"].clone()).expect("probs");
        let labels: Vec<i64> =
            serde_json::from_value(v["outputs"][1]["data"].clone()).expect("labels");
        assert_eq!(labels.len(), rows.len());
        for (r, p) in want.iter().enumerate() {
            assert_eq!(labels[r], p.class_index.expect("class") as i64, "row {r}");
            for (c, w) in p.scores.iter().enumerate() {
                let got = probs[r * 3 + c];
                assert!((got - w).abs() <= 1e-6, "row {r} class {c}: {got} vs {w}");
            }
        }
    }
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    let exec = kiln_serve::loadgen::scrape_counter(&text, "kiln_inference_exec_count_total")
        .expect("exec");
    let count =
        kiln_serve::loadgen::scrape_counter(&text, "kiln_inference_count_total").expect("count");
    assert_eq!(count as usize, (0..150).map(|i| 1 + i % 4).sum::<usize>());
    assert!(
        exec < 150.0,
        "requests were batched: {exec} executions for 150 requests"
    );
    s.stop().await;
}

/// A model whose requests are tiny but slow (8 MFLOP per row): while the engine works on one
/// request, the others arrive, so queueing and timeouts show deterministically.
fn slow_model() -> Model {
    mlp(4, &[2048, 2048])
}

fn slow_request(rows: usize) -> String {
    request(&(0..rows).map(|i| row(i, 4)).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_refuses_with_retry_after_and_timeouts_give_504() {
    let config = ServeConfig {
        batcher: BatcherConfig {
            max_batch: 256,
            max_delay: Duration::from_millis(1),
            queue_depth: 1,
            workers: 1,
        },
        warmup_iterations: 1,
        ..ServeConfig::default()
    };
    let s = start(slow_model(), config).await;
    s.wait_ready().await;
    let body = slow_request(256);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (client, url, body) = (
            s.client.clone(),
            s.url("/v2/models/mlp/infer"),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).body(body).send().await.expect("POST");
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("task"));
    }
    assert!(codes.iter().any(|c| c.0 == 200), "{codes:?}");
    assert!(
        codes.iter().any(|&(c, retry)| c == 429 && retry),
        "a full queue answers 429 with Retry-After: {codes:?}"
    );
    assert!(codes.iter().all(|c| c.0 == 200 || c.0 == 429), "{codes:?}");

    // The protocol's per-request timeout (microseconds) is honoured.
    let timed = json!({
        "inputs": [{ "name": "features", "shape": [256, 4], "datatype": "FP32",
                     "data": (0..256).map(|i| row(i, 4)).collect::<Vec<_>>() }],
        "parameters": { "timeout": 100 },
    });
    let (code, err, _) = s.post("/v2/models/mlp/infer", timed.to_string()).await;
    assert_eq!(code, 504, "{err}");
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    // A long batching window keeps the requests queued (in flight) for up to a second.
    let config = ServeConfig {
        batcher: BatcherConfig {
            max_batch: 10_000,
            max_delay: Duration::from_millis(1000),
            queue_depth: 64,
            workers: 1,
        },
        warmup_iterations: 1,
        ..ServeConfig::default()
    };
    let mut s = start(mlp(4, &[8]), config).await;
    s.wait_ready().await;
    let body = request(&[row(3, 4)]);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, body) = (
                s.client.clone(),
                s.url("/v2/models/mlp/infer"),
                body.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Once all four are in flight, ask the server to stop while they are being computed.
    let mut seen = 0.0;
    for _ in 0..400 {
        let text = s
            .client
            .get(s.url("/metrics"))
            .send()
            .await
            .expect("m")
            .text()
            .await
            .expect("t");
        seen = kiln_serve::loadgen::scrape_counter(&text, "kiln_inference_inflight_requests")
            .unwrap_or(0.0);
        if seen >= 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen, 4.0, "the four requests are in flight");
    if let Some(stop) = s.stop.take() {
        let _ = stop.send(());
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("task").expect("answered"),
            200,
            "in-flight requests finish"
        );
    }
    let base = s.base.clone();
    let summary = s.stop().await;
    assert!(summary.drained);
    assert_eq!(summary.requests, 4);
    // And nothing listens any more.
    assert!(
        reqwest::get(format!("{base}/v2/health/live"))
            .await
            .is_err()
    );
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let text = self.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}
