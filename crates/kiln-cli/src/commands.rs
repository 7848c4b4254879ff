use crate::args::{
    Cli, Command, CompareArgs, ExportArgs, Format, InspectArgs, PackageArgs, PipelineArgs,
    RunFlags, RunsAction, RunsArgs, TrainArgs, TrainFlags,
};
use crate::engine::ort_available;
use crate::optimize::{OptimizeFlags, optimize, optimize_opts};
use crate::render::{Reporter, Table, print_tables};
use crate::{
    doctor::doctor,
    infer::infer,
    measure::{bench, profile},
};
use anyhow::{Context, Result};
use kiln_core::{Dataset, TrainedModel};
use kiln_export::{ExportOptions, OnnxExporter};
use kiln_infer::{BatchOptions, EngineConfig, EngineKind, Model, OutputFormat};
use kiln_optimize::GraphOptimizer;
use kiln_train::{BurnTrainer, ConfigFile, TrainConfig, TrainOutcome};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// A usage or configuration error (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

pub fn run(cli: &Cli) -> Result<()> {
    let mut rep = Reporter::new(cli.quiet);
    match &cli.command {
        Command::Train(a) => train(cli, a, &mut rep),
        Command::Export(a) => export(cli, a, &mut rep),
        Command::Optimize(a) => optimize(cli, a, &mut rep),
        Command::Infer(a) => infer(cli, a, &mut rep),
        Command::Pipeline(a) => pipeline(cli, a, &mut rep),
        Command::Inspect(a) => inspect(cli, a),
        Command::Bench(a) => bench(cli, a, &mut rep),
        Command::Compare(a) => compare(cli, a),
        Command::Package(a) => package(cli, a, &mut rep),
        Command::Profile(a) => profile(cli, a),
        Command::Serve(a) => crate::serve::serve(cli, a),
        Command::Worker { listen } => worker(listen),
        Command::Doctor => doctor(cli),
        Command::Runs(a) => runs(cli, a),
        Command::Init(a) => crate::init::init(cli, a),
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("rendering the man page")?;
            use std::io::Write;
            std::io::stdout()
                .write_all(&out)
                .context("writing the man page")?;
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "kiln", &mut std::io::stdout());
            Ok(())
        }
    }
}

impl Cli {
    /// The output format: --json wins, else --format.
    pub fn output_format(&self) -> Format {
        if self.json { Format::Json } else { self.format }
    }
}

/// Prints the result with its key/value table for --format csv|markdown. See [`summary_tables`].
pub(crate) fn summary(cli: &Cli, human: &str, value: serde_json::Value, to_stderr: bool) {
    summary_tables(cli, human, value, Vec::new(), to_stderr);
}

/// Prints the result: the human text, one JSON object (with `resources` added), or the result
/// tables as CSV/Markdown (a key/value table of the JSON when `tables` is empty). `to_stderr`
/// is used when stdout carries data (predictions). In human mode the command's resource use
/// follows on stderr.
pub(crate) fn summary_tables(
    cli: &Cli,
    human: &str,
    mut value: serde_json::Value,
    tables: Vec<Table>,
    to_stderr: bool,
) {
    if let Some(o) = value.as_object_mut() {
        o.entry("resources")
            .or_insert_with(crate::runstate::resources);
    }
    let emit = |text: &str| crate::render::write_out(&format!("{text}\n"), to_stderr);
    match cli.output_format() {
        Format::Json => emit(&serde_json::to_string_pretty(&value).unwrap_or_default()),
        Format::Human => {
            emit(human);
            // Commands that do real work report what it cost; quick look-ups only with -v.
            let line = crate::runstate::resources_line();
            if matches!(
                cli.command,
                Command::Runs(_) | Command::Init(_) | Command::Doctor | Command::Inspect(_)
            ) {
                tracing::debug!(target: "kiln", "resources: {line}");
            } else {
                tracing::info!(target: "kiln", "resources: {line}");
            }
        }
        f @ (Format::Csv | Format::Markdown) => {
            let tables = if tables.is_empty() {
                vec![Table::from_json("result", &value)]
            } else {
                tables
            };
            print_tables(f, &tables, to_stderr);
        }
    }
}

/// Per-class precision/recall/F1 and the confusion matrix as tables.
pub(crate) fn class_tables(
    title: &str,
    r: &kiln_core::metrics::ClassificationReport,
) -> Vec<Table> {
    let mut per = Table::new(
        format!("{title}: per class"),
        &["class", "precision", "recall", "f1", "support"],
    );
    for c in &r.per_class {
        per.row(vec![
            c.class.clone(),
            format!("{:.4}", c.precision),
            format!("{:.4}", c.recall),
            format!("{:.4}", c.f1),
            c.support.to_string(),
        ]);
    }
    per.row(vec![
        "macro avg".into(),
        format!("{:.4}", r.macro_precision),
        format!("{:.4}", r.macro_recall),
        format!("{:.4}", r.macro_f1),
        r.rows.to_string(),
    ]);
    let mut headers = vec!["true \\ predicted".to_string()];
    headers.extend(r.classes.iter().cloned());
    let mut confusion = Table {
        title: format!("{title}: confusion matrix"),
        headers,
        rows: Vec::new(),
    };
    for (class, row) in r.classes.iter().zip(&r.confusion) {
        let mut cells = vec![class.clone()];
        cells.extend(row.iter().map(u64::to_string));
        confusion.row(cells);
    }
    vec![per, confusion]
}

/// The human form of a class report: accuracy and macro scores, then per class.
pub(crate) fn class_text(r: &kiln_core::metrics::ClassificationReport) -> String {
    let mut s = format!(
        "accuracy {:.4}, macro precision {:.4}, recall {:.4}, F1 {:.4} on {} rows",
        r.accuracy, r.macro_precision, r.macro_recall, r.macro_f1, r.rows
    );
    for t in class_tables("", r) {
        s.push('\n');
        s.push_str(t.human().trim_end());
    }
    s
}

