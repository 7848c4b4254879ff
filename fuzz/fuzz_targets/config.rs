//! The `kiln.toml` loader: TOML, keys, and the training settings' validation. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_fuzz::config(data);
});
