//! Scratch crates for the regeneration tests: a crate outside the workspace that depends on
//! xenmig and generates its code from a copy of a spec with `include_spec!`, built and run by
//! cargo, so that an edit of the YAML is seen the way a user's build sees it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes a scratch crate `name` into `dir`: its manifest (xenmig and its macros from this
/// checkout, the workspace's lock file), each `(file, text)` of `files` beside the manifest
/// (the spec copies `include_spec!` reads), and `main` as `src/main.rs`.
pub fn write_crate(dir: &Path, name: &str, files: &[(&str, &str)], main: &str) {
    let root = root().canonicalize().unwrap();
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
xenmig = {{ path = "{}" }}
xenmig-macros = {{ path = "{}" }}

[workspace]
"#,
        root.join("runtime").display(),
        root.join("codegen/macros").display()
    );
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    std::fs::write(dir.join("src/main.rs"), main).unwrap();
}

/// Builds and runs the scratch crate in `dir` (in a target directory shared by all scratch
/// crates); its standard output. Panics with cargo's output if it fails.
pub fn run(dir: &Path) -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("regenerate-walk");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--offline", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the scratch crate failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The rest of the line of `out` that starts with `prefix`.
pub fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
}
