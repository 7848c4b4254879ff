//! Training checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint is a directory `checkpoints/epoch-NNNNNN/` (plus `checkpoints/best/`, the
//! checkpoint of the best epoch so far) holding:
//! - `model.safetensors`: the network's weights, with each parameter's burn `ParamId` in the
//!   SafeTensors metadata, so that the optimizer state (keyed by `ParamId`) lines up on load;
//! - `best.safetensors`: the weights of the best epoch up to this one;
//! - `optimizer.bpk`: burn's optimizer state (Adam moments and step counts, burnpack format);
//! - `state.json`, written last: the epoch, the optimizer step, the history, the learning-rate
//!   trace, the best and early-stopping bookkeeping, the config's hash, and the sha256 of every
//!   other file.
//!
//! The data order and the dropout RNG are functions of (seed, epoch), so they need no state.
//! Each directory is built beside its final name and renamed into place, so a crash leaves the
//! old checkpoint or the new one, never half of one; a file changed afterwards fails its hash.

use crate::TrainError;
use crate::net::NamedTensor;
use crate::trainer::{EpochMetrics, StepMetrics};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Version of the checkpoint layout.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Exact f64 fields: serde_json's number parser may be one ulp off, which would break a
/// bit-identical resume, so floats are stored as their shortest round-trip text and parsed back
/// with Rust's correctly rounded parser.
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    fn parse<E: serde::de::Error>(s: &str) -> Result<f64, E> {
        s.parse()
            .map_err(|_| E::custom(format!("{s:?} is not a number")))
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        parse(&String::deserialize(d)?)
    }

    pub mod opt {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&format!("{v:?}")),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| parse(&s))
                .transpose()
        }
    }

    pub mod vec {
        use super::*;
        use serde::ser::SerializeSeq;
        pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(&format!("{x:?}"))?;
            }
            seq.end()
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|s| parse(s))
                .collect()
        }
    }
}

/// [`EpochMetrics`] with exact floats, as stored in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ExactEpoch {
    epoch: usize,
    #[serde(with = "exact")]
    train_loss: f64,
    #[serde(with = "exact::opt")]
    train_accuracy: Option<f64>,
    #[serde(with = "exact::opt")]
    val_loss: Option<f64>,
    #[serde(with = "exact::opt")]
    val_accuracy: Option<f64>,
    #[serde(with = "exact::opt", default)]
    val_macro_f1: Option<f64>,
    #[serde(with = "exact")]
    lr: f64,
    #[serde(with = "exact")]
    seconds: f64,
}

mod exact_steps {
    use super::StepMetrics;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Exact {
        epoch: usize,
        step: usize,
        #[serde(with = "super::exact")]
        loss: f64,
        #[serde(with = "super::exact")]
        lr: f64,
    }

