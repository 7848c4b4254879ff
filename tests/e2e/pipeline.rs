use crate::util::{Kiln, f, read_csv, repo, synthetic_splits, trained_and_exported};

/// The seed scenario: train on 1000 rows, validate on 100, test on 100, through all four stages.
#[test]
fn full_pipeline_on_synthetic_data() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 7);
    let s = k.json(&[
        "pipeline",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--test-data",
        test.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "15",
        "--batch-size",
        "32",
        "--lr",
        "0.003",
    ]);
    let float_acc = f(&s, "/test/float/report/accuracy");
    let int8_acc = f(&s, "/test/optimized/report/accuracy");
    assert!(float_acc > 0.95, "float test accuracy {float_acc}");
    assert!(
        int8_acc >= 0.99 * float_acc,
        "int8 accuracy {int8_acc} < 0.99 x float {float_acc}"
    );
    // The export verified itself against burn's forward pass.
    assert!(f(&s, "/export/verification/max_abs_diff") <= 1e-5, "{s:#}");
    assert_eq!(f(&s, "/export/verification/argmax_agreement"), 1.0);
    // int8 is smaller.
    assert!(f(&s, "/optimize/bytes_after") < f(&s, "/optimize/bytes_before"));
    for file in [
        "model/spec.json",
        "model/weights.safetensors",
        "model/metadata.json",
        "model.onnx",
        "model.int8.onnx",
        "metrics.json",
        "config.toml",
        "summary.json",
    ] {
        assert!(k.path("run").join(file).is_file(), "{file} missing");
    }
    let (header, rows) = read_csv(&k.path("run/predictions.csv"));
    assert_eq!(rows.len(), 100, "rows out = rows in");
    assert_eq!(
        header,
        ["row", "label", "prob_0", "prob_1", "prob_2", "error"]
    );
}

/// Each stage on its own through the CLI, with the artifacts of the previous stage.
#[test]
fn stages_run_one_by_one() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 11);
    let t = k.json(&[
        "train",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "8",
        "--hidden",
        "32,16",
    ]);
    assert!(f(&t, "/val_accuracy") > 0.9, "{t:#}");
    let e = k.json(&["export", "--model", "run/model", "--output", "m.onnx"]);
    assert!(f(&e, "/verification/max_abs_diff") <= 1e-5);
    let o = k.json(&[
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "m8.onnx",
        "--quantization",
        "dynamic",
        "--validate-data",
        val.to_str().unwrap(),
    ]);
    assert!(f(&o, "/accuracy_ratio") >= 0.99, "{o:#}");
    let i = k.json(&[
        "infer",
        "--model",
        "m8.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "p.csv",
        "--batch-size",
        "7",
    ]);
    assert_eq!(f(&i, "/report/rows"), 100.0);
    assert_eq!(f(&i, "/report/failed"), 0.0);
    assert!(f(&i, "/report/accuracy") > 0.9);
    // metadata survives optimization
    let meta = k.json(&["inspect", "m8.onnx"]);
    assert_eq!(
        meta.pointer("/metadata/kiln.class_names")
            .and_then(|v| v.as_str()),
        Some("[\"0\",\"1\",\"2\"]")
    );
    // Dynamic quantization for kiln's default engine is kiln's own int8 op.
    assert!(
        meta["ops"]
            .as_object()
            .is_some_and(|ops| ops.keys().any(|k| k.starts_with("ai.kiln:Int8Linear"))),
        "{meta:#}"
    );
    for key in [
        "kiln.version",
        "kiln.burn_version",
        "kiln.created_unix",
        "kiln.weights_sha256",
        "kiln.training_config_sha256",
        "kiln.normalization",
        "kiln.feature_names",
    ] {
        assert!(
            meta["metadata"][key]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{key} missing after optimize: {meta:#}"
        );
    }
    assert!(
        meta["metadata"]["kiln.training_config"]
            .as_str()
            .is_some_and(|v| v.contains("\"hidden\":[32,16]")),
        "{meta:#}"
    );
}

