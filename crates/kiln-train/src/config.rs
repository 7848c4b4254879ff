use crate::TrainError;
use serde::{Deserialize, Serialize};

/// A whole training run, declared as data. Unknown keys are rejected when loading from TOML or
/// JSON, so a typo cannot silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Classification (softmax, cross-entropy) or regression (one output, MSE).
    pub task: kiln_core::Task,
    /// The architecture: `mlp`, or `cnn` (a small 1-D/2-D CNN over `input_shape`).
    pub arch: Arch,
    /// For `cnn`: each row's features as `[channels, length]` or `[channels, height, width]`.
    pub input_shape: Vec<usize>,
    /// For `cnn`: output channels of each Conv → BatchNorm → ReLU block.
    pub channels: Vec<usize>,
    /// Hidden layer widths of the MLP (for `cnn`, of the dense layers after the convolutions).
    pub hidden: Vec<usize>,
    /// The hidden activation (`relu`, `tanh`, `sigmoid`, `silu`, `gelu`).
    pub activation: kiln_core::Activation,
    /// Dropout after each hidden activation (0 disables it).
    pub dropout: f64,
    /// Number of epochs.
    pub epochs: usize,
    /// Rows per forward/backward pass (a micro-batch when `grad_accum` > 1).
    pub batch_size: usize,
    /// Micro-batches whose gradients are accumulated into one optimizer step.
    pub grad_accum: usize,
    /// The optimizer: `adam`, `adamw` (decoupled weight decay) or `sgd` (with `momentum`).
    pub optimizer: OptimizerKind,
    /// Learning rate (the base rate of the schedule).
    pub lr: f64,
    /// Weight decay: L2 for adam and sgd, decoupled for adamw; 0 disables it.
    pub weight_decay: f64,
    /// SGD momentum (0 disables it); other optimizers ignore it.
    pub momentum: f64,
    /// Seed for weight initialisation, dropout and the data order.
    pub seed: u64,
    /// Name of the target column.
    pub target: String,
    /// Standardise features with statistics from the training data (stored with the model).
    pub standardize: bool,
    /// How the learning rate changes over the run.
    pub schedule: Schedule,
    /// Stop when a metric stops improving; the best epoch's weights are kept.
    pub early_stopping: Option<EarlyStopping>,
    /// Write a checkpoint (model, optimizer, schedule position, history) every N epochs, and
    /// at the last epoch; 0 disables checkpoints (and with them `--resume`).
    pub checkpoint_every: usize,
    /// Periodic checkpoints kept (the newest); `checkpoints/best` is kept besides.
    pub keep_checkpoints: usize,
    /// Record every optimizer step (epoch, step, loss, learning rate) in the outcome, the
    /// checkpoints and `metrics.jsonl`.
    pub log_steps: bool,
    /// Training devices: `["cpu"]`, or `["cpu", "cpu"]` for burn's multi-device strategy
    /// (each batch split across replicas, gradients summed on the first). Cannot be combined
    /// with `grad_accum` > 1.
    pub devices: Vec<String>,
    /// How several devices share the work: `auto` (burn's DDP on two or more CUDA devices,
    /// else `multi`), `multi` (each batch split across the devices, gradients summed on the
    /// first: burn's `step_multi`) or `ddp` (one optimizer per device, gradients all-reduced
    /// between the devices: burn's DDP, which burn 0.22 implements for CUDA only).
    #[serde(skip_serializing_if = "Strategy::is_auto")]
    pub strategy: Strategy,
    /// Floating-point type of the weights, activations, gradients and optimizer state during
    /// training: `f32`, or `bf16` (flex supports it; the exported model is f32 either way).
    /// `f16` is refused: see [`Precision::F16`].
    pub precision: Precision,
    /// The metric that picks the best epoch (the saved model and `checkpoints/best`):
    /// `val_loss`, `val_accuracy`, `train_loss` or `train_accuracy`; accuracies are maximised.
    /// Default: the early-stopping metric, else `val_loss`.
    pub best_metric: Option<String>,
}

