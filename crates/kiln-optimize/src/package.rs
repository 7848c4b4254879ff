//! Deployment bundles: a directory holding the model, a manifest with the sha256 of every file
//! and the model's signature and settings, a sample input with its expected output, and a short
//! model card. [`verify_bundle`] re-checks the hashes and re-runs the sample.

use crate::OptimizeError;
use kiln_infer::{EngineKind, Model};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;

/// The bundle's format version.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;

/// `manifest.json` of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT_VERSION`].
    pub format_version: u32,
    /// The model file inside the bundle.
    pub model: String,
    /// sha256 of every other file in the bundle, by relative path.
    pub files: BTreeMap<String, String>,
    /// Input name, dtype and shape, e.g. `features: float32 [N, 4]`.
    pub inputs: Vec<String>,
    /// Output names.
    pub outputs: Vec<String>,
    /// The model's `metadata_props`.
    pub metadata: BTreeMap<String, String>,
    /// Engine settings the bundle was validated with.
    pub engine: String,
    /// Largest difference allowed when the sample is re-run.
    pub sample_tolerance: f32,
    /// Validation figures given when packaging (free-form JSON), if any.
    pub validation: Option<serde_json::Value>,
}

/// `sample.json`: rows and the outputs the packaged model gave for them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Input rows.
    pub inputs: Vec<Vec<f32>>,
    /// Score outputs per row.
    pub outputs: Vec<Vec<f32>>,
    /// Labels per row.
    pub labels: Vec<String>,
}

