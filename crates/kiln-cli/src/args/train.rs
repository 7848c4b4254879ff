//! Arguments of `kiln train` and `kiln pipeline`, and their conversion to the library's
//! `TrainOverrides`.

use super::RunFlags;
use clap::Args;
use std::path::PathBuf;

/// Training hyper-parameters shared by `train` and `pipeline`. Precedence, lowest first:
/// defaults < the `--config` file < `KILN_*` environment variables < flags.
#[derive(Debug, Args, Clone, Default)]
pub struct TrainFlags {
    /// Target column name [default: label].
    #[arg(long, env = "KILN_TARGET")]
    pub target: Option<String>,
    /// What to learn: classification (class labels) or regression (a numeric target); also
    /// spelled --model-type classifier|regressor [default: classification].
    #[arg(long, env = "KILN_TASK", visible_alias = "model-type")]
    pub task: Option<String>,
    /// Number of epochs [default: 20].
    #[arg(long, env = "KILN_EPOCHS")]
    pub epochs: Option<usize>,
    /// Rows per optimizer step [default: 32].
    #[arg(long, env = "KILN_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Accumulate gradients over K micro-batches of --batch-size per optimizer step [default: 1].
    #[arg(long, env = "KILN_GRAD_ACCUM")]
    pub grad_accum: Option<usize>,
    /// Learning rate [default: 0.001].
    #[arg(long, env = "KILN_LR", visible_alias = "learning-rate")]
    pub lr: Option<f64>,
    /// Hidden activation: relu, tanh, sigmoid, silu or gelu (silu and gelu export as ONNX
    /// local functions in the ai.kiln domain) [default: relu].
    #[arg(long, env = "KILN_ACTIVATION")]
    pub activation: Option<String>,
    /// Architecture: mlp, or cnn (Conv → BatchNorm → ReLU blocks over --input-shape, then dense
    /// layers) [default: cnn when --input-shape is given, else mlp].
    #[arg(long, env = "KILN_ARCH")]
    pub arch: Option<String>,
    /// For cnn: each row's features as channels,length or channels,height,width (e.g. 1,8,8
    /// for 8×8 images stored as 64 columns).
    #[arg(long, env = "KILN_INPUT_SHAPE", value_delimiter = ',')]
    pub input_shape: Option<Vec<usize>>,
    /// For cnn: output channels of each conv block (the first keeps the size, the others
    /// halve it) [default: 8,16].
    #[arg(long, env = "KILN_CHANNELS", value_delimiter = ',')]
    pub channels: Option<Vec<usize>>,
    /// Also record every optimizer step (loss, learning rate) in metrics.jsonl.
    #[arg(long)]
    pub log_steps: bool,
    /// Training devices, comma-separated: cpu, or cpu,cpu for burn's multi-device strategy
    /// (batch split across replicas, gradients gathered on the first); cuda:N and wgpu[:N|:cpu]
    /// with the `cuda` and `wgpu` builds, ws://host:port with `distributed` [default: cpu].
    #[arg(long, env = "KILN_DEVICES", value_delimiter = ',')]
    pub devices: Option<Vec<String>>,
    /// How several devices share the work: auto (ddp on two or more CUDA devices, else
    /// multi), multi (gradients summed on the first device) or ddp (burn's all-reduce, CUDA
    /// only) [default: auto].
    #[arg(long, env = "KILN_STRATEGY")]
    pub strategy: Option<String>,
    /// Training float type: f32 or bf16 (the exported model is f32 either way); f16 is refused
    /// because Adam's second moment underflows it [default: f32].
    #[arg(long, env = "KILN_PRECISION")]
    pub precision: Option<String>,
    /// Optimizer: adam, adamw (decoupled weight decay) or sgd [default: adam].
    #[arg(long, env = "KILN_OPTIMIZER")]
    pub optimizer: Option<String>,
    /// SGD momentum, 0 to turn it off [default: 0.9].
    #[arg(long, env = "KILN_MOMENTUM")]
    pub momentum: Option<f64>,
    /// Hidden layer widths, comma-separated [default: 64,64].
    #[arg(long, env = "KILN_HIDDEN", value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Dropout after each hidden layer [default: 0].
    #[arg(long, env = "KILN_DROPOUT")]
    pub dropout: Option<f64>,
    /// Adam weight decay [default: 0].
    #[arg(long, env = "KILN_WEIGHT_DECAY")]
    pub weight_decay: Option<f64>,
    /// Random seed for initialisation and data order [default: 42].
    #[arg(long, env = "KILN_SEED")]
    pub seed: Option<u64>,
    /// Learning-rate schedule: constant, step, cosine or warmup-cosine [default: constant]
    /// (parameters in the config file's [train.schedule] table).
    #[arg(long, env = "KILN_SCHEDULE")]
    pub schedule: Option<String>,
    /// Stop after this many epochs without improvement of --early-stop-metric.
    #[arg(long, env = "KILN_PATIENCE")]
    pub patience: Option<usize>,
    /// Metric watched by early stopping and used to pick the best epoch: val_loss,
    /// val_accuracy, train_loss or train_accuracy [default: val_loss].
    #[arg(long, env = "KILN_EARLY_STOP_METRIC")]
    pub early_stop_metric: Option<String>,
    /// Smallest change counted as an improvement [default: 0].
    #[arg(long, env = "KILN_MIN_DELTA")]
    pub min_delta: Option<f64>,
    /// Write a checkpoint (model, optimizer, schedule position, history) into <out>/checkpoints
    /// every N epochs; 0 turns checkpoints off [default: 1].
    #[arg(long, env = "KILN_CHECKPOINT_EVERY")]
    pub checkpoint_every: Option<usize>,
    /// Metric that picks the best epoch (the saved model and checkpoints/best): val_loss,
    /// val_accuracy, train_loss or train_accuracy [default: --early-stop-metric, else val_loss].
    #[arg(long, env = "KILN_BEST_METRIC")]
    pub best_metric: Option<String>,
    /// Newest periodic checkpoints kept; <out>/checkpoints/best is kept besides [default: 3].
    #[arg(long, env = "KILN_KEEP_CHECKPOINTS")]
    pub keep_checkpoints: Option<usize>,
    /// TOML config file; its relative paths resolve against its own folder.
    #[arg(long, env = "KILN_CONFIG")]
    pub config: Option<PathBuf>,
}

