//! The Markdown documentation of each spec: snapshots (review them like the spec change
//! they come from) and checks of the document's shape.

use std::path::{Path, PathBuf};
use xenmig_codegen::{load, load_str, markdown, Spec};

/// The committed specs and their snapshot names.
const SPECS: &[(&str, &str)] = &[
    ("libxc", "libxc.yaml"),
    ("libxl", "libxl.yaml"),
    ("xl", "xl.yaml"),
    ("legacy", "legacy.yaml"),
    ("core_dump", "core_dump.yaml"),
];

fn spec_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec")
        .join(file)
}

fn spec(file: &str) -> Spec {
    load(&spec_path(file)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn libxc() {
    insta::assert_snapshot!("libxc", markdown::emit(&spec("libxc.yaml")));
}

#[test]
fn libxl() {
    insta::assert_snapshot!("libxl", markdown::emit(&spec("libxl.yaml")));
}

#[test]
fn xl() {
    insta::assert_snapshot!("xl", markdown::emit(&spec("xl.yaml")));
}

#[test]
fn x86_state() {
    insta::assert_snapshot!("x86_state", markdown::emit(&spec("x86_state.yaml")));
}

#[test]
fn legacy() {
    insta::assert_snapshot!("legacy", markdown::emit(&spec("legacy.yaml")));
}

#[test]
fn core_dump() {
    insta::assert_snapshot!("core_dump", markdown::emit(&spec("core_dump.yaml")));
}

/// Layouts the committed specs do not (yet) use: unaligned and row-spanning fields, labels
/// too long for their box, fields after a variable part, bitfields with gaps.
const EDGE: &str = r#"
format: edge
title: Edge cases
doc: A synthetic spec exercising the diagram layout.
revision: 1
byte_order: little
versions: { accepted: [1], written: 1 }
constants:
  - { name: TAG, type: bytes, text: "ab`c|d\x01", doc: Octets needing escapes. }
  - { name: SMALL, type: u8, value: 7, doc: A small value. }
enums:
  - name: domain_type
    type: u8
    doc: Guests.
    values:
      - { name: A, value: 1, doc: Guest A. }
      - { name: B, value: 2, doc: Guest B. }
flags:
  - name: all_bits
    type: u8
    doc: Every bit defined.
    bits:
      - { name: B0, bit: 0, doc: Bit 0. }
      - { name: B1, bit: 1, doc: Bit 1. }
      - { name: B2, bit: 2, doc: Bit 2. }
      - { name: B3, bit: 3, doc: Bit 3. }
      - { name: B4, bit: 4, doc: Bit 4. }
      - { name: B5, bit: 5, doc: Bit 5. }
      - { name: B6, bit: 6, doc: Bit 6. }
      - { name: B7, bit: 7, doc: Bit 7. }
bitfields:
  - name: gappy
    base: u16
    doc: Members with unassigned bits between them.
    fields:
      - { name: low, bits: 0..=2, doc: Low bits. }
      - { name: mid, bits: 5..8, doc: Middle bits., enum: domain_type, known: false }
      - { name: top, bits: 15..=15, doc: Top bit., reserved: true, level: required }
structs:
  - name: odd
    doc: Fields that straddle rows.
    fields:
      - { name: a, type: u8, doc: One octet. }
      - { name: wide, type: u64, doc: An unaligned u64. }
      - { name: s, type: bytes, size: 13, doc: Thirteen octets. }
      - { name: g, type: gappy, doc: A bitfield. }
      - { name: f, type: u8, flags: all_bits, doc: Flags without reserved bits. }
      - { name: b, type: u16, min: 1, max: 9, doc: Bounded. }
  - name: elem
    doc: Twelve octets.
    fields:
      - { name: x, type: u32, doc: X. }
      - { name: y, type: u64, doc: Y. }
records:
  - name: MIXED
    type: 0x80000001
    status: deprecated
    guests: [A]
    trailing: allow
    doc: Fixed fields after arrays that break the alignment.
    fields:
      - { name: n, type: u16, doc: Count. }
      - { name: items, type: elem, count: n, doc: Items. }
      - { name: after, type: u32, value: 5, doc: After the array. }
      - { name: tail, type: u8, count: n, doc: Tail. }
  - name: KEEP
    type: 2
    doc: An array that keeps the alignment.
    fields:
      - { name: n, type: u64, doc: Count. }
      - { name: items, type: u64, count: n, doc: Items. }
      - { name: after, type: u16, doc: After. }
      - { name: more, type: bytes, size: 20, doc: Spans three rows. }
      - { name: strs, type: cstrings, doc: Strings. }
layouts:
  - guest: A
    doc: Layout of A.
    required:
      - { record: KEEP, where: "n == 0 || n > 2", doc: Needed. }
    order:
      - { record: KEEP, after: [MIXED, KEEP], doc: After both. }
      - { record: MIXED, before: [MIXED, KEEP], level: warn, doc: Before either. }
"#;

#[test]
fn edge_cases() {
    let spec = load_str(EDGE, Path::new("edge.yaml")).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!("edge", markdown::emit(&spec));
}

const OCTET_HEADER: &str = "     0     1     2     3     4     5     6     7 octet";

/// Every line of every octet diagram keeps its borders on the octet grid, and every box
/// is closed.
fn check_diagrams(name: &str, doc: &str) {
    let lines: Vec<&str> = doc.lines().collect();
    let mut i = 0;
    let mut diagrams = 0;
    while i < lines.len() {
        if lines[i] != OCTET_HEADER {
            i += 1;
            continue;
        }
        diagrams += 1;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && (lines[i].starts_with("    +") || lines[i].starts_with("    |")) {
            body.push(lines[i]);
            i += 1;
        }
        assert!(body.len() >= 3, "{name}: empty diagram at line {i}");
        assert!(body[0].starts_with("    +"), "{name}: open top at line {i}");
        assert!(
            body.last().is_some_and(|l| l.starts_with("    +")),
            "{name}: open bottom before line {i}"
        );
        for l in &body {
            assert!(l.len() <= 4 + 49, "{name}: line too long: {l:?}");
            let is_border = l.contains('+');
            for (x, c) in l.char_indices() {
                let on_grid = x >= 4 && (x - 4) % 6 == 0;
                if c == '+' || c == '|' {
                    assert!(on_grid, "{name}: `{c}` off the grid: {l:?}");
                }
            }
            if !is_border {
                // Content lines: the first character after each `|` is a space.
                for (x, c) in l.char_indices() {
                    if c == '|' && x + 1 < l.len() {
                        assert_eq!(&l[x + 1..x + 2], " ", "{name}: label touches `|`: {l:?}");
                    }
                }
            }
        }
    }
    assert!(diagrams > 0, "{name}: no octet diagram");
}

#[test]
fn documents_are_well_formed() {
    let mut docs: Vec<(String, String)> = SPECS
        .iter()
        .map(|(name, file)| (name.to_string(), markdown::emit(&spec(file))))
        .collect();
    let edge = load_str(EDGE, Path::new("edge.yaml")).unwrap_or_else(|e| panic!("{e}"));
    docs.push(("edge".to_string(), markdown::emit(&edge)));
    for (name, doc) in &docs {
        assert!(
            doc.ends_with('\n') && !doc.ends_with("\n\n"),
            "{name}: ends with one newline"
        );
        for (n, line) in doc.lines().enumerate() {
            assert_eq!(
                line,
                line.trim_end(),
                "{name}:{}: trailing whitespace",
                n + 1
            );
        }
        assert_eq!(
            doc.matches("```").count() % 2,
            0,
            "{name}: unbalanced code fences"
        );
        check_diagrams(name, doc);
    }
}

#[test]
fn output_is_deterministic() {
    for (_, file) in SPECS {
        let s = spec(file);
        assert_eq!(markdown::emit(&s), markdown::emit(&s.clone()));
    }
}

/// The headers' diagrams put every field at the offset the field table gives.
#[test]
fn header_offsets() {
    let libxc = markdown::emit(&spec("libxc.yaml"));
    let expect_image = "\
     0     1     2     3     4     5     6     7 octet
    +-----------------------------------------------+
    | marker                                        |
    +-----------------------+-----------------------+
    | id                    | version               |
    +-----------+-----------+-----------------------+
    | options   | (reserved)| (reserved)            |
    +-----------+-----------+-----------------------+
";
    assert!(libxc.contains(expect_image), "image header diagram changed");
    let expect_domain = "\
     0     1     2     3     4     5     6     7 octet
    +-----------------------+-----------+-----------+
    | type                  | page_shift| (reserved)|
    +-----------------------+-----------+-----------+
    | xen_major             | xen_minor             |
    +-----------------------+-----------------------+
";
    assert!(
        libxc.contains(expect_domain),
        "domain header diagram changed"
    );
    let xl = markdown::emit(&spec("xl.yaml"));
    let expect_xl = "\
     0     1     2     3     4     5     6     7 octet
    +-----------------------------------------------+
    | magic                                         |
    |                                               |
    |                                               |
    |                                               |
    +-----------------------+-----------------------+
    | byteorder             | mandatory_flags       |
    +-----------------------+-----------------------+
    | optional_flags        | optional_data_len     |
    +-----------------------+-----------------------+
";
    assert!(xl.contains(expect_xl), "xl header diagram changed");
}
