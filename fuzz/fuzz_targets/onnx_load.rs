//! The ONNX loader and what `kiln inspect` and `kiln optimize` do with a model: arbitrary bytes
//! (and, through the seed corpus, mutated valid models) are decoded, inspected, their
//! initializers decoded, and every graph pass of the `all` level run on them. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_fuzz::onnx_model(data);
});
