//! Bad input gets a clear error naming the problem and the fix, the right exit code, no panic,
//! and leaves earlier results intact.

use crate::util::{Kiln, synthetic_splits, trained_and_exported};

#[test]
fn bad_inputs_get_clear_errors() {
    let k = Kiln::new();
    let (train, val, _) = synthetic_splits(&k, 1);
    let train = train.to_str().unwrap().to_string();
    let val = val.to_str().unwrap().to_string();
    k.write("nolabel.csv", "a,b\n1,2\n3,4\n");
    k.write("badcell.csv", "a,b,label\n1,2,x\n3,zz,y\n");
    k.write("oneclass.csv", "a,b,label\n1,2,x\n3,4,x\n");
    k.write("bad.toml", "epochs = 3\n[train]\nepoch = 4\n");
    k.write("garbage.onnx", "definitely not protobuf");
    // (args, exit code, fragments the error must contain)
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["train", "--data", "missing.csv", "--out", "r"],
            3,
            vec!["missing.csv"],
        ),
        (
            vec!["train", "--data", "nolabel.csv", "--out", "r"],
            3,
            vec!["no target column \"label\"", "--target"],
        ),
        (
            vec!["train", "--data", "badcell.csv", "--out", "r"],
            3,
            vec!["badcell.csv", "row 1", "\"b\"", "not a number"],
        ),
        (
            vec!["train", "--data", "oneclass.csv", "--out", "r"],
            3,
            vec!["at least 2"],
        ),
        (vec!["train", "--out", "r"], 2, vec!["--data"]),
        (
            vec!["train", "--data", &train, "--out", "r", "--lr=0"],
            2,
            vec!["lr must be a positive number"],
        ),
        (
            vec!["train", "--config", "bad.toml", "--out", "r"],
            2,
            vec!["bad.toml", "epoch"],
        ),
        (
            vec!["export", "--model", "nowhere", "--output", "x.onnx"],
            1,
            vec!["nowhere"],
        ),
        (
            vec!["infer", "--model", "garbage.onnx", "--data", &val],
            1,
            vec!["garbage.onnx", "not a valid ONNX model"],
        ),
        (
            vec![
                "optimize",
                "--model",
                "garbage.onnx",
                "--output",
                "y.onnx",
                "--quantization",
                "static",
            ],
            2,
            vec!["--calibration-data"],
        ),
        (
            vec![
                "optimize",
                "--model",
                "garbage.onnx",
                "--output",
                "y.onnx",
                "--quantization",
                "fancy",
            ],
            2,
            vec!["fancy"],
        ),
        (vec!["frobnicate"], 2, vec!["frobnicate"]),
    ];
    for (args, code, wants) in cases {
        let err = k.fails(&args, code);
        for w in wants {
            assert!(
                err.contains(w),
                "kiln {}: error should mention {w:?}:\n{err}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn existing_outputs_are_kept_without_force() {
    let k = Kiln::new();
    let (train, _, test) = trained_and_exported(&k, 2, "2");
    let before = std::fs::read(k.path("m.onnx")).expect("model");
    let err = k.fails(&["export", "--model", "run/model", "--output", "m.onnx"], 2);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(k.path("m.onnx")).expect("model"),
        before,
        "the old file must be intact"
    );
    // Weights that do not belong to the artifact's metadata are refused, naming the file.
    let good = std::fs::read(k.path("run/model/weights.safetensors")).expect("weights");
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    std::fs::write(k.path("run/model/weights.safetensors"), &bad).expect("tamper");
    let err = k.fails(&["export", "--model", "run/model", "--output", "t.onnx"], 1);
    assert!(
        err.contains("weights.safetensors") && err.contains("does not match"),
        "{err}"
    );
    assert!(!k.path("t.onnx").exists());
    std::fs::write(k.path("run/model/weights.safetensors"), &good).expect("restore");
    // Re-training with --force replaces the model directory whole: no file of the old run stays.
    std::fs::write(k.path("run/model/stray.txt"), b"old run").expect("stray");
    k.ok(&[
        "train",
        "--data",
        train.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "1",
        "--force",
        "-q",
    ]);
    assert!(
        !k.path("run/model/stray.txt").exists() && k.path("run/model/kiln-model.json").exists()
    );
    let err = k.fails(
        &[
            "optimize", "--model", "m.onnx", "--output", "m.onnx", "--force",
        ],
        2,
    );
    assert!(err.contains("never modifies its input"), "{err}");
    assert_eq!(std::fs::read(k.path("m.onnx")).expect("model"), before);
    k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "p.csv",
        "-q",
    ]);
    let err = k.fails(
        &[
            "infer",
            "--model",
            "m.onnx",
            "--data",
            test.to_str().unwrap(),
            "--output",
            "p.csv",
        ],
        2,
    );
    assert!(err.contains("--force"), "{err}");
    let err = k.fails(
        &[
            "train",
            "--data",
            train.to_str().unwrap(),
            "--out",
            "run",
            "--epochs",
            "1",
        ],
        2,
    );
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn wrong_feature_count_is_a_data_error() {
    let k = Kiln::new();
    let (_, _, _) = trained_and_exported(&k, 4, "1");
    k.write("narrow.csv", "a,b,label\n1,2,0\n");
    let err = k.fails(&["infer", "--model", "m.onnx", "--data", "narrow.csv"], 3);
    assert!(
        err.contains("expects 6 features") && err.contains("2 feature columns"),
        "{err}"
    );
}

