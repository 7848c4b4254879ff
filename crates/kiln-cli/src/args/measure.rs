//! Arguments of the commands that serve or measure a model: `serve`, `bench`, `profile`.

use super::ProviderArgs;
use clap::Args;
use std::path::PathBuf;

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
