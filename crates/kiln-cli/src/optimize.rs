//! `kiln optimize`: flags checked and turned into `OptimizeOptions`, the provider the model is
//! for, then one library call (`GraphOptimizer::run` or `auto::optimize_auto`) and rendering.

use crate::args::{Cli, OptimizeArgs};
use crate::commands::{summary, summary_tables, usage};
use crate::engine::ort_available;
use crate::render::{Reporter, Table};
use anyhow::{Context, Result};
use kiln_infer::{EngineConfig, EngineKind, Model, Provider};
use kiln_optimize::quantize::Calibration;
use kiln_optimize::{GraphLevel, GraphOptimizer, OptimizeOptions, Quantization};
use serde_json::json;
use std::path::{Path, PathBuf};

pub(crate) struct OptimizeFlags<'a> {
    pub(crate) quantization: &'a str,
    pub(crate) level: &'a str,
    pub(crate) passes: Option<Vec<String>>,
    pub(crate) calibration: Option<&'a Path>,
    pub(crate) calibration_method: &'a str,
    pub(crate) validate: Option<PathBuf>,
    pub(crate) min_accuracy_ratio: f64,
    pub(crate) target: &'a str,
    pub(crate) force: bool,
    pub(crate) qdq: kiln_optimize::quantize::QdqOptions,
    pub(crate) form: &'a str,
    pub(crate) engine: Option<&'a str>,
}

/// `kiln optimize --engine auto`.
fn optimize_auto(
    cli: &Cli,
    a: &OptimizeArgs,
    base: OptimizeOptions,
    output: &Path,
    rep: &mut Reporter,
) -> Result<()> {
    use kiln_optimize::auto::{AutoOptions, optimize_auto};
    let mut providers = vec![Provider::Cpu];
    let requested = a.provider.as_deref().unwrap_or("auto");
    if requested == "auto" {
        // Every GPU provider this build knows, probed with errors on; unavailable ones are
        // skipped quietly since nobody asked for them.
        for p in ["cuda:0", "tensorrt:0"] {
            if let Ok(p) = Provider::parse(p) {
                let probe = EngineConfig {
                    kind: EngineKind::Ort,
                    ort_lib: a.ort_lib.clone(),
                    threads: Some(1),
                    provider: p,
                    concurrency: 1,
                };
                if Model::load(&a.model, probe).is_ok() {
                    providers.push(p);
                }
            }
        }
    } else {
        providers.clear();
        for name in requested.split(',') {
            providers.push(Provider::parse(name.trim()).map_err(|e| usage(e.to_string()))?);
        }
    }
    let mut engines = vec![EngineKind::Tract];
    if ort_available(a.ort_lib.as_deref()) {
        engines.push(EngineKind::Ort);
    } else {
        let gpus: Vec<String> = providers
            .iter()
            .filter(|p| **p != Provider::Cpu)
            .map(Provider::to_string)
            .collect();
        let unused = if gpus.is_empty() {
            String::new()
        } else {
            format!("; the requested providers {} are not used", gpus.join(","))
        };
        tracing::warn!(target: "kiln", "ONNX Runtime is not available (scripts/fetch-onnxruntime.sh or --ort-lib), so only tract is measured{unused}");
        if a.strict_provider && providers.iter().any(|p| *p != Provider::Cpu) {
            return Err(usage(
                "--strict-provider: the requested providers need ONNX Runtime, which is not available",
            ));
        }
    }
    let opts = AutoOptions {
        base,
        engines,
        providers,
        strict_provider: a.strict_provider,
        batch_size: a.batch_size.unwrap_or(64),
        ort_lib: a.ort_lib.clone(),
        ..AutoOptions::default()
    };
    let r = optimize_auto(&a.model, output, &opts, rep)?;
    let mut table = Table::new(
        format!("candidates (batch {})", r.batch_size),
        &[
            "form", "engine", "provider", "threads", "accuracy", "gate", "rows/s", "p50 us",
            "bytes",
        ],
    );
    for (i, c) in r.candidates.iter().enumerate() {
        table.row(vec![
            format!(
                "{}{}",
                if i == r.chosen { "* " } else { "" },
                kiln_optimize::auto::variant_name(c.quantization, c.form)
            ),
            c.engine.to_string(),
            c.provider.clone(),
            c.threads.map(|t| t.to_string()).unwrap_or_default(),
            c.accuracy
                .map(|x| format!("{x:.4}"))
                .or(c.rmse.map(|x| format!("rmse {x:.4}")))
                .unwrap_or_default(),
            if c.passes_gate { "pass" } else { "fail" }.into(),
            format!("{:.0}", c.rows_per_second),
            c.p50_us.to_string(),
            c.bytes.to_string(),
        ]);
    }
    let mut plots = Vec::new();
    if let Some(dir) = &a.plots {
        let scored: Vec<kiln_report::Candidate> = r
            .candidates
            .iter()
            .filter_map(|c| {
                Some(kiln_report::Candidate {
                    label: format!(
                        "{} / {}{}",
                        kiln_optimize::auto::variant_name(c.quantization, c.form),
                        c.engine,
                        c.threads.map(|t| format!(" x{t}")).unwrap_or_default()
                    ),
                    rows_per_second: c.rows_per_second,
                    accuracy: c.accuracy?,
                })
            })
            .collect();
        if scored.is_empty() {
            tracing::warn!(target: "kiln", "no accuracy to plot (a regression model); see the table");
        } else {
            plots.push(kiln_report::write_plot(
                &kiln_report::Plot::AccuracyVsSpeed {
                    title: format!("candidates at batch {}", r.batch_size),
                    candidates: scored,
                },
                dir,
                "accuracy_vs_speed",
            )?);
        }
    }
    let c = r.choice();
    let mut human = table.human();
    human.push_str(&format!(
        "chosen: {} form in {}{}{} ({:.0} rows/s at batch {}), written to {} with the choice in its metadata",
        kiln_optimize::auto::variant_name(c.quantization, c.form),
        c.engine,
        if c.engine == "ort" { format!(" on {}", c.provider) } else { String::new() },
        c.threads.map(|t| format!(" with {t} threads")).unwrap_or_default(),
        c.rows_per_second,
        r.batch_size,
        output.display()
    ));
    for s in &r.skipped {
        human.push_str(&format!("\nnot measured: {} ({})", s.what, s.reason));
    }
    summary_tables(
        cli,
        &human,
        json!({ "command": "optimize", "output": output, "auto": r, "plots": plots }),
        vec![table],
        false,
    );
    Ok(())
}

