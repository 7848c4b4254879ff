//! `kiln init`: writes a `kiln.toml` for a data file. The target column and the task are
//! detected from the file and offered as defaults; prompts appear only when stdin and stderr
//! are terminals, and without one every answer must come from a flag (or `--yes` for the
//! detected defaults), so a script never hangs on a prompt.

use crate::args::{Cli, InitArgs};
use crate::commands::{summary, usage};
use anyhow::{Context, Result};
use kiln_train::ConfigFile;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// What the data file suggests.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub columns: Vec<String>,
    pub target: String,
    pub task: &'static str,
    pub rows_sampled: usize,
}

const TARGET_NAMES: [&str; 6] = ["label", "target", "class", "y", "species", "quality"];
const SAMPLE_ROWS: usize = 2000;

/// Reads the header and up to 2000 rows of a CSV or JSONL file and guesses the target column
/// (a conventional name, else the last column) and the task (classification when the target
/// holds text, or at most 20 distinct integers; regression otherwise).
pub fn detect(path: &Path, target: Option<&str>) -> Result<Detected> {
    if path.is_dir() {
        return Err(usage(format!(
            "{} is a directory; give the data file (CSV or JSONL)",
            path.display()
        )));
    }
    let jsonl = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson")
    );
    let (columns, rows): (Vec<String>, Vec<Vec<String>>) = if jsonl {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut columns: Vec<String> = Vec::new();
        let mut rows = Vec::new();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            if i >= SAMPLE_ROWS {
                break;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| kiln_data::DataError::Row {
                    path: path.to_path_buf(),
                    row: i,
                    line: i + 1,
                    reason: format!("not a JSON object: {e}"),
                })?;
            let obj = v.as_object().ok_or_else(|| kiln_data::DataError::Row {
                path: path.to_path_buf(),
                row: i,
                line: i + 1,
                reason: "each line must be a JSON object".into(),
            })?;
            if columns.is_empty() {
                columns = obj.keys().cloned().collect();
            }
            rows.push(
                columns
                    .iter()
                    .map(|c| match obj.get(c) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    })
                    .collect(),
            );
        }
        (columns, rows)
    } else {
        let mut r = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let columns: Vec<String> = r
            .headers()
            .map_err(|e| kiln_data::DataError::Schema {
                path: path.to_path_buf(),
                reason: format!("cannot read the header: {e}"),
            })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let rows = r
            .records()
            .take(SAMPLE_ROWS)
            .filter_map(|x| x.ok())
            .map(|rec| rec.iter().map(|c| c.trim().to_string()).collect())
            .collect();
        (columns, rows)
    };
    if columns.len() < 2 {
        return Err(anyhow::Error::new(kiln_data::DataError::Schema {
            path: path.to_path_buf(),
            reason: format!(
                "found {} column(s); kiln needs feature columns and a target column, comma-separated with a header line",
                columns.len()
            ),
        }));
    }
    let target = match target {
        Some(t) if columns.iter().any(|c| c == t) => t.to_string(),
        Some(t) => {
            return Err(usage(format!(
                "{} has no column {t:?}; its columns are {}",
                path.display(),
                columns.join(", ")
            )));
        }
        None => columns
            .iter()
            .find(|c| TARGET_NAMES.contains(&c.to_ascii_lowercase().as_str()))
            .or(columns.last())
            .cloned()
            .unwrap_or_default(),
    };
    let idx = columns.iter().position(|c| *c == target).unwrap_or(0);
    let values: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.get(idx).map(String::as_str))
        .filter(|v| !v.is_empty())
        .collect();
    let numbers: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
    let distinct: std::collections::BTreeSet<&str> = values.iter().copied().collect();
    let task = if numbers.len() < values.len()
        || (numbers.iter().all(|x| x.fract() == 0.0) && distinct.len() <= 20)
    {
        "classification"
    } else {
        "regression"
    };
    Ok(Detected {
        columns,
        target,
        task,
        rows_sampled: rows.len(),
    })
}

