use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// kiln: train, export, optimize and run models, one Rust-native pipeline.
#[derive(Debug, Parser)]
#[command(name = "kiln", version,
    about = "kiln: train a model, export it to ONNX, optimize it and serve it, checking accuracy at every step.\nExample: kiln pipeline --demo --out runs/demo",
    long_about = None, arg_required_else_help = true,
    after_help = "Start with `kiln pipeline --demo --out runs/demo`, which generates data and runs every stage.")]
pub struct Cli {
    /// Print one JSON summary object on stdout (logs go to stderr); same as --format json.
    #[arg(long, global = true)]
    pub json: bool,
    /// How results are printed: human (aligned text), json (one object), csv or markdown (the
    /// result tables).
    #[arg(long, global = true, value_enum, default_value_t = Format::Human, env = "KILN_FORMAT")]
    pub format: Format,
    /// Only print errors and the final result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail: -v adds debug messages and per-batch progress lines, -vv traces. RUST_LOG,
    /// when set, chooses the log filter instead (e.g. RUST_LOG=kiln_optimize=debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to colour output; auto colours a terminal unless NO_COLOR is set (CLICOLOR_FORCE=1
    /// colours pipes too).
    #[arg(long, global = true, value_enum, default_value_t = clap::ColorChoice::Auto)]
    pub color: clap::ColorChoice,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    // Plain comments, not doc comments: clap would switch every --help to its long layout.
    // human: aligned text; json: one object on stdout; csv: the result tables (several are
    // separated by a blank line and a `# title` comment line); markdown: the result tables.
    Human,
    Json,
    Csv,
    Markdown,
}