impl TrainFlags {
    /// The flags as the library's overrides (config layering lives in kiln-train).
    pub fn overrides(&self) -> kiln_train::TrainOverrides {
        kiln_train::TrainOverrides {
            target: self.target.clone(),
            task: self.task.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            activation: self.activation.clone(),
            arch: self.arch.clone(),
            input_shape: self.input_shape.clone(),
            channels: self.channels.clone(),
            log_steps: self.log_steps,
            devices: self.devices.clone(),
            strategy: self.strategy.clone(),
            precision: self.precision.clone(),
            optimizer: self.optimizer.clone(),
            momentum: self.momentum,
            hidden: self.hidden.clone(),
            dropout: self.dropout,
            weight_decay: self.weight_decay,
            seed: self.seed,
            schedule: self.schedule.clone(),
            patience: self.patience,
            early_stop_metric: self.early_stop_metric.clone(),
            min_delta: self.min_delta,
            checkpoint_every: self.checkpoint_every,
            best_metric: self.best_metric.clone(),
            keep_checkpoints: self.keep_checkpoints,
        }
    }
}

/// `kiln train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data (CSV or JSONL with a target column).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation data, evaluated every epoch; the best epoch's weights are kept.
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Held-out test data, evaluated once with the kept model (loss, accuracy, macro-F1) and
    /// reported in metrics.json; it plays no part in choosing the best epoch.
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Run directory: <out>/model, metrics.json, config.toml, run.json, kiln.log, plots/
    /// [default: <runs-dir>/<timestamp>-<name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
    /// Overwrite an existing output directory's model.
    #[arg(long)]
    pub force: bool,
    /// Continue an interrupted run from its newest good checkpoint, with the run's own
    /// config.toml; the result equals an uninterrupted run's.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["data", "val_data", "test_data", "out", "force"])]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub train: TrainFlags,
}

/// `kiln pipeline`.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Generate a synthetic data set and run the whole pipeline on it.
    #[arg(long, conflicts_with_all = ["data", "val_data", "test_data"])]
    pub demo: bool,
    /// Training data.
    #[arg(long, required_unless_present = "demo")]
    pub data: Option<PathBuf>,
    /// Validation data (also used to validate quantization).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Held-out test data, run through the exported models.
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Run directory for every artifact, report.html and plots/
    /// [default: <runs-dir>/<timestamp>-<name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
    /// Quantization of the optimized model: none, dynamic or static.
    #[arg(long, default_value = "dynamic")]
    pub quantization: String,
    /// Calibration data for static quantization [default: the training data].
    #[arg(long)]
    pub calibration_data: Option<PathBuf>,
    /// Refuse an optimized model whose validation accuracy is below this fraction of the float
    /// model's.
    #[arg(long, default_value_t = 0.99)]
    pub min_accuracy_ratio: f64,
    /// ONNX opset.
    #[arg(long, default_value_t = 17)]
    pub opset: i64,
    /// Overwrite an existing output directory.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub train: TrainFlags,
}
