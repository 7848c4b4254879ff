use crate::{InferError, Model, Prediction};
use kiln_core::{Event, EventSink};
use kiln_data::Format;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// A parsed row waiting for the engine: row number, features, target cell.
type PendingRow = (usize, Vec<f32>, Option<String>);

/// Options for batch inference over a file.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Rows per engine call.
    pub batch_size: usize,
    /// Name of the target column; when present, accuracy is reported.
    pub target: String,
    /// Input format (picked from the extension when `None`).
    pub format: Option<Format>,
    /// Threads running batches in parallel (1: the calling thread). Output order is kept.
    pub workers: usize,
    /// Accept NaN/inf feature values instead of giving their rows an error record.
    pub allow_non_finite: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            target: kiln_data::DEFAULT_TARGET.into(),
            format: None,
            workers: 1,
            allow_non_finite: false,
        }
    }
}

/// The outcome of one input row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    /// The row was predicted.
    Ok {
        /// 0-based data row.
        row: usize,
        /// The prediction.
        prediction: Prediction,
        /// The row's target cell, when the file has a target column.
        target: Option<String>,
    },
    /// The row could not be predicted.
    Err {
        /// 0-based data row.
        row: usize,
        /// Why.
        error: String,
    },
}

/// What a batch inference run produced.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// One outcome per input row, in input order.
    #[serde(skip)]
    pub outcomes: Vec<RowOutcome>,
    /// Input rows.
    pub rows: usize,
    /// Rows predicted.
    pub ok: usize,
    /// Rows that got an error record.
    pub failed: usize,
    /// Accuracy over predicted rows that have a target, when the file has a target column.
    pub accuracy: Option<f64>,
    /// Precision, recall and F1 per class and macro-averaged, and the confusion matrix, over
    /// predicted rows that have a target (classification models).
    pub classification: Option<kiln_core::metrics::ClassificationReport>,
    /// RMSE, MAE and R² over predicted rows with a numeric target (regression models).
    pub regression: Option<RegressionMetrics>,
    /// Rows counted in the accuracy.
    pub labelled: usize,
    /// Seconds spent in the engine.
    pub engine_seconds: f64,
    /// Engine time per batch.
    pub batch_latency: crate::LatencySummary,
    /// Seconds for the whole run (reading included).
    pub total_seconds: f64,
    /// Predicted rows per second of engine time.
    pub rows_per_second: f64,
}

