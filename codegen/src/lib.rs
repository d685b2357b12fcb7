//! The xenmig spec engine.
//!
//! A spec (`spec/*.yaml`, language described in `spec/README.md`) is loaded into a typed
//! model ([`model`]), checked ([`load`], errors at file:line:col), and emitted as Rust
//! ([`rust::emit`], used by the `include_spec!` macro) and as Markdown ([`markdown::emit`],
//! used by `cargo xtask docs`). Both emitters read the same model, so a fact written once in
//! YAML reaches the types, the codecs, the verifier tables and the documentation.

pub mod expr;
mod locate;
pub mod markdown;
pub mod model;
pub mod rust;
mod validate;

pub use validate::{
    load, load_str, parse_bits, Count, Elem, FieldKind, Scalar, Spec, SpecError, SpecErrors,
    PAGE_SIZE_CONSTANT,
};
pub use validate::{ChunkCount, ChunkElem, ChunkField, CHUNK_ID_NAME, WORD_WIDTHS};

/// Renders generated Rust as formatted source text (for snapshots and review).
pub fn rust_source(
    spec: &Spec,
    spec_abs_path: Option<&std::path::Path>,
) -> Result<String, syn::Error> {
    let tokens = rust::emit(spec, spec_abs_path);
    let file: syn::File = syn::parse2(tokens)?;
    Ok(prettyplease::unparse(&file))
}
