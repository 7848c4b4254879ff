use burn::module::{Module, Param, ParamId, RunningState};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig1d,
    PaddingConfig2d,
};
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use kiln_core::{Activation, LayerSpec, ModelSpec};
use std::collections::HashMap;

/// One named weight tensor in burn's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// `{layer}.weight`, `{layer}.bias`, `{layer}.gamma`, `{layer}.running_mean`, …
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A network built from a [`ModelSpec`]: its Linear, Conv and BatchNorm layers are burn
/// modules, the rest of the spec (activations, reshapes, dropout placement) drives the forward
/// pass.
#[derive(Module, Debug)]
pub struct Net {
    linears: Vec<Linear>,
    convs1: Vec<Conv1d>,
    convs2: Vec<Conv2d>,
    norms: Vec<BatchNorm>,
    dropouts: Vec<Dropout>,
    #[module(skip)]
    layers: Vec<LayerSpec>,
}

/// An activation of any rank the spec passes through.
enum Act {
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
}

fn activate<const D: usize>(a: &Activation, x: Tensor<D>) -> Tensor<D> {
    match a {
        Activation::Relu => burn::tensor::activation::relu(x),
        Activation::Tanh => burn::tensor::activation::tanh(x),
        Activation::Sigmoid => burn::tensor::activation::sigmoid(x),
        Activation::Silu => burn::tensor::activation::silu(x),
        Activation::Gelu => burn::tensor::activation::gelu(x),
    }
}

fn read(t: Tensor<1>) -> Result<Vec<f32>, String> {
    t.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}

fn read_any<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}

