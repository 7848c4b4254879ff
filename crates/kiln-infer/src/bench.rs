use crate::latency::{LatencyRecorder, LatencySummary};
use crate::{EngineConfig, InferError, Model, ModelInfo};
use kiln_core::{Event, EventSink};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Rows drawn around the model's standardisation statistics (from its kiln metadata), or from a
/// standard normal when it has none: realistic inputs for benchmarks and comparisons.
pub fn synthetic_rows(info: &ModelInfo, rows: usize, seed: u64) -> Result<Vec<f32>, InferError> {
    let width = info.input_width.ok_or_else(|| {
        InferError::Input("the model's input width is not fixed; give real rows instead".into())
    })?;
    let (mean, std) = info
        .metadata
        .iter()
        .find(|(k, _)| k == "kiln.normalization")
        .and_then(|(_, v)| serde_json::from_str::<kiln_core::Normalization>(v).ok())
        .filter(|n| n.mean.len() == width && n.std.len() == width)
        .map(|n| (n.mean, n.std))
        .unwrap_or_else(|| (vec![0.0; width], vec![1.0; width]));
    // A small xorshift generator and Box–Muller: reproducible without a dependency.
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    Ok((0..rows * width)
        .map(|i| {
            let z = (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos();
            mean[i % width] + std[i % width] * z as f32
        })
        .collect())
}

/// Options of a benchmark sweep.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Engines to compare.
    pub engines: Vec<EngineConfig>,
    /// Batch sizes to run.
    pub batch_sizes: Vec<usize>,
    /// Numbers of threads calling the engine at once (1: a single caller).
    pub workers: Vec<usize>,
    /// Minimum measured time per configuration.
    pub min_seconds: f64,
    /// Minimum measured calls per configuration.
    pub min_iterations: usize,
    /// Unmeasured calls before measuring.
    pub warmup: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            engines: vec![EngineConfig::default()],
            batch_sizes: vec![1, 8, 64, 256],
            workers: vec![1],
            min_seconds: 1.0,
            min_iterations: 20,
            warmup: 10,
        }
    }
}

/// One configuration's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Engine name.
    pub engine: &'static str,
    /// Intra-op threads per call (tract: 1 unless asked; ONNX Runtime's default when `None`).
    pub threads: Option<usize>,
    /// Rows per call.
    pub batch_size: usize,
    /// Threads calling the engine at once.
    pub workers: usize,
    /// Measured calls (all workers).
    pub iterations: usize,
    /// Rows per second over the measured calls.
    pub rows_per_second: f64,
    /// Per-call latency.
    pub latency: LatencySummary,
    /// CPU cores kept busy on average while measuring (process CPU time / wall time), when
    /// the OS reports CPU time.
    pub cores_busy: Option<f64>,
}

/// User + system CPU seconds of this process so far.
fn process_cpu_seconds() -> Option<f64> {
    let u = kiln_core::resources::usage();
    Some(u.user_cpu_seconds? + u.system_cpu_seconds?)
}

/// A whole sweep with its recommendation.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Every configuration, in sweep order.
    pub results: Vec<BenchResult>,
    /// Index of the configuration with the highest throughput.
    pub best_throughput: usize,
    /// Index of the batch-1 configuration with the lowest p95 latency, when batch 1 was run.
    pub best_latency: Option<usize>,
    /// Logical CPUs of this machine.
    pub cpus: usize,
}

