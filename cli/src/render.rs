//! Decoded items as named fields, rendered as `name=value` text or as JSON.
//!
//! Headers and record bodies are rendered from their generated walk
//! ([`xenmig::render::fields_of`]): nothing here lists the fields of a record, so a field or
//! record added to a spec shows up in `dump` as soon as the tool is rebuilt. What is left here
//! is not a field listing: the xl header's optional data (decoded leniently, since `dump` shows
//! a header the reader accepted) and the page contents of `dump --pages`.

use std::fmt::Write as _;
pub use xenmig::render::{fields_json, fields_of, hex_string, write_fields, Fields, Val};
use xenmig::xl;

/// The xl header's fields, then those of its optional data when they decode.
pub fn xl_header(h: &xl::XlHeader, optional_data: &[u8]) -> Fields {
    let mut f = fields_of(h);
    if !optional_data.is_empty() {
        let ctx =
            xenmig::wire::DecodeCtx::new(0).with_strictness(xenmig::wire::Strictness::Lenient);
        if let Ok(d) = xl::XlOptionalData::decode(optional_data, &ctx) {
            f.extend(fields_of(&d));
        }
    }
    f
}

/// Octets as hexdump lines (offset, 16 octets in hex, their ASCII), a run of identical lines
/// collapsed to `*` as hexdump does. Each line starts with `indent`.
pub fn hexdump(bytes: &[u8], indent: &str, out: &mut String) {
    let mut previous: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in bytes.chunks(16).enumerate() {
        if previous == Some(line) && line.len() == 16 {
            if !starred {
                out.push_str(indent);
                out.push_str("*\n");
                starred = true;
            }
            continue;
        }
        previous = Some(line);
        starred = false;
        let _ = write!(out, "{indent}{:08x} ", i * 16);
        for j in 0..16 {
            if j == 8 {
                out.push(' ');
            }
            match line.get(j) {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        for b in line {
            out.push(if b.is_ascii_graphic() || *b == b' ' {
                *b as char
            } else {
                '.'
            });
        }
        out.push_str("|\n");
    }
    if starred {
        let _ = writeln!(out, "{indent}{:08x}", bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_collapses_repeated_lines() {
        let mut out = String::new();
        hexdump(&[0u8; 64], "", &mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[1], "*");
        assert_eq!(lines[2], "00000040");
    }
}
