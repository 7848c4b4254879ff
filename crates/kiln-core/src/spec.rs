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
    /// SiLU (swish): `x * sigmoid(x)`. No single ONNX op: exported as the model-local function
    /// `ai.kiln.SiLU`.
    Silu,
    /// GELU, exact: `x * (1 + erf(x / sqrt 2)) / 2`. Exported as the model-local function
    /// `ai.kiln.GELU` (ONNX's own Gelu op only exists from opset 20).
    Gelu,
}

impl Activation {
    /// Parses a lower-case activation name.
    pub fn parse(name: &str) -> Result<Self, CoreError> {
        match name {
            "relu" => Ok(Self::Relu),
            "tanh" => Ok(Self::Tanh),
            "sigmoid" => Ok(Self::Sigmoid),
            "silu" | "swish" => Ok(Self::Silu),
            "gelu" => Ok(Self::Gelu),
            other => Err(CoreError::InvalidSpec(format!(
                "unknown activation {other:?}; use one of relu, tanh, sigmoid, silu, gelu"
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
    /// Reshapes each row's flat features to `shape`, channels first: `[C, L]` for 1-D or
    /// `[C, H, W]` for 2-D convolutions.
    Reshape {
        /// The per-row shape; its product is the incoming width.
        shape: Vec<usize>,
    },
    /// A 1-D or 2-D convolution (as many spatial dimensions as `kernel` has entries), with
    /// `{name}.weight` `[out, in, k…]` and `{name}.bias` `[out]` (burn's and ONNX's layout).
    Conv {
        /// Weight name prefix.
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size per spatial dimension.
        kernel: Vec<usize>,
        /// Stride per spatial dimension.
        stride: Vec<usize>,
        /// Zero padding on both sides, per spatial dimension.
        padding: Vec<usize>,
    },
    /// Batch normalisation over the channel dimension, with `{name}.gamma`, `{name}.beta`,
    /// `{name}.running_mean` and `{name}.running_var` `[channels]`.
    BatchNorm {
        /// Weight name prefix.
        name: String,
        /// Channels (or features, after a Linear layer).
        channels: usize,
        /// Added to the variance.
        epsilon: f64,
    },
    /// Flattens `[C, …]` back to one feature vector per row.
    Flatten,
    /// A layer kind kiln does not know, exported by a user-registered implementation of
    /// `kiln_export::LayerExport` for `kind`. The spec declares its per-row output shape, and
    /// its weights are named `{name}.…` as the implementation reads them.
    Custom {
        /// The layer kind, matched against registered exporters.
        kind: String,
        /// Weight name prefix.
        name: String,
        /// Free-form parameters for the exporter.
        #[serde(default)]
        params: serde_json::Value,
        /// Per-row output shape.
        output_shape: Vec<usize>,
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

    /// A small CNN for image-like rows: `Reshape(input_shape)`, then per entry of `channels` a
    /// `Conv(k 3, padding 1; stride 1 for the first block, 2 after) → BatchNorm → ReLU →
    /// [Dropout]`, then `Flatten`, the `hidden` Linear+ReLU layers and `Linear(classes)`.
    /// `input_shape` is `[C, L]` (1-D) or `[C, H, W]` (2-D).
    pub fn cnn(
        input_shape: &[usize],
        channels: &[usize],
        hidden: &[usize],
        classes: usize,
        dropout: f64,
    ) -> Result<Self, CoreError> {
        if !(2..=3).contains(&input_shape.len()) || input_shape.contains(&0) {
            return Err(CoreError::InvalidSpec(format!(
                "input shape {input_shape:?} must be [channels, length] or [channels, height, width] with no zero"
            )));
        }
        let spatial = input_shape.len() - 1;
        let input_features: usize = input_shape.iter().product();
        let mut layers = vec![LayerSpec::Reshape {
            shape: input_shape.to_vec(),
        }];
        let mut c = input_shape[0];
        for (i, &out) in channels.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            layers.push(LayerSpec::Conv {
                name: format!("convs.{i}"),
                in_channels: c,
                out_channels: out,
                kernel: vec![3; spatial],
                stride: vec![stride; spatial],
                padding: vec![1; spatial],
            });
            layers.push(LayerSpec::BatchNorm {
                name: format!("norms.{i}"),
                channels: out,
                epsilon: 1e-5,
            });
            layers.push(LayerSpec::Activation {
                activation: Activation::Relu,
            });
            if dropout > 0.0 {
                layers.push(LayerSpec::Dropout { prob: dropout });
            }
            c = out;
        }
        layers.push(LayerSpec::Flatten);
        let mut spec = Self {
            format_version: SPEC_FORMAT_VERSION,
            kind: "cnn".into(),
            task: Task::Classification,
            input_features,
            outputs: classes,
            layers,
        };
        let mut width: usize = *spec
            .shapes()?
            .last()
            .and_then(|s| s.first())
            .ok_or_else(|| CoreError::InvalidSpec("the CNN has no layers".into()))?;
        for (i, &h) in hidden.iter().enumerate() {
            spec.layers.push(LayerSpec::Linear {
                name: format!("layers.{i}"),
                in_features: width,
                out_features: h,
            });
            spec.layers.push(LayerSpec::Activation {
                activation: Activation::Relu,
            });
            width = h;
        }
        spec.layers.push(LayerSpec::Linear {
            name: format!("layers.{}", hidden.len()),
            in_features: width,
            out_features: classes,
        });
        spec.validate()?;
        Ok(spec)
    }

    /// The per-row output shape of every layer (batch dimension excluded), checking that each
    /// layer fits what it receives.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, CoreError> {
        let bad = |i: usize, m: String| Err(CoreError::InvalidSpec(format!("layer {i}: {m}")));
        let mut cur = vec![self.input_features];
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                LayerSpec::Linear {
                    name,
                    in_features,
                    out_features,
                } => {
                    if cur != [*in_features] {
                        return bad(
                            i,
                            format!("{name} expects {in_features} inputs but receives {cur:?}"),
                        );
                    }
                    cur = vec![*out_features];
                }
                LayerSpec::Reshape { shape } => {
                    if shape.iter().product::<usize>() != cur.iter().product::<usize>()
                        || !(2..=3).contains(&shape.len())
                    {
                        return bad(i, format!("cannot reshape {cur:?} to {shape:?}"));
                    }
                    cur = shape.clone();
                }
                LayerSpec::Conv {
                    name,
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    let spatial = cur.len().saturating_sub(1);
                    if !(1..=2).contains(&spatial)
                        || kernel.len() != spatial
                        || stride.len() != spatial
                        || padding.len() != spatial
                    {
                        return bad(
                            i,
                            format!(
                                "{name}: kernel {kernel:?}, stride {stride:?} and padding {padding:?} must each have one entry per spatial dimension of {cur:?}"
                            ),
                        );
                    }
                    if cur[0] != *in_channels {
                        return bad(
                            i,
                            format!(
                                "{name} expects {in_channels} channels but receives {}",
                                cur[0]
                            ),
                        );
                    }
                    let mut next = vec![*out_channels];
                    for d in 0..spatial {
                        let span = cur[d + 1] + 2 * padding[d];
                        if kernel[d] == 0 || stride[d] == 0 || span < kernel[d] {
                            return bad(
                                i,
                                format!("{name}: kernel {kernel:?} does not fit {cur:?}"),
                            );
                        }
                        next.push((span - kernel[d]) / stride[d] + 1);
                    }
                    cur = next;
                }
                LayerSpec::BatchNorm { name, channels, .. } => {
                    if cur[0] != *channels {
                        return bad(
                            i,
                            format!("{name} normalises {channels} channels but receives {cur:?}"),
                        );
                    }
                }
                LayerSpec::Flatten => cur = vec![cur.iter().product()],
                LayerSpec::Custom { output_shape, .. } => {
                    if output_shape.is_empty() || output_shape.contains(&0) {
                        return bad(
                            i,
                            format!(
                                "custom layer output shape {output_shape:?} must be non-empty without zeros"
                            ),
                        );
                    }
                    cur = output_shape.clone();
                }
                LayerSpec::Activation { .. } | LayerSpec::Dropout { .. } => {}
            }
            out.push(cur.clone());
        }
        Ok(out)
    }

    /// The same spec with every hidden activation replaced by `activation`.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        for l in &mut self.layers {
            if let LayerSpec::Activation { activation: a } = l {
                *a = activation;
            }
        }
        self
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
        let shapes = self.shapes()?;
        let mut width = self.input_features;
        let mut names = std::collections::HashSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                LayerSpec::Conv { name, .. } | LayerSpec::BatchNorm { name, .. }
                    if !names.insert(name.clone()) =>
                {
                    return Err(CoreError::InvalidSpec(format!(
                        "layer name {name:?} is used twice"
                    )));
                }
                LayerSpec::Linear {
                    name,
                    in_features,
                    out_features,
                } => {
                    // `shapes` has checked that the input fits.
                    let _ = in_features;
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
                }
                LayerSpec::Dropout { prob } if !(0.0..1.0).contains(prob) => {
                    return Err(CoreError::InvalidSpec(format!(
                        "layer {i}: dropout probability {prob} must be in [0, 1)"
                    )));
                }
                _ => {}
            }
        }
        width = shapes.last().map_or(width, |s| s.iter().product());
        if shapes.last().is_some_and(|s| s.len() != 1) {
            return Err(CoreError::InvalidSpec(
                "the last layer must produce one vector per row; add Flatten and a Linear layer"
                    .into(),
            ));
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
                LayerSpec::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    ..
                } => in_channels * out_channels * kernel.iter().product::<usize>() + out_channels,
                LayerSpec::BatchNorm { channels, .. } => 2 * channels,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnn_spec_tracks_shapes_and_refuses_misfits() {
        let spec = ModelSpec::cnn(&[1, 8, 8], &[8, 16], &[32], 10, 0.1).expect("cnn");
        let shapes = spec.shapes().expect("shapes");
        assert_eq!(shapes[0], vec![1, 8, 8]);
        // Conv(s1) keeps 8x8; Conv(s2) halves it; Flatten gives 16*4*4.
        assert!(shapes.contains(&vec![8, 8, 8]));
        assert!(shapes.contains(&vec![16, 4, 4]));
        assert!(shapes.contains(&vec![256]));
        assert_eq!(shapes.last(), Some(&vec![10]));
        assert_eq!(
            spec.parameter_count(),
            (8 * 9 + 8) + 16 + (16 * 8 * 9 + 16) + 32 + (256 * 32 + 32) + (32 * 10 + 10)
        );
        let one_d = ModelSpec::cnn(&[4, 16], &[8], &[], 3, 0.0).expect("1-D");
        assert_eq!(one_d.shapes().expect("shapes").last(), Some(&vec![3]));
        assert!(ModelSpec::cnn(&[64], &[8], &[], 3, 0.0).is_err());
        let mut broken = spec.clone();
        if let Some(LayerSpec::Reshape { shape }) = broken.layers.first_mut() {
            *shape = vec![1, 7, 7];
        }
        let err = broken.validate().expect_err("49 != 64");
        assert!(err.to_string().contains("cannot reshape"), "{err}");
    }

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
