#![no_main]
//! Fuzz target `save_helper_restore`: the body is `xenmig_tests::fuzz::save_helper_restore` (see fuzz/README.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xenmig_tests::fuzz::save_helper_restore(data));
