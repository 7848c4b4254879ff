//! Shared vocabulary of kiln: the artifacts that pass between stages, the stage traits, progress
//! events, and the file-writing discipline every stage follows.
//!
//! A kiln pipeline is a chain of typed transformations:
//!
//! | stage    | trait                | input artifact           | output artifact   |
//! |----------|----------------------|--------------------------|-------------------|
//! | train    | [`Trainer`]          | [`Dataset`]              | [`TrainedModel`]  |
//! | export   | [`Exporter`]         | [`TrainedModel`]         | [`OnnxModel`]     |
//! | optimize | [`Optimizer`]        | [`OnnxModel`]            | [`OnnxModel`]     |
//! | infer    | [`InferenceEngine`]  | [`OnnxModel`] + features | [`Tensor`] outputs|
//!
//! The artifacts are plain data that can be saved and loaded, so each stage can run on its own.
//! This crate has no heavy dependencies: it names things, it does not compute them.
//!
//! The one design decision a newcomer must know: a trained model is a *directory*
//! ([`TrainedModel`]) holding a declarative [`ModelSpec`], SafeTensors weights and metadata, not
//! a burn type. That is what lets the export, optimize and infer stages build without burn.
//!
//! ```
//! use kiln_core::{ModelSpec, LayerSpec, Task};
//!
//! let spec = ModelSpec::mlp(4, &[16, 8], 3, 0.0);
//! assert_eq!(spec.task, Task::Classification);
//! assert_eq!(spec.outputs, 3);
//! assert!(matches!(spec.layers[0], LayerSpec::Linear { in_features: 4, out_features: 16, .. }));
//! ```

#![warn(missing_docs)]

mod artifact;
mod error;
mod event;
pub mod fsutil;
pub mod metrics;
pub mod resources;
mod spec;
mod traits;

pub use artifact::{
    ARTIFACT_FORMAT_VERSION, Dataset, ModelMetadata, Normalization, OnnxModel, Reference, Targets,
    TrainedModel,
};
pub use error::CoreError;
pub use event::{Event, EventSink, Level, NullSink};
pub use spec::{Activation, LayerSpec, ModelSpec, Task};
pub use traits::{Exporter, InferenceEngine, Optimizer, Tensor, Trainer};

/// The version of kiln that produced an artifact, recorded in metadata.
pub const KILN_VERSION: &str = env!("CARGO_PKG_VERSION");