pub(crate) fn optimize_opts(f: OptimizeFlags<'_>) -> Result<OptimizeOptions> {
    if f.quantization == "static" && f.calibration.is_none() {
        return Err(usage(
            "--quantization static requires --calibration-data <CSV>",
        ));
    }
    if !(f.min_accuracy_ratio > 0.0 && f.min_accuracy_ratio <= 1.0) {
        return Err(usage(format!(
            "--min-accuracy-ratio must be in (0, 1], got {}",
            f.min_accuracy_ratio
        )));
    }
    Ok(OptimizeOptions {
        level: GraphLevel::parse(f.level).map_err(|e| usage(e.to_string()))?,
        passes: f.passes,
        quantization: Quantization::parse(f.quantization).map_err(|e| usage(e.to_string()))?,
        calibration_data: f.calibration.map(Path::to_path_buf),
        calibration: Calibration::parse(f.calibration_method).map_err(|e| usage(e.to_string()))?,
        validate_data: f.validate,
        min_accuracy_ratio: f.min_accuracy_ratio,
        target: f.target.to_string(),
        force: f.force,
        qdq: f.qdq,
        form: match kiln_optimize::OnnxForm::parse(f.form).map_err(|e| usage(e.to_string()))? {
            kiln_optimize::OnnxForm::Auto => match f.engine {
                Some(engine @ ("tract" | "ort")) => {
                    let q =
                        Quantization::parse(f.quantization).map_err(|e| usage(e.to_string()))?;
                    kiln_optimize::OnnxForm::for_engine(q, engine)
                }
                _ => kiln_optimize::OnnxForm::Auto,
            },
            form => form,
        },
    })
}

