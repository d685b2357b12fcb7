//! Helpers shared by xenmig's cross-crate tests: where the conformance vectors are and how to
//! read their manifests.

use std::path::{Path, PathBuf};

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

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Whether an xl save file's optional data lacks the u32 config length xl reads first (the
/// shared vectors in xl framing hold their config that way). xl refuses such a file
/// ("Savefile truncated"), and so do xenmig's restore and verify (rule `config.length`); the
/// reference verifier never reads the optional data, so its verdicts pass them.
pub fn xl_config_length_missing(bytes: &[u8]) -> bool {
    let magic = b"Xen saved domain, xl format\n \0 \r";
    match (
        bytes.starts_with(magic),
        u32_at(bytes, 44),
        u32_at(bytes, 48),
    ) {
        (true, Some(len), Some(config_len)) if len > 0 => {
            u64::from(config_len) + 4 > u64::from(len)
        }
        _ => false,
    }
}

/// The same xl file with the config length in front of its optional data, as xl writes it.
pub fn with_xl_config_length(bytes: &[u8]) -> Vec<u8> {
    let len = u32_at(bytes, 44).expect("an xl header");
    let mut out = bytes[..44].to_vec();
    out.extend_from_slice(&(len + 4).to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[48..]);
    out
}
