//! Inference stage of kiln: load an ONNX model (kiln's or anyone's), run rows through it, and
//! write one output per input row.
//!
//! - [`TractEngine`] implements [`kiln_core::InferenceEngine`] with tract, a pure-Rust engine
//!   that needs nothing installed. It is the default.
//! - `ort_engine::OrtEngine` (feature `ort`) runs ONNX Runtime, loaded at run time from
//!   `libonnxruntime.so`; without the library it is an error that says how to get it.
//! - [`Model`] wraps an engine with what the file says about itself (class names, feature
//!   names, input width), turning rows into [`Prediction`]s.
//! - [`infer_file`] runs a CSV/JSONL file in batches. Every input row gets exactly one
//!   [`RowOutcome`]: a prediction, or an error record with the row number and the reason.
//!
//! Design decision: this crate never links burn. It only sees ONNX files, so it can be embedded
//! in a service without the training stack.
//!
//! ```no_run
//! use kiln_infer::{Model, EngineKind};
//!
//! let model = Model::load("model.onnx", EngineKind::Tract)?;
//! let preds = model.predict(&[5.1, 3.5, 1.4, 0.2], 1)?;
//! println!("{} {:?}", preds[0].label, preds[0].scores);
//! # Ok::<(), kiln_infer::InferError>(())
//! ```

#![warn(missing_docs)]

mod batch;
pub mod batcher;
mod bench;
pub mod compat;
mod error;
pub mod int8_op;
mod latency;
mod model;
#[cfg(feature = "ort")]
pub mod ort_engine;
pub mod profile;
mod provider;
mod row_ops;
mod stream;
mod tract_engine;

pub use batch::{
    BatchOptions, BatchReport, OutputFormat, RegressionMetrics, RowOutcome, infer_file,
    regression_metrics, write_predictions,
};
pub use bench::{
    AUTO_BATCH_KEY, AUTO_ENGINE_KEY, AUTO_PROVIDER_KEY, AUTO_THREADS_KEY, AutoChoice, BenchOptions,
    BenchReport, BenchResult, LeakCheck, bench, choose_engine, leak_check, recorded_engine,
    synthetic_rows,
};
pub use error::InferError;
pub use latency::{LatencyBucket, LatencyRecorder, LatencySummary};
pub use model::{EngineConfig, EngineKind, Evaluation, Model, ModelInfo, Prediction, Provider};
pub use provider::{
    EngineChoice, Opened, ProviderChoice, load_bytes_on_provider, load_on_provider, open_model,
};
pub use stream::{StreamOptions, StreamReport, infer_stream};
pub use tract_engine::TractEngine;