/// kiln's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an MLP classifier on a CSV/JSONL file with burn.
    #[command(
        after_help = "Examples:\n  kiln train --data train.csv --val-data val.csv --out runs/iris\n  kiln train --config kiln.toml --epochs 50 --out runs/long"
    )]
    Train(TrainArgs),
    /// Export a trained model directory to a verified ONNX file.
    #[command(
        after_help = "Examples:\n  kiln export --model runs/iris/model --output iris.onnx\n  kiln export --model runs/iris/model --output iris13.onnx --opset 13"
    )]
    Export(ExportArgs),
    /// Optimize an ONNX model: graph clean-up and int8 quantization.
    #[command(
        after_help = "Examples:\n  kiln optimize --model iris.onnx --output iris.int8.onnx --quantization dynamic --validate-data val.csv\n  kiln optimize --model model.onnx --output clean.onnx\n  kiln optimize --model m.onnx --output m.auto.onnx --engine auto --validate-data val.csv --calibration-data train.csv --plots plots/"
    )]
    Optimize(OptimizeArgs),
    /// Run an ONNX model over a CSV/JSONL file, one output row per input row.
    #[command(
        after_help = "Examples:\n  kiln infer --model iris.onnx --data test.csv --output predictions.csv\n  cat rows.csv | kiln infer --model iris.onnx --data -"
    )]
    Infer(InferArgs),
    /// Run train → export → optimize → infer in one go.
    #[command(
        after_help = "Examples:\n  kiln pipeline --demo --out runs/demo\n  kiln pipeline --data train.csv --val-data val.csv --test-data test.csv --out runs/mine"
    )]
    Pipeline(PipelineArgs),
    /// Measure throughput and latency over engines × batch sizes, and recommend a configuration.
    #[command(
        after_help = "Examples:\n  kiln bench runs/demo/model.onnx\n  kiln bench model.onnx --engines tract,ort --batch-sizes 1,64 --seconds 2 --json"
    )]
    Bench(BenchArgs),
    /// Compare two models on labelled rows: accuracy, agreement, drift, speed, size, and a
    /// per-layer error table when they share layer outputs (float vs kiln-quantized).
    #[command(
        after_help = "Examples:\n  kiln compare runs/demo/model.onnx runs/demo/model.int8.onnx --data runs/demo/data/test.csv\n  kiln compare a.onnx b.onnx --data val.csv --format markdown > comparison.md"
    )]
    Compare(CompareArgs),
    /// Build a deployment bundle (model, manifest with hashes, sample, model card), or verify one.
    #[command(
        after_help = "Examples:\n  kiln package runs/demo/model.int8.onnx --out bundle/ --validate-data runs/demo/data/val.csv\n  kiln package runs/demo/model.onnx --out model-bundle.tar.gz\n  kiln package --verify bundle/   (or a .tar.gz, unpacked safely first)"
    )]
    Package(PackageArgs),
    /// Profile a model in tract: time per node (slowest first), FLOPs, GFLOP/s against this
    /// CPU's peak, and memory.
    #[command(
        after_help = "Examples:\n  kiln profile runs/demo/model.onnx\n  kiln profile model.onnx --batch-size 256 --iterations 200 --json"
    )]
    Profile(ProfileArgs),
    /// Check this machine: CPU, engines, the ONNX Runtime library, GPUs and the Python
    /// cross-check tools, each with how to get what is missing.
    #[command(after_help = "Examples:\n  kiln doctor\n  kiln doctor --json")]
    Doctor,
    /// List past runs, or compare runs side by side (config, metrics, timings).
    #[command(
        after_help = "Examples:\n  kiln runs list\n  kiln runs compare 20261126-101500-iris 20261126-103000-iris\n  kiln runs compare runs/a runs/b --all --format markdown > runs.md"
    )]
    Runs(RunsArgs),
    /// Write a kiln.toml for a data file, asking for the target column and task (with defaults
    /// detected from the CSV). Prompts only on a terminal; elsewhere pass the answers as flags.
    #[command(
        after_help = "Examples:\n  kiln init\n  kiln init --data data/iris/train.csv --target species --task classification --yes"
    )]
    Init(InitArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  kiln completions bash > ~/.local/share/bash-completion/completions/kiln\n  kiln completions zsh > ~/.zfunc/_kiln"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Serve this machine's CPU to remote trainers (`kiln train --devices ws://host:port,…`)
    /// with burn's remote backend. Needs a kiln built with `--features distributed`.
    #[command(
        after_help = "Examples:\n  kiln worker --listen 127.0.0.1:3000\n  kiln worker --listen 0.0.0.0:3000   # reachable from other machines; WebSocket is unencrypted\n\nThen, on the trainer: kiln train --data train.csv --out run --devices ws://host1:3000,ws://host2:3000"
    )]
    Worker {
        /// Address to listen on; loopback unless other machines must reach it.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
    },
    /// Serve a model over HTTP with the KServe v2 / Triton protocol, dynamic batching and
    /// Prometheus metrics at /metrics.
    #[command(
        after_help = "Examples:\n  kiln serve runs/demo/model.onnx --port 8000\n  kiln serve bundle/ --max-batch 32 --max-delay-ms 1 --workers 2\n  curl -s localhost:8000/v2/models/model/infer -d '{\"inputs\":[{\"name\":\"features\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[5.1,3.5,1.4,0.2]}]}'\n\nStops on SIGINT/SIGTERM after in-flight requests finish. Load-test it with `kiln bench --server http://127.0.0.1:8000`."
    )]
    Serve(ServeArgs),
    /// Print the kiln man page (roff) on stdout.
    #[command(
        after_help = "Examples:\n  kiln man > kiln.1 && man ./kiln.1\n  kiln man | gzip > /usr/local/share/man/man1/kiln.1.gz"
    )]
    Man,
    /// Show an ONNX model's inputs, outputs, operators and metadata.
    #[command(
        after_help = "Examples:\n  kiln inspect model.onnx\n  kiln inspect model.onnx --json"
    )]
    Inspect(InspectArgs),
}

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

