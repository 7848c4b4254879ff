//! One conformance suite, run per engine: the same models and rows through tract and ONNX
//! Runtime (kiln's `ort` engine), compared within the tolerance of the model's kind. Models come
//! from kiln itself (float, dynamic int8, static QDQ) and from Python tools (onnx.helper and
//! onnxruntime.quantization).
//!
//! ONNX Runtime comes from `scripts/fetch-onnxruntime.sh` (`.ort/lib`) or `ORT_DYLIB_PATH`.
//! Without it these tests say so and skip, except under CI, where that is a failure.

use crate::crosscheck::python;
use crate::util::{Kiln, repo, synthetic_splits, trained_and_exported};
use kiln::infer::{EngineConfig, EngineKind, Model};
use std::path::{Path, PathBuf};

/// Tolerances in one table: (model kind, max abs diff between engines, min argmax agreement).
/// kiln's int8 uses u8 × u8 integer products, which both engines compute exactly; ONNX Runtime's
/// own quantizer output may run through kernels whose rounding differs from tract's.
const TOLERANCES: &[(&str, f32, f64)] = &[
    ("f32", 1e-5, 1.0),
    ("kiln-int8", 1e-3, 0.99),
    ("ort-int8", 5e-2, 0.95),
];

fn tolerance(kind: &str) -> (f32, f64) {
    TOLERANCES
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|&(_, t, a)| (t, a))
        .unwrap_or((0.0, 1.0))
}

/// The ONNX Runtime library. A test that needs it fails without it, naming the fix.
pub fn ort_lib() -> PathBuf {
    let candidates = [
        std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
        Some(repo().join(".ort/lib/libonnxruntime.so")),
    ];
    match candidates.into_iter().flatten().find(|p| p.is_file()) {
        Some(p) => p,
        None => panic!(
            "{}",
            crate::crosscheck::missing_tool(
                "the ONNX Runtime library",
                "scripts/fetch-onnxruntime.sh or set ORT_DYLIB_PATH"
            )
        ),
    }
}

fn rows(n: usize, width: usize) -> Vec<f32> {
    (0..n * width)
        .map(|i| (((i * 7919) % 1000) as f32 / 250.0) - 2.0)
        .collect()
}

fn compare(model: &Path, lib: &Path, kind: &str, features: &[f32], n: usize) {
    let tract = Model::load(model, EngineKind::Tract)
        .unwrap_or_else(|e| panic!("tract {}: {e}", model.display()));
    let ort = Model::load(
        model,
        EngineConfig {
            kind: EngineKind::Ort,
            ort_lib: Some(lib.to_path_buf()),
            threads: Some(1),
            provider: Default::default(),
            concurrency: 1,
        },
    )
    .unwrap_or_else(|e| panic!("ort {}: {e}", model.display()));
    let (a, b) = (
        tract.predict(features, n).expect("tract run"),
        ort.predict(features, n).expect("ort run"),
    );
    let (tol, min_agree) = tolerance(kind);
    let max = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| x.scores.iter().zip(&y.scores).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max);
    let agree = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.class_index == y.class_index)
        .count() as f64
        / n as f64;
    assert!(
        max <= tol,
        "{} ({kind}): engines differ by {max} > {tol}",
        model.display()
    );
    assert!(
        agree >= min_agree,
        "{} ({kind}): argmax agreement {agree} < {min_agree}",
        model.display()
    );
}

#[test]
fn kiln_models_agree_across_engines() {
    let lib = ort_lib();
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 23);
    k.ok(&[
        "train",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "5",
        "-q",
    ]);
    k.ok(&["export", "--model", "run/model", "--output", "f.onnx", "-q"]);
    k.ok(&[
        "optimize",
        "--model",
        "f.onnx",
        "--output",
        "d.onnx",
        "--quantization",
        "dynamic",
        "-q",
    ]);
    k.ok(&[
        "optimize",
        "--model",
        "f.onnx",
        "--output",
        "s.onnx",
        "--quantization",
        "static",
        "--calibration-data",
        train.to_str().unwrap(),
        "-q",
    ]);
    let data = kiln::data::load_dataset(&test, "label", None).expect("test");
    for (file, kind) in [
        ("f.onnx", "f32"),
        ("d.onnx", "kiln-int8"),
        ("s.onnx", "kiln-int8"),
    ] {
        for batch in [1usize, 7, 100] {
            compare(
                &k.path(file),
                &lib,
                kind,
                &data.features[..batch * 6],
                batch,
            );
        }
    }
}

