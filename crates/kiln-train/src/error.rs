/// Errors of the training stage.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid.
    #[error("invalid training config: {0}")]
    Config(String),
    /// The data cannot be trained on.
    #[error("training data: {0}")]
    Data(String),
    /// burn reported an error.
    #[error("burn: {0}")]
    Burn(String),
    /// Training diverged (the loss became NaN or infinite).
    #[error(
        "training diverged at epoch {epoch}: the loss is {loss}; lower --lr or check the data for extreme values"
    )]
    Diverged {
        /// The epoch.
        epoch: usize,
        /// The loss value.
        loss: f64,
    },
    /// A training device (a remote worker) failed mid-run.
    #[error("{0}")]
    Device(String),
    /// Imported weights do not fit their spec.
    #[error("weights: {0}")]
    Weights(String),
    /// A checkpoint is missing, truncated, modified or from another run.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Writing the artifact failed.
    #[error(transparent)]
    Core(#[from] kiln_core::CoreError),
}
