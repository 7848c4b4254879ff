//! The catalogue of bad inputs (docs/RELIABILITY.md): each one gets a clear error that names the
//! problem and the fix, the documented exit code, no panic, and leaves earlier outputs as they
//! were. Row-level problems in inference become error records, never a failed run. (A full
//! disk is `diskfull.rs`; a tampered bundle is `pipeline.rs`; a truncated checkpoint is
//! `resume.rs`.)

use crate::util::{Kiln, read_csv, trained_and_exported};

/// A copy of `m.onnx` with one change made by `edit` to its protobuf.
fn edited_model(k: &Kiln, name: &str, edit: impl FnOnce(&mut kiln::onnx::proto::ModelProto)) {
    let mut m = kiln::onnx::load(&k.path("m.onnx")).unwrap();
    edit(&mut m);
    std::fs::write(k.path(name), kiln::onnx::encode(&m)).unwrap();
}

#[test]
fn every_bad_input_gets_a_clear_error() {
    let k = Kiln::new();
    let (train, _, test) = trained_and_exported(&k, 59, "2");
    let header = std::fs::read_to_string(&test)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let n = header.split(',').count();
    let row = |v: &str| vec![v; n - 1].join(",") + ",0";
    k.write("empty.csv", "");
    k.write("header-only.csv", &format!("{header}\n"));
    k.write(
        "semicolons.csv",
        &format!(
            "{}\n{}\n",
            header.replace(',', ";"),
            row("1").replace(',', ";")
        ),
    );
    std::fs::write(
        k.path("latin1.csv"),
        [
            format!("{header}\n").as_bytes(),
            b"1,\xe9t\xe9",
            &row("1").as_bytes()[3..],
            b"\n",
        ]
        .concat(),
    )
    .unwrap();
    k.write(
        "text-cell.csv",
        &format!("{header}\n{}\n", row("1").replacen('1', "one", 1)),
    );
    k.write(
        "nan.csv",
        &format!("{header}\n{}\n", row("1").replacen('1', "NaN", 1)),
    );
    k.write(
        "inf.csv",
        &format!("{header}\n{}\n", row("1").replacen('1', "inf", 1)),
    );
    k.write("ragged.csv", &format!("{header}\n{}\n1,2\n", row("1")));
    k.write(
        "huge.csv",
        &format!("{header}\n{}\n{}9\n", row("1"), "1".repeat(2 << 20)),
    );
    k.write("narrow.csv", "f0,f1,label\n1,2,0\n");
    std::fs::create_dir_all(k.path("a-directory")).unwrap();
    let bytes = std::fs::read(k.path("m.onnx")).unwrap();
    std::fs::write(k.path("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    edited_model(&k, "unknown-op.onnx", |m| {
        let g = m.graph.as_mut().unwrap();
        g.node[0].op_type = Some("NotARealOp".into());
    });
    edited_model(&k, "opset-99.onnx", |m| {
        m.opset_import[0].version = Some(99);
    });
    let t = train.to_str().unwrap();
    let x = test.to_str().unwrap();
    // (args, exit code, fragments the message must contain)
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["train", "--data", "empty.csv", "--out", "r"],
            3,
            vec!["empty.csv", "empty"],
        ),
        (
            vec!["train", "--data", "header-only.csv", "--out", "r"],
            3,
            vec!["no data rows"],
        ),
        (
            vec!["train", "--data", "semicolons.csv", "--out", "r"],
            3,
            vec!["comma-separated", "';'"],
        ),
        (
            vec!["train", "--data", "latin1.csv", "--out", "r"],
            3,
            vec!["latin1.csv", "line 2", "UTF-8"],
        ),
        (
            vec!["train", "--data", "text-cell.csv", "--out", "r"],
            3,
            vec!["line 2", "\"one\"", "not a number"],
        ),
        (
            vec!["train", "--data", "nan.csv", "--out", "r"],
            3,
            vec!["line 2", "not a finite number"],
        ),
        (
            vec!["train", "--data", "inf.csv", "--out", "r"],
            3,
            vec!["line 2", "not a finite number"],
        ),
        (
            vec!["train", "--data", "ragged.csv", "--out", "r"],
            3,
            vec!["ragged.csv", "line 3"],
        ),
        (
            vec!["train", "--data", "huge.csv", "--out", "r"],
            3,
            vec!["line 3", "bytes a row may have"],
        ),
        (
            vec!["train", "--data", t, "--target", "species", "--out", "r"],
            3,
            vec!["no target column \"species\"", "--target"],
        ),
        (
            vec!["train", "--data", "a-directory", "--out", "r"],
            3,
            vec!["a-directory", "directory"],
        ),
        (
            vec!["infer", "--model", "truncated.onnx", "--data", x],
            1,
            vec!["truncated.onnx", "truncated"],
        ),
        (
            vec!["infer", "--model", "unknown-op.onnx", "--data", x],
            1,
            vec!["NotARealOp", "--engine ort"],
        ),
        (
            vec!["infer", "--model", "opset-99.onnx", "--data", x],
            1,
            vec!["opset 99", "older opset"],
        ),
        (
            vec!["optimize", "--model", "opset-99.onnx", "--output", "o.onnx"],
            1,
            vec!["opset 99"],
        ),
        (
            vec!["infer", "--model", "m.onnx", "--data", "narrow.csv"],
            3,
            vec!["expects", "features", "narrow.csv"],
        ),
        (
            vec!["infer", "--model", "a-directory", "--data", x],
            3,
            vec!["a-directory", "directory"],
        ),
        (
            vec!["infer", "--model", "m.onnx", "--data", "a-directory"],
            3,
            vec!["a-directory", "directory"],
        ),
        (
            vec![
                "infer",
                "--model",
                "m.onnx",
                "--data",
                x,
                "--output",
                "m.onnx/p.csv",
            ],
            1,
            vec!["m.onnx"],
        ),
        (
            vec![
                "export",
                "--model",
                "run/model",
                "--output",
                "a-directory",
                "--force",
            ],
            1,
            vec!["a-directory", "directory"],
        ),
    ];
    let model_before = std::fs::read(k.path("m.onnx")).unwrap();
    for (args, code, wants) in &cases {
        let err = k.fails(args, *code);
        for w in wants {
            assert!(
                err.contains(w),
                "kiln {}: the error should mention {w:?}:\n{err}",
                args.join(" ")
            );
        }
        assert!(!err.contains("RUST_BACKTRACE"), "{err}");
    }
    assert_eq!(
        std::fs::read(k.path("m.onnx")).unwrap(),
        model_before,
        "inputs untouched"
    );
    assert!(!k.path("o.onnx").exists());

    // Row-level problems in inference are error records; the run succeeds.
    k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        "huge.csv",
        "--output",
        "huge-p.csv",
    ]);
    let (_, rows) = read_csv(&k.path("huge-p.csv"));
    assert_eq!(rows.len(), 2, "one output row per input row");
    assert!(rows[0].last().unwrap().is_empty());
    assert!(
        rows[1].last().unwrap().contains("bytes a row may have"),
        "{:?}",
        rows[1]
    );
    k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        "nan.csv",
        "--output",
        "nan-p.csv",
    ]);
    let (_, rows) = read_csv(&k.path("nan-p.csv"));
    assert!(
        rows[0].last().unwrap().contains("not a finite number"),
        "{rows:?}"
    );
    // … unless the user asks for NaN to reach the model.
    k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        "nan.csv",
        "--output",
        "nan-pass.csv",
        "--non-finite",
        "pass",
    ]);
    // A label never seen in training: predicted, counted as wrong, and warned about.
    let unseen = std::fs::read_to_string(&test)
        .unwrap()
        .replace(",0\n", ",a-new-class\n");
    k.write("unseen.csv", &unseen);
    let out = k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        "unseen.csv",
        "--output",
        "u.csv",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:")
            && stderr.contains("a-new-class")
            && stderr.contains("never trained on"),
        "{stderr}"
    );
}