/// Sweeps engines × batch sizes on synthetic rows and measures throughput and latency
/// percentiles of each configuration, all in one process so the numbers compare.
pub fn bench(
    model_path: &Path,
    opts: &BenchOptions,
    events: &mut dyn EventSink,
) -> Result<BenchReport, InferError> {
    let mut results = Vec::new();
    let total = (opts.engines.len() * opts.batch_sizes.len() * opts.workers.len()) as u64;
    events.emit(Event::StageStarted {
        stage: "bench".into(),
    });
    let start = Instant::now();
    for engine in &opts.engines {
        let model = Model::load(model_path, engine.clone())?;
        let max_batch = opts.batch_sizes.iter().copied().max().unwrap_or(1);
        let pool = synthetic_rows(model.info(), max_batch, 0x6b696c6e)?;
        let width = pool.len() / max_batch;
        for &b in opts.batch_sizes.iter().filter(|&&b| b > 0) {
            let x = &pool[..b * width];
            for _ in 0..opts.warmup {
                model.predict(x, b)?;
            }
            for &w in opts.workers.iter().filter(|&&w| w > 0) {
                let cpu_before = process_cpu_seconds();
                let (n, secs, rec) = measure(&model, x, b, w, opts)?;
                // Hardware utilisation: CPU seconds the process spent per wall second, i.e.
                // the cores kept busy (engine threads and workers together).
                let cores_busy = match (cpu_before, process_cpu_seconds()) {
                    (Some(a), Some(z)) if secs > 0.0 => Some((z - a) / secs),
                    _ => None,
                };
                results.push(BenchResult {
                    engine: model.engine_name(),
                    // tract's default is one thread per call.
                    threads: if model.engine_name() == "tract" {
                        Some(engine.threads.unwrap_or(1))
                    } else {
                        engine.threads
                    },
                    batch_size: b,
                    workers: w,
                    iterations: n,
                    rows_per_second: (n * b) as f64 / secs.max(1e-12),
                    latency: rec.summary(),
                    cores_busy,
                });
                events.emit(Event::Progress {
                    stage: "bench".into(),
                    done: results.len() as u64,
                    total: Some(total),
                    unit: "configuration".into(),
                });
            }
        }
    }
    events.emit(Event::StageFinished {
        stage: "bench".into(),
        seconds: start.elapsed().as_secs_f64(),
    });
    let best_throughput = results
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.rows_per_second.total_cmp(&b.1.rows_per_second))
        .map_or(0, |(i, _)| i);
    let best_latency = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.batch_size == 1)
        .min_by_key(|(_, r)| r.latency.p95_us)
        .map(|(i, _)| i);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(BenchReport {
        results,
        best_throughput,
        best_latency,
        cpus,
    })
}

