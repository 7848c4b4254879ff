//! Prometheus metrics in the text exposition format, named after Prometheus conventions
//! (`_total` counters, `_seconds` histograms, base units) and modelled on Triton's set.

use crate::ServeError;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    inferences: IntCounter,
    executions: IntCounter,
    queue: Histogram,
    compute: Histogram,
    request: Histogram,
    inflight: IntGauge,
    queued: IntGauge,
    seen_executions: AtomicU64,
}

/// Decrements the in-flight gauge when a request ends, however it ends.
pub struct InflightGuard<'a>(&'a IntGauge);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Latency buckets from 25 µs to about 13 s, doubling.
fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(25e-6, 2.0, 20).unwrap_or_else(|_| vec![0.001, 0.01, 0.1, 1.0])
}

fn err(e: prometheus::Error) -> ServeError {
    ServeError::Metrics(e.to_string())
}

impl Metrics {
    /// Registers the metrics of one served model.
    pub fn new(model: &str) -> Result<Self, ServeError> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("model", model);
        let hist = |name: &str, help: &str| {
            HistogramOpts::new(name, help)
                .const_label("model", model)
                .buckets(buckets())
        };
        let requests = IntCounterVec::new(
            opts(
                "kiln_inference_requests_total",
                "Inference requests answered, by outcome (success or failure).",
            ),
            &["outcome"],
        )
        .map_err(err)?;
        let inferences = IntCounter::with_opts(opts(
            "kiln_inference_count_total",
            "Rows inferred (a request of N rows counts N).",
        ))
        .map_err(err)?;
        let executions = IntCounter::with_opts(opts(
            "kiln_inference_exec_count_total",
            "Engine executions; inference count / exec count is the mean batch size.",
        ))
        .map_err(err)?;
        let queue = Histogram::with_opts(hist(
            "kiln_inference_queue_duration_seconds",
            "Time a request waited in the batching queue.",
        ))
        .map_err(err)?;
        let compute = Histogram::with_opts(hist(
            "kiln_inference_compute_duration_seconds",
            "Engine time of the batch a request ran in.",
        ))
        .map_err(err)?;
        let request = Histogram::with_opts(hist(
            "kiln_inference_request_duration_seconds",
            "Time from the request's arrival to its answer, inside the server.",
        ))
        .map_err(err)?;
        let inflight = IntGauge::with_opts(opts(
            "kiln_inference_inflight_requests",
            "Inference requests being handled now.",
        ))
        .map_err(err)?;
        let queued = IntGauge::with_opts(opts(
            "kiln_inference_queue_requests",
            "Requests waiting in the batching queue at scrape time.",
        ))
        .map_err(err)?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(inferences.clone()),
            Box::new(executions.clone()),
            Box::new(queue.clone()),
            Box::new(compute.clone()),
            Box::new(request.clone()),
            Box::new(inflight.clone()),
            Box::new(queued.clone()),
        ] {
            registry.register(c).map_err(err)?;
        }
        // process_resident_memory_bytes, process_cpu_seconds_total, open fds, start time.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(err)?;
        // Both outcomes exist from the start, so that rate() works before the first failure.
        requests.with_label_values(&["success"]);
        requests.with_label_values(&["failure"]);
        Ok(Self {
            registry,
            requests,
            inferences,
            executions,
            queue,
            compute,
            request,
            inflight,
            queued,
            seen_executions: AtomicU64::new(0),
        })
    }

    /// Counts a request as in flight until the guard drops.
    pub fn inflight(&self) -> InflightGuard<'_> {
        self.inflight.inc();
        InflightGuard(&self.inflight)
    }

    /// Records an answered request.
    pub fn success(&self, rows: usize, queue: Duration, compute: Duration, total: Duration) {
        self.requests.with_label_values(&["success"]).inc();
        self.inferences.inc_by(rows as u64);
        self.queue.observe(queue.as_secs_f64());
        self.compute.observe(compute.as_secs_f64());
        self.request.observe(total.as_secs_f64());
    }

    /// Records a failed request.
    pub fn failure(&self, total: Duration) {
        self.requests.with_label_values(&["failure"]).inc();
        self.request.observe(total.as_secs_f64());
    }

    /// Renders the text exposition. `executions` is the batcher's running total and `queued`
    /// its queue length now.
    pub fn render(&self, executions: u64, queued: usize) -> Result<String, ServeError> {
        let before = self.seen_executions.fetch_max(executions, Ordering::AcqRel);
        if executions > before {
            self.executions.inc_by(executions - before);
        }
        self.queued.set(queued as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(err)?;
        String::from_utf8(out).map_err(|e| ServeError::Metrics(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_conventional_names_and_counts() {
        let m = Metrics::new("iris").expect("metrics");
        {
            let _g = m.inflight();
            m.success(
                3,
                Duration::from_micros(100),
                Duration::from_micros(50),
                Duration::from_micros(300),
            );
        }
        m.failure(Duration::from_millis(1));
        let text = m.render(2, 0).expect("render");
        for line in [
            "kiln_inference_requests_total{model=\"iris\",outcome=\"success\"} 1",
            "kiln_inference_requests_total{model=\"iris\",outcome=\"failure\"} 1",
            "kiln_inference_count_total{model=\"iris\"} 3",
            "kiln_inference_exec_count_total{model=\"iris\"} 2",
            "kiln_inference_inflight_requests{model=\"iris\"} 0",
            "kiln_inference_queue_duration_seconds_count{model=\"iris\"} 1",
            "kiln_inference_compute_duration_seconds_count{model=\"iris\"} 1",
            "kiln_inference_request_duration_seconds_count{model=\"iris\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"));
        // The executions counter follows the batcher's total without double counting.
        let text = m.render(5, 1).expect("render");
        assert!(text.contains("kiln_inference_exec_count_total{model=\"iris\"} 5"));
        assert!(text.contains("kiln_inference_queue_requests{model=\"iris\"} 1"));
    }
}
