#![no_main]
//! Fuzz target `reader`: the body is `xenmig_tests::fuzz::reader` (see fuzz/README.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xenmig_tests::fuzz::reader(data));
