//! `kiln infer`: open the model as asked, run a file or a stream through it, write the
//! predictions and render the report.

use crate::args::{Cli, InferArgs};
use crate::commands::{class_tables, class_text};
use crate::commands::{summary, summary_tables, usage};
use crate::engine::{engine_and_provider, open_model};
use crate::render::{Reporter, Table};
use anyhow::Result;
use kiln_infer::{BatchOptions, EngineConfig, EngineKind, OutputFormat};
use serde_json::json;

pub(crate) fn infer(cli: &Cli, a: &InferArgs, rep: &mut Reporter) -> Result<()> {
    if let Some(out) = &a.output
        && out.exists()
        && !a.force
    {
        return Err(usage(format!(
            "{} already exists; pass --force to overwrite it",
            out.display()
        )));
    }
    if a.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1"));
    }
    let (engine_name, _) = engine_and_provider(a.engine.as_deref(), &a.provider)?;
    let kind = EngineKind::parse(&engine_name).map_err(|e| usage(e.to_string()))?;
    let workers = match (a.workers, kind) {
        (0, EngineKind::Tract) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (0, _) => 1,
        (n, _) => n,
    };
    // `auto` measures the available engines on this model at the batch size in use.
    let kiln_infer::Opened {
        model,
        provider,
        auto,
        ..
    } = open_model(
        &a.model,
        a.engine.as_deref(),
        &a.provider,
        EngineConfig {
            ort_lib: a.ort_lib.clone(),
            threads: a.threads,
            concurrency: workers,
            ..EngineConfig::default()
        },
        if a.stream { 1 } else { a.batch_size },
    )?;
    let explicit_format = match a.input_format.as_deref() {
        None => None,
        Some("csv") => Some(kiln_data::Format::Csv),
        Some("jsonl") => Some(kiln_data::Format::Jsonl),
        Some("npy") => Some(kiln_data::Format::Npy),
        Some(other) => {
            return Err(usage(format!(
                "unknown --input-format {other:?}; use csv, jsonl or npy"
            )));
        }
    };
    let format = explicit_format.unwrap_or(kiln_data::Format::Csv);
    let warmup_seconds = if a.warmup > 0 {
        let sizes = if a.stream {
            vec![1]
        } else {
            vec![a.batch_size]
        };
        Some(model.warmup(&sizes, a.warmup)?)
    } else {
        None
    };
    if a.stream {
        let opts = kiln_infer::StreamOptions {
            format,
            output: OutputFormat::Csv,
            target: a.target.clone(),
        };
        let stdin = std::io::stdin();
        let r = kiln_infer::infer_stream(&model, stdin.lock(), std::io::stdout(), &opts)?;
        let l = &r.latency;
        let human = format!(
            "{} rows streamed: {} predicted, {} errors; latency per row p50 {} us, p95 {} us, p99 {} us, max {} us",
            r.rows, r.ok, r.failed, l.p50_us, l.p95_us, l.p99_us, l.max_us
        );
        summary(
            cli,
            &human,
            json!({ "command": "infer", "stream": true, "engine": model.engine_name(), "provider": provider, "warmup_seconds": warmup_seconds, "report": r }),
            true,
        );
        return Ok(());
    }
    let data = a
        .data
        .clone()
        .ok_or_else(|| usage("missing input: pass --data <FILE> (or - for stdin), or --stream"))?;
    // An explicit --format wins; otherwise stdin is CSV and files go by their extension.
    let explicit = explicit_format.or_else(|| (data.as_os_str() == "-").then_some(format));
    let allow_non_finite = match a.non_finite.as_str() {
        "reject" => false,
        "pass" => true,
        other => {
            return Err(usage(format!(
                "unknown --non-finite {other:?}; use reject or pass"
            )));
        }
    };
    let opts = BatchOptions {
        batch_size: a.batch_size,
        target: a.target.clone(),
        format: explicit,
        workers,
        allow_non_finite,
    };
    let report = kiln_infer::infer_file(&model, &data, &opts, rep)?;
    let format = a
        .output
        .as_deref()
        .map(OutputFormat::from_path)
        .unwrap_or(OutputFormat::Csv);
    kiln_infer::write_predictions(&model, &report, a.output.as_deref(), format)?;
    let mut human = format!(
        "{} rows: {} predicted, {} errors ({:.0} rows/s in {})",
        report.rows,
        report.ok,
        report.failed,
        report.rows_per_second,
        model.engine_name()
    );
    if let Some(r) = &report.regression {
        human.push_str(&format!(
            "\nRMSE {:.4}, MAE {:.4}, R² {:.4} on {} labelled rows",
            r.rmse, r.mae, r.r2, r.labelled
        ));
    }
    match (&report.classification, report.accuracy) {
        (Some(c), _) => {
            human.push('\n');
            human.push_str(&class_text(c));
        }
        (None, Some(acc)) => human.push_str(&format!(
            "\naccuracy {acc:.4} on {} labelled rows",
            report.labelled
        )),
        _ => {}
    }
    if let Some(o) = &a.output {
        human.push_str(&format!("\npredictions: {}", o.display()));
    }
    let b = &report.batch_latency;
    human.push_str(&format!(
        "\nengine time per batch of {}: p50 {} us, p95 {} us, p99 {} us",
        a.batch_size, b.p50_us, b.p95_us, b.p99_us
    ));
    if let Some(w) = warmup_seconds {
        human.push_str(&format!("\nwarm-up: {w:.3}s"));
    }
    let mut tables = vec![Table::from_json(
        "infer",
        &json!({ "rows": report.rows, "ok": report.ok, "failed": report.failed, "accuracy": report.accuracy,
            "regression": report.regression, "rows_per_second": report.rows_per_second, "engine": model.engine_name(),
            "batch_p50_us": b.p50_us, "batch_p95_us": b.p95_us, "batch_p99_us": b.p99_us, "output": a.output }),
    )];
    if let Some(c) = &report.classification {
        tables.extend(class_tables("infer", c));
    }
    summary_tables(
        cli,
        &human,
        json!({ "command": "infer", "output": a.output, "engine": model.engine_name(), "provider": provider, "auto": auto, "warmup_seconds": warmup_seconds, "report": report }),
        tables,
        a.output.is_none(),
    );
    Ok(())
}
