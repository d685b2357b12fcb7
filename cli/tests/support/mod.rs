//! Helpers shared by the CLI tests.

#![allow(dead_code)]

// xl files whose optional data lacks xl's config length (the vectors in xl framing and the
// converter's outputs that copy their xl header): see `xenmig_tests`.
pub use xenmig_tests::{with_xl_config_length, xl_config_length_missing};
