use std::path::PathBuf;

/// Errors from reading, writing or interpreting ONNX models.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX model.
    #[error("{}: {reason}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "ONNX model".into()))]
    Decode {
        /// The file, when there is one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// The model could not be written.
    #[error(transparent)]
    Write(kiln_core::CoreError),
    /// A tensor's data is not what an operation needs.
    #[error("tensor {name:?}: {reason}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}
