use std::path::PathBuf;

/// Errors of the optimization stage.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    /// The options are invalid or conflict.
    #[error("{0}")]
    Options(String),
    /// The output exists and `force` was not given.
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists {
        /// The output path.
        path: PathBuf,
    },
    /// The model could not be read.
    #[error(transparent)]
    Onnx(#[from] kiln_onnx::OnnxError),
    /// A pass met a graph it cannot handle.
    #[error("pass {pass}: {reason}")]
    Pass {
        /// The pass.
        pass: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Running a model to compare input and output failed.
    #[error("comparing the optimized model with the input: {0}")]
    Infer(#[from] kiln_infer::InferError),
    /// Reading validation data failed.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// The optimized model lost too much accuracy; nothing was written.
    #[error("accuracy gate: the optimized model keeps {:.4} of the input's accuracy ({:?} -> {:?}), below the required {min}; the output was not written. Try --quantization dynamic, more calibration data, or lower --min-accuracy-ratio", ratio, comparison.accuracy_before, comparison.accuracy_after)]
    AccuracyGate {
        /// accuracy_after / accuracy_before.
        ratio: f64,
        /// The required ratio.
        min: f64,
        /// The full comparison.
        comparison: Box<crate::Comparison>,
    },
    /// A deployment bundle is malformed or does not match its manifest.
    #[error("bundle {path}: {reason}")]
    Bundle {
        /// The bundle directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing the output failed.
    #[error(transparent)]
    Core(#[from] kiln_core::CoreError),
}
