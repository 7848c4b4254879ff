//! Config layering for training runs: defaults < a `kiln.toml` file < overrides (the CLI's
//! flags and `KILN_*` environment variables, or a library caller's own values).
//!
//! ```
//! use kiln_train::{ConfigFile, TrainOverrides};
//!
//! let file = ConfigFile::parse("[train]\nepochs = 5\nlr = 0.01\n", "kiln.toml".as_ref())?;
//! let overrides = TrainOverrides { epochs: Some(8), ..TrainOverrides::default() };
//! let cfg = overrides.apply(file.train.clone().unwrap_or_default())?;
//! assert_eq!((cfg.epochs, cfg.lr), (8, 0.01));
//! # Ok::<(), kiln_train::TrainError>(())
//! ```

use crate::{Arch, OptimizerKind, Precision, Schedule, Strategy, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A `kiln.toml` file: data paths and a `[train]` table. Unknown keys are errors (with the
/// closest valid key suggested); relative paths are relative to the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Training data.
    pub data: Option<PathBuf>,
    /// Validation data.
    pub val_data: Option<PathBuf>,
    /// Held-out test data.
    pub test_data: Option<PathBuf>,
    /// Run directory.
    pub out: Option<PathBuf>,
    /// Training settings.
    pub train: Option<TrainConfig>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TrainError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            TrainError::Core(kiln_core::CoreError::Io {
                action: "reading config file",
                path: path.to_path_buf(),
                source: e,
            })
        })?;
        Self::parse(&text, path)
    }

    /// Parses a config file's text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TrainError> {
        let mut cfg: Self = toml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let hint = suggest_key(&msg)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            TrainError::Config(format!(
                "config file {}: {}{hint}",
                path.display(),
                msg.trim()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.data,
            &mut cfg.val_data,
            &mut cfg.test_data,
            &mut cfg.out,
        ]
        .into_iter()
        .flatten()
        {
            *p = resolve(base, p);
        }
        Ok(cfg)
    }
}

/// Checks a config file's text as a training run would: the TOML, the keys and the training
/// settings (for tools and the fuzz target).
pub fn check_config(text: &str) -> Result<(), TrainError> {
    let file = ConfigFile::parse(text, Path::new("kiln.toml"))?;
    TrainOverrides::default().apply(file.train.unwrap_or_default())?;
    Ok(())
}

/// `~/` expanded, then relative to `base`.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    let expanded = match p.to_str().and_then(|s| s.strip_prefix("~/")) {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| p.to_path_buf()),
        None => p.to_path_buf(),
    };
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

/// Settings that override a config file, each as given (names are parsed by [`apply`]).
///
/// [`apply`]: TrainOverrides::apply
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)] // Each field overrides the `TrainConfig` field of the same name.
pub struct TrainOverrides {
    pub target: Option<String>,
    /// `classification`/`classifier` or `regression`/`regressor`.
    pub task: Option<String>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub grad_accum: Option<usize>,
    pub lr: Option<f64>,
    pub activation: Option<String>,
    pub arch: Option<String>,
    /// Also selects the CNN unless `arch` says otherwise.
    pub input_shape: Option<Vec<usize>>,
    pub channels: Option<Vec<usize>>,
    /// `true` turns per-step logging on; `false` leaves the file's setting.
    pub log_steps: bool,
    pub devices: Option<Vec<String>>,
    pub strategy: Option<String>,
    pub precision: Option<String>,
    pub optimizer: Option<String>,
    pub momentum: Option<f64>,
    pub hidden: Option<Vec<usize>>,
    pub dropout: Option<f64>,
    pub weight_decay: Option<f64>,
    pub seed: Option<u64>,
    pub schedule: Option<String>,
    pub patience: Option<usize>,
    pub early_stop_metric: Option<String>,
    pub min_delta: Option<f64>,
    pub checkpoint_every: Option<usize>,
    pub best_metric: Option<String>,
    pub keep_checkpoints: Option<usize>,
}

/// Copies each `Some` override onto the config field of the same name.
macro_rules! copy_set {
    ($cfg:ident, $over:ident, $($field:ident),+) => {
        $(if let Some(v) = &$over.$field {
            $cfg.$field = v.clone();
        })+
    };
}