/// `kiln export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Trained model directory (<run>/model).
    #[arg(long, required_unless_present = "spec", conflicts_with = "spec")]
    pub model: Option<PathBuf>,
    /// A model trained elsewhere: its spec (JSON, kiln's ModelSpec) ...
    #[arg(long, requires = "weights")]
    pub spec: Option<PathBuf>,
    /// ... and its weights (SafeTensors, f32), named as the spec's layers say.
    #[arg(long, requires = "spec")]
    pub weights: Option<PathBuf>,
    /// Layout of Linear weights in --weights: burn ([in, out]) or torch ([out, in]).
    #[arg(long, default_value = "burn", requires = "spec")]
    pub weights_layout: String,
    /// Output .onnx file.
    #[arg(long)]
    pub output: PathBuf,
    /// ONNX opset, 13 to 21.
    #[arg(long, default_value_t = 17)]
    pub opset: i64,
    /// Skip verification against burn's outputs.
    #[arg(long)]
    pub no_verify: bool,
    /// Verification tolerance, absolute part: an output passes when |onnx - burn| <= atol + rtol
    /// x the largest magnitude of that output over the reference rows.
    #[arg(long, default_value_t = 1e-5, conflicts_with = "no_verify")]
    pub atol: f32,
    /// Verification tolerance, relative part (see --atol): what lets regression outputs in the
    /// hundreds or millions verify at f32 precision.
    #[arg(long, default_value_t = 1e-5, conflicts_with = "no_verify")]
    pub rtol: f32,
    /// Name of the graph input.
    #[arg(long, default_value = "features")]
    pub input_name: String,
    /// Names of the outputs: scores,label for a classifier, one name for a regressor
    /// [default: probabilities,label / predictions].
    #[arg(long, value_delimiter = ',')]
    pub output_names: Option<Vec<String>>,
    /// Fix the batch dimension to this size instead of the symbolic N.
    #[arg(long)]
    pub static_batch: Option<usize>,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Keep BatchNormalization nodes instead of folding each into the Conv/Linear before it.
    #[arg(long)]
    pub no_fold_batchnorm: bool,
    /// How Linear layers are written: gemm, or matmul-add (MatMul then Add).
    #[arg(long, default_value = "gemm")]
    pub linear_op: String,
    /// Fold the input standardisation into the first Linear layer's weights instead of
    /// Sub/Div nodes (MLPs only).
    #[arg(long)]
    pub bake_standardization: bool,
    /// Expand kiln's local functions (the SiLU and GELU activations, exported in the ai.kiln
    /// domain) into standard ops, for runtimes without ONNX function support.
    #[arg(long)]
    pub inline_functions: bool,
}

