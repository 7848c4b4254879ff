//! End-to-end tests: they drive the real `kiln` binary on real files in temporary directories.
//! Cross-checks against tools kiln did not write (the Python `onnx` checker and ONNX Runtime)
//! live in `crosscheck.rs`.

// Test fixtures have UTF-8 paths; a panic is the right failure for a broken fixture.
#![allow(clippy::unwrap_used)]

mod catalogue;
mod cli;
mod cnn;
mod conformance;
mod crash;
mod crosscheck;
mod diskfull;
mod errors;
#[cfg(feature = "wgpu")]
mod gpu;
mod help;
mod int8;
mod pipeline;
mod resume;
mod serve;
mod streaming;
mod testplan;
mod util;
#[cfg(feature = "distributed")]
mod worker;