/// Rows out = rows in, even when rows are malformed: each bad row gets an error record.
#[test]
fn malformed_rows_get_error_records() {
    let k = Kiln::new();
    let (_, _, _) = trained_and_exported(&k, 3, "3");
    let body = "f0,f1,f2,f3,f4,f5,label\n\
                0.1,0.2,0.3,0.4,0.5,0.6,1\n\
                oops,0.2,0.3,0.4,0.5,0.6,1\n\
                0.1,0.2,0.3\n\
                0.1,0.2,0.3,0.4,0.5,inf,2\n\
                1,2,3,4,5,6,0\n";
    let data = k.write("bad.csv", body);
    let i = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        data.to_str().unwrap(),
        "--output",
        "p.csv",
    ]);
    assert_eq!(f(&i, "/report/rows"), 5.0);
    assert_eq!(f(&i, "/report/failed"), 3.0);
    let (header, rows) = read_csv(&k.path("p.csv"));
    assert_eq!(rows.len(), 5);
    let err_col = header
        .iter()
        .position(|h| h == "error")
        .expect("error column");
    let errors: Vec<&str> = rows.iter().map(|r| r[err_col].as_str()).collect();
    assert!(errors[0].is_empty() && errors[4].is_empty());
    assert!(
        errors[1].contains("\"f0\"") && errors[1].contains("not a number"),
        "{}",
        errors[1]
    );
    assert!(errors[2].contains("3 fields"), "{}", errors[2]);
    assert!(errors[3].contains("finite"), "{}", errors[3]);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], i.to_string(), "rows keep their order");
    }
}

/// The README's first command.
#[test]
fn demo_pipeline_runs() {
    let k = Kiln::new();
    let s = k.json(&["pipeline", "--demo", "--out", "demo"]);
    assert!(f(&s, "/test/float/report/accuracy") > 0.9, "{s:#}");
    assert!(k.path("demo/data/train.csv").is_file());
    // A second run refuses to overwrite without --force.
    let err = k.fails(&["pipeline", "--demo", "--out", "demo"], 2);
    assert!(err.contains("--force"), "{err}");
}

/// The same path on the small real data sets shipped in the repo.
#[test]
fn real_data_sets_reach_high_accuracy() {
    // (data set, accuracy floor, epochs, batch size, learning rate, hidden sizes)
    for (name, min_acc, epochs, batch, lr, hidden) in [
        ("iris", 0.93, "200", "16", "0.01", "32,16"),
        ("wine", 0.95, "200", "16", "0.01", "32,16"),
        ("digits", 0.95, "60", "32", "0.003", "64,32"),
    ] {
        let k = Kiln::new();
        let d = repo().join("data").join(name);
        let s = k.json(&[
            "pipeline",
            "--data",
            d.join("train.csv").to_str().unwrap(),
            "--val-data",
            d.join("val.csv").to_str().unwrap(),
            "--test-data",
            d.join("test.csv").to_str().unwrap(),
            "--out",
            "run",
            "--epochs",
            epochs,
            "--batch-size",
            batch,
            "--lr",
            lr,
            "--hidden",
            hidden,
        ]);
        let float_acc = f(&s, "/test/float/report/accuracy");
        let int8_acc = f(&s, "/test/optimized/report/accuracy");
        assert!(float_acc > min_acc, "{name}: float accuracy {float_acc}");
        // The pipeline's int8 model is kiln's own form (Int8Linear, run by kiln's kernel).
        assert!(
            int8_acc >= 0.99 * float_acc,
            "{name}: int8 {int8_acc} vs float {float_acc}"
        );
        let q = kiln::onnx::load(&k.path("run/model.int8.onnx")).unwrap();
        assert_eq!(
            kiln::onnx::metadata_value(&q, "kiln.optimize.form"),
            Some("kiln"),
            "{name}"
        );
        assert!(f(&s, "/export/verification/max_abs_diff") <= 1e-5);
    }
}

