//! `kiln bench` and `kiln profile`: measure a model (or a server) and render the tables.

use crate::args::{BenchArgs, Cli, ProfileArgs};
use crate::commands::{summary, summary_tables, usage};
use crate::engine::{bench_provider, ort_available};
use crate::render::{Reporter, Table};
use anyhow::Result;
use kiln_infer::{EngineConfig, EngineKind, Model, Provider};
use kiln_optimize::{GraphOptimizer, OptimizeOptions, Quantization};
use serde_json::json;
use std::path::PathBuf;

pub(crate) fn bench(cli: &Cli, a: &BenchArgs, rep: &mut Reporter) -> Result<()> {
    if let Some(url) = &a.server {
        return crate::serve::bench_server(cli, a, url);
    }
    let model_path = a
        .model
        .as_deref()
        .ok_or_else(|| usage("kiln bench needs a model file, or --server <URL>"))?;
    if a.batch_sizes.is_empty() || a.batch_sizes.contains(&0) {
        return Err(usage("--batch-sizes needs positive sizes, e.g. 1,8,64"));
    }
    if a.seconds.is_nan() || a.seconds <= 0.0 {
        return Err(usage("--seconds must be positive"));
    }
    if let Some(n) = a.leak_check {
        if let Some(p) = &a.provider.provider {
            return Err(usage(format!(
                "--leak-check runs tract on the CPU, so --provider {p} would be ignored; drop one of them"
            )));
        }
        let model = Model::load(model_path, EngineKind::Tract)?;
        let r = kiln_infer::leak_check(&model, a.batch_sizes[0], n)?;
        let human = format!(
            "{} predictions of {} rows: RSS {} -> {} KiB ({:+.2}%, limit {}%)",
            r.iterations,
            r.batch_size,
            r.rss_baseline_bytes / 1024,
            r.rss_final_bytes / 1024,
            r.growth_percent,
            a.max_growth
        );
        summary(
            cli,
            &human,
            json!({ "command": "bench", "leak_check": r, "max_growth_percent": a.max_growth }),
            false,
        );
        if r.growth_percent > a.max_growth {
            anyhow::bail!(
                "memory grew by {:.2}% over {} predictions, above the {}% limit: a leak?",
                r.growth_percent,
                r.iterations,
                a.max_growth
            );
        }
        return Ok(());
    }
    let mut engines = Vec::new();
    for name in &a.engines {
        let config = |kind| EngineConfig {
            kind,
            ort_lib: a.ort_lib.clone(),
            threads: a.threads,
            provider: Provider::Cpu,
            concurrency: a.workers.iter().copied().max().unwrap_or(1),
        };
        if name == "auto" {
            engines.push(config(EngineKind::Tract));
            if ort_available(a.ort_lib.as_deref()) {
                engines.push(config(EngineKind::Ort));
            } else {
                eprintln!(
                    "note: ONNX Runtime library not found, benchmarking tract only (scripts/fetch-onnxruntime.sh)"
                );
            }
        } else {
            engines.push(config(
                EngineKind::parse(name).map_err(|e| usage(e.to_string()))?,
            ));
        }
    }
    if a.workers.is_empty() || a.workers.contains(&0) {
        return Err(usage("--workers needs positive counts, e.g. 1,2"));
    }
    if a.ort_lib.is_some() && engines.iter().all(|e| e.kind == EngineKind::Tract) {
        return Err(usage(
            "--ort-lib points at ONNX Runtime, and only tract is benchmarked; add --engines ort (or auto), or drop --ort-lib",
        ));
    }
    let provider = bench_provider(model_path, &mut engines, &a.provider)?;
    // What is measured, all in this one run: the model as given ("suite" 0, the baseline of
    // the ratio column), its int8 forms with --int8, and the configuration recorded in it by
    // `kiln optimize --engine auto`.
    let form_of = |m: &kiln_onnx::proto::ModelProto| match (
        kiln_onnx::metadata_value(m, "kiln.optimize.quantization"),
        kiln_onnx::metadata_value(m, "kiln.optimize.form"),
    ) {
        (Some(q), Some(f)) if q != "none" => format!("{q}-{f}"),
        (Some(q), None) if q != "none" => q.to_string(),
        _ => "f32".to_string(),
    };
    let given = kiln_onnx::load(model_path)?;
    let mut suites: Vec<(String, PathBuf, Vec<EngineConfig>)> =
        vec![(form_of(&given), model_path.to_path_buf(), engines.clone())];
    // Holds the int8 models until the sweep is over.
    let mut work = None;
    if a.int8 {
        let dir: &tempfile::TempDir = work.insert(tempfile::tempdir()?);
        for (form, kind) in [
            (kiln_optimize::OnnxForm::Kiln, EngineKind::Tract),
            (kiln_optimize::OnnxForm::Integer, EngineKind::Ort),
        ] {
            let configs: Vec<EngineConfig> =
                engines.iter().filter(|e| e.kind == kind).cloned().collect();
            if configs.is_empty() {
                continue;
            }
            let out = dir.path().join(format!("int8-{}.onnx", form.name()));
            GraphOptimizer::new(OptimizeOptions {
                quantization: Quantization::Dynamic,
                form,
                force: true,
                ..OptimizeOptions::default()
            })
            .run(model_path, &out, &mut kiln_core::NullSink)?;
            suites.push((format!("int8-{}", form.name()), out, configs));
        }
    }
    let recorded_base = EngineConfig {
        ort_lib: a.ort_lib.clone(),
        ..EngineConfig::default()
    };
    match kiln_infer::recorded_engine(model_path, &recorded_base) {
        Some(Ok((config, _))) => {
            suites.push(("auto".into(), model_path.to_path_buf(), vec![config]));
        }
        Some(Err(e)) => {
            tracing::warn!(target: "kiln", "the engine choice recorded in the model does not load here: {e}")
        }
        None => {}
    }
    let mut runs: Vec<(String, kiln_infer::BenchResult)> = Vec::new();
    let mut reports = Vec::new();
    for (label, path, configs) in &suites {
        let opts = kiln_infer::BenchOptions {
            engines: configs.clone(),
            batch_sizes: a.batch_sizes.clone(),
            workers: a.workers.clone(),
            min_seconds: a.seconds,
            min_iterations: 20,
            warmup: a.warmup,
        };
        let r = kiln_infer::bench(path, &opts, rep)?;
        runs.extend(r.results.iter().map(|x| (label.clone(), x.clone())));
        reports.push(json!({ "model": label, "report": r }));
    }
    let baseline = suites[0].0.clone();
    let best_direct = |batch: usize, workers: usize| {
        runs.iter()
            .filter(|(l, x)| *l == baseline && x.batch_size == batch && x.workers == workers)
            .map(|(_, x)| x.rows_per_second)
            .fold(0.0f64, f64::max)
    };
    let ratios: Vec<f64> = runs
        .iter()
        .map(|(_, x)| {
            x.rows_per_second / best_direct(x.batch_size, x.workers).max(f64::MIN_POSITIVE)
        })
        .collect();
    let mut table = Table::new(
        "bench",
        &[
            "model",
            "engine",
            "threads",
            "batch",
            "workers",
            "rows/s",
            "p50 us",
            "p95 us",
            "p99 us",
            "cores busy",
            "vs best",
        ],
    );
    for ((label, x), ratio) in runs.iter().zip(&ratios) {
        table.row(vec![
            label.clone(),
            x.engine.to_string(),
            x.threads.map(|t| t.to_string()).unwrap_or_default(),
            x.batch_size.to_string(),
            x.workers.to_string(),
            format!("{:.0}", x.rows_per_second),
            x.latency.p50_us.to_string(),
            x.latency.p95_us.to_string(),
            x.latency.p99_us.to_string(),
            x.cores_busy.map(|c| format!("{c:.2}")).unwrap_or_default(),
            format!("{ratio:.2}x"),
        ]);
    }
    let mut human = table.human();
    if suites.len() > 1 {
        human.push_str(&format!(
            "vs best: rows/s over the best {baseline} configuration at the same batch size and workers\n"
        ));
    }
    let best = runs
        .iter()
        .max_by(|a, b| a.1.rows_per_second.total_cmp(&b.1.rows_per_second))
        .map(|(l, x)| (l.clone(), x.clone()))
        .ok_or_else(|| anyhow::anyhow!("the benchmark measured nothing"))?;
    let best_latency = runs
        .iter()
        .filter(|(_, x)| x.batch_size == 1)
        .min_by_key(|(_, x)| x.latency.p95_us)
        .map(|(l, x)| (l.clone(), x.clone()));
    let r = reports
        .first()
        .and_then(|v| v.get("report"))
        .cloned()
        .unwrap_or_default();
    let mut plots = Vec::new();
    if let Some(dir) = &a.plots {
        for (label, x) in &runs {
            let stem = if suites.len() > 1 {
                format!(
                    "latency-{label}-{}-b{}-w{}",
                    x.engine, x.batch_size, x.workers
                )
            } else {
                format!("latency-{}-b{}-w{}", x.engine, x.batch_size, x.workers)
            };
            let buckets = x
                .latency
                .histogram
                .iter()
                .map(|b| (b.from_us, b.to_us, b.count))
                .collect();
            plots.push(kiln_report::write_plot(
                &kiln_report::Plot::LatencyHistogram {
                    title: format!(
                        "{} batch {} workers {}: p50 {} us, p99 {} us",
                        x.engine, x.batch_size, x.workers, x.latency.p50_us, x.latency.p99_us
                    ),
                    buckets,
                },
                dir,
                &stem,
            )?);
        }
    }
    let (best_label, best) = &best;
    let named = |label: &str, engine: &str| {
        if suites.len() > 1 {
            format!("{label} in {engine}")
        } else {
            engine.to_string()
        }
    };
    human.push_str(&format!(
        "highest throughput: {} at batch {} with {} worker(s) ({:.0} rows/s)",
        named(best_label, best.engine),
        best.batch_size,
        best.workers,
        best.rows_per_second
    ));
    if let Some((label, l)) = &best_latency {
        human.push_str(&format!(
            "\nlowest single-row p95 latency: {} ({} us)",
            named(label, l.engine),
            l.latency.p95_us
        ));
    }
    if let Some(dir) = &a.plots {
        human.push_str(&format!(
            "\nlatency histograms: {} (SVG and PNG)",
            dir.display()
        ));
    }
    summary_tables(
        cli,
        &human,
        json!({ "command": "bench", "model": model_path, "report": r, "suites": reports, "provider": provider, "ratios": ratios, "plots": plots }),
        vec![table],
        false,
    );
    Ok(())
}

