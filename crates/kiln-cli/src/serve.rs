//! `kiln serve` and `kiln bench --server`: argument validation and rendering around
//! `kiln-serve`.

use crate::args::{BenchArgs, Cli, ServeArgs};
use crate::commands::{summary, usage};
use crate::engine::open_model;
use anyhow::{Context, Result};
use kiln_infer::batcher::BatcherConfig;
use kiln_infer::{EngineConfig, EngineKind};
use kiln_serve::loadgen::{LoadOptions, run_load};
use kiln_serve::{ServeConfig, Server};
use serde_json::json;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves a model file, bundle directory or `.tar.gz` bundle to (model file, default name,
/// bundle engine, the directory a `.tar.gz` was unpacked into).
type Resolved = (PathBuf, String, Option<String>, Option<tempfile::TempDir>);

fn resolve_model(path: &Path) -> Result<Resolved> {
    let stem = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".onnx").unwrap_or(n).to_string())
            .unwrap_or_else(|| "model".into())
    };
    if path.is_file() && kiln_optimize::archive::is_archive(path) {
        // A .tar.gz bundle: unpacked safely into a directory that lives as long as the server.
        let dir = tempfile::Builder::new()
            .prefix("kiln-serve-bundle-")
            .tempdir()
            .context("creating a directory to unpack the bundle into")?;
        kiln_optimize::archive::extract_archive(path, dir.path())?;
        let (model, _, engine, _) =
            resolve_model(dir.path()).with_context(|| format!("bundle {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .map(|n| {
                n.trim_end_matches(".tar.gz")
                    .trim_end_matches(".tgz")
                    .to_string()
            })
            .unwrap_or_else(|| "model".into());
        return Ok((model, name, engine, Some(dir)));
    }
    if path.is_dir() {
        if !path.join("manifest.json").is_file() {
            return Err(usage(format!(
                "{} is a directory without manifest.json; pass an .onnx file or a bundle from `kiln package`",
                path.display()
            )));
        }
        // Refuse a bundle whose files changed: serving it would serve something unverified.
        let check = kiln_optimize::package::verify_bundle(path)
            .with_context(|| format!("bundle {} failed verification", path.display()))?;
        let manifest: kiln_optimize::package::Manifest =
            kiln_core::fsutil::read_json(&path.join("manifest.json"), "bundle manifest")?;
        eprintln!(
            "bundle {}: {} file hashes match, sample reproduced",
            path.display(),
            check.files_ok
        );
        let model = path.join(&manifest.model);
        let name = stem(&model);
        let engine = Some(manifest.engine).filter(|e| e == "tract" || e == "ort");
        return Ok((model, name, engine, None));
    }
    Ok((path.to_path_buf(), stem(path), None, None))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

pub(crate) fn serve(cli: &Cli, a: &ServeArgs) -> Result<()> {
    let host: IpAddr = a.host.parse().map_err(|_| {
        usage(format!(
            "--host {:?} is not an IP address; use 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)",
            a.host
        ))
    })?;
    if a.max_batch == 0 || a.workers == 0 || a.queue_depth == 0 {
        return Err(usage(
            "--max-batch, --workers and --queue-depth must be at least 1",
        ));
    }
    if !a.max_delay_ms.is_finite() || a.max_delay_ms < 0.0 {
        return Err(usage(
            "--max-delay-ms must be a non-negative number of milliseconds",
        ));
    }
    if a.timeout_ms == 0 || a.max_body_bytes == 0 {
        return Err(usage("--timeout-ms and --max-body-bytes must be positive"));
    }
    // `_unpacked` keeps a .tar.gz bundle's directory until the server stops.
    let (model_path, default_name, bundle_engine, _unpacked) = resolve_model(&a.model)?;
    // An explicit --engine, else ort for a --provider, else the bundle's engine, else tract.
    let bundle_engine = bundle_engine.filter(|_| a.provider.provider.is_none());
    // `auto`: the choice recorded by `kiln optimize --engine auto`, else a measurement at the
    // largest batch the server forms.
    let kiln_infer::Opened {
        model, provider, ..
    } = open_model(
        &model_path,
        a.engine.as_deref().or(bundle_engine.as_deref()),
        &a.provider,
        EngineConfig {
            ort_lib: a.ort_lib.clone(),
            threads: a.threads,
            concurrency: a.workers,
            ..EngineConfig::default()
        },
        a.max_batch,
    )?;
    let name = a.name.clone().unwrap_or(default_name);
    let config = ServeConfig {
        addr: SocketAddr::new(host, a.port),
        batcher: BatcherConfig {
            max_batch: a.max_batch,
            max_delay: Duration::from_secs_f64(a.max_delay_ms / 1000.0),
            queue_depth: a.queue_depth,
            workers: a.workers,
        },
        max_body_bytes: a.max_body_bytes,
        request_timeout: Duration::from_millis(a.timeout_ms),
        warmup_iterations: a.warmup_iterations,
        ..ServeConfig::default()
    };
    let rt = runtime()?;
    let engine_used = model.engine_name();
    let result = rt.block_on(async {
        let server = Server::bind(model, &name, config).await?;
        let addr = server.local_addr();
        if !host.is_loopback() {
            eprintln!(
                "warning: listening on {host}, reachable from other machines; kiln serve has no authentication"
            );
        }
        // Tests and scripts read this line for the port.
        eprintln!(
            "kiln serve: model '{name}' ({engine_used}) listening on http://{addr}; ready at http://{addr}/v2/health/ready after warm-up"
        );
        let _ = std::io::stderr().flush();
        server.run(shutdown_signal()).await
    })?;
    let mean_batch = if result.executions > 0 {
        result.rows as f64 / result.executions as f64
    } else {
        0.0
    };
    let human = format!(
        "kiln serve stopped after {:.1} s: {} requests ({} rows, {} engine executions, mean batch {:.1} rows), {} failed{}",
        result.uptime_s,
        result.requests,
        result.rows,
        result.executions,
        mean_batch,
        result.failures,
        if result.drained {
            ""
        } else {
            "; some in-flight requests did not finish before the drain timeout"
        }
    );
    summary(
        cli,
        &human,
        json!({ "command": "serve", "model": name, "engine": engine_used, "provider": provider, "summary": result }),
        false,
    );
    Ok(())
}

