use crate::ExportError;
use kiln_core::Reference;
use kiln_infer::TractEngine;
use serde::Serialize;
use std::path::Path;

/// How far an exported model's outputs may be from the reference: an element passes when
/// `|onnx - reference| <= atol + rtol * scale`, where `scale` is the largest magnitude of that
/// output column over the reference rows. A fixed absolute tolerance cannot hold for outputs in
/// the hundreds or millions (one f32 ulp at 256 is 3.05e-5); scaling by the column rather than
/// by each element keeps a regression prediction near zero, on a target in the millions, to the
/// precision its graph (`z * std + mean`) actually has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f32,
    /// Relative part, times the output column's largest reference magnitude.
    pub rtol: f32,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            atol: 1e-5,
            rtol: 1e-5,
        }
    }
}

impl Tolerance {
    /// The difference allowed for an output whose column has largest magnitude `scale`.
    pub fn allowed(&self, scale: f32) -> f32 {
        self.atol + self.rtol * scale
    }
}

/// How closely an exported model reproduces the reference outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Reference rows compared (each at every batch size).
    pub rows: usize,
    /// Batch sizes the rows were run at.
    pub batch_sizes: Vec<usize>,
    /// Largest absolute difference over all outputs.
    pub max_abs_diff: f32,
    /// Largest relative difference (|a-b| / max(|b|, 1e-6)).
    pub max_rel_diff: f32,
    /// Smallest cosine similarity between an ONNX row and its reference row.
    pub min_cosine: f32,
    /// Fraction of rows whose argmax agrees.
    pub argmax_agreement: f32,
    /// The tolerance the outputs were held to.
    pub tolerance: Tolerance,
    /// Largest `|onnx - reference| / allowed` over all outputs: at most 1 passes (NaN fails).
    pub error_ratio: f32,
    /// The difference allowed at the element with the largest `error_ratio`.
    pub allowed_diff: f32,
}

impl VerifyReport {
    /// Whether every output is within the tolerance (and none is NaN).
    pub fn passed(&self) -> bool {
        self.error_ratio <= 1.0
    }
}

/// Runs the serialized model in tract on the reference rows at each of `batch_sizes` (1, 7 and
/// 64 for a symbolic batch, so that a dimension fixed by accident is caught; rows are cycled to
/// fill a batch), and compares its first output with the reference outputs.
pub fn verify_against_reference(
    onnx: &[u8],
    reference: &Reference,
    origin: &Path,
    batch_sizes: &[usize],
    tolerance: Tolerance,
) -> Result<VerifyReport, ExportError> {
    let engine = TractEngine::from_bytes(onnx, origin)?;
    compare(&engine, reference, origin, batch_sizes, tolerance)
}

/// The same check in ONNX Runtime (kiln's `ort` engine), when its library can be loaded;
/// `Ok(None)` when it cannot (the run says so), or without the `ort` feature.
pub fn verify_in_onnx_runtime(
    onnx: &[u8],
    reference: &Reference,
    origin: &Path,
    batch_sizes: &[usize],
    tolerance: Tolerance,
) -> Result<Option<VerifyReport>, ExportError> {
    #[cfg(feature = "ort")]
    {
        if kiln_infer::ort_engine::available(None).is_err() {
            return Ok(None);
        }
        let opts = kiln_infer::ort_engine::OrtOptions {
            threads: Some(1),
            ..Default::default()
        };
        let engine = kiln_infer::ort_engine::OrtEngine::from_bytes(onnx, origin, &opts)?;
        compare(&engine, reference, origin, batch_sizes, tolerance).map(Some)
    }
    #[cfg(not(feature = "ort"))]
    {
        let _ = (onnx, reference, origin, batch_sizes, tolerance);
        Ok(None)
    }
}

fn compare(
    engine: &dyn kiln_core::InferenceEngine<Error = kiln_infer::InferError>,
    reference: &Reference,
    origin: &Path,
    batch_sizes: &[usize],
    tolerance: Tolerance,
) -> Result<VerifyReport, ExportError> {
    let n = reference.inputs.len();
    if n == 0 {
        return Err(ExportError::NoReference {
            dir: origin.to_path_buf(),
        });
    }
    let mut diffs = Diffs::new(column_scales(&reference.outputs), tolerance);
    for &bs in batch_sizes {
        for start in (0..n).step_by(bs.max(1)) {
            let idx: Vec<usize> = (0..bs).map(|k| (start + k) % n).collect();
            let got = run_rows(engine, reference, &idx)?;
            let per = got.len() / bs.max(1);
            for (k, &i) in idx.iter().enumerate() {
                diffs.add_row(&got[k * per..(k + 1) * per], &reference.outputs[i])?;
            }
        }
    }
    Ok(diffs.report(n, batch_sizes.to_vec()))
}

