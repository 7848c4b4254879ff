//! The test harness: a temporary directory, the real `kiln` binary, and helpers for data files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Kiln {
    dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `kiln ARGS` in the temporary directory.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("spawn kiln")
    }

    /// Runs `kiln ARGS` with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("spawn kiln")
    }

    /// Runs `kiln ARGS` and panics with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {} failed with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `kiln ARGS --json` and parses its stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kiln {} printed invalid JSON ({e}):\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `kiln ARGS`, expects exit code `code`, and returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "kiln {} should exit {code}; stderr:\n{stderr}",
            args.join(" ")
        );
        assert!(!stderr.contains("panicked"), "kiln panicked:\n{stderr}");
        stderr
    }

    pub fn write(&self, rel: &str, body: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
        p
    }

    pub fn write_dataset(&self, rel: &str, data: &kiln::core::Dataset) -> PathBuf {
        let p = self.path(rel);
        kiln::data::write_csv(&p, data, "label").expect("write csv");
        p
    }
}

/// A separable 3-class problem split into train (1000), val (100) and test (100) files.
pub fn synthetic_splits(k: &Kiln, seed: u64) -> (PathBuf, PathBuf, PathBuf) {
    let all = kiln::data::synthetic::make_classification(1200, 6, 3, 3, 2.5, seed);
    let parts = kiln::data::split(&all, 1000.0 / 1200.0, 100.0 / 1200.0, seed);
    assert_eq!(
        (parts.train.rows(), parts.val.rows(), parts.test.rows()),
        (1000, 100, 100)
    );
    (
        k.write_dataset("train.csv", &parts.train),
        k.write_dataset("val.csv", &parts.val),
        k.write_dataset("test.csv", &parts.test),
    )
}

/// The repository root (for data/ and scripts/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads a CSV file into header + rows.
pub fn read_csv(p: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(p)
        .expect("open csv");
    let header = r
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let rows = r
        .records()
        .map(|rec| rec.expect("record").iter().map(String::from).collect())
        .collect();
    (header, rows)
}

pub fn f(v: &serde_json::Value, ptr: &str) -> f64 {
    v.pointer(ptr)
        .and_then(|x| x.as_f64())
        .unwrap_or_else(|| panic!("no number at {ptr} in {v:#}"))
}

/// Writes the synthetic splits, trains a small model (`epochs` epochs) into `run/` and exports
/// it to `m.onnx`; returns the split files.
pub fn trained_and_exported(k: &Kiln, seed: u64, epochs: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (train, val, test) = synthetic_splits(k, seed);
    k.ok(&[
        "train",
        "--data",
        train.to_str().unwrap_or_default(),
        "--val-data",
        val.to_str().unwrap_or_default(),
        "--out",
        "run",
        "--epochs",
        epochs,
        "-q",
    ]);
    k.ok(&["export", "--model", "run/model", "--output", "m.onnx", "-q"]);
    (train, val, test)
}