/// `path` as it should appear in a config file stored in `config_dir`: relative to it when the
/// file lies below it, else absolute.
fn config_path(path: &Path, config_dir: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = std::path::absolute(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
    abs.strip_prefix(&dir).map(Path::to_path_buf).unwrap_or(abs)
}

pub fn init(cli: &Cli, a: &InitArgs) -> Result<()> {
    let interactive = !a.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if a.output.exists() && !a.force {
        return Err(usage(format!(
            "{} already exists; pass --force to replace it or --output to write another file",
            a.output.display()
        )));
    }
    let theme = dialoguer::theme::SimpleTheme;
    let prompt_err = |e: dialoguer::Error| anyhow::anyhow!("reading the answer failed: {e}");
    let data = match &a.data {
        Some(d) => d.clone(),
        None if interactive => PathBuf::from(
            dialoguer::Input::<String>::with_theme(&theme)
                .with_prompt("training data file (CSV or JSONL)")
                .interact_text()
                .map_err(prompt_err)?,
        ),
        None => {
            return Err(usage(
                "missing --data <FILE>: kiln init asks for it on a terminal; without one, pass it as a flag",
            ));
        }
    };
    if !data.exists() {
        return Err(anyhow::Error::new(kiln_data::DataError::Io {
            path: data.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        }));
    }
    let detected = detect(&data, a.target.as_deref())?;
    let target = match &a.target {
        Some(t) => t.clone(),
        None if interactive => {
            let default = detected
                .columns
                .iter()
                .position(|c| *c == detected.target)
                .unwrap_or(0);
            let i = dialoguer::Select::with_theme(&theme)
                .with_prompt("target column")
                .items(&detected.columns)
                .default(default)
                .interact()
                .map_err(prompt_err)?;
            detected.columns[i].clone()
        }
        None if a.yes => detected.target.clone(),
        None => {
            return Err(usage(format!(
                "missing --target: no terminal to ask on; pass --target <COLUMN>, or --yes to accept the detected `{}`",
                detected.target
            )));
        }
    };
    // The task of the chosen column (it may differ from the detected one's).
    let detected_task = detect(&data, Some(&target))?.task;
    let task = match &a.task {
        Some(t) if t == "classification" || t == "regression" => t.clone(),
        Some(t) => {
            return Err(usage(format!(
                "unknown --task {t:?}; use classification or regression"
            )));
        }
        None if interactive => {
            let items = ["classification", "regression"];
            let i = dialoguer::Select::with_theme(&theme)
                .with_prompt(format!("task (detected: {detected_task})"))
                .items(items)
                .default(usize::from(detected_task == "regression"))
                .interact()
                .map_err(prompt_err)?;
            items[i].to_string()
        }
        None if a.yes => detected_task.to_string(),
        None => {
            return Err(usage(format!(
                "missing --task: no terminal to ask on; pass --task classification|regression, or --yes to accept the detected {detected_task}"
            )));
        }
    };
    let val_data = match &a.val_data {
        Some(v) => Some(v.clone()),
        None if interactive => {
            let v: String = dialoguer::Input::with_theme(&theme)
                .with_prompt("validation data file (empty for none)")
                .allow_empty(true)
                .interact_text()
                .map_err(prompt_err)?;
            (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()))
        }
        None => None,
    };
    let config_dir = a
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut train = kiln_train::TrainConfig {
        target: target.clone(),
        ..kiln_train::TrainConfig::default()
    };
    train.task = if task == "regression" {
        kiln_core::Task::Regression
    } else {
        kiln_core::Task::Classification
    };
    let file = ConfigFile {
        data: Some(config_path(&data, config_dir)),
        val_data: val_data.as_deref().map(|v| config_path(v, config_dir)),
        test_data: None,
        out: None,
        train: Some(train),
    };
    let body = toml::to_string_pretty(&file).context("rendering the config")?;
    let text = format!(
        "# Written by `kiln init` from {} ({} rows sampled). Paths are relative to this file.\n# Train with: kiln train --config {}\n\n{body}",
        data.display(),
        detected.rows_sampled,
        a.output.display()
    );
    kiln_core::fsutil::write_atomic(&a.output, text.as_bytes())?;
    summary(
        cli,
        &format!(
            "wrote {} (target {target}, {task}); train with `kiln train --config {}`",
            a.output.display(),
            a.output.display()
        ),
        serde_json::json!({
            "command": "init",
            "config": a.output,
            "data": data,
            "target": target,
            "task": task,
            "columns": detected.columns,
        }),
        false,
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn detects_conventional_target_and_task() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.csv");
        std::fs::write(&p, "x,y2,species\n1,2,setosa\n3,4,virginica\n").unwrap();
        let got = detect(&p, None).unwrap();
        assert_eq!(
            (got.target.as_str(), got.task),
            ("species", "classification")
        );
        std::fs::write(&p, "a,b,price\n1,2,3.5\n3,4,7.25\n").unwrap();
        let got = detect(&p, None).unwrap();
        assert_eq!((got.target.as_str(), got.task), ("price", "regression"));
        std::fs::write(&p, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
        assert_eq!(detect(&p, None).unwrap().task, "classification");
        let err = detect(&p, Some("nope")).unwrap_err().to_string();
        assert!(
            err.contains("no column \"nope\"") && err.contains("a, b, label"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_columns_and_one_column_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jsonl");
        std::fs::write(
            &p,
            "{\"f\":1.5,\"target\":\"x\"}\n{\"f\":2,\"target\":\"y\"}\n",
        )
        .unwrap();
        let got = detect(&p, None).unwrap();
        assert_eq!(got.columns, ["f", "target"]);
        assert_eq!(got.task, "classification");
        let p = d.path().join("one.csv");
        std::fs::write(&p, "a;b;c\n1;2;3\n").unwrap();
        let err = detect(&p, None).unwrap_err().to_string();
        assert!(err.contains("comma-separated"), "{err}");
    }
}