#[test]
fn a_closed_pipe_is_not_a_crash() {
    let k = Kiln::new();
    let (_, _, test) = trained_and_exported(&k, 60, "2");
    // `kiln infer … | head -1`: the reader goes away after one line.
    let cmd = format!(
        "{} infer --model m.onnx --data {} | head -n 1",
        env!("CARGO_BIN_EXE_kiln"),
        test.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &cmd])
        .current_dir(k.path(""))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// Static quantization with each calibration method keeps accuracy on real rows (entropy is
/// the KL-divergence threshold); an unknown method is a usage error naming the choices.
#[test]
fn every_calibration_method_passes_the_accuracy_gate() {
    let k = Kiln::new();
    let (train, val, _) = trained_and_exported(&k, 62, "4");
    for method in ["minmax", "percentile", "entropy"] {
        let out = format!("{method}.onnx");
        let v = k.json(&[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            &out,
            "--quantization",
            "static",
            "--calibration-method",
            method,
            "--calibration-data",
            train.to_str().unwrap(),
            "--validate-data",
            val.to_str().unwrap(),
        ]);
        let ratio = v["accuracy_ratio"].as_f64().unwrap();
        assert!(ratio >= 0.99, "{method}: accuracy ratio {ratio}");
    }
    // Symmetric int8 activations and per-tensor weights: still within the gate, and the
    // graph says what it holds; ONNX Runtime runs it too.
    let v = k.json(&[
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "sym.onnx",
        "--quantization",
        "static",
        "--symmetric-activations",
        "--per-tensor-weights",
        "--calibration-data",
        train.to_str().unwrap(),
        "--validate-data",
        val.to_str().unwrap(),
    ]);
    assert!(v["accuracy_ratio"].as_f64().unwrap() >= 0.99, "{v:#}");
    let details = v["report"]["passes"].to_string();
    assert!(
        details.contains("symmetric int8") && details.contains("per-tensor"),
        "{details}"
    );
    let m = kiln::onnx::load(&k.path("sym.onnx")).unwrap();
    let g = m.graph.unwrap();
    let zp = g
        .initializer
        .iter()
        .find(|t| t.name().ends_with(".act_zero_point"))
        .unwrap();
    assert_eq!(zp.data_type(), kiln::onnx::proto::data_type::INT8);
    let ws = g
        .initializer
        .iter()
        .find(|t| t.name().ends_with(".weight_scale"))
        .unwrap();
    assert!(ws.dims.is_empty(), "one scale per matrix");
    {
        let lib = crate::conformance::ort_lib().to_string_lossy().to_string();
        k.ok(&[
            "infer",
            "--model",
            "sym.onnx",
            "--data",
            val.to_str().unwrap(),
            "--engine",
            "ort",
            "--ort-lib",
            &lib,
            "--output",
            "sym-ort.csv",
        ]);
    }
    // Static-only options without static quantization are refused, not ignored.
    let err = k.fails(
        &[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            "x.onnx",
            "--quantization",
            "dynamic",
            "--symmetric-activations",
        ],
        2,
    );
    assert!(err.contains("--quantization static"), "{err}");
    assert!(!k.path("x.onnx").exists());
    let err = k.fails(
        &[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            "x.onnx",
            "--quantization",
            "static",
            "--calibration-method",
            "magic",
            "--calibration-data",
            train.to_str().unwrap(),
        ],
        2,
    );
    assert!(err.contains("minmax, percentile or entropy"), "{err}");
}
