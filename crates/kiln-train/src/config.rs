use crate::TrainError;
use serde::{Deserialize, Serialize};

/// A whole training run, declared as data. Unknown keys are rejected when loading from TOML or
/// JSON, so a typo cannot silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Classification (softmax, cross-entropy) or regression (one output, MSE).
    pub task: kiln_core::Task,
    /// Hidden layer widths of the MLP.
    pub hidden: Vec<usize>,
    /// Dropout after each hidden activation (0 disables it).
    pub dropout: f64,
    /// Number of epochs.
    pub epochs: usize,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam (L2) weight decay; 0 disables it.
    pub weight_decay: f64,
    /// Seed for weight initialisation, dropout and the data order.
    pub seed: u64,
    /// Name of the target column.
    pub target: String,
    /// Standardise features with statistics from the training data (stored with the model).
    pub standardize: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: kiln_core::Task::Classification,
            hidden: vec![64, 64],
            dropout: 0.0,
            epochs: 20,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 0.0,
            seed: 42,
            target: kiln_data::DEFAULT_TARGET.into(),
            standardize: true,
        }
    }
}

impl TrainConfig {
    /// Checks every field and says which one is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.hidden.contains(&0) {
            return bad("hidden layer widths must be at least 1".into());
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        Ok(())
    }
}
