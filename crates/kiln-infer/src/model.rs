use crate::{InferError, TractEngine};
use kiln_core::{InferenceEngine, Task, Tensor};
use kiln_onnx::proto::{
    ModelProto, ValueInfoProto, data_type, tensor_shape_proto::dimension::Value as DimValue,
    type_proto,
};
use std::path::Path;

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// tract: pure Rust, the default.
    #[default]
    Tract,
    /// ONNX Runtime (feature `ort`), loaded at run time.
    Ort,
}

impl EngineKind {
    /// Parses an engine name. `auto` parses as tract, the engine that is always there; callers
    /// that want a measured choice use [`crate::choose_engine`] (as `kiln infer --engine auto`).
    pub fn parse(name: &str) -> Result<Self, InferError> {
        match name {
            "tract" | "auto" => Ok(Self::Tract),
            "ort" | "onnxruntime" => {
                if cfg!(feature = "ort") {
                    Ok(Self::Ort)
                } else {
                    Err(InferError::EngineUnavailable {
                        engine: "ort",
                        reason: "this kiln was built without the `ort` feature; rebuild with --features ort or use --engine tract".into(),
                    })
                }
            }
            other => Err(InferError::Input(format!(
                "unknown engine {other:?}; use tract or ort"
            ))),
        }
    }

    /// The engine's short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::Ort => "ort",
        }
    }
}

/// Where ONNX Runtime runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// The CPU execution provider.
    #[default]
    Cpu,
    /// NVIDIA CUDA on the given device (feature `cuda`).
    Cuda {
        /// Device index.
        device: u32,
    },
    /// NVIDIA TensorRT on the given device (feature `tensorrt`).
    TensorRt {
        /// Device index.
        device: u32,
    },
}

impl Provider {
    /// Parses `cpu`, `cuda`, `cuda:1`, `tensorrt`, `tensorrt:0`, and ONNX Runtime's own names
    /// (`CPUExecutionProvider`, `CUDAExecutionProvider`, `TensorrtExecutionProvider`, any case,
    /// with an optional `:N`).
    pub fn parse(s: &str) -> Result<Self, InferError> {
        let normal = s
            .trim()
            .to_ascii_lowercase()
            .replace("executionprovider", "");
        let s = normal.as_str();
        let (name, device) = match s.split_once(':') {
            Some((n, d)) => (
                n,
                d.parse::<u32>().map_err(|_| {
                    InferError::Input(format!("bad device index in provider {s:?}"))
                })?,
            ),
            None => (s, 0),
        };
        match name {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { device }),
            "tensorrt" | "trt" => Ok(Self::TensorRt { device }),
            other => Err(InferError::Input(format!(
                "unknown provider {other:?}; use cpu, cuda[:N] or tensorrt[:N]"
            ))),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda { device } => write!(f, "cuda:{device}"),
            Self::TensorRt { device } => write!(f, "tensorrt:{device}"),
        }
    }
}

/// How to build an engine for a model.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Which engine.
    pub kind: EngineKind,
    /// Path of `libonnxruntime.so` for the ort engine.
    pub ort_lib: Option<std::path::PathBuf>,
    /// Intra-op threads per call: ONNX Runtime's, or tract's (its matrix products and kiln's
    /// int8 op). `None`: ONNX Runtime's default, one thread in tract.
    pub threads: Option<usize>,
    /// ONNX Runtime execution provider (tract runs on the CPU only).
    pub provider: Provider,
    /// Threads that will call the engine at once: ort keeps that many sessions (tract's one
    /// plan is already shared safely). 0 means 1.
    pub concurrency: usize,
}

impl From<EngineKind> for EngineConfig {
    fn from(kind: EngineKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }
}

