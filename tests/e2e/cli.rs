//! The CLI as users meet it: output formats, colour, quiet/verbose and non-TTY logs, run
//! directories with their plots and records, `kiln runs`, `kiln init`.

use crate::util::{Kiln, f, synthetic_splits, trained_and_exported};
use std::path::Path;

/// Parses an SVG file as XML and checks its root element.
fn assert_svg(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!text.is_empty(), "{} is empty", path.display());
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut root = None;
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                elements += 1;
                if root.is_none() {
                    root = Some(e.local_name().into_inner().to_string());
                }
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("{} is not well-formed XML: {e}", path.display()),
        }
    }
    assert_eq!(root.as_deref(), Some("svg"), "{}", path.display());
    assert!(
        elements > 10,
        "{} has only {elements} elements",
        path.display()
    );
}

/// Decodes a PNG file and checks that it is a non-blank image.
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("decode PNG");
    assert!(
        info.width >= 400 && info.height >= 300,
        "{}",
        path.display()
    );
    assert!(buf.iter().any(|&b| b < 200), "{} is blank", path.display());
}

#[test]
fn result_tables_print_as_csv_markdown_and_json() {
    let k = Kiln::new();
    let (_, _, test) = trained_and_exported(&k, 51, "3");
    let bench = [
        "bench",
        "m.onnx",
        "--engines",
        "tract",
        "--batch-sizes",
        "1,8",
        "--seconds",
        "0.05",
        "-q",
    ];
    // CSV: one table, parseable, one row per configuration.
    let out = k.ok(&[&bench[..], &["--format", "csv"]].concat());
    let mut r = csv::Reader::from_reader(out.stdout.as_slice());
    let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers[..5],
        ["model", "engine", "threads", "batch", "workers"]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[1][0], "f32");
    assert!(rows[1][5].parse::<f64>().unwrap() > 0.0, "rows/s");
    assert_eq!(
        &rows[1][10], "1.00x",
        "the best of one configuration is itself"
    );
    // Markdown: a heading and a table.
    let out = k.ok(&[&bench[..], &["--format", "markdown"]].concat());
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.starts_with("### bench\n\n| model | engine |"), "{md}");
    // JSON: one object on stdout, logs on stderr, resource use included.
    let v = k.json(&bench);
    assert_eq!(v["command"], "bench");
    assert!(
        v["resources"]["peak_rss_bytes"].as_f64().unwrap() > 1e6,
        "{v:#}"
    );
    assert!(v["resources"]["cpu_seconds"].as_f64().is_some());
    // Hardware utilisation per configuration: cores kept busy while measuring.
    let busy = v["report"]["results"][0]["cores_busy"].as_f64().unwrap();
    assert!(busy > 0.0 && busy < 64.0, "{v:#}");
    // Several tables in CSV: titled sections (per-class metrics and the confusion matrix).
    let out = k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "p.csv",
        "--format",
        "csv",
    ]);
    // Predictions go to the file; the tables to stderr would be wrong, they are on stdout.
    let text = String::from_utf8(out.stdout).unwrap();
    let titles: Vec<&str> = text.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(
        titles,
        ["# infer", "# infer: per class", "# infer: confusion matrix"],
        "{text}"
    );
    let confusion = text.split("# infer: confusion matrix\n").nth(1).unwrap();
    let mut r = csv::Reader::from_reader(confusion.as_bytes());
    let total: u64 = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            rec.iter()
                .skip(1)
                .map(|c| c.parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(total, 100, "every test row is in the confusion matrix");
    // Commands without a dedicated table print their result as key/value rows.
    let out = k.ok(&["inspect", "m.onnx", "--format", "csv"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("key,value\n") && text.contains("\nnodes,"),
        "{text}"
    );
}

#[test]
fn colour_follows_the_flag_and_the_environment() {
    let k = Kiln::new();
    let err_of = |args: &[&str], env: &[(&str, &str)]| {
        let out = k.run_env(args, env);
        assert_eq!(
            out.status.code(),
            Some(3),
            "a missing input file is an input error"
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let missing = ["infer", "--model", "missing.onnx", "--data", "x.csv"];
    let clean: &[(&str, &str)] = &[("NO_COLOR", ""), ("CLICOLOR_FORCE", "")];
    // A pipe gets no colour by default.
    let plain = err_of(&missing, clean);
    assert!(
        plain.starts_with("error: ") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    let forced = err_of(&[&missing[..], &["--color", "always"]].concat(), clean);
    assert!(
        forced.contains("\x1b[") && forced.contains("error:"),
        "{forced:?}"
    );
    let never = err_of(
        &[&missing[..], &["--color", "never"]].concat(),
        &[("CLICOLOR_FORCE", "1")],
    );
    assert!(!never.contains('\x1b'), "{never:?}");
    let env_forced = err_of(&missing, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "")]);
    assert!(env_forced.contains("\x1b["), "{env_forced:?}");
    let no_color = err_of(&missing, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(
        !no_color.contains('\x1b'),
        "NO_COLOR wins over CLICOLOR_FORCE"
    );
    // clap's own usage errors follow the same choice.
    let usage = k.run_env(&["train", "--bogus", "--color", "always"], clean);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains('\x1b'));
    let usage = k.run_env(&["train", "--bogus"], clean);
    assert!(!String::from_utf8_lossy(&usage.stderr).contains('\x1b'));
}

#[test]
fn quiet_verbose_and_rust_log_choose_what_is_logged() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 52);
    let train_args = |out: &str| {
        vec![
            "train".to_string(),
            "--data".into(),
            train.to_str().unwrap().into(),
            "--val-data".into(),
            val.to_str().unwrap().into(),
            "--epochs".into(),
            "2".into(),
            "--out".into(),
            out.into(),
        ]
    };
    let run = |args: Vec<String>, env: &[(&str, &str)]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = k.run_env(&a, env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // Default: one plain line per stage and epoch, no control codes off a terminal.
    let (stdout, stderr) = run(train_args("a"), &[]);
    assert!(
        stderr.contains("epoch   1/2") && stderr.contains("[train] finished"),
        "{stderr}"
    );
    assert!(stderr.contains("resources: wall"), "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    assert!(stdout.contains("trained model:"), "{stdout}");
    // Quiet: only the result.
    let mut q = train_args("b");
    q.push("-q".into());
    let (stdout, stderr) = run(q, &[]);
    assert!(stderr.is_empty(), "quiet printed {stderr:?}");
    assert!(stdout.contains("trained model:"));
    // RUST_LOG replaces the filter.
    let (_, stderr) = run(train_args("c"), &[("RUST_LOG", "error")]);
    assert!(stderr.is_empty(), "RUST_LOG=error printed {stderr:?}");
    // Verbose: per-batch detail from inference.
    k.ok(&["export", "--model", "a/model", "--output", "m.onnx", "-q"]);
    let infer = |extra: &str| {
        let mut v = vec![
            "infer".to_string(),
            "--model".into(),
            "m.onnx".into(),
            "--data".into(),
            test.to_str().unwrap().into(),
            "--batch-size".into(),
            "4".into(),
            "--output".into(),
            "p.csv".into(),
            "--force".into(),
        ];
        if !extra.is_empty() {
            v.push(extra.into());
        }
        v
    };
    let (_, normal) = run(infer(""), &[]);
    let (_, verbose) = run(infer("-v"), &[]);
    let batch_lines = |s: &str| {
        s.lines()
            .filter(|l| l.contains("[infer]") && l.contains(" rows"))
            .count()
    };
    assert_eq!(batch_lines(&normal), 0, "{normal}");
    assert!(
        batch_lines(&verbose) >= 2,
        "-v adds per-batch lines:\n{verbose}"
    );
    assert!(verbose.contains("debug: "), "{verbose}");
}

#[test]
fn runs_get_timestamped_directories_that_list_and_compare() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 53);
    let go = |lr: &str| {
        k.json(&[
            "train",
            "--data",
            train.to_str().unwrap(),
            "--val-data",
            val.to_str().unwrap(),
            "--test-data",
            test.to_str().unwrap(),
            "--epochs",
            "3",
            "--lr",
            lr,
            "--name",
            "synth",
            "--runs-dir",
            "myruns",
        ])
    };
    let a = go("0.01");
    // Two runs in the same second still need distinct directories.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = go("0.002");
    let dir_a = k.path(a["run_dir"].as_str().unwrap());
    let dir_b = k.path(b["run_dir"].as_str().unwrap());
    assert_ne!(dir_a, dir_b);
    let name = dir_a.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.len() == "20261126-101500-synth".len() && name.ends_with("-synth"),
        "{name}"
    );
    for f in [
        "config.toml",
        "metrics.json",
        "summary.json",
        "run.json",
        "kiln.log",
    ] {
        assert!(
            dir_a.join(f).is_file(),
            "{f} missing from {}",
            dir_a.display()
        );
    }
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir_a.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "ok");
    assert_eq!(record["exit_code"], 0);
    assert!(
        record["metrics"]["test_accuracy"].as_f64().unwrap() > 0.5,
        "{record:#}"
    );
    assert!(record["resources"]["peak_rss_bytes"].as_f64().unwrap() > 0.0);
    let log = std::fs::read_to_string(dir_a.join("kiln.log")).unwrap();
    assert!(log.contains("epoch   3/3") && log.contains("INFO"), "{log}");
    // Plots: training curves and the test confusion matrix, as SVG and PNG.
    for stem in ["training", "confusion"] {
        assert_svg(&dir_a.join(format!("plots/{stem}.svg")));
        assert_png(&dir_a.join(format!("plots/{stem}.png")));
    }
    assert_eq!(a["evaluation_set"], "test");
    let conf = a["evaluation"]["confusion"].as_array().unwrap();
    let total: u64 = conf
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 100);

    // A failed run is recorded as failed, with its error.
    std::fs::write(k.path("bad.csv"), "a,b,label\n1,x,0\n").unwrap();
    let err = k.fails(
        &[
            "train",
            "--data",
            "bad.csv",
            "--name",
            "broken",
            "--runs-dir",
            "myruns",
        ],
        3,
    );
    assert!(err.contains("bad.csv"), "{err}");
    let list = k.json(&["runs", "list", "--runs-dir", "myruns"]);
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{list:#}");
    let statuses: Vec<&str> = runs
        .iter()
        .map(|r| r["record"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "ok", "ok"], "newest first");
    assert!(
        runs[0]["record"]["error"]
            .as_str()
            .unwrap()
            .contains("bad.csv")
    );
    assert_eq!(runs[0]["record"]["exit_code"], 3);

    // Human list and comparison by name.
    let out = k.ok(&["runs", "list", "--runs-dir", "myruns"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().starts_with("run "), "{text}");
    assert_eq!(text.lines().count(), 4);
    let name_b = dir_b.file_name().unwrap().to_str().unwrap().to_string();
    let cmp = k.json(&["runs", "compare", &name, &name_b, "--runs-dir", "myruns"]);
    let config = cmp["comparison"]["config"].as_array().unwrap();
    let keys: Vec<&str> = config.iter().map(|c| c[0].as_str().unwrap()).collect();
    // The run directories differ too (`out`), the data files do not.
    assert_eq!(
        keys,
        ["out", "train.lr"],
        "only the differing keys: {cmp:#}"
    );
    assert_eq!(config[1][1][0], "0.01");
    let metrics = cmp["comparison"]["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m[0] == "val_accuracy"));
    let md = k.ok(&[
        "runs",
        "compare",
        &name,
        &name_b,
        "--runs-dir",
        "myruns",
        "--all",
        "--format",
        "markdown",
    ]);
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(
        md.contains("### config\n") && md.contains("### timings\n"),
        "{md}"
    );
    assert!(md.contains("| train.epochs | 3 | 3 |"), "{md}");
    // A name that is not a run is a usage error naming it.
    let err = k.fails(
        &["runs", "compare", &name, "nope", "--runs-dir", "myruns"],
        2,
    );
    assert!(
        err.contains("nope") && err.contains("kiln runs list"),
        "{err}"
    );
}

#[test]
fn pipeline_writes_a_self_contained_report() {
    let k = Kiln::new();
    let v = k.json(&["pipeline", "--demo", "--out", "demo", "--epochs", "4", "-q"]);
    let report = std::fs::read_to_string(k.path("demo/report.html")).unwrap();
    assert!(report.starts_with("<!DOCTYPE html>"));
    assert!(
        report.matches("<svg").count() >= 5,
        "every plot is embedded"
    );
    assert!(
        !report.contains("<script") && !report.contains(" src="),
        "self-contained"
    );
    assert!(report.contains("candidates (batch 64)") && report.contains("confusion matrix"));
    for stem in [
        "training",
        "confusion",
        "confusion_test",
        "accuracy_vs_speed",
        "latency",
    ] {
        assert_svg(&k.path(&format!("demo/plots/{stem}.svg")));
        assert_png(&k.path(&format!("demo/plots/{stem}.png")));
    }
    let candidates = v["candidates"].as_array().unwrap();
    assert!(candidates.len() >= 2, "{v:#}");
    for c in candidates {
        assert!(c["rows_per_second"].as_f64().unwrap() > 0.0);
        assert!(c["accuracy"].as_f64().unwrap() > 0.5);
    }
}

#[test]
fn bench_writes_latency_histograms() {
    let k = Kiln::new();
    trained_and_exported(&k, 54, "2");
    let v = k.json(&[
        "bench",
        "m.onnx",
        "--engines",
        "tract",
        "--batch-sizes",
        "1,4",
        "--seconds",
        "0.05",
        "--plots",
        "plots",
        "-q",
    ]);
    assert_eq!(v["plots"].as_array().unwrap().len(), 2);
    for b in ["1", "4"] {
        let stem = format!("plots/latency-tract-b{b}-w1");
        assert_svg(&k.path(&format!("{stem}.svg")));
        assert_png(&k.path(&format!("{stem}.png")));
    }
    let hist = v["report"]["results"][0]["latency"]["histogram"]
        .as_array()
        .unwrap();
    let count: u64 = hist.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(
        count,
        v["report"]["results"][0]["latency"]["count"]
            .as_u64()
            .unwrap()
    );
}

#[test]
fn init_writes_a_config_and_never_waits_without_a_terminal() {
    let k = Kiln::new();
    let (train, _, _) = synthetic_splits(&k, 55);
    // No terminal (stdin is /dev/null): a missing answer is an error at once.
    let err = k.fails(&["init"], 2);
    assert!(err.contains("missing --data"), "{err}");
    let err = k.fails(&["init", "--data", train.to_str().unwrap()], 2);
    assert!(
        err.contains("missing --target") && err.contains("`label`"),
        "{err}"
    );
    let err = k.fails(&["init", "--data", "nope.csv", "--yes"], 3);
    assert!(err.contains("nope.csv"), "{err}");
    // --yes accepts the detected target and task.
    let v = k.json(&["init", "--data", train.to_str().unwrap(), "--yes"]);
    assert_eq!(
        (v["target"].as_str(), v["task"].as_str()),
        (Some("label"), Some("classification"))
    );
    let text = std::fs::read_to_string(k.path("kiln.toml")).unwrap();
    assert!(
        text.contains("data = \"train.csv\""),
        "relative to the config: {text}"
    );
    // The written config trains.
    let t = k.json(&[
        "train",
        "--config",
        "kiln.toml",
        "--epochs",
        "2",
        "--out",
        "r",
        "-q",
    ]);
    assert_eq!(t["epochs"], 2);
    // An existing config is kept without --force.
    let err = k.fails(&["init", "--data", train.to_str().unwrap(), "--yes"], 2);
    assert!(err.contains("--force"), "{err}");
    // Regression detected from a real-valued target; flags override detection.
    k.write("reg.csv", "a,b,price\n1,2,3.25\n2,3,4.5\n3,1,2.75\n");
    let v = k.json(&["init", "--data", "reg.csv", "--yes", "--output", "reg.toml"]);
    assert_eq!(
        (v["target"].as_str(), v["task"].as_str()),
        (Some("price"), Some("regression"))
    );
    let v = k.json(&[
        "init",
        "--data",
        "reg.csv",
        "--target",
        "a",
        "--task",
        "classification",
        "--output",
        "c.toml",
    ]);
    assert_eq!(v["target"], "a");
}

/// Runs `kiln ARGS` on a pseudo-terminal (util-linux `script`), typing `keys` one step at a
/// time, and returns what the terminal showed.
fn on_terminal(k: &Kiln, args: &str, keys: &[&str]) -> String {
    use std::io::Write;
    let bin = env!("CARGO_BIN_EXE_kiln");
    let mut child = std::process::Command::new("script")
        .args(["-qec", &format!("{bin} {args}"), "/dev/null"])
        .current_dir(k.path(""))
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs commands on a pseudo-terminal");
    let mut stdin = child.stdin.take().expect("stdin");
    for key in keys {
        std::thread::sleep(std::time::Duration::from_millis(700));
        stdin.write_all(key.as_bytes()).expect("type");
        stdin.flush().expect("flush");
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    drop(stdin);
    let out = child.wait_with_output().expect("script");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kiln {args} on a terminal failed:\n{text}"
    );
    text
}

#[test]
fn on_a_terminal_init_asks_and_training_shows_a_progress_bar() {
    let k = Kiln::new();
    synthetic_splits(&k, 56);
    // Type the data file, move up from the detected `label` to the last feature column, accept
    // the task detected for it (regression: real values), and give no validation file.
    let screen = on_terminal(&k, "init", &["train.csv\r", "\x1b[A\r", "\r", "\r"]);
    assert!(screen.contains("target column"), "{screen}");
    let text = std::fs::read_to_string(k.path("kiln.toml")).expect("kiln.toml written");
    assert!(text.contains("target = \"f5\""), "{text}");
    assert!(text.contains("task = \"regression\""), "{text}");
    // The same training run shows a bar with an ETA on a terminal, plain lines off it.
    let screen = on_terminal(
        &k,
        "train --data train.csv --epochs 3 --batch-size 8 --out tty --color never",
        &[],
    );
    assert!(
        screen.contains("[train] [") && screen.contains("ETA"),
        "{screen}"
    );
    assert!(
        screen.contains("epoch 2/3 loss"),
        "the bar shows the loss: {screen}"
    );
}

/// `kiln optimize --engine auto` measures every form × engine × threads, keeps the fastest
/// candidate that passes the accuracy gate, records the choice in the model, and infer/serve
/// reuse it; an unavailable provider is loud, or an error with --strict-provider.
#[test]
fn optimize_engine_auto_chooses_records_and_is_reused() {
    let k = Kiln::new();
    let (train, val, test) = trained_and_exported(&k, 57, "6");
    let lib = crate::conformance::ort_lib();
    let mut args = vec![
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "m.auto.onnx",
        "--engine",
        "auto",
        "--validate-data",
        val.to_str().unwrap(),
        "--calibration-data",
        train.to_str().unwrap(),
        "--plots",
        "plots",
        "--provider",
        "cpu",
    ];
    let lib_str = lib.to_string_lossy().to_string();
    args.extend(["--ort-lib", lib_str.as_str()]);
    let v = k.json(&args);
    let cands = v["auto"]["candidates"].as_array().unwrap();
    let forms: std::collections::BTreeSet<&str> = cands
        .iter()
        .map(|c| c["quantization"].as_str().unwrap())
        .collect();
    assert_eq!(
        forms.into_iter().collect::<Vec<_>>(),
        ["dynamic", "none", "static"],
        "{v:#}"
    );
    // kiln's own int8 forms, dynamic and static, are candidates too (or were refused by the
    // gate, and say so).
    for (q, name) in [("dynamic", "dynamic-kiln"), ("static", "static-kiln")] {
        let measured = cands
            .iter()
            .any(|c| c["quantization"] == q && c["form"] == "kiln");
        let refused = v["auto"]["skipped"].to_string().contains(name);
        assert!(measured || refused, "{name}: {v:#}");
    }
    let engines: std::collections::BTreeSet<&str> = cands
        .iter()
        .map(|c| c["engine"].as_str().unwrap())
        .collect();
    assert!(
        engines.contains("ort") && engines.contains("tract"),
        "{v:#}"
    );
    // The chosen one follows `choose`'s rule: of the candidates that pass the gate and are
    // within the tie margin of the fastest, the fewest threads, then the highest rate.
    let chosen = &cands[v["auto"]["chosen"].as_u64().unwrap() as usize];
    assert_eq!(chosen["passes_gate"], true);
    let rate = |c: &serde_json::Value| c["rows_per_second"].as_f64().unwrap();
    let threads = |c: &serde_json::Value| c["threads"].as_u64().unwrap_or(1);
    let passing: Vec<&serde_json::Value> =
        cands.iter().filter(|c| c["passes_gate"] == true).collect();
    let best = passing.iter().map(|c| rate(c)).fold(0.0, f64::max);
    let margin = kiln::optimize::auto::THREADS_TIE_MARGIN;
    let near: Vec<&serde_json::Value> = passing
        .into_iter()
        .filter(|c| rate(c) >= best * (1.0 - margin))
        .collect();
    let fewest = near.iter().map(|c| threads(c)).min().unwrap();
    assert_eq!(threads(chosen), fewest, "{v:#}");
    let best_at_fewest = near
        .iter()
        .filter(|c| threads(c) == fewest)
        .map(|c| rate(c))
        .fold(0.0, f64::max);
    assert_eq!(rate(chosen), best_at_fewest, "{v:#}");
    assert_svg(&k.path("plots/accuracy_vs_speed.svg"));
    assert_png(&k.path("plots/accuracy_vs_speed.png"));
    // Recorded in the model's metadata …
    let meta = k.json(&["inspect", "m.auto.onnx"]);
    assert_eq!(
        meta["metadata"]["kiln.auto.engine"], chosen["engine"],
        "{meta:#}"
    );
    assert_eq!(meta["metadata"]["kiln.auto.batch_size"], "64");
    // … and reused by infer without measuring again.
    let mut infer = vec![
        "infer",
        "--model",
        "m.auto.onnx",
        "--engine",
        "auto",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "p.csv",
    ];
    infer.extend(["--ort-lib", lib_str.as_str()]);
    let r = k.json(&infer);
    assert_eq!(r["engine"], chosen["engine"], "{r:#}");
    assert!(
        r["auto"]["reason"]
            .as_str()
            .unwrap()
            .contains("recorded in the model"),
        "{r:#}"
    );
    assert!(
        r["auto"]["candidates"].as_array().unwrap().is_empty(),
        "no re-measuring"
    );
    // A GPU provider on a machine without one: a loud warning, or an error when strict.
    let mut gpu = args.clone();
    let at = gpu.iter().position(|a| *a == "cpu").unwrap();
    gpu[at] = "cpu,cuda:0";
    gpu[4] = "m.gpu.onnx";
    let out = k.ok(&gpu);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("cuda:0"),
        "{stderr}"
    );
    gpu.push("--strict-provider");
    gpu[4] = "m.gpu2.onnx";
    let err = k.fails(&gpu, 2);
    assert!(err.contains("cuda") && err.contains("strict"), "{err}");
    assert!(
        !k.path("m.gpu2.onnx").exists(),
        "nothing written when refused"
    );
    // --engine auto chooses the form itself: a --quantization beside it is refused.
    let err = k.fails(
        &[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            "y.onnx",
            "--engine",
            "auto",
            "--validate-data",
            val.to_str().unwrap(),
            "--quantization",
            "dynamic",
        ],
        2,
    );
    assert!(err.contains("drop --quantization"), "{err}");
    // Without validation data there is nothing to gate on.
    let err = k.fails(
        &[
            "optimize", "--model", "m.onnx", "--output", "x.onnx", "--engine", "auto",
        ],
        2,
    );
    assert!(err.contains("--validate-data"), "{err}");
}

/// `--provider` means ONNX Runtime wherever it is given: a provider that is not here (CUDA on
/// this CPU build) is a loud warning naming what runs instead, and the JSON records requested
/// and actual providers; `--strict-provider` makes it an error; tract with a GPU provider is
/// refused rather than ignored.
#[test]
fn providers_fall_back_loudly_or_fail_when_strict() {
    let k = Kiln::new();
    let (_, val, test) = trained_and_exported(&k, 61, "3");
    let test = test.to_str().unwrap();
    // infer: ONNX Runtime's own provider name works too.
    let out = k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test,
        "--output",
        "p.csv",
        "--provider",
        "CUDAExecutionProvider",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(v["engine"], "ort", "{v:#}");
    assert_eq!(v["provider"]["requested"], "cuda:0", "{v:#}");
    assert_eq!(v["provider"]["actual"], "cpu", "{v:#}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("cuda:0")
            && stderr.contains("running on cpu"),
        "{stderr}"
    );
    let strict = [
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test,
        "--output",
        "q.csv",
        "--provider",
        "cuda",
        "--strict-provider",
    ];
    let err = k.fails(&strict, 2);
    assert!(
        err.contains("cuda:0") && err.contains("unavailable"),
        "{err}"
    );
    assert!(!k.path("q.csv").exists());
    let err = k.fails(
        &[
            "infer",
            "--model",
            "m.onnx",
            "--data",
            test,
            "--engine",
            "tract",
            "--provider",
            "cuda",
        ],
        2,
    );
    assert!(err.contains("tract runs on the CPU only"), "{err}");
    // bench: the provider goes to the ONNX Runtime configurations.
    let b = k.json(&[
        "bench",
        "m.onnx",
        "--provider",
        "cuda",
        "--batch-sizes",
        "8",
        "--seconds",
        "0.05",
    ]);
    assert_eq!(b["provider"]["actual"], "cpu", "{b:#}");
    // Refused: a GPU provider for tract, and a provider nothing runs on; an error when strict.
    let refusals: [(&[&str], &str); 3] = [
        (&["bench", "m.onnx", "--engines", "tract"], "no ort engine"),
        (
            &[
                "optimize",
                "--model",
                "m.onnx",
                "--quantization",
                "dynamic",
                "--engine",
                "tract",
            ],
            "tract runs on the CPU only",
        ),
        (
            &[
                "optimize",
                "--model",
                "m.onnx",
                "--quantization",
                "dynamic",
                "--strict-provider",
            ],
            "cuda:0",
        ),
    ];
    for args in [
        &[
            "infer", "--model", "m.onnx", "--data", test, "--engine", "tract",
        ][..],
        &["bench", "m.onnx", "--engines", "tract"][..],
    ] {
        let mut full = args.to_vec();
        full.extend(["--ort-lib", "/nowhere/libonnxruntime.so"]);
        let err = k.fails(&full, 2);
        assert!(
            err.contains("--ort-lib points at ONNX Runtime"),
            "{full:?}: {err}"
        );
    }
    for (args, says) in refusals {
        let mut full = args.to_vec();
        full.extend(["--provider", "cuda"]);
        let err = k.fails(&full, 2);
        assert!(err.contains(says), "{full:?}: {err}");
    }
    assert!(
        !k.path("m.int8.onnx").exists(),
        "nothing written when refused"
    );
    let o = k.json(&[
        "optimize",
        "--model",
        "m.onnx",
        "--quantization",
        "dynamic",
        "--provider",
        "cpu",
        "--validate-data",
        val.to_str().unwrap(),
    ]);
    assert_eq!(o["output"], "m.int8.onnx", "beside the input: {o:#}");
    assert_eq!(o["provider"]["actual"], "cpu", "{o:#}");
    assert!(o["provider"]["fallback"].is_null(), "{o:#}");
    let ops = k.json(&["inspect", "m.int8.onnx"])["ops"].clone();
    assert!(
        ops.get("MatMulInteger").is_some(),
        "ONNX Runtime's integer form: {ops}"
    );
    assert!(f(&o, "/ort_check/max_abs_diff") < 1e-4, "{o:#}");
    // Flags that would be ignored are refused.
    for (args, says) in [
        (
            vec![
                "--quantization",
                "dynamic",
                "--calibration-data",
                val.to_str().unwrap(),
            ],
            "--quantization static",
        ),
        (
            vec!["--quantization", "dynamic", "--batch-size", "8"],
            "--engine auto",
        ),
        (
            vec!["--engine", "ort"],
            "--engine ort chooses the ONNX form",
        ),
    ] {
        let mut full = vec!["optimize", "--model", "m.onnx", "--output", "z.onnx"];
        full.extend(args);
        let err = k.fails(&full, 2);
        assert!(err.contains(says), "{full:?}: {err}");
    }
}