/// The run directory: --out, else the config file's `out`, else
/// `<runs-dir>/<timestamp>-<name>`.
fn run_dir(
    out: Option<PathBuf>,
    file_out: Option<PathBuf>,
    run: &RunFlags,
    default_name: &str,
) -> PathBuf {
    out.or(file_out).unwrap_or_else(|| {
        let name = run.name.as_deref().unwrap_or(default_name);
        run.runs_dir.join(kiln_report::runs::run_dir_name(name))
    })
}

/// A run name from a data file: its stem, with the folder's name in front when the stem alone
/// says little (data/iris/train.csv -> iris-train).
fn name_from_data(data: &Path) -> String {
    let stem = data
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let generic = ["train", "data", "training", "dataset", "-"];
    match data.parent().and_then(|p| p.file_name()) {
        Some(parent) if generic.contains(&stem.as_str()) => {
            format!("{}-{stem}", parent.to_string_lossy())
        }
        _ => stem,
    }
}

/// Training curves (and, for classifiers, the confusion matrix) under `<out>/plots`.
fn training_plots(out: &Path, o: &TrainOutcome) -> Result<Vec<(String, kiln_report::PlotFiles)>> {
    use kiln_report::{Plot, Series};
    let h = &o.history;
    let pts = |f: &dyn Fn(&kiln_train::EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        h.iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    let mut loss = vec![Series::new("train", pts(&|m| Some(m.train_loss)))];
    let val_loss = pts(&|m| m.val_loss);
    if !val_loss.is_empty() {
        loss.push(Series::new("val", val_loss));
    }
    let mut accuracy = Vec::new();
    for (name, p) in [
        ("train", pts(&|m| m.train_accuracy)),
        ("val", pts(&|m| m.val_accuracy)),
    ] {
        if !p.is_empty() {
            accuracy.push(Series::new(name, p));
        }
    }
    let dir = out.join("plots");
    let mut written = vec![(
        "training curves".to_string(),
        kiln_report::write_plot(&Plot::TrainingCurves { loss, accuracy }, &dir, "training")?,
    )];
    if let (Some(r), Some(set)) = (&o.evaluation, o.evaluation_set) {
        let title = format!("confusion matrix ({set} set, {} rows)", r.rows);
        written.push((
            title.clone(),
            kiln_report::write_plot(
                &Plot::Confusion {
                    title,
                    classes: r.classes.clone(),
                    matrix: r.confusion.clone(),
                },
                &dir,
                "confusion",
            )?,
        ));
    }
    Ok(written)
}

fn load_config(path: &Path) -> Result<ConfigFile> {
    Ok(ConfigFile::load(path)?)
}

/// Defaults < config file < flags (and their `KILN_*` environment variables).
fn train_config(flags: &TrainFlags, file: &ConfigFile) -> Result<TrainConfig> {
    Ok(flags
        .overrides()
        .apply(file.train.clone().unwrap_or_default())?)
}

fn load_data(path: &Path, cfg: &TrainConfig, classes: Option<&[String]>) -> Result<Dataset> {
    Ok(match cfg.task {
        kiln_core::Task::Classification => kiln_data::load_dataset(path, &cfg.target, classes)?,
        kiln_core::Task::Regression => kiln_data::load_regression_dataset(path, &cfg.target)?,
    })
}

struct TrainRun {
    outcome: TrainOutcome,
    model_dir: PathBuf,
}

/// The files of a training run.
struct RunPaths<'a> {
    data: &'a Path,
    val: Option<&'a Path>,
    test: Option<&'a Path>,
    out: &'a Path,
}

/// Refuses to train into a directory that holds a model or an interrupted run's checkpoints,
/// unless resuming or forced.
fn check_run_dir(out: &Path, force: bool, resume: bool) -> Result<()> {
    let model_dir = out.join("model");
    let checkpoints = out.join("checkpoints");
    if !resume && !force {
        if model_dir.join("kiln-model.json").exists() {
            return Err(usage(format!(
                "{} already holds a trained model; pass --force to overwrite it or choose another --out",
                model_dir.display()
            )));
        }
        if checkpoints.is_dir() {
            return Err(usage(format!(
                "{} holds checkpoints of an interrupted run; continue it with `kiln train --resume {}`, or pass --force to start over",
                checkpoints.display(),
                out.display()
            )));
        }
    }
    Ok(())
}