/// Why this build cannot train on device `name`, or `None` when it can.
pub(crate) fn device_error(name: &str) -> Option<String> {
    match name.trim() {
        "cpu" | "flex" => None,
        #[cfg(feature = "cuda")]
        other if cuda_index(other).is_some() => None,
        #[cfg(feature = "wgpu")]
        other if crate::trainer::wgpu_kind(other).is_some() => None,
        #[cfg(feature = "wgpu")]
        other if other.starts_with("wgpu") => Some(format!(
            "device {other:?}: use wgpu (the adapter wgpu prefers), wgpu:N (the Nth discrete GPU) or wgpu:cpu (a software adapter such as Mesa's lavapipe)"
        )),
        other
            if ["cuda", "wgpu", "rocm", "metal", "vulkan"]
                .iter()
                .any(|k| other.starts_with(k)) =>
        {
            Some(format!(
                "device {other:?}: this kiln trains on burn's flex CPU backend only; GPU training needs burn's {} backend, which this build does not include, so use cpu",
                other.split(':').next().unwrap_or(other)
            ))
        }
        #[cfg(feature = "distributed")]
        other if other.starts_with("ws://") => None,
        other if other.starts_with("ws://") || other.starts_with("wss://") => Some(format!(
            "device {other:?}: remote workers need burn's remote backend; build kiln with `--features distributed` (or train locally with cpu)"
        )),
        other => Some(format!(
            "unknown device {other:?}; use cpu (or cpu,cpu for two replicas)"
        )),
    }
}

/// The index of a CUDA device name: `cuda` (device 0) or `cuda:N`.
pub(crate) fn cuda_index(name: &str) -> Option<usize> {
    match name.trim() {
        "cuda" => Some(0),
        other => other.strip_prefix("cuda:")?.parse().ok(),
    }
}

/// Two or more CUDA devices, each named once: what burn's all-reduce can run on (one device
/// named twice would join its own collective).
fn distinct_cuda_devices(devices: &[String]) -> bool {
    let indices: Option<Vec<usize>> = devices.iter().map(|d| cuda_index(d)).collect();
    indices.is_some_and(|mut v| {
        v.sort_unstable();
        v.dedup();
        v.len() > 1 && v.len() == devices.len()
    })
}

/// Whether `metric` is maximised: `mode` (`min`/`max`) when given, else accuracies are.
pub(crate) fn maximized(metric: &str, mode: Option<&str>) -> bool {
    match mode {
        Some("max") => true,
        Some(_) => false,
        None => metric.ends_with("accuracy") || metric.ends_with("f1"),
    }
}

const METRICS: [&str; 5] = [
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "train_loss",
    "train_accuracy",
];

/// The network architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// A multi-layer perceptron.
    #[default]
    Mlp,
    /// Convolutions with batch norm over image-like rows, then dense layers.
    Cnn,
}

impl Arch {
    /// Parses `mlp` or `cnn`.
    pub fn parse(name: &str) -> Result<Self, TrainError> {
        match name {
            "mlp" => Ok(Self::Mlp),
            "cnn" => Ok(Self::Cnn),
            other => Err(TrainError::Config(format!(
                "unknown architecture {other:?}; use mlp or cnn"
            ))),
        }
    }
}

/// How several training devices share the work (`--strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// `ddp` on two or more CUDA devices, `multi` elsewhere.
    #[default]
    Auto,
    /// burn's multi-device step: the batch is split across the devices and the gradients are
    /// gathered and summed on the first, which holds the only optimizer. Every backend.
    Multi,
    /// burn's distributed data parallel: one replica and one optimizer per device, each in its
    /// own thread, with the gradients all-reduced between the devices during the backward
    /// pass. burn 0.22's all-reduce exists for CUDA (NCCL) only.
    Ddp,
}

impl Strategy {
    /// Parses `auto`, `multi` or `ddp`.
    pub fn parse(name: &str) -> Result<Self, TrainError> {
        match name {
            "auto" => Ok(Self::Auto),
            "multi" => Ok(Self::Multi),
            "ddp" => Ok(Self::Ddp),
            other => Err(TrainError::Config(format!(
                "unknown strategy {other:?}; use auto, multi or ddp"
            ))),
        }
    }

    fn is_auto(&self) -> bool {
        *self == Self::Auto
    }
}

/// The float type training runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16: f32's exponent range with 8 bits of mantissa; burn's flex backend computes in it.
    Bf16,
    /// IEEE half precision. Refused: burn 0.22 has no autocast, loss scaling or f32 master
    /// weights, so Adam's second moment (squared gradients, often below 1e-8) underflows f16
    /// (smallest normal 6.1e-5) and training diverges.
    F16,
}