/// Runs the reference rows `idx` as one batch and returns the first output, flattened.
fn run_rows(
    engine: &dyn kiln_core::InferenceEngine<Error = kiln_infer::InferError>,
    reference: &Reference,
    idx: &[usize],
) -> Result<Vec<f32>, ExportError> {
    let width = reference.inputs[0].len();
    let data: Vec<f32> = idx
        .iter()
        .flat_map(|&i| reference.inputs[i].iter().copied())
        .collect();
    let out = kiln_core::InferenceEngine::run(
        engine,
        vec![kiln_core::Tensor::F32 {
            shape: vec![idx.len(), width],
            data,
        }],
    )?;
    match out.into_iter().next() {
        Some(kiln_core::Tensor::F32 { data, .. }) => Ok(data),
        _ => Err(ExportError::Infer(kiln_infer::InferError::Signature(
            "first output is not float32".into(),
        ))),
    }
}

/// The largest magnitude of each output column over the reference rows.
fn column_scales(outputs: &[Vec<f32>]) -> Vec<f32> {
    let width = outputs.first().map_or(0, Vec::len);
    let mut scales = vec![0f32; width];
    for row in outputs {
        for (s, y) in scales.iter_mut().zip(row) {
            *s = s.max(y.abs());
        }
    }
    scales
}

/// Running comparison of ONNX rows against reference rows.
struct Diffs {
    scales: Vec<f32>,
    tolerance: Tolerance,
    max_abs: f32,
    max_rel: f32,
    min_cos: f32,
    ratio: f32,
    allowed_at_worst: f32,
    agree: usize,
    compared: usize,
}

impl Diffs {
    fn new(scales: Vec<f32>, tolerance: Tolerance) -> Self {
        Self {
            scales,
            tolerance,
            max_abs: 0.0,
            max_rel: 0.0,
            min_cos: 1.0,
            ratio: 0.0,
            allowed_at_worst: tolerance.atol,
            agree: 0,
            compared: 0,
        }
    }

    fn add_row(&mut self, got: &[f32], want: &[f32]) -> Result<(), ExportError> {
        if got.len() != want.len() || want.len() != self.scales.len() {
            return Err(ExportError::Infer(kiln_infer::InferError::Signature(
                format!(
                    "the ONNX model gives {} outputs per row, the reference has {}",
                    got.len(),
                    want.len()
                ),
            )));
        }
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        for ((x, y), scale) in got.iter().zip(want).zip(&self.scales) {
            let d = (x - y).abs();
            // A NaN anywhere must fail verification, so NaN replaces whatever was there.
            if d.is_nan() || d > self.max_abs {
                self.max_abs = d;
            }
            self.max_rel = self.max_rel.max(d / y.abs().max(1e-6));
            let allowed = self.tolerance.allowed(*scale);
            let ratio = d / allowed;
            if ratio.is_nan() || ratio > self.ratio {
                self.ratio = if ratio.is_nan() { f32::INFINITY } else { ratio };
                self.allowed_at_worst = allowed;
            }
            dot += f64::from(*x) * f64::from(*y);
            na += f64::from(*x).powi(2);
            nb += f64::from(*y).powi(2);
        }
        if na > 0.0 && nb > 0.0 {
            self.min_cos = self.min_cos.min((dot / (na.sqrt() * nb.sqrt())) as f32);
        }
        self.compared += 1;
        if argmax(got) == argmax(want) {
            self.agree += 1;
        }
        Ok(())
    }

    fn report(self, rows: usize, batch_sizes: Vec<usize>) -> VerifyReport {
        VerifyReport {
            rows,
            batch_sizes,
            max_abs_diff: self.max_abs,
            max_rel_diff: self.max_rel,
            min_cosine: self.min_cos,
            argmax_agreement: self.agree as f32 / self.compared.max(1) as f32,
            tolerance: self.tolerance,
            error_ratio: self.ratio,
            allowed_diff: self.allowed_at_worst,
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}
