//! `--engine auto`: choose the quantized form, engine, execution provider and threads together,
//! by measurement. Every quantized form is built (each through the accuracy gate), run on the
//! validation rows in every engine and provider that really loads, and benchmarked at the
//! target batch size; the fastest candidate whose accuracy stays within the gate of the float
//! model *in the same engine* wins (of candidates within 3 % of it, the one with the fewest
//! threads: [`THREADS_TIE_MARGIN`]). The choice is written into the output model's metadata
//! (`kiln.auto.*`), so `kiln infer --engine auto` and `kiln serve --engine auto` reuse it
//! without measuring again.

use crate::{
    GraphOptimizer, OnnxForm, OptimizeError, OptimizeOptions, OptimizeReport, Quantization,
};
use kiln_core::{Event, EventSink, Level, NullSink};
use kiln_infer::{BatchOptions, EngineConfig, EngineKind, Model, Provider};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use kiln_infer::{
    AUTO_BATCH_KEY as BATCH_KEY, AUTO_ENGINE_KEY as ENGINE_KEY, AUTO_PROVIDER_KEY as PROVIDER_KEY,
    AUTO_THREADS_KEY as THREADS_KEY,
};

/// What `--engine auto` considers.
#[derive(Debug, Clone)]
pub struct AutoOptions {
    /// Graph level/passes, calibration data and method, validation data (required), the
    /// accuracy ratio and the target column.
    pub base: OptimizeOptions,
    /// Quantized forms to try, each a quantization and its ONNX form; `Static` is skipped
    /// without calibration data.
    pub forms: Vec<(Quantization, OnnxForm)>,
    /// Engines to try (ort is skipped, with a note, when its library does not load).
    pub engines: Vec<EngineKind>,
    /// Execution providers for ort; a provider that cannot be registered is reported and
    /// skipped (or an error, with `strict_provider`).
    pub providers: Vec<Provider>,
    /// Refuse instead of skipping a requested provider that is unavailable.
    pub strict_provider: bool,
    /// ort intra-op thread counts to try (`None`: ONNX Runtime's default).
    pub ort_threads: Vec<Option<usize>>,
    /// tract intra-op thread counts to try (its matrix products and kiln's int8 op).
    pub tract_threads: Vec<Option<usize>>,
    /// Rows per call when measuring speed.
    pub batch_size: usize,
    /// Measured seconds per candidate.
    pub seconds: f64,
    /// Path of libonnxruntime.so.
    pub ort_lib: Option<PathBuf>,
}

impl Default for AutoOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut ort_threads = vec![Some(1)];
        if cores > 1 {
            ort_threads.push(Some(cores));
        }
        let tract_threads = if cores > 1 {
            vec![None, Some(cores)]
        } else {
            vec![None]
        };
        Self {
            tract_threads,
            base: OptimizeOptions::default(),
            forms: vec![
                (Quantization::None, OnnxForm::Auto),
                (Quantization::Dynamic, OnnxForm::Kiln),
                (Quantization::Dynamic, OnnxForm::Integer),
                (Quantization::Static, OnnxForm::Qdq),
                (Quantization::Static, OnnxForm::Kiln),
            ],
            engines: vec![EngineKind::Tract, EngineKind::Ort],
            providers: vec![Provider::Cpu],
            strict_provider: false,
            ort_threads,
            batch_size: 64,
            seconds: 0.3,
            ort_lib: None,
        }
    }
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AutoCandidate {
    /// The quantization.
    pub quantization: Quantization,
    /// Its ONNX form.
    pub form: OnnxForm,
    /// `tract` or `ort`.
    pub engine: &'static str,
    /// The execution provider.
    pub provider: String,
    /// Intra-op threads (`None`: the engine's default, one thread in tract).
    pub threads: Option<usize>,
    /// Accuracy on the validation rows (classifiers).
    pub accuracy: Option<f64>,
    /// RMSE on the validation rows (regressors).
    pub rmse: Option<f64>,
    /// Whether the accuracy gate passed against the float model in the same engine.
    pub passes_gate: bool,
    /// Rows per second at the batch size.
    pub rows_per_second: f64,
    /// Median latency per call, µs.
    pub p50_us: u64,
    /// 95th percentile latency per call, µs.
    pub p95_us: u64,
    /// Model size in bytes.
    pub bytes: usize,
}

