//! A bounded load generator for a KServe v2 server (kiln's or Triton's): N concurrent clients
//! send inference requests until a request count or a time limit is reached, and the report
//! gives throughput, latency percentiles and, from the server's `/metrics`, the mean batch
//! size its dynamic batcher achieved, as Triton's perf_analyzer does.

use crate::ServeError;
use kiln_infer::{LatencyRecorder, LatencySummary};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The server's base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// The model; discovered from the repository index when `None`.
    pub model: Option<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Total requests (the count bound).
    pub requests: usize,
    /// Longest time to send for (the time bound).
    pub max_duration: Duration,
    /// Rows per request.
    pub rows_per_request: usize,
    /// Send tensors with the binary extension instead of JSON `data`.
    pub binary: bool,
    /// Seed of the synthetic rows.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000".into(),
            model: None,
            clients: 100,
            requests: 20_000,
            max_duration: Duration::from_secs(20),
            rows_per_request: 1,
            binary: false,
            seed: 0,
        }
    }
}

/// What the load test measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The model driven.
    pub model: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Rows per request.
    pub rows_per_request: usize,
    /// Requests answered with 200.
    pub requests: u64,
    /// Requests that failed (non-200 or transport error).
    pub failures: u64,
    /// The first failure's message, when there was one.
    pub first_failure: Option<String>,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Client-side latency of successful requests.
    pub latency: LatencySummary,
    /// Engine executions during the test, from the server's metrics (kiln servers only).
    pub executions: Option<u64>,
    /// Mean rows per engine execution, from the server's metrics.
    pub mean_batch_rows: Option<f64>,
    /// The server's resident memory, sampled from its `process_resident_memory_bytes` about
    /// once a second: (seconds into the run, bytes).
    pub rss_samples: Vec<(f64, u64)>,
    /// RSS growth from the first sample at or after a tenth of the run (allocator pools and
    /// connection buffers have settled by then) to the last, percent.
    pub rss_growth_percent: Option<f64>,
}

/// RSS growth from the first sample at or after a tenth of the run to the last, percent.
pub fn rss_growth(samples: &[(f64, u64)]) -> Option<f64> {
    let (end_t, end) = *samples.last()?;
    let (_, base) = *samples.iter().find(|(t, _)| *t >= end_t / 10.0)?;
    (base > 0).then(|| (end as f64 - base as f64) / base as f64 * 100.0)
}

