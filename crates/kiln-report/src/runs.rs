//! Run directories: every `kiln train` and `kiln pipeline` writes `runs/<timestamp>-<name>/`
//! with `config.toml`, `metrics.json`, its artifacts, `kiln.log` and a `run.json` record
//! ([`RunRecord`]) saying what ran, when, how it ended, its headline metrics and its resource
//! use. This module writes those records, lists run directories and lines runs up side by side.

use crate::ReportError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The record file in every run directory.
pub const RUN_FILE: &str = "run.json";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started and not (yet) finished: still running, or killed.
    Running,
    /// Finished successfully.
    Ok,
    /// Finished with an error.
    Failed,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
        })
    }
}

/// `run.json`: what ran, when, how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The command (`train`, `pipeline`).
    pub command: String,
    /// The run's name.
    pub name: String,
    /// The command line.
    pub args: Vec<String>,
    /// Start time, RFC 3339 UTC.
    pub started: String,
    /// End time, RFC 3339 UTC.
    #[serde(default)]
    pub finished: Option<String>,
    /// Wall seconds.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// How it ended.
    pub status: RunStatus,
    /// The error, for a failed run.
    #[serde(default)]
    pub error: Option<String>,
    /// The process exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Headline numbers (accuracy, loss, throughput, …) by name.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Wall/CPU time, peak RSS and GPU memory.
    #[serde(default)]
    pub resources: Option<serde_json::Value>,
    /// The kiln version that ran.
    pub kiln_version: String,
}

/// Now, RFC 3339 UTC to the millisecond (so runs started within one second still sort).
pub fn now_rfc3339() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The directory name of a new run: `<YYYYmmdd-HHMMSS>-<name>`, the name reduced to letters,
/// digits, `-`, `_` and `.`.
pub fn run_dir_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c| c == '-' || c == '.');
    let clean = if clean.is_empty() { "run" } else { clean };
    format!("{}-{clean}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

impl RunRecord {
    /// A record of a run that starts now.
    pub fn start(command: &str, name: &str, args: Vec<String>) -> Self {
        Self {
            command: command.into(),
            name: name.into(),
            args,
            started: now_rfc3339(),
            finished: None,
            seconds: None,
            status: RunStatus::Running,
            error: None,
            exit_code: None,
            metrics: BTreeMap::new(),
            resources: None,
            kiln_version: kiln_core::KILN_VERSION.into(),
        }
    }

    /// Writes `<dir>/run.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ReportError> {
        kiln_core::fsutil::write_json(&dir.join(RUN_FILE), self)?;
        Ok(())
    }

    /// Reads `<dir>/run.json`.
    pub fn load(dir: &Path) -> Result<Self, ReportError> {
        Ok(kiln_core::fsutil::read_json(
            &dir.join(RUN_FILE),
            "kiln run record",
        )?)
    }
}

/// A run directory and its record.
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// The directory.
    pub path: PathBuf,
    /// Its `run.json`.
    pub record: RunRecord,
}

/// The runs found in a directory.
#[derive(Debug, Clone, Default)]
pub struct RunListing {
    /// Readable runs, newest first.
    pub runs: Vec<RunEntry>,
    /// Directories whose `run.json` cannot be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Every run directory directly under `dir` (those with a `run.json`), newest first.
pub fn list_runs(dir: &Path) -> Result<RunListing, ReportError> {
    let read = std::fs::read_dir(dir).map_err(|e| kiln_core::CoreError::io("listing", dir, e))?;
    let mut runs = Vec::new();
    let mut bad = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        if !path.join(RUN_FILE).is_file() {
            continue;
        }
        match RunRecord::load(&path) {
            Ok(record) => runs.push(RunEntry { path, record }),
            Err(e) => bad.push((path, e.to_string())),
        }
    }
    runs.sort_by(|a, b| {
        b.record
            .started
            .cmp(&a.record.started)
            .then_with(|| b.path.cmp(&a.path))
    });
    Ok(RunListing {
        runs,
        unreadable: bad,
    })
}

/// Finds a run given as a path or as a name under `runs_dir`.
pub fn find_run(spec: &Path, runs_dir: &Path) -> Result<RunEntry, ReportError> {
    let candidates = [spec.to_path_buf(), runs_dir.join(spec)];
    for c in &candidates {
        if c.join(RUN_FILE).is_file() {
            return Ok(RunEntry {
                path: c.clone(),
                record: RunRecord::load(c)?,
            });
        }
    }
    Err(ReportError::Data {
        plot: "runs",
        reason: format!(
            "{} is not a run directory (no {RUN_FILE} there or under {}); `kiln runs list` shows the runs",
            spec.display(),
            runs_dir.display()
        ),
    })
}

/// Runs lined up: config values, metrics and timings, one column per run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunComparison {
    /// Run names (directory names), the columns.
    pub runs: Vec<String>,
    /// `(key, value per run)` from each run's `config.toml`, nested keys joined with dots.
    pub config: Vec<(String, Vec<Option<String>>)>,
    /// `(metric, value per run)` from each run's record.
    pub metrics: Vec<(String, Vec<Option<f64>>)>,
    /// `(timing, value per run)`: wall seconds, CPU seconds, peak RSS MiB.
    pub timings: Vec<(String, Vec<Option<f64>>)>,
}

