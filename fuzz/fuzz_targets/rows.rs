//! The CSV and JSONL row readers, strict (training) and lenient (inference), on arbitrary file
//! contents. Nothing may panic; every row gets a value or an error record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_fuzz::rows(data);
});