fn run_training(
    rep: &mut Reporter,
    cfg: &TrainConfig,
    paths: RunPaths<'_>,
    force: bool,
    resume: bool,
) -> Result<TrainRun> {
    let RunPaths {
        data,
        val: val_path,
        test: test_path,
        out,
    } = paths;
    check_run_dir(out, force, resume)?;
    let model_dir = out.join("model");
    let checkpoints = out.join("checkpoints");
    if !resume && checkpoints.is_dir() {
        // --force: a fresh run must not mix its checkpoints with an older run's.
        std::fs::remove_dir_all(&checkpoints)
            .with_context(|| format!("removing old checkpoints in {}", checkpoints.display()))?;
    }
    let train = load_data(data, cfg, None)?;
    let val = match val_path {
        Some(v) => Some(load_data(v, cfg, train.class_names())?),
        None => None,
    };
    if let Some(v) = &val
        && v.feature_names != train.feature_names
    {
        return Err(usage(format!(
            "validation data columns ({}) differ from training data columns ({})",
            v.feature_names.join(","),
            train.feature_names.join(",")
        )));
    }
    // The effective configuration, written before training so that an interrupted run can be
    // resumed (`kiln train --resume`) or repeated (`kiln train --config`).
    if !resume {
        let effective = ConfigFile {
            data: Some(absolute(data)),
            val_data: val_path.map(absolute),
            test_data: test_path.map(absolute),
            out: Some(absolute(out)),
            train: Some(cfg.clone()),
        };
        let toml_text = toml::to_string_pretty(&effective).context("rendering config.toml")?;
        std::fs::create_dir_all(out)
            .with_context(|| format!("creating the output directory {}", out.display()))?;
        kiln_core::fsutil::write_atomic(&out.join("config.toml"), toml_text.as_bytes())?;
    }
    let mut trainer = BurnTrainer::new(cfg.clone())
        .with_checkpoints(checkpoints)
        .resuming(resume);
    if let Some(t) = test_path {
        trainer = trainer.with_test_data(load_data(t, cfg, train.class_names())?);
    }
    let outcome = trainer.run(&train, val.as_ref(), &model_dir, rep)?;
    let metrics = json!({
        "history": outcome.history,
        "best_epoch": outcome.best_epoch,
        "seconds": outcome.seconds,
        "samples_per_second": outcome.samples_per_second,
        "stopped_early": outcome.stopped_early,
        "test": outcome.test,
        "precision": cfg.precision,
        "strategy": outcome.strategy,
        "lr_per_step": outcome.lr_trace,
        "resources": kiln_core::resources::usage(),
        "gpu_memory": kiln_core::resources::gpu_memory().ok(),
        "train_rows": train.rows(),
        "val_rows": val.as_ref().map(|v| v.rows()),
        "classes": train.class_names(),
    });
    kiln_core::fsutil::write_json(&out.join("metrics.json"), &metrics)?;
    // One JSON record per epoch (`"record": "epoch"`), preceded by that epoch's steps
    // (`"record": "step"`) with --log-steps, for tools that stream metrics.
    let tagged = |v: serde_json::Value, kind: &str| {
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.insert("record".into(), json!(kind));
        }
        v.to_string()
    };
    let mut lines: Vec<String> = Vec::new();
    for h in &outcome.history {
        for s in outcome.steps.iter().filter(|s| s.epoch == h.epoch) {
            lines.push(tagged(json!(s), "step"));
        }
        lines.push(tagged(json!(h), "epoch"));
    }
    kiln_core::fsutil::write_atomic(
        &out.join("metrics.jsonl"),
        (lines.join("\n") + "\n").as_bytes(),
    )?;
    Ok(TrainRun { outcome, model_dir })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn train(cli: &Cli, a: &TrainArgs, rep: &mut Reporter) -> Result<()> {
    // --resume reads the run's own config.toml; another --config would train something else.
    let config_path = match (&a.resume, &a.train.config) {
        (Some(run), Some(c)) if absolute(c) != absolute(&run.join("config.toml")) => {
            return Err(usage(format!(
                "--resume {} uses that run's config.toml; --config {} names another file, so drop --config",
                run.display(),
                c.display()
            )));
        }
        (Some(run), _) => {
            let p = run.join("config.toml");
            if !p.is_file() {
                return Err(usage(format!(
                    "{} has no config.toml, so it is not a kiln training run (or it was started by an older kiln); start it again",
                    run.display()
                )));
            }
            Some(p)
        }
        (None, c) => c.clone(),
    };
    let file = match &config_path {
        Some(p) => load_config(p)?,
        None => ConfigFile::default(),
    };
    let cfg = train_config(&a.train, &file)?;
    let data = a.data.clone().or(file.data.clone()).ok_or_else(|| {
        usage("missing training data: pass --data <CSV> (or set `data` in the config file)")
    })?;
    // A resumed run continues in its own directory, wherever it has been moved to.
    let out = match &a.resume {
        Some(r) => r.clone(),
        None => run_dir(
            a.out.clone(),
            file.out.clone(),
            &a.run,
            &name_from_data(&data),
        ),
    };
    check_run_dir(&out, a.force, a.resume.is_some())?;
    crate::runstate::begin(
        "train",
        a.run.name.as_deref().unwrap_or(&name_from_data(&data)),
        &out,
    )?;
    let val = a.val_data.clone().or(file.val_data.clone());
    let test = a.test_data.clone().or(file.test_data.clone());
    let paths = RunPaths {
        data: &data,
        val: val.as_deref(),
        test: test.as_deref(),
        out: &out,
    };
    // Remote workers: a watch that ends a run stuck on a worker that went away.
    let watch = crate::watch::WorkerWatch::start(&cfg.devices, &out);
    let run = run_training(rep, &cfg, paths, a.force, a.resume.is_some());
    drop(watch);
    let run = run?;
    let o = &run.outcome;
    let plots = training_plots(&out, o)?;
    let best = &o.history[o.best_epoch - 1];
    let mut human = format!(
        "trained model: {}\nbest epoch {} of {}: train_loss {:.4}",
        run.model_dir.display(),
        o.best_epoch,
        o.history.len(),
        best.train_loss
    );
    if let Some(a) = best.train_accuracy {
        human.push_str(&format!(", train_acc {a:.4}"));
    }
    if let Some(l) = best.val_loss {
        human.push_str(&format!(", val_loss {l:.4}"));
    }
    if let Some(v) = best.val_accuracy {
        human.push_str(&format!(", val_acc {v:.4}"));
    }
    if let Some(t) = &o.test {
        human.push_str(&format!("\ntest ({} rows): loss {:.4}", t.rows, t.loss));
        if let Some(a) = t.accuracy {
            human.push_str(&format!(", accuracy {a:.4}"));
        }
        if let Some(f) = t.macro_f1 {
            human.push_str(&format!(", macro-F1 {f:.4}"));
        }
    }
    if let Some(r) = &o.evaluation {
        human.push_str(&format!(
            "\n{} set: {}",
            o.evaluation_set.unwrap_or("evaluation"),
            class_text(r)
        ));
    }
    human.push_str(&format!(
        "\nmetrics: {}\nplots: {}",
        out.join("metrics.json").display(),
        out.join("plots").display()
    ));
    let result = json!({
        "command": "train",
        "model": run.model_dir,
        "metrics": out.join("metrics.json"),
        "best_epoch": o.best_epoch,
        "epochs": o.history.len(),
        "train_accuracy": best.train_accuracy,
        "val_accuracy": best.val_accuracy,
        "val_loss": best.val_loss,
        "val_macro_f1": best.val_macro_f1,
        "test": o.test,
        "seconds": o.seconds,
        "samples_per_second": o.samples_per_second,
        "evaluation_set": o.evaluation_set,
        "evaluation": o.evaluation,
        "plots": plots.iter().map(|(_, f)| f).collect::<Vec<_>>(),
        "run_dir": out,
    });
    // The run's result beside metrics.json, for tools that read run directories.
    kiln_core::fsutil::write_json(&out.join("summary.json"), &result)?;
    crate::runstate::set_metrics(crate::runstate::pick(
        &result,
        &[
            ("best_epoch", "best_epoch"),
            ("epochs", "epochs"),
            ("train_accuracy", "train_accuracy"),
            ("val_accuracy", "val_accuracy"),
            ("val_loss", "val_loss"),
            ("val_macro_f1", "val_macro_f1"),
            ("test_accuracy", "test.accuracy"),
            ("test_loss", "test.loss"),
            ("test_macro_f1", "test.macro_f1"),
            ("train_seconds", "seconds"),
            ("samples_per_second", "samples_per_second"),
        ],
    ));
    let mut tables = vec![Table::from_json(
        "train",
        &json!({
            "model": result["model"], "best_epoch": o.best_epoch, "epochs": o.history.len(),
            "train_accuracy": best.train_accuracy, "val_accuracy": best.val_accuracy,
            "val_loss": best.val_loss, "val_macro_f1": best.val_macro_f1, "test": o.test,
            "seconds": o.seconds, "samples_per_second": o.samples_per_second,
        }),
    )];
    if let Some(r) = &o.evaluation {
        tables.extend(class_tables(o.evaluation_set.unwrap_or("evaluation"), r));
    }
    summary_tables(cli, &human, result, tables, false);
    Ok(())
}