/// What a model file says about itself.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Name of the (single) data input.
    pub input_name: String,
    /// Number of features per row, when the input's second dimension is fixed.
    pub input_width: Option<usize>,
    /// Feature names from kiln metadata.
    pub feature_names: Option<Vec<String>>,
    /// Class names from kiln metadata.
    pub class_names: Option<Vec<String>>,
    /// The model's task, from metadata (classification when absent).
    pub task: Task,
    /// Output names, graph order.
    pub output_names: Vec<String>,
    /// Output element types (ONNX `TensorProto.DataType`; 0 when not declared), graph order.
    pub output_types: Vec<i32>,
    /// Output shapes, graph order: `None` for a symbolic dimension; empty when not declared.
    pub output_dims: Vec<Vec<Option<i64>>>,
    /// Index of the float output holding scores/probabilities (or regression values).
    pub scores_output: usize,
    /// Index of an int64 label output, when the model has one.
    pub label_output: Option<usize>,
    /// All `metadata_props`.
    pub metadata: Vec<(String, String)>,
}

fn elem_type(v: &ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

fn dims(v: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(
            t.shape
                .as_ref()?
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(DimValue::DimValue(n)) => Some(n),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

impl ModelInfo {
    /// Reads the signature and kiln metadata of a model.
    pub fn from_proto(model: &ModelProto) -> Result<Self, InferError> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| InferError::Signature("the model has no graph".into()))?;
        let inits: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name()).collect();
        let inputs: Vec<&ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !inits.contains(i.name()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(InferError::Signature(format!(
                "kiln runs tabular models with exactly one input, this one has {} ({})",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if elem_type(input) != Some(data_type::FLOAT) {
            return Err(InferError::Signature(format!(
                "input {:?} is {}, kiln feeds float32 features",
                input.name(),
                data_type::name(elem_type(input).unwrap_or(0))
            )));
        }
        let input_dims = dims(input).unwrap_or_default();
        if input_dims.len() != 2 {
            return Err(InferError::Signature(format!(
                "input {:?} has rank {}, kiln feeds [batch, features] rows",
                input.name(),
                input_dims.len()
            )));
        }
        let input_width = input_dims[1].map(|w| w as usize);
        let output_names: Vec<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
        let scores_output = graph
            .output
            .iter()
            .position(|o| o.name() == "probabilities")
            .or_else(|| {
                graph
                    .output
                    .iter()
                    .position(|o| elem_type(o) == Some(data_type::FLOAT))
            })
            .ok_or_else(|| {
                InferError::Signature("the model has no float32 output to read scores from".into())
            })?;
        let label_output = graph
            .output
            .iter()
            .position(|o| o.name() == "label")
            .or_else(|| {
                graph
                    .output
                    .iter()
                    .position(|o| elem_type(o) == Some(data_type::INT64))
            });
        let metadata = kiln_onnx::metadata(model);
        let json_list = |key: &str| -> Option<Vec<String>> {
            kiln_onnx::metadata_value(model, key).and_then(|v| serde_json::from_str(v).ok())
        };
        let task = match kiln_onnx::metadata_value(model, "kiln.task") {
            Some("regression") => Task::Regression,
            _ => Task::Classification,
        };
        Ok(Self {
            input_name: input.name().to_string(),
            input_width,
            output_types: graph
                .output
                .iter()
                .map(|o| elem_type(o).unwrap_or(0))
                .collect(),
            output_dims: graph
                .output
                .iter()
                .map(|o| dims(o).unwrap_or_default())
                .collect(),
            feature_names: json_list("kiln.feature_names"),
            class_names: json_list("kiln.class_names"),
            task,
            output_names,
            scores_output,
            label_output,
            metadata,
        })
    }
}

/// One row's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The predicted class name (or index, when the model names no classes); for regression,
    /// the first predicted value. Shared: rows of the same class point to one string.
    pub label: std::sync::Arc<str>,
    /// The predicted class index (classification).
    pub class_index: Option<usize>,
    /// Class probabilities (or raw scores), or regression values.
    pub scores: Vec<f32>,
}

/// A loaded model: an engine plus what the file says about itself.
pub struct Model {
    engine: Box<dyn InferenceEngine<Error = InferError>>,
    info: ModelInfo,
    ready: std::sync::atomic::AtomicBool,
    /// Label strings per class index, built once so that predictions share them.
    labels: Vec<std::sync::Arc<str>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("engine", &self.engine.name())
            .field("info", &self.info)
            .finish()
    }
}

impl Model {
    /// Loads an ONNX file with the chosen engine (an [`EngineKind`] or a full [`EngineConfig`]).
    pub fn load(
        path: impl AsRef<Path>,
        engine: impl Into<EngineConfig>,
    ) -> Result<Self, InferError> {
        let path = path.as_ref();
        // kiln_onnx::load gives the clear errors (directory, truncated file, size limit).
        kiln_onnx::load(path)?;
        let bytes = std::fs::read(path).map_err(|e| InferError::Load {
            path: path.to_path_buf(),
            engine: "tract",
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, path, engine)
    }

    /// Loads a serialized model; `origin` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        origin: &Path,
        engine: impl Into<EngineConfig>,
    ) -> Result<Self, InferError> {
        let config = engine.into();
        let proto = kiln_onnx::decode(bytes)?;
        let info = ModelInfo::from_proto(&proto)?;
        if config.kind == EngineKind::Tract && config.provider != Provider::Cpu {
            return Err(InferError::EngineUnavailable {
                engine: "tract",
                reason: format!(
                    "tract runs on the CPU only; use --engine ort for the {} provider",
                    config.provider
                ),
            });
        }
        let engine: Box<dyn InferenceEngine<Error = InferError>> = match config.kind {
            EngineKind::Tract => Box::new(TractEngine::from_bytes_with_threads(
                bytes,
                origin,
                config.threads.unwrap_or(1),
            )?),
            #[cfg(feature = "ort")]
            EngineKind::Ort => {
                let opts = crate::ort_engine::OrtOptions {
                    lib: config.ort_lib.clone(),
                    threads: config.threads,
                    provider: config.provider,
                    sessions: config.concurrency.max(1),
                    profiling: None,
                };
                Box::new(crate::ort_engine::OrtEngine::from_bytes(
                    bytes, origin, &opts,
                )?)
            }
            #[cfg(not(feature = "ort"))]
            EngineKind::Ort => {
                return Err(InferError::EngineUnavailable {
                    engine: "ort",
                    reason: "this kiln was built without the `ort` feature".into(),
                });
            }
        };
        let labels = match &info.class_names {
            Some(names) => names
                .iter()
                .map(|n| std::sync::Arc::from(n.as_str()))
                .collect(),
            None => (0..256)
                .map(|i| std::sync::Arc::from(i.to_string()))
                .collect(),
        };
        Ok(Self {
            engine,
            info,
            ready: std::sync::atomic::AtomicBool::new(false),
            labels,
        })
    }

    /// Runs `iterations` synthetic batches (rows of zeros) at each batch size, so that the
    /// engine's lazy allocations and caches are in place before real traffic, then marks the
    /// model ready. Returns the seconds it took.
    pub fn warmup(&self, batch_sizes: &[usize], iterations: usize) -> Result<f64, InferError> {
        let start = std::time::Instant::now();
        let width = self.info.input_width.ok_or_else(|| {
            InferError::Input("cannot warm up: the model's input width is not fixed".into())
        })?;
        for &b in batch_sizes.iter().filter(|&&b| b > 0) {
            let x = vec![0f32; b * width];
            for _ in 0..iterations {
                self.predict(&x, b)?;
            }
        }
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(start.elapsed().as_secs_f64())
    }

    /// Whether [`Model::warmup`] has completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Number of score values per row (classes, or regression outputs), found by running one
    /// row when the signature does not say.
    pub fn output_width(&self) -> Result<usize, InferError> {
        if let Some(n) = self
            .info
            .class_names
            .as_ref()
            .map(Vec::len)
            .filter(|&n| n > 0)
        {
            return Ok(n);
        }
        let width = self
            .info
            .input_width
            .ok_or_else(|| InferError::Input("the model's input width is not fixed".into()))?;
        Ok(self
            .predict(&vec![0f32; width], 1)?
            .first()
            .map_or(0, |p| p.scores.len()))
    }

    /// The model's signature and metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Runs `rows` rows of row-major features and returns one prediction per row.
    pub fn predict(&self, features: &[f32], rows: usize) -> Result<Vec<Prediction>, InferError> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        if !features.len().is_multiple_of(rows) {
            return Err(InferError::Input(format!(
                "{} values do not split into {rows} rows",
                features.len()
            )));
        }
        let width = features.len() / rows;
        if let Some(w) = self.info.input_width.filter(|&w| w != width) {
            return Err(InferError::Input(format!(
                "the model expects {w} features per row, got {width}"
            )));
        }
        let outputs = self.engine.run_f32(&[rows, width], features)?;
        let scores = match outputs.get(self.info.scores_output) {
            Some(Tensor::F32 { shape, data }) => {
                if shape.first() != Some(&rows) {
                    return Err(InferError::Signature(format!(
                        "score output has shape {shape:?}, expected {rows} rows first"
                    )));
                }
                data
            }
            _ => {
                return Err(InferError::Signature(
                    "the score output is not float32".into(),
                ));
            }
        };
        let per_row = scores.len() / rows;
        let labels: Option<&Vec<i64>> = match self.info.label_output.and_then(|i| outputs.get(i)) {
            Some(Tensor::I64 { data, .. }) if data.len() == rows => Some(data),
            _ => None,
        };
        Ok((0..rows)
            .map(|r| {
                let s = scores[r * per_row..(r + 1) * per_row].to_vec();
                if self.info.task == Task::Regression {
                    return Prediction {
                        label: s.first().map(|v| v.to_string()).unwrap_or_default().into(),
                        class_index: None,
                        scores: s,
                    };
                }
                let idx = match labels {
                    Some(l) => l[r].max(0) as usize,
                    None => argmax(&s),
                };
                let label = self
                    .labels
                    .get(idx)
                    .cloned()
                    .unwrap_or_else(|| idx.to_string().into());
                Prediction {
                    label,
                    class_index: Some(idx),
                    scores: s,
                }
            })
            .collect())
    }
}

/// Index of the largest value (the first on ties).
pub(crate) fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// How a model does on a labelled data set ([`Model::evaluate`]).
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// One prediction per row, in order.
    pub predictions: Vec<Prediction>,
    /// For class targets: accuracy, per-class metrics and the confusion matrix, matched by
    /// class name (so a data set whose class list differs from the model's is still scored
    /// correctly).
    pub classification: Option<kiln_core::metrics::ClassificationReport>,
    /// For numeric targets: RMSE, MAE and R².
    pub regression: Option<crate::RegressionMetrics>,
}