/// Runs every row of a CSV/JSONL file through `model` in batches of `opts.batch_size`.
///
/// Rows that cannot be parsed get an error record and the run continues. If the engine fails on
/// a batch, the batch is retried row by row so that one bad row cannot fail its neighbours.
pub fn infer_file(
    model: &Model,
    path: &Path,
    opts: &BatchOptions,
    events: &mut dyn EventSink,
) -> Result<BatchReport, InferError> {
    let start = Instant::now();
    let expected = model.info().feature_names.clone();
    let mut table = kiln_data::read_rows_with(
        path,
        opts.format,
        &opts.target,
        expected.as_deref(),
        opts.allow_non_finite,
    )?;
    if expected.is_none()
        && let Some(w) = model
            .info()
            .input_width
            .filter(|&w| w != table.feature_names.len())
    {
        return Err(InferError::Data(kiln_data::DataError::Schema {
            path: path.to_path_buf(),
            reason: format!(
                "the model expects {w} features per row but the file has {} feature columns; check the file or --target",
                table.feature_names.len()
            ),
        }));
    }
    let total = table.rows.len();
    let mut outcomes: Vec<Option<RowOutcome>> = vec![None; total];
    let batch = opts.batch_size.max(1);
    // Parse failures are answered at once; good rows are grouped into engine batches.
    let mut batches: Vec<Vec<PendingRow>> = Vec::new();
    let mut current = Vec::with_capacity(batch);
    for rec in table.rows.drain(..) {
        match rec.result {
            Ok((x, target)) => current.push((rec.row, x, target)),
            Err(e) => {
                outcomes[rec.row] = Some(RowOutcome::Err {
                    row: rec.row,
                    error: e.to_string(),
                })
            }
        }
        if current.len() >= batch {
            batches.push(std::mem::replace(&mut current, Vec::with_capacity(batch)));
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    // Each worker stages its batches' features in one buffer that it reuses for every batch.
    let run =
        |features: &mut Vec<f32>, b: &Vec<PendingRow>| -> (Vec<RowOutcome>, std::time::Duration) {
            let t = Instant::now();
            features.clear();
            features.extend(b.iter().flat_map(|(_, x, _)| x.iter().copied()));
            let out = match guarded_predict(model, features, b.len()) {
                Ok(preds) if preds.len() == b.len() => b
                    .iter()
                    .zip(preds)
                    .map(|((row, _, target), prediction)| RowOutcome::Ok {
                        row: *row,
                        prediction,
                        target: target.clone(),
                    })
                    .collect(),
                // One bad row must not fail its neighbours: retry the batch row by row.
                _ => b
                    .iter()
                    .map(|(row, x, target)| match guarded_predict(model, x, 1) {
                        Ok(mut p) if p.len() == 1 => RowOutcome::Ok {
                            row: *row,
                            prediction: p.remove(0),
                            target: target.clone(),
                        },
                        Ok(_) => RowOutcome::Err {
                            row: *row,
                            error: "the engine returned no prediction".into(),
                        },
                        Err(e) => RowOutcome::Err {
                            row: *row,
                            error: e.to_string(),
                        },
                    })
                    .collect(),
            };
            (out, t.elapsed())
        };
    let workers = opts.workers.max(1);
    let results: Vec<(Vec<RowOutcome>, std::time::Duration)> = if workers == 1 {
        let mut done = 0u64;
        let mut staging = Vec::new();
        batches
            .iter()
            .map(|b| {
                let r = run(&mut staging, b);
                done += b.len() as u64;
                events.emit(Event::Progress {
                    stage: "infer".into(),
                    done,
                    total: Some(total as u64),
                    unit: "row".into(),
                });
                r
            })
            .collect()
    } else {
        // Batches are independent: run them on a pool of `workers` threads. `collect` keeps the
        // input order.
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("kiln-infer-{i}"))
            .build()
            .map_err(|e| InferError::Input(format!("cannot start {workers} workers: {e}")))?;
        // Rounds of a few batches per worker, so that progress is reported while they run.
        let mut r = Vec::with_capacity(batches.len());
        let mut done = 0u64;
        for round in batches.chunks(workers * 4) {
            let part: Vec<(Vec<RowOutcome>, std::time::Duration)> =
                pool.install(|| round.par_iter().map_init(Vec::new, run).collect());
            done += round.iter().map(|b| b.len() as u64).sum::<u64>();
            r.extend(part);
            events.emit(Event::Progress {
                stage: "infer".into(),
                done,
                total: Some(total as u64),
                unit: "row".into(),
            });
        }
        r
    };
    let mut latency = crate::LatencyRecorder::new();
    let mut engine_seconds = 0.0;
    for (out, d) in results {
        latency.record(d);
        engine_seconds += d.as_secs_f64();
        for o in out {
            let row = match &o {
                RowOutcome::Ok { row, .. } | RowOutcome::Err { row, .. } => *row,
            };
            outcomes[row] = Some(o);
        }
    }
    if workers > 1 {
        // Engine time summed over workers overstates wall time; report throughput per wall second.
        engine_seconds = start.elapsed().as_secs_f64().min(engine_seconds);
    }

    let outcomes: Vec<RowOutcome> = outcomes
        .into_iter()
        .enumerate()
        .map(|(row, o)| {
            o.unwrap_or(RowOutcome::Err {
                row,
                error: "row was not processed".into(),
            })
        })
        .collect();
    let ok = outcomes
        .iter()
        .filter(|o| matches!(o, RowOutcome::Ok { .. }))
        .count();
    let (mut labelled, mut correct) = (0usize, 0usize);
    let mut label_pairs: Vec<(&str, &str)> = Vec::new();
    if table.has_target && model.info().task == kiln_core::Task::Classification {
        for o in &outcomes {
            if let RowOutcome::Ok {
                prediction,
                target: Some(t),
                ..
            } = o
            {
                labelled += 1;
                label_pairs.push((&prediction.label, t));
                if *prediction.label == **t
                    || prediction.class_index.map(|i| i.to_string()).as_deref() == Some(t)
                        && model.info().class_names.is_none()
                {
                    correct += 1;
                }
            }
        }
    }
    let regression = if table.has_target && model.info().task == kiln_core::Task::Regression {
        let pairs: Vec<(f64, f64)> = outcomes
            .iter()
            .filter_map(|o| match o {
                RowOutcome::Ok {
                    prediction,
                    target: Some(t),
                    ..
                } => Some((
                    prediction.scores.first().copied()? as f64,
                    t.parse::<f64>().ok()?,
                )),
                _ => None,
            })
            .collect();
        regression_metrics(&pairs)
    } else {
        None
    };
    let accuracy = (labelled > 0).then(|| correct as f64 / labelled as f64);
    let classification = (labelled > 0).then(|| {
        let known = model.info().class_names.clone().unwrap_or_default();
        kiln_core::metrics::ClassificationReport::from_pairs(label_pairs, &known)
    });
    // Labels the model was never trained on can only ever be wrong: say so.
    if let (Some(c), Some(known)) = (&classification, &model.info().class_names) {
        let unseen: Vec<(&String, u64)> = c
            .per_class
            .iter()
            .filter(|m| !known.contains(&m.class) && m.support > 0)
            .map(|m| (&m.class, m.support))
            .collect();
        if !unseen.is_empty() {
            let rows: u64 = unseen.iter().map(|u| u.1).sum();
            let names: Vec<&str> = unseen.iter().take(5).map(|u| u.0.as_str()).collect();
            events.emit(Event::Message {
                level: kiln_core::Level::Warn,
                text: format!(
                    "{rows} labelled row(s) have label(s) the model was never trained on ({}{}); they count as wrong in the accuracy",
                    names.join(", "),
                    if unseen.len() > 5 { ", …" } else { "" }
                ),
            });
        }
    }
    if let Some(r) = &regression {
        labelled = r.labelled;
    }
    Ok(BatchReport {
        classification,
        regression,
        rows: total,
        ok,
        failed: total - ok,
        accuracy,
        labelled,
        engine_seconds,
        batch_latency: latency.summary(),
        total_seconds: start.elapsed().as_secs_f64(),
        rows_per_second: if engine_seconds > 0.0 {
            ok as f64 / engine_seconds
        } else {
            0.0
        },
        outcomes,
    })
}

/// Output file format for predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `row,label,prob_<class>…,error`
    Csv,
    /// One JSON object per row.
    Jsonl,
    /// The score matrix `[rows, classes]` as a float32 `.npy` array; rows with an error are
    /// NaN (labels are the argmax of each row).
    Npy,
}