/// A configuration that could not be measured, and why.
#[derive(Debug, Clone, Serialize)]
pub struct AutoSkipped {
    /// What was skipped, e.g. `static / ort cuda:0`.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// The result of `--engine auto`.
#[derive(Debug, Clone, Serialize)]
pub struct AutoReport {
    /// Every measured candidate.
    pub candidates: Vec<AutoCandidate>,
    /// Configurations that could not be measured.
    pub skipped: Vec<AutoSkipped>,
    /// Index of the chosen candidate.
    pub chosen: usize,
    /// The optimize run of the chosen form.
    pub optimize: OptimizeReport,
    /// The batch size of the measurements.
    pub batch_size: usize,
}

impl AutoReport {
    /// The chosen candidate.
    pub fn choice(&self) -> &AutoCandidate {
        &self.candidates[self.chosen]
    }
}

fn provider_name(p: &Provider) -> String {
    match p {
        Provider::Cpu => "cpu".into(),
        Provider::Cuda { device } => format!("cuda:{device}"),
        Provider::TensorRt { device } => format!("tensorrt:{device}"),
    }
}

/// The short name of a quantized form: float, dynamic, static, weight-only.
pub fn form_name(q: Quantization) -> &'static str {
    match q {
        Quantization::None => "float",
        Quantization::Dynamic => "dynamic",
        Quantization::Static => "static",
        Quantization::WeightOnly => "weight-only",
    }
}

/// The short name of a quantization in a form: `float`, `static` (QDQ), `static-kiln`,
/// `weight-only`, and for dynamic quantization `dynamic-kiln`, `dynamic-integer` or
/// `dynamic-qdq`.
pub fn variant_name(q: Quantization, f: OnnxForm) -> String {
    match (q, f) {
        (Quantization::Static, OnnxForm::Kiln) => "static-kiln".into(),
        (Quantization::Dynamic, OnnxForm::Auto) => {
            format!("dynamic-{}", OnnxForm::for_engine(q, "tract").name())
        }
        (Quantization::Dynamic, f) => format!("dynamic-{}", f.name()),
        _ => form_name(q).to_string(),
    }
}

/// Quality and speed of one model in one engine configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The engine that ran (`tract`, `ort`).
    pub engine: &'static str,
    /// Accuracy on the labelled rows (classifiers).
    pub accuracy: Option<f64>,
    /// RMSE on the labelled rows (regressors).
    pub rmse: Option<f64>,
    /// Rows per second at the batch size, one caller.
    pub rows_per_second: f64,
    /// Latency per call.
    pub latency: kiln_infer::LatencySummary,
}

/// Whether an inference error means "this model does not load in this configuration" (a
/// candidate to skip) rather than a failure of the run.
pub fn unloadable(e: &kiln_infer::InferError) -> bool {
    matches!(
        e,
        kiln_infer::InferError::Load { .. }
            | kiln_infer::InferError::EngineUnavailable { .. }
            | kiln_infer::InferError::ProviderUnavailable { .. }
    )
}

/// Measures the model at `path` in `config`: accuracy (or RMSE) on the labelled rows of
/// `data`, then throughput and latency at `batch_size` for at least `seconds`. A model that
/// does not load in this configuration is `OptimizeError::Infer` with an error for which
/// [`unloadable`] holds. Used by `--engine auto` and by `kiln pipeline`'s candidates.
pub fn measure(
    path: &Path,
    config: &EngineConfig,
    data: &Path,
    target: &str,
    batch_size: usize,
    seconds: f64,
) -> Result<Measurement, OptimizeError> {
    let model = Model::load(path, config.clone())?;
    let r = kiln_infer::infer_file(
        &model,
        data,
        &BatchOptions {
            target: target.to_string(),
            ..BatchOptions::default()
        },
        &mut NullSink,
    )?;
    drop(model);
    let b = kiln_infer::bench(
        path,
        &kiln_infer::BenchOptions {
            engines: vec![config.clone()],
            batch_sizes: vec![batch_size],
            workers: vec![1],
            min_seconds: seconds,
            min_iterations: 20,
            warmup: 5,
        },
        &mut NullSink,
    )?;
    let m = b
        .results
        .into_iter()
        .next()
        .ok_or_else(|| OptimizeError::Options("the benchmark measured nothing".into()))?;
    Ok(Measurement {
        engine: m.engine,
        accuracy: r.accuracy,
        rmse: r.regression.map(|x| x.rmse),
        rows_per_second: m.rows_per_second,
        latency: m.latency,
    })
}