/// `kiln optimize`.
#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Input .onnx file (never modified).
    #[arg(long)]
    pub model: PathBuf,
    /// Output .onnx file [default: beside the input, named for what was done: <stem>.int8.onnx
    /// (dynamic), <stem>.int8-static.onnx, <stem>.opt.onnx (graph passes only) or
    /// <stem>.auto.onnx; never over the input, nor over an existing file without --force].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Quantization: none, dynamic (int8 weights) or static (calibrated QDQ).
    #[arg(long, default_value = "none")]
    pub quantization: String,
    /// Calibration method for static quantization: minmax, percentile (99.99 %) or entropy
    /// (the KL-divergence clipping threshold).
    #[arg(long, default_value = "minmax", requires = "calibration_data")]
    pub calibration_method: String,
    /// Refuse an output whose validation accuracy is below this fraction of the input's.
    #[arg(long, default_value_t = 0.99, requires = "validate_data")]
    pub min_accuracy_ratio: f64,
    /// Graph passes: none, basic (identity removal, constant folding, dead code), extended (+ CSE,
    /// MatMul+Add→Gemm, transpose folding, input normalization folded into the first Gemm when
    /// not quantizing) or all (+ batch-norm folding).
    #[arg(long, default_value = "basic")]
    pub graph_level: String,
    /// Run exactly these passes, in order, instead of a level (comma-separated names, e.g.
    /// fold-constants,matmul-add-to-gemm,eliminate-dead).
    #[arg(long, value_delimiter = ',', conflicts_with = "graph_level")]
    pub passes: Option<Vec<String>>,
    /// Calibration data (needed by static quantization).
    #[arg(long)]
    pub calibration_data: Option<PathBuf>,
    /// Static quantization: activations as symmetric int8 (zero point 0) instead of asymmetric
    /// uint8 over the calibrated range.
    #[arg(long)]
    pub symmetric_activations: bool,
    /// Dynamic or static quantization: one scale per weight matrix instead of one per output
    /// column.
    #[arg(long)]
    pub per_tensor_weights: bool,
    /// Labelled data to report accuracy before and after.
    #[arg(long)]
    pub validate_data: Option<PathBuf>,
    /// Target column of the validation data.
    #[arg(long, default_value = "label")]
    pub target: String,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    /// The engine the model is for. tract or ort: choose the default --onnx-form for it.
    /// auto: build every quantized form (float, dynamic in kiln and integer form, static with
    /// --calibration-data), measure each in every engine and provider that loads here, and keep
    /// the fastest that passes the accuracy gate, recording the choice in the model (needs
    /// --validate-data; not combined with --quantization).
    #[arg(long)]
    pub engine: Option<String>,
    /// ONNX form of the quantized model: kiln (kiln's Int8Linear op, fast in kiln's tract
    /// engine; dynamic only), integer (DynamicQuantizeLinear + MatMulInteger, ONNX Runtime's
    /// dynamic form), qdq (Quantize/DequantizeLinear pairs), or auto: kiln for dynamic unless
    /// --engine ort (then integer), qdq for static and weight-only.
    #[arg(long, default_value = "auto")]
    pub onnx_form: String,
    /// ONNX Runtime execution provider the model is for: cpu, cuda[:N] or tensorrt[:N] (ONNX
    /// Runtime's names, e.g. CUDAExecutionProvider, work too). Without --engine it means
    /// --engine ort: the ONNX form suits that provider (QDQ for TensorRT), and the written model
    /// is run in ONNX Runtime on it and compared with tract. One that is not available here is a
    /// loud warning naming what runs instead. With --engine auto: the providers to try, auto
    /// (every one that registers here, the default) or a list such as cpu,cuda:0.
    #[arg(long)]
    pub provider: Option<String>,
    /// An unavailable --provider is an error, not a warning.
    #[arg(long, requires = "provider")]
    pub strict_provider: bool,
    /// With --engine auto: the batch size to measure speed at [default: 64].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// With --engine auto: write the accuracy-vs-speed chart of the candidates (SVG, PNG) here.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Path of libonnxruntime.so [default: $ORT_DYLIB_PATH, then .ort/lib].
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

/// Where ONNX Runtime runs the model (`infer`, `serve`, `bench`).
#[derive(Debug, Args, Clone, Default)]
pub struct ProviderArgs {
    /// ONNX Runtime execution provider: cpu, cuda[:N] or tensorrt[:N] (ONNX Runtime's names,
    /// e.g. CUDAExecutionProvider, work too). Without --engine it selects the ort engine. A
    /// provider that is not available here is a loud warning naming what runs instead, and the
    /// JSON result records requested and actual providers.
    #[arg(long)]
    pub provider: Option<String>,
    /// An unavailable --provider is an error instead of a warning.
    #[arg(long, requires = "provider")]
    pub strict_provider: bool,
}

/// `kiln infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// ONNX model.
    #[arg(long)]
    pub model: PathBuf,
    /// Input rows: CSV or JSONL file, or - for stdin.
    #[arg(long, required_unless_present = "stream")]
    pub data: Option<PathBuf>,
    /// Read rows from stdin one line at a time and write each result as soon as it is computed
    /// (flushed per line); latency percentiles are printed at the end.
    #[arg(long, conflicts_with_all = ["output"])]
    pub stream: bool,
    /// Input format: csv (with a header line), jsonl or npy [default: from the file extension;
    /// csv for stdin and --stream].
    #[arg(long)]
    pub input_format: Option<String>,
    /// Threads running batches in parallel; 0 picks for the engine (tract: one per core, since
    /// a tract call is single-threaded unless --threads; ort: 1, since ONNX Runtime threads
    /// each call itself).
    #[arg(long, default_value_t = 0, conflicts_with = "stream")]
    pub workers: usize,
    /// What to do with NaN/inf feature values: reject (error record) or pass (to the model).
    #[arg(long, default_value = "reject", conflicts_with = "stream")]
    pub non_finite: String,
    /// Warm-up iterations at the batch size in use before the first real row.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Output file (.csv, .jsonl, or .npy for the score matrix); stdout as CSV when absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Rows per engine call (--stream runs each row as it arrives).
    #[arg(long, default_value_t = 64, conflicts_with = "stream")]
    pub batch_size: usize,
    /// Inference engine: tract (pure Rust), ort (ONNX Runtime, loaded at run time), or auto
    /// (the choice `kiln optimize --engine auto` recorded in the model, else the faster of the
    /// two measured here) [default: ort with --provider, else tract].
    #[arg(long)]
    pub engine: Option<String>,
    /// Path of libonnxruntime.so for --engine ort [default: $ORT_DYLIB_PATH, then .ort/lib].
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads per call: ONNX Runtime's (--engine ort or auto) [default: its choice],
    /// or tract's (its matrix products and kiln's int8 op) [default: 1; --workers runs several
    /// calls at once instead].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// Target column; when present, accuracy is reported.
    #[arg(long, default_value = "label")]
    pub target: String,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
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

