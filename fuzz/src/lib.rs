//! What each fuzz target does with its bytes. The same file is compiled into the main test
//! suite (`tests/fuzz_corpus.rs`), which replays the seed corpus and every input that ever
//! crashed a target, so a fixed crash stays fixed without nightly or cargo-fuzz.
//!
//! Each function must return normally for every input: errors are fine, panics are bugs.

use std::io::Write;

/// Decodes a model, inspects it as `kiln inspect` does, decodes its initializers, and runs every
/// graph pass of the `all` level on it.
pub fn onnx_model(data: &[u8]) {
    let Ok(mut model) = kiln_onnx::decode(data) else {
        return;
    };
    let _ = kiln_onnx::metadata(&model);
    let _ = kiln_onnx::default_opset(&model);
    if let Some(g) = &model.graph {
        let _ = kiln_onnx::graph::op_counts(g);
        let _ = kiln_onnx::graph::consumers(g);
        for t in &g.initializer {
            if let Ok(v) = kiln_onnx::TensorValue::from_proto(t) {
                let _ = v.as_f32();
                let _ = v.to_i64();
            }
        }
    }
    let _ = kiln_onnx::inline::inline_functions(&mut model);
    for pass in kiln_optimize::GraphLevel::All.passes() {
        if pass.run(&mut model).is_err() {
            break;
        }
    }
    let _ = kiln_onnx::encode(&model);
}

/// Reads the bytes as a CSV file and as a JSONL file, strictly (training) and leniently
/// (inference, with a per-row error record for every bad row).
pub fn rows(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    for name in ["rows.csv", "rows.jsonl"] {
        let path = dir.path().join(name);
        let Ok(mut f) = std::fs::File::create(&path) else {
            return;
        };
        if f.write_all(data).is_err() {
            return;
        }
        drop(f);
        if let Ok(t) = kiln_data::read_rows(&path, None, "label", None) {
            // Every input row has an outcome.
            let _ = t.rows.len();
        }
        let _ = kiln_data::read_rows_with(&path, None, "label", None, true);
        let _ = kiln_data::load_dataset(&path, "label", None);
        let _ = kiln_data::load_regression_dataset(&path, "label");
    }
}

/// Decodes a KServe v2 inference request for a model with input `x` of 4 features. The first
/// two bytes (little-endian) say how much of the rest is the JSON header, as
/// `Inference-Header-Content-Length` does; the remainder is the binary tensor data.
pub fn kserve_request(data: &[u8]) {
    let (json, binary) = match data {
        [a, b, rest @ ..] => {
            let n = (u16::from_le_bytes([*a, *b]) as usize).min(rest.len());
            rest.split_at(n)
        }
        _ => (data, &[][..]),
    };
    let Ok(req) = serde_json::from_slice::<kiln_serve::protocol::InferRequest>(json) else {
        return;
    };
    let _ = kiln_serve::protocol::decode_rows(&req, binary, "x", 4);
    let _ = kiln_serve::protocol::decode_rows(&req, &[], "x", 0);
}

/// Parses and validates the bytes as a `kiln.toml`.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kiln_train::check_config(text);
    }
}
