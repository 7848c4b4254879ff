use crate::{CoreError, ModelSpec, Task, fsutil};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The format version of the trained-model directory. Loading another version is refused with
/// a message that says which kiln wrote it.
pub const ARTIFACT_FORMAT_VERSION: u32 = 1;

/// Targets of a data set: class indices with their names, or real values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Targets {
    /// Class indices into `names`.
    Classes {
        /// One index per row.
        indices: Vec<u32>,
        /// Class names, index order.
        names: Vec<String>,
    },
    /// Regression values, one per row.
    Values(Vec<f32>),
}

/// A table of f32 features (row-major) with optional targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Names of the feature columns.
    pub feature_names: Vec<String>,
    /// Row-major features, `rows() * n_features()` values.
    pub features: Vec<f32>,
    /// Targets, when the data has a target column.
    pub targets: Option<Targets>,
}

impl Dataset {
    /// Number of feature columns.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.features
            .len()
            .checked_div(self.n_features())
            .unwrap_or(0)
    }

    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let f = self.n_features();
        &self.features[i * f..(i + 1) * f]
    }

    /// Class names, when the targets are classes.
    pub fn class_names(&self) -> Option<&[String]> {
        match &self.targets {
            Some(Targets::Classes { names, .. }) => Some(names),
            _ => None,
        }
    }

    /// Class indices, when the targets are classes.
    pub fn class_indices(&self) -> Option<&[u32]> {
        match &self.targets {
            Some(Targets::Classes { indices, .. }) => Some(indices),
            _ => None,
        }
    }

    /// A new data set with the rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(idx.len() * self.n_features());
        for &i in idx {
            features.extend_from_slice(self.row(i));
        }
        let targets = self.targets.as_ref().map(|t| match t {
            Targets::Classes { indices, names } => Targets::Classes {
                indices: idx.iter().map(|&i| indices[i]).collect(),
                names: names.clone(),
            },
            Targets::Values(v) => Targets::Values(idx.iter().map(|&i| v[i]).collect()),
        });
        Dataset {
            feature_names: self.feature_names.clone(),
            features,
            targets,
        }
    }
}

/// Per-feature standardisation `(x - mean) / std`, fitted on training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-feature means.
    pub mean: Vec<f32>,
    /// Per-feature standard deviations (never zero: constant columns get 1).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Applies the standardisation to a row-major buffer in place.
    pub fn apply(&self, features: &mut [f32]) {
        let f = self.mean.len();
        for row in features.chunks_mut(f) {
            for (j, x) in row.iter_mut().enumerate() {
                *x = (*x - self.mean[j]) / self.std[j];
            }
        }
    }
}

/// Everything a later stage needs to know about a trained model besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Classification or regression.
    pub task: Task,
    /// Class names in output order (classification).
    pub class_names: Vec<String>,
    /// Feature column names, input order.
    pub feature_names: Vec<String>,
    /// Name of the target column the model was trained on.
    pub target: String,
    /// Standardisation applied before the first layer; exported into the graph.
    pub normalization: Option<Normalization>,
    /// Regression only: the target's standardisation (one mean, one std); the exported graph
    /// maps the network's output back with `y * std + mean`.
    #[serde(default)]
    pub target_normalization: Option<Normalization>,
    /// The kiln version that trained the model.
    pub kiln_version: String,
    /// The burn version that trained the model.
    pub burn_version: String,
    /// Seconds since the Unix epoch when training finished.
    pub created_unix: u64,
    /// The training configuration, as recorded by the trainer.
    pub training: serde_json::Value,
    /// sha256 of the weights file.
    pub weights_sha256: String,
}

/// Sample rows with the outputs burn's own forward pass gave for them. Export compares the ONNX
/// file's outputs against these, which is how a burn-free stage verifies a burn model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Raw (unstandardised) feature rows.
    pub inputs: Vec<Vec<f32>>,
    /// The model's outputs for each row (probabilities or regression values).
    pub outputs: Vec<Vec<f32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    kind: String,
}

/// A trained-model directory: `kiln-model.json` (format marker), `spec.json`,
/// `weights.safetensors`, `metadata.json` and `reference.json`.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    /// The directory.
    pub dir: PathBuf,
    /// The network.
    pub spec: ModelSpec,
    /// Names, normalisation, provenance.
    pub metadata: ModelMetadata,
    /// Sample rows with burn's outputs, for verification.
    pub reference: Option<Reference>,
}

impl TrainedModel {
    /// Path of the SafeTensors weights.
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("weights.safetensors")
    }

    /// Writes the JSON parts of the artifact into `dir` (the trainer writes the weights file
    /// first, also atomically). The format marker is written last, so a directory without it is
    /// an unfinished artifact.
    pub fn save_json_parts(&self) -> Result<(), CoreError> {
        fsutil::write_json(&self.dir.join("spec.json"), &self.spec)?;
        fsutil::write_json(&self.dir.join("metadata.json"), &self.metadata)?;
        if let Some(r) = &self.reference {
            fsutil::write_json(&self.dir.join("reference.json"), r)?;
        }
        fsutil::write_json(
            &self.dir.join("kiln-model.json"),
            &Manifest {
                format_version: ARTIFACT_FORMAT_VERSION,
                kind: "kiln-trained-model".into(),
            },
        )
    }

    /// Loads an artifact directory, checking its format version and the spec.
    pub fn load(dir: &Path) -> Result<Self, CoreError> {
        if !dir.is_dir() {
            return Err(CoreError::InvalidArtifact {
                path: dir.to_path_buf(),
                reason: "not a directory; pass the `model/` directory written by `kiln train`"
                    .into(),
            });
        }
        let manifest_path = dir.join("kiln-model.json");
        if !manifest_path.exists() {
            return Err(CoreError::InvalidArtifact {
                path: dir.to_path_buf(),
                reason: "kiln-model.json is missing: this is not a kiln trained-model directory, or training did not finish".into(),
            });
        }
        let manifest: Manifest = fsutil::read_json(&manifest_path, "kiln model manifest")?;
        if manifest.format_version != ARTIFACT_FORMAT_VERSION {
            return Err(CoreError::InvalidArtifact {
                path: dir.to_path_buf(),
                reason: format!(
                    "artifact format version {} is not supported (this kiln reads version {}); use the kiln version that wrote it, or re-train",
                    manifest.format_version, ARTIFACT_FORMAT_VERSION
                ),
            });
        }
        let spec: ModelSpec = fsutil::read_json(&dir.join("spec.json"), "model spec")?;
        spec.validate()?;
        let metadata: ModelMetadata =
            fsutil::read_json(&dir.join("metadata.json"), "model metadata")?;
        let ref_path = dir.join("reference.json");
        let reference = if ref_path.exists() {
            Some(fsutil::read_json(&ref_path, "reference outputs")?)
        } else {
            None
        };
        let model = Self {
            dir: dir.to_path_buf(),
            spec,
            metadata,
            reference,
        };
        if !model.weights_path().is_file() {
            return Err(CoreError::InvalidArtifact {
                path: dir.to_path_buf(),
                reason: "weights.safetensors is missing".into(),
            });
        }
        Ok(model)
    }
}

/// A handle to a serialized ONNX model.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// Where the model is stored.
    pub path: PathBuf,
}

impl OnnxModel {
    /// Reads the model bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, CoreError> {
        fsutil::read(&self.path)
    }
}