pub(crate) fn optimize(cli: &Cli, a: &OptimizeArgs, rep: &mut Reporter) -> Result<()> {
    // --provider alone means the ONNX Runtime form, as `engine_and_provider` rules elsewhere.
    let engine = match (a.engine.as_deref(), &a.provider) {
        (Some(e), _) => Some(e),
        (None, Some(_)) => Some("ort"),
        (None, None) => None,
    };
    kiln_optimize::OnnxForm::parse(&a.onnx_form).map_err(|e| usage(e.to_string()))?;
    refuse_ignored_optimize_flags(a, engine)?;
    let provider = match (engine, a.provider.as_deref()) {
        (Some("ort"), Some(p)) => Some(optimize_provider(a, p)?),
        _ => None,
    };
    let tensorrt = provider
        .as_ref()
        .is_some_and(|p| p.requested.starts_with("tensorrt"));
    let opts = optimize_opts(OptimizeFlags {
        quantization: &a.quantization,
        level: &a.graph_level,
        passes: a.passes.clone(),
        calibration: a.calibration_data.as_deref(),
        calibration_method: &a.calibration_method,
        validate: a.validate_data.clone(),
        min_accuracy_ratio: a.min_accuracy_ratio,
        target: &a.target,
        force: a.force,
        qdq: kiln_optimize::quantize::QdqOptions {
            symmetric_activations: a.symmetric_activations,
            per_channel_weights: !a.per_tensor_weights,
        },
        // TensorRT builds its int8 engines from QDQ graphs.
        form: if tensorrt && a.onnx_form == "auto" {
            "qdq"
        } else {
            &a.onnx_form
        },
        engine,
    })?;
    let output = a.output.clone().unwrap_or_else(|| {
        kiln_optimize::default_output(&a.model, opts.quantization, engine == Some("auto"))
    });
    if engine == Some("auto") {
        return optimize_auto(cli, a, opts, &output, rep);
    }
    let r = GraphOptimizer::new(opts).run(&a.model, &output, rep)?;
    let ort_check = match &provider {
        Some(p) if p.engine == "ort" => Some(check_in_ort(a, &output, p)?),
        _ => None,
    };
    let mut human = format!(
        "optimized {} -> {}\nsize {} -> {} bytes ({:.1}%), nodes {} -> {}\n{}",
        a.model.display(),
        output.display(),
        r.bytes_before,
        r.bytes_after,
        100.0 * r.bytes_after as f64 / r.bytes_before.max(1) as f64,
        r.nodes_before,
        r.nodes_after,
        r.comparison.summary()
    );
    if let Some(ratio) = r.comparison.accuracy_ratio() {
        human.push_str(&format!("\naccuracy ratio (optimized / input): {ratio:.4}"));
    }
    for k in &r.kept_float {
        human.push_str(&format!("\nkept in float by the accuracy gate: {k}"));
    }
    if let Some(c) = &ort_check {
        human.push_str(&format!(
            "\nran in ONNX Runtime on {}: {} rows, max abs diff from tract {:.3e}",
            c.provider, c.rows, c.max_abs_diff
        ));
    }
    summary(
        cli,
        &human,
        json!({ "command": "optimize", "output": output, "report": r, "accuracy_ratio": r.comparison.accuracy_ratio(),
            "provider": provider, "ort_check": ort_check }),
        false,
    );
    Ok(())
}