impl OutputFormat {
    /// Picks the format from a file extension (`.jsonl`/`.ndjson`, `.npy`, else CSV).
    pub fn from_path(path: &Path) -> Self {
        match Format::from_path(path) {
            Format::Jsonl => Self::Jsonl,
            Format::Npy => Self::Npy,
            Format::Csv => Self::Csv,
        }
    }
}

pub(crate) fn score_columns(model: &Model, width: usize) -> Vec<String> {
    let info = model.info();
    match (&info.class_names, info.task) {
        (_, kiln_core::Task::Regression) => (0..width).map(|i| format!("value_{i}")).collect(),
        (Some(names), _) if names.len() == width => {
            names.iter().map(|n| format!("prob_{n}")).collect()
        }
        _ => (0..width).map(|i| format!("score_{i}")).collect(),
    }
}

/// Writes one output record per input row, in input order. Predicted rows carry the label and
/// the scores (f32 printed in shortest round-trip form); error rows carry the row number and the
/// reason in the `error` column. A file is written atomically; `None` writes to stdout.
pub fn write_predictions(
    model: &Model,
    report: &BatchReport,
    output: Option<&Path>,
    format: OutputFormat,
) -> Result<(), InferError> {
    let width = report
        .outcomes
        .iter()
        .find_map(|o| match o {
            RowOutcome::Ok { prediction, .. } => Some(prediction.scores.len()),
            _ => None,
        })
        .or_else(|| model.info().class_names.as_ref().map(Vec::len))
        .unwrap_or(0);
    let columns = score_columns(model, width);
    let render = |w: &mut dyn Write| -> std::io::Result<()> {
        match format {
            OutputFormat::Csv => {
                let mut out = csv::Writer::from_writer(w);
                let mut header = vec!["row".to_string(), "label".to_string()];
                header.extend(columns.iter().cloned());
                header.push("error".into());
                out.write_record(&header)?;
                for o in &report.outcomes {
                    out.write_record(csv_fields(o, width))?;
                }
                out.flush()
            }
            OutputFormat::Npy => {
                let mut data = Vec::with_capacity(report.outcomes.len() * width);
                for o in &report.outcomes {
                    match o {
                        RowOutcome::Ok { prediction, .. } => {
                            data.extend_from_slice(&prediction.scores)
                        }
                        RowOutcome::Err { .. } => data.extend(std::iter::repeat_n(f32::NAN, width)),
                    }
                }
                kiln_data::npy::write_npy(w, report.outcomes.len(), width, &data)
            }
            OutputFormat::Jsonl => {
                for o in &report.outcomes {
                    writeln!(w, "{}", json_record(o, &columns))?;
                }
                Ok(())
            }
        }
    };
    match output {
        Some(p) => kiln_core::fsutil::write_atomic_with(p, render)?,
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            render(&mut lock).map_err(|e| InferError::Input(format!("writing to stdout: {e}")))?;
        }
    }
    Ok(())
}

