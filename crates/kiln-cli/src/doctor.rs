//! `kiln doctor`: what this machine offers kiln (engines, providers, Python tools).

use crate::args::Cli;
use crate::commands::summary_tables;
use crate::render::Table;
use anyhow::Result;
use serde::Serialize;
use serde_json::json;

/// One line of `kiln doctor`.
#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

fn python_tools() -> Check {
    let candidates = [
        std::env::var("KILN_PYTHON").ok(),
        Some(".venv/bin/python".into()),
        Some("python3".into()),
    ];
    for py in candidates.into_iter().flatten() {
        let out = std::process::Command::new(&py)
            .args([
                "-c",
                "import onnx, onnxruntime; print(onnx.__version__, onnxruntime.__version__)",
            ])
            .output();
        if let Ok(o) = out
            && o.status.success()
        {
            let v = String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace(' ', ", onnxruntime ");
            return Check {
                name: "python cross-check tools",
                ok: true,
                detail: format!("{py}: onnx {v}"),
                fix: None,
            };
        }
    }
    Check {
        name: "python cross-check tools",
        ok: false,
        detail: "no Python with the onnx and onnxruntime packages".into(),
        fix: Some("run scripts/setup-python.sh (creates .venv), or set KILN_PYTHON".into()),
    }
}

pub(crate) fn doctor(cli: &Cli) -> Result<()> {
    let peak = kiln_infer::profile::cpu_peak();
    let mut checks = vec![
        Check {
            name: "cpu",
            ok: true,
            detail: format!(
                "{} cores, {} ({} f32 FLOP/cycle/core), {:.2} GHz, peak ≈ {:.0} GFLOP/s",
                peak.cores, peak.simd, peak.flops_per_cycle, peak.ghz, peak.peak_gflops
            ),
            fix: None,
        },
        Check {
            name: "engine tract",
            ok: true,
            detail: "built in (pure Rust)".into(),
            fix: None,
        },
    ];
    #[cfg(feature = "ort")]
    checks.push(match kiln_infer::ort_engine::find_library(None).and_then(|p| kiln_infer::ort_engine::available(Some(&p)).map(|_| p)) {
        Ok(p) => Check { name: "engine ort", ok: true, detail: format!("ONNX Runtime loaded from {}", p.display()), fix: None },
        Err(e) => Check {
            name: "engine ort",
            ok: false,
            detail: e.to_string(),
            fix: Some("run scripts/fetch-onnxruntime.sh, or set ORT_DYLIB_PATH to a libonnxruntime.so".into()),
        },
    });
    #[cfg(not(feature = "ort"))]
    checks.push(Check {
        name: "engine ort",
        ok: false,
        detail: "not built in".into(),
        fix: Some("rebuild with --features ort".into()),
    });
    let gpu = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output();
    checks.push(match gpu {
        Ok(o) if o.status.success() => Check { name: "gpu", ok: true, detail: String::from_utf8_lossy(&o.stdout).trim().replace('\n', "; "), fix: None },
        _ => Check {
            name: "gpu",
            ok: false,
            detail: "no NVIDIA GPU found (nvidia-smi missing or failing); kiln runs on the CPU".into(),
            fix: Some("for GPU inference: an NVIDIA driver, a kiln built with --features cuda, and ONNX Runtime from the onnxruntime-gpu wheel".into()),
        },
    });
    checks.push(python_tools());
    let mut human = String::new();
    for c in &checks {
        human.push_str(&format!(
            "{} {:<26} {}\n",
            if c.ok { "ok  " } else { "MISS" },
            c.name,
            c.detail
        ));
        if let Some(f) = &c.fix {
            human.push_str(&format!("     {:<26} fix: {f}\n", ""));
        }
    }
    let mut table = Table::new("doctor", &["check", "ok", "detail", "fix"]);
    for c in &checks {
        table.row(vec![
            c.name.to_string(),
            c.ok.to_string(),
            c.detail.clone(),
            c.fix.clone().unwrap_or_default(),
        ]);
    }
    summary_tables(
        cli,
        human.trim_end(),
        json!({ "command": "doctor", "checks": checks }),
        vec![table],
        false,
    );
    Ok(())
}