/// Flags that would otherwise be parsed and silently ignored by `kiln optimize`.
fn refuse_ignored_optimize_flags(a: &OptimizeArgs, engine: Option<&str>) -> Result<()> {
    let auto = engine == Some("auto");
    let refuse = |msg: String| Err(usage(msg));
    if a.symmetric_activations && a.quantization != "static" && !auto {
        return refuse("--symmetric-activations shapes static quantization; add --quantization static (with --calibration-data)".into());
    }
    if a.per_tensor_weights && !matches!(a.quantization.as_str(), "static" | "dynamic") && !auto {
        return refuse("--per-tensor-weights shapes dynamic or static quantization; add --quantization dynamic (or static with --calibration-data)".into());
    }
    if a.calibration_data.is_some() && a.quantization != "static" && !auto {
        return refuse("--calibration-data calibrates static quantization; add --quantization static (or --engine auto, which tries it)".into());
    }
    if !auto && (a.batch_size.is_some() || a.plots.is_some()) {
        return refuse("--batch-size and --plots set how --engine auto measures its candidates; add --engine auto or drop them".into());
    }
    match engine {
        None | Some("tract" | "ort" | "auto") => {}
        Some(other) => {
            return refuse(format!(
                "unknown --engine {other:?} for optimize; use tract or ort (the engine the model is for), or auto (measure and choose)"
            ));
        }
    }
    if auto && a.quantization != "none" {
        return refuse(format!(
            "--engine auto tries every quantized form itself; drop --quantization {}",
            a.quantization
        ));
    }
    if auto && a.onnx_form != "auto" {
        return refuse(format!(
            "--engine auto tries every ONNX form itself; drop --onnx-form {}",
            a.onnx_form
        ));
    }
    if let (Some("tract"), Some(p)) = (engine, &a.provider) {
        return refuse(format!(
            "--provider {p} is an ONNX Runtime execution provider and tract runs on the CPU only; use --engine ort (or --provider alone)"
        ));
    }
    if a.quantization == "none" && !auto && a.onnx_form != "auto" {
        return refuse(format!(
            "--onnx-form {} chooses how a quantized model is written; add --quantization dynamic or static",
            a.onnx_form
        ));
    }
    let form_only = engine == Some("tract") || (engine == Some("ort") && a.provider.is_none());
    if a.quantization == "none" && form_only {
        return refuse(format!(
            "--engine {} chooses the ONNX form of a quantized model; add --quantization dynamic or static, or drop --engine",
            engine.unwrap_or_default()
        ));
    }
    Ok(())
}

/// `kiln optimize --provider P`: checks, before anything is written, where ONNX Runtime will run
/// the model: P, or the CPU with a loud warning (an error with --strict-provider); tract when
/// ONNX Runtime itself is not here.
fn optimize_provider(a: &OptimizeArgs, name: &str) -> Result<kiln_infer::ProviderChoice> {
    let provider = Provider::parse(name).map_err(|e| usage(e.to_string()))?;
    let config = EngineConfig {
        kind: EngineKind::Ort,
        ort_lib: a.ort_lib.clone(),
        threads: Some(1),
        provider,
        concurrency: 1,
    };
    let choice = match kiln_infer::load_on_provider(&a.model, config, a.strict_provider) {
        Ok((_, choice)) => choice,
        Err(kiln_infer::InferError::EngineUnavailable { reason, .. }) if !a.strict_provider => {
            kiln_infer::ProviderChoice {
                engine: "tract",
                requested: provider.to_string(),
                actual: Provider::Cpu.to_string(),
                fallback: Some(format!(
                    "ONNX Runtime is not available ({reason}), so the model is written in its ONNX Runtime form but checked in tract only"
                )),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(w) = choice.warning() {
        tracing::warn!(target: "kiln", "{w}");
    }
    Ok(choice)
}

/// Runs the written model in ONNX Runtime on the provider it is for, next to tract.
fn check_in_ort(
    a: &OptimizeArgs,
    output: &Path,
    choice: &kiln_infer::ProviderChoice,
) -> Result<kiln_optimize::EngineCheck> {
    let provider = Provider::parse(&choice.actual).map_err(|e| usage(e.to_string()))?;
    let config = EngineConfig {
        kind: EngineKind::Ort,
        ort_lib: a.ort_lib.clone(),
        threads: Some(1),
        provider,
        concurrency: 1,
    };
    kiln_optimize::check_in_engine(output, config).with_context(|| {
        format!(
            "{} was written but does not run in ONNX Runtime on {provider}",
            output.display()
        )
    })
}
