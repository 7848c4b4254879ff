use crate::{ExportError, ExportOptions, Weights};
use kiln_core::{Activation, LayerSpec, Task, TrainedModel};
use kiln_onnx::proto::{ModelProto, data_type::FLOAT, data_type::INT64};
use kiln_onnx::{Dim, GraphBuilder, attr_float, attr_int, attr_ints};

/// Builds the ONNX graph of a trained model: standardisation, the layers, then softmax + argmax
/// for classifiers. Every intermediate value gets a `value_info` entry.
pub fn build_model(
    model: &TrainedModel,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<ModelProto, ExportError> {
    build_model_with(model, weights, opts, &[])
}

/// [`build_model`] with exporters for custom layer kinds.
pub fn build_model_with(
    model: &TrainedModel,
    weights: &Weights,
    opts: &ExportOptions,
    custom: &[std::sync::Arc<dyn crate::LayerExport>],
) -> Result<ModelProto, ExportError> {
    let spec = &model.spec;
    // The batch dimension is the symbol `N` unless a fixed size was asked for.
    let batch = || match opts.static_batch {
        Some(n) => Dim::Fixed(n),
        None => Dim::Symbol("N".into()),
    };
    let names = &opts.output_names;
    let (probs_name, label_name, pred_name) = (
        names.first().map_or("probabilities", String::as_str),
        names.get(1).map_or("label", String::as_str),
        names.first().map_or("predictions", String::as_str),
    );
    spec.validate()?;
    let meta = &model.metadata;
    let f = spec.input_features;
    let mut g = GraphBuilder::new(&format!("kiln_{}", spec.kind));
    let input = opts.input_name.as_str();
    g.input(input, FLOAT, &[batch(), Dim::Fixed(f)]);
    let mut x = input.to_string();
    // Baking moves the standardisation into the first Linear layer: W' = W / std (per input
    // row), b' = b - (mean / std)·W. A Conv first layer cannot take it exactly (its zero
    // padding would then pad raw values), so that is refused.
    let bake = match (&meta.normalization, opts.bake_standardization) {
        (Some(n), true) => match spec.layers.first() {
            Some(LayerSpec::Linear { .. }) => Some(n.clone()),
            _ => {
                return Err(ExportError::Options(
                    "--bake-standardization needs a Linear first layer; this model starts with a reshape for its convolutions, where zero padding would make the fold inexact, so export without it".into(),
                ));
            }
        },
        _ => None,
    };
    if let Some(norm) = meta.normalization.as_ref().filter(|_| bake.is_none()) {
        if norm.mean.len() != f || norm.std.len() != f {
            return Err(ExportError::Core(kiln_core::CoreError::InvalidArtifact {
                path: model.dir.clone(),
                reason: format!(
                    "normalization has {} means for {f} features",
                    norm.mean.len()
                ),
            }));
        }
        let mean = g.constant_f32("norm.mean", &[f], &norm.mean);
        let std = g.constant_f32("norm.std", &[f], &norm.std);
        x = g.node("Sub", &[&x, &mean], &[]);
        g.annotate(&x, FLOAT, &[batch(), Dim::Fixed(f)]);
        x = g.node("Div", &[&x, &std], &[]);
        g.annotate(&x, FLOAT, &[batch(), Dim::Fixed(f)]);
    }
    let shapes = spec.shapes()?;
    let dims = |c: &[usize]| -> Vec<Dim> {
        std::iter::once(batch())
            .chain(c.iter().map(|&d| Dim::Fixed(d)))
            .collect()
    };
    let ints = |v: &[usize]| -> Vec<i64> { v.iter().map(|&d| d as i64).collect() };
    // A BatchNorm right after a Conv or Linear folds into it: y = (W x + b - mean) * s + beta
    // with s = gamma / sqrt(var + eps), i.e. W' = W * s per output channel and
    // b' = (b - mean) * s + beta.
    let fold_after = |i: usize| -> Option<(Vec<f32>, Vec<f32>)> {
        if !opts.fold_batchnorm {
            return None;
        }
        let LayerSpec::BatchNorm {
            name,
            channels,
            epsilon,
        } = spec.layers.get(i + 1)?
        else {
            return None;
        };
        let c = [*channels];
        let get = |part: &str| weights.get(&format!("{name}.{part}"), &c).ok();
        let (gamma, beta, mean, var) = (
            get("gamma")?,
            get("beta")?,
            get("running_mean")?,
            get("running_var")?,
        );
        let scale: Vec<f32> = gamma
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + *epsilon as f32).sqrt())
            .collect();
        let shift: Vec<f32> = (0..*channels)
            .map(|o| beta[o] - mean[o] * scale[o])
            .collect();
        Some((scale, shift))
    };
    let mut skip_next = false;
    for (i, (layer, shape)) in spec.layers.iter().zip(&shapes).enumerate() {
        if std::mem::take(&mut skip_next) {
            // This BatchNorm was folded into the layer before; its output is that layer's.
            g.annotate(&x, FLOAT, &dims(shape));
            continue;
        }
        match layer {
            LayerSpec::Linear {
                name,
                in_features,
                out_features,
            } => {
                let (fi, fo) = (*in_features, *out_features);
                let mut w = weights.get(&format!("{name}.weight"), &[fi, fo])?.to_vec();
                let mut b = weights.get(&format!("{name}.bias"), &[fo])?.to_vec();
                if let (0, Some(n)) = (i, &bake) {
                    for o in 0..fo {
                        b[o] -= (0..fi)
                            .map(|j| n.mean[j] / n.std[j] * w[j * fo + o])
                            .sum::<f32>();
                    }
                    for j in 0..fi {
                        for o in 0..fo {
                            w[j * fo + o] /= n.std[j];
                        }
                    }
                }
                if let Some((scale, shift)) = fold_after(i) {
                    for j in 0..fi {
                        for o in 0..fo {
                            w[j * fo + o] *= scale[o];
                        }
                    }
                    for o in 0..fo {
                        b[o] = b[o] * scale[o] + shift[o];
                    }
                    skip_next = true;
                }
                let wn = g.constant_f32(&format!("{name}.weight"), &[fi, fo], &w);
                let bn = g.constant_f32(&format!("{name}.bias"), &[fo], &b);
                // burn stores W as [in, out], which is Gemm's B (and MatMul's right operand)
                // without transposition.
                x = match opts.linear_op {
                    crate::LinearOp::Gemm => g.node("Gemm", &[&x, &wn, &bn], &[]),
                    crate::LinearOp::MatMulAdd => {
                        let m = g.node("MatMul", &[&x, &wn], &[]);
                        g.annotate(&m, FLOAT, &dims(shape));
                        g.node("Add", &[&m, &bn], &[])
                    }
                };
            }
            LayerSpec::Activation { activation } => {
                x = match activation {
                    Activation::Relu => g.node("Relu", &[&x], &[]),
                    Activation::Tanh => g.node("Tanh", &[&x], &[]),
                    Activation::Sigmoid => g.node("Sigmoid", &[&x], &[]),
                    // No single ONNX op: a model-local function in kiln's domain, whose body
                    // uses standard ops (`--inline-functions` expands it in place).
                    Activation::Silu | Activation::Gelu => {
                        let f = crate::functions::activation(*activation, opts.opset);
                        let name = f.name().to_string();
                        g.function(f);
                        g.node_in_domain(&name, crate::functions::DOMAIN, &[&x], &[])
                    }
                };
            }
            // Dropout is the identity at inference time, so it is not exported.
            LayerSpec::Dropout { .. } => continue,
            LayerSpec::Reshape { shape: to } => {
                // 0 copies the (symbolic) batch dimension.
                let mut target = vec![0i64];
                target.extend(ints(to));
                let t = g.initializer(kiln_onnx::tensor_i64(
                    &format!("reshape.{}", g.graph().node.len()),
                    &[target.len()],
                    &target,
                ));
                x = g.node("Reshape", &[&x, &t], &[]);
            }
            LayerSpec::Conv {
                name,
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                let mut wshape = vec![*out_channels, *in_channels];
                wshape.extend(kernel);
                let mut w = weights.get(&format!("{name}.weight"), &wshape)?.to_vec();
                let mut b = weights
                    .get(&format!("{name}.bias"), &[*out_channels])?
                    .to_vec();
                if let Some((scale, shift)) = fold_after(i) {
                    let per_out = w.len() / out_channels;
                    for (o, chunk) in w.chunks_mut(per_out).enumerate() {
                        chunk.iter_mut().for_each(|v| *v *= scale[o]);
                    }
                    for o in 0..*out_channels {
                        b[o] = b[o] * scale[o] + shift[o];
                    }
                    skip_next = true;
                }
                let wn = g.constant_f32(&format!("{name}.weight"), &wshape, &w);
                let bn = g.constant_f32(&format!("{name}.bias"), &[*out_channels], &b);
                let mut pads = ints(padding);
                pads.extend(ints(padding));
                x = g.node(
                    "Conv",
                    &[&x, &wn, &bn],
                    &[
                        attr_ints("kernel_shape", &ints(kernel)),
                        attr_ints("strides", &ints(stride)),
                        attr_ints("pads", &pads),
                    ],
                );
            }
            LayerSpec::BatchNorm {
                name,
                channels,
                epsilon,
            } => {
                let c = [*channels];
                let mut inputs = vec![x.clone()];
                for part in ["gamma", "beta", "running_mean", "running_var"] {
                    let n = format!("{name}.{part}");
                    let v = weights.get(&n, &c)?;
                    inputs.push(g.constant_f32(&n, &c, v));
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                x = g.node(
                    "BatchNormalization",
                    &refs,
                    &[attr_float("epsilon", *epsilon as f32)],
                );
            }
            LayerSpec::Flatten => {
                x = g.node("Flatten", &[&x], &[attr_int("axis", 1)]);
            }
            LayerSpec::Custom {
                kind, name, params, ..
            } => {
                let exporter = custom.iter().find(|c| c.kind() == kind).ok_or_else(|| {
                    ExportError::Options(format!(
                        "layer {name:?} is of custom kind {kind:?} and no exporter is registered for it; register an implementation of LayerExport with OnnxExporter::with_layer"
                    ))
                })?;
                let input_shape = if i == 0 {
                    vec![f]
                } else {
                    shapes[i - 1].clone()
                };
                let mut ctx = crate::LayerContext {
                    graph: &mut g,
                    weights,
                };
                x = exporter.export(&mut ctx, name, params, &x, &input_shape)?;
            }
        }
        g.annotate(&x, FLOAT, &dims(shape));
    }
    let width = shapes.last().map_or(f, |s| s.iter().product());
    match spec.task {
        Task::Classification => {
            g.node_named("Softmax", &[&x], &[probs_name], &[attr_int("axis", 1)]);
            g.node_named(
                "ArgMax",
                &[probs_name],
                &[label_name],
                &[attr_int("axis", 1), attr_int("keepdims", 0)],
            );
            g.output(probs_name, FLOAT, &[batch(), Dim::Fixed(width)]);
            g.output(label_name, INT64, &[batch()]);
        }
        Task::Regression => {
            // Undo the target standardisation used in training: y * std + mean.
            if let Some(t) = meta
                .target_normalization
                .as_ref()
                .filter(|t| t.mean.len() == 1 && t.std.len() == 1)
            {
                let s = g.constant_f32("target.std", &[1], &t.std);
                let m = g.constant_f32("target.mean", &[1], &t.mean);
                x = g.node("Mul", &[&x, &s], &[]);
                g.annotate(&x, FLOAT, &[batch(), Dim::Fixed(width)]);
                x = g.node("Add", &[&x, &m], &[]);
                g.annotate(&x, FLOAT, &[batch(), Dim::Fixed(width)]);
            }
            g.node_named("Identity", &[&x], &[pred_name], &[]);
            g.output(pred_name, FLOAT, &[batch(), Dim::Fixed(width)]);
        }
    }
    let mut m = g.into_model(opts.opset);
    if opts.inline_functions {
        kiln_onnx::inline::inline_functions(&mut m);
    }
    m.producer_name = Some("kiln".into());
    m.producer_version = Some(kiln_core::KILN_VERSION.into());
    m.doc_string = Some(format!(
        "{} {} trained by kiln {} with burn {}; input {input}: float32 [N, {f}] raw features (standardisation is inside the graph)",
        spec.kind,
        match spec.task {
            Task::Classification => "classifier",
            Task::Regression => "regressor",
        },
        meta.kiln_version,
        meta.burn_version
    ));
    let set = |m: &mut ModelProto, k: &str, v: String| kiln_onnx::set_metadata(m, k, &v);
    set(
        &mut m,
        "kiln.task",
        match spec.task {
            Task::Classification => "classification".into(),
            Task::Regression => "regression".into(),
        },
    );
    set(&mut m, "kiln.class_names", to_json(&meta.class_names));
    set(&mut m, "kiln.feature_names", to_json(&meta.feature_names));
    set(&mut m, "kiln.target", meta.target.clone());
    if let Some(n) = &meta.normalization {
        set(&mut m, "kiln.normalization", to_json(n));
    }
    set(&mut m, "kiln.version", meta.kiln_version.clone());
    set(&mut m, "kiln.burn_version", meta.burn_version.clone());
    set(&mut m, "kiln.created_unix", meta.created_unix.to_string());
    set(&mut m, "kiln.weights_sha256", weights.sha256().to_string());
    // The training configuration and its hash, so two models can be traced to identical runs.
    let training = to_json(&meta.training);
    {
        use sha2::Digest;
        set(
            &mut m,
            "kiln.training_config_sha256",
            hex::encode(sha2::Sha256::digest(training.as_bytes())),
        );
    }
    set(&mut m, "kiln.training_config", training);
    set(&mut m, "kiln.spec", to_json(spec));
    Ok(m)
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
