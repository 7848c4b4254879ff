//! Arguments of the commands that turn one model file into another or into predictions:
//! `export`, `optimize`, `infer`, `compare`, `package`, and the shared `ProviderArgs`.

use clap::Args;
use std::path::PathBuf;

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