fn load_err(url: &str, reason: impl std::fmt::Display) -> ServeError {
    ServeError::Load {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// Reads a counter's value from a Prometheus text exposition.
pub fn scrape_counter(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, ServeError> {
    let r = client.get(url).send().await.map_err(|e| load_err(url, e))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| load_err(url, e))?;
    if !status.is_success() {
        return Err(load_err(url, format!("HTTP {status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| load_err(url, e))
}

async fn scrape(client: &reqwest::Client, base: &str) -> Option<String> {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

async fn metrics_counts(client: &reqwest::Client, base: &str) -> Option<(f64, f64)> {
    let text = scrape(client, base).await?;
    Some((
        scrape_counter(&text, "kiln_inference_exec_count_total")?,
        scrape_counter(&text, "kiln_inference_count_total")?,
    ))
}

/// A request body of `rows` synthetic rows, and its binary header length when binary.
fn request_body(
    input: &str,
    width: usize,
    rows: usize,
    binary: bool,
    seed: u64,
) -> (Vec<u8>, Option<usize>) {
    // xorshift64*: reproducible values in [-2, 2) without a dependency.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..rows * width)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let u = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            u * 4.0 - 2.0
        })
        .collect();
    if binary {
        let header = json!({
            "inputs": [{ "name": input, "shape": [rows, width], "datatype": "FP32",
                         "parameters": { "binary_data_size": values.len() * 4 } }],
        })
        .to_string();
        let len = header.len();
        let mut body = header.into_bytes();
        body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        (body, Some(len))
    } else {
        let body = json!({
            "inputs": [{ "name": input, "shape": [rows, width], "datatype": "FP32", "data": values }],
        })
        .to_string();
        (body.into_bytes(), None)
    }
}

/// Runs the load test. It is bounded by both `requests` and `max_duration`.
pub async fn run_load(opts: &LoadOptions) -> Result<LoadReport, ServeError> {
    let base = opts.url.trim_end_matches('/').to_string();
    let clients = opts.clients.max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| load_err(&base, e))?;
    let model = match &opts.model {
        Some(m) => m.clone(),
        None => {
            let url = format!("{base}/v2/repository/index");
            let r = client
                .post(&url)
                .send()
                .await
                .map_err(|e| load_err(&url, e))?;
            let text = r.text().await.map_err(|e| load_err(&url, e))?;
            let index: Value = serde_json::from_str(&text).map_err(|e| load_err(&url, e))?;
            index
                .get(0)
                .and_then(|m| m["name"].as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    load_err(
                        &url,
                        "the repository index lists no model; pass --model-name",
                    )
                })?
        }
    };
    let meta = get_json(&client, &format!("{base}/v2/models/{model}")).await?;
    let input = &meta["inputs"][0];
    let input_name = input["name"].as_str().unwrap_or("input").to_string();
    let width = input["shape"]
        .get(1)
        .and_then(Value::as_i64)
        .filter(|&w| w > 0)
        .ok_or_else(|| load_err(&base, format!("model '{model}' has no fixed input width")))?
        as usize;
    let ready = client
        .get(format!("{base}/v2/models/{model}/ready"))
        .send()
        .await
        .map_err(|e| load_err(&base, e))?;
    if !ready.status().is_success() {
        return Err(load_err(&base, format!("model '{model}' is not ready")));
    }
    let rows = opts.rows_per_request.max(1);
    // Shared, reference-counted bodies: a request clones a pointer, not the bytes.
    let bodies: Arc<Vec<(bytes::Bytes, Option<usize>)>> = Arc::new(
        (0..64)
            .map(|i| {
                let (b, h) = request_body(&input_name, width, rows, opts.binary, opts.seed + i);
                (bytes::Bytes::from(b), h)
            })
            .collect(),
    );
    let before = metrics_counts(&client, &base).await;
    let url: Arc<str> = format!("{base}/v2/models/{model}/infer").into();
    let sent = Arc::new(AtomicU64::new(0));
    let total = opts.requests as u64;
    let start = Instant::now();
    let deadline = start + opts.max_duration;
    let done = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let (client, base, done) = (client.clone(), base.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if let Some(rss) = scrape(&client, &base)
                    .await
                    .and_then(|t| scrape_counter(&t, "process_resident_memory_bytes"))
                {
                    samples.push((start.elapsed().as_secs_f64(), rss as u64));
                }
                tokio::select! {
                    () = done.notified() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            samples
        })
    };
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, url, bodies, sent) = (
            client.clone(),
            Arc::clone(&url),
            Arc::clone(&bodies),
            Arc::clone(&sent),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = LatencyRecorder::new();
            let (mut ok, mut failed, mut first) = (0u64, 0u64, None::<String>);
            loop {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let (body, header) = &bodies[(i % bodies.len() as u64) as usize];
                let mut req = client.post(&*url).body(body.clone());
                req = match header {
                    Some(n) => req
                        .header(crate::protocol::HEADER_LENGTH, *n)
                        .header("content-type", "application/octet-stream"),
                    None => req.header("content-type", "application/json"),
                };
                let t = Instant::now();
                let outcome = match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(r) => {
                        let status = r.status();
                        Err(format!(
                            "HTTP {status}: {}",
                            r.text().await.unwrap_or_default()
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => {
                        lat.record(t.elapsed());
                        ok += 1;
                    }
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            (lat, ok, failed, first)
        }));
    }
    let mut lat = LatencyRecorder::new();
    let (mut ok, mut failed, mut first_failure) = (0u64, 0u64, None);
    for t in tasks {
        let (l, o, f, first) = t.await.map_err(|e| load_err(&base, e))?;
        lat.merge(&l);
        ok += o;
        failed += f;
        if first_failure.is_none() {
            first_failure = first;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    done.notify_one();
    let mut rss_samples = sampler.await.unwrap_or_default();
    if let Some(rss) = scrape(&client, &base)
        .await
        .and_then(|t| scrape_counter(&t, "process_resident_memory_bytes"))
    {
        rss_samples.push((start.elapsed().as_secs_f64(), rss as u64));
    }
    let after = metrics_counts(&client, &base).await;
    let (executions, mean_batch_rows) = match (before, after) {
        (Some((e0, n0)), Some((e1, n1))) if e1 > e0 => {
            (Some((e1 - e0) as u64), Some((n1 - n0) / (e1 - e0)))
        }
        _ => (None, None),
    };
    Ok(LoadReport {
        model,
        clients,
        rows_per_request: rows,
        requests: ok,
        failures: failed,
        first_failure,
        seconds,
        requests_per_s: ok as f64 / seconds.max(1e-9),
        rows_per_s: (ok * rows as u64) as f64 / seconds.max(1e-9),
        latency: lat.summary(),
        executions,
        mean_batch_rows,
        rss_growth_percent: rss_growth(&rss_samples),
        rss_samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_scraped_by_exact_name() {
        let text = "# HELP x\nkiln_inference_count_total{model=\"m\"} 12\nkiln_inference_count_total_extra 5\nkiln_inference_exec_count_total{model=\"m\"} 3\n";
        assert_eq!(
            scrape_counter(text, "kiln_inference_count_total"),
            Some(12.0)
        );
        assert_eq!(
            scrape_counter(text, "kiln_inference_exec_count_total"),
            Some(3.0)
        );
        assert_eq!(scrape_counter(text, "missing"), None);
    }

    #[test]
    fn rss_growth_ignores_the_first_tenth() {
        let samples = [(0.0, 10), (1.0, 100), (5.0, 100), (10.0, 103)];
        assert_eq!(rss_growth(&samples).map(|g| g.round()), Some(3.0));
        assert_eq!(rss_growth(&[]), None);
    }

    #[test]
    fn binary_bodies_carry_their_header_length() {
        let (body, len) = request_body("x", 3, 2, true, 1);
        let len = len.expect("binary");
        let header: Value = serde_json::from_slice(&body[..len]).expect("json header");
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 24);
        assert_eq!(body.len() - len, 24);
        let (json_body, none) = request_body("x", 3, 2, false, 1);
        assert!(none.is_none());
        let v: Value = serde_json::from_slice(&json_body).expect("json");
        assert_eq!(v["inputs"][0]["data"].as_array().map(Vec::len), Some(6));
    }
}