fn export_model(
    rep: &mut Reporter,
    model_dir: &Path,
    output: &Path,
    opts: ExportOptions,
) -> Result<kiln_export::ExportOutcome> {
    let trained = TrainedModel::load(model_dir)?;
    Ok(OnnxExporter::new(opts).run(&trained, output, rep)?)
}

fn worker(listen: &str) -> Result<()> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        usage(format!(
            "--listen {listen:?} is not an address; use host:port, e.g. 127.0.0.1:3000"
        ))
    })?;
    #[cfg(feature = "distributed")]
    {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}; pick another port"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: listening on {addr}, reachable from other machines; the WebSocket transport is unencrypted and unauthenticated"
            );
        }
        // Scripts and tests read this line for the port.
        eprintln!("kiln worker listening on ws://{bound}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(async {
            let term = async {
                #[cfg(unix)]
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                    return;
                }
                std::future::pending::<()>().await;
            };
            tokio::select! {
                r = kiln_train::distributed::serve_worker(listener) => r.map_err(anyhow::Error::from),
                _ = tokio::signal::ctrl_c() => Ok(()),
                () = term => Ok(()),
            }
        })?;
        eprintln!("kiln worker stopped");
        Ok(())
    }
    #[cfg(not(feature = "distributed"))]
    {
        let _ = addr;
        Err(usage(
            "this kiln was built without the `distributed` feature; rebuild with `cargo build --release --features distributed` to run workers",
        ))
    }
}

fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().context("creating a temporary directory")
}

fn export(cli: &Cli, a: &ExportArgs, rep: &mut Reporter) -> Result<()> {
    let opts = ExportOptions {
        opset: a.opset,
        verify: !a.no_verify,
        tolerance: kiln_export::Tolerance {
            atol: a.atol,
            rtol: a.rtol,
        },
        force: a.force,
        input_name: a.input_name.clone(),
        output_names: a.output_names.clone().unwrap_or_default(),
        static_batch: a.static_batch,
        fold_batchnorm: !a.no_fold_batchnorm,
        linear_op: kiln_export::LinearOp::parse(&a.linear_op).map_err(|e| usage(e.to_string()))?,
        bake_standardization: a.bake_standardization,
        inline_functions: a.inline_functions,
    };
    // A model trained elsewhere is imported first: burn computes its reference outputs, so the
    // export is verified like a model kiln trained.
    let imported = tempfile_dir()?;
    let model_dir = match (&a.model, &a.spec, &a.weights) {
        (Some(m), _, _) => m.clone(),
        (None, Some(spec), Some(weights)) => {
            let spec: kiln_core::ModelSpec = kiln_core::fsutil::read_json(spec, "model spec")?;
            let layout = kiln_train::import::WeightsLayout::parse(&a.weights_layout)
                .map_err(|e| usage(e.to_string()))?;
            let dir = imported.path().join("model");
            kiln_train::import::import_safetensors(&spec, weights, layout, &dir)?;
            dir
        }
        _ => {
            return Err(usage(
                "pass --model <DIR>, or --spec <JSON> with --weights <SAFETENSORS>",
            ));
        }
    };
    let o = export_model(rep, &model_dir, &a.output, opts)?;
    let mut human = format!(
        "exported {} ({} bytes, opset {})",
        a.output.display(),
        o.bytes,
        a.opset
    );
    for (what, v) in [
        ("verified against burn", &o.verification),
        ("verified in ONNX Runtime too", &o.verification_ort),
    ] {
        if let Some(v) = v {
            human.push_str(&format!(
                "\n{what}: max abs diff {:.3e} (allowed {:.3e}: atol {:.0e} + rtol {:.0e} x output scale), argmax agreement {:.4}",
                v.max_abs_diff, v.allowed_diff, v.tolerance.atol, v.tolerance.rtol, v.argmax_agreement
            ));
        }
    }
    summary(
        cli,
        &human,
        json!({ "command": "export", "output": a.output, "bytes": o.bytes, "opset": a.opset, "verification": o.verification, "verification_ort": o.verification_ort }),
        false,
    );
    Ok(())
}