/// Same seed, same data: the same weights, bit for bit.
#[test]
fn training_is_reproducible() {
    let k = Kiln::new();
    let (train, val, _) = synthetic_splits(&k, 5);
    for out in ["a", "b"] {
        k.ok(&[
            "train",
            "--data",
            train.to_str().unwrap(),
            "--val-data",
            val.to_str().unwrap(),
            "--out",
            out,
            "--epochs",
            "3",
            "--seed",
            "9",
            "--dropout",
            "0.1",
            "-q",
        ]);
    }
    let a = std::fs::read(k.path("a/model/weights.safetensors")).expect("a");
    let b = std::fs::read(k.path("b/model/weights.safetensors")).expect("b");
    assert!(a == b, "weights differ between two runs with the same seed");
}

/// The seed's quantization-accuracy scenario: static quantization calibrated on training data
/// keeps ≥ 0.99× the float accuracy, on synthetic and on real data, as QDQ and in kiln's form.
#[test]
fn static_quantization_keeps_accuracy() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 13);
    // The repo's real data sets (settings of `real_data_sets_reach_high_accuracy`) and a
    // synthetic one.
    let real = |set: &str| {
        let d = repo().join("data").join(set);
        (d.join("train.csv"), d.join("val.csv"), d.join("test.csv"))
    };
    let mut sets = vec![(
        "synthetic",
        (train.clone(), val.clone(), test.clone()),
        "10",
        "16",
        "0.003",
        "32,16",
    )];
    for (name, epochs, batch, lr, hidden) in [
        ("iris", "200", "16", "0.01", "32,16"),
        ("wine", "200", "16", "0.01", "32,16"),
        ("digits", "60", "32", "0.003", "64,32"),
    ] {
        sets.push((name, real(name), epochs, batch, lr, hidden));
    }
    for (name, (tr, va, te), epochs, batch, lr, hidden) in sets {
        let out = format!("{name}-run");
        k.ok(&[
            "train",
            "--data",
            tr.to_str().unwrap(),
            "--val-data",
            va.to_str().unwrap(),
            "--out",
            &out,
            "--epochs",
            epochs,
            "--lr",
            lr,
            "--batch-size",
            batch,
            "--hidden",
            hidden,
            "-q",
        ]);
        let float = format!("{name}.onnx");
        let q = format!("{name}.s8.onnx");
        k.ok(&[
            "export",
            "--model",
            &format!("{out}/model"),
            "--output",
            &float,
            "-q",
        ]);
        let o = k.json(&[
            "optimize",
            "--model",
            &float,
            "--output",
            &q,
            "--quantization",
            "static",
            "--calibration-data",
            tr.to_str().unwrap(),
            "--validate-data",
            va.to_str().unwrap(),
        ]);
        assert!(f(&o, "/accuracy_ratio") >= 0.99, "{name}: {o:#}");
        let a = k.json(&[
            "infer",
            "--model",
            &float,
            "--data",
            te.to_str().unwrap(),
            "--output",
            &format!("{name}.f.csv"),
        ]);
        let b = k.json(&[
            "infer",
            "--model",
            &q,
            "--data",
            te.to_str().unwrap(),
            "--output",
            &format!("{name}.q.csv"),
        ]);
        let (fa, qa) = (f(&a, "/report/accuracy"), f(&b, "/report/accuracy"));
        assert!(
            qa >= 0.99 * fa,
            "{name}: static int8 test accuracy {qa} vs float {fa}"
        );
        // The same calibration in kiln's own form (Int8LinearStatic, run by kiln's kernel).
        let qk = format!("{name}.s8k.onnx");
        k.json(&[
            "optimize",
            "--model",
            &float,
            "--output",
            &qk,
            "--quantization",
            "static",
            "--onnx-form",
            "kiln",
            "--calibration-data",
            tr.to_str().unwrap(),
            "--validate-data",
            va.to_str().unwrap(),
        ]);
        let ops = kiln::onnx::graph::op_counts(
            kiln::onnx::load(&k.path(&qk))
                .unwrap()
                .graph
                .as_ref()
                .unwrap(),
        );
        assert!(
            ops.iter()
                .any(|(op, _)| op.starts_with("ai.kiln:Int8LinearStatic")),
            "{name}: {ops:?}"
        );
        let c = k.json(&[
            "infer",
            "--model",
            &qk,
            "--data",
            te.to_str().unwrap(),
            "--output",
            &format!("{name}.qk.csv"),
        ]);
        let ka = f(&c, "/report/accuracy");
        assert!(
            ka >= 0.99 * fa,
            "{name}: static kiln int8 test accuracy {ka} vs float {fa}"
        );
    }
}

