//! The CNN model kind end to end on real images: the 8×8 handwritten digits shipped in
//! data/digits, trained with burn (Conv → BatchNorm → ReLU blocks), exported to ONNX and
//! verified against burn, checked by the Python `onnx` checker and ONNX Runtime, run by
//! `kiln infer`, and resumed exactly (batch-norm running statistics included).

use crate::crosscheck::python;
use crate::util::{Kiln, repo};

fn digits(split: &str) -> String {
    repo()
        .join(format!("data/digits/{split}.csv"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn cnn_on_digits_trains_exports_verifies_and_resumes() {
    let k = Kiln::new();
    let (train, val, test) = (digits("train"), digits("val"), digits("test"));
    let s = k.json(&[
        "train",
        "--data",
        &train,
        "--val-data",
        &val,
        "--test-data",
        &test,
        "--out",
        "run",
        "--input-shape",
        "1,8,8",
        "--channels",
        "8,16",
        "--hidden",
        "32",
        "--epochs",
        "8",
        "--lr",
        "0.005",
        "--dropout",
        "0.1",
        "--keep-checkpoints",
        "10",
    ]);
    let burn_acc = s["test"]["accuracy"].as_f64().unwrap();
    assert!(burn_acc > 0.95, "CNN test accuracy {burn_acc}");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("run/model/spec.json")).unwrap()).unwrap();
    assert_eq!(spec["kind"], "cnn");

    for opset in ["13", "17", "21"] {
        let out = format!("cnn{opset}.onnx");
        // Opset 17 keeps its BatchNormalization nodes, so the checkers see them too.
        let mut args = vec![
            "export",
            "--model",
            "run/model",
            "--output",
            &out,
            "--opset",
            opset,
        ];
        if opset == "17" {
            args.push("--no-fold-batchnorm");
        }
        let e = k.json(&args);
        assert!(
            e["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-5,
            "opset {opset}: {e:#}"
        );
        {
            let py = python();
            let r = std::process::Command::new(&py)
                .arg(repo().join("scripts/onnx_crosscheck.py"))
                .arg(k.path(&out))
                .output()
                .unwrap();
            assert!(
                r.status.success(),
                "opset {opset}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
            assert_eq!(v["checker"], "ok");
            assert_eq!(v["shape_inference"], "ok");
        }
    }
    let inspect = k.json(&["inspect", "cnn17.onnx"]);
    let ops = inspect["ops"].to_string();
    for op in ["Conv", "BatchNormalization", "Reshape", "Flatten", "Gemm"] {
        assert!(ops.contains(op), "{op} missing from {ops}");
    }
    // tract (kiln infer) agrees with burn's accuracy on the test images.
    let r = k.json(&[
        "infer",
        "--model",
        "cnn17.onnx",
        "--data",
        &test,
        "--output",
        "p.csv",
    ]);
    let tract_acc = r["accuracy"]
        .as_f64()
        .unwrap_or_else(|| r["report"]["accuracy"].as_f64().unwrap());
    assert!(
        (tract_acc - burn_acc).abs() <= 1.0 / 359.0 + 1e-9,
        "tract {tract_acc} vs burn {burn_acc}"
    );

    // Exact resume: the batch-norm running statistics come back with the weights.
    let want = std::fs::read(k.path("run/model/weights.safetensors")).unwrap();
    for epoch in 5..=8 {
        std::fs::remove_dir_all(k.path(&format!("run/checkpoints/epoch-{epoch:06}"))).unwrap();
    }
    k.ok(&["train", "--resume", "run", "-q"]);
    assert_eq!(
        std::fs::read(k.path("run/model/weights.safetensors")).unwrap(),
        want,
        "resumed CNN differs"
    );
}

#[test]
fn one_dimensional_cnn_and_shape_errors() {
    let k = Kiln::new();
    let (train, val) = (digits("train"), digits("val"));
    // The same 64 values read as 4 channels of length 16: the Conv1d path.
    k.ok(&[
        "train",
        "--data",
        &train,
        "--val-data",
        &val,
        "--out",
        "r1",
        "--input-shape",
        "4,16",
        "--channels",
        "8",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "-q",
    ]);
    let e = k.json(&["export", "--model", "r1/model", "--output", "c1.onnx"]);
    assert!(
        e["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-5,
        "{e:#}"
    );
    // A shape that does not hold the row is refused with the numbers.
    let r = k.run(&[
        "train",
        "--data",
        &train,
        "--out",
        "bad",
        "--input-shape",
        "1,7,7",
        "--epochs",
        "1",
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("49") && err.contains("64"), "{err}");
    let err = k.fails(
        &["train", "--data", &train, "--out", "bad", "--arch", "cnn"],
        2,
    );
    assert!(err.contains("input_shape"), "{err}");
}

#[test]
fn export_graph_options_are_switchable_and_verified() {
    let k = Kiln::new();
    let (train, val) = (digits("train"), digits("val"));
    k.ok(&[
        "train",
        "--data",
        &train,
        "--val-data",
        &val,
        "--out",
        "cnn",
        "--input-shape",
        "1,8,8",
        "--channels",
        "4,8",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "-q",
    ]);
    let ops = |file: &str| k.json(&["inspect", file])["ops"].clone();
    let diff = |e: &serde_json::Value| e["verification"]["max_abs_diff"].as_f64().unwrap();
    // Default: batch norm folded into the convolutions.
    let e = k.json(&["export", "--model", "cnn/model", "--output", "folded.onnx"]);
    assert!(diff(&e) <= 1e-5);
    assert!(ops("folded.onnx").get("BatchNormalization").is_none());
    let e = k.json(&[
        "export",
        "--model",
        "cnn/model",
        "--output",
        "bn.onnx",
        "--no-fold-batchnorm",
    ]);
    assert!(diff(&e) <= 1e-5);
    assert_eq!(ops("bn.onnx")["BatchNormalization"], 2);
    let e = k.json(&[
        "export",
        "--model",
        "cnn/model",
        "--output",
        "mm.onnx",
        "--linear-op",
        "matmul-add",
    ]);
    assert!(diff(&e) <= 1e-5);
    let o = ops("mm.onnx");
    assert!(
        o.get("Gemm").is_none() && o["MatMul"] == 2 && o["Add"] == 2,
        "{o}"
    );
    // Baking the standardisation works for an MLP and is refused for a CNN.
    let (t, v, _) = crate::util::synthetic_splits(&k, 3);
    k.ok(&[
        "train",
        "--data",
        t.to_str().unwrap(),
        "--val-data",
        v.to_str().unwrap(),
        "--out",
        "mlp",
        "--epochs",
        "2",
        "-q",
    ]);
    let e = k.json(&[
        "export",
        "--model",
        "mlp/model",
        "--output",
        "baked.onnx",
        "--bake-standardization",
    ]);
    assert!(diff(&e) <= 1e-5, "{e:#}");
    let o = ops("baked.onnx");
    assert!(o.get("Sub").is_none() && o.get("Div").is_none(), "{o}");
    let err = k.fails(
        &[
            "export",
            "--model",
            "cnn/model",
            "--output",
            "x.onnx",
            "--bake-standardization",
        ],
        2,
    );
    assert!(err.contains("Linear first layer"), "{err}");
    // An artifact of another format version is refused with both versions named.
    k.write(
        "mlp/model/kiln-model.json",
        r#"{"format_version": 99, "kind": "kiln-trained-model"}"#,
    );
    let r = k.run(&["export", "--model", "mlp/model", "--output", "y.onnx"]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("version 99") && err.contains("version 1"),
        "{err}"
    );
    assert!(!k.path("y.onnx").exists());
}

/// SiLU and GELU have no single ONNX op: kiln exports them as model-local functions in the
/// ai.kiln domain. ONNX Runtime runs the function form, tract runs it through kiln's inlining on
/// load, and `--inline-functions` writes the expanded form.
#[test]
fn silu_and_gelu_export_as_local_functions() {
    let k = Kiln::new();
    let (train, val, test) = crate::util::synthetic_splits(&k, 17);
    let rows: Vec<Vec<f32>> = crate::util::read_csv(&test)
        .1
        .iter()
        .take(20)
        .map(|r| {
            r[..r.len() - 1]
                .iter()
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect();
    for (act, func) in [("silu", "SiLU"), ("gelu", "GELU")] {
        let run = format!("run-{act}");
        k.ok(&[
            "train",
            "--data",
            train.to_str().unwrap(),
            "--val-data",
            val.to_str().unwrap(),
            "--out",
            &run,
            "--epochs",
            "4",
            "--activation",
            act,
            "-q",
        ]);
        let model = format!("{run}/model");
        let (fun, inl) = (format!("{act}.onnx"), format!("{act}.inlined.onnx"));
        let e = k.json(&["export", "--model", &model, "--output", &fun]);
        assert!(
            e["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-5,
            "{e:#}"
        );
        let ops = k.json(&["inspect", &fun])["ops"].clone();
        assert_eq!(ops[format!("ai.kiln:{func}")], 2, "{ops}");
        let e = k.json(&[
            "export",
            "--model",
            &model,
            "--output",
            &inl,
            "--inline-functions",
        ]);
        assert!(
            e["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-5,
            "{e:#}"
        );
        let ops = k.json(&["inspect", &inl])["ops"].clone();
        assert!(ops.get(format!("ai.kiln:{func}")).is_none(), "{ops}");
        {
            let py = python();
            // The checker accepts the function form and ONNX Runtime runs it, within 1e-5 of
            // tract (which runs it inlined).
            let (_, diff) = crate::crosscheck::ort_vs_tract(&py, &k.path(&fun), &rows);
            assert!(
                diff <= 1e-5,
                "{act}: ONNX Runtime vs tract differ by {diff}"
            );
            let (_, diff) = crate::crosscheck::ort_vs_tract(&py, &k.path(&inl), &rows);
            assert!(diff <= 1e-5, "{act} inlined: {diff}");
        }
    }
}

/// A model trained elsewhere: a hand-written spec plus SafeTensors weights (here in PyTorch's
/// `[out, in]` Linear layout) export through the same verified path.
#[test]
fn spec_and_safetensors_from_elsewhere_export_verified() {
    let k = Kiln::new();
    let spec = serde_json::json!({
        "format_version": 1, "kind": "mlp", "task": "classification",
        "input_features": 3, "outputs": 2,
        "layers": [
            { "type": "linear", "name": "fc1", "in_features": 3, "out_features": 4 },
            { "type": "activation", "activation": "gelu" },
            { "type": "linear", "name": "fc2", "in_features": 4, "out_features": 2 }
        ]
    });
    k.write("spec.json", &spec.to_string());
    // PyTorch layout: weight [out, in].
    let tensors: Vec<(&str, Vec<usize>, Vec<f32>)> = vec![
        (
            "fc1.weight",
            vec![4, 3],
            (0..12).map(|i| (i as f32 - 6.0) / 7.0).collect(),
        ),
        ("fc1.bias", vec![4], vec![0.1, -0.2, 0.3, 0.0]),
        (
            "fc2.weight",
            vec![2, 4],
            (0..8).map(|i| (i as f32 - 3.5) / 4.0).collect(),
        ),
        ("fc2.bias", vec![2], vec![0.05, -0.05]),
    ];
    let write = |file: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]| {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, d)| {
                (
                    n.to_string(),
                    s.clone(),
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        std::fs::write(k.path(file), safetensors::serialize(views, None).unwrap()).unwrap();
    };
    write("torch.safetensors", &tensors);
    let e = k.json(&[
        "export",
        "--spec",
        "spec.json",
        "--weights",
        "torch.safetensors",
        "--weights-layout",
        "torch",
        "--output",
        "imported.onnx",
    ]);
    assert!(
        e["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-5,
        "{e:#}"
    );
    let ops = k.json(&["inspect", "imported.onnx"])["ops"].clone();
    assert_eq!(ops["ai.kiln:GELU"], 1, "{ops}");
    // The same file read with the wrong layout is refused with the hint.
    let err = k.fails(
        &[
            "export",
            "--spec",
            "spec.json",
            "--weights",
            "torch.safetensors",
            "--output",
            "x.onnx",
        ],
        3,
    );
    assert!(err.contains("--weights-layout torch"), "{err}");
    // A tensor the spec does not name is refused, as is a missing one.
    let mut extra = tensors.clone();
    extra.push(("fc3.weight", vec![1], vec![0.0]));
    write("extra.safetensors", &extra);
    let err = k.fails(
        &[
            "export",
            "--spec",
            "spec.json",
            "--weights",
            "extra.safetensors",
            "--weights-layout",
            "torch",
            "--output",
            "x.onnx",
        ],
        3,
    );
    assert!(err.contains("fc3.weight"), "{err}");
    write("missing.safetensors", &tensors[..3]);
    let err = k.fails(
        &[
            "export",
            "--spec",
            "spec.json",
            "--weights",
            "missing.safetensors",
            "--weights-layout",
            "torch",
            "--output",
            "x.onnx",
        ],
        3,
    );
    assert!(err.contains("fc2.bias"), "{err}");
}
