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
