//! Which engine and execution provider a command runs a model on: `--provider` without
//! `--engine` means ONNX Runtime, and a provider that is not here is a loud warning (or, with
//! `--strict-provider`, an error).

use crate::args::ProviderArgs;
use crate::commands::usage;
use anyhow::Result;
use kiln_infer::{EngineConfig, EngineKind, Model, Provider};
use std::path::Path;

/// The engine and provider a command runs: `--provider` without `--engine` means ONNX Runtime;
/// tract runs on the CPU only, so a GPU provider with `--engine tract` is refused.
pub(crate) fn engine_and_provider(
    engine: Option<&str>,
    p: &ProviderArgs,
) -> Result<(String, Provider)> {
    let provider = match &p.provider {
        Some(name) => Provider::parse(name).map_err(|e| usage(e.to_string()))?,
        None => Provider::Cpu,
    };
    let engine = match (engine, &p.provider) {
        (Some(e), _) => e.to_string(),
        (None, Some(_)) => "ort".to_string(),
        (None, None) => "tract".to_string(),
    };
    if engine == "tract" && provider != Provider::Cpu {
        return Err(usage(format!(
            "--provider {provider} is an ONNX Runtime execution provider and tract runs on the CPU only; drop --engine tract (--provider alone selects the ort engine)"
        )));
    }
    Ok((engine, provider))
}

/// Opens a model for `infer` and `serve`: `--engine` (or ort for a lone `--provider`; `auto`
/// measured at `auto_batch` unless the model records a choice), then the provider, with a loud
/// warning when it is not here (an error with --strict-provider).
pub(crate) fn open_model(
    path: &Path,
    engine: Option<&str>,
    p: &ProviderArgs,
    base: EngineConfig,
    auto_batch: usize,
) -> Result<kiln_infer::Opened> {
    let (name, provider) = engine_and_provider(engine, p)?;
    if name == "tract" && base.ort_lib.is_some() {
        return Err(usage(
            "--ort-lib points at ONNX Runtime, which --engine tract does not use; add --engine ort (or auto), or drop --ort-lib",
        ));
    }
    let choice =
        kiln_infer::EngineChoice::parse(&name, auto_batch).map_err(|e| usage(e.to_string()))?;
    let base = EngineConfig { provider, ..base };
    let opened = kiln_infer::open_model(path, choice, base, p.strict_provider)?;
    if let Some(how) = &opened.auto {
        tracing::info!(target: "kiln", "engine auto: {} ({})", how.engine, how.reason);
    }
    if let Some(w) = opened.provider.warning() {
        tracing::warn!(target: "kiln", "{w}");
    }
    Ok(opened)
}

/// Loads the model on the requested provider, or on the CPU with a loud warning when that
/// provider is not here (an error with --strict-provider).
pub(crate) fn load_on_provider(
    path: &Path,
    engine: EngineConfig,
    p: &ProviderArgs,
) -> Result<(Model, kiln_infer::ProviderChoice)> {
    let (model, choice) = kiln_infer::load_on_provider(path, engine, p.strict_provider)?;
    if let Some(w) = choice.warning() {
        tracing::warn!(target: "kiln", "{w}");
    }
    Ok((model, choice))
}

/// Puts `--provider` on the ONNX Runtime configurations of a bench (after checking that it
/// registers here, else the CPU with a warning), and returns what was requested and used.
pub(crate) fn bench_provider(
    model: &Path,
    engines: &mut [EngineConfig],
    p: &ProviderArgs,
) -> Result<Option<kiln_infer::ProviderChoice>> {
    let Some(name) = &p.provider else {
        return Ok(None);
    };
    let requested = Provider::parse(name).map_err(|e| usage(e.to_string()))?;
    let Some(ort) = engines.iter().find(|e| e.kind == EngineKind::Ort).cloned() else {
        return Err(usage(format!(
            "--provider {name} is an ONNX Runtime execution provider, and no ort engine is benchmarked here; add --engines ort (or auto with ONNX Runtime installed)"
        )));
    };
    let probe = EngineConfig {
        provider: requested,
        concurrency: 1,
        ..ort
    };
    let (_, choice) = load_on_provider(model, probe, p)?;
    let actual = Provider::parse(&choice.actual).map_err(|e| usage(e.to_string()))?;
    for e in engines.iter_mut().filter(|e| e.kind == EngineKind::Ort) {
        e.provider = actual;
    }
    Ok(Some(choice))
}

/// Whether ONNX Runtime's library loads here.
#[cfg(feature = "ort")]
pub(crate) fn ort_available(lib: Option<&Path>) -> bool {
    kiln_infer::ort_engine::available(lib).is_ok()
}

#[cfg(not(feature = "ort"))]
pub(crate) fn ort_available(_lib: Option<&Path>) -> bool {
    false
}