#[test]
fn python_tool_models_agree_across_engines() {
    let lib = ort_lib();
    let py = python();
    let k = Kiln::new();
    let dir = k.path("models");
    let out = std::process::Command::new(&py)
        .arg(repo().join("scripts/make_conformance_models.py"))
        .arg(&dir)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = rows(64, 6);
    for (file, kind) in [
        ("py_mlp.onnx", "f32"),
        ("py_mlp_matmul.onnx", "f32"),
        ("py_swish_fn.onnx", "f32"),
        ("ort_dynamic.onnx", "ort-int8"),
        ("ort_qdq.onnx", "ort-int8"),
    ] {
        compare(&dir.join(file), &lib, kind, &x, 64);
        // Every graph level keeps the model's outputs, in both engines.
        for level in ["basic", "extended", "all"] {
            let out = dir.join(format!("{file}.{level}.onnx"));
            let opts = kiln::optimize::OptimizeOptions {
                level: kiln::optimize::GraphLevel::parse(level).expect("level"),
                ..Default::default()
            };
            kiln::optimize::GraphOptimizer::new(opts)
                .run(&dir.join(file), &out, &mut kiln::core::NullSink)
                .expect("optimize");
            for engine in [
                EngineConfig::from(EngineKind::Tract),
                EngineConfig {
                    kind: EngineKind::Ort,
                    ort_lib: Some(lib.clone()),
                    threads: Some(1),
                    provider: Default::default(),
                    concurrency: 1,
                },
            ] {
                let a = Model::load(dir.join(file), engine.clone())
                    .expect("load")
                    .predict(&x, 64)
                    .expect("run");
                let b = Model::load(&out, engine.clone())
                    .expect("load")
                    .predict(&x, 64)
                    .expect("run");
                let d = a
                    .iter()
                    .zip(&b)
                    .flat_map(|(p, q)| p.scores.iter().zip(&q.scores).map(|(u, v)| (u - v).abs()))
                    .fold(0f32, f32::max);
                assert!(
                    d <= 1e-5,
                    "{file} at level {level} on {:?}: outputs moved by {d}",
                    engine.kind
                );
            }
        }
    }
}

/// The CLI's `--engine ort` gives the same predictions file as tract, and a missing library is
/// a clear error, not a panic.
#[test]
fn cli_engine_ort_matches_tract_and_reports_a_missing_library() {
    let lib = ort_lib();
    let k = Kiln::new();
    let (_, _, test) = trained_and_exported(&k, 29, "3");
    let t = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "t.csv",
    ]);
    let o = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "o.csv",
        "--engine",
        "ort",
        "--ort-lib",
        lib.to_str().unwrap(),
    ]);
    assert_eq!(o["engine"], "ort");
    assert_eq!(t["report"]["accuracy"], o["report"]["accuracy"]);
    let (_, tr) = crate::util::read_csv(&k.path("t.csv"));
    let (_, or) = crate::util::read_csv(&k.path("o.csv"));
    assert_eq!(tr.len(), or.len());
    for (a, b) in tr.iter().zip(&or) {
        assert_eq!(a[1], b[1], "labels differ");
        for (p, q) in a[2..5].iter().zip(&b[2..5]) {
            let (p, q): (f32, f32) = (p.parse().expect("f32"), q.parse().expect("f32"));
            assert!((p - q).abs() <= 1e-5);
        }
    }
    let err = k.fails(
        &[
            "infer",
            "--model",
            "m.onnx",
            "--data",
            test.to_str().unwrap(),
            "--engine",
            "ort",
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
        ],
        2,
    );
    assert!(
        err.contains("ONNX Runtime library not found") && err.contains("fetch-onnxruntime.sh"),
        "{err}"
    );
    // A pool of ORT sessions for parallel workers gives the same file, in the same order.
    k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "o3.csv",
        "--engine",
        "ort",
        "--ort-lib",
        lib.to_str().unwrap(),
        "--workers",
        "3",
        "--threads",
        "1",
        "--batch-size",
        "9",
    ]);
    assert_eq!(
        std::fs::read(k.path("o.csv")).expect("o"),
        std::fs::read(k.path("o3.csv")).expect("o3")
    );
    // `--engine auto` measures both engines and records why it chose one (no time asserted).
    let auto = k.run_env(
        &[
            "infer",
            "--model",
            "m.onnx",
            "--data",
            test.to_str().unwrap(),
            "--output",
            "auto.csv",
            "--engine",
            "auto",
            "--json",
        ],
        &[("ORT_DYLIB_PATH", lib.to_str().unwrap())],
    );
    assert!(
        auto.status.success(),
        "{}",
        String::from_utf8_lossy(&auto.stderr)
    );
    let auto: serde_json::Value = serde_json::from_slice(&auto.stdout).expect("json");
    assert_eq!(
        auto["auto"]["candidates"].as_array().map(Vec::len),
        Some(2),
        "{auto:#}"
    );
    assert!(auto["auto"]["max_abs_diff"].as_f64().expect("diff") <= 1e-4);
    assert_eq!(auto["engine"], auto["auto"]["engine"]);
    // A GPU provider is never replaced by the CPU silently: without it, the run warns and says
    // what runs instead, or with --strict-provider stops and says why.
    let lib_s = lib.to_str().unwrap();
    let mut cuda = vec![
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "cuda.csv",
        "--engine",
        "ort",
        "--ort-lib",
        lib_s,
        "--provider",
        "cuda",
    ];
    let out = k.ok(&cuda);
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(
        warn.contains("warning:") && warn.contains("CUDA") && warn.contains("running on cpu"),
        "{warn}"
    );
    cuda.push("--strict-provider");
    cuda[6] = "cuda2.csv";
    let err = k.fails(&cuda, 2);
    assert!(err.contains("CUDA"), "{err}");
    assert!(!k.path("cuda2.csv").exists());
    let err = k.fails(
        &[
            "infer",
            "--model",
            "m.onnx",
            "--data",
            test.to_str().unwrap(),
            "--engine",
            "tract",
            "--provider",
            "cuda:0",
        ],
        2,
    );
    assert!(err.contains("tract runs on the CPU only"), "{err}");
}