/// `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// ONNX model.
    pub model: PathBuf,
}

/// `kiln serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// ONNX model, or a bundle directory from `kiln package` (its hashes are verified first).
    pub model: PathBuf,
    /// Address to bind. The default serves this machine only; use 0.0.0.0 to expose it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Model name in URLs [default: the file name without .onnx; for a bundle, its model's].
    #[arg(long)]
    pub name: Option<String>,
    /// Most rows merged into one engine call.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Longest wait, in milliseconds, for a batch to fill.
    #[arg(long, default_value_t = 2.0)]
    pub max_delay_ms: f64,
    /// Engine threads running batches (while one runs, the next batch fills).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most requests waiting; past it requests get 429 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    pub queue_depth: usize,
    /// Largest request body in bytes; past it requests get 413.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Longest time a request may take, in milliseconds; past it requests get 504.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Warm-up calls at batch 1 and --max-batch before the server reports ready.
    #[arg(long, default_value_t = 20)]
    pub warmup_iterations: usize,
    /// Inference engine: tract, ort, or auto (the choice recorded by `kiln optimize --engine
    /// auto`, else measured at --max-batch) [default: the bundle's, else tract].
    #[arg(long)]
    pub engine: Option<String>,
    /// Path of libonnxruntime.so for --engine ort [default: $ORT_DYLIB_PATH, then .ort/lib].
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads per call: ONNX Runtime's, or tract's (matrix products, kiln's int8 op).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub provider: ProviderArgs,
}

/// `kiln bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// ONNX model. With --server it is optional and, when given, measured offline in the same
    /// run as the baseline.
    #[arg(required_unless_present = "server")]
    pub model: Option<PathBuf>,
    /// Load-test a running KServe v2 server (kiln serve, Triton) at this base URL instead.
    #[arg(long)]
    pub server: Option<String>,
    /// With --server: the model name [default: the first in the server's repository index].
    #[arg(long, requires = "server")]
    pub model_name: Option<String>,
    /// With --server: concurrent clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// With --server: total requests (the run stops at this count or at --max-seconds).
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// With --server: longest run, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub max_seconds: f64,
    /// With --server: rows per request.
    #[arg(long, default_value_t = 1)]
    pub rows_per_request: usize,
    /// With --server: send tensors with Triton's binary extension instead of JSON.
    #[arg(long)]
    pub binary: bool,
    /// Engines to compare; `auto` is tract plus ort when its library is found.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub engines: Vec<String>,
    /// Batch sizes to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    pub batch_sizes: Vec<usize>,
    /// Numbers of threads calling the engine at once.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub workers: Vec<usize>,
    /// Minimum measured seconds per configuration.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Unmeasured warm-up calls per configuration.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Intra-op threads per call: ort's, or tract's (matrix products, kiln's int8 op).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Path of libonnxruntime.so.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// Instead of the sweep, run this many predictions (tract, first batch size) and fail when
    /// resident memory grows by more than --max-growth percent after the first tenth.
    #[arg(long, conflicts_with = "server")]
    pub leak_check: Option<usize>,
    /// Allowed RSS growth for --leak-check, percent.
    #[arg(long, default_value_t = 5.0)]
    pub max_growth: f64,
    /// Write latency histograms (SVG and PNG, one per configuration) into this directory.
    #[arg(long, conflicts_with = "leak_check")]
    pub plots: Option<PathBuf>,
    /// Also measure the model quantized to int8 in the same run: kiln's form (its own int8
    /// kernel) in tract and the integer-op form in ONNX Runtime. Every row then shows its
    /// ratio to the best configuration of the model as given.
    #[arg(long, conflicts_with_all = ["leak_check", "server"])]
    pub int8: bool,
}

