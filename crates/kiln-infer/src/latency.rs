use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Sample counts in equal-width buckets from the smallest sample to the 99th percentile
    /// (the last bucket also holds the slower tail), for latency histograms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub histogram: Vec<LatencyBucket>,
}

/// One bar of a latency histogram: samples in `[from_us, to_us)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyBucket {
    /// Lower bound (inclusive).
    pub from_us: u64,
    /// Upper bound (exclusive, except for the last bucket, which holds everything slower).
    pub to_us: u64,
    /// Samples in the bucket.
    pub count: u64,
}

/// Buckets of a latency histogram.
const HISTOGRAM_BUCKETS: u64 = 30;

/// Records latencies in an HDR histogram (1 µs to 1 h, 3 significant digits), so percentiles
/// are exact to 0.1 % at any count without keeping the samples.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // Constant bounds that hdrhistogram documents as valid: this cannot fail at run time.
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("valid constant histogram bounds");
        Self { hist }
    }

    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, self.hist.high());
        // Saturating record never fails for in-range values.
        self.hist.saturating_record(us);
    }

    /// Adds every sample of another recorder.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        let _ = self.hist.add(&other.hist);
    }

    /// The percentiles so far.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        LatencySummary {
            count: h.len(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            histogram: self.buckets(),
        }
    }

    fn buckets(&self) -> Vec<LatencyBucket> {
        let h = &self.hist;
        if h.is_empty() {
            return Vec::new();
        }
        let lo = h.min();
        let hi = h.value_at_quantile(0.99).max(lo + 1);
        let width = (hi - lo).div_ceil(HISTOGRAM_BUCKETS).max(1);
        let n = (hi - lo).div_ceil(width).max(1);
        let mut out: Vec<LatencyBucket> = (0..n)
            .map(|i| LatencyBucket {
                from_us: lo + i * width,
                to_us: lo + (i + 1) * width,
                count: 0,
            })
            .collect();
        for v in h.iter_recorded() {
            let value = h.median_equivalent(v.value_iterated_to());
            let i = ((value.saturating_sub(lo)) / width).min(n - 1) as usize;
            out[i].count += v.count_at_value();
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_samples() {
        let mut r = LatencyRecorder::new();
        for us in 1..=1000u64 {
            r.record(Duration::from_micros(us));
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us as i64 - 500).abs() <= 1, "{s:?}");
        assert!((s.p99_us as i64 - 990).abs() <= 1, "{s:?}");
        assert_eq!(s.max_us, 1000);
        let total: u64 = s.histogram.iter().map(|b| b.count).sum();
        assert_eq!(total, 1000, "every sample lands in a bucket");
        assert!(s.histogram.len() <= 30 && s.histogram.len() >= 20);
        assert!(s.histogram.windows(2).all(|w| w[0].to_us == w[1].from_us));
    }
}
