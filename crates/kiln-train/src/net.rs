use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use kiln_core::{Activation, LayerSpec, ModelSpec};

/// One named weight tensor in burn's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// `{layer}.weight` or `{layer}.bias`.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A network built from a [`ModelSpec`]: its linear layers are burn modules, the rest of the
/// spec (activations, dropout placement) drives the forward pass.
#[derive(Module, Debug)]
pub struct Net {
    linears: Vec<Linear>,
    dropouts: Vec<Dropout>,
    #[module(skip)]
    layers: Vec<LayerSpec>,
}

impl Net {
    /// Initialises a network with burn's default initialisers on `device`.
    pub fn init(spec: &ModelSpec, device: &Device) -> Self {
        let mut linears = Vec::new();
        let mut dropouts = Vec::new();
        for l in &spec.layers {
            match l {
                LayerSpec::Linear {
                    in_features,
                    out_features,
                    ..
                } => linears.push(LinearConfig::new(*in_features, *out_features).init(device)),
                LayerSpec::Dropout { prob } => dropouts.push(DropoutConfig::new(*prob).init()),
                LayerSpec::Activation { .. } => {}
            }
        }
        Self {
            linears,
            dropouts,
            layers: spec.layers.clone(),
        }
    }

    /// The forward pass: raw scores (logits) for each row.
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let (mut li, mut di) = (0, 0);
        for l in &self.layers {
            x = match l {
                LayerSpec::Linear { .. } => {
                    li += 1;
                    self.linears[li - 1].forward(x)
                }
                LayerSpec::Dropout { .. } => {
                    di += 1;
                    self.dropouts[di - 1].forward(x)
                }
                LayerSpec::Activation { activation } => match activation {
                    Activation::Relu => burn::tensor::activation::relu(x),
                    Activation::Tanh => burn::tensor::activation::tanh(x),
                    Activation::Sigmoid => burn::tensor::activation::sigmoid(x),
                },
            };
        }
        x
    }

    /// The named weights in burn's layout, in spec order: `{name}.weight` `[in, out]` and
    /// `{name}.bias` `[out]`.
    pub fn named_weights(&self) -> Result<Vec<NamedTensor>, String> {
        let mut out = Vec::new();
        let mut li = 0;
        for l in &self.layers {
            if let LayerSpec::Linear {
                name,
                in_features,
                out_features,
            } = l
            {
                let lin = &self.linears[li];
                li += 1;
                let w = lin
                    .weight
                    .val()
                    .to_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| format!("{e:?}"))?;
                out.push(NamedTensor {
                    name: format!("{name}.weight"),
                    shape: vec![*in_features, *out_features],
                    data: w,
                });
                let b = match &lin.bias {
                    Some(b) => b
                        .val()
                        .to_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .map_err(|e| format!("{e:?}"))?,
                    None => vec![0.0; *out_features],
                };
                out.push(NamedTensor {
                    name: format!("{name}.bias"),
                    shape: vec![*out_features],
                    data: b,
                });
            }
        }
        Ok(out)
    }

    /// The burn parameter ids, in [`Net::named_weights`] order (the optimizer keys its state
    /// by them).
    pub fn param_ids(&self) -> Vec<u64> {
        self.linears
            .iter()
            .flat_map(|l| {
                let b = l.bias.as_ref().map_or(0, |b| b.id.val());
                [l.weight.id.val(), b]
            })
            .collect()
    }

    /// A copy of this network with its weights replaced by `weights` (as produced by
    /// [`Net::named_weights`]).
    /// The tensors are f32 whatever the device's default float type, so that a reference
    /// forward pass is computed in f32.
    pub fn with_weights(self, weights: &[NamedTensor], device: &Device) -> Self {
        self.with_weights_as(
            weights,
            &std::collections::HashMap::new(),
            device,
            Some(burn::tensor::DType::F32),
        )
    }

    /// [`Net::with_weights`] that also restores each parameter's id (by tensor name), so that a
    /// saved optimizer state applies to the restored parameters.
    /// The tensors take the device's default float type (the training precision).
    pub fn with_weights_and_ids(
        self,
        weights: &[NamedTensor],
        ids: &std::collections::HashMap<String, u64>,
        device: &Device,
    ) -> Self {
        self.with_weights_as(weights, ids, device, None)
    }

    fn with_weights_as(
        mut self,
        weights: &[NamedTensor],
        ids: &std::collections::HashMap<String, u64>,
        device: &Device,
        dtype: Option<burn::tensor::DType>,
    ) -> Self {
        let opts = || {
            let o = burn::tensor::TensorCreationOptions::new(device.clone());
            match dtype {
                Some(d) => o.with_dtype(d),
                None => o,
            }
        };
        let param = |name: &str, t: Tensor<1>| {
            let mut p = Param::from_tensor(t);
            if let Some(&id) = ids.get(name) {
                p.id = burn::module::ParamId::from(id);
            }
            p
        };
        let param2 = |name: &str, t: Tensor<2>| {
            let mut p = Param::from_tensor(t);
            if let Some(&id) = ids.get(name) {
                p.id = burn::module::ParamId::from(id);
            }
            p
        };
        let mut li = 0;
        for l in &self.layers {
            if let LayerSpec::Linear {
                name,
                in_features,
                out_features,
            } = l
            {
                let find = |n: String| weights.iter().find(|t| t.name == n).map(|t| t.data.clone());
                if let (Some(w), Some(b)) =
                    (find(format!("{name}.weight")), find(format!("{name}.bias")))
                {
                    let lin = &mut self.linears[li];
                    lin.weight = param2(
                        &format!("{name}.weight"),
                        Tensor::from_data(
                            TensorData::new(w, [*in_features, *out_features]),
                            opts(),
                        ),
                    );
                    lin.bias = Some(param(
                        &format!("{name}.bias"),
                        Tensor::from_data(TensorData::new(b, [*out_features]), opts()),
                    ));
                }
                li += 1;
            }
        }
        self
    }
}
