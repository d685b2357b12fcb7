//! Helpers shared by the CLI tests.

#![allow(dead_code)]

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Whether an xl save file's optional data lacks the u32 config length xl reads first (the
/// shared vectors in xl framing, and the converter's outputs that copy their xl header, hold
/// their config that way). xl refuses such a file ("Savefile truncated"), and so do
/// `xenmig verify` and restore (rule `config.length` at offset 0x34); the reference
/// verifier never reads the optional data, so its verdicts pass them.
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