pub(crate) fn bench_server(cli: &Cli, a: &BenchArgs, url: &str) -> Result<()> {
    if let Some(p) = &a.provider.provider {
        return Err(usage(format!(
            "--provider {p} would be ignored by a load test: the server's provider is chosen where it runs (kiln serve --provider)"
        )));
    }
    if a.clients == 0 || a.requests == 0 || a.rows_per_request == 0 {
        return Err(usage(
            "--clients, --requests and --rows-per-request must be at least 1",
        ));
    }
    if !a.max_seconds.is_finite() || a.max_seconds <= 0.0 {
        return Err(usage("--max-seconds must be positive"));
    }
    if !(url.starts_with("http://127.")
        || url.starts_with("http://localhost")
        || url.starts_with("http://[::1]"))
    {
        eprintln!(
            "warning: {url} is not a loopback address; the load test will send up to {} requests there",
            a.requests
        );
    }
    // The offline baseline, measured first in the same run so that the ratio compares like
    // with like on this machine.
    // The baseline runs on the engine named by --engines (tract unless it says ort).
    let offline_kind = if a.engines.first().map(String::as_str) == Some("ort") {
        EngineKind::Ort
    } else {
        EngineKind::Tract
    };
    let offline = match &a.model {
        Some(path) => {
            let engine = EngineConfig {
                kind: offline_kind,
                ort_lib: a.ort_lib.clone(),
                threads: a.threads,
                ..EngineConfig::default()
            };
            // The same measurement as `kiln bench`: one caller at the serving batch size.
            let batch = 64;
            let opts = kiln_infer::BenchOptions {
                engines: vec![engine],
                batch_sizes: vec![batch],
                workers: vec![1],
                min_seconds: 1.0,
                min_iterations: 50,
                warmup: 20,
            };
            let r = kiln_infer::bench(path, &opts, &mut kiln_core::NullSink)?;
            let rows_s = r.results.first().map_or(0.0, |b| b.rows_per_second);
            Some((batch, rows_s))
        }
        None => None,
    };
    let opts = LoadOptions {
        url: url.to_string(),
        model: a.model_name.clone(),
        clients: a.clients,
        requests: a.requests,
        max_duration: Duration::from_secs_f64(a.max_seconds),
        rows_per_request: a.rows_per_request,
        binary: a.binary,
        seed: 0,
    };
    let rt = runtime()?;
    let r = rt.block_on(run_load(&opts))?;
    let ms = |us: u64| us as f64 / 1000.0;
    let mut human = format!(
        "{} clients, {} row(s)/request, {}: {} requests in {:.2} s, {} failed\n  throughput {:.0} requests/s ({:.0} rows/s)\n  latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.clients,
        r.rows_per_request,
        if a.binary {
            "binary tensors"
        } else {
            "JSON tensors"
        },
        r.requests,
        r.seconds,
        r.failures,
        r.requests_per_s,
        r.rows_per_s,
        ms(r.latency.p50_us),
        ms(r.latency.p95_us),
        ms(r.latency.p99_us),
        ms(r.latency.max_us),
    );
    if let (Some(e), Some(b)) = (r.executions, r.mean_batch_rows) {
        human.push_str(&format!(
            "\n  server: {e} engine executions, mean batch {b:.1} rows"
        ));
    }
    let ratio = offline.map(|(_, rows_s)| r.rows_per_s / rows_s);
    if let (Some((batch, rows_s)), Some(ratio)) = (offline, ratio) {
        human.push_str(&format!(
            "\n  offline (same run, {}, batch {batch}, one caller): {rows_s:.0} rows/s; served / offline = {ratio:.2}x",
            offline_kind.name()
        ));
    }
    if let (Some(g), Some((_, last))) = (r.rss_growth_percent, r.rss_samples.last()) {
        human.push_str(&format!(
            "\n  server RSS {:.1} MiB at the end, {g:+.2}% since the first tenth of the run",
            *last as f64 / (1 << 20) as f64
        ));
    }
    if let Some(f) = &r.first_failure {
        human.push_str(&format!("\n  first failure: {f}"));
    }
    summary(
        cli,
        &human,
        json!({
            "command": "bench",
            "server": url,
            "report": r,
            "offline": offline.map(|(batch, rows_s)| json!({ "engine": offline_kind.name(), "batch_size": batch, "rows_per_s": rows_s })),
            "served_to_offline_ratio": ratio,
        }),
        false,
    );
    if r.requests == 0 {
        anyhow::bail!(
            "no request succeeded against {url}: {}",
            r.first_failure.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}