/// Where a run directory goes when --out is not given.
#[derive(Debug, Args, Clone, Default)]
pub struct RunFlags {
    /// Name of the run, the suffix of its directory [default: the data file's name, or demo].
    #[arg(long)]
    pub name: Option<String>,
    /// Parent of timestamped run directories.
    #[arg(long, env = "KILN_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// `kiln runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: RunsAction,
}

/// `kiln runs` actions.
#[derive(Debug, clap::Subcommand)]
pub enum RunsAction {
    /// One line per run under the runs directory, newest first.
    #[command(
        after_help = "Examples:\n  kiln runs list\n  kiln runs list --runs-dir experiments --format csv > runs.csv"
    )]
    List {
        /// Directory holding run directories.
        #[arg(long, env = "KILN_RUNS_DIR", default_value = "runs")]
        runs_dir: PathBuf,
    },
    /// Configs, metrics and timings of two or more runs side by side.
    #[command(
        after_help = "Examples:\n  kiln runs compare 20261126-101500-iris 20261126-103000-iris\n  kiln runs compare runs/a runs/b runs/c --all --format markdown"
    )]
    Compare {
        /// Run directories, or run names under --runs-dir.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Directory holding run directories.
        #[arg(long, env = "KILN_RUNS_DIR", default_value = "runs")]
        runs_dir: PathBuf,
        /// Show every config key, not only those that differ.
        #[arg(long)]
        all: bool,
    },
}

/// `kiln init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Training data file (CSV or JSONL).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Target column [default: detected: label, target, class, y, or the last column].
    #[arg(long)]
    pub target: Option<String>,
    /// classification or regression [default: detected from the target column].
    #[arg(long)]
    pub task: Option<String>,
    /// Validation data file, if any.
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Config file to write.
    #[arg(long, default_value = "kiln.toml")]
    pub output: PathBuf,
    /// Accept the detected defaults without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Overwrite an existing config file.
    #[arg(long)]
    pub force: bool,
}

/// `kiln compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The first (reference) model.
    pub a: PathBuf,
    /// The second model.
    pub b: PathBuf,
    /// Labelled rows (CSV/JSONL/NPY) to compare on.
    #[arg(long)]
    pub data: PathBuf,
    /// Target column.
    #[arg(long, default_value = "label")]
    pub target: String,
}

/// `kiln package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The model to package, or with --verify the bundle directory to check.
    pub path: PathBuf,
    /// Output bundle: a directory, or one archive when the name ends in .tar.gz or .tgz.
    #[arg(long, required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// Re-check a bundle's hashes and re-run its sample instead of building one.
    #[arg(long, conflicts_with_all = ["out", "validate_data"])]
    pub verify: bool,
    /// Labelled rows whose accuracy is recorded in the manifest.
    #[arg(long)]
    pub validate_data: Option<PathBuf>,
    /// Target column of the validation data.
    #[arg(long, default_value = "label")]
    pub target: String,
    /// Replace an existing bundle directory.
    #[arg(long)]
    pub force: bool,
}

/// `kiln profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// ONNX model.
    pub model: PathBuf,
    /// Rows per run.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Measured runs.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// Nodes to list (slowest first).
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Engine to profile: tract (its plan, node by node) or ort (ONNX Runtime's own profiler).
    #[arg(long, default_value = "tract")]
    pub engine: String,
    /// With --engine ort: keep ONNX Runtime's trace (Chrome trace JSON, for chrome://tracing or
    /// Perfetto) in this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// With --engine ort: intra-op threads [default: ONNX Runtime's choice].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Path of libonnxruntime.so for --engine ort [default: $ORT_DYLIB_PATH, then .ort/lib].
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}
