//! clap definitions of the `kiln` command line: the top-level `Cli`, the command list and the
//! small argument sets; the larger ones live in `args/` by what the commands do.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod measure;
mod models;
mod train;

pub use measure::{BenchArgs, ProfileArgs, ServeArgs};
pub use models::{CompareArgs, ExportArgs, InferArgs, OptimizeArgs, PackageArgs, ProviderArgs};
pub use train::{PipelineArgs, TrainArgs, TrainFlags};

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

/// `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// ONNX model.
    pub model: PathBuf,
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