    pub fn serialize<S: Serializer>(v: &[StepMetrics], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|m| Exact {
                epoch: m.epoch,
                step: m.step,
                loss: m.loss,
                lr: m.lr,
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StepMetrics>, D::Error> {
        Ok(Vec::<Exact>::deserialize(d)?
            .into_iter()
            .map(|m| StepMetrics {
                epoch: m.epoch,
                step: m.step,
                loss: m.loss,
                lr: m.lr,
            })
            .collect())
    }
}

mod exact_history {
    use super::{EpochMetrics, ExactEpoch};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[EpochMetrics], s: S) -> Result<S::Ok, S::Error> {
        let exact: Vec<ExactEpoch> = v
            .iter()
            .map(|m| ExactEpoch {
                epoch: m.epoch,
                train_loss: m.train_loss,
                train_accuracy: m.train_accuracy,
                val_loss: m.val_loss,
                val_accuracy: m.val_accuracy,
                val_macro_f1: m.val_macro_f1,
                lr: m.lr,
                seconds: m.seconds,
            })
            .collect();
        exact.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EpochMetrics>, D::Error> {
        Ok(Vec::<ExactEpoch>::deserialize(d)?
            .into_iter()
            .map(|m| EpochMetrics {
                epoch: m.epoch,
                train_loss: m.train_loss,
                train_accuracy: m.train_accuracy,
                val_loss: m.val_loss,
                val_accuracy: m.val_accuracy,
                val_macro_f1: m.val_macro_f1,
                lr: m.lr,
                seconds: m.seconds,
            })
            .collect())
    }
}

/// The bookkeeping half of a checkpoint (`state.json`). Floats are stored as exact text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Layout version ([`CHECKPOINT_FORMAT`]).
    pub format_version: u32,
    /// The last completed epoch.
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub global_step: usize,
    /// Metrics of every completed epoch.
    #[serde(with = "exact_history")]
    pub history: Vec<EpochMetrics>,
    /// Per-step records so far (with `log_steps`).
    #[serde(default, with = "exact_steps")]
    pub steps: Vec<StepMetrics>,
    /// The learning rate of every step so far.
    #[serde(with = "exact::vec")]
    pub lr_trace: Vec<f64>,
    /// Score of the best epoch so far (lower is better).
    #[serde(with = "exact")]
    pub best_score: f64,
    /// The best epoch so far.
    pub best_epoch: usize,
    /// Early stopping: best watched value and epochs since it improved.
    #[serde(with = "exact::opt")]
    pub watched_best: Option<f64>,
    /// Epochs since the watched metric last improved.
    pub since_best: usize,
    /// Set when early stopping ended the run at this epoch.
    pub stopped_early: Option<usize>,
    /// sha256 of the training config (JSON) the run was started with.
    pub config_sha256: String,
    /// sha256 of each other file in the directory.
    pub files: BTreeMap<String, String>,
}

/// A loaded, verified checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Where it was read from.
    pub dir: PathBuf,
    /// Its bookkeeping.
    pub state: CheckpointState,
    /// The network's weights with their parameter ids.
    pub weights: Vec<(NamedTensor, u64)>,
    /// The best epoch's weights.
    pub best: Vec<NamedTensor>,
    /// burn's serialized optimizer state.
    pub optimizer: Vec<u8>,
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn corrupt(file: &Path, why: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(format!(
        "{} is unusable: {why}; resume from an earlier checkpoint or start again",
        file.display()
    ))
}

/// Serializes f32 tensors as SafeTensors with `metadata` (the one writer of kiln's weight
/// files: artifacts and checkpoints).
pub(crate) fn safetensors_bytes(
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, TrainError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Checkpoint(format!("weights {n}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // An empty metadata map makes a header the reader rejects; leave it out instead.
    safetensors::serialize(views, (!metadata.is_empty()).then_some(metadata))
        .map_err(|e| TrainError::Checkpoint(format!("serializing weights: {e}")))
}

/// Serializes weights (with optional parameter ids in the metadata) as SafeTensors.
fn to_safetensors(tensors: &[NamedTensor], ids: Option<&[u64]>) -> Result<Vec<u8>, TrainError> {
    let mut meta = HashMap::new();
    if let Some(ids) = ids {
        let map: BTreeMap<&str, String> = tensors
            .iter()
            .zip(ids)
            .map(|(t, id)| (t.name.as_str(), id.to_string()))
            .collect();
        meta.insert(
            "param_ids".to_string(),
            serde_json::to_string(&map).unwrap_or_default(),
        );
    }
    safetensors_bytes(tensors, meta)
}

/// Reads SafeTensors weights and the parameter ids in their metadata (0 when absent).
pub(crate) fn from_safetensors(
    file: &Path,
    bytes: &[u8],
) -> Result<Vec<(NamedTensor, u64)>, TrainError> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(file, e))?;
    let ids: BTreeMap<String, String> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("param_ids"))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| corrupt(file, e))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(corrupt(file, format!("tensor {name} is not f32")));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let id = ids.get(&name).and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push((
            NamedTensor {
                name,
                shape: view.shape().to_vec(),
                data,
            },
            id,
        ));
    }
    Ok(out)
}

/// Writes a checkpoint into `dir` atomically (built beside it, then renamed into place).
pub fn write(
    dir: &Path,
    mut state: CheckpointState,
    weights: &[(NamedTensor, u64)],
    best: &[NamedTensor],
    optimizer: &[u8],
) -> Result<(), TrainError> {
    let (tensors, ids): (Vec<NamedTensor>, Vec<u64>) = weights.iter().cloned().unzip();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("model.safetensors", to_safetensors(&tensors, Some(&ids))?),
        ("best.safetensors", to_safetensors(best, None)?),
        ("optimizer.bpk", optimizer.to_vec()),
    ];
    kiln_core::fsutil::replace_dir_atomic::<TrainError>(dir, |tmp| {
        state.files.clear();
        for (name, bytes) in &files {
            kiln_core::fsutil::write_atomic(&tmp.join(name), bytes)?;
            state.files.insert((*name).to_string(), sha256(bytes));
        }
        // Written last: a directory with a valid state.json is complete.
        kiln_core::fsutil::write_json(&tmp.join("state.json"), &state)?;
        Ok(())
    })
}

/// Reads and verifies a checkpoint. Every failure names the file at fault.
pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
    let state_path = dir.join("state.json");
    let text = std::fs::read(&state_path).map_err(|e| corrupt(&state_path, e))?;
    let state: CheckpointState =
        serde_json::from_slice(&text).map_err(|e| corrupt(&state_path, e))?;
    if state.format_version != CHECKPOINT_FORMAT {
        return Err(corrupt(
            &state_path,
            format!(
                "checkpoint format {} (this kiln reads format {CHECKPOINT_FORMAT})",
                state.format_version
            ),
        ));
    }
    let read = |name: &str| -> Result<Vec<u8>, TrainError> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| corrupt(&path, e))?;
        let want = state
            .files
            .get(name)
            .ok_or_else(|| corrupt(&state_path, format!("no checksum recorded for {name}")))?;
        let got = sha256(&bytes);
        if &got != want {
            return Err(corrupt(
                &path,
                format!("sha256 {got} differs from the recorded {want} (truncated or modified)"),
            ));
        }
        Ok(bytes)
    };
    let model_bytes = read("model.safetensors")?;
    let best_bytes = read("best.safetensors")?;
    let optimizer = read("optimizer.bpk")?;
    let weights = from_safetensors(&dir.join("model.safetensors"), &model_bytes)?;
    let best = from_safetensors(&dir.join("best.safetensors"), &best_bytes)?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
        weights,
        best,
        optimizer,
    })
}

