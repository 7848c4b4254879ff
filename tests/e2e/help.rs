//! Snapshot tests of `--help`: the text users read is reviewed like code. After an intended
//! change, refresh the snapshots with `KILN_UPDATE_SNAPSHOTS=1 cargo nextest run -E 'test(/help/)'`
//! and review the diff.

use crate::util::{Kiln, repo};

const COMMANDS: &[&str] = &[
    "",
    "train",
    "export",
    "optimize",
    "infer",
    "pipeline",
    "bench",
    "compare",
    "package",
    "profile",
    "serve",
    "worker",
    "inspect",
    "doctor",
    "completions",
    "man",
    "runs",
    "runs list",
    "runs compare",
    "init",
];

#[test]
fn help_output_matches_the_snapshots() {
    let k = Kiln::new();
    let update = std::env::var_os("KILN_UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    for cmd in COMMANDS {
        let mut args: Vec<&str> = cmd.split_whitespace().collect();
        args.push("--help");
        let out = k.run(&args);
        assert!(out.status.success(), "kiln {} --help failed", cmd);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // Every command's help has a description and examples.
        if !cmd.is_empty() {
            assert!(
                text.contains("Examples:"),
                "kiln {cmd} --help has no examples"
            );
        }
        let name = if cmd.is_empty() {
            "kiln".to_string()
        } else {
            cmd.replace(' ', "-")
        };
        let path = repo().join(format!("tests/e2e/snapshots/{name}.help.txt"));
        if update {
            std::fs::write(&path, &text).expect("write snapshot");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == text => {}
            _ => stale.push(name),
        }
    }
    assert!(
        stale.is_empty(),
        "help text changed for {stale:?}; review and refresh with KILN_UPDATE_SNAPSHOTS=1 cargo nextest run -E 'test(/help/)'"
    );
}

#[test]
fn man_page_renders() {
    let k = Kiln::new();
    let out = k.ok(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH kiln"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains("serve"));
}

#[test]
fn no_arguments_or_a_wrong_flag_say_what_to_do_next() {
    let k = Kiln::new();
    let out = k.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pipeline --demo"), "{text}");
    let err = k.fails(&["train", "--epoch", "3"], 2);
    assert!(err.contains("--epochs"), "a close flag is suggested: {err}");
}

/// Error messages are part of the interface too: each case's exit code and stderr, with the
/// temporary directory replaced by `<tmp>`, must match `snapshots/errors.txt`.
#[test]
fn error_messages_match_the_snapshot() {
    let k = Kiln::new();
    k.write("header-only.csv", "a,b,label\n");
    k.write("bad-cell.csv", "a,b,label\n1,2,x\n3,oops,y\n");
    let cases: &[&[&str]] = &[
        &["frobnicate"],
        &["train"],
        &["train", "--epochs", "many"],
        &["train", "--data", "nope.csv", "--out", "r"],
        &["train", "--data", "header-only.csv", "--out", "r"],
        &["train", "--data", "bad-cell.csv", "--out", "r"],
        &["train", "--data", "bad-cell.csv", "--task", "clustering"],
        &["doctor", "-q", "-v"],
        &["infer", "--model", "m.onnx"],
        &["infer", "--model", "missing.onnx", "--data", "bad-cell.csv"],
        &["runs", "list", "--runs-dir", "nowhere"],
        &["init"],
        &["bench", "m.onnx", "--batch-sizes", "0"],
    ];
    let tmp = k
        .path("")
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    let mut text = String::new();
    for args in cases {
        let out = k.run_env(args, &[("NO_COLOR", "1"), ("KILN_BACKTRACE", "")]);
        let stderr = String::from_utf8_lossy(&out.stderr).replace(&tmp, "<tmp>");
        text.push_str(&format!(
            "$ kiln {}\nexit {}\n{}\n",
            args.join(" "),
            out.status.code().unwrap_or(-1),
            stderr.trim_end()
        ));
    }
    let path = repo().join("tests/e2e/snapshots/errors.txt");
    if std::env::var_os("KILN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == text,
        "error messages changed; review and refresh with KILN_UPDATE_SNAPSHOTS=1 cargo nextest run -E 'test(/error_messages/)'\n--- now\n{text}"
    );
}