/// `--data -` reads CSV from stdin and predictions go to stdout; the summary goes to stderr.
/// Printed probabilities parse back to exactly the engine's f32 values.
#[test]
fn infer_reads_stdin_and_prints_round_trippable_probabilities() {
    let k = Kiln::new();
    let (_, _, test) = trained_and_exported(&k, 17, "3");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["infer", "--model", "m.onnx", "--data", "-"])
        .current_dir(k.path(""))
        .stdin(std::fs::File::open(&test).expect("test file"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,label,prob_0,prob_1,prob_2,error"));
    let printed: Vec<Vec<f32>> = lines
        .map(|l| {
            l.split(',')
                .skip(2)
                .take(3)
                .map(|v| v.parse().expect("f32"))
                .collect()
        })
        .collect();
    assert_eq!(printed.len(), 100);
    assert!(String::from_utf8_lossy(&out.stderr).contains("100 rows"));
    let data = kiln::data::load_dataset(&test, "label", None).expect("test");
    let model =
        kiln::infer::Model::load(k.path("m.onnx"), kiln::infer::EngineKind::Tract).expect("model");
    let preds = model.predict(&data.features, data.rows()).expect("predict");
    for (p, row) in preds.iter().zip(&printed) {
        let bits: Vec<u32> = p.scores.iter().map(|v| v.to_bits()).collect();
        let back: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            bits, back,
            "printed probabilities must round-trip f32 exactly"
        );
    }
}

/// JSONL in, JSONL out.
#[test]
fn jsonl_input_and_output() {
    let k = Kiln::new();
    let (_, _, _) = trained_and_exported(&k, 19, "3");
    let rows = "{\"f0\":0.1,\"f1\":0.2,\"f2\":0.3,\"f3\":0.4,\"f4\":0.5,\"f5\":0.6,\"label\":\"1\"}\n\
                {\"f0\":\"x\",\"f1\":0.2,\"f2\":0.3,\"f3\":0.4,\"f4\":0.5,\"f5\":0.6}\n\
                not json\n";
    let data = k.write("rows.jsonl", rows);
    let i = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        data.to_str().unwrap(),
        "--output",
        "out.jsonl",
    ]);
    assert_eq!(f(&i, "/report/rows"), 3.0);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(k.path("out.jsonl"))
        .expect("out")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["label"].is_string() && lines[0]["scores"]["prob_0"].is_number());
    assert!(
        lines[1]["error"].as_str().is_some_and(|e| e.contains("f0")),
        "{}",
        lines[1]
    );
    assert!(
        lines[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("JSON")),
        "{}",
        lines[2]
    );
}