impl Precision {
    /// Parses `f32`, `bf16` or `f16`.
    pub fn parse(name: &str) -> Result<Self, TrainError> {
        match name {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            other => Err(TrainError::Config(format!(
                "unknown precision {other:?}; use f32 or bf16"
            ))),
        }
    }
}

/// Which burn optimizer trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with optional L2 weight decay.
    #[default]
    Adam,
    /// AdamW: Adam with decoupled weight decay.
    Adamw,
    /// Stochastic gradient descent with optional momentum.
    Sgd,
}

impl OptimizerKind {
    /// Parses `adam`, `adamw` or `sgd`.
    pub fn parse(name: &str) -> Result<Self, TrainError> {
        match name {
            "adam" => Ok(Self::Adam),
            "adamw" => Ok(Self::Adamw),
            "sgd" => Ok(Self::Sgd),
            other => Err(TrainError::Config(format!(
                "unknown optimizer {other:?}; use adam, adamw or sgd"
            ))),
        }
    }
}

/// A learning-rate schedule over optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine decay from the base rate to `min_lr` over the run.
    Cosine {
        /// Final rate.
        min_lr: f64,
    },
    /// Linear warm-up from 0 over `warmup_steps`, then cosine decay to `min_lr`.
    WarmupCosine {
        /// Steps of linear warm-up.
        warmup_steps: usize,
        /// Final rate.
        min_lr: f64,
    },
}

impl Schedule {
    /// The rate at 0-based `step` of `total` steps (`per_epoch` steps an epoch).
    pub fn lr(&self, base: f64, step: usize, total: usize, per_epoch: usize) -> f64 {
        let cosine = |from: usize, min: f64| {
            let span = total.saturating_sub(from).max(1) as f64;
            let t = (step.saturating_sub(from) as f64 / span).min(1.0);
            min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        };
        match *self {
            Schedule::Constant => base,
            Schedule::Step {
                every_epochs,
                gamma,
            } => base * gamma.powi((step / per_epoch.max(1) / every_epochs.max(1)) as i32),
            Schedule::Cosine { min_lr } => cosine(0, min_lr),
            Schedule::WarmupCosine {
                warmup_steps,
                min_lr,
            } => {
                if step < warmup_steps {
                    base * (step + 1) as f64 / warmup_steps as f64
                } else {
                    cosine(warmup_steps, min_lr)
                }
            }
        }
    }

    /// Parses a schedule name from the command line with default parameters.
    pub fn parse(name: &str, epochs: usize) -> Result<Self, TrainError> {
        Ok(match name {
            "constant" => Schedule::Constant,
            "step" => Schedule::Step {
                every_epochs: (epochs / 3).max(1),
                gamma: 0.1,
            },
            "cosine" => Schedule::Cosine { min_lr: 0.0 },
            "warmup-cosine" | "warmup_cosine" => Schedule::WarmupCosine {
                warmup_steps: 100,
                min_lr: 0.0,
            },
            other => {
                return Err(TrainError::Config(format!(
                    "unknown schedule {other:?}; use constant, step, cosine or warmup-cosine"
                )));
            }
        })
    }
}

/// Early stopping on a recorded metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopping {
    /// `val_loss`, `val_accuracy`, `train_loss` or `train_accuracy`.
    pub metric: String,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
    /// `min` or `max`; by default losses are minimised and accuracies maximised.
    pub mode: Option<String>,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            metric: "val_loss".into(),
            patience: 5,
            min_delta: 0.0,
            mode: None,
        }
    }
}

impl EarlyStopping {
    /// Whether larger values are better.
    pub fn maximize(&self) -> bool {
        maximized(&self.metric, self.mode.as_deref())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: kiln_core::Task::Classification,
            arch: Arch::Mlp,
            input_shape: Vec::new(),
            channels: vec![8, 16],
            hidden: vec![64, 64],
            activation: kiln_core::Activation::Relu,
            dropout: 0.0,
            epochs: 20,
            batch_size: 32,
            grad_accum: 1,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.9,
            seed: 42,
            target: kiln_data::DEFAULT_TARGET.into(),
            standardize: true,
            schedule: Schedule::Constant,
            early_stopping: None,
            checkpoint_every: 1,
            keep_checkpoints: 3,
            best_metric: None,
            precision: Precision::F32,
            devices: vec!["cpu".into()],
            strategy: Strategy::Auto,
            log_steps: false,
        }
    }
}

