//! Side-by-side comparison of two models on the same labelled rows: accuracy, agreement,
//! output drift, speed and size, and, for models that share intermediate value names (a float
//! model and its kiln-quantized form), a per-layer activation error table.

use crate::OptimizeError;
use kiln_core::{InferenceEngine, Tensor};
use kiln_infer::{EngineKind, LatencyRecorder, LatencySummary, Model, TractEngine};
use kiln_onnx::proto::{ModelProto, TypeProto, ValueInfoProto, data_type, type_proto};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One model's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    /// The file.
    pub path: PathBuf,
    /// File size in bytes.
    pub bytes: u64,
    /// Accuracy on the labelled rows.
    pub accuracy: Option<f64>,
    /// Rows per second at batch 64 (tract).
    pub rows_per_second: f64,
    /// Per-call latency at batch 64.
    pub latency: LatencySummary,
}

/// The error of one shared intermediate value.
#[derive(Debug, Clone, Serialize)]
pub struct LayerError {
    /// The value's name.
    pub name: String,
    /// Largest absolute difference.
    pub max_abs: f32,
    /// Mean absolute difference.
    pub mean_abs: f32,
    /// Cosine similarity of the flattened activations.
    pub cosine: f32,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// Rows compared.
    pub rows: usize,
    /// The first model.
    pub a: ModelFigures,
    /// The second model.
    pub b: ModelFigures,
    /// Fraction of rows where both predict the same label.
    pub agreement: f64,
    /// Largest absolute difference between their score outputs.
    pub max_abs_diff: f32,
    /// Per-layer errors for values both graphs compute, in the first model's node order.
    pub layers: Vec<LayerError>,
}

impl CompareReport {
    /// The report as a Markdown document.
    pub fn to_markdown(&self) -> String {
        let acc = |a: Option<f64>| a.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
        let mut s = format!(
            "| model | size (bytes) | accuracy | rows/s (batch 64) | p50 µs | p95 µs |\n|---|---:|---:|---:|---:|---:|\n| {} | {} | {} | {:.0} | {} | {} |\n| {} | {} | {} | {:.0} | {} | {} |\n\nAgreement {:.4} on {} rows; max abs score difference {:.3e}.\n",
            self.a.path.display(),
            self.a.bytes,
            acc(self.a.accuracy),
            self.a.rows_per_second,
            self.a.latency.p50_us,
            self.a.latency.p95_us,
            self.b.path.display(),
            self.b.bytes,
            acc(self.b.accuracy),
            self.b.rows_per_second,
            self.b.latency.p50_us,
            self.b.latency.p95_us,
            self.agreement,
            self.rows,
            self.max_abs_diff
        );
        if !self.layers.is_empty() {
            s.push_str("\n| layer output | max abs error | mean abs error | cosine |\n|---|---:|---:|---:|\n");
            for l in &self.layers {
                s.push_str(&format!(
                    "| {} | {:.3e} | {:.3e} | {:.6} |\n",
                    l.name, l.max_abs, l.mean_abs, l.cosine
                ));
            }
        }
        s
    }
}

fn figures(
    path: &Path,
    model: &Model,
    x: &[f32],
    rows: usize,
    targets: &[Option<String>],
) -> Result<(ModelFigures, Vec<kiln_infer::Prediction>), OptimizeError> {
    let preds = model.predict(x, rows)?;
    let labelled: Vec<(&kiln_infer::Prediction, &String)> = preds
        .iter()
        .zip(targets)
        .filter_map(|(p, t)| t.as_ref().map(|t| (p, t)))
        .collect();
    let accuracy = (!labelled.is_empty()).then(|| {
        labelled.iter().filter(|(p, t)| *p.label == ***t).count() as f64 / labelled.len() as f64
    });
    let width = x.len() / rows.max(1);
    let batch = rows.clamp(1, 64);
    let mut rec = LatencyRecorder::new();
    let start = Instant::now();
    let mut calls = 0usize;
    while calls < 20 || start.elapsed().as_secs_f64() < 0.2 {
        let t = Instant::now();
        model.predict(&x[..batch * width], batch)?;
        rec.record(t.elapsed());
        calls += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok((
        ModelFigures {
            path: path.to_path_buf(),
            bytes,
            accuracy,
            rows_per_second: (calls * batch) as f64 / secs,
            latency: rec.summary(),
        },
        preds,
    ))
}

fn float_value_names(m: &ModelProto) -> Vec<String> {
    let Some(g) = m.graph.as_ref() else {
        return vec![];
    };
    let outputs: std::collections::HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    g.node
        .iter()
        .filter(|n| {
            matches!(
                n.op_type(),
                "Gemm" | "MatMul" | "Add" | "Mul" | "Relu" | "Sigmoid" | "Tanh" | "Div" | "Sub"
            )
        })
        .flat_map(|n| n.output.iter().cloned())
        .filter(|o| !outputs.contains(o.as_str()))
        .collect()
}

/// Runs `m` with `names` exposed as extra outputs; returns their values.
fn activations(
    m: &ModelProto,
    names: &[String],
    x: &[f32],
    rows: usize,
) -> Result<Vec<Vec<f32>>, OptimizeError> {
    let mut probe = m.clone();
    let Some(g) = probe.graph.as_mut() else {
        return Ok(vec![]);
    };
    let base = g.output.len();
    for n in names {
        g.output.push(ValueInfoProto {
            name: Some(n.clone()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(data_type::FLOAT),
                    shape: None,
                })),
                denotation: None,
            }),
            ..Default::default()
        });
    }
    let engine = TractEngine::from_bytes(&kiln_onnx::encode(&probe), Path::new("<compare>"))?;
    let out = engine.run_f32(&[rows, x.len() / rows.max(1)], x)?;
    Ok(out
        .into_iter()
        .skip(base)
        .map(|t| match t {
            Tensor::F32 { data, .. } => data,
            Tensor::I64 { data, .. } => data.into_iter().map(|v| v as f32).collect(),
        })
        .collect())
}