fn pipeline(cli: &Cli, a: &PipelineArgs, rep: &mut Reporter) -> Result<()> {
    let file = match &a.train.config {
        Some(p) => load_config(p)?,
        None => ConfigFile::default(),
    };
    let mut cfg = train_config(&a.train, &file)?;
    let default_name = if a.demo {
        "demo".to_string()
    } else {
        a.data
            .as_deref()
            .or(file.data.as_deref())
            .map(name_from_data)
            .unwrap_or_else(|| "pipeline".into())
    };
    let out = run_dir(a.out.clone(), file.out.clone(), &a.run, &default_name);
    if out.join("summary.json").exists() && !a.force {
        return Err(usage(format!(
            "{} already holds a pipeline run; pass --force to overwrite it or choose another --out",
            out.display()
        )));
    }
    crate::runstate::begin(
        "pipeline",
        a.run.name.as_deref().unwrap_or(&default_name),
        &out,
    )?;
    let (data, val, test) = if a.demo {
        // A separable 3-class problem with correlated, partly redundant features.
        let all = kiln_data::synthetic::make_classification(1500, 8, 4, 3, 2.0, cfg.seed);
        let parts = kiln_data::split(&all, 0.7, 0.15, cfg.seed);
        let dir = out.join("data");
        let (tr, va, te) = (
            dir.join("train.csv"),
            dir.join("val.csv"),
            dir.join("test.csv"),
        );
        kiln_data::write_csv(&tr, &parts.train, &cfg.target)?;
        kiln_data::write_csv(&va, &parts.val, &cfg.target)?;
        kiln_data::write_csv(&te, &parts.test, &cfg.target)?;
        if a.train.epochs.is_none() && file.train.is_none() {
            cfg.epochs = 15;
        }
        (tr, Some(va), Some(te))
    } else {
        let data = a
            .data
            .clone()
            .or(file.data.clone())
            .ok_or_else(|| usage("missing training data: pass --data <CSV> or --demo"))?;
        (
            data,
            a.val_data.clone().or(file.val_data.clone()),
            a.test_data.clone().or(file.test_data.clone()),
        )
    };
    let paths = RunPaths {
        data: &data,
        val: val.as_deref(),
        test: None,
        out: &out,
    };
    let run = run_training(rep, &cfg, paths, true, false)?;
    let onnx = out.join("model.onnx");
    let exported = export_model(
        rep,
        &run.model_dir,
        &onnx,
        ExportOptions {
            opset: a.opset,
            force: true,
            ..ExportOptions::default()
        },
    )?;
    let optimized_path = out.join(if a.quantization == "none" {
        "model.opt.onnx"
    } else {
        "model.int8.onnx"
    });
    let opts = optimize_opts(OptimizeFlags {
        quantization: &a.quantization,
        level: "basic",
        passes: None,
        calibration: Some(a.calibration_data.as_deref().unwrap_or(&data)),
        calibration_method: "minmax",
        validate: val.clone(),
        min_accuracy_ratio: a.min_accuracy_ratio,
        target: &cfg.target,
        force: true,
        qdq: kiln_optimize::quantize::QdqOptions::default(),
        form: "auto",
        engine: None,
    })?;
    let opt = GraphOptimizer::new(opts).run(&onnx, &optimized_path, rep)?;
    let mut test_results = serde_json::Map::new();
    let mut class_reports: Vec<(&str, kiln_core::metrics::ClassificationReport)> = Vec::new();
    let mut human = format!(
        "pipeline finished in {}\n  model:      {}\n  onnx:       {} (verified, max abs diff {:.2e})\n  optimized:  {} ({} -> {} bytes)",
        out.display(),
        run.model_dir.display(),
        onnx.display(),
        exported
            .verification
            .as_ref()
            .map(|v| v.max_abs_diff)
            .unwrap_or(f32::NAN),
        optimized_path.display(),
        opt.bytes_before,
        opt.bytes_after
    );
    if let Some(test) = &test {
        for (name, path, file) in [
            ("float", &onnx, "predictions.csv"),
            ("optimized", &optimized_path, "predictions.opt.csv"),
        ] {
            let model = Model::load(path, EngineKind::Tract)?;
            let report = kiln_infer::infer_file(
                &model,
                test,
                &BatchOptions {
                    target: cfg.target.clone(),
                    ..BatchOptions::default()
                },
                rep,
            )?;
            let pred_path = out.join(file);
            kiln_infer::write_predictions(&model, &report, Some(&pred_path), OutputFormat::Csv)?;
            let quality = match (&report.regression, report.accuracy) {
                (Some(r), _) => format!("RMSE {:.4}, R² {:.4}", r.rmse, r.r2),
                (None, Some(a)) => format!("accuracy {a:.4}"),
                (None, None) => "accuracy n/a".into(),
            };
            human.push_str(&format!(
                "\n  test ({name}): {quality} on {} rows -> {}",
                report.rows,
                pred_path.display()
            ));
            if let Some(c) = &report.classification {
                class_reports.push((name, c.clone()));
            }
            test_results.insert(
                name.into(),
                json!({ "predictions": pred_path, "report": report }),
            );
        }
    }
    let plots = training_plots(&out, &run.outcome)?;
    let eval_data = test.clone().or(val.clone());
    let candidates = match &eval_data {
        Some(d) => speed_candidates(
            &[
                ("f32", &onnx),
                (
                    if a.quantization == "none" {
                        "optimized"
                    } else {
                        "int8"
                    },
                    &optimized_path,
                ),
            ],
            d,
            &cfg.target,
        )?,
        None => Vec::new(),
    };
    let mut speed_plots = Vec::new();
    if !candidates.is_empty() {
        let dir = out.join("plots");
        // Regression models have no accuracy: their candidates are compared in the table only.
        let scored: Vec<kiln_report::Candidate> = candidates
            .iter()
            .filter_map(|c| {
                Some(kiln_report::Candidate {
                    label: c.label.clone(),
                    rows_per_second: c.rows_per_second,
                    accuracy: c.accuracy?,
                })
            })
            .collect();
        if !scored.is_empty() {
            speed_plots.push((
                "accuracy vs speed (batch 64)".to_string(),
                kiln_report::write_plot(
                    &kiln_report::Plot::AccuracyVsSpeed {
                        title: "accuracy vs speed, batch 64".into(),
                        candidates: scored,
                    },
                    &dir,
                    "accuracy_vs_speed",
                )?,
            ));
        }
        if let Some(fast) = candidates
            .iter()
            .max_by(|a, b| a.rows_per_second.total_cmp(&b.rows_per_second))
        {
            let buckets: Vec<(u64, u64, u64)> = fast
                .latency
                .histogram
                .iter()
                .map(|b| (b.from_us, b.to_us, b.count))
                .collect();
            speed_plots.push((
                format!("latency per batch of 64, {}", fast.label),
                kiln_report::write_plot(
                    &kiln_report::Plot::LatencyHistogram {
                        title: format!("latency per call, batch 64, {}", fast.label),
                        buckets,
                    },
                    &dir,
                    "latency",
                )?,
            ));
        }
        if let Some((name, r)) = class_reports.last() {
            speed_plots.push((
                format!("confusion matrix ({name} model, test set)"),
                kiln_report::write_plot(
                    &kiln_report::Plot::Confusion {
                        title: format!("confusion matrix, {name} model, test set"),
                        classes: r.classes.clone(),
                        matrix: r.confusion.clone(),
                    },
                    &dir,
                    "confusion_test",
                )?,
            ));
        }
    }
    let value = json!({
        "command": "pipeline",
        "out": out,
        "model": run.model_dir,
        "onnx": onnx,
        "optimized": optimized_path,
        "best_epoch": run.outcome.best_epoch,
        "val_accuracy": run.outcome.history[run.outcome.best_epoch - 1].val_accuracy,
        "export": { "bytes": exported.bytes, "verification": exported.verification, "verification_ort": exported.verification_ort },
        "optimize": opt,
        "test": test_results,
        "candidates": candidates,
        "plots": plots.iter().chain(&speed_plots).map(|(_, f)| f).collect::<Vec<_>>(),
        "report": out.join("report.html"),
        "run_dir": out,
    });
    let mut tables = vec![Table::from_json(
        "pipeline",
        &json!({
            "out": out, "onnx": onnx, "optimized": optimized_path,
            "best_epoch": run.outcome.best_epoch, "val_accuracy": value["val_accuracy"],
            "export_max_abs_diff": exported.verification.as_ref().map(|v| v.max_abs_diff),
            "bytes_before": opt.bytes_before, "bytes_after": opt.bytes_after,
        }),
    )];
    tables.push(candidates_table(&candidates));
    for (name, r) in &class_reports {
        tables.extend(class_tables(&format!("test, {name} model"), r));
    }
    let report = pipeline_report(&out, &tables, plots.iter().chain(&speed_plots))?;
    human.push_str(&format!("\n  report:     {}", report.display()));
    if !candidates.is_empty() {
        human.push('\n');
        human.push_str(candidates_table(&candidates).human().trim_end());
    }
    kiln_core::fsutil::write_json(&out.join("summary.json"), &value)?;
    let mut metrics = crate::runstate::pick(
        &value,
        &[
            ("best_epoch", "best_epoch"),
            ("val_accuracy", "val_accuracy"),
            ("test_accuracy_float", "test.float.report.accuracy"),
            ("test_accuracy_optimized", "test.optimized.report.accuracy"),
            ("bytes_float", "export.bytes"),
        ],
    );
    for c in &candidates {
        metrics.insert(format!("rows_per_second[{}]", c.label), c.rows_per_second);
    }
    crate::runstate::set_metrics(metrics);
    summary_tables(cli, &human, value, tables, false);
    Ok(())
}

