//! End-to-end tests: they drive the real `kiln` binary on real files in temporary directories.
//! Cross-checks against tools kiln did not write (the Python `onnx` checker and ONNX Runtime)
//! live in `crosscheck.rs`.

mod crosscheck;
mod errors;
mod pipeline;
mod util;
