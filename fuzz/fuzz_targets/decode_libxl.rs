#![no_main]
//! Fuzz target `decode_libxl`: the body is `xenmig_tests::fuzz::decode_libxl` (see fuzz/README.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xenmig_tests::fuzz::decode_libxl(data));
