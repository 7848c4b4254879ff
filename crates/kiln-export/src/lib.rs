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
pub mod functions;
mod layer;
mod verify;
mod weights;

pub use build::{build_model, build_model_with};
pub use error::ExportError;
pub use layer::{LayerContext, LayerExport};
pub use verify::{Tolerance, VerifyReport, verify_against_reference, verify_in_onnx_runtime};
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
    /// How far the ONNX outputs may be from burn's (absolute plus relative to each output's
    /// scale; see [`Tolerance`]).
    pub tolerance: Tolerance,
    /// Name of the graph input.
    pub input_name: String,
    /// Names of the graph outputs (classifier: scores then label; regressor: predictions);
    /// empty for the defaults `probabilities`, `label`, `predictions`.
    pub output_names: Vec<String>,
    /// A fixed batch size instead of the symbolic `N`.
    pub static_batch: Option<usize>,
    /// Overwrite an existing output file.
    pub force: bool,
    /// Fold each BatchNorm into the Conv or Linear layer before it (exact at inference time).
    pub fold_batchnorm: bool,
    /// How Linear layers are written: one `Gemm`, or `MatMul` + `Add`.
    pub linear_op: LinearOp,
    /// Fold the input standardisation into the first Linear layer's weights instead of
    /// `Sub`/`Div` nodes (refused when the first layer is not a Linear).
    pub bake_standardization: bool,
    /// Expand kiln's model-local functions (SiLU, GELU) into standard ops in the graph, for
    /// runtimes without ONNX function support.
    pub inline_functions: bool,
}

/// The ONNX form of a Linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearOp {
    /// `Gemm(x, W, b)`.
    #[default]
    Gemm,
    /// `Add(MatMul(x, W), b)`, for runtimes that optimise MatMul better than Gemm.
    MatMulAdd,
}

impl LinearOp {
    /// Parses `gemm` or `matmul-add`.
    pub fn parse(name: &str) -> Result<Self, ExportError> {
        match name {
            "gemm" => Ok(Self::Gemm),
            "matmul-add" | "matmul" => Ok(Self::MatMulAdd),
            other => Err(ExportError::Options(format!(
                "unknown linear op {other:?}; use gemm or matmul-add"
            ))),
        }
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            opset: 17,
            verify: true,
            tolerance: Tolerance::default(),
            input_name: "features".into(),
            output_names: Vec::new(),
            static_batch: None,
            force: false,
            fold_batchnorm: true,
            linear_op: LinearOp::Gemm,
            bake_standardization: false,
            inline_functions: false,
        }
    }
}

/// The export stage.
#[derive(Debug, Clone, Default)]
pub struct OnnxExporter {
    options: ExportOptions,
    layers: Vec<std::sync::Arc<dyn LayerExport>>,
}

