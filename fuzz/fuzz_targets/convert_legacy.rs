#![no_main]
//! Fuzz target `convert_legacy`: the body is `xenmig_tests::fuzz::convert_legacy` (see fuzz/README.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xenmig_tests::fuzz::convert_legacy(data));
