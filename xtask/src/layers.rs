//! `cargo xtask check`, part three: the stream layer stays a stream layer.
//!
//! `xenmig-stream` (runtime/stream: read, write, verify) is what a tool that only looks at
//! images links. It must not pull in, even through another crate, the drivers, the
//! simulator, the save helper or the Xen backend, nor the simulator's `sha2` or the
//! migration's `zstd`. This asks cargo for the crate's normal dependency tree and fails on
//! any of those.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The stream-layer package.
pub const STREAM: &str = "xenmig-stream";

/// Packages the stream layer must not depend on, and what each is.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("xenmig-drivers", "the save/restore drivers"),
    ("xenmig-sim", "the simulator"),
    ("xenmig-savehelper", "the save helper"),
    ("xenmig-xen", "the Xen backend"),
    ("sha2", "the simulator's digests"),
    ("zstd", "the migration's compression"),
];

/// The package names in `cargo tree -p STREAM -e normal --prefix none` output, one a line
/// (`name vX.Y.Z (path)` or with a trailing `(*)`).
pub fn packages(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// The forbidden packages in `tree`, with what each is.
pub fn forbidden_in(tree: &str) -> Vec<(&'static str, &'static str)> {
    let found = packages(tree);
    FORBIDDEN
        .iter()
        .filter(|(name, _)| found.contains(name))
        .copied()
        .collect()
}

/// Runs `cargo tree` for the stream crate and fails if a forbidden package is in it.
pub fn check_stream_deps(root: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["tree", "-p", STREAM, "-e", "normal", "--prefix", "none"])
        .output()
        .context("cannot run `cargo tree`")?;
    if !out.status.success() {
        bail!(
            "`cargo tree -p {STREAM}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let bad = forbidden_in(&tree);
    if bad.is_empty() {
        println!(
            "ok {STREAM} depends on none of {}",
            FORBIDDEN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    for (name, what) in &bad {
        eprintln!(
            "{STREAM} depends on {name} ({what}); see `cargo tree -p {STREAM} -e normal -i {name}`"
        );
    }
    bail!(
        "the stream layer ({STREAM}) depends on {}: it must not pull in drivers, simulator, save helper, Xen backend, sha2 or zstd",
        bad.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_forbidden_packages_by_name() {
        let tree = "xenmig-stream v0.1.0 (/w/runtime/stream)\n\
                    xenmig-core v0.1.0 (/w/runtime/core)\n\
                    zstd v0.13.3\n\
                    zstd-sys v2.0.0 (*)\n";
        assert_eq!(
            forbidden_in(tree),
            vec![("zstd", "the migration's compression")]
        );
        let clean = "xenmig-stream v0.1.0 (/w/runtime/stream)\nserde v1.0.0\n";
        assert!(forbidden_in(clean).is_empty());
    }
}