/// `kiln compare` on a float model and its int8 form: both accuracies, agreement, and a
/// per-layer error table; Markdown output too.
#[test]
fn compare_float_and_int8() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 59);
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
    k.ok(&["export", "--model", "run/model", "--output", "f.onnx", "-q"]);
    k.ok(&[
        "optimize",
        "--model",
        "f.onnx",
        "--output",
        "q.onnx",
        "--quantization",
        "dynamic",
        "-q",
    ]);
    let c = k.json(&[
        "compare",
        "f.onnx",
        "q.onnx",
        "--data",
        test.to_str().unwrap(),
    ]);
    let r = &c["report"];
    assert_eq!(r["rows"], 100);
    assert!(
        f(&c, "/report/a/accuracy") > 0.9 && f(&c, "/report/b/accuracy") > 0.9,
        "{c:#}"
    );
    assert!(f(&c, "/report/agreement") >= 0.95);
    assert!(f(&c, "/report/b/bytes") < f(&c, "/report/a/bytes"));
    let layers = r["layers"].as_array().expect("layers");
    assert!(layers.len() >= 3, "{c:#}");
    assert!(
        layers
            .iter()
            .any(|l| l["max_abs"].as_f64().expect("max") > 0.0),
        "int8 layers show their error"
    );
    let md = k.ok(&[
        "compare",
        "f.onnx",
        "q.onnx",
        "--data",
        test.to_str().unwrap(),
        "--format",
        "markdown",
    ]);
    let md = String::from_utf8(md.stdout).expect("utf8");
    assert!(
        md.contains("| model |") && md.contains("| layer output |"),
        "{md}"
    );
}

