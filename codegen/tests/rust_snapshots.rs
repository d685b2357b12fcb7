//! Snapshots of the Rust generated for each committed spec, so that a change to the spec or
//! to the emitter shows up as a reviewable diff of the generated code.
//!
//! Update with `INSTA_UPDATE=always cargo test -p xenmig-codegen --test rust_snapshots` (or
//! `cargo insta review`). No path is passed to the emitter, so the snapshots hold no absolute
//! paths and do not depend on where the repository is checked out.

use std::path::Path;

fn generated(spec: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("spec")
        .join(spec);
    let spec = xenmig_codegen::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let src = xenmig_codegen::rust_source(&spec, None).expect("generated Rust parses");
    assert!(
        !src.contains(env!("CARGO_MANIFEST_DIR")),
        "generated Rust names the checkout"
    );
    src
}

#[test]
fn libxc_rust() {
    insta::assert_snapshot!("libxc_rust", generated("libxc.yaml"));
}

#[test]
fn libxl_rust() {
    insta::assert_snapshot!("libxl_rust", generated("libxl.yaml"));
}

#[test]
fn xl_rust() {
    insta::assert_snapshot!("xl_rust", generated("xl.yaml"));
}

#[test]
fn x86_state_rust() {
    insta::assert_snapshot!("x86_state_rust", generated("x86_state.yaml"));
}

#[test]
fn legacy_rust() {
    insta::assert_snapshot!("legacy_rust", generated("legacy.yaml"));
}

#[test]
fn core_dump_rust() {
    insta::assert_snapshot!("core_dump_rust", generated("core_dump.yaml"));
}