/// The CSV fields of one outcome: `row,label,<scores…>,error`, with empty prediction cells on
/// error rows so that the file stays rectangular.
pub(crate) fn csv_fields(o: &RowOutcome, width: usize) -> Vec<String> {
    match o {
        RowOutcome::Ok {
            row, prediction, ..
        } => {
            let mut r = vec![row.to_string(), prediction.label.to_string()];
            r.extend(prediction.scores.iter().map(|v| v.to_string()));
            r.push(String::new());
            r
        }
        RowOutcome::Err { row, error } => {
            let mut r = vec![row.to_string(), String::new()];
            r.extend(std::iter::repeat_n(String::new(), width));
            r.push(error.clone());
            r
        }
    }
}

/// The JSON object of one outcome.
pub(crate) fn json_record(o: &RowOutcome, columns: &[String]) -> serde_json::Value {
    match o {
        RowOutcome::Ok {
            row, prediction, ..
        } => {
            let scores: serde_json::Map<String, serde_json::Value> = columns
                .iter()
                .zip(&prediction.scores)
                .map(|(c, s)| (c.clone(), serde_json::json!(s)))
                .collect();
            serde_json::json!({ "row": row, "label": &*prediction.label, "scores": scores })
        }
        RowOutcome::Err { row, error } => serde_json::json!({ "row": row, "error": error }),
    }
}

/// `Model::predict` with a panic in the engine turned into an error for these rows, so that a
/// worker thread survives it and the other batches still get their answers.
pub(crate) fn guarded_predict(
    model: &Model,
    x: &[f32],
    rows: usize,
) -> Result<Vec<Prediction>, InferError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.predict(x, rows)))
        .unwrap_or_else(|_| {
            Err(InferError::Run {
                engine: model.engine_name(),
                reason: "the engine panicked on this batch".into(),
            })
        })
}

/// Regression quality over (prediction, target) pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionMetrics {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination (1 - SSE / SST).
    pub r2: f64,
    /// Pairs measured.
    pub labelled: usize,
}

/// RMSE, MAE and R² of (prediction, target) pairs; `None` when there are none.
pub fn regression_metrics(pairs: &[(f64, f64)]) -> Option<RegressionMetrics> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let mean_t = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let sse: f64 = pairs.iter().map(|(p, t)| (p - t).powi(2)).sum();
    let sst: f64 = pairs.iter().map(|(_, t)| (t - mean_t).powi(2)).sum();
    Some(RegressionMetrics {
        rmse: (sse / n).sqrt(),
        mae: pairs.iter().map(|(p, t)| (p - t).abs()).sum::<f64>() / n,
        r2: if sst > 0.0 { 1.0 - sse / sst } else { 0.0 },
        labelled: pairs.len(),
    })
}
