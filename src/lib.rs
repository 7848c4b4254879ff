//! kiln: train → export → optimize → infer, one Rust-native pipeline.
//!
//! This facade re-exports the stage crates so that a program can depend on `kiln` alone:
//!
//! | module            | crate           | what it does                                   |
//! |-------------------|-----------------|------------------------------------------------|
//! | [`core`]          | `kiln-core`     | artifacts, stage traits, events, atomic writes |
//! | [`data`]          | `kiln-data`     | CSV/JSONL, synthetic data, splits              |
//! | [`onnx`]          | `kiln-onnx`     | complete ONNX messages, builder, graph utils   |
//! | [`train`]         | `kiln-train`    | burn training (feature `train`)                |
//! | [`export`]        | `kiln-export`   | verified ONNX export                           |
//! | [`optimize`]      | `kiln-optimize` | graph passes, int8 quantization                |
//! | [`infer`]         | `kiln-infer`    | tract engine, batch inference                  |
//! | [`serve`]         | `kiln-serve`    | KServe v2 server (feature `serve`)             |
//! | [`report`]        | `kiln-report`   | plots, HTML report, run records (feature `report`) |
//!
//! Features: `default = ["train", "cli", "ort"]` builds the `kiln` binary too (about 400
//! crates). A program that only runs models depends on `kiln` with `default-features = false`
//! (the inference stack: tract, no burn, no CLI) and adds `ort`, `train`, `serve` or `report`
//! as it needs them.
//!
//! ```no_run
//! let model = kiln::infer::Model::load("model.onnx", kiln::infer::EngineKind::Tract)?;
//! let data = kiln::data::load_dataset("test.csv".as_ref(), "label", None)?;
//! let eval = model.evaluate(&data)?;
//! println!("accuracy {:?}", eval.classification.map(|c| c.accuracy));
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! `examples/iris.rs` trains, exports and scores a real CSV file; `examples/pipeline.rs` runs
//! the whole pipeline in a handful of calls.

pub use kiln_core as core;
pub use kiln_data as data;
pub use kiln_export as export;
pub use kiln_infer as infer;
pub use kiln_onnx as onnx;
pub use kiln_optimize as optimize;
#[cfg(feature = "report")]
pub use kiln_report as report;
#[cfg(feature = "serve")]
pub use kiln_serve as serve;
#[cfg(feature = "train")]
pub use kiln_train as train;

/// Any stage's error, for programs that call several stages through the facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Artifacts, files.
    #[error(transparent)]
    Core(#[from] kiln_core::CoreError),
    /// Reading data.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// ONNX files.
    #[error(transparent)]
    Onnx(#[from] kiln_onnx::OnnxError),
    /// Training.
    #[cfg(feature = "train")]
    #[error(transparent)]
    Train(#[from] kiln_train::TrainError),
    /// Export.
    #[error(transparent)]
    Export(#[from] kiln_export::ExportError),
    /// Optimization.
    #[error(transparent)]
    Optimize(#[from] kiln_optimize::OptimizeError),
    /// Inference.
    #[error(transparent)]
    Infer(#[from] kiln_infer::InferError),
    /// Serving.
    #[cfg(feature = "serve")]
    #[error(transparent)]
    Serve(#[from] kiln_serve::ServeError),
}