/// Runs `workers` threads that each call the model until the time and count minimums are met;
/// returns the calls made, the wall seconds and the per-call latencies.
fn measure(
    model: &Model,
    x: &[f32],
    batch: usize,
    workers: usize,
    opts: &BenchOptions,
) -> Result<(usize, f64, LatencyRecorder), InferError> {
    let min = Duration::from_secs_f64(opts.min_seconds);
    let per_worker = opts.min_iterations.div_ceil(workers);
    let t0 = Instant::now();
    let outcomes: Vec<Result<(usize, LatencyRecorder), InferError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(move || -> Result<(usize, LatencyRecorder), InferError> {
                    let mut rec = LatencyRecorder::new();
                    let mut n = 0usize;
                    while (n < per_worker || t0.elapsed() < min) && n < 1_000_000 {
                        let t = Instant::now();
                        model.predict(x, batch)?;
                        rec.record(t.elapsed());
                        n += 1;
                    }
                    Ok((n, rec))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(InferError::Run {
                        engine: "bench",
                        reason: "a benchmark thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut total = 0;
    let mut rec = LatencyRecorder::new();
    for o in outcomes {
        let (n, r) = o?;
        total += n;
        rec.merge(&r);
    }
    Ok((total, secs, rec))
}

/// The result of a leak check.
#[derive(Debug, Clone, Serialize)]
pub struct LeakCheck {
    /// Calls made.
    pub iterations: usize,
    /// Rows per call.
    pub batch_size: usize,
    /// RSS after the first tenth of the calls (the warm baseline), bytes.
    pub rss_baseline_bytes: u64,
    /// RSS after the last call, bytes.
    pub rss_final_bytes: u64,
    /// Growth from baseline to final, percent.
    pub growth_percent: f64,
}

/// Runs `iterations` predictions and measures resident memory growth after the first tenth
/// (which absorbs one-time allocations). Needs `/proc` (Linux).
pub fn leak_check(
    model: &Model,
    batch_size: usize,
    iterations: usize,
) -> Result<LeakCheck, InferError> {
    let rows = crate::synthetic_rows(model.info(), batch_size.max(1), 0x6b696c6e)?;
    let warm = (iterations / 10).max(1);
    let mut baseline = None;
    for i in 0..iterations.max(warm + 1) {
        let preds = model.predict(&rows, batch_size.max(1))?;
        std::hint::black_box(preds);
        if i + 1 == warm {
            baseline = kiln_core::resources::current_rss();
        }
    }
    let (Some(b), Some(f)) = (baseline, kiln_core::resources::current_rss()) else {
        return Err(InferError::Input(
            "a leak check needs /proc to read resident memory (Linux)".into(),
        ));
    };
    Ok(LeakCheck {
        iterations: iterations.max(warm + 1),
        batch_size: batch_size.max(1),
        rss_baseline_bytes: b,
        rss_final_bytes: f,
        growth_percent: 100.0 * (f as f64 - b as f64) / b as f64,
    })
}

/// How `--engine auto` chose.
#[derive(Debug, Clone, Serialize)]
pub struct AutoChoice {
    /// The engine chosen.
    pub engine: &'static str,
    /// Mean microseconds per call of each candidate at the batch size in use.
    pub candidates: Vec<(String, f64)>,
    /// Largest score difference between the candidates (they must agree to be chosen).
    pub max_abs_diff: f32,
    /// Why the choice was made.
    pub reason: String,
}

/// Metadata key of the engine chosen by `kiln optimize --engine auto`.
pub const AUTO_ENGINE_KEY: &str = "kiln.auto.engine";
/// Metadata key of the chosen execution provider (`cpu`, `cuda:0`, …).
pub const AUTO_PROVIDER_KEY: &str = "kiln.auto.provider";
/// Metadata key of the chosen ONNX Runtime intra-op threads.
pub const AUTO_THREADS_KEY: &str = "kiln.auto.threads";
/// Metadata key of the batch size the choice was measured at.
pub const AUTO_BATCH_KEY: &str = "kiln.auto.batch_size";

/// The engine configuration `kiln optimize --engine auto` recorded in the model, if any, and
/// whether it loads here. `Err` carries why a recorded choice cannot be used.
pub fn recorded_engine(
    path: &std::path::Path,
    base: &EngineConfig,
) -> Option<Result<(EngineConfig, AutoChoice), String>> {
    let model = kiln_onnx::load(path).ok()?;
    let engine = kiln_onnx::metadata_value(&model, AUTO_ENGINE_KEY)?.to_string();
    let parse = || -> Result<EngineConfig, InferError> {
        let kind = crate::EngineKind::parse(&engine)?;
        let provider = match kiln_onnx::metadata_value(&model, AUTO_PROVIDER_KEY) {
            Some(p) => crate::Provider::parse(p)?,
            None => crate::Provider::Cpu,
        };
        let threads = kiln_onnx::metadata_value(&model, AUTO_THREADS_KEY)
            .and_then(|t| t.parse::<usize>().ok());
        Ok(EngineConfig {
            kind,
            provider,
            threads: base.threads.or(threads),
            ..base.clone()
        })
    };
    let batch = kiln_onnx::metadata_value(&model, AUTO_BATCH_KEY).unwrap_or("?");
    Some(
        parse()
            .and_then(|cfg| Model::load(path, cfg.clone()).map(|_| cfg))
            .map(|cfg| {
                (
                    cfg,
                    AutoChoice {
                        engine: if engine == "ort" { "ort" } else { "tract" },
                        candidates: Vec::new(),
                        max_abs_diff: 0.0,
                        reason: format!(
                            "recorded in the model by `kiln optimize --engine auto` (measured at batch {batch})"
                        ),
                    },
                )
            })
            .map_err(|e| e.to_string()),
    )
}

/// Picks the faster engine for this model at `batch_size`. A choice recorded in the model by
/// `kiln optimize --engine auto` is used as it is when it loads here; otherwise both engines
/// are measured on synthetic rows, and ONNX Runtime is a candidate only when its library loads
/// and its outputs agree with tract's (within 1e-4, or 5e-2 for models with integer operators,
/// where kernels round differently).
pub fn choose_engine(
    path: &std::path::Path,
    batch_size: usize,
    base: &EngineConfig,
) -> Result<(EngineConfig, AutoChoice), InferError> {
    match recorded_engine(path, base) {
        Some(Ok(choice)) => Ok(choice),
        Some(Err(why)) => {
            let (cfg, mut choice) = measure_engine(path, batch_size, base)?;
            choice.reason = format!(
                "the engine recorded in the model cannot be used here ({why}), so both were measured: {}",
                choice.reason
            );
            Ok((cfg, choice))
        }
        None => measure_engine(path, batch_size, base),
    }
}

/// Measures tract and, when it loads and agrees, ONNX Runtime on synthetic rows.
fn measure_engine(
    path: &std::path::Path,
    batch_size: usize,
    base: &EngineConfig,
) -> Result<(EngineConfig, AutoChoice), InferError> {
    let tract_cfg = EngineConfig {
        kind: crate::EngineKind::Tract,
        provider: crate::Provider::Cpu,
        ..base.clone()
    };
    let tract = Model::load(path, tract_cfg.clone())?;
    let b = batch_size.max(1);
    let x = synthetic_rows(tract.info(), b, 0x6b696c6e)?;
    let time = |m: &Model| -> Result<f64, InferError> {
        for _ in 0..5 {
            m.predict(&x, b)?;
        }
        let t = Instant::now();
        let mut n = 0u32;
        while n < 20 || t.elapsed() < Duration::from_millis(100) {
            m.predict(&x, b)?;
            n += 1;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
    };
    let tract_us = time(&tract)?;
    let mut candidates = vec![("tract".to_string(), tract_us)];
    let ort_cfg = EngineConfig {
        kind: crate::EngineKind::Ort,
        ..base.clone()
    };
    let ort = if cfg!(feature = "ort") {
        Model::load(path, ort_cfg.clone()).ok()
    } else {
        None
    };
    let Some(ort) = ort else {
        return Ok((
            tract_cfg,
            AutoChoice {
                engine: "tract",
                candidates,
                max_abs_diff: 0.0,
                reason: "ONNX Runtime is not available; tract is".into(),
            },
        ));
    };
    let (a, o) = (tract.predict(&x, b)?, ort.predict(&x, b)?);
    let diff = a
        .iter()
        .zip(&o)
        .flat_map(|(p, q)| p.scores.iter().zip(&q.scores).map(|(u, v)| (u - v).abs()))
        .fold(0f32, f32::max);
    let integer = kiln_onnx::load(path)
        .ok()
        .and_then(|m| m.graph)
        .is_some_and(|g| {
            g.node
                .iter()
                .any(|n| n.op_type().contains("Integer") || n.op_type().contains("Quantize"))
        });
    let tol = if integer { 5e-2 } else { 1e-4 };
    let ort_us = time(&ort)?;
    candidates.push(("ort".to_string(), ort_us));
    if diff.is_nan() || diff > tol {
        return Ok((
            tract_cfg,
            AutoChoice {
                engine: "tract",
                candidates,
                max_abs_diff: diff,
                reason: format!(
                    "ONNX Runtime's outputs differ from tract's by {diff:.3e} (> {tol:.0e}); keeping tract"
                ),
            },
        ));
    }
    if ort_us < tract_us {
        Ok((
            ort_cfg,
            AutoChoice {
                engine: "ort",
                candidates,
                max_abs_diff: diff,
                reason: format!("ort is {:.2}x faster at batch {b}", tract_us / ort_us),
            },
        ))
    } else {
        Ok((
            tract_cfg,
            AutoChoice {
                engine: "tract",
                candidates,
                max_abs_diff: diff,
                reason: format!("tract is {:.2}x faster at batch {b}", ort_us / tract_us),
            },
        ))
    }
}
