#![no_main]
//! Fuzz target `verify`: the body is `xenmig_tests::fuzz::verify` (see fuzz/README.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xenmig_tests::fuzz::verify(data));
