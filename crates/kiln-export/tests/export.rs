//! Export on hand-built artifacts: weights written with the `safetensors` crate, reference
//! outputs from an independent f64 forward pass. Verification passes on a faithful export and
//! fails loudly when the reference disagrees.

use kiln_core::{ModelMetadata, ModelSpec, Normalization, NullSink, Reference, Task, TrainedModel};
use kiln_export::{ExportError, ExportOptions, OnnxExporter};
use proptest::prelude::*;
use std::path::Path;

/// Deterministic pseudo-random weights.
fn weights_for(spec: &ModelSpec, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let mut out = Vec::new();
    for l in &spec.layers {
        if let kiln_core::LayerSpec::Linear {
            name,
            in_features,
            out_features,
        } = l
        {
            out.push((
                format!("{name}.weight"),
                vec![*in_features, *out_features],
                (0..in_features * out_features).map(|_| next()).collect(),
            ));
            out.push((
                format!("{name}.bias"),
                vec![*out_features],
                (0..*out_features).map(|_| next()).collect(),
            ));
        }
    }
    out
}

/// Forward pass in f64: standardise, Linear/ReLU, softmax.
fn reference_forward(
    spec: &ModelSpec,
    w: &[(String, Vec<usize>, Vec<f32>)],
    norm: &Normalization,
    x: &[f32],
) -> Vec<f32> {
    let get = |n: &str| &w.iter().find(|(k, _, _)| k == n).expect("weight").2;
    let mut h: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(j, v)| ((v - norm.mean[j]) / norm.std[j]) as f64)
        .collect();
    for l in &spec.layers {
        match l {
            kiln_core::LayerSpec::Linear {
                name,
                in_features,
                out_features,
            } => {
                let (wt, b) = (get(&format!("{name}.weight")), get(&format!("{name}.bias")));
                h = (0..*out_features)
                    .map(|o| {
                        (0..*in_features)
                            .map(|i| h[i] * wt[i * out_features + o] as f64)
                            .sum::<f64>()
                            + b[o] as f64
                    })
                    .collect();
            }
            kiln_core::LayerSpec::Activation { .. } => h.iter_mut().for_each(|v| *v = v.max(0.0)),
            kiln_core::LayerSpec::Dropout { .. } => {}
            other => panic!("the property test generates MLPs only, not {other:?}"),
        }
    }
    let m = h.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = h.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

fn artifact(dir: &Path, spec: ModelSpec, seed: u64) -> TrainedModel {
    let f = spec.input_features;
    let w = weights_for(&spec, seed);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("view"),
            )
        })
        .collect();
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("weights.safetensors"),
        safetensors::serialize(views, None).expect("serialize"),
    )
    .expect("write");
    let norm = Normalization {
        mean: (0..f).map(|j| j as f32 * 0.1).collect(),
        std: (0..f).map(|j| 1.0 + j as f32 * 0.5).collect(),
    };
    let inputs: Vec<Vec<f32>> = (0..16)
        .map(|r| {
            (0..f)
                .map(|j| ((r * 7 + j * 3) % 11) as f32 - 5.0)
                .collect()
        })
        .collect();
    let outputs = inputs
        .iter()
        .map(|x| reference_forward(&spec, &w, &norm, x))
        .collect();
    let metadata = ModelMetadata {
        task: Task::Classification,
        class_names: (0..spec.outputs).map(|c| format!("c{c}")).collect(),
        feature_names: (0..f).map(|j| format!("x{j}")).collect(),
        target: "label".into(),
        normalization: Some(norm),
        target_normalization: None,
        kiln_version: "test".into(),
        burn_version: "none".into(),
        created_unix: 0,
        training: serde_json::Value::Null,
        weights_sha256: String::new(),
    };
    let m = TrainedModel {
        dir: dir.to_path_buf(),
        spec,
        metadata,
        reference: Some(Reference { inputs, outputs }),
    };
    m.save_json_parts().expect("save");
    TrainedModel::load(dir).expect("load back")
}

#[test]
fn faithful_export_verifies_and_tampered_reference_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = artifact(
        &dir.path().join("model"),
        ModelSpec::mlp(5, &[8, 4], 3, 0.2),
        1,
    );
    let exporter = OnnxExporter::new(ExportOptions::default());
    let out = dir.path().join("m.onnx");
    let o = exporter.run(&model, &out, &mut NullSink).expect("export");
    let v = o.verification.expect("verified");
    assert!(v.max_abs_diff <= 1e-5, "{v:?}");
    assert_eq!(v.batch_sizes, vec![1, 7, 64]);

    let mut bad = model.clone();
    if let Some(r) = bad.reference.as_mut() {
        r.outputs[3][1] += 1e-3;
    }
    let out2 = dir.path().join("bad.onnx");
    let err = exporter
        .run(&bad, &out2, &mut NullSink)
        .expect_err("must fail");
    assert!(matches!(err, ExportError::Verification { .. }), "{err}");
    assert!(err.to_string().contains("was not written"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn export_errors_name_their_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = artifact(
        &dir.path().join("model"),
        ModelSpec::mlp(3, &[4], 2, 0.0),
        2,
    );
    let out = dir.path().join("m.onnx");
    let e = OnnxExporter::new(ExportOptions {
        opset: 99,
        ..ExportOptions::default()
    })
    .run(&model, &out, &mut NullSink)
    .expect_err("opset");
    assert!(e.to_string().contains("13 to 21"), "{e}");
    std::fs::write(&out, b"old").expect("write");
    let e = OnnxExporter::new(ExportOptions::default())
        .run(&model, &out, &mut NullSink)
        .expect_err("exists");
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).expect("read"), b"old");
    // A spec that needs a weight the file does not have.
    let mut wrong = model.clone();
    wrong.spec = ModelSpec::mlp(3, &[5], 2, 0.0);
    let e = OnnxExporter::new(ExportOptions {
        force: true,
        ..ExportOptions::default()
    })
    .run(&wrong, &out, &mut NullSink)
    .expect_err("shape");
    assert!(
        e.to_string().contains("layers.0.weight") && e.to_string().contains("[3, 5]"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Random MLP shapes and weights: tract's output of the exported file equals an independent
    /// f64 reference forward pass within 1e-5, at opsets 13, 17 and 21.
    #[test]
    fn random_mlps_export_exactly(
        inputs in 1usize..9,
        hidden in proptest::collection::vec(1usize..12, 0..3),
        classes in 2usize..6,
        seed in any::<u64>(),
        opset in prop_oneof![Just(13i64), Just(17), Just(21)],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = artifact(&dir.path().join("model"), ModelSpec::mlp(inputs, &hidden, classes, 0.0), seed);
        let exporter = OnnxExporter::new(ExportOptions { opset, ..ExportOptions::default() });
        let o = exporter.run(&model, &dir.path().join("m.onnx"), &mut NullSink);
        prop_assert!(o.is_ok(), "{:?}", o.err());
    }
}
