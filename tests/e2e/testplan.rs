//! The end-to-end scenarios of the original test plan (`../shared/TEST-PLAN.md`), run as
//! literally as the CLI allows: `test_complete_pipeline`, `test_quantization_accuracy` and
//! `test_error_recovery`, with the plan's own parameters (batch size 32, 2 epochs, learning rate
//! 1e-4, dynamic quantization, `CUDAExecutionProvider`). Where the plan passes a keyword, the
//! call passes the flag of the same name (`--model-type`, `--learning-rate`, `--provider`).

use crate::util::{Kiln, f};
use std::path::{Path, PathBuf};

/// The plan's `create_synthetic_dataset(1000 / 100 / 100)`: three Gaussian blobs whose centres
/// differ in every one of 8 features (the plan expects accuracy above 0.9 after two epochs at a
/// learning rate of 1e-4, which needs classes that differ broadly, not in one direction).
fn plan_data(k: &Kiln) -> (PathBuf, PathBuf, PathBuf) {
    let mut all = kiln::data::synthetic::make_classification(1200, 8, 8, 3, 0.0, 2024);
    let classes = match &all.targets {
        Some(kiln::core::Targets::Classes { indices, .. }) => indices.clone(),
        _ => unreachable!("a classification set"),
    };
    for (row, c) in all.features.chunks_mut(8).zip(classes) {
        for (j, x) in row.iter_mut().enumerate() {
            *x += 3.0 * (((c as usize * 7 + j * 3) % 5) as f32 - 2.0);
        }
    }
    let parts = kiln::data::split(&all, 1000.0 / 1200.0, 100.0 / 1200.0, 2024);
    (
        k.write_dataset("train.csv", &parts.train),
        k.write_dataset("val.csv", &parts.val),
        k.write_dataset("test.csv", &parts.test),
    )
}

/// The plan's `load_test_config()` as flags (quantization and provider go to `optimize`).
const CONFIG: [&str; 8] = [
    "--model-type",
    "classifier",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--learning-rate",
    "1e-4",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `run_command("train", {data, val_data, **config})`: returns the model directory.
fn train(k: &Kiln, train: &Path, val: &Path, out: &str) -> PathBuf {
    let mut args = vec![
        "train",
        "--data",
        s(train),
        "--val-data",
        s(val),
        "--out",
        out,
    ];
    args.extend(CONFIG);
    let r = k.json(&args);
    assert_eq!(r["command"], "train", "{r:#}");
    k.path(out).join("model")
}

/// `run_command("infer", {model, data, batch_size})` then `calculate_metrics`: the accuracy.
fn accuracy(k: &Kiln, model: &Path, test: &Path) -> f64 {
    let out = k.path("predictions.csv");
    let r = k.json(&[
        "infer",
        "--model",
        s(model),
        "--data",
        s(test),
        "--batch-size",
        "32",
        "--output",
        s(&out),
        "--force",
    ]);
    assert_eq!(f(&r, "/report/failed"), 0.0, "{r:#}");
    f(&r, "/report/accuracy")
}

#[test]
fn test_complete_pipeline() {
    let k = Kiln::new();
    let (train_csv, val, test) = plan_data(&k);
    let model = train(&k, &train_csv, &val, "run");
    assert!(model.join("weights.safetensors").is_file());

    let e = k.json(&["export", "--model", s(&model), "--output", "model.onnx"]);
    let onnx_path = k.path(e["output"].as_str().unwrap());
    assert!(onnx_path.exists(), "{e:#}");
    assert!(f(&e, "/verification/error_ratio") <= 1.0, "{e:#}");

    // Optimize with only a model, a quantization and a provider: the output goes beside the
    // input, named for what was done, and the provider is recorded as requested and as run.
    let out = k.run(&[
        "optimize",
        "--model",
        s(&onnx_path),
        "--quantization",
        "dynamic",
        "--provider",
        "CUDAExecutionProvider",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let optimized_path = PathBuf::from(o["output"].as_str().unwrap());
    assert_eq!(optimized_path, k.path("model.int8.onnx"), "{o:#}");
    assert!(optimized_path.exists());
    assert_eq!(o["provider"]["requested"], "cuda:0", "{o:#}");
    if o["provider"]["actual"] != "cuda:0" {
        // No CUDA here: a loud warning that names what runs instead.
        assert_eq!(o["provider"]["actual"], "cpu", "{o:#}");
        assert!(o["provider"]["fallback"].is_string(), "{o:#}");
        assert!(
            stderr.contains("warning:") && stderr.contains("cuda:0") && stderr.contains("cpu"),
            "{stderr}"
        );
    }
    // The written model ran in ONNX Runtime on that provider and agrees with tract.
    assert!(f(&o, "/ort_check/max_abs_diff") < 1e-4, "{o:#}");

    let acc = accuracy(&k, &optimized_path, &test);
    assert!(acc > 0.9, "accuracy {acc}");
}

#[test]
fn test_quantization_accuracy() {
    let k = Kiln::new();
    let (train_csv, val, test) = plan_data(&k);
    let model = train(&k, &train_csv, &val, "run");
    k.ok(&["export", "--model", s(&model), "--output", "model.onnx"]);
    let original_model = k.path("model.onnx");
    let original_accuracy = accuracy(&k, &original_model, &test);

    let quantize = [
        "optimize",
        "--model",
        s(&original_model),
        "--quantization",
        "static",
        "--calibration-data",
        s(&val),
    ];
    let o = k.json(&quantize);
    let quantized = PathBuf::from(o["output"].as_str().unwrap());
    assert_eq!(quantized, k.path("model.int8-static.onnx"), "{o:#}");
    let quantized_accuracy = accuracy(&k, &quantized, &test);
    assert!(
        quantized_accuracy > original_accuracy * 0.99,
        "static int8 {quantized_accuracy} vs float {original_accuracy}"
    );
    // Run again without --force: the earlier output is never overwritten.
    let before = std::fs::read(&quantized).unwrap();
    let err = k.fails(&quantize, 2);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&quantized).unwrap(), before);
}

#[test]
fn test_error_recovery() {
    let k = Kiln::new();
    let (train_csv, val, _) = plan_data(&k);
    // An invalid parameter is an error that names it, and nothing is written.
    let err = k.fails(
        &[
            "train",
            "--data",
            s(&train_csv),
            "--out",
            "bad",
            "--invalid-param",
            "true",
        ],
        2,
    );
    assert!(err.contains("--invalid-param"), "{err}");
    assert!(!k.path("bad").exists());
    // The pipeline goes on with valid parameters.
    let model = train(&k, &train_csv, &val, "run");
    assert!(model.join("spec.json").is_file());
}
