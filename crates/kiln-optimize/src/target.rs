//! Where an optimized model goes and how it runs where it is meant to: the default output path
//! beside the input, and a check of the written model in the engine it is for against tract.

use crate::{OptimizeError, Quantization};
use kiln_infer::{EngineConfig, EngineKind, Model};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The output path when none is given: beside `input`, named for what was done
/// (`m.int8.onnx` for dynamic, `m.int8-static.onnx`, `m.int8-weights.onnx`, `m.opt.onnx` for
/// graph passes only, `m.auto.onnx` when the form is chosen by measurement).
pub fn default_output(input: &Path, quantization: Quantization, auto: bool) -> PathBuf {
    let what = match (auto, quantization) {
        (true, _) => "auto",
        (false, Quantization::Dynamic) => "int8",
        (false, Quantization::Static) => "int8-static",
        (false, Quantization::WeightOnly) => "int8-weights",
        (false, Quantization::None) => "opt",
    };
    let stem = input
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    input.with_file_name(format!("{stem}.{what}.onnx"))
}

/// How the written model ran in its target engine, next to tract on the same rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineCheck {
    /// The engine (`ort`).
    pub engine: &'static str,
    /// Its execution provider.
    pub provider: String,
    /// Rows run (synthetic, from the model's signature).
    pub rows: usize,
    /// Largest difference between the two engines' outputs.
    pub max_abs_diff: f32,
}

/// Runs `model` with `config` and in tract on the same 64 synthetic rows and reports how far
/// apart they are; an error when it does not load or run there.
pub fn check_in_engine(model: &Path, config: EngineConfig) -> Result<EngineCheck, OptimizeError> {
    let engine = config.kind.name();
    let provider = config.provider.to_string();
    let target = Model::load(model, config)?;
    let tract = Model::load(model, EngineKind::Tract)?;
    let rows = 64;
    let x = kiln_infer::synthetic_rows(tract.info(), rows, 0x6b696c6e)?;
    let (p, q) = (target.predict(&x, rows)?, tract.predict(&x, rows)?);
    let max_abs_diff = p
        .iter()
        .zip(&q)
        .flat_map(|(p, q)| p.scores.iter().zip(&q.scores))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, |m, d| if d.is_nan() || d > m { d } else { m });
    Ok(EngineCheck {
        engine,
        provider,
        rows,
        max_abs_diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_outputs_say_what_was_done_and_never_name_the_input() {
        let input = Path::new("/m/model.onnx");
        for (q, auto, want) in [
            (Quantization::Dynamic, false, "/m/model.int8.onnx"),
            (Quantization::Static, false, "/m/model.int8-static.onnx"),
            (Quantization::None, false, "/m/model.opt.onnx"),
            (Quantization::None, true, "/m/model.auto.onnx"),
        ] {
            let out = default_output(input, q, auto);
            assert_eq!(out, Path::new(want));
            assert_ne!(out, input);
        }
    }
}
