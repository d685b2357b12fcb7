#![no_main]
//! Fuzz target `decode_libxc`: the body is `xenmig_tests::fuzz::decode_libxc` (see fuzz/README.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xenmig_tests::fuzz::decode_libxc(data));