/// Compares two model files on labelled rows from `data`.
pub fn compare_files(
    a: &Path,
    b: &Path,
    data: &Path,
    target: &str,
) -> Result<CompareReport, OptimizeError> {
    let ma = Model::load(a, EngineKind::Tract)?;
    let mb = Model::load(b, EngineKind::Tract)?;
    let table = kiln_data::read_rows(data, None, target, ma.info().feature_names.as_deref())?;
    let (mut x, mut targets) = (Vec::new(), Vec::new());
    for r in table.rows {
        if let Ok((f, t)) = r.result {
            x.extend(f);
            targets.push(t);
        }
    }
    let rows = targets.len();
    if rows == 0 {
        return Err(OptimizeError::Options(format!(
            "{} has no readable rows to compare on",
            data.display()
        )));
    }
    let (fa, pa) = figures(a, &ma, &x, rows, &targets)?;
    let (fb, pb) = figures(b, &mb, &x, rows, &targets)?;
    let agreement = pa
        .iter()
        .zip(&pb)
        .filter(|(p, q)| p.label == q.label)
        .count() as f64
        / rows as f64;
    let max_abs_diff = pa
        .iter()
        .zip(&pb)
        .flat_map(|(p, q)| p.scores.iter().zip(&q.scores).map(|(u, v)| (u - v).abs()))
        .fold(0f32, f32::max);
    // Shared intermediate values: a kiln-quantized model keeps the float model's layer outputs.
    let (pa_model, pb_model) = (kiln_onnx::load(a)?, kiln_onnx::load(b)?);
    let in_b: std::collections::HashSet<String> = pb_model
        .graph
        .iter()
        .flat_map(|g| g.node.iter().flat_map(|n| n.output.iter().cloned()))
        .collect();
    let shared: Vec<String> = float_value_names(&pa_model)
        .into_iter()
        .filter(|n| in_b.contains(n))
        .collect();
    let mut layers = Vec::new();
    if !shared.is_empty() {
        let (va, vb) = (
            activations(&pa_model, &shared, &x, rows)?,
            activations(&pb_model, &shared, &x, rows)?,
        );
        for ((name, u), v) in shared.iter().zip(va).zip(vb) {
            if u.len() != v.len() || u.is_empty() {
                continue;
            }
            let (mut max_abs, mut sum_abs, mut dot, mut nu, mut nv) =
                (0f32, 0f64, 0f64, 0f64, 0f64);
            for (p, q) in u.iter().zip(&v) {
                let d = (p - q).abs();
                max_abs = max_abs.max(d);
                sum_abs += d as f64;
                dot += (*p as f64) * (*q as f64);
                nu += (*p as f64).powi(2);
                nv += (*q as f64).powi(2);
            }
            let cosine = if nu > 0.0 && nv > 0.0 {
                (dot / (nu.sqrt() * nv.sqrt())) as f32
            } else {
                1.0
            };
            layers.push(LayerError {
                name: name.clone(),
                max_abs,
                mean_abs: (sum_abs / u.len() as f64) as f32,
                cosine,
            });
        }
    }
    Ok(CompareReport {
        rows,
        a: fa,
        b: fb,
        agreement,
        max_abs_diff,
        layers,
    })
}