/// The fastest candidate that keeps accuracy; of those within [`THREADS_TIE_MARGIN`] of it,
/// the one with the fewest threads (a tie at the measured batch size is noise, and the extra
/// threads cost at other sizes: the digits MLP ran 3× slower at batch 256 on two threads than
/// on one, after tying at 64). `None` when none passes the gate.
pub fn choose(candidates: &[AutoCandidate]) -> Option<usize> {
    let fastest = candidates
        .iter()
        .filter(|c| c.passes_gate)
        .map(|c| c.rows_per_second)
        .fold(0.0f64, f64::max);
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.passes_gate && c.rows_per_second >= fastest * (1.0 - THREADS_TIE_MARGIN))
        .min_by(|a, b| {
            let threads = |c: &AutoCandidate| c.threads.unwrap_or(1);
            threads(a.1)
                .cmp(&threads(b.1))
                .then(b.1.rows_per_second.total_cmp(&a.1.rows_per_second))
        })
        .map(|(i, _)| i)
}

/// How close to the fastest candidate's rate (as a fraction) a candidate with fewer threads
/// may be and still be chosen over it.
pub const THREADS_TIE_MARGIN: f64 = 0.03;

/// Builds every form, measures every candidate, and writes the fastest one that passes the
/// accuracy gate to `output` with the choice in its metadata.
pub fn optimize_auto(
    input: &Path,
    output: &Path,
    opts: &AutoOptions,
    events: &mut dyn EventSink,
) -> Result<AutoReport, OptimizeError> {
    let validate = opts.base.validate_data.clone().ok_or_else(|| {
        OptimizeError::Options(
            "--engine auto needs --validate-data: candidates are chosen by speed among those that keep accuracy"
                .into(),
        )
    })?;
    if output.exists() && !opts.base.force {
        return Err(OptimizeError::Exists {
            path: output.to_path_buf(),
        });
    }
    if opts.batch_size == 0 {
        return Err(OptimizeError::Options(
            "--batch-size must be at least 1".into(),
        ));
    }
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| kiln_core::CoreError::io("creating", dir, e))?;
    let work = tempfile::Builder::new()
        .prefix(".kiln-auto-")
        .tempdir_in(dir)
        .map_err(|e| kiln_core::CoreError::io("creating a temporary directory in", dir, e))?;
    let mut skipped = Vec::new();

    // 1. The quantized forms, each through the usual optimize run and its accuracy gate.
    let mut forms: Vec<((Quantization, OnnxForm), PathBuf, OptimizeReport)> = Vec::new();
    for &(quantization, onnx_form) in &opts.forms {
        let form = (quantization, onnx_form);
        let name = variant_name(quantization, onnx_form);
        if quantization == Quantization::Static && opts.base.calibration_data.is_none() {
            skipped.push(AutoSkipped {
                what: "static".into(),
                reason: "no --calibration-data".into(),
            });
            continue;
        }
        let path = work.path().join(format!("{name}.onnx"));
        let o = OptimizeOptions {
            quantization,
            form: onnx_form,
            force: true,
            ..opts.base.clone()
        };
        match GraphOptimizer::new(o).run(input, &path, &mut NullSink) {
            Ok(r) => forms.push((form, path, r)),
            Err(OptimizeError::AccuracyGate { ratio, .. }) => skipped.push(AutoSkipped {
                what: name.clone(),
                reason: format!("refused by the accuracy gate (ratio {ratio:.4})"),
            }),
            Err(e) => return Err(e),
        }
    }
    if !forms.iter().any(|((q, _), ..)| *q == Quantization::None) {
        return Err(OptimizeError::Options(
            "--engine auto compares against the float model; keep `none` among the forms".into(),
        ));
    }

    // 2. The engine configurations that really load.
    let mut configs: Vec<EngineConfig> = Vec::new();
    for engine in &opts.engines {
        match engine {
            EngineKind::Tract => {
                for &threads in &opts.tract_threads {
                    configs.push(EngineConfig {
                        kind: EngineKind::Tract,
                        ort_lib: None,
                        threads,
                        provider: Provider::Cpu,
                        concurrency: 1,
                    });
                }
            }
            EngineKind::Ort => {
                for provider in &opts.providers {
                    for &threads in &opts.ort_threads {
                        configs.push(EngineConfig {
                            kind: EngineKind::Ort,
                            ort_lib: opts.ort_lib.clone(),
                            threads,
                            provider: *provider,
                            concurrency: 1,
                        });
                    }
                }
            }
        }
    }

    // 3. Measure every form × configuration.
    let float_path = forms
        .iter()
        .find(|((q, _), ..)| *q == Quantization::None)
        .map(|(_, p, _)| p.clone())
        .unwrap_or_default();
    let total = (forms.len() * configs.len()) as u64;
    let mut done = 0u64;
    let mut candidates = Vec::new();
    events.emit(Event::StageStarted {
        stage: "auto".into(),
    });
    let start = std::time::Instant::now();
    for config in &configs {
        let label = match config.kind {
            EngineKind::Tract => match config.threads {
                Some(t) if t > 1 => format!("tract threads {t}"),
                _ => "tract".to_string(),
            },
            EngineKind::Ort => format!(
                "ort {} threads {}",
                provider_name(&config.provider),
                config.threads.map_or("default".into(), |t| t.to_string())
            ),
        };
        let measure_in = |path: &Path| {
            measure(
                path,
                config,
                &validate,
                &opts.base.target,
                opts.batch_size,
                opts.seconds,
            )
        };
        // The float form first: its accuracy in this configuration is the gate's baseline, and
        // whether it loads says whether the configuration is available at all.
        let baseline = match measure_in(&float_path) {
            Ok(m) => m,
            Err(OptimizeError::Infer(e)) if unloadable(&e) => {
                if opts.strict_provider && config.provider != Provider::Cpu {
                    return Err(OptimizeError::Options(format!(
                        "--strict-provider: {} is not available: {e}",
                        provider_name(&config.provider)
                    )));
                }
                if config.provider != Provider::Cpu {
                    events.emit(Event::Message {
                        level: Level::Warn,
                        text: format!(
                            "{} was requested but is not available here ({e}); it is left out of the candidates",
                            provider_name(&config.provider)
                        ),
                    });
                }
                skipped.push(AutoSkipped {
                    what: label.clone(),
                    reason: e.to_string(),
                });
                done += forms.len() as u64;
                continue;
            }
            Err(e) => return Err(e),
        };
        for (form, path, report) in &forms {
            done += 1;
            let what = format!("{} / {label}", variant_name(form.0, form.1));
            let m = if form.0 == Quantization::None {
                baseline.clone()
            } else {
                match measure_in(path) {
                    Ok(m) => m,
                    Err(OptimizeError::Infer(e)) if unloadable(&e) => {
                        skipped.push(AutoSkipped {
                            what,
                            reason: e.to_string(),
                        });
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            let (accuracy, rmse) = (m.accuracy, m.rmse);
            let ratio = opts.base.min_accuracy_ratio;
            let passes_gate = match (accuracy, baseline.accuracy, rmse, baseline.rmse) {
                (Some(a), Some(f), ..) => a >= ratio * f,
                (_, _, Some(r), Some(f)) => r * ratio <= f + 1e-12,
                _ => true,
            };
            events.emit(Event::Message {
                level: Level::Info,
                text: format!(
                    "{what}: {:.0} rows/s{}{}",
                    m.rows_per_second,
                    accuracy
                        .map(|a| format!(", accuracy {a:.4}"))
                        .unwrap_or_default(),
                    if passes_gate {
                        ""
                    } else {
                        " (fails the accuracy gate)"
                    }
                ),
            });
            candidates.push(AutoCandidate {
                quantization: form.0,
                form: form.1,
                engine: m.engine,
                provider: provider_name(&config.provider),
                threads: config.threads,
                accuracy,
                rmse,
                passes_gate,
                rows_per_second: m.rows_per_second,
                p50_us: m.latency.p50_us,
                p95_us: m.latency.p95_us,
                bytes: report.bytes_after,
            });
            events.emit(Event::Progress {
                stage: "auto".into(),
                done,
                total: Some(total),
                unit: "candidate".into(),
            });
        }
    }
    events.emit(Event::StageFinished {
        stage: "auto".into(),
        seconds: start.elapsed().as_secs_f64(),
    });
    let chosen = choose(&candidates).ok_or_else(|| {
        OptimizeError::Options(
            "--engine auto found no candidate that loads and keeps accuracy".into(),
        )
    })?;

    // 4. Write the chosen form with the choice recorded.
    let c = &candidates[chosen];
    let (_, path, report) = forms
        .iter()
        .find(|((q, f), ..)| *q == c.quantization && *f == c.form)
        .ok_or_else(|| OptimizeError::Options("the chosen form vanished".into()))?;
    let mut model = kiln_onnx::load(path)?;
    kiln_onnx::set_metadata(&mut model, ENGINE_KEY, c.engine);
    kiln_onnx::set_metadata(&mut model, PROVIDER_KEY, &c.provider);
    if let Some(t) = c.threads {
        kiln_onnx::set_metadata(&mut model, THREADS_KEY, &t.to_string());
    }
    kiln_onnx::set_metadata(&mut model, BATCH_KEY, &opts.batch_size.to_string());
    kiln_onnx::set_metadata(
        &mut model,
        "kiln.auto.candidates",
        &serde_json::to_string(&candidates).unwrap_or_default(),
    );
    kiln_core::fsutil::write_atomic(output, &kiln_onnx::encode(&model))?;
    let mut optimize = report.clone();
    optimize.output = output.to_path_buf();
    Ok(AutoReport {
        candidates,
        skipped,
        chosen,
        optimize,
        batch_size: opts.batch_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(threads: Option<usize>, rate: f64, passes_gate: bool) -> AutoCandidate {
        AutoCandidate {
            quantization: Quantization::Dynamic,
            form: OnnxForm::Kiln,
            engine: "tract",
            provider: "cpu".into(),
            threads,
            accuracy: Some(1.0),
            rmse: None,
            passes_gate,
            rows_per_second: rate,
            p50_us: 1,
            p95_us: 1,
            bytes: 1,
        }
    }

    #[test]
    fn the_fastest_passing_candidate_wins_and_ties_go_to_fewer_threads() {
        // Two threads 2 % faster: a tie, one thread wins.
        let c = [
            candidate(Some(2), 102.0, true),
            candidate(None, 100.0, true),
        ];
        assert_eq!(choose(&c), Some(1));
        // 10 % faster is not a tie.
        let c = [
            candidate(Some(2), 110.0, true),
            candidate(None, 100.0, true),
        ];
        assert_eq!(choose(&c), Some(0));
        // The fastest fails the gate: the best of the others.
        let c = [
            candidate(None, 500.0, false),
            candidate(Some(2), 90.0, true),
            candidate(Some(1), 80.0, true),
        ];
        assert_eq!(choose(&c), Some(1));
        // Equal threads within the margin: the faster.
        let c = [candidate(Some(1), 99.0, true), candidate(None, 100.0, true)];
        assert_eq!(choose(&c), Some(1));
        assert_eq!(choose(&[candidate(None, 1.0, false)]), None);
    }
}
