//! Helpers shared by the CLI tests.

#![allow(dead_code)]

// xl files whose optional data lacks xl's config length (the vectors in xl framing and the
// converter's outputs that copy their xl header): see `xenmig_tests`.
#[allow(unused_imports)]
pub use xenmig_tests::{with_xl_config_length, xl_config_length_missing};

/// The copies of a migrated guest that exist and that run, from the last state each side's
/// toolstack printed (`guest: STATE`; none printed: no copy): a destroyed one is gone, a
/// running or resumed one runs.
pub fn copies(states: &[Option<String>]) -> (usize, usize) {
    let alive = states
        .iter()
        .flatten()
        .filter(|g| g.as_str() != "destroyed")
        .count();
    let running = states
        .iter()
        .flatten()
        .filter(|g| matches!(g.as_str(), "running" | "resumed"))
        .count();
    (alive, running)
}
