//! Replays the fuzz targets' seed corpus and regression inputs (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through the same harness the fuzzers run
//! (`fuzz/src/lib.rs`), on stable Rust: every input that once crashed a target must now be
//! handled without a panic. The long fuzzing runs are in docs/RELIABILITY.md.

#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used)]

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target} panicked on {}", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn onnx_loader_corpus() {
    assert!(replay("onnx_load", harness::onnx_model) >= 3);
}

#[test]
fn row_reader_corpus() {
    assert!(replay("rows", harness::rows) >= 3);
}

#[test]
fn kserve_request_corpus() {
    assert!(replay("kserve_request", harness::kserve_request) >= 3);
}

#[test]
fn config_corpus() {
    assert!(replay("config", harness::config) >= 2);
}
