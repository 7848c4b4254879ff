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

/// What the data file suggests (kiln-data's guess, with the task as `init` writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub columns: Vec<String>,
    pub target: String,
    pub task: &'static str,
    pub rows_sampled: usize,
}

/// The target column and task `kiln_data::sniff` guesses for `path`.
pub fn detect(path: &Path, target: Option<&str>) -> Result<Detected> {
    let s = kiln_data::sniff(path, target)?;
    Ok(Detected {
        columns: s.columns,
        target: s.target,
        task: match s.task {
            kiln_core::Task::Classification => "classification",
            kiln_core::Task::Regression => "regression",
        },
        rows_sampled: s.rows_sampled,
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
