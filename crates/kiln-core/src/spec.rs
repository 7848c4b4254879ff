use crate::CoreError;
use serde::{Deserialize, Serialize};

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One of `outputs` classes; the exported graph ends in softmax + argmax.
    #[default]
    Classification,
    /// `outputs` real values; the exported graph has no softmax.
    Regression,
}

/// An element-wise activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
}

impl Activation {
    /// Parses a lower-case activation name.
    pub fn parse(name: &str) -> Result<Self, CoreError> {
        match name {
            "relu" => Ok(Self::Relu),
            "tanh" => Ok(Self::Tanh),
            "sigmoid" => Ok(Self::Sigmoid),
            other => Err(CoreError::InvalidSpec(format!(
                "unknown activation {other:?}; use one of relu, tanh, sigmoid"
            ))),
        }
    }
}

/// One layer of a declarative model. Layers run in order; weights of layer `name` are stored as
/// `{name}.weight` and `{name}.bias` in the artifact's SafeTensors file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerSpec {
    /// A fully connected layer `y = x W + b` with `W` stored as `[in_features, out_features]`
    /// (burn's layout).
    Linear {
        /// Weight name prefix.
        name: String,
        /// Input width.
        in_features: usize,
        /// Output width.
        out_features: usize,
    },
    /// An element-wise activation.
    Activation {
        /// Which one.
        activation: Activation,
    },
    /// Dropout: active in training, the identity in inference (and so absent from exports).
    Dropout {
        /// Probability of zeroing an element during training.
        prob: f64,
    },
}

/// The format version of [`ModelSpec`]; bumped on incompatible changes.
pub const SPEC_FORMAT_VERSION: u32 = 1;

/// A declarative description of a network: its input width, its layers and its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Format version of this spec ([`SPEC_FORMAT_VERSION`]).
    pub format_version: u32,
    /// A model kind label, e.g. `mlp`.
    pub kind: String,
    /// Classification or regression.
    pub task: Task,
    /// Number of input features.
    pub input_features: usize,
    /// Number of classes (classification) or values (regression).
    pub outputs: usize,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// An MLP classifier: `Linear → ReLU → [Dropout] → … → Linear(outputs)`.
    pub fn mlp(input_features: usize, hidden: &[usize], classes: usize, dropout: f64) -> Self {
        let mut layers = Vec::new();
        let mut width = input_features;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(LayerSpec::Linear {
                name: format!("layers.{i}"),
                in_features: width,
                out_features: h,
            });
            layers.push(LayerSpec::Activation {
                activation: Activation::Relu,
            });
            if dropout > 0.0 {
                layers.push(LayerSpec::Dropout { prob: dropout });
            }
            width = h;
        }
        layers.push(LayerSpec::Linear {
            name: format!("layers.{}", hidden.len()),
            in_features: width,
            out_features: classes,
        });
        Self {
            format_version: SPEC_FORMAT_VERSION,
            kind: "mlp".into(),
            task: Task::Classification,
            input_features,
            outputs: classes,
            layers,
        }
    }

    /// Checks that consecutive layer widths agree and that the output width is `outputs`.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.format_version != SPEC_FORMAT_VERSION {
            return Err(CoreError::InvalidSpec(format!(
                "spec format version {} is not supported by this kiln (expects {}); re-train or re-export with a matching kiln",
                self.format_version, SPEC_FORMAT_VERSION
            )));
        }
        if self.input_features == 0 {
            return Err(CoreError::InvalidSpec(
                "input_features must be at least 1".into(),
            ));
        }
        let mut width = self.input_features;
        let mut names = std::collections::HashSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                LayerSpec::Linear {
                    name,
                    in_features,
                    out_features,
                } => {
                    if *in_features != width {
                        return Err(CoreError::InvalidSpec(format!(
                            "layer {i} ({name}) expects {in_features} inputs but receives {width}"
                        )));
                    }
                    if *out_features == 0 {
                        return Err(CoreError::InvalidSpec(format!(
                            "layer {i} ({name}) has no outputs"
                        )));
                    }
                    if !names.insert(name.clone()) {
                        return Err(CoreError::InvalidSpec(format!(
                            "layer name {name:?} is used twice"
                        )));
                    }
                    width = *out_features;
                }
                LayerSpec::Dropout { prob } if !(0.0..1.0).contains(prob) => {
                    return Err(CoreError::InvalidSpec(format!(
                        "layer {i}: dropout probability {prob} must be in [0, 1)"
                    )));
                }
                _ => {}
            }
        }
        if width != self.outputs {
            return Err(CoreError::InvalidSpec(format!(
                "the last layer produces {width} values but the spec declares {} outputs",
                self.outputs
            )));
        }
        Ok(())
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                LayerSpec::Linear {
                    in_features,
                    out_features,
                    ..
                } => in_features * out_features + out_features,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_spec_is_valid_and_counts_parameters() {
        let spec = ModelSpec::mlp(4, &[8], 3, 0.1);
        spec.validate().expect("valid");
        assert_eq!(spec.parameter_count(), 4 * 8 + 8 + 8 * 3 + 3);
        assert_eq!(spec.layers.len(), 4);
    }

    #[test]
    fn width_mismatch_is_named() {
        let mut spec = ModelSpec::mlp(4, &[8], 3, 0.0);
        spec.outputs = 5;
        let err = spec.validate().expect_err("mismatch").to_string();
        assert!(
            err.contains("3 values") && err.contains("5 outputs"),
            "{err}"
        );
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = ModelSpec::mlp(2, &[3, 3], 2, 0.2);
        let json = serde_json::to_string(&spec).expect("json");
        let back: ModelSpec = serde_json::from_str(&json).expect("parse");
        assert_eq!(spec, back);
    }
}