impl Model {
    /// Predicts every row of `data` and scores the predictions against its targets, when it
    /// has them; the feature count must match the model's input.
    pub fn evaluate(&self, data: &kiln_core::Dataset) -> Result<Evaluation, InferError> {
        if let Some(w) = self.info.input_width
            && w != data.n_features()
        {
            return Err(InferError::Input(format!(
                "the model expects {w} features per row, the data set has {}",
                data.n_features()
            )));
        }
        let predictions = self.predict(&data.features, data.rows())?;
        let (mut classification, mut regression) = (None, None);
        match &data.targets {
            Some(kiln_core::Targets::Classes { indices, names }) => {
                let truth = indices
                    .iter()
                    .map(|&i| names.get(i as usize).map_or("?", String::as_str));
                let pairs = predictions.iter().map(|p| &*p.label).zip(truth);
                let known = self.info.class_names.clone().unwrap_or_default();
                classification = Some(kiln_core::metrics::ClassificationReport::from_pairs(
                    pairs, &known,
                ));
            }
            Some(kiln_core::Targets::Values(values)) => {
                let pairs: Vec<(f64, f64)> = predictions
                    .iter()
                    .zip(values)
                    .filter_map(|(p, &y)| p.scores.first().map(|&s| (f64::from(s), f64::from(y))))
                    .collect();
                regression = crate::regression_metrics(&pairs);
            }
            None => {}
        }
        Ok(Evaluation {
            predictions,
            classification,
            regression,
        })
    }
}