fn sha256_file(p: &Path) -> Result<String, OptimizeError> {
    let bytes = kiln_core::fsutil::read(p)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Builds a bundle directory for `model` at `out`. The directory must not exist (or `force`).
/// It is assembled in a temporary sibling directory and swapped into place, so a failure leaves
/// the previous bundle (or none), never a half-written one.
pub fn package(
    model: &Path,
    out: &Path,
    validation: Option<serde_json::Value>,
    force: bool,
) -> Result<Manifest, OptimizeError> {
    if out.exists() && !force {
        return Err(OptimizeError::Exists {
            path: out.to_path_buf(),
        });
    }
    let m = Model::load(model, EngineKind::Tract)?;
    let proto = kiln_onnx::load(model)?;
    // Assembled in a temporary directory and swapped in whole: a failure leaves the old bundle.
    let mut result = None;
    kiln_core::fsutil::replace_dir_atomic::<OptimizeError>(out, |dir| {
        let model_name = "model.onnx";
        kiln_core::fsutil::write_atomic(&dir.join(model_name), &kiln_core::fsutil::read(model)?)?;
        // The sample: rows around the model's standardisation statistics, with their outputs.
        let rows = 8;
        let x = kiln_infer::synthetic_rows(m.info(), rows, 0x6b696c6e)?;
        let preds = m.predict(&x, rows)?;
        let width = x.len() / rows;
        let sample = Sample {
            inputs: x.chunks(width).map(<[f32]>::to_vec).collect(),
            outputs: preds.iter().map(|p| p.scores.clone()).collect(),
            labels: preds.iter().map(|p| p.label.to_string()).collect(),
        };
        kiln_core::fsutil::write_json(&dir.join("sample.json"), &sample)?;
        let info = m.info();
        let inputs = vec![format!(
            "{}: float32 [N, {}]",
            info.input_name,
            info.input_width.map_or("?".into(), |w| w.to_string())
        )];
        let metadata: BTreeMap<String, String> = kiln_onnx::metadata(&proto).into_iter().collect();
        let card = format!(
            "# Model card\n\n- Model: `{model_name}` (from `{}`), produced by {} {}\n- Input: {}\n- Outputs: {}\n- Task: {:?}\n- Classes: {}\n- Features: {}\n\n## Use\n\n```sh\nkiln package --verify <this folder>\nkiln infer --model <this folder>/{model_name} --data rows.csv --output predictions.csv\n```\n\n`sample.json` holds {rows} rows with the outputs this model gave for them when it was packaged.\n",
            model.display(),
            if proto.producer_name().is_empty() {
                "an unknown producer"
            } else {
                proto.producer_name()
            },
            proto.producer_version(),
            inputs.join(", "),
            info.output_names.join(", "),
            info.task,
            info.class_names
                .as_ref()
                .map(|c| c.join(", "))
                .unwrap_or_else(|| "not recorded".into()),
            info.feature_names
                .as_ref()
                .map(|c| c.join(", "))
                .unwrap_or_else(|| "not recorded".into()),
        );
        kiln_core::fsutil::write_atomic(&dir.join("README.md"), card.as_bytes())?;
        let mut files = BTreeMap::new();
        for f in [model_name, "sample.json", "README.md"] {
            files.insert(f.to_string(), sha256_file(&dir.join(f))?);
        }
        let manifest = Manifest {
            format_version: BUNDLE_FORMAT_VERSION,
            model: model_name.into(),
            files,
            inputs,
            outputs: info.output_names.clone(),
            metadata,
            engine: "tract on the CPU, which computed sample.json".into(),
            sample_tolerance: 1e-5,
            validation,
        };
        kiln_core::fsutil::write_json(&dir.join("manifest.json"), &manifest)?;
        result = Some(manifest);
        Ok(())
    })?;
    let manifest = result.ok_or_else(|| OptimizeError::Bundle {
        path: out.to_path_buf(),
        reason: "the bundle was not built".into(),
    })?;
    Ok(manifest)
}

/// What [`verify_bundle`] checked.
#[derive(Debug, Clone, Serialize)]
pub struct BundleCheck {
    /// Files whose hash matched.
    pub files_ok: usize,
    /// Sample rows re-run.
    pub sample_rows: usize,
    /// Largest difference between re-run and recorded outputs.
    pub sample_max_abs_diff: f32,
}

/// [`package`], or, when `out` ends in `.tar.gz`/`.tgz`, the same bundle packed into one
/// archive (built in a temporary directory beside it and written atomically).
pub fn package_to(
    model: &Path,
    out: &Path,
    validation: Option<serde_json::Value>,
    force: bool,
) -> Result<Manifest, OptimizeError> {
    if !crate::archive::is_archive(out) {
        return package(model, out, validation, force);
    }
    if out.exists() && !force {
        return Err(OptimizeError::Exists {
            path: out.to_path_buf(),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| kiln_core::CoreError::io("creating", parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-bundle-")
        .tempdir_in(parent)
        .map_err(|e| kiln_core::CoreError::io("creating a temporary directory in", parent, e))?;
    let dir = tmp.path().join("bundle");
    let manifest = package(model, &dir, validation, true)?;
    crate::archive::write_archive(&dir, out)?;
    Ok(manifest)
}

/// Re-checks every file's sha256 and re-runs the sample. Any mismatch is an error naming the
/// file or the row. A `.tar.gz` bundle is first unpacked (safely, see [`crate::archive`]) into
/// a temporary directory.
pub fn verify_bundle(dir: &Path) -> Result<BundleCheck, OptimizeError> {
    if dir.is_file() && crate::archive::is_archive(dir) {
        let tmp = tempfile::tempdir()
            .map_err(|e| kiln_core::CoreError::io("creating a temporary directory for", dir, e))?;
        crate::archive::extract_archive(dir, tmp.path())?;
        return verify_bundle(tmp.path()).map_err(|e| match e {
            OptimizeError::Bundle { reason, .. } => OptimizeError::Bundle {
                path: dir.to_path_buf(),
                reason,
            },
            other => other,
        });
    }
    let bad = |reason: String| OptimizeError::Bundle {
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.is_dir() {
        return Err(bad(
            "not a bundle; pass the folder or .tar.gz written by `kiln package`".into(),
        ));
    }
    let manifest: Manifest =
        kiln_core::fsutil::read_json(&dir.join("manifest.json"), "bundle manifest")?;
    if manifest.format_version != BUNDLE_FORMAT_VERSION {
        return Err(bad(format!(
            "bundle format {} is not supported (this kiln reads {BUNDLE_FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    for (file, want) in &manifest.files {
        // Only plain relative names: a manifest must not point outside its bundle.
        if file.contains("..") || Path::new(file).is_absolute() {
            return Err(bad(format!("manifest names {file:?}, outside the bundle")));
        }
        let got = sha256_file(&dir.join(file))?;
        if &got != want {
            return Err(bad(format!(
                "{file} has sha256 {got}, the manifest says {want}: the file was changed or corrupted"
            )));
        }
    }
    let sample: Sample = kiln_core::fsutil::read_json(&dir.join("sample.json"), "bundle sample")?;
    let m = Model::load(dir.join(&manifest.model), EngineKind::Tract)?;
    let x: Vec<f32> = sample.inputs.iter().flatten().copied().collect();
    let preds = m.predict(&x, sample.inputs.len())?;
    let mut max = 0f32;
    for (i, (p, want)) in preds.iter().zip(&sample.outputs).enumerate() {
        for (a, b) in p.scores.iter().zip(want) {
            let d = (a - b).abs();
            if d.is_nan() || d > manifest.sample_tolerance {
                return Err(bad(format!(
                    "sample row {i}: output {a} differs from the recorded {b} by more than {}",
                    manifest.sample_tolerance
                )));
            }
            max = max.max(d);
        }
    }
    Ok(BundleCheck {
        files_ok: manifest.files.len(),
        sample_rows: sample.inputs.len(),
        sample_max_abs_diff: max,
    })
}
