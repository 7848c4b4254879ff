use crate::VerifyReport;
use std::path::PathBuf;

/// Errors of the export stage.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The requested opset is outside the supported range.
    #[error("opset {opset} is not supported; kiln exports opsets 13 to 21 (default 17)")]
    Opset {
        /// The requested opset.
        opset: i64,
    },
    /// Export options that cannot be applied to this model.
    #[error("{0}")]
    Options(String),
    /// The requested input/output names do not fit the model.
    #[error("invalid names: {reason}")]
    Names {
        /// What is wrong.
        reason: String,
    },
    /// The output exists and `force` was not given.
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists {
        /// The output path.
        path: PathBuf,
    },
    /// The weights file is missing, unreadable, or does not match the spec.
    #[error("weights {path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Verification needs reference outputs, and the artifact has none.
    #[error(
        "{dir} has no reference.json with burn's outputs to verify against; pass --no-verify to export without verification"
    )]
    NoReference {
        /// The artifact directory.
        dir: PathBuf,
    },
    /// The ONNX outputs differ from burn's by more than the tolerance.
    #[error(
        "verification failed in {engine}: max abs diff {:.3e} where {:.3e} is allowed (atol {:.1e} + rtol {:.1e} x the output's largest reference magnitude; argmax agreement {:.4}); the file was not written. if the graph is right and only the tolerance is tight, raise rtol or atol",
        report.max_abs_diff, report.allowed_diff, report.tolerance.atol, report.tolerance.rtol, report.argmax_agreement
    )]
    Verification {
        /// The engine that ran the exported graph.
        engine: String,
        /// The comparison, with the tolerance it was held to.
        report: VerifyReport,
    },
    /// The exported graph could not be run for verification.
    #[error("running the exported model for verification: {0}")]
    Infer(#[from] kiln_infer::InferError),
    /// The artifact could not be read or the output not written.
    #[error(transparent)]
    Core(#[from] kiln_core::CoreError),
}
