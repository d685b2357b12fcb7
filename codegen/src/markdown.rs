//! Markdown documentation of a spec.

use crate::Spec;

/// The whole document for one spec.
pub fn emit(spec: &Spec) -> String {
    format!("# {}\n", spec.file.title)
}
