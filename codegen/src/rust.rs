//! Rust code for a spec.

use crate::Spec;
use proc_macro2::TokenStream;

pub fn emit(_spec: &Spec, _path: Option<&std::path::Path>) -> TokenStream {
    TokenStream::new()
}
