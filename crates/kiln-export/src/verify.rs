use crate::ExportError;
use kiln_core::Reference;
use kiln_infer::TractEngine;
use serde::Serialize;
use std::path::Path;

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
}

/// Runs the serialized model in tract on the reference rows at each of `batch_sizes` (1, 7 and
/// 64 for a symbolic batch, so that a dimension fixed by accident is caught; rows are cycled to
/// fill a batch), and compares its first output with the reference outputs.
pub fn verify_against_reference(
    onnx: &[u8],
    reference: &Reference,
    origin: &Path,
    batch_sizes: &[usize],
) -> Result<VerifyReport, ExportError> {
    let engine = TractEngine::from_bytes(onnx, origin)?;
    compare(&engine, reference, origin, batch_sizes)
}

/// The same check in ONNX Runtime (kiln's `ort` engine), when its library can be loaded;
/// `Ok(None)` when it cannot (the run says so), or without the `ort` feature.
pub fn verify_in_onnx_runtime(
    onnx: &[u8],
    reference: &Reference,
    origin: &Path,
    batch_sizes: &[usize],
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
        compare(&engine, reference, origin, batch_sizes).map(Some)
    }
    #[cfg(not(feature = "ort"))]
    {
        let _ = (onnx, reference, origin, batch_sizes);
        Ok(None)
    }
}

fn compare(
    engine: &dyn kiln_core::InferenceEngine<Error = kiln_infer::InferError>,
    reference: &Reference,
    origin: &Path,
    batch_sizes: &[usize],
) -> Result<VerifyReport, ExportError> {
    let n = reference.inputs.len();
    if n == 0 {
        return Err(ExportError::NoReference {
            dir: origin.to_path_buf(),
        });
    }
    let width = reference.inputs[0].len();
    let batch_sizes = batch_sizes.to_vec();
    let (mut max_abs, mut max_rel, mut min_cos) = (0f32, 0f32, 1f32);
    let (mut agree, mut compared) = (0usize, 0usize);
    for &bs in &batch_sizes {
        let mut start = 0;
        while start < n {
            let idx: Vec<usize> = (0..bs).map(|k| (start + k) % n).collect();
            let data: Vec<f32> = idx
                .iter()
                .flat_map(|&i| reference.inputs[i].iter().copied())
                .collect();
            let out = kiln_core::InferenceEngine::run(
                engine,
                vec![kiln_core::Tensor::F32 {
                    shape: vec![bs, width],
                    data,
                }],
            )?;
            let Some(kiln_core::Tensor::F32 { data: got, .. }) = out.into_iter().next() else {
                return Err(ExportError::Infer(kiln_infer::InferError::Signature(
                    "first output is not float32".into(),
                )));
            };
            let per = got.len() / bs;
            for (k, &i) in idx.iter().enumerate() {
                let a = &got[k * per..(k + 1) * per];
                let b = &reference.outputs[i];
                if a.len() != b.len() {
                    return Err(ExportError::Infer(kiln_infer::InferError::Signature(
                        format!(
                            "the ONNX model gives {} outputs per row, the reference has {}",
                            a.len(),
                            b.len()
                        ),
                    )));
                }
                let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
                for (x, y) in a.iter().zip(b) {
                    let d = (x - y).abs();
                    // A NaN anywhere must fail verification, so compare with `!(d <= m)`.
                    if d.is_nan() || d > max_abs {
                        max_abs = d;
                    }
                    max_rel = max_rel.max(d / y.abs().max(1e-6));
                    dot += (*x as f64) * (*y as f64);
                    na += (*x as f64).powi(2);
                    nb += (*y as f64).powi(2);
                }
                let cos = if na > 0.0 && nb > 0.0 {
                    (dot / (na.sqrt() * nb.sqrt())) as f32
                } else {
                    1.0
                };
                min_cos = min_cos.min(cos);
                compared += 1;
                if argmax(a) == argmax(b) {
                    agree += 1;
                }
            }
            start += bs;
        }
    }
    Ok(VerifyReport {
        rows: n,
        batch_sizes,
        max_abs_diff: max_abs,
        max_rel_diff: max_rel,
        min_cosine: min_cos,
        argmax_agreement: agree as f32 / compared.max(1) as f32,
    })
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
