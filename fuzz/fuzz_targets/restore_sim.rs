#![no_main]
//! Fuzz target `restore_sim`: the body is `xenmig_tests::fuzz::restore_sim` (see fuzz/README.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xenmig_tests::fuzz::restore_sim(data));
