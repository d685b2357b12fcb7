//! Helpers shared by xenmig's cross-crate tests: where the conformance vectors are and how to
//! read their manifests.

pub mod fuzz;
pub mod scratch;

use std::path::{Path, PathBuf};
use xenmig::wire::{DecodeCtx, Endian};
use xenmig::xl;

/// The repository's test vectors (`tests/vectors`, see its README).
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
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

/// The xl header and optional data at the start of `bytes`, when it is an xl save file.
fn xl_parts(bytes: &[u8]) -> Option<(xl::XlHeader, &[u8])> {
    let header = xl::XlHeader::decode(bytes.get(..xl::XlHeader::SIZE)?, &DecodeCtx::new(0)).ok()?;
    let end = xl::XlHeader::SIZE.checked_add(header.optional_data_len as usize)?;
    Some((header, bytes.get(xl::XlHeader::SIZE..end)?))
}

/// Whether an xl save file's optional data lacks the u32 config length xl reads first (the
/// shared vectors in xl framing hold their config that way). xl refuses such a file
/// ("Savefile truncated"), and so do xenmig's restore and verify (rule `config.length`); the
/// reference verifier never reads the optional data, so its verdicts pass them.
pub fn xl_config_length_missing(bytes: &[u8]) -> bool {
    match xl_parts(bytes) {
        Some((header, optional)) if header.optional_data_len > 0 => {
            matches!(
                xl::XlOptionalData::decode(optional, &DecodeCtx::new(0)),
                Err(e) if e.rule == "config.length"
            )
        }
        _ => false,
    }
}

/// The same xl file with the config length in front of its optional data, as xl writes it.
pub fn with_xl_config_length(bytes: &[u8]) -> Vec<u8> {
    let (header, config) = xl_parts(bytes).expect("an xl header");
    let optional = xl::XlOptionalData { config }
        .encode(Endian::HOST)
        .expect("the config encodes");
    let header = xl::XlHeader {
        optional_data_len: optional.len() as u32,
        ..header
    };
    let mut out = header.encode(Endian::HOST).expect("the header encodes");
    out.extend_from_slice(&optional);
    out.extend_from_slice(&bytes[xl::XlHeader::SIZE + config.len()..]);
    out
}