/// A model × engine configuration measured by the pipeline.
#[derive(Debug, Clone, Serialize)]
struct SpeedCandidate {
    label: String,
    model: PathBuf,
    engine: &'static str,
    accuracy: Option<f64>,
    rows_per_second: f64,
    latency: kiln_infer::LatencySummary,
}

/// Accuracy on `data` and throughput at batch 64 of each model on each available engine
/// (`kiln_optimize::auto::measure`, shared with `optimize --engine auto`).
fn speed_candidates(
    models: &[(&str, &Path)],
    data: &Path,
    target: &str,
) -> Result<Vec<SpeedCandidate>> {
    let mut kinds = vec![EngineKind::Tract];
    if ort_available(None) {
        kinds.push(EngineKind::Ort);
    }
    let mut out = Vec::new();
    for (name, path) in models {
        for kind in &kinds {
            let config = EngineConfig {
                kind: *kind,
                concurrency: 1,
                ..EngineConfig::default()
            };
            match kiln_optimize::auto::measure(path, &config, data, target, 64, 0.3) {
                Ok(m) => out.push(SpeedCandidate {
                    label: format!("{name} / {}", m.engine),
                    model: path.to_path_buf(),
                    engine: m.engine,
                    accuracy: m.accuracy,
                    rows_per_second: m.rows_per_second,
                    latency: m.latency,
                }),
                Err(kiln_optimize::OptimizeError::Infer(e))
                    if kiln_optimize::auto::unloadable(&e) =>
                {
                    tracing::warn!(target: "kiln", "{name} model does not load in {kind:?}: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(out)
}

fn candidates_table(c: &[SpeedCandidate]) -> Table {
    let mut t = Table::new(
        "candidates (batch 64)",
        &["candidate", "accuracy", "rows/s", "p50 us", "p95 us"],
    );
    for x in c {
        t.row(vec![
            x.label.clone(),
            x.accuracy.map(|a| format!("{a:.4}")).unwrap_or_default(),
            format!("{:.0}", x.rows_per_second),
            x.latency.p50_us.to_string(),
            x.latency.p95_us.to_string(),
        ]);
    }
    t
}

/// `<out>/report.html`: the result tables and every plot, in one self-contained file.
fn pipeline_report<'a>(
    out: &Path,
    tables: &[Table],
    plots: impl Iterator<Item = &'a (String, kiln_report::PlotFiles)>,
) -> Result<PathBuf> {
    use kiln_report::{Block, Report, Section};
    let mut figures = Vec::new();
    for (caption, files) in plots {
        let svg = std::fs::read_to_string(&files.svg)
            .with_context(|| format!("reading {}", files.svg.display()))?;
        figures.push(Block::Svg {
            caption: caption.clone(),
            svg,
        });
    }
    let table_blocks = tables.iter().map(|t| Section {
        heading: t.title.clone(),
        blocks: vec![Block::Table {
            headers: t.headers.clone(),
            rows: t.rows.clone(),
        }],
    });
    let mut sections = vec![Section {
        heading: "run".into(),
        blocks: vec![Block::Text(format!(
            "kiln {} pipeline, {}. Resources: {}.",
            kiln_core::KILN_VERSION,
            kiln_report::runs::now_rfc3339(),
            crate::runstate::resources_line()
        ))],
    }];
    sections.extend(table_blocks);
    sections.push(Section {
        heading: "plots".into(),
        blocks: figures,
    });
    let path = out.join("report.html");
    Report {
        title: format!("kiln pipeline: {}", out.display()),
        sections,
    }
    .write(&path)?;
    Ok(path)
}

fn inspect(cli: &Cli, a: &InspectArgs) -> Result<()> {
    let s = kiln_onnx::ModelSummary::of(&kiln_onnx::load(&a.model)?);
    let mut human = format!(
        "{}\n  producer: {} {}\n  ir_version {}, opsets {}\n  inputs:\n    {}\n  outputs:\n    {}\n  operators ({} nodes, {} initializers):\n",
        a.model.display(),
        s.producer,
        s.producer_version,
        s.ir_version,
        s.opsets.join(", "),
        s.inputs.join("\n    "),
        s.outputs.join("\n    "),
        s.nodes,
        s.initializers
    );
    for (op, n) in &s.ops {
        human.push_str(&format!("    {op:<24} {n}\n"));
    }
    human.push_str("  metadata:\n");
    for (k, v) in &s.metadata {
        let end = v.char_indices().nth(100).map_or(v.len(), |(i, _)| i);
        let more = if end < v.len() { "…" } else { "" };
        human.push_str(&format!("    {k} = {}{more}\n", &v[..end]));
    }
    summary(
        cli,
        human.trim_end(),
        json!({
            "command": "inspect",
            "model": a.model,
            "producer": s.producer,
            "producer_version": s.producer_version,
            "ir_version": s.ir_version,
            "opsets": s.opsets,
            "inputs": s.inputs,
            "outputs": s.outputs,
            "nodes": s.nodes,
            "ops": s.ops.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            "metadata": s.metadata.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        false,
    );
    Ok(())
}

fn compare(cli: &Cli, a: &CompareArgs) -> Result<()> {
    let r = kiln_optimize::compare::compare_files(&a.a, &a.b, &a.data, &a.target)?;
    let acc = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
    let mut models = Table::new(
        "models",
        &[
            "model",
            "path",
            "bytes",
            "accuracy",
            "rows/s (b=64)",
            "p50 us",
            "p95 us",
        ],
    );
    for (name, f) in [("A", &r.a), ("B", &r.b)] {
        models.row(vec![
            name.into(),
            f.path.display().to_string(),
            f.bytes.to_string(),
            acc(f.accuracy),
            format!("{:.0}", f.rows_per_second),
            f.latency.p50_us.to_string(),
            f.latency.p95_us.to_string(),
        ]);
    }
    let mut agreement = Table::new(
        "agreement",
        &["rows", "agreement", "max abs score difference"],
    );
    agreement.row(vec![
        r.rows.to_string(),
        format!("{:.4}", r.agreement),
        format!("{:.3e}", r.max_abs_diff),
    ]);
    let mut layers = Table::new("layers", &["layer output", "max abs", "mean abs", "cosine"]);
    for l in &r.layers {
        layers.row(vec![
            l.name.clone(),
            format!("{:.3e}", l.max_abs),
            format!("{:.3e}", l.mean_abs),
            format!("{:.6}", l.cosine),
        ]);
    }
    let mut human = format!(
        "{}\n{}",
        models.human().trim_end(),
        agreement.human().trim_end()
    );
    let mut tables = vec![models, agreement];
    if !r.layers.is_empty() {
        human.push_str(&format!("\n\n{}", layers.human().trim_end()));
        tables.push(layers);
    }
    summary_tables(
        cli,
        &human,
        json!({ "command": "compare", "report": r }),
        tables,
        false,
    );
    Ok(())
}

/// `kiln runs list|compare`.
fn runs(cli: &Cli, a: &RunsArgs) -> Result<()> {
    match &a.action {
        RunsAction::List { runs_dir } => {
            if !runs_dir.is_dir() {
                return Err(usage(format!(
                    "no runs directory {}; runs are written there by `kiln train` and `kiln pipeline` (or pass --runs-dir)",
                    runs_dir.display()
                )));
            }
            let kiln_report::runs::RunListing {
                runs: list,
                unreadable: bad,
            } = kiln_report::runs::list_runs(runs_dir)?;
            for (path, why) in &bad {
                tracing::warn!(target: "kiln", "skipping {}: {why}", path.display());
            }
            let mut t = Table::new(
                "runs",
                &[
                    "run",
                    "command",
                    "status",
                    "started",
                    "seconds",
                    "val_accuracy",
                    "test_accuracy",
                ],
            );
            for r in &list {
                let m = &r.record.metrics;
                let test = m
                    .get("test_accuracy")
                    .or(m.get("test_accuracy_optimized"))
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or_default();
                t.row(vec![
                    r.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    r.record.command.clone(),
                    r.record.status.to_string(),
                    r.record.started.clone(),
                    r.record
                        .seconds
                        .map(|s| format!("{s:.1}"))
                        .unwrap_or_default(),
                    m.get("val_accuracy")
                        .map(|v| format!("{v:.4}"))
                        .unwrap_or_default(),
                    test,
                ]);
            }
            let human = if list.is_empty() {
                format!("no runs in {}", runs_dir.display())
            } else {
                t.human().trim_end().to_string()
            };
            let records: Vec<_> = list
                .iter()
                .map(|r| json!({ "path": r.path, "record": r.record }))
                .collect();
            summary_tables(
                cli,
                &human,
                json!({ "command": "runs list", "runs_dir": runs_dir, "runs": records }),
                vec![t],
                false,
            );
        }
        RunsAction::Compare {
            runs,
            runs_dir,
            all,
        } => {
            let entries = runs
                .iter()
                .map(|r| kiln_report::runs::find_run(r, runs_dir).map_err(|e| usage(e.to_string())))
                .collect::<Result<Vec<_>>>()?;
            let c = kiln_report::runs::compare_runs(&entries, *all)?;
            let mut headers: Vec<&str> = vec!["key"];
            headers.extend(c.runs.iter().map(String::as_str));
            let mut config = Table::new(
                if *all {
                    "config"
                } else {
                    "config (differences)"
                },
                &headers,
            );
            for (k, vals) in &c.config {
                let mut row = vec![k.clone()];
                row.extend(vals.iter().map(|v| v.clone().unwrap_or_else(|| "-".into())));
                config.row(row);
            }
            let num = |v: &Option<f64>| match v {
                Some(x) if x.fract() == 0.0 || x.abs() >= 1000.0 => format!("{x:.0}"),
                Some(x) => format!("{x:.4}"),
                None => "-".into(),
            };
            let mut headers: Vec<&str> = vec!["metric"];
            headers.extend(c.runs.iter().map(String::as_str));
            let mut metrics = Table::new("metrics", &headers);
            for (k, vals) in &c.metrics {
                let mut row = vec![k.clone()];
                row.extend(vals.iter().map(num));
                metrics.row(row);
            }
            let mut headers: Vec<&str> = vec!["timing"];
            headers.extend(c.runs.iter().map(String::as_str));
            let mut timings = Table::new("timings", &headers);
            for (k, vals) in &c.timings {
                let mut row = vec![k.clone()];
                row.extend(vals.iter().map(|v| match v {
                    Some(x) => format!("{x:.2}"),
                    None => "-".into(),
                }));
                timings.row(row);
            }
            let mut human = String::new();
            for t in [&config, &metrics, &timings] {
                human.push_str(&format!("{}:\n{}\n", t.title, t.human()));
            }
            if c.config.is_empty() && !*all {
                human.push_str("(the configs are identical; --all shows every key)\n");
            }
            summary_tables(
                cli,
                human.trim_end(),
                json!({ "command": "runs compare", "comparison": c }),
                vec![config, metrics, timings],
                false,
            );
        }
    }
    Ok(())
}

fn package(cli: &Cli, a: &PackageArgs, rep: &mut Reporter) -> Result<()> {
    if a.verify {
        let c = kiln_optimize::package::verify_bundle(&a.path)?;
        let human = format!(
            "bundle {} verified: {} file hashes match, sample of {} rows reproduced (max abs diff {:.3e})",
            a.path.display(),
            c.files_ok,
            c.sample_rows,
            c.sample_max_abs_diff
        );
        summary(
            cli,
            &human,
            json!({ "command": "package", "verify": true, "bundle": a.path, "check": c }),
            false,
        );
        return Ok(());
    }
    let out = a
        .out
        .clone()
        .ok_or_else(|| usage("missing --out <DIR> for the bundle"))?;
    let validation = match &a.validate_data {
        Some(data) => {
            let model = Model::load(&a.path, EngineKind::Tract)?;
            let r = kiln_infer::infer_file(
                &model,
                data,
                &BatchOptions {
                    target: a.target.clone(),
                    ..BatchOptions::default()
                },
                rep,
            )?;
            Some(
                json!({ "data": data, "rows": r.rows, "failed": r.failed, "accuracy": r.accuracy }),
            )
        }
        None => None,
    };
    let m = kiln_optimize::package::package_to(&a.path, &out, validation, a.force)?;
    let human = format!(
        "bundle written to {} ({} files hashed in manifest.json)",
        out.display(),
        m.files.len()
    );
    summary(
        cli,
        &human,
        json!({ "command": "package", "bundle": out, "manifest": m }),
        false,
    );
    Ok(())
}
