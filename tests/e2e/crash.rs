//! Crash safety with real SIGKILLs: `kiln train` killed at moments spread over a whole run
//! always resumes to the uninterrupted run's weights, and export, optimize and package killed
//! mid-write leave the old output or the complete new one, never a truncated file.
//!
//! A longer sweep: `KILN_KILL_TRIALS=200 cargo nextest run -E 'test(/killed_at/)'`.

use crate::util::Kiln;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn trials() -> usize {
    std::env::var("KILN_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Runs `kiln ARGS` in `dir` and kills it with SIGKILL after `delay`; returns whether it had
/// already finished (successfully) by then.
fn run_and_kill(dir: &Path, args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while start.elapsed() < delay {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "kiln {} failed on its own",
                args.join(" ")
            );
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let status = child.wait().expect("reap");
    status.success()
}

/// Wall time of one complete run.
fn timed(k: &Kiln, args: &[&str]) -> Duration {
    let t = Instant::now();
    k.ok(args);
    t.elapsed()
}

#[test]
fn train_killed_at_any_moment_resumes_to_the_same_weights() {
    let k = Kiln::new();
    let all = kiln::data::synthetic::make_classification(6000, 6, 3, 3, 1.0, 8);
    let parts = kiln::data::split(&all, 0.9, 0.1, 8);
    let train = k.write_dataset("train.csv", &parts.train);
    let val = k.write_dataset("val.csv", &parts.val);
    let args = |out: &str| -> Vec<String> {
        [
            "train",
            "--data",
            train.to_str().unwrap(),
            "--val-data",
            val.to_str().unwrap(),
            "--out",
            out,
            "--epochs",
            "8",
            "--dropout",
            "0.1",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let reference = args("reference");
    let full = timed(
        &k,
        &reference.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let want = std::fs::read(k.path("reference/model/weights.safetensors")).unwrap();

    let n = trials();
    let mut killed_mid_run = 0;
    for i in 0..n {
        let out = format!("trial-{i}");
        let a = args(&out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        // Kill moments spread evenly over a whole run (and a little past it).
        let delay = full.mul_f64((i as f64 + 0.5) / n as f64 * 1.1);
        let finished = run_and_kill(k.path("").as_path(), &a, delay);
        if !finished {
            killed_mid_run += 1;
            let has_checkpoint = std::fs::read_dir(k.path(&format!("{out}/checkpoints")))
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("epoch-"))
                })
                .unwrap_or(false);
            if has_checkpoint {
                k.ok(&["train", "--resume", &out, "-q"]);
            } else {
                // Killed before the first checkpoint: resuming says so, and a fresh start works.
                let r = k.run(&["train", "--resume", &out]);
                assert!(
                    !r.status.success(),
                    "trial {i}: resume without a checkpoint succeeded"
                );
                let err = String::from_utf8_lossy(&r.stderr);
                assert!(!err.contains("panicked"), "{err}");
                assert!(
                    err.contains("no checkpoint") || err.contains("config.toml"),
                    "trial {i}: {err}"
                );
                let mut fresh = a.clone();
                fresh.push("--force");
                k.ok(&fresh);
            }
        }
        let got = std::fs::read(k.path(&format!("{out}/model/weights.safetensors")))
            .unwrap_or_else(|e| panic!("trial {i}: no model after resume: {e}"));
        assert_eq!(
            got, want,
            "trial {i} (killed after {delay:?}) ended with other weights"
        );
    }
    assert!(
        killed_mid_run >= n / 2,
        "only {killed_mid_run} of {n} kills landed mid-run"
    );
}

/// Every file at `path` is either `old` or `new`, never anything else.
fn old_or_new(path: &Path, old: &[u8], new: &[u8], what: &str) {
    match std::fs::read(path) {
        Ok(b) => assert!(
            b == old || b == new,
            "{what}: {} holds {} bytes that are neither the old file ({}) nor the new one ({})",
            path.display(),
            b.len(),
            old.len(),
            new.len()
        ),
        Err(e) => panic!("{what}: {} vanished: {e}", path.display()),
    }
}

#[test]
fn export_optimize_and_package_killed_mid_write_leave_old_or_new() {
    let k = Kiln::new();
    let (_, val, _) = crate::util::trained_and_exported(&k, 13, "3");
    let val = val.to_str().unwrap().to_string();
    // The "old" outputs come from another model; the "new" ones from a complete run.
    std::fs::copy(k.path("m.onnx"), k.path("old.onnx")).unwrap();
    k.ok(&[
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "m.int8.onnx",
        "--quantization",
        "dynamic",
        "-q",
    ]);
    let export_args = [
        "export",
        "--model",
        "run/model",
        "--output",
        "out.onnx",
        "--force",
        "-q",
    ];
    let optimize_args = [
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "out.int8.onnx",
        "--quantization",
        "static",
        "--calibration-data",
        &val,
        "--force",
        "-q",
    ];
    for (what, args, target, old_src) in [
        ("export", &export_args[..], "out.onnx", "m.int8.onnx"),
        ("optimize", &optimize_args[..], "out.int8.onnx", "old.onnx"),
    ] {
        // The new output, from a complete run.
        std::fs::copy(k.path(old_src), k.path(target)).unwrap();
        let full = timed(&k, args);
        let new = std::fs::read(k.path(target)).unwrap();
        let old = std::fs::read(k.path(old_src)).unwrap();
        assert_ne!(old, new);
        let n = trials();
        for i in 0..n {
            std::fs::copy(k.path(old_src), k.path(target)).unwrap();
            let delay = full.mul_f64((i as f64 + 0.5) / n as f64);
            run_and_kill(k.path("").as_path(), args, delay);
            old_or_new(&k.path(target), &old, &new, what);
        }
    }
    // A bundle directory is replaced whole: after a kill it is the old bundle, the new one,
    // or (between the two renames) absent, and a present one always verifies.
    k.ok(&["package", "m.onnx", "--out", "bundle", "-q"]);
    let pkg = ["package", "m.int8.onnx", "--out", "bundle", "--force", "-q"];
    let full = timed(&k, &pkg);
    for i in 0..trials() {
        k.ok(&["package", "m.onnx", "--out", "bundle", "--force", "-q"]);
        let delay = full.mul_f64((i as f64 + 0.5) / trials() as f64);
        run_and_kill(k.path("").as_path(), &pkg, delay);
        if k.path("bundle").exists() {
            k.ok(&["package", "--verify", "bundle", "-q"]);
        }
    }
}
