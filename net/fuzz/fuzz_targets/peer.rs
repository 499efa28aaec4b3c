#![no_main]
use libfuzzer_sys::fuzz_target;

// Not written yet.
fuzz_target!(|_data: &[u8]| {});
