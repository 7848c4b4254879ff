//! Models trained elsewhere: a hand-written [`ModelSpec`] plus a SafeTensors file become a
//! kiln trained-model directory, with burn's own outputs on sample rows as the reference the
//! export stage verifies against, so `kiln export --spec … --weights …` is verified like a model
//! kiln trained.

use crate::TrainError;
use crate::net::{NamedTensor, Net};
use kiln_core::{LayerSpec, ModelMetadata, ModelSpec, Task, TrainedModel};
use std::path::Path;

/// How the file stores Linear weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsLayout {
    /// `[in, out]`, as burn and kiln store them.
    #[default]
    Burn,
    /// `[out, in]`, as PyTorch's `nn.Linear` stores them (transposed on import).
    Torch,
}

impl WeightsLayout {
    /// Parses `burn` or `torch`.
    pub fn parse(name: &str) -> Result<Self, TrainError> {
        match name {
            "burn" | "kiln" => Ok(Self::Burn),
            "torch" | "pytorch" => Ok(Self::Torch),
            other => Err(TrainError::Config(format!(
                "unknown weights layout {other:?}; use burn ([in, out] Linear weights) or torch ([out, in])"
            ))),
        }
    }
}

/// Every tensor the spec needs, with its shape in kiln's layout.
fn required(spec: &ModelSpec) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for l in &spec.layers {
        match l {
            LayerSpec::Linear {
                name,
                in_features,
                out_features,
            } => {
                out.push((format!("{name}.weight"), vec![*in_features, *out_features]));
                out.push((format!("{name}.bias"), vec![*out_features]));
            }
            LayerSpec::Conv {
                name,
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                let mut w = vec![*out_channels, *in_channels];
                w.extend(kernel);
                out.push((format!("{name}.weight"), w));
                out.push((format!("{name}.bias"), vec![*out_channels]));
            }
            LayerSpec::BatchNorm { name, channels, .. } => {
                for p in ["gamma", "beta", "running_mean", "running_var"] {
                    out.push((format!("{name}.{p}"), vec![*channels]));
                }
            }
            _ => {}
        }
    }
    out
}

/// Builds a trained-model directory at `dir` from `spec` and the SafeTensors file `weights`.
/// Every tensor the spec names must be present with its shape (Linear weights transposed from
/// `[out, in]` with [`WeightsLayout::Torch`]); extra tensors are an error too, since they
/// usually mean the spec does not describe the file.
pub fn import_safetensors(
    spec: &ModelSpec,
    weights: &Path,
    layout: WeightsLayout,
    dir: &Path,
) -> Result<TrainedModel, TrainError> {
    spec.validate()
        .map_err(|e| TrainError::Config(format!("spec: {e}")))?;
    if let Some(LayerSpec::Custom { kind, .. }) = spec
        .layers
        .iter()
        .find(|l| matches!(l, LayerSpec::Custom { .. }))
    {
        return Err(TrainError::Config(format!(
            "the spec has a custom layer {kind:?}, which burn cannot run to compute reference outputs; export it through the library (OnnxExporter::with_layer with your LayerExport) instead"
        )));
    }
    let bytes = std::fs::read(weights)
        .map_err(|e| TrainError::Weights(format!("cannot read {}: {e}", weights.display())))?;
    let mut found: Vec<NamedTensor> = crate::checkpoint::from_safetensors(weights, &bytes)?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let linear_weights: Vec<String> = spec
        .layers
        .iter()
        .filter_map(|l| match l {
            LayerSpec::Linear { name, .. } => Some(format!("{name}.weight")),
            _ => None,
        })
        .collect();
    if layout == WeightsLayout::Torch {
        for t in found
            .iter_mut()
            .filter(|t| linear_weights.contains(&t.name))
        {
            if let [rows, cols] = t.shape[..] {
                let mut d = vec![0f32; t.data.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        d[c * rows + r] = t.data[r * cols + c];
                    }
                }
                t.data = d;
                t.shape = vec![cols, rows];
            }
        }
    }
    let need = required(spec);
    let mut ordered = Vec::with_capacity(need.len());
    for (name, shape) in &need {
        let t = found.iter().find(|t| &t.name == name).ok_or_else(|| {
            TrainError::Weights(format!(
                "{} has no tensor {name:?}, which the spec needs (shape {shape:?}); it holds: {}",
                weights.display(),
                found
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if &t.shape != shape {
            let hint = if layout == WeightsLayout::Burn && t.shape.iter().rev().eq(shape.iter()) {
                " (transposed: pass --weights-layout torch for [out, in] Linear weights)"
            } else {
                ""
            };
            return Err(TrainError::Weights(format!(
                "tensor {name:?} in {} has shape {:?}, the spec needs {shape:?}{hint}",
                weights.display(),
                t.shape
            )));
        }
        ordered.push(t.clone());
    }
    if let Some(extra) = found
        .iter()
        .find(|t| !need.iter().any(|(n, _)| n == &t.name))
    {
        return Err(TrainError::Weights(format!(
            "{} holds tensor {:?}, which no layer of the spec uses; fix the spec's layer names",
            weights.display(),
            extra.name
        )));
    }
    // burn's forward pass on sample rows: the reference export verifies against.
    let device = crate::trainer::plain_device();
    let net = Net::init(spec, &device).with_weights(&ordered, &device);
    let rows = 64;
    let features: Vec<f32> = (0..rows * spec.input_features)
        .map(|i| ((i * 7919 % 1000) as f32 / 250.0) - 2.0)
        .collect();
    let data = kiln_core::Dataset {
        features,
        feature_names: (0..spec.input_features).map(|i| format!("f{i}")).collect(),
        targets: None,
    };
    let reference =
        crate::trainer::reference_outputs(&net, &data, rows, None, None, spec.task, &device)?;
    let weights_bytes = crate::trainer::serialize_weights(&ordered)?;
    let class_names = match spec.task {
        Task::Classification => (0..spec.outputs).map(|i| i.to_string()).collect(),
        Task::Regression => Vec::new(),
    };
    let mut built = None;
    kiln_core::fsutil::replace_dir_atomic::<TrainError>(dir, |tmp| {
        kiln_core::fsutil::write_atomic(&tmp.join("weights.safetensors"), &weights_bytes)?;
        use sha2::Digest;
        let model = TrainedModel {
            dir: tmp.to_path_buf(),
            spec: spec.clone(),
            metadata: ModelMetadata {
                task: spec.task,
                class_names,
                feature_names: data.feature_names.clone(),
                target: "label".into(),
                normalization: None,
                target_normalization: None,
                kiln_version: kiln_core::KILN_VERSION.into(),
                burn_version: crate::BURN_VERSION.into(),
                created_unix: 0,
                training: serde_json::json!({ "imported_from": weights.display().to_string() }),
                weights_sha256: hex::encode(sha2::Sha256::digest(&weights_bytes)),
            },
            reference: Some(reference),
        };
        model.save_json_parts()?;
        built = Some(model);
        Ok(())
    })?;
    let mut model =
        built.ok_or_else(|| TrainError::Config("the model directory was not built".into()))?;
    model.dir = dir.to_path_buf();
    Ok(model)
}