/// `kiln package` writes a bundle that `--verify` accepts; a changed file or a changed model
/// makes verification fail, naming the file; an existing bundle is kept without --force.
#[test]
fn package_and_verify_bundles() {
    let k = Kiln::new();
    let (_, val, _) = trained_and_exported(&k, 61, "3");
    let p = k.json(&[
        "package",
        "m.onnx",
        "--out",
        "bundle",
        "--validate-data",
        val.to_str().unwrap(),
    ]);
    assert!(
        p["manifest"]["files"]["model.onnx"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{p:#}"
    );
    assert!(f(&p, "/manifest/validation/accuracy") > 0.9);
    assert_eq!(
        p["manifest"]["metadata"]["kiln.class_names"],
        "[\"0\",\"1\",\"2\"]"
    );
    for file in ["model.onnx", "manifest.json", "sample.json", "README.md"] {
        assert!(k.path("bundle").join(file).is_file(), "{file}");
    }
    let v = k.json(&["package", "--verify", "bundle"]);
    assert_eq!(v["check"]["files_ok"], 3);
    assert_eq!(f(&v, "/check/sample_max_abs_diff"), 0.0);
    let err = k.fails(&["package", "m.onnx", "--out", "bundle"], 2);
    assert!(err.contains("--force"), "{err}");
    // Swap in another model with valid bytes: the hash check catches it.
    k.ok(&[
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "q.onnx",
        "--quantization",
        "dynamic",
        "-q",
    ]);
    std::fs::copy(k.path("q.onnx"), k.path("bundle/model.onnx")).expect("copy");
    let err = k.fails(&["package", "--verify", "bundle"], 1);
    assert!(
        err.contains("model.onnx") && err.contains("changed or corrupted"),
        "{err}"
    );
    // One-file bundles: .tar.gz out, verified after a safe unpack; a tampered archive fails.
    let t = k.json(&["package", "m.onnx", "--out", "bundle.tar.gz"]);
    assert_eq!(
        t["manifest"]["files"].as_object().unwrap().len(),
        3,
        "{t:#}"
    );
    let v = k.json(&["package", "--verify", "bundle.tar.gz"]);
    assert_eq!(v["check"]["files_ok"], 3);
    let listing = std::process::Command::new("tar")
        .args(["-tzf", "bundle.tar.gz"])
        .current_dir(k.path(""))
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["README.md", "manifest.json", "model.onnx", "sample.json"],
        "flat, plain files"
    );
    // Rebuild the archive with the other model inside: the hashes catch it.
    std::fs::create_dir_all(k.path("unpacked")).unwrap();
    let tar = |args: &[&str]| {
        let st = std::process::Command::new("tar")
            .args(args)
            .current_dir(k.path(""))
            .status()
            .expect("tar");
        assert!(st.success());
    };
    tar(&["-xzf", "bundle.tar.gz", "-C", "unpacked"]);
    std::fs::copy(k.path("q.onnx"), k.path("unpacked/model.onnx")).unwrap();
    tar(&["-czf", "tampered.tar.gz", "-C", "unpacked", "."]);
    let err = k.fails(&["package", "--verify", "tampered.tar.gz"], 1);
    assert!(
        err.contains("tampered.tar.gz") && err.contains("model.onnx"),
        "{err}"
    );
    // An archive with a path that escapes is refused before anything is written.
    std::fs::write(k.path("unpacked/evil.txt"), "x").unwrap();
    tar(&[
        "-P",
        "-czf",
        "escape.tar.gz",
        "-C",
        "unpacked",
        "--transform",
        "s,^\\./evil,../../evil,",
        ".",
    ]);
    let err = k.fails(&["package", "--verify", "escape.tar.gz"], 1);
    assert!(err.contains("outside the target directory"), "{err}");
    assert!(!k.path("../evil.txt").exists());
}

/// `--task regression`: an MLP regressor (MSE, standardised target) through all four stages;
/// the export's inverse target transform is verified against burn, and the report has RMSE,
/// MAE and R².
#[test]
fn regression_pipeline() {
    let k = Kiln::new();
    let all = kiln::data::synthetic::make_regression(1000, 5, 3, 0.1, 71);
    let parts = kiln::data::split(&all, 0.8, 0.1, 71);
    let (train, val, test) = (
        k.write_dataset("train.csv", &parts.train),
        k.write_dataset("val.csv", &parts.val),
        k.write_dataset("test.csv", &parts.test),
    );
    let s = k.json(&[
        "pipeline",
        "--task",
        "regression",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--test-data",
        test.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "60",
        "--lr",
        "0.003",
    ]);
    assert!(f(&s, "/export/verification/max_abs_diff") <= 1e-5, "{s:#}");
    let r2 = f(&s, "/test/float/report/regression/r2");
    let r2_int8 = f(&s, "/test/optimized/report/regression/r2");
    assert!(r2 > 0.95, "float R² {r2}");
    assert!(r2_int8 > 0.95, "int8 R² {r2_int8}");
    assert!(
        s.pointer("/test/float/report/accuracy")
            .is_some_and(|a| a.is_null()),
        "no accuracy for a regressor"
    );
    let (header, rows) = read_csv(&k.path("run/predictions.csv"));
    assert_eq!(header, ["row", "label", "value_0", "error"]);
    assert_eq!(rows.len(), parts.test.rows());
    let err = k.fails(
        &[
            "train",
            "--task",
            "regression",
            "--data",
            k.write("cls.csv", "a,label\n1,x\n2,y\n").to_str().unwrap(),
            "--out",
            "bad",
        ],
        3,
    );
    assert!(err.contains("must be numeric"), "{err}");
    {
        let out = std::process::Command::new(crate::crosscheck::python())
            .arg(repo().join("scripts/onnx_crosscheck.py"))
            .arg(k.path("run/model.onnx"))
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Export options: names are honoured, a static batch is fixed in the graph and verified at that
/// size, and names that do not fit are a clear error.
#[test]
fn export_names_and_static_batch() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 79);
    k.ok(&[
        "train",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "2",
        "-q",
    ]);
    let e = k.json(&[
        "export",
        "--model",
        "run/model",
        "--output",
        "n.onnx",
        "--input-name",
        "x",
        "--output-names",
        "scores,cls",
        "--static-batch",
        "5",
    ]);
    assert_eq!(e["verification"]["batch_sizes"], serde_json::json!([5]));
    let i = k.json(&["inspect", "n.onnx"]);
    assert_eq!(i["inputs"], serde_json::json!(["x: float32 [5, 6]"]));
    assert_eq!(
        i["outputs"],
        serde_json::json!(["scores: float32 [5, 3]", "cls: int64 [5]"])
    );
    // The renamed model still runs through kiln infer (scores found by type, label by type).
    let r = k.json(&[
        "infer",
        "--model",
        "n.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "p.csv",
        "--batch-size",
        "5",
    ]);
    assert!(f(&r, "/report/accuracy") > 0.8, "{r:#}");
    for (names, want) in [("a", "1 name"), ("a,a", "distinct"), ("x,y,z", "3 name")] {
        let err = k.fails(
            &[
                "export",
                "--model",
                "run/model",
                "--output",
                "bad.onnx",
                "--output-names",
                names,
                "--input-name",
                "x",
            ],
            2,
        );
        assert!(err.contains(want), "{names}: {err}");
    }
}

/// Early stopping stops on a plateau and keeps the best epoch; the learning rate of every step
/// is recorded and follows the schedule.
#[test]
fn early_stopping_and_schedules() {
    let k = Kiln::new();
    let (train, val, _) = synthetic_splits(&k, 83);
    let t = k.json(&[
        "train",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "200",
        "--lr",
        "0.01",
        "--patience",
        "3",
        "--schedule",
        "cosine",
        "--batch-size",
        "100",
    ]);
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(k.path("run/metrics.json")).expect("metrics"),
    )
    .expect("json");
    let history = m["history"].as_array().expect("history");
    let stopped = m["stopped_early"].as_u64().expect("stopped early") as usize;
    assert!(
        stopped < 200 && history.len() == stopped,
        "stopped after {stopped}, history {}",
        history.len()
    );
    let losses: Vec<f64> = history
        .iter()
        .map(|h| h["val_loss"].as_f64().expect("val_loss"))
        .collect();
    let argmin = losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i + 1)
        .expect("min");
    assert_eq!(
        t["best_epoch"].as_u64().expect("best") as usize,
        argmin,
        "the best epoch's weights are kept"
    );
    assert_eq!(
        stopped - argmin,
        3,
        "stops `patience` epochs after the best"
    );
    assert!(
        m["resources"]["peak_rss_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{:#}",
        m["resources"]
    );
    let jsonl = std::fs::read_to_string(k.path("run/metrics.jsonl")).expect("metrics.jsonl");
    assert_eq!(jsonl.lines().count(), stopped, "one record per epoch");
    let lrs: Vec<f64> = m["lr_per_step"]
        .as_array()
        .expect("lr")
        .iter()
        .map(|v| v.as_f64().expect("lr"))
        .collect();
    assert_eq!(
        lrs.len(),
        stopped * 10,
        "one entry per step (1000 rows / batch 100)"
    );
    assert!(
        (lrs[0] - 0.01).abs() < 1e-12 && lrs.windows(2).all(|w| w[1] <= w[0]),
        "cosine decays from the base rate"
    );
    let err = k.fails(
        &[
            "train",
            "--data",
            train.to_str().unwrap(),
            "--out",
            "x",
            "--early-stop-metric",
            "f1",
        ],
        2,
    );
    assert!(err.contains("not recorded"), "{err}");
}

