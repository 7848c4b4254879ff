//! The run directory of the current command: `run.json` is written when the run starts
//! (status "running", so a killed run shows as such) and again when the process ends, with the
//! status, exit code, error, headline metrics and resource use. Logs are teed to `kiln.log`.

use kiln_report::runs::{RunRecord, RunStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
static CURRENT: Mutex<Option<(PathBuf, RunRecord)>> = Mutex::new(None);

pub fn mark_start() {
    let _ = START.set(Instant::now());
}

/// Seconds since the command started.
pub fn elapsed() -> f64 {
    START.get().map_or(0.0, |s| s.elapsed().as_secs_f64())
}

/// Wall and CPU time, peak RSS and GPU memory of this process so far.
pub fn resources() -> serde_json::Value {
    let u = kiln_core::resources::usage();
    let cpu = match (u.user_cpu_seconds, u.system_cpu_seconds) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    serde_json::json!({
        "wall_seconds": elapsed(),
        "cpu_seconds": cpu,
        "user_cpu_seconds": u.user_cpu_seconds,
        "system_cpu_seconds": u.system_cpu_seconds,
        "peak_rss_bytes": u.peak_rss_bytes,
        "gpu_memory": kiln_core::resources::gpu_memory().ok().filter(|g| !g.is_empty()),
    })
}

/// One line for people: `wall 1.20 s, CPU 2.31 s, peak RSS 84 MiB`.
pub fn resources_line() -> String {
    let r = resources();
    let mut s = format!("wall {:.2} s", elapsed());
    if let Some(c) = r["cpu_seconds"].as_f64() {
        s.push_str(&format!(", CPU {c:.2} s"));
    }
    if let Some(b) = r["peak_rss_bytes"].as_f64() {
        s.push_str(&format!(", peak RSS {:.0} MiB", b / (1024.0 * 1024.0)));
    }
    if let Some(gpus) = r["gpu_memory"].as_array() {
        for g in gpus {
            if let Some(used) = g["used_bytes"].as_f64() {
                s.push_str(&format!(", GPU memory {:.0} MiB", used / (1024.0 * 1024.0)));
            }
        }
    }
    s
}

/// Starts recording a run in `dir`: writes `run.json` and tees logs into `kiln.log`.
pub fn begin(command: &str, name: &str, dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the run directory {}", dir.display()))?;
    let args: Vec<String> = std::env::args().collect();
    let record = RunRecord::start(command, name, args);
    record.save(dir)?;
    crate::logging::log_to_file(&dir.join("kiln.log"))
        .with_context(|| format!("opening {}", dir.join("kiln.log").display()))?;
    tracing::info!(target: "kiln", "run directory {}", dir.display());
    if let Ok(mut g) = CURRENT.lock() {
        *g = Some((dir.to_path_buf(), record));
    }
    Ok(())
}

/// The run's headline numbers, saved in `run.json` at the end.
pub fn set_metrics(metrics: BTreeMap<String, f64>) {
    if let Ok(mut g) = CURRENT.lock()
        && let Some((_, r)) = g.as_mut()
    {
        r.metrics = metrics.into_iter().filter(|(_, v)| v.is_finite()).collect();
    }
}

/// Numbers at `paths` (dot-separated) in a JSON value, for [`set_metrics`].
pub fn pick(value: &serde_json::Value, paths: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, path) in paths {
        let mut v = value;
        let mut found = true;
        for part in path.split('.') {
            match v.get(part) {
                Some(x) => v = x,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found && let Some(x) = v.as_f64() {
            out.insert(name.to_string(), x);
        }
    }
    out
}

/// Completes the run record, if a run was started.
pub fn finish(exit_code: i32, error: Option<String>) {
    let Ok(mut g) = CURRENT.lock() else { return };
    let Some((dir, mut record)) = g.take() else {
        return;
    };
    record.finished = Some(kiln_report::runs::now_rfc3339());
    record.seconds = Some(elapsed());
    record.status = if exit_code == 0 {
        RunStatus::Ok
    } else {
        RunStatus::Failed
    };
    record.exit_code = Some(exit_code);
    record.error = error;
    record.resources = Some(resources());
    if let Err(e) = record.save(&dir) {
        eprintln!(
            "warning: could not update {}: {e}",
            dir.join("run.json").display()
        );
    }
}