#[cfg(feature = "ort")]
fn profile_ort(a: &ProfileArgs) -> Result<kiln_infer::profile::Profile> {
    let opts = kiln_infer::ort_engine::OrtOptions {
        lib: a.ort_lib.clone(),
        threads: a.threads,
        sessions: 1,
        ..Default::default()
    };
    Ok(kiln_infer::profile::profile_ort(
        &a.model,
        a.batch_size,
        a.iterations,
        &opts,
        a.trace.as_deref(),
    )?)
}

#[cfg(not(feature = "ort"))]
fn profile_ort(_a: &ProfileArgs) -> Result<kiln_infer::profile::Profile> {
    Err(usage(
        "this kiln was built without the ort engine; rebuild with `--features ort` to profile in ONNX Runtime",
    ))
}

pub(crate) fn profile(cli: &Cli, a: &ProfileArgs) -> Result<()> {
    if a.batch_size == 0 || a.iterations == 0 {
        return Err(usage("--batch-size and --iterations must be at least 1"));
    }
    let p = match a.engine.as_str() {
        "tract" => {
            if a.trace.is_some() || a.threads.is_some() || a.ort_lib.is_some() {
                return Err(usage(
                    "--trace, --threads and --ort-lib profile ONNX Runtime; add --engine ort",
                ));
            }
            kiln_infer::profile::profile(&a.model, a.batch_size, a.iterations)?
        }
        "ort" => {
            if a.trace
                .as_deref()
                .is_some_and(|t| kiln_core::fsutil::same_file(t, &a.model))
            {
                return Err(usage(
                    "--trace names the model file itself; choose another path for the trace",
                ));
            }
            profile_ort(a)?
        }
        other => {
            return Err(usage(format!(
                "unknown --engine {other:?} for profile; use tract or ort"
            )));
        }
    };
    let mut s = format!(
        "{} in {} at batch {} over {} runs: {:.1} us per run, {:.3} GFLOP/s ({:.1}% of the {:.0} GFLOP/s peak: {} cores x {} x {:.2} GHz)\n",
        a.model.display(),
        p.engine,
        p.batch_size,
        p.iterations,
        p.run_mean_us,
        p.gflops,
        100.0 * p.peak_fraction,
        p.peak.peak_gflops,
        p.peak.cores,
        p.peak.simd,
        p.peak.ghz
    );
    s.push_str(&format!(
        "weights {} bytes, activations {} bytes per run{}\n",
        p.weights_bytes,
        p.activation_bytes,
        p.peak_rss_bytes
            .map(|b| format!(", peak RSS {} MiB", b / (1024 * 1024)))
            .unwrap_or_default()
    ));
    if let Some(t) = &p.trace {
        s.push_str(&format!(
            "ONNX Runtime's trace: {} (open in chrome://tracing or ui.perfetto.dev)\n",
            t.display()
        ));
    }
    s.push_str(&format!(
        "{:<40} {:<22} {:>10} {:>7} {:>12} {:>9}\n",
        "node", "op", "mean us", "share", "FLOPs", "GFLOP/s"
    ));
    for n in p.nodes.iter().take(a.top) {
        s.push_str(&format!(
            "{:<40} {:<22} {:>10.2} {:>6.1}% {:>12} {:>9.3}\n",
            n.name,
            n.op,
            n.mean_us,
            100.0 * n.share,
            n.flops,
            n.gflops
        ));
    }
    let mut nodes = Table::new(
        "nodes",
        &["node", "op", "mean us", "share %", "FLOPs", "GFLOP/s"],
    );
    for n in p.nodes.iter().take(a.top) {
        nodes.row(vec![
            n.name.clone(),
            n.op.clone(),
            format!("{:.2}", n.mean_us),
            format!("{:.1}", 100.0 * n.share),
            n.flops.to_string(),
            format!("{:.3}", n.gflops),
        ]);
    }
    let overview = Table::from_json(
        "profile",
        &json!({ "model": a.model, "engine": p.engine, "batch_size": p.batch_size, "iterations": p.iterations,
            "run_mean_us": p.run_mean_us, "gflops": p.gflops, "peak_fraction": p.peak_fraction,
            "peak_gflops": p.peak.peak_gflops, "weights_bytes": p.weights_bytes,
            "activation_bytes": p.activation_bytes }),
    );
    summary_tables(
        cli,
        s.trim_end(),
        json!({ "command": "profile", "model": a.model, "profile": p }),
        vec![overview, nodes],
        false,
    );
    Ok(())
}