/// Issue 4's conformance matrix: every model kind kiln trains × every supported opset × batch
/// sizes 1, 7 and 64. Export verifies each file in tract against burn at those batch sizes;
/// here each is also run by ONNX Runtime (kiln's ort engine) and compared with tract, and every
/// file passes the `onnx` checker with full_check and strict shape inference.
#[test]
fn model_kind_by_opset_by_batch_matrix() {
    let k = Kiln::new();
    let (train, val, _) = synthetic_splits(&k, 23);
    let (train, val) = (
        train.to_str().unwrap().to_string(),
        val.to_str().unwrap().to_string(),
    );
    let reg = kiln::data::synthetic::make_regression(400, 5, 3, 0.1, 9);
    let reg_train = k
        .write_dataset("reg.csv", &reg)
        .to_str()
        .unwrap()
        .to_string();
    let digits = repo()
        .join("data/digits/train.csv")
        .to_str()
        .unwrap()
        .to_string();
    let kinds: Vec<(&str, Vec<&str>)> = vec![
        (
            "mlp",
            vec!["--data", &train, "--val-data", &val, "--dropout", "0.1"],
        ),
        ("mlp-gelu", vec!["--data", &train, "--activation", "gelu"]),
        (
            "regressor",
            vec!["--data", &reg_train, "--task", "regression"],
        ),
        (
            "cnn",
            vec![
                "--data",
                &digits,
                "--input-shape",
                "1,8,8",
                "--channels",
                "4,8",
                "--hidden",
                "16",
            ],
        ),
    ];
    let lib = ort_lib();
    let mut files = Vec::new();
    for (kind, extra) in &kinds {
        let mut args = vec!["train", "--out", kind, "--epochs", "2", "-q"];
        args.extend(extra.iter().copied());
        k.ok(&args);
        let model_dir = format!("{kind}/model");
        let width: usize = {
            let spec: serde_json::Value = serde_json::from_slice(
                &std::fs::read(k.path(&format!("{model_dir}/spec.json"))).unwrap(),
            )
            .unwrap();
            spec["input_features"].as_u64().unwrap() as usize
        };
        for opset in 13..=21 {
            let file = format!("{kind}-{opset}.onnx");
            let mut export = vec![
                "export".to_string(),
                "--model".into(),
                model_dir.clone(),
                "--output".into(),
                file.clone(),
                "--opset".into(),
                opset.to_string(),
            ];
            // Alternate the graph options so that each is checked at several opsets.
            if opset % 2 == 0 {
                export.push("--no-fold-batchnorm".into());
                export.push("--linear-op".into());
                export.push("matmul-add".into());
            }
            let e = k.json(&export.iter().map(String::as_str).collect::<Vec<_>>());
            let diff = e["verification"]["max_abs_diff"].as_f64().unwrap();
            assert!(diff <= 1e-5, "{file}: tract vs burn {diff}");
            let diff = e["verification_ort"]["max_abs_diff"].as_f64().unwrap();
            assert!(diff <= 1e-5, "{file}: ONNX Runtime vs burn {diff}");
            for n in [1, 7, 64] {
                compare(&k.path(&file), &lib, "f32", &rows(n, width), n);
            }
            files.push(k.path(&file));
        }
    }
    {
        let out = std::process::Command::new(python())
            .arg(repo().join("scripts/onnx_check_many.py"))
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for f in &files {
            assert_eq!(v[f.to_str().unwrap()], "ok", "{}", f.display());
        }
    }
    assert_eq!(files.len(), 4 * 9);
}