/// What an export produced.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The written model.
    pub model: OnnxModel,
    /// The verification against burn's outputs in tract, when it ran.
    pub verification: Option<VerifyReport>,
    /// The same verification in ONNX Runtime, when its library was available.
    pub verification_ort: Option<VerifyReport>,
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
    /// Checks the requested input/output names against the model's outputs.
    fn check_names(&self, model: &TrainedModel) -> Result<(), ExportError> {
        let o = &self.options;
        let bad = |reason: String| ExportError::Names { reason };
        if o.input_name.is_empty() {
            return Err(bad("the input name is empty".into()));
        }
        if o.static_batch == Some(0) {
            return Err(bad("--static-batch must be at least 1".into()));
        }
        if o.output_names.is_empty() {
            return Ok(());
        }
        let want = match model.spec.task {
            kiln_core::Task::Classification => 2,
            kiln_core::Task::Regression => 1,
        };
        if o.output_names.len() != want {
            return Err(bad(format!(
                "the model has {want} output(s) ({}) but {} name(s) were given ({})",
                if want == 2 {
                    "scores, label"
                } else {
                    "predictions"
                },
                o.output_names.len(),
                o.output_names.join(", ")
            )));
        }
        let mut all: Vec<&str> = o.output_names.iter().map(String::as_str).collect();
        all.push(&o.input_name);
        if all.iter().any(|n| n.is_empty()) || (1..all.len()).any(|i| all[..i].contains(&all[i])) {
            return Err(bad(format!(
                "input and output names must be distinct and non-empty: {}",
                all.join(", ")
            )));
        }
        Ok(())
    }

    /// An exporter with these options.
    pub fn new(options: ExportOptions) -> Self {
        Self {
            options,
            layers: Vec::new(),
        }
    }

    /// Registers an exporter for a custom layer kind (see [`LayerExport`]).
    pub fn with_layer(mut self, layer: impl LayerExport + 'static) -> Self {
        self.layers.push(std::sync::Arc::new(layer));
        self
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
        self.check_names(model)?;
        let weights = Weights::load(&model.weights_path())?;
        // The trainer records the weights' hash; a mismatch means the directory mixes files of
        // two runs or was edited, and its reference outputs cannot be trusted.
        let recorded = &model.metadata.weights_sha256;
        if !recorded.is_empty() && recorded != weights.sha256() {
            return Err(ExportError::Weights {
                path: model.weights_path(),
                reason: format!(
                    "sha256 {} does not match the {recorded} recorded in metadata.json: the model directory was modified or mixes two runs; re-train or restore it",
                    weights.sha256()
                ),
            });
        }
        let proto = build_model_with(model, &weights, &self.options, &self.layers)?;
        let bytes = kiln_onnx::encode(&proto);
        let mut verification = None;
        let mut verification_ort = None;
        if self.options.verify {
            let reference = model
                .reference
                .as_ref()
                .ok_or_else(|| ExportError::NoReference {
                    dir: model.dir.clone(),
                })?;
            let batch_sizes = match self.options.static_batch {
                Some(n) => vec![n],
                None => vec![1, 7, 64],
            };
            let progress = |done| Event::Progress {
                stage: "verify".into(),
                done,
                total: Some(2),
                unit: "engine".into(),
            };
            events.emit(progress(0));
            let tolerance = self.options.tolerance;
            let report =
                verify_against_reference(&bytes, reference, output, &batch_sizes, tolerance)?;
            events.emit(progress(1));
            verification = Some(checked("burn in tract", report, events)?);
            // ONNX Runtime too, when its library is here: two independent engines must both
            // reproduce burn.
            let ort = verify_in_onnx_runtime(&bytes, reference, output, &batch_sizes, tolerance)?;
            events.emit(progress(2));
            match ort {
                Some(r) => verification_ort = Some(checked("ONNX Runtime", r, events)?),
                None => events.emit(Event::Message {
                    level: kiln_core::Level::Info,
                    text: "ONNX Runtime is not available (scripts/fetch-onnxruntime.sh or ORT_DYLIB_PATH), so the export was verified in tract only".into(),
                }),
            }
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
            verification_ort,
            bytes: bytes.len(),
        })
    }
}

/// Logs a verification and turns a failed one into the error.
fn checked(
    engine: &str,
    report: VerifyReport,
    events: &mut dyn EventSink,
) -> Result<VerifyReport, ExportError> {
    events.emit(Event::Message {
        level: kiln_core::Level::Info,
        text: format!(
            "verified against burn ({engine}) on {} rows at batch sizes {:?}: max abs diff {:.3e} (allowed {:.3e}: atol {:.1e} + rtol {:.1e} x output scale), argmax agreement {:.4}",
            report.rows,
            report.batch_sizes,
            report.max_abs_diff,
            report.allowed_diff,
            report.tolerance.atol,
            report.tolerance.rtol,
            report.argmax_agreement
        ),
    });
    if report.passed() {
        Ok(report)
    } else {
        Err(ExportError::Verification {
            engine: engine.to_string(),
            report,
        })
    }
}