impl TrainConfig {
    /// Whether the run takes burn's DDP: `ddp`, or `auto` on two or more different CUDA
    /// devices.
    pub(crate) fn uses_ddp(&self) -> bool {
        self.strategy != Strategy::Multi && distinct_cuda_devices(&self.devices)
    }

    /// Checks every field and says which one is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.grad_accum == 0 {
            return bad("grad_accum must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if self.arch == Arch::Cnn {
            if !(2..=3).contains(&self.input_shape.len()) || self.input_shape.contains(&0) {
                return bad(format!(
                    "a cnn needs input_shape [channels, length] or [channels, height, width], got {:?} (e.g. --input-shape 1,8,8)",
                    self.input_shape
                ));
            }
            if self.channels.is_empty() || self.channels.contains(&0) {
                return bad(
                    "a cnn needs at least one conv block; channels must be positive, e.g. 8,16"
                        .into(),
                );
            }
        }
        if self.devices.is_empty() {
            return bad("devices is empty; use cpu, or cpu,cpu for two replicas".into());
        }
        if let Some(e) = self.devices.iter().find_map(|d| device_error(d)) {
            return bad(e);
        }
        if self.devices.len() > 1 && self.grad_accum > 1 {
            return bad("grad_accum > 1 cannot be combined with several devices: each step already splits its batch across the devices; use one or the other".into());
        }
        if self.strategy == Strategy::Ddp && !distinct_cuda_devices(&self.devices) {
            return bad(format!(
                "strategy ddp needs two or more different CUDA devices (e.g. --devices cuda:0,cuda:1), got {}: burn 0.22's all-reduce exists only for CUDA (NCCL), not for cpu, wgpu or remote ws:// workers; use --strategy multi, which sums the gradients on the first device",
                self.devices.join(",")
            ));
        }
        if self.precision == Precision::F16 {
            return bad("precision f16 is refused: burn 0.22 has no loss scaling or f32 master weights, so Adam's second moment (squared gradients, often below 1e-8) underflows f16 (smallest normal 6.1e-5) and training diverges; use bf16, which has f32's exponent range".into());
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!(
                "weight_decay must be a non-negative number, got {}",
                self.weight_decay
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.hidden.contains(&0) {
            return bad("hidden layer widths must be at least 1".into());
        }
        if let Some(b) = self.best_metric.as_deref().filter(|b| !METRICS.contains(b)) {
            return bad(format!(
                "best_metric {b:?} is not recorded; use val_loss, val_accuracy, val_macro_f1, train_loss or train_accuracy"
            ));
        }
        if let Some(e) = &self.early_stopping {
            if !METRICS.contains(&e.metric.as_str()) {
                return bad(format!(
                    "early_stopping.metric {:?} is not recorded; use val_loss, val_accuracy, val_macro_f1, train_loss or train_accuracy",
                    e.metric
                ));
            }
            if !matches!(e.mode.as_deref(), None | Some("min") | Some("max")) {
                return bad(format!(
                    "early_stopping.mode must be min or max, got {:?}",
                    e.mode
                ));
            }
            if e.patience == 0 {
                return bad("early_stopping.patience must be at least 1".into());
            }
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_accepted_or_refused_with_the_reason() {
        assert_eq!(device_error("cpu"), None);
        assert_eq!(device_error(" flex "), None);
        assert!(device_error("tpu").is_some_and(|e| e.contains("unknown device")));
        #[cfg(not(feature = "cuda"))]
        assert!(device_error("cuda:0").is_some_and(|e| e.contains("cuda backend")));
        #[cfg(not(feature = "wgpu"))]
        assert!(device_error("wgpu").is_some_and(|e| e.contains("wgpu backend")));
        #[cfg(feature = "wgpu")]
        {
            use burn::tensor::DeviceKind;
            for (name, kind) in [
                ("wgpu", DeviceKind::DefaultDevice),
                ("wgpu:cpu", DeviceKind::Cpu),
                ("wgpu:1", DeviceKind::DiscreteGpu(1)),
            ] {
                assert_eq!(device_error(name), None, "{name}");
                assert_eq!(crate::trainer::wgpu_kind(name), Some(kind));
            }
            assert!(device_error("wgpu:gpu").is_some_and(|e| e.contains("wgpu:N")));
        }
    }

    #[test]
    fn ddp_is_refused_where_burn_has_no_all_reduce() {
        assert_eq!(Strategy::parse("ddp").ok(), Some(Strategy::Ddp));
        assert!(Strategy::parse("ring").is_err());
        let cfg = |devices: &[&str], strategy| TrainConfig {
            devices: devices.iter().map(|d| d.to_string()).collect(),
            strategy,
            ..TrainConfig::default()
        };
        for devices in [&["cpu", "cpu"][..], &["cpu"]] {
            let err = cfg(devices, Strategy::Ddp)
                .validate()
                .expect_err("ddp off CUDA must be refused")
                .to_string();
            assert!(err.contains("only for CUDA"), "{err}");
            assert!(cfg(devices, Strategy::Multi).validate().is_ok());
            assert!(cfg(devices, Strategy::Auto).validate().is_ok());
        }
        #[cfg(feature = "cuda")]
        assert!(cfg(&["cuda:0", "cuda:1"], Strategy::Ddp).validate().is_ok());
        // Which runs take DDP, whatever this build includes.
        for (devices, strategy, ddp) in [
            (&["cuda:0", "cuda:1"][..], Strategy::Auto, true),
            (&["cuda:1", "cuda"], Strategy::Ddp, true),
            (&["cuda:0", "cuda:1"], Strategy::Multi, false),
            (&["cuda:0"], Strategy::Auto, false),
            (&["cuda:0", "cuda:0"], Strategy::Auto, false),
            (&["cuda", "cuda:0"], Strategy::Auto, false),
            (&["cuda:0", "cpu"], Strategy::Auto, false),
            (&["cuda:x", "cuda:1"], Strategy::Auto, false),
        ] {
            assert_eq!(
                cfg(devices, strategy).uses_ddp(),
                ddp,
                "{devices:?} {strategy:?}"
            );
        }
        // The default is not written out, so configs (and their checksums) from before the
        // field existed are unchanged.
        let toml = toml::to_string(&TrainConfig::default()).expect("serialises");
        assert!(!toml.contains("strategy"), "{toml}");
        let toml = toml::to_string(&cfg(&["cpu", "cpu"], Strategy::Multi)).expect("serialises");
        assert!(toml.contains("strategy = \"multi\""), "{toml}");
    }

    #[test]
    fn schedules_follow_their_curves() {
        let (base, total, per) = (0.1, 100, 10);
        assert_eq!(Schedule::Constant.lr(base, 57, total, per), 0.1);
        let step = Schedule::Step {
            every_epochs: 3,
            gamma: 0.5,
        };
        assert_eq!(step.lr(base, 29, total, per), 0.1);
        assert!((step.lr(base, 30, total, per) - 0.05).abs() < 1e-12);
        assert!((step.lr(base, 60, total, per) - 0.025).abs() < 1e-12);
        let cos = Schedule::Cosine { min_lr: 0.0 };
        assert!((cos.lr(base, 0, total, per) - 0.1).abs() < 1e-12);
        assert!((cos.lr(base, 50, total, per) - 0.05).abs() < 1e-12);
        assert!(cos.lr(base, 100, total, per).abs() < 1e-12);
        let w = Schedule::WarmupCosine {
            warmup_steps: 10,
            min_lr: 0.01,
        };
        assert!((w.lr(base, 0, total, per) - 0.01).abs() < 1e-12);
        assert!((w.lr(base, 9, total, per) - 0.1).abs() < 1e-12);
        assert!((w.lr(base, 10, total, per) - 0.1).abs() < 1e-12);
        assert!((w.lr(base, 100, total, per) - 0.01).abs() < 1e-12);
        // Monotone decay after warm-up.
        let xs: Vec<f64> = (10..=100).map(|s| w.lr(base, s, total, per)).collect();
        assert!(xs.windows(2).all(|p| p[1] <= p[0] + 1e-15));
    }

    #[test]
    fn schedules_and_early_stopping_load_from_toml() {
        let c: TrainConfig = toml::from_str("epochs = 9\n[schedule]\nkind = \"step\"\nevery_epochs = 2\ngamma = 0.3\n[early_stopping]\nmetric = \"val_accuracy\"\npatience = 2\n").expect("toml");
        assert_eq!(
            c.schedule,
            Schedule::Step {
                every_epochs: 2,
                gamma: 0.3
            }
        );
        let e = c.early_stopping.expect("early stopping");
        assert!(e.maximize() && e.patience == 2);
    }
}
