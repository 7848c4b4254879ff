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
//!
//! See `examples/pipeline.rs` for the whole pipeline in a handful of calls.

pub use kiln_core as core;
pub use kiln_data as data;
pub use kiln_export as export;
pub use kiln_infer as infer;
pub use kiln_onnx as onnx;
pub use kiln_optimize as optimize;
#[cfg(feature = "train")]
pub use kiln_train as train;
