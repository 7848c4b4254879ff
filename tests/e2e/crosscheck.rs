//! Cross-checks with implementations kiln did not write: the Python `onnx` checker (full check
//! and strict shape inference) and ONNX Runtime, which must agree with kiln's tract outputs.
//!
//! Python tools come from `KILN_PYTHON` or the repository's `.venv` (`scripts/setup-python.sh`;
//! nextest's setup script runs it). Without them these tests fail, naming the fix: they never
//! pass without running the cross-check.

use crate::util::{Kiln, repo, synthetic_splits};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python with the cross-check tools. A test that needs it fails without it, naming the
/// fix: the README's test command (nextest) installs it first (scripts/nextest-setup.sh).
pub fn python() -> PathBuf {
    let candidates = [
        std::env::var_os("KILN_PYTHON").map(PathBuf::from),
        Some(repo().join(".venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        let ok = Command::new(&c)
            .args(["-c", "import onnx, onnxruntime, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return c;
        }
    }
    panic!(
        "{}",
        missing_tool(
            "Python with onnx + onnxruntime",
            "scripts/setup-python.sh or set KILN_PYTHON"
        )
    );
}

/// Why a cross-check tool is missing and how to get it.
pub fn missing_tool(what: &str, fix: &str) -> String {
    let setup = std::env::var("KILN_TOOL_SETUP_ERROR")
        .map(|e| format!(" (nextest's setup script said: {e})"))
        .unwrap_or_default();
    format!(
        "{what} not found{setup}: run `cargo nextest run`, whose setup script installs it, or {fix}; this test cross-checks kiln against it and cannot pass without it"
    )
}

/// Runs the checker and ONNX Runtime on `model` with `rows`; returns ORT's outputs.
fn crosscheck(py: &Path, model: &Path, rows: &[Vec<f32>]) -> serde_json::Value {
    let rows_path = model.with_extension("rows.json");
    std::fs::write(&rows_path, serde_json::to_vec(rows).expect("json")).expect("write rows");
    let out = Command::new(py)
        .arg(repo().join("scripts/onnx_crosscheck.py"))
        .arg(model)
        .arg(&rows_path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "cross-check of {} failed:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cross-check JSON")
}

/// Runs `model` through the checker and ONNX Runtime and through tract; returns ORT's outputs and
/// the largest difference between the two engines' probabilities.
pub fn ort_vs_tract(py: &Path, model: &Path, rows: &[Vec<f32>]) -> (serde_json::Value, f32) {
    let ort = crosscheck(py, model, rows);
    let ours = tract_outputs(model, rows);
    let theirs: Vec<Vec<f32>> =
        serde_json::from_value(ort["outputs"]["probabilities"].clone()).expect("probabilities");
    let max = ours
        .iter()
        .flatten()
        .zip(theirs.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (ort, max)
}

fn tract_outputs(model: &Path, rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let m = kiln::infer::Model::load(model, kiln::infer::EngineKind::Tract).expect("load");
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    m.predict(&flat, rows.len())
        .expect("predict")
        .into_iter()
        .map(|p| p.scores)
        .collect()
}

#[test]
fn exported_and_quantized_models_pass_onnx_checker_and_onnxruntime() {
    let py = python();
    let k = Kiln::new();
    let (train, val, _) = synthetic_splits(&k, 21);
    k.ok(&[
        "train",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "4",
        "-q",
    ]);
    let data = kiln::data::load_dataset(&val, "label", None).expect("val");
    let rows: Vec<Vec<f32>> = (0..data.rows()).map(|i| data.row(i).to_vec()).collect();
    for opset in ["13", "17", "21"] {
        let model = k.path(&format!("m{opset}.onnx"));
        k.ok(&[
            "export",
            "--model",
            "run/model",
            "--output",
            model.to_str().unwrap(),
            "--opset",
            opset,
            "-q",
        ]);
        let (ort, max) = ort_vs_tract(&py, &model, &rows);
        assert!(
            max <= 1e-5,
            "opset {opset}: tract and ONNX Runtime differ by {max}"
        );
        let labels: Vec<i64> =
            serde_json::from_value(ort["outputs"]["label"].clone()).expect("labels");
        assert_eq!(labels.len(), rows.len());
    }
    // Weight-only int8: ONNX semantics are float arithmetic on dequantized weights, which tract
    // computes exactly; ONNX Runtime fuses DequantizeLinear+MatMul into an integer kernel that
    // also quantizes the activations, so the engines differ by int8 rounding (about 3e-3 here).
    let w = k.path("w8.onnx");
    k.ok(&[
        "optimize",
        "--model",
        k.path("m17.onnx").to_str().unwrap(),
        "--output",
        w.to_str().unwrap(),
        "--quantization",
        "weight-only",
        "-q",
    ]);
    let (_, max) = ort_vs_tract(&py, &w, &rows);
    assert!(
        max <= 1e-2,
        "weight-only: tract and ONNX Runtime differ by {max}"
    );
    assert!(
        std::fs::metadata(&w).expect("w8").len() * 5
            < std::fs::metadata(k.path("m17.onnx")).expect("m17").len() * 3,
        "weight-only int8 must shrink the file (weights 4x, metadata unchanged)"
    );
    let q = k.path("m8.onnx");
    k.ok(&[
        "optimize",
        "--model",
        k.path("m17.onnx").to_str().unwrap(),
        "--output",
        q.to_str().unwrap(),
        "--quantization",
        "dynamic",
        "-q",
    ]);
    // Both engines run the same integer arithmetic on u8 operands; they may differ only where
    // DynamicQuantizeLinear's rounding of the activation scale differs in the last float bit.
    let (_, max) = ort_vs_tract(&py, &q, &rows);
    assert!(max <= 1e-3, "int8: tract and ONNX Runtime differ by {max}");
}

/// kiln-onnx's messages lose nothing: models built by Python's `onnx` with every kind of field
/// decode and re-encode to the same message.
#[test]
fn onnx_messages_round_trip_models_from_python() {
    let py = python();
    let k = Kiln::new();
    let dir = k.path("models");
    let out = Command::new(&py)
        .arg(repo().join("scripts/make_diverse_models.py"))
        .arg(&dir)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "onnx") {
            let bytes = std::fs::read(&p).expect("read");
            let m = kiln::onnx::decode(&bytes).expect("decode");
            let again = kiln::onnx::encode(&m);
            std::fs::write(p.with_extension("kiln"), &again).expect("write");
            n += 1;
        }
    }
    assert!(n >= 5, "expected several models, got {n}");
    let out = Command::new(&py)
        .arg(repo().join("scripts/make_diverse_models.py"))
        .arg(&dir)
        .arg("--compare")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "round trip lost information:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
