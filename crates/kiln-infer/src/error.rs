use std::path::PathBuf;

/// Errors of the inference stage.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The model could not be loaded or prepared by the engine.
    #[error("cannot load {path} with {engine}: {reason}")]
    Load {
        /// The model file (or `<memory>`).
        path: PathBuf,
        /// The engine.
        engine: &'static str,
        /// Why.
        reason: String,
    },
    /// The engine failed while running a batch.
    #[error("{engine} failed to run the model: {reason}")]
    Run {
        /// The engine.
        engine: &'static str,
        /// Why.
        reason: String,
    },
    /// The engine cannot be used in this build or on this machine.
    #[error("the {engine} engine is unavailable: {reason}")]
    EngineUnavailable {
        /// The engine.
        engine: &'static str,
        /// Why, and how to fix it.
        reason: String,
    },
    /// The requested ONNX Runtime execution provider cannot run on this machine or build.
    #[error("the {provider} execution provider is unavailable: {reason}")]
    ProviderUnavailable {
        /// The provider asked for (`cuda:0`, `tensorrt:0`).
        provider: String,
        /// Why, and how to fix it.
        reason: String,
    },
    /// The inputs do not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
    /// The model's signature is not one kiln can turn into predictions.
    #[error("unsupported model signature: {0}")]
    Signature(String),
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// Reading the ONNX file failed.
    #[error(transparent)]
    Onnx(#[from] kiln_onnx::OnnxError),
    /// Writing results failed.
    #[error(transparent)]
    Write(#[from] kiln_core::CoreError),
}
