//! The KServe v2 request decoder: the JSON body (and, after the first two bytes give its
//! length, Triton's binary tensor bytes) into rows for a 4-feature model. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_fuzz::kserve_request(data);
});
