//! Checkpoints and exact resumption: `kiln train` killed with SIGKILL mid-run and resumed with
//! `kiln train --resume` ends with the same weights, bit for bit, as a run never interrupted;
//! a damaged checkpoint is named and skipped, and with none left the error names the files.

use crate::util::Kiln;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn weights(k: &Kiln, run: &str) -> Vec<u8> {
    std::fs::read(k.path(&format!("{run}/model/weights.safetensors"))).expect("weights")
}

fn history(k: &Kiln, run: &str) -> Vec<serde_json::Value> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path(&format!("{run}/metrics.json"))).unwrap())
            .unwrap();
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("seconds");
            e
        })
        .collect()
}

/// Enough rows that an epoch takes a noticeable time, so the kill lands mid-run.
fn data(k: &Kiln) -> (String, String) {
    let all = kiln::data::synthetic::make_classification(24_000, 6, 3, 3, 1.0, 5);
    let parts = kiln::data::split(&all, 0.9, 0.1, 5);
    (
        k.write_dataset("train.csv", &parts.train)
            .to_string_lossy()
            .into_owned(),
        k.write_dataset("val.csv", &parts.val)
            .to_string_lossy()
            .into_owned(),
    )
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    let k = Kiln::new();
    let (train, val) = data(&k);
    let args = |out: &'static str| {
        vec![
            "train".to_string(),
            "--data".into(),
            train.clone(),
            "--val-data".into(),
            val.clone(),
            "--out".into(),
            out.into(),
            "--epochs".into(),
            "10".into(),
            "--dropout".into(),
            "0.2".into(),
            "--schedule".into(),
            "cosine".into(),
            "--keep-checkpoints".into(),
            "2".into(),
            "-q".into(),
        ]
    };
    let full: Vec<String> = args("full");
    k.ok(&full.iter().map(String::as_str).collect::<Vec<_>>());

    // The same run, killed with SIGKILL once its third checkpoint is on disk.
    let killed = args("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(&killed)
        .current_dir(k.path(""))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let marker = k.path("killed/checkpoints/epoch-000003/state.json");
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "training finished before it could be killed; give it more work"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        !k.path("killed/model/kiln-model.json").exists(),
        "killed before the end"
    );
    // At most `--keep-checkpoints` periodic checkpoints, plus best.
    let kept = std::fs::read_dir(k.path("killed/checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("epoch-")
        })
        .count();
    // (A kill between writing a checkpoint and pruning the oldest leaves one more.)
    assert!((1..=3).contains(&kept), "{kept} periodic checkpoints kept");

    // A fresh `train` into the interrupted run is refused rather than wiping it.
    let err = k.fails(&killed.iter().map(String::as_str).collect::<Vec<_>>(), 2);
    assert!(err.contains("--resume"), "{err}");

    // Damage the newest checkpoint: resume names it, skips it and uses the one before.
    let mut newest: Vec<_> = std::fs::read_dir(k.path("killed/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("epoch-")
        })
        .collect();
    newest.sort();
    let newest = newest.pop().unwrap();
    let file = newest.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    let out = k.ok(&["train", "--resume", "killed"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if kept > 1 {
        assert!(
            stderr.contains("model.safetensors") && stderr.contains("skipping"),
            "the damaged checkpoint is named: {stderr}"
        );
    }
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert_eq!(
        weights(&k, "killed"),
        weights(&k, "full"),
        "resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(history(&k, "killed"), history(&k, "full"));

    // With every checkpoint damaged there is nothing to resume from: a clear error naming files.
    for e in std::fs::read_dir(k.path("killed/checkpoints")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("epoch-")
        {
            std::fs::write(p.join("state.json"), b"{ truncated").unwrap();
        }
    }
    let err = k.fails(&["train", "--resume", "killed"], 1);
    assert!(
        err.contains("no usable checkpoint") && err.contains("state.json"),
        "{err}"
    );
    // --resume with another run's config is refused.
    let err = k.fails(
        &[
            "train",
            "--resume",
            "killed",
            "--config",
            "full/config.toml",
        ],
        2,
    );
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn best_checkpoint_follows_the_chosen_metric() {
    let k = Kiln::new();
    let (train, val, _) = crate::util::synthetic_splits(&k, 21);
    let (train, val) = (
        train.to_string_lossy().into_owned(),
        val.to_string_lossy().into_owned(),
    );
    k.ok(&[
        "train",
        "--data",
        &train,
        "--val-data",
        &val,
        "--out",
        "run",
        "--epochs",
        "6",
        "--best-metric",
        "val_accuracy",
        "-q",
    ]);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("run/checkpoints/best/state.json")).unwrap())
            .unwrap();
    let best = state["best_epoch"].as_u64().unwrap() as usize;
    assert_eq!(state["epoch"].as_u64().unwrap() as usize, best);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("run/metrics.json")).unwrap()).unwrap();
    let hist = metrics["history"].as_array().unwrap();
    assert_eq!(hist.len(), 6);
    let acc = |e: &serde_json::Value| e["val_accuracy"].as_f64().unwrap();
    let top = hist.iter().map(acc).fold(f64::MIN, f64::max);
    assert_eq!(
        acc(&hist[best - 1]),
        top,
        "best epoch {best} has the top val accuracy"
    );
    assert_eq!(metrics["best_epoch"].as_u64().unwrap() as usize, best);
    let err = k.fails(
        &[
            "train",
            "--data",
            &train,
            "--out",
            "x",
            "--best-metric",
            "f1",
        ],
        2,
    );
    assert!(err.contains("best_metric"), "{err}");
    // --log-steps adds one record per optimizer step before each epoch's record.
    k.ok(&[
        "train",
        "--data",
        &train,
        "--out",
        "steps",
        "--epochs",
        "2",
        "--batch-size",
        "100",
        "--log-steps",
        "-q",
    ]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(k.path("steps/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["record"].as_str().unwrap())
        .collect();
    let mut want = vec!["step"; 10];
    want.push("epoch");
    want.extend(vec!["step"; 10]);
    want.push("epoch");
    assert_eq!(kinds, want, "1000 rows / batch 100 = 10 steps per epoch");
    assert_eq!(lines[12]["step"], 12);
    assert!(lines[0]["loss"].as_f64().unwrap() > 0.0);
    // A held-out test set is evaluated with the kept model.
    let test = k.path("test.csv").to_string_lossy().into_owned();
    let s = k.json(&[
        "train",
        "--data",
        &train,
        "--val-data",
        &val,
        "--test-data",
        &test,
        "--out",
        "run-t",
        "--epochs",
        "6",
    ]);
    assert_eq!(s["test"]["rows"], 100);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("run-t/summary.json")).unwrap()).unwrap();
    assert_eq!(
        saved["test"], s["test"],
        "summary.json holds the printed result"
    );
    assert!(s["test"]["accuracy"].as_f64().unwrap() > 0.9, "{s:#}");
    assert!(s["test"]["macro_f1"].as_f64().unwrap() > 0.9, "{s:#}");
    assert!(s["val_macro_f1"].as_f64().unwrap() > 0.9, "{s:#}");
    // Each optimizer trains the separable set well.
    for (opt, lr) in [("sgd", "0.05"), ("adamw", "0.01"), ("adam", "0.01")] {
        let out = format!("run-{opt}");
        let s = k.json(&[
            "train",
            "--data",
            &train,
            "--val-data",
            &val,
            "--out",
            &out,
            "--epochs",
            "10",
            "--optimizer",
            opt,
            "--lr",
            lr,
            "--weight-decay",
            "0.0001",
        ]);
        let acc = s["val_accuracy"].as_f64().unwrap();
        assert!(acc > 0.9, "{opt}: val accuracy {acc}");
    }
    let err = k.fails(
        &[
            "train",
            "--data",
            &train,
            "--out",
            "y",
            "--optimizer",
            "rmsprop",
        ],
        2,
    );
    assert!(err.contains("adam, adamw or sgd"), "{err}");
}