fn flatten_toml(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_toml(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.into(), s.clone());
        }
        other => {
            out.insert(prefix.into(), other.to_string());
        }
    }
}

/// Lines up `runs`. With `all` false, only config keys whose values differ are kept.
pub fn compare_runs(runs: &[RunEntry], all: bool) -> Result<RunComparison, ReportError> {
    let mut configs = Vec::new();
    for r in runs {
        let path = r.path.join("config.toml");
        let mut flat = BTreeMap::new();
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| kiln_core::CoreError::io("reading", &path, e))?;
            let value: toml::Value = toml::from_str(&text).map_err(|e| ReportError::Data {
                plot: "runs",
                reason: format!("{}: {e}", path.display()),
            })?;
            flatten_toml("", &value, &mut flat);
        }
        configs.push(flat);
    }
    let keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    let config = keys
        .into_iter()
        .map(|k| {
            (
                k.clone(),
                configs
                    .iter()
                    .map(|c| c.get(k).cloned())
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, vals)| all || vals.iter().any(|v| v != &vals[0]))
        .collect();
    let metric_keys: BTreeSet<&String> =
        runs.iter().flat_map(|r| r.record.metrics.keys()).collect();
    let metrics = metric_keys
        .into_iter()
        .map(|k| {
            (
                k.clone(),
                runs.iter()
                    .map(|r| r.record.metrics.get(k).copied())
                    .collect(),
            )
        })
        .collect();
    let res = |r: &RunEntry, key: &str| {
        r.record
            .resources
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(|v| v.as_f64())
    };
    let timings = vec![
        (
            "wall seconds".to_string(),
            runs.iter().map(|r| r.record.seconds).collect(),
        ),
        (
            "cpu seconds".to_string(),
            runs.iter().map(|r| res(r, "cpu_seconds")).collect(),
        ),
        (
            "peak RSS MiB".to_string(),
            runs.iter()
                .map(|r| res(r, "peak_rss_bytes").map(|b| b / (1024.0 * 1024.0)))
                .collect(),
        ),
    ];
    Ok(RunComparison {
        runs: runs
            .iter()
            .map(|r| {
                r.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| r.path.display().to_string())
            })
            .collect(),
        config,
        metrics,
        timings,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn make(dir: &Path, name: &str, started: &str, lr: f64, acc: f64) -> PathBuf {
        let p = dir.join(name);
        let mut r = RunRecord::start("train", name, vec!["kiln".into()]);
        r.started = started.into();
        r.status = RunStatus::Ok;
        r.metrics.insert("val_accuracy".into(), acc);
        r.seconds = Some(2.0);
        r.save(&p).unwrap();
        std::fs::write(
            p.join("config.toml"),
            format!("data = \"x.csv\"\n[train]\nlr = {lr}\nepochs = 10\n"),
        )
        .unwrap();
        p
    }

    #[test]
    fn lists_newest_first_and_reports_unreadable_records() {
        let d = tempfile::tempdir().unwrap();
        make(d.path(), "a", "2026-01-01T00:00:00Z", 0.1, 0.9);
        make(d.path(), "b", "2026-02-01T00:00:00Z", 0.01, 0.95);
        std::fs::create_dir_all(d.path().join("broken")).unwrap();
        std::fs::write(d.path().join("broken").join(RUN_FILE), b"{").unwrap();
        std::fs::create_dir_all(d.path().join("not-a-run")).unwrap();
        let RunListing {
            runs,
            unreadable: bad,
        } = list_runs(d.path()).unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.record.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].1.contains("run.json"), "{}", bad[0].1);
    }

    #[test]
    fn comparison_keeps_differing_keys_unless_all() {
        let d = tempfile::tempdir().unwrap();
        let a = find_run(&make(d.path(), "a", "1", 0.1, 0.9), d.path()).unwrap();
        assert!(find_run(Path::new("b"), d.path()).is_err());
        make(d.path(), "b", "2", 0.01, 0.95);
        let b = find_run(Path::new("b"), d.path()).unwrap();
        let c = compare_runs(&[a.clone(), b.clone()], false).unwrap();
        let keys: Vec<&str> = c.config.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["train.lr"]);
        assert_eq!(c.metrics[0].1, vec![Some(0.9), Some(0.95)]);
        let c = compare_runs(&[a, b], true).unwrap();
        assert!(c.config.iter().any(|(k, _)| k == "train.epochs"));
    }

    #[test]
    fn run_names_are_safe_directory_names() {
        let n = run_dir_name("../my run/é");
        assert!(n.ends_with("-my-run"), "{n}");
        assert!(
            !n.contains('/') && !n.contains(' ') && !n.contains(".."),
            "{n}"
        );
        assert!(run_dir_name("").ends_with("-run"));
    }
}