/// The periodic checkpoints under `root`, newest first.
pub fn periodic(root: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let epoch = name.strip_prefix("epoch-")?.parse().ok()?;
            Some((epoch, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// The directory name of epoch `epoch`'s checkpoint.
pub fn epoch_dir(root: &Path, epoch: usize) -> PathBuf {
    root.join(format!("epoch-{epoch:06}"))
}

/// The newest checkpoint under `root` that verifies, with a message for each newer one that
/// did not (naming its file and why).
pub fn latest_good(root: &Path) -> Result<(Checkpoint, Vec<String>), TrainError> {
    let mut skipped = Vec::new();
    for (_, dir) in periodic(root) {
        match load(&dir) {
            Ok(c) => return Ok((c, skipped)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Err(TrainError::Checkpoint(if skipped.is_empty() {
        format!(
            "no checkpoint in {}; the run stopped before its first checkpoint, so start it again (checkpoints are written every --checkpoint-every epochs)",
            root.display()
        )
    } else {
        format!(
            "no usable checkpoint in {}: {}",
            root.display(),
            skipped.join("; ")
        )
    }))
}

/// Removes all but the newest `keep` periodic checkpoints.
pub fn prune(root: &Path, keep: usize) {
    for (_, dir) in periodic(root).into_iter().skip(keep.max(1)) {
        // A checkpoint that cannot be removed only costs disk space.
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> CheckpointState {
        CheckpointState {
            format_version: CHECKPOINT_FORMAT,
            epoch: 3,
            global_step: 30,
            history: Vec::new(),
            steps: Vec::new(),
            lr_trace: vec![0.1; 30],
            best_score: 0.5,
            best_epoch: 2,
            watched_best: None,
            since_best: 1,
            stopped_early: None,
            config_sha256: "abc".into(),
            files: BTreeMap::new(),
        }
    }

    fn tensor(name: &str, v: f32) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: vec![2],
            data: vec![v, -v],
        }
    }

    #[test]
    fn round_trip_keeps_weights_ids_and_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ck = epoch_dir(dir.path(), 3);
        let weights = vec![(tensor("a.weight", 1.5), 7), (tensor("a.bias", 0.25), 9)];
        write(&ck, state(), &weights, &[tensor("a.weight", 2.0)], b"opt").expect("write");
        let c = load(&ck).expect("load");
        assert_eq!(c.state.epoch, 3);
        assert_eq!(c.state.files.len(), 3);
        let mut got = c.weights.clone();
        got.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        assert_eq!(got[0], (tensor("a.bias", 0.25), 9));
        assert_eq!(got[1], (tensor("a.weight", 1.5), 7));
        assert_eq!(c.best, vec![tensor("a.weight", 2.0)]);
        assert_eq!(c.optimizer, b"opt");
    }

    #[test]
    fn a_truncated_file_is_named_and_an_older_checkpoint_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        for epoch in [1, 2] {
            let mut s = state();
            s.epoch = epoch;
            write(
                &epoch_dir(dir.path(), epoch),
                s,
                &[(tensor("w", epoch as f32), 1)],
                &[],
                b"o",
            )
            .expect("write");
        }
        let bad = epoch_dir(dir.path(), 2).join("model.safetensors");
        let bytes = std::fs::read(&bad).expect("read");
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = load(&epoch_dir(dir.path(), 2)).expect_err("corrupt");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
        let (c, skipped) = latest_good(dir.path()).expect("older one");
        assert_eq!(c.state.epoch, 1);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("model.safetensors"));
        // With every checkpoint broken, the error names the files.
        std::fs::write(epoch_dir(dir.path(), 1).join("state.json"), b"{").expect("break");
        let err = latest_good(dir.path()).expect_err("none usable");
        assert!(err.to_string().contains("state.json"), "{err}");
    }

    #[test]
    fn floats_survive_the_round_trip_bit_for_bit() {
        let mut s = state();
        s.lr_trace = vec![0.009998286624877784, 1e-300, 0.1 + 0.2, f64::MIN_POSITIVE];
        s.best_score = -0.123_456_789_012_345_68;
        s.watched_best = Some(2.0f64.sqrt());
        let text = serde_json::to_string(&s).expect("json");
        let back: CheckpointState = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, s);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.lr_trace), bits(&s.lr_trace));
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        for epoch in 1..=5 {
            let mut s = state();
            s.epoch = epoch;
            write(&epoch_dir(dir.path(), epoch), s, &[], &[], b"").expect("write");
        }
        prune(dir.path(), 2);
        let left: Vec<usize> = periodic(dir.path()).into_iter().map(|(e, _)| e).collect();
        assert_eq!(left, vec![5, 4]);
    }
}
