//! Export stage of kiln: a trained-model directory (spec + SafeTensors weights + metadata)
//! becomes a standard ONNX file, verified against burn's own outputs before it is written.
//!
//! The principal type is [`OnnxExporter`], which implements [`kiln_core::Exporter`]. The graph
//! takes **raw** features: the standardisation fitted in training is the first two nodes
//! (`Sub`, `Div`), so a deployed model cannot be fed unscaled data by mistake. Classifiers end in
//! `Softmax` (output `probabilities`) and `ArgMax` (output `label`); the batch dimension is the
//! symbol `N`.
//!
//! Design decision: this crate never links burn. The trainer stores sample rows with burn's
//! forward-pass outputs in the artifact (`reference.json`); export runs the new ONNX file in
//! tract on those rows at batch sizes 1, 7 and 64 and refuses to write it if any output differs
//! by more than the tolerance.
//!
//! ```no_run
//! use kiln_core::{Exporter, NullSink, TrainedModel};
//! use kiln_export::{ExportOptions, OnnxExporter};
//!
//! let trained = TrainedModel::load("run/model".as_ref())?;
//! let exporter = OnnxExporter::new(ExportOptions::default());
//! let onnx = exporter.export(&trained, "model.onnx".as_ref(), &mut NullSink)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod build;
mod error;
mod verify;
mod weights;

pub use build::build_model;
pub use error::ExportError;
pub use verify::{VerifyReport, verify_against_reference};
pub use weights::Weights;

use kiln_core::{Event, EventSink, Exporter, OnnxModel, TrainedModel};
use std::path::Path;
use std::time::Instant;

/// Lowest and highest default-domain opset kiln emits.
pub const OPSET_RANGE: std::ops::RangeInclusive<i64> = 13..=21;

/// Options of the export stage.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Default-domain opset (13–21).
    pub opset: i64,
    /// Verify the ONNX file against the reference outputs before writing it.
    pub verify: bool,
    /// Largest absolute difference allowed by verification.
    pub atol: f32,
    /// Name of the graph input.
    pub input_name: String,
    /// Overwrite an existing output file.
    pub force: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            opset: 17,
            verify: true,
            atol: 1e-5,
            input_name: "features".into(),
            force: false,
        }
    }
}

/// The export stage.
#[derive(Debug, Clone, Default)]
pub struct OnnxExporter {
    options: ExportOptions,
}

/// What an export produced.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The written model.
    pub model: OnnxModel,
    /// The verification against burn's outputs, when it ran.
    pub verification: Option<VerifyReport>,
    /// Size of the file in bytes.
    pub bytes: usize,
}

impl Exporter for OnnxExporter {
    type Error = ExportError;

    fn export(
        &self,
        model: &TrainedModel,
        output: &Path,
        events: &mut dyn EventSink,
    ) -> Result<OnnxModel, ExportError> {
        self.run(model, output, events).map(|o| o.model)
    }
}

impl OnnxExporter {
    /// An exporter with these options.
    pub fn new(options: ExportOptions) -> Self {
        Self { options }
    }

    /// Exports `model` to `output` and returns the verification report with the file.
    pub fn run(
        &self,
        model: &TrainedModel,
        output: &Path,
        events: &mut dyn EventSink,
    ) -> Result<ExportOutcome, ExportError> {
        let start = Instant::now();
        events.emit(Event::StageStarted {
            stage: "export".into(),
        });
        if !OPSET_RANGE.contains(&self.options.opset) {
            return Err(ExportError::Opset {
                opset: self.options.opset,
            });
        }
        if output.exists() && !self.options.force {
            return Err(ExportError::Exists {
                path: output.to_path_buf(),
            });
        }
        let weights = Weights::load(&model.weights_path())?;
        let proto = build_model(model, &weights, &self.options)?;
        let bytes = kiln_onnx::encode(&proto);
        let mut verification = None;
        if self.options.verify {
            let reference = model
                .reference
                .as_ref()
                .ok_or_else(|| ExportError::NoReference {
                    dir: model.dir.clone(),
                })?;
            let report = verify_against_reference(&bytes, reference, output)?;
            events.emit(Event::Message {
                level: kiln_core::Level::Info,
                text: format!(
                    "verified against burn on {} rows at batch sizes 1, 7, 64: max abs diff {:.3e}, argmax agreement {:.4}",
                    report.rows, report.max_abs_diff, report.argmax_agreement
                ),
            });
            if report.max_abs_diff.is_nan() || report.max_abs_diff > self.options.atol {
                return Err(ExportError::Verification {
                    report,
                    atol: self.options.atol,
                });
            }
            verification = Some(report);
        }
        kiln_core::fsutil::write_atomic(output, &bytes)?;
        events.emit(Event::StageFinished {
            stage: "export".into(),
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(ExportOutcome {
            model: OnnxModel {
                path: output.to_path_buf(),
            },
            verification,
            bytes: bytes.len(),
        })
    }
}