impl TrainOverrides {
    /// `base` with these overrides on top, validated.
    pub fn apply(&self, base: TrainConfig) -> Result<TrainConfig, TrainError> {
        let mut c = base;
        copy_set!(
            c,
            self,
            target,
            epochs,
            batch_size,
            lr,
            momentum,
            channels,
            devices,
            hidden,
            dropout,
            weight_decay,
            seed,
            grad_accum,
            checkpoint_every,
            keep_checkpoints
        );
        self.apply_named(&mut c)?;
        c.log_steps |= self.log_steps;
        if self.best_metric.is_some() {
            c.best_metric = self.best_metric.clone();
        }
        self.apply_early_stopping(&mut c);
        c.validate()?;
        Ok(c)
    }

    /// The overrides given by name: parsed into their types.
    fn apply_named(&self, c: &mut TrainConfig) -> Result<(), TrainError> {
        if let Some(v) = &self.input_shape {
            c.input_shape = v.clone();
            if self.arch.is_none() {
                c.arch = Arch::Cnn;
            }
        }
        if let Some(v) = &self.arch {
            c.arch = Arch::parse(v)?;
        }
        if let Some(v) = &self.activation {
            c.activation =
                kiln_core::Activation::parse(v).map_err(|e| TrainError::Config(e.to_string()))?;
        }
        if let Some(v) = &self.optimizer {
            c.optimizer = OptimizerKind::parse(v)?;
        }
        if let Some(v) = &self.strategy {
            c.strategy = Strategy::parse(v)?;
        }
        if let Some(v) = &self.precision {
            c.precision = Precision::parse(v)?;
        }
        if let Some(name) = &self.schedule {
            c.schedule = Schedule::parse(name, c.epochs)?;
        }
        if let Some(t) = &self.task {
            c.task = match t.as_str() {
                "classification" | "classifier" => kiln_core::Task::Classification,
                "regression" | "regressor" => kiln_core::Task::Regression,
                other => {
                    return Err(TrainError::Config(format!(
                        "unknown task {other:?}; use classification or regression"
                    )));
                }
            };
        }
        Ok(())
    }

    fn apply_early_stopping(&self, c: &mut TrainConfig) {
        if self.patience.is_none() && self.early_stop_metric.is_none() && self.min_delta.is_none() {
            return;
        }
        let mut e = c.early_stopping.clone().unwrap_or_default();
        if let Some(p) = self.patience {
            e.patience = p;
        }
        if let Some(m) = &self.early_stop_metric {
            e.metric = m.clone();
        }
        if let Some(d) = self.min_delta {
            e.min_delta = d;
        }
        c.early_stopping = Some(e);
    }
}

/// The valid key closest to the unknown one in a serde "unknown field" message.
fn suggest_key(msg: &str) -> Option<String> {
    let unknown = msg.split("unknown field `").nth(1)?.split('`').next()?;
    let expected = msg.split("expected ").nth(1)?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    candidates
        .into_iter()
        .map(|c| (edit_distance(unknown, c), c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c.to_string())
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_get_the_closest_valid_one() {
        let msg = "unknown field `epoch`, expected one of `task`, `hidden`, `dropout`, `epochs`, `batch_size`";
        assert_eq!(suggest_key(msg).as_deref(), Some("epochs"));
        assert_eq!(suggest_key("unknown field `zzzzzzzz`, expected `lr`"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let err = ConfigFile::parse("[train]\nepoch = 3\n", Path::new("k.toml")).expect_err("key");
        assert!(err.to_string().contains("did you mean `epochs`"), "{err}");
    }

    #[test]
    fn overrides_win_over_the_file_and_paths_follow_the_file() {
        let file = ConfigFile::parse(
            "data = \"d/train.csv\"\n[train]\nepochs = 5\nseed = 3\n",
            Path::new("/cfg/kiln.toml"),
        )
        .expect("parse");
        assert_eq!(file.data.as_deref(), Some(Path::new("/cfg/d/train.csv")));
        let o = TrainOverrides {
            seed: Some(9),
            input_shape: Some(vec![1, 8, 8]),
            patience: Some(4),
            ..TrainOverrides::default()
        };
        let c = o
            .apply(file.train.clone().unwrap_or_default())
            .expect("apply");
        assert_eq!((c.epochs, c.seed, c.arch), (5, 9, Arch::Cnn));
        assert_eq!(c.early_stopping.map(|e| e.patience), Some(4));
        let bad = TrainOverrides {
            task: Some("clustering".into()),
            ..TrainOverrides::default()
        };
        assert!(bad.apply(TrainConfig::default()).is_err());
    }
}
