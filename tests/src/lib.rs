//! Helpers shared by xenmig's cross-crate tests: where the shared conformance vectors are and
//! how to read their manifests.

use std::path::{Path, PathBuf};

/// The `vectors` folder of the shared conformance data (`../shared/vectors` from the repo).
pub fn vectors_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("..").join("shared").join("vectors")
}

/// Rows of a tab-separated manifest, without blank lines or a header starting with `name`.
pub fn manifest(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read manifest {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("name\t"))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Reads a vector file, decompressing `.zst` files.
pub fn read_vector(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "zst") {
        zstd_decode(&raw)
    } else {
        raw
    }
}

fn zstd_decode(raw: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(raw).unwrap_or_else(|e| panic!("cannot decompress: {e}"))
}
