//! A layer kind kiln does not know, exported through a user's own `LayerExport` registered with
//! `OnnxExporter::with_layer`, verified against an independent f64 forward pass; without the
//! registration the export names the missing exporter.

use kiln_core::{LayerSpec, ModelMetadata, ModelSpec, NullSink, Reference, Task, TrainedModel};
use kiln_export::{ExportError, ExportOptions, LayerContext, LayerExport, OnnxExporter};

/// `y = x * scale + shift`, per feature, with `{name}.scale` and `{name}.shift`.
#[derive(Debug)]
struct Affine;

impl LayerExport for Affine {
    fn kind(&self) -> &str {
        "affine"
    }
    fn export(
        &self,
        ctx: &mut LayerContext<'_>,
        name: &str,
        _params: &serde_json::Value,
        input: &str,
        input_shape: &[usize],
    ) -> Result<String, ExportError> {
        let (sk, hk) = (format!("{name}.scale"), format!("{name}.shift"));
        let scale = ctx.weight(&sk, input_shape)?.to_vec();
        let shift = ctx.weight(&hk, input_shape)?.to_vec();
        let s = ctx.graph.constant_f32(&sk, input_shape, &scale);
        let h = ctx.graph.constant_f32(&hk, input_shape, &shift);
        let m = ctx.graph.node("Mul", &[input, &s], &[]);
        Ok(ctx.graph.node("Add", &[&m, &h], &[]))
    }
}

fn model(dir: &std::path::Path) -> TrainedModel {
    let spec = ModelSpec {
        format_version: 1,
        kind: "custom".into(),
        task: Task::Classification,
        input_features: 3,
        outputs: 2,
        layers: vec![
            LayerSpec::Linear {
                name: "a".into(),
                in_features: 3,
                out_features: 4,
            },
            LayerSpec::Custom {
                kind: "affine".into(),
                name: "t".into(),
                params: serde_json::Value::Null,
                output_shape: vec![4],
            },
            LayerSpec::Linear {
                name: "b".into(),
                in_features: 4,
                out_features: 2,
            },
        ],
    };
    spec.validate().expect("valid spec");
    let w: Vec<(&str, Vec<usize>, Vec<f32>)> = vec![
        (
            "a.weight",
            vec![3, 4],
            (0..12).map(|i| (i as f32 - 5.5) / 6.0).collect(),
        ),
        ("a.bias", vec![4], vec![0.1, -0.1, 0.2, 0.0]),
        ("t.scale", vec![4], vec![1.5, -0.5, 2.0, 0.25]),
        ("t.shift", vec![4], vec![0.3, 0.0, -0.2, 0.1]),
        (
            "b.weight",
            vec![4, 2],
            (0..8).map(|i| (i as f32 - 3.5) / 3.0).collect(),
        ),
        ("b.bias", vec![2], vec![0.05, -0.05]),
    ];
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), v.expect("view"))
        })
        .collect();
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("weights.safetensors"),
        safetensors::serialize(views, None).expect("serialize"),
    )
    .expect("write");
    let get = |n: &str| &w.iter().find(|(k, _, _)| *k == n).expect("weight").2;
    // Independent forward pass in f64.
    let forward = |x: &[f32]| -> Vec<f32> {
        let lin = |h: &[f64], wn: &str, bn: &str, fo: usize| -> Vec<f64> {
            let (wt, b) = (get(wn), get(bn));
            (0..fo)
                .map(|o| {
                    (0..h.len())
                        .map(|i| h[i] * wt[i * fo + o] as f64)
                        .sum::<f64>()
                        + b[o] as f64
                })
                .collect()
        };
        let h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let h = lin(&h, "a.weight", "a.bias", 4);
        let h: Vec<f64> = (0..4)
            .map(|i| h[i] * get("t.scale")[i] as f64 + get("t.shift")[i] as f64)
            .collect();
        let z = lin(&h, "b.weight", "b.bias", 2);
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| (v / s) as f32).collect()
    };
    let inputs: Vec<Vec<f32>> = (0..12)
        .map(|r| (0..3).map(|j| ((r * 5 + j * 3) % 7) as f32 - 3.0).collect())
        .collect();
    let outputs = inputs.iter().map(|x| forward(x)).collect();
    let m = TrainedModel {
        dir: dir.to_path_buf(),
        spec,
        metadata: ModelMetadata {
            task: Task::Classification,
            class_names: vec!["no".into(), "yes".into()],
            feature_names: vec!["x0".into(), "x1".into(), "x2".into()],
            target: "label".into(),
            normalization: None,
            target_normalization: None,
            kiln_version: "test".into(),
            burn_version: "none".into(),
            created_unix: 0,
            training: serde_json::Value::Null,
            weights_sha256: String::new(),
        },
        reference: Some(Reference { inputs, outputs }),
    };
    m.save_json_parts().expect("save");
    TrainedModel::load(dir).expect("load back")
}

#[test]
fn a_registered_custom_layer_exports_and_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(&dir.path().join("model"));
    let out = dir.path().join("custom.onnx");
    let o = OnnxExporter::new(ExportOptions::default())
        .with_layer(Affine)
        .run(&m, &out, &mut NullSink)
        .expect("export");
    let v = o.verification.expect("verified");
    assert!(v.max_abs_diff <= 1e-5, "{v:?}");
    let proto = kiln_onnx::load(&out).expect("load");
    let ops = kiln_onnx::graph::op_counts(proto.graph.as_ref().expect("graph"));
    assert!(ops.iter().any(|(op, n)| op == "Mul" && *n == 1), "{ops:?}");

    let err = OnnxExporter::new(ExportOptions::default())
        .run(&m, &dir.path().join("none.onnx"), &mut NullSink)
        .expect_err("no exporter registered");
    assert!(
        err.to_string().contains("no exporter is registered"),
        "{err}"
    );
    assert!(!dir.path().join("none.onnx").exists());
}