impl Net {
    /// Initialises a network with burn's default initialisers on `device`.
    pub fn init(spec: &ModelSpec, device: &Device) -> Self {
        let mut net = Self {
            linears: Vec::new(),
            convs1: Vec::new(),
            convs2: Vec::new(),
            norms: Vec::new(),
            dropouts: Vec::new(),
            layers: spec.layers.clone(),
        };
        for l in &spec.layers {
            match l {
                LayerSpec::Linear {
                    in_features,
                    out_features,
                    ..
                } => net
                    .linears
                    .push(LinearConfig::new(*in_features, *out_features).init(device)),
                LayerSpec::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    ..
                } => match kernel.len() {
                    1 => net.convs1.push(
                        Conv1dConfig::new(*in_channels, *out_channels, kernel[0])
                            .with_stride(stride[0])
                            .with_padding(PaddingConfig1d::Explicit(padding[0], padding[0]))
                            .init(device),
                    ),
                    _ => net.convs2.push(
                        Conv2dConfig::new([*in_channels, *out_channels], [kernel[0], kernel[1]])
                            .with_stride([stride[0], stride[1]])
                            .with_padding(PaddingConfig2d::Explicit(
                                padding[0], padding[1], padding[0], padding[1],
                            ))
                            .init(device),
                    ),
                },
                LayerSpec::BatchNorm {
                    channels, epsilon, ..
                } => net.norms.push(
                    BatchNormConfig::new(*channels)
                        .with_epsilon(*epsilon)
                        .init(device),
                ),
                LayerSpec::Dropout { prob } => net.dropouts.push(DropoutConfig::new(*prob).init()),
                // Custom kinds are export-only (`import_safetensors` refuses them).
                LayerSpec::Activation { .. }
                | LayerSpec::Reshape { .. }
                | LayerSpec::Flatten
                | LayerSpec::Custom { .. } => {}
            }
        }
        net
    }

    /// The forward pass: raw scores (logits) for each row of `[N, features]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let (mut li, mut c1, mut c2, mut ni, mut di) = (0, 0, 0, 0, 0);
        let mut x = Act::R2(x);
        for l in &self.layers {
            x = match (l, x) {
                (LayerSpec::Linear { .. }, Act::R2(t)) => {
                    li += 1;
                    Act::R2(self.linears[li - 1].forward(t))
                }
                (LayerSpec::Reshape { shape }, Act::R2(t)) => {
                    let n = t.dims()[0];
                    match shape.as_slice() {
                        [c, len] => Act::R3(t.reshape([n, *c, *len])),
                        [c, h, w] => Act::R4(t.reshape([n, *c, *h, *w])),
                        _ => Act::R2(t),
                    }
                }
                (LayerSpec::Conv { .. }, Act::R3(t)) => {
                    c1 += 1;
                    Act::R3(self.convs1[c1 - 1].forward(t))
                }
                (LayerSpec::Conv { .. }, Act::R4(t)) => {
                    c2 += 1;
                    Act::R4(self.convs2[c2 - 1].forward(t))
                }
                (LayerSpec::BatchNorm { .. }, a) => {
                    ni += 1;
                    let bn = &self.norms[ni - 1];
                    match a {
                        Act::R2(t) => Act::R2(bn.forward(t)),
                        Act::R3(t) => Act::R3(bn.forward(t)),
                        Act::R4(t) => Act::R4(bn.forward(t)),
                    }
                }
                (LayerSpec::Dropout { .. }, a) => {
                    di += 1;
                    let d = &self.dropouts[di - 1];
                    match a {
                        Act::R2(t) => Act::R2(d.forward(t)),
                        Act::R3(t) => Act::R3(d.forward(t)),
                        Act::R4(t) => Act::R4(d.forward(t)),
                    }
                }
                (LayerSpec::Activation { activation }, a) => match a {
                    Act::R2(t) => Act::R2(activate(activation, t)),
                    Act::R3(t) => Act::R3(activate(activation, t)),
                    Act::R4(t) => Act::R4(activate(activation, t)),
                },
                (LayerSpec::Flatten, a) => match a {
                    Act::R2(t) => Act::R2(t),
                    Act::R3(t) => Act::R2(t.flatten(1, 2)),
                    Act::R4(t) => Act::R2(t.flatten(1, 3)),
                },
                // `ModelSpec::shapes` rules the other pairs out; pass the value through.
                (_, a) => a,
            };
        }
        match x {
            Act::R2(t) => t,
            Act::R3(t) => t.flatten(1, 2),
            Act::R4(t) => t.flatten(1, 3),
        }
    }

    /// The named weights in spec order, with the burn parameter id of each (0 for running
    /// statistics, which the optimizer does not see): Linear `{name}.weight` `[in, out]` and
    /// `{name}.bias`; Conv `{name}.weight` `[out, in, k…]` and `{name}.bias`; BatchNorm
    /// `{name}.gamma`, `.beta`, `.running_mean`, `.running_var`.
    pub fn named_weights_with_ids(&self) -> Result<Vec<(NamedTensor, u64)>, String> {
        let mut out = Vec::new();
        let (mut li, mut c1, mut c2, mut ni) = (0, 0, 0, 0);
        let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>, id: u64| {
            out.push((NamedTensor { name, shape, data }, id));
        };
        for l in &self.layers {
            match l {
                LayerSpec::Linear {
                    name,
                    in_features,
                    out_features,
                } => {
                    let lin = &self.linears[li];
                    li += 1;
                    push(
                        format!("{name}.weight"),
                        vec![*in_features, *out_features],
                        read_any(lin.weight.val())?,
                        lin.weight.id.val(),
                    );
                    let (b, id) = match &lin.bias {
                        Some(b) => (read(b.val())?, b.id.val()),
                        None => (vec![0.0; *out_features], 0),
                    };
                    push(format!("{name}.bias"), vec![*out_features], b, id);
                }
                LayerSpec::Conv { name, kernel, .. } => {
                    let (w, wid, dims, bias) = if kernel.len() == 1 {
                        let c = &self.convs1[c1];
                        c1 += 1;
                        (
                            read_any(c.weight.val())?,
                            c.weight.id.val(),
                            c.weight.val().dims().to_vec(),
                            c.bias.as_ref().map(|b| (b.val(), b.id.val())),
                        )
                    } else {
                        let c = &self.convs2[c2];
                        c2 += 1;
                        (
                            read_any(c.weight.val())?,
                            c.weight.id.val(),
                            c.weight.val().dims().to_vec(),
                            c.bias.as_ref().map(|b| (b.val(), b.id.val())),
                        )
                    };
                    let out_ch = dims[0];
                    push(format!("{name}.weight"), dims, w, wid);
                    let (bv, bid) = match bias {
                        Some((t, id)) => (read(t)?, id),
                        None => (vec![0.0; out_ch], 0),
                    };
                    push(format!("{name}.bias"), vec![out_ch], bv, bid);
                }
                LayerSpec::BatchNorm { name, channels, .. } => {
                    let bn = &self.norms[ni];
                    ni += 1;
                    let c = vec![*channels];
                    push(
                        format!("{name}.gamma"),
                        c.clone(),
                        read(bn.gamma.val())?,
                        bn.gamma.id.val(),
                    );
                    push(
                        format!("{name}.beta"),
                        c.clone(),
                        read(bn.beta.val())?,
                        bn.beta.id.val(),
                    );
                    push(
                        format!("{name}.running_mean"),
                        c.clone(),
                        read(bn.running_mean.value())?,
                        0,
                    );
                    push(
                        format!("{name}.running_var"),
                        c,
                        read(bn.running_var.value())?,
                        0,
                    );
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The named weights (see [`Net::named_weights_with_ids`]).
    pub fn named_weights(&self) -> Result<Vec<NamedTensor>, String> {
        Ok(self
            .named_weights_with_ids()?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    /// The burn parameter ids, in [`Net::named_weights`] order.
    pub fn param_ids(&self) -> Vec<u64> {
        let (mut li, mut c1, mut c2, mut ni) = (0, 0, 0, 0);
        let bias = |b: &Option<Param<Tensor<1>>>| b.as_ref().map_or(0, |b| b.id.val());
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                LayerSpec::Linear { .. } => {
                    let lin = &self.linears[li];
                    li += 1;
                    out.extend([lin.weight.id.val(), bias(&lin.bias)]);
                }
                LayerSpec::Conv { kernel, .. } if kernel.len() == 1 => {
                    let c = &self.convs1[c1];
                    c1 += 1;
                    out.extend([c.weight.id.val(), bias(&c.bias)]);
                }
                LayerSpec::Conv { .. } => {
                    let c = &self.convs2[c2];
                    c2 += 1;
                    out.extend([c.weight.id.val(), bias(&c.bias)]);
                }
                LayerSpec::BatchNorm { .. } => {
                    let bn = &self.norms[ni];
                    ni += 1;
                    // Running statistics are not optimised: id 0, as in named_weights_with_ids.
                    out.extend([bn.gamma.id.val(), bn.beta.id.val(), 0, 0]);
                }
                _ => {}
            }
        }
        out
    }

    /// A copy of this network with its weights replaced by `weights` (as produced by
    /// [`Net::named_weights`]). The tensors are f32 whatever the device's default float type,
    /// so that a reference forward pass is computed in f32.
    pub fn with_weights(self, weights: &[NamedTensor], device: &Device) -> Self {
        self.with_weights_as(weights, &HashMap::new(), device, Some(DType::F32))
    }

    /// [`Net::with_weights`] that also restores each parameter's id (by tensor name), so that a
    /// saved optimizer state applies to the restored parameters. The tensors take the device's
    /// default float type (the training precision).
    pub fn with_weights_and_ids(
        self,
        weights: &[NamedTensor],
        ids: &HashMap<String, u64>,
        device: &Device,
    ) -> Self {
        self.with_weights_as(weights, ids, device, None)
    }

    fn with_weights_as(
        mut self,
        weights: &[NamedTensor],
        ids: &HashMap<String, u64>,
        device: &Device,
        dtype: Option<DType>,
    ) -> Self {
        let opts = || {
            let o = TensorCreationOptions::new(device.clone());
            match dtype {
                Some(d) => o.with_dtype(d),
                None => o,
            }
        };
        let find = |n: &str| weights.iter().find(|t| t.name == n);
        let tensor = |n: &str| -> Option<TensorData> {
            find(n).map(|t| TensorData::new(t.data.clone(), t.shape.clone()))
        };
        let param = |n: &str, p: Param<Tensor<1>>| -> Param<Tensor<1>> {
            let Some(d) = tensor(n) else { return p };
            let mut q = Param::from_tensor(Tensor::<1>::from_data(d, opts()));
            if let Some(&id) = ids.get(n) {
                q.id = ParamId::from(id);
            } else {
                q.id = p.id;
            }
            q
        };
        macro_rules! param_d {
            ($n:expr, $p:expr, $d:literal) => {{
                let p = $p;
                match tensor($n) {
                    Some(d) => {
                        let mut q = Param::from_tensor(Tensor::<$d>::from_data(d, opts()));
                        q.id = ids.get($n).map_or(p.id, |&id| ParamId::from(id));
                        q
                    }
                    None => p,
                }
            }};
        }
        let (mut li, mut c1, mut c2, mut ni) = (0, 0, 0, 0);
        let layers = self.layers.clone();
        for l in &layers {
            match l {
                LayerSpec::Linear { name, .. } => {
                    let lin = &mut self.linears[li];
                    li += 1;
                    lin.weight = param_d!(&format!("{name}.weight"), lin.weight.clone(), 2);
                    if let Some(b) = lin.bias.take() {
                        lin.bias = Some(param(&format!("{name}.bias"), b));
                    }
                }
                LayerSpec::Conv { name, kernel, .. } if kernel.len() == 1 => {
                    let c = &mut self.convs1[c1];
                    c1 += 1;
                    c.weight = param_d!(&format!("{name}.weight"), c.weight.clone(), 3);
                    if let Some(b) = c.bias.take() {
                        c.bias = Some(param(&format!("{name}.bias"), b));
                    }
                }
                LayerSpec::Conv { name, .. } => {
                    let c = &mut self.convs2[c2];
                    c2 += 1;
                    c.weight = param_d!(&format!("{name}.weight"), c.weight.clone(), 4);
                    if let Some(b) = c.bias.take() {
                        c.bias = Some(param(&format!("{name}.bias"), b));
                    }
                }
                LayerSpec::BatchNorm { name, .. } => {
                    let bn = &mut self.norms[ni];
                    ni += 1;
                    bn.gamma = param(&format!("{name}.gamma"), bn.gamma.clone());
                    bn.beta = param(&format!("{name}.beta"), bn.beta.clone());
                    if let Some(d) = tensor(&format!("{name}.running_mean")) {
                        bn.running_mean = RunningState::new(Tensor::from_data(d, opts()));
                    }
                    if let Some(d) = tensor(&format!("{name}.running_var")) {
                        bn.running_var = RunningState::new(Tensor::from_data(d, opts()));
                    }
                }
                _ => {}
            }
        }
        self
    }
}