/// Gradient accumulation: 4 micro-batches of 10 train like one batch of 40 (same seed, same
/// data order): the weights agree to float rounding.
#[test]
fn gradient_accumulation_matches_a_larger_batch() {
    let k = Kiln::new();
    let (train, _, _) = synthetic_splits(&k, 89);
    let common = [
        "--data",
        train.to_str().unwrap(),
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--seed",
        "5",
        "-q",
    ];
    let mut a = vec!["train", "--out", "big", "--batch-size", "40"];
    a.extend_from_slice(&common);
    k.ok(&a);
    let mut b = vec![
        "train",
        "--out",
        "acc",
        "--batch-size",
        "10",
        "--grad-accum",
        "4",
    ];
    b.extend_from_slice(&common);
    k.ok(&b);
    let wa = kiln::export::Weights::load(&k.path("big/model/weights.safetensors")).expect("a");
    let wb = kiln::export::Weights::load(&k.path("acc/model/weights.safetensors")).expect("b");
    let mut worst = 0f32;
    for (name, shape) in [
        ("layers.0.weight", vec![6, 16]),
        ("layers.0.bias", vec![16]),
        ("layers.1.weight", vec![16, 3]),
        ("layers.1.bias", vec![3]),
    ] {
        let (x, y) = (
            wa.get(name, &shape).expect("a"),
            wb.get(name, &shape).expect("b"),
        );
        worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(worst, f32::max);
    }
    assert!(
        worst <= 1e-5,
        "accumulated and large-batch weights differ by {worst}"
    );
    // And it is not trivially equal to plain batch-10 training.
    let mut c = vec!["train", "--out", "small", "--batch-size", "10"];
    c.extend_from_slice(&common);
    k.ok(&c);
    let wc = kiln::export::Weights::load(&k.path("small/model/weights.safetensors")).expect("c");
    let d = wa
        .get("layers.0.weight", &[6, 16])
        .expect("a")
        .iter()
        .zip(wc.get("layers.0.weight", &[6, 16]).expect("c"))
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(
        d > 1e-3,
        "batch 10 without accumulation should differ ({d})"
    );
}