#[test]
fn bf16_training_matches_f32_accuracy_and_resumes_exactly() {
    let k = Kiln::new();
    let (train, val, test) = crate::util::synthetic_splits(&k, 31);
    let (train, val, test) = (
        train.to_string_lossy().into_owned(),
        val.to_string_lossy().into_owned(),
        test.to_string_lossy().into_owned(),
    );
    let run = |out: &str, precision: &str| {
        k.json(&[
            "train",
            "--data",
            &train,
            "--val-data",
            &val,
            "--test-data",
            &test,
            "--out",
            out,
            "--epochs",
            "8",
            "--precision",
            precision,
            "--keep-checkpoints",
            "10",
        ])
    };
    let f32_run = run("f32", "f32");
    let bf16_run = run("bf16", "bf16");
    let acc = |s: &serde_json::Value| s["test"]["accuracy"].as_f64().unwrap();
    assert!(acc(&f32_run) > 0.9);
    assert!(
        acc(&bf16_run) >= acc(&f32_run) - 0.02,
        "bf16 {} vs f32 {}",
        acc(&bf16_run),
        acc(&f32_run)
    );
    // The weights really are bfloat16 values (the low 16 bits of each f32 are zero), and they
    // differ from the f32 run's.
    let bytes = weights(&k, "bf16");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let body = &bytes[8 + n..];
    assert!(body.chunks_exact(4).all(|c| c[0] == 0 && c[1] == 0));
    assert_ne!(weights(&k, "bf16"), weights(&k, "f32"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("bf16/metrics.json")).unwrap()).unwrap();
    assert_eq!(m["precision"], "bf16");
    // The exported model is f32 and verifies against burn's f32 forward pass of those weights.
    let e = k.json(&["export", "--model", "bf16/model", "--output", "bf16.onnx"]);
    assert!(
        e["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-5,
        "{e:#}"
    );
    // Resuming a bf16 run from an earlier checkpoint reproduces it exactly.
    let want = weights(&k, "bf16");
    for epoch in 5..=8 {
        std::fs::remove_dir_all(k.path(&format!("bf16/checkpoints/epoch-{epoch:06}"))).unwrap();
    }
    k.ok(&["train", "--resume", "bf16", "-q"]);
    assert_eq!(weights(&k, "bf16"), want, "bf16 resume differs");
    // f16 is refused with the reason.
    let err = k.fails(
        &[
            "train",
            "--data",
            &train,
            "--out",
            "h",
            "--precision",
            "f16",
        ],
        2,
    );
    assert!(err.contains("underflows"), "{err}");
}

/// The largest difference between the trained weights of two runs with the same model.
pub(crate) fn weight_gap(k: &Kiln, a: &str, b: &str) -> f32 {
    let (a, b) = (f32s(&weights(k, a)), f32s(&weights(k, b)));
    assert_eq!(a.len(), b.len(), "the runs trained different models");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn two_cpu_replicas_train_like_one_device_and_record_the_strategy() {
    let k = Kiln::new();
    let (train, val, _) = crate::util::synthetic_splits(&k, 41);
    let (train, val) = (
        train.to_string_lossy().into_owned(),
        val.to_string_lossy().into_owned(),
    );
    for (out, devices) in [("one", "cpu"), ("two", "cpu,cpu")] {
        k.ok(&[
            "train",
            "--data",
            &train,
            "--val-data",
            &val,
            "--out",
            out,
            "--epochs",
            "5",
            "--devices",
            devices,
            "-q",
        ]);
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("two/metrics.json")).unwrap()).unwrap();
    assert!(
        m["strategy"]
            .as_str()
            .unwrap()
            .starts_with("multi-device: 2 replicas"),
        "{m:#}"
    );
    // Half a batch on each replica, gradients summed: the same step as the whole batch on one
    // device, up to float summation order.
    let diff = weight_gap(&k, "one", "two");
    assert!(diff < 1e-4, "replicated training drifted by {diff}");
    // What this build cannot do is refused, not ignored; burn's DDP needs an all-reduce, which
    // burn 0.22 has for CUDA only.
    for (flags, needle) in [
        (&["--devices", "cuda:0"][..], "GPU training"),
        (&["--devices", "ws://127.0.0.1:3000"], "remote"),
        (&["--devices", "tpu"], "unknown device"),
        (&["--devices", "cpu,cpu", "--grad-accum", "2"], "grad_accum"),
        (
            &["--devices", "cpu,cpu", "--strategy", "ddp"],
            "all-reduce exists only for CUDA",
        ),
        (
            &["--devices", "cpu,cpu", "--strategy", "ring"],
            "use auto, multi or ddp",
        ),
    ] {
        let mut args = vec!["train", "--data", &train, "--out", "x"];
        args.extend_from_slice(flags);
        let err = k.fails(&args, 2);
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
}