#[test]
fn no_arguments_prints_help() {
    let k = Kiln::new();
    let out = k.run(&[]);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pipeline") && text.contains("Usage"),
        "{text}"
    );
}

#[test]
fn accuracy_gate_exit_code_and_no_output() {
    let k = Kiln::new();
    // A two-feature model whose int8 weights flip a near-tie (see kiln-optimize's tests).
    let mut g = kiln::onnx::GraphBuilder::new("near_tie");
    let n = || kiln::onnx::Dim::Symbol("N".into());
    g.input(
        "x",
        kiln::onnx::proto::data_type::FLOAT,
        &[n(), kiln::onnx::Dim::Fixed(2)],
    );
    let w = g.constant_f32("w", &[2, 2], &[1.0, 0.0, 0.3, 0.299]);
    let y = g.node("MatMul", &["x", &w], &[]);
    g.node_named(
        "Softmax",
        &[&y],
        &["probabilities"],
        &[kiln::onnx::attr_int("axis", 1)],
    );
    g.output(
        "probabilities",
        kiln::onnx::proto::data_type::FLOAT,
        &[n(), kiln::onnx::Dim::Fixed(2)],
    );
    kiln::onnx::save(&g.into_model(17), &k.path("m.onnx")).expect("save");
    k.write("val.csv", "a,b,label\n0,1,0\n");
    let err = k.fails(
        &[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            "q.onnx",
            "--quantization",
            "dynamic",
            // The asymmetric u8 weights of the integer form are what flip this near-tie.
            "--onnx-form",
            "integer",
            "--validate-data",
            "val.csv",
        ],
        4,
    );
    assert!(err.contains("accuracy gate"), "{err}");
    assert!(!k.path("q.onnx").exists());
}

#[test]
fn doctor_and_completions() {
    let k = Kiln::new();
    let d = k.json(&["doctor"]);
    let checks = d["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "cpu",
            "engine tract",
            "engine ort",
            "gpu",
            "python cross-check tools"
        ]
    );
    assert_eq!(checks[0]["ok"], true);
    for c in checks.iter().filter(|c| c["ok"] == false) {
        assert!(
            c["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "a missing part says how to get it: {c}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = k.ok(&["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("kiln") && text.contains("pipeline"),
            "{shell}: {text}"
        );
    }
    let err = k.fails(&["completions", "tcsh"], 2);
    assert!(err.contains("tcsh"), "{err}");
}

/// Settings come from defaults < config file < KILN_* environment < flags.
#[test]
fn configuration_precedence() {
    let k = Kiln::new();
    let (train, _, _) = synthetic_splits(&k, 73);
    k.write(
        "kiln.toml",
        &format!(
            "data = {:?}\n[train]\nepochs = 3\nhidden = [8]\n",
            train.to_str().unwrap()
        ),
    );
    let epochs = |out: &str, args: &[&str], env: &[(&str, &str)]| -> usize {
        let mut a = vec![
            "train",
            "--config",
            "kiln.toml",
            "--out",
            out,
            "--json",
            "-q",
        ];
        a.extend_from_slice(args);
        let o = k.run_env(&a, env);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v["epochs"].as_u64().expect("epochs") as usize
    };
    assert_eq!(
        epochs("a", &[], &[]),
        3,
        "the file overrides the default (20)"
    );
    assert_eq!(
        epochs("b", &[], &[("KILN_EPOCHS", "4")]),
        4,
        "the environment overrides the file"
    );
    assert_eq!(
        epochs("c", &["--epochs", "5"], &[("KILN_EPOCHS", "4")]),
        5,
        "a flag overrides the environment"
    );
    // The effective settings are saved with the run.
    let saved = std::fs::read_to_string(k.path("c/config.toml")).expect("config.toml");
    assert!(
        saved.contains("epochs = 5") && saved.contains("hidden = [8]"),
        "{saved}"
    );
    // A relative path in the config file resolves against the file's folder.
    std::fs::create_dir_all(k.path("conf")).expect("dir");
    std::fs::copy(&train, k.path("conf/train.csv")).expect("copy");
    k.write(
        "conf/kiln.toml",
        "data = \"train.csv\"\n[train]\nepochs = 1\n",
    );
    k.ok(&["train", "--config", "conf/kiln.toml", "--out", "d", "-q"]);
    // A misspelt key names the closest valid one.
    k.write("typo.toml", "[train]\nepoch = 4\n");
    let err = k.fails(&["train", "--config", "typo.toml", "--out", "e"], 2);
    assert!(err.contains("did you mean `epochs`"), "{err}");
}

/// Every command's help has a description, its usage line and examples; defaults are shown.
#[test]
fn every_command_has_help_with_examples() {
    let k = Kiln::new();
    for cmd in [
        "train",
        "export",
        "optimize",
        "infer",
        "pipeline",
        "compare",
        "profile",
        "bench",
        "package",
        "inspect",
        "doctor",
        "completions",
    ] {
        let out = k.ok(&[cmd, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Usage: kiln {cmd}")),
            "{cmd}: {text}"
        );
        assert!(
            text.contains("Examples:"),
            "{cmd} --help has no examples:\n{text}"
        );
    }
    let out = k.ok(&["export", "--help"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[default: 17]"),
        "defaults are shown"
    );
}
