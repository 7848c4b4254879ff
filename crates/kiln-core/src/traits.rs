use crate::{Dataset, EventSink, OnnxModel, TrainedModel};
use std::path::Path;

/// A dense tensor passed to and from inference engines.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// 32-bit floats.
    F32 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<f32>,
    },
    /// 64-bit integers.
    I64 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<i64>,
    },
}

impl Tensor {
    /// The tensor's dimensions.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32 { shape, .. } | Tensor::I64 { shape, .. } => shape,
        }
    }
}

/// The training stage: a data set in, a trained-model directory out.
pub trait Trainer {
    /// The stage's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Trains on `train` (validating on `val` each epoch when given) and writes the trained
    /// model into `out_dir`.
    fn train(
        &self,
        train: &Dataset,
        val: Option<&Dataset>,
        out_dir: &Path,
        events: &mut dyn EventSink,
    ) -> Result<TrainedModel, Self::Error>;
}

/// The export stage: a trained model in, a verified ONNX file out.
pub trait Exporter {
    /// The stage's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes `model` as ONNX to `output`.
    fn export(
        &self,
        model: &TrainedModel,
        output: &Path,
        events: &mut dyn EventSink,
    ) -> Result<OnnxModel, Self::Error>;
}

/// The optimization stage: an ONNX model in, an optimized ONNX model out. Never modifies its input.
pub trait Optimizer {
    /// The stage's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Optimizes `model` and writes the result to `output`.
    fn optimize(
        &self,
        model: &OnnxModel,
        output: &Path,
        events: &mut dyn EventSink,
    ) -> Result<OnnxModel, Self::Error>;
}

/// An inference engine holding one loaded model.
pub trait InferenceEngine: Send + Sync {
    /// The engine's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Short engine name ("tract", "ort").
    fn name(&self) -> &'static str;

    /// Runs the model on its inputs (graph input order) and returns its outputs (graph output
    /// order).
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Self::Error>;

    /// Runs a single-input model on borrowed f32 data. Engines override this to skip the copy
    /// into an owned [`Tensor`]; the default copies and calls [`InferenceEngine::run`].
    fn run_f32(&self, shape: &[usize], data: &[f32]) -> Result<Vec<Tensor>, Self::Error> {
        self.run(vec![Tensor::F32 {
            shape: shape.to_vec(),
            data: data.to_vec(),
        }])
    }
}
