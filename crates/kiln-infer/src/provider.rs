//! Loading a model on the execution provider a user asked for, and saying what ran instead when
//! that provider is not here.
//!
//! ONNX Runtime falls back to the CPU silently when a provider cannot be registered; kiln
//! registers providers with errors on, then decides here: with `strict` the error stands,
//! otherwise the model loads on the CPU provider and [`ProviderChoice::fallback`] says why, so
//! that every front end can warn loudly and record requested and actual providers.

use crate::{EngineConfig, EngineKind, InferError, Model, Provider};
use serde::Serialize;
use std::path::Path;

/// The provider a run asked for and the one it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderChoice {
    /// The engine that runs the model (`tract` or `ort`).
    pub engine: &'static str,
    /// The provider asked for (`cpu` for tract, which runs on the CPU only).
    pub requested: String,
    /// The provider the model runs on.
    pub actual: String,
    /// Why `actual` differs from `requested`; `None` when they agree.
    pub fallback: Option<String>,
}

impl ProviderChoice {
    /// The choice when the engine loaded as configured.
    pub fn as_configured(config: &EngineConfig) -> Self {
        Self {
            engine: config.kind.name(),
            requested: config.provider.to_string(),
            actual: config.provider.to_string(),
            fallback: None,
        }
    }

    /// A one-line warning for a fallback, naming what runs instead; `None` without one.
    pub fn warning(&self) -> Option<String> {
        self.fallback.as_ref().map(|why| {
            format!(
                "the {} execution provider was requested but is not available here ({why}); running on {} instead (strict provider checking makes this an error)",
                self.requested, self.actual
            )
        })
    }
}

/// Loads `path` with `config`; when its provider is unavailable and `strict` is off, loads it on
/// the CPU provider instead and records why.
pub fn load_on_provider(
    path: &Path,
    config: EngineConfig,
    strict: bool,
) -> Result<(Model, ProviderChoice), InferError> {
    // kiln_onnx::load gives the clear errors (missing file, directory, truncated file).
    kiln_onnx::load(path)?;
    let bytes = std::fs::read(path).map_err(|e| InferError::Load {
        path: path.to_path_buf(),
        engine: config.kind.name(),
        reason: e.to_string(),
    })?;
    load_bytes_on_provider(&bytes, path, config, strict)
}

/// [`load_on_provider`] for a model in memory; `origin` names it in errors.
pub fn load_bytes_on_provider(
    bytes: &[u8],
    origin: &Path,
    config: EngineConfig,
    strict: bool,
) -> Result<(Model, ProviderChoice), InferError> {
    match Model::from_bytes(bytes, origin, config.clone()) {
        Ok(model) => Ok((model, ProviderChoice::as_configured(&config))),
        Err(InferError::ProviderUnavailable { provider, reason })
            if !strict && config.kind == EngineKind::Ort =>
        {
            let cpu = EngineConfig {
                provider: Provider::Cpu,
                ..config
            };
            let model = Model::from_bytes(bytes, origin, cpu)?;
            let choice = ProviderChoice {
                engine: "ort",
                requested: provider,
                actual: Provider::Cpu.to_string(),
                fallback: Some(reason),
            };
            Ok((model, choice))
        }
        Err(e) => Err(e),
    }
}

/// The engine a user asked for: one of the engines, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// This engine.
    Engine(EngineKind),
    /// The choice `kiln optimize --engine auto` recorded in the model, else the faster of the
    /// engines measured on it at `batch_size`.
    Auto {
        /// The batch size to measure at.
        batch_size: usize,
    },
}

impl EngineChoice {
    /// Parses `tract`, `ort` or `auto` (measuring at `batch_size`).
    pub fn parse(name: &str, batch_size: usize) -> Result<Self, InferError> {
        match name {
            "auto" => Ok(Self::Auto { batch_size }),
            other => EngineKind::parse(other).map(Self::Engine),
        }
    }
}

/// A model opened the way a command asked: the engine, its settings and the provider.
#[derive(Debug)]
pub struct Opened {
    /// The loaded model.
    pub model: Model,
    /// The configuration it was loaded with.
    pub config: EngineConfig,
    /// Requested and actual execution provider.
    pub provider: ProviderChoice,
    /// How `auto` chose, when it was asked for.
    pub auto: Option<crate::AutoChoice>,
}

/// Opens `path` once: resolves `auto` (reading the recorded choice or measuring), then loads it
/// on the requested provider ([`load_on_provider`]). `base` carries the threads, library path,
/// provider and concurrency; its `kind` is replaced by the choice.
pub fn open_model(
    path: &Path,
    choice: EngineChoice,
    base: EngineConfig,
    strict_provider: bool,
) -> Result<Opened, InferError> {
    let (config, auto) = match choice {
        EngineChoice::Engine(kind) => (EngineConfig { kind, ..base }, None),
        EngineChoice::Auto { batch_size } => {
            let concurrency = base.concurrency;
            let (cfg, how) = crate::choose_engine(path, batch_size, &base)?;
            (EngineConfig { concurrency, ..cfg }, Some(how))
        }
    };
    let (model, provider) = load_on_provider(path, config.clone(), strict_provider)?;
    Ok(Opened {
        model,
        config,
        provider,
        auto,
    })
}