/// Regression targets in the hundreds and in the millions export and verify: the tolerance
/// scales with the output (one f32 ulp at 256 is already 3e-5), and the report says which
/// tolerance was used. A corrupted weight is still refused at that scale, and nothing is written.
#[test]
fn regression_exports_verify_on_large_targets_and_corruption_is_refused() {
    for (scale, offset) in [(60.0f32, 150.0f32), (8.0e5, 3.0e6)] {
        let k = Kiln::new();
        let mut all = kiln::data::synthetic::make_regression(400, 5, 3, 0.1, 13);
        if let Some(kiln::core::Targets::Values(v)) = all.targets.as_mut() {
            v.iter_mut().for_each(|y| *y = *y * scale + offset);
        }
        let data = k.write_dataset("all.csv", &all);
        k.ok(&[
            "train",
            "--task",
            "regression",
            "--data",
            data.to_str().unwrap(),
            "--out",
            "run",
            "--epochs",
            "8",
            "-q",
        ]);
        let e = k.json(&["export", "--model", "run/model", "--output", "m.onnx"]);
        let v = &e["verification"];
        assert!(f(v, "/error_ratio") <= 1.0, "offset {offset}: {e:#}");
        assert_eq!(f(v, "/tolerance/atol"), f64::from(1e-5f32), "{e:#}");
        assert_eq!(f(v, "/tolerance/rtol"), f64::from(1e-5f32), "{e:#}");
        // Absolute tolerances alone would not do at this scale: the allowed difference grew.
        assert!(f(v, "/allowed_diff") > 1e-4, "{e:#}");

        // Corrupt one stored weight (and its recorded checksum, so that the integrity check
        // lets it through): the graph is built from it, burn's reference outputs are not.
        let path = k.path("run/model/weights.safetensors");
        let sha = |p: &std::path::Path| {
            let out = std::process::Command::new("sha256sum")
                .arg(p)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)[..64].to_string()
        };
        let old_sha = sha(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let at = 8 + header;
        let w = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) + 0.5;
        bytes[at..at + 4].copy_from_slice(&w.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let meta = k.path("run/model/metadata.json");
        let text = std::fs::read_to_string(&meta).unwrap();
        assert!(text.contains(&old_sha), "{text}");
        std::fs::write(&meta, text.replace(&old_sha, &sha(&path))).unwrap();
        let err = k.fails(
            &["export", "--model", "run/model", "--output", "bad.onnx"],
            1,
        );
        assert!(
            err.contains("verification failed") && err.contains("was not written"),
            "offset {offset}: {err}"
        );
        assert!(!k.path("bad.onnx").exists());
    }
}
