//! Malformed specs: each must be refused with exactly one error that points at the offending
//! line and key, in the `file:line:col: error: message` form.
//!
//! Every case is a small complete spec. The offending line carries a `# <-` comment; the test
//! finds it, and the expected column is where `token` (the offending key) starts on that line.

use std::path::Path;
use xenmig_codegen::{load, load_str, SpecError};

/// Marks the line an error must point at.
const MARK: &str = "# <-";

struct Case {
    /// Names the case in failure messages and in the file path given to the loader.
    name: &'static str,
    text: &'static str,
    /// Where on the marked line the error must point (its first occurrence gives the column).
    token: &'static str,
    /// What the Display string must mention (the offending key or name).
    mentions: &'static [&'static str],
}

/// 1-based line of the `MARK` comment, and 1-based column of `token` on it.
fn expected_position(case: &Case) -> (usize, usize) {
    let marked: Vec<(usize, &str)> = case
        .text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(MARK))
        .collect();
    assert_eq!(
        marked.len(),
        1,
        "{}: exactly one line must be marked",
        case.name
    );
    let (i, line) = marked[0];
    let col = line
        .find(case.token)
        .unwrap_or_else(|| panic!("{}: `{}` is not on the marked line", case.name, case.token));
    (i + 1, col + 1)
}

fn check(case: &Case) {
    let path = format!("bad-specs/{}.yaml", case.name);
    let errors = match load_str(case.text, Path::new(&path)) {
        Ok(_) => panic!("{}: the spec was accepted", case.name),
        Err(e) => e.0,
    };
    let shown: Vec<String> = errors.iter().map(SpecError::to_string).collect();
    assert_eq!(
        errors.len(),
        1,
        "{}: expected one error, got:\n{}",
        case.name,
        shown.join("\n")
    );
    let e = &errors[0];
    let (line, col) = expected_position(case);
    assert_eq!(
        (e.line, e.col),
        (line, col),
        "{}: error points at the wrong place: {}",
        case.name,
        shown[0]
    );
    let prefix = format!("{path}:{line}:{col}: error: ");
    assert!(
        shown[0].starts_with(&prefix),
        "{}: `{}` does not start with `{prefix}`",
        case.name,
        shown[0]
    );
    for m in case.mentions {
        assert!(
            shown[0].contains(m),
            "{}: `{}` does not mention `{m}`",
            case.name,
            shown[0]
        );
    }
}

#[test]
fn unknown_key() {
    check(&Case {
        name: "unknown_key",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: END
    type: 0x00
    doc: Last record.
    colour: blue   # <-
"#,
        token: "colour",
        mentions: &["colour"],
    });
}

#[test]
fn unknown_key_in_flow_mapping() {
    check(&Case {
        name: "unknown_key_in_flow_mapping",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
constants:
  - { name: MAGIC, type: u32, value: 7, doc: Magic., hint: none }   # <-
"#,
        token: "hint",
        mentions: &["hint"],
    });
}

#[test]
fn unknown_enum_attribute() {
    check(&Case {
        name: "unknown_enum_attribute",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
enums:
  - name: kind
    type: u8
    doc: Kinds.
    attributes:
      - { name: has_data, doc: Carries data. }
    values:
      - { name: A, value: 1, has_data: true, doc: First. }
      - { name: B, value: 2, has_dta: true, doc: Second. }   # <-
"#,
        token: "has_dta",
        mentions: &["has_dta", "kind"],
    });
}

#[test]
fn missing_doc() {
    // A missing key can only be reported where its mapping starts.
    check(&Case {
        name: "missing_doc",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: END
    type: 0x00
    doc: Last record.
  - name: DATA   # <-
    type: 0x01
    fields:
      - { name: value, type: u32, doc: A value. }
"#,
        token: "name",
        mentions: &["doc"],
    });
}

#[test]
fn missing_field_type() {
    check(&Case {
        name: "missing_field_type",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: first
        type: u32
        doc: A value.
      - name: second   # <-
        doc: Another value.
"#,
        token: "name",
        mentions: &["type"],
    });
}

#[test]
fn empty_doc() {
    check(&Case {
        name: "empty_doc",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: value
        type: u32
        doc: ""   # <-
"#,
        token: "doc",
        mentions: &["doc", "records[0].fields[0]"],
    });
}

#[test]
fn dangling_count() {
    check(&Case {
        name: "dangling_count",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: count
        type: u32
        doc: Number of values.
      - name: values
        type: u64
        count: nr_values   # <-
        doc: The values.
"#,
        token: "count",
        mentions: &["nr_values", "count"],
    });
}

#[test]
fn count_names_a_later_field() {
    check(&Case {
        name: "count_names_a_later_field",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - { name: values, type: u64, count: count, doc: The values. }   # <-
      - { name: count, type: u32, doc: Number of values. }
"#,
        token: "count:",
        mentions: &["count"],
    });
}

#[test]
fn duplicate_record_type() {
    check(&Case {
        name: "duplicate_record_type",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: END
    type: 0x00
    doc: Last record.
  - name: DATA
    type: 0x01
    doc: Data.
  - name: MORE_DATA
    type: 0x01   # <-
    doc: More data.
"#,
        token: "type",
        mentions: &["0x1", "DATA"],
    });
}

#[test]
fn overlapping_bitfield_members() {
    check(&Case {
        name: "overlapping_bitfield_members",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
bitfields:
  - name: entry
    base: u64
    doc: One entry.
    fields:
      - { name: pfn, bits: 0..=51, doc: Frame number. }
      - { name: flags, bits: 48..=55, doc: Flags. }   # <-
      - { name: kind, bits: 60..=63, doc: Kind. }
"#,
        token: "bits",
        mentions: &["bits", "pfn"],
    });
}

#[test]
fn bitfield_member_beyond_base() {
    check(&Case {
        name: "bitfield_member_beyond_base",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
bitfields:
  - name: entry
    base: u32
    doc: One entry.
    fields:
      - { name: low, bits: 0..=15, doc: Low half. }
      - name: high
        bits: 16..=32   # <-
        doc: High half and one bit too many.
"#,
        token: "bits",
        mentions: &["bits", "u32"],
    });
}

#[test]
fn struct_size_mismatch() {
    check(&Case {
        name: "struct_size_mismatch",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
structs:
  - name: header
    doc: The header.
    size: 16   # <-
    fields:
      - { name: magic, type: u64, doc: Magic. }
      - { name: version, type: u32, doc: Version. }
"#,
        token: "size",
        mentions: &["size", "16", "12"],
    });
}

#[test]
fn field_value_does_not_fit() {
    check(&Case {
        name: "field_value_does_not_fit",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: INFO
    type: 0x02
    doc: Info.
    fields:
      - name: width
        type: u8
        value: 0x100   # <-
        doc: Word width.
"#,
        token: "value",
        mentions: &["value", "0x100", "u8"],
    });
}

#[test]
fn constant_does_not_fit() {
    check(&Case {
        name: "constant_does_not_fit",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
constants:
  - name: SMALL
    type: u16
    value: 0x12345   # <-
    doc: Too big for sixteen bits.
"#,
        token: "value",
        mentions: &["value", "u16"],
    });
}

#[test]
fn unknown_type_name() {
    check(&Case {
        name: "unknown_type_name",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: count
        type: u32
        doc: A count.
      - name: entry
        type: page_entry   # <-
        doc: An element of a type nobody defined.
"#,
        token: "type",
        mentions: &["page_entry", "type"],
    });
}

#[test]
fn yaml_syntax_error_unclosed_flow_mapping() {
    // The parser can only notice a missing `}` at the next token, on the following line.
    let text = r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
versions: { accepted: [1, 2], written: 2
records:
  - name: END
    type: 0x00
    doc: Last record.
"#;
    let path = "bad-specs/yaml_syntax_error_unclosed_flow_mapping.yaml";
    let errors = load_str(text, Path::new(path)).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    let shown = e.to_string();
    let broken = text
        .lines()
        .position(|l| l.starts_with("versions:"))
        .unwrap()
        + 1;
    assert!(
        e.line == broken || e.line == broken + 1,
        "syntax error reported at line {}, expected {broken} or the next: {shown}",
        e.line
    );
    assert!(e.col >= 1, "{shown}");
    assert!(
        shown.starts_with(&format!("{path}:{}:{}: error: ", e.line, e.col)),
        "{shown}"
    );
    assert!(shown.contains('}'), "{shown}");
}

#[test]
fn yaml_syntax_error_mapping_in_plain_scalar() {
    // `: ` inside an unquoted value: the error is at the second colon.
    check(&Case {
        name: "yaml_syntax_error_mapping_in_plain_scalar",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: END
    type: 0x00
    doc: Last record: nothing follows.   # <-
"#,
        token: ": nothing",
        mentions: &["mapping values are not allowed"],
    });
}

#[test]
fn yaml_syntax_error_bad_indentation() {
    // A key indented less than its siblings; the syntax error must win over the `doc` that
    // the record then seems to lack.
    check(&Case {
        name: "yaml_syntax_error_bad_indentation",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: END
    type: 0x00
   doc: Last record.   # <-
"#,
        token: "doc",
        mentions: &["did not find expected"],
    });
}

#[test]
fn unknown_enum_in_field() {
    check(&Case {
        name: "unknown_enum_in_field",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
enums:
  - name: kind
    type: u32
    doc: Kinds.
    values:
      - { name: A, value: 1, doc: First. }
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: kind
        type: u32
        enum: knd   # <-
        doc: The kind.
"#,
        token: "enum",
        mentions: &["knd", "enum"],
    });
}

#[test]
fn unknown_enum_in_bitfield_member() {
    check(&Case {
        name: "unknown_enum_in_bitfield_member",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
bitfields:
  - name: entry
    base: u64
    doc: One entry.
    fields:
      - { name: pfn, bits: 0..=51, doc: Frame number. }
      - { name: kind, bits: 60..=63, enum: page_kind, doc: Kind. }   # <-
"#,
        token: "enum",
        mentions: &["page_kind"],
    });
}

#[test]
fn rule_names_unknown_field() {
    check(&Case {
        name: "rule_names_unknown_field",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - { name: start, type: u64, doc: First frame. }
      - { name: end, type: u64, doc: Last frame. }
    rules:
      - name: ordered
        check: "start <= finish"   # <-
        doc: The range is not reversed.
"#,
        token: "check",
        mentions: &["finish", "check"],
    });
}

#[test]
fn rule_does_not_parse() {
    check(&Case {
        name: "rule_does_not_parse",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
structs:
  - name: header
    doc: The header.
    fields:
      - { name: version, type: u32, doc: Version. }
    rules:
      - { name: known_version, check: "version >= ", doc: A version we know. }   # <-
"#,
        token: "check",
        mentions: &["version >="],
    });
}

#[test]
fn layout_names_unknown_record() {
    check(&Case {
        name: "layout_names_unknown_record",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: END
    type: 0x00
    doc: Last record.
  - name: DATA
    type: 0x01
    doc: Data.
layouts:
  - guest: all
    doc: Every stream.
    required:
      - record: END
        doc: Streams are closed.
      - record: DATUM   # <-
        doc: Streams carry data.
"#,
        token: "record",
        mentions: &["DATUM"],
    });
}

#[test]
fn layout_order_names_unknown_record() {
    check(&Case {
        name: "layout_order_names_unknown_record",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: END
    type: 0x00
    doc: Last record.
  - name: DATA
    type: 0x01
    doc: Data.
layouts:
  - guest: all
    doc: Every stream.
    order:
      - record: DATA
        after: [START]   # <-
        level: required
        doc: Data comes after the start.
"#,
        token: "after",
        mentions: &["START", "after"],
    });
}

#[test]
fn layout_unknown_guest() {
    check(&Case {
        name: "layout_unknown_guest",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
enums:
  - name: domain_type
    type: u32
    doc: Guest kinds.
    values:
      - { name: X86_PV, value: 1, doc: PV. }
records:
  - name: END
    type: 0x00
    doc: Last record.
layouts:
  - guest: X86_HVM   # <-
    doc: HVM streams.
    required:
      - { record: END, doc: Streams are closed. }
"#,
        token: "guest",
        mentions: &["X86_HVM"],
    });
}

#[test]
fn flag_bit_beyond_type() {
    check(&Case {
        name: "flag_bit_beyond_type",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
flags:
  - name: options
    type: u8
    doc: Options.
    bits:
      - { name: FIRST, bit: 0, doc: First. }
      - { name: LAST, bit: 8, doc: One past the end. }   # <-
"#,
        token: "bit:",
        mentions: &["bit", "u8"],
    });
}

#[test]
fn count_rest_not_last() {
    check(&Case {
        name: "count_rest_not_last",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: values
        type: u32
        count: rest   # <-
        doc: All the values.
      - name: tail
        type: u32
        doc: A field after the rest of the body.
"#,
        token: "count",
        mentions: &["rest"],
    });
}

#[test]
fn written_version_not_accepted() {
    check(&Case {
        name: "written_version_not_accepted",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
versions:
  accepted: [1, 2]
  written: 3   # <-
"#,
        token: "written",
        mentions: &["written", "3"],
    });
}

/// A spec on disk: the message names the file as given.
#[test]
fn error_from_a_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    let text = "format: demo\ntitle: Demo\ndoc: A demo format.\nrevision: 1\nbyte_order: little\nrecords:\n  - name: A\n    type: 0x01\n    doc: A.\n  - name: B\n    type: 0x01\n    doc: B.\n";
    std::fs::write(&path, text).unwrap();
    let errors = load(&path).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let shown = errors[0].to_string();
    assert!(
        shown.starts_with(&format!("{}:11:5: error: ", path.display())),
        "{shown}"
    );
    assert!(shown.contains("(key `type` of `records[1]`)"), "{shown}");

    let missing = dir.path().join("absent.yaml");
    let errors = load(&missing).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("cannot read"), "{errors:?}");
}

/// The committed specs load without errors (the cases above are small edits of the same
/// language, so this guards against the checker refusing everything).
#[test]
fn committed_specs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("spec");
    for name in [
        "libxc.yaml",
        "libxl.yaml",
        "xl.yaml",
        "x86_state.yaml",
        "legacy.yaml",
    ] {
        if let Err(e) = load(&root.join(name)) {
            panic!("{name}:\n{e}");
        }
    }
}

#[test]
fn max_bound_does_not_fit() {
    // `min` is fine; the error is about `max`, at `max`.
    check(&Case {
        name: "max_bound_does_not_fit",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: INFO
    type: 0x02
    doc: Info.
    fields:
      - name: levels
        type: u8
        min: 2
        max: 0x100   # <-
        doc: Page-table levels.
"#,
        token: "max",
        mentions: &["max", "0x100", "u8"],
    });
}

#[test]
fn pages_without_page_size() {
    // The page size of a `pages` field is the format's own PAGE_SIZE constant, never a
    // figure the generator assumes.
    check(&Case {
        name: "pages_without_page_size",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
enums:
  - name: kind
    type: u8
    doc: Kinds.
    attributes:
      - { name: has_data, doc: Carries data. }
    values:
      - { name: A, value: 1, has_data: true, doc: First. }
bitfields:
  - name: entry
    base: u64
    doc: An entry.
    fields:
      - { name: pfn, bits: 0..=55, doc: Frame. }
      - { name: kind, bits: 56..=63, enum: kind, doc: Kind. }
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - { name: count, type: u32, doc: Entries. }
      - { name: entries, type: entry, count: count, doc: Entries. }
      - name: pages
        type: pages   # <-
        count_where: { field: entries, attr: has_data }
        doc: Pages.
"#,
        token: "type",
        mentions: &["PAGE_SIZE"],
    });
}

#[test]
fn summary_display_on_a_single_value() {
    check(&Case {
        name: "summary_display_on_a_single_value",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: value
        type: u32
        display: summary   # <-
        doc: One value.
"#,
        token: "display",
        mentions: &["display", "summary"],
    });
}

#[test]
fn hex_display_on_a_blob() {
    check(&Case {
        name: "hex_display_on_a_blob",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: payload
        type: blob
        display: hex   # <-
        doc: Opaque octets.
"#,
        token: "display",
        mentions: &["display", "hex"],
    });
}

#[test]
fn fixed_count_in_a_struct() {
    check(&Case {
        name: "fixed_count_in_a_struct",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
constants:
  - { name: N, type: u32, value: 3, doc: Three. }
structs:
  - name: head
    doc: A header.
    fields:
      - { name: values, type: u32, count: N, doc: Three values. }   # <-
"#,
        token: "count",
        mentions: &["count: N", "records only"],
    });
}

#[test]
fn layout_on_a_non_blob() {
    check(&Case {
        name: "layout_on_a_non_blob",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
structs:
  - name: inner
    doc: What the blob holds.
    fields:
      - { name: a, type: u32, doc: A value. }
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - { name: value, type: u32, layout: { structs: [inner] }, doc: One value. }   # <-
"#,
        token: "layout",
        mentions: &["layout", "blob"],
    });
}

#[test]
fn layout_structs_of_one_size() {
    check(&Case {
        name: "layout_structs_of_one_size",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
structs:
  - name: one
    doc: One shape.
    fields:
      - { name: a, type: u32, doc: A value. }
  - name: two
    doc: Another shape of the same size.
    fields:
      - { name: b, type: u32, doc: A value. }
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - { name: payload, type: blob, layout: { structs: [one, two] }, doc: Octets. }   # <-
"#,
        token: "layout",
        mentions: &["`two`", "`one`", "4 octets"],
    });
}

#[test]
fn layout_of_a_missing_format() {
    check(&Case {
        name: "layout_of_a_missing_format",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - { name: payload, type: blob, layout: { records: nowhere }, doc: Octets. }   # <-
"#,
        token: "layout",
        mentions: &["nowhere.yaml"],
    });
}

#[test]
fn framing_type_too_narrow() {
    check(&Case {
        name: "framing_type_too_narrow",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
framing:
  header: head
  type: code
  length: length
  doc: Records one after another.
structs:
  - name: head
    doc: The header.
    fields:
      - { name: code, type: u8, doc: The type. }
      - { name: length, type: u8, doc: The length. }
records:
  - name: END
    type: 0x00
    role: end
    doc: Last record.
  - name: WIDE
    type: 0x100   # <-
    doc: A type that does not fit.
"#,
        token: "type",
        mentions: &["0x100", "code"],
    });
}

#[test]
fn integer_attribute_too_wide() {
    check(&Case {
        name: "integer_attribute_too_wide",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
enums:
  - name: kind
    type: u8
    doc: Kinds.
    attributes:
      - { name: level, type: u8, doc: A small number. }
    values:
      - { name: A, value: 1, level: 1, doc: First. }
      - { name: B, value: 2, level: 300, doc: Second. }   # <-
"#,
        token: "level",
        mentions: &["level", "u8"],
    });
}

/// A duplicate shows the offending line with a caret, and a note at the first definition.
#[test]
fn duplicate_type_number_notes_the_first_definition() {
    let text = r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
records:
  - name: FIRST
    type: 0x07
    doc: The first record.
  - name: SECOND
    type: 0x07
    doc: A second record with the same number.
"#;
    let errors = load_str(text, Path::new("bad-specs/dup.yaml"))
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let shown = errors[0].to_string();
    let expected = "bad-specs/dup.yaml:11:5: error: duplicate type number 0x7: already used by `FIRST` (key `type` of `records[1]`)
   |
11 |     type: 0x07
   |     ^
bad-specs/dup.yaml:8:5: note: `FIRST` has it here
  |
8 |     type: 0x07
  |     ^";
    assert_eq!(shown, expected);
}

#[test]
fn chunk_id_used_twice() {
    check(&Case {
        name: "chunk_id_used_twice",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: FIRST
    id: -1
    doc: One chunk.
  - name: SECOND
    id: -1   # <-
    doc: Another chunk with the same id.
"#,
        token: "id",
        mentions: &["-1", "FIRST"],
    });
}

#[test]
fn chunk_positive_twice() {
    check(&Case {
        name: "chunk_positive_twice",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: BATCH
    id: positive
    doc: Every positive id.
  - name: OTHER
    id: positive   # <-
    doc: Every positive id again.
"#,
        token: "id",
        mentions: &["BATCH"],
    });
}

#[test]
fn chunk_positive_id_taken() {
    check(&Case {
        name: "chunk_positive_id_taken",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: BATCH
    id: positive
    doc: Every positive id.
  - name: SEVEN
    id: 7   # <-
    doc: A positive id of its own.
"#,
        token: "id",
        mentions: &["7", "BATCH"],
    });
}

#[test]
fn chunk_id_not_a_number() {
    check(&Case {
        name: "chunk_id_not_a_number",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: ODD
    id: negative   # <-
    doc: Not an id.
"#,
        token: "id",
        mentions: &["negative", "positive"],
    });
}

#[test]
fn chunk_max_id_on_one_id() {
    check(&Case {
        name: "chunk_max_id_on_one_id",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: ONE
    id: -1
    max_id: 4   # <-
    doc: One id cannot have a maximum.
"#,
        token: "max_id",
        mentions: &["max_id", "positive"],
    });
}

#[test]
fn chunk_blob_field() {
    check(&Case {
        name: "chunk_blob_field",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: DATA
    id: -1
    doc: Data.
    fields:
      - name: rest
        type: blob   # <-
        doc: Everything else.
"#,
        token: "type",
        mentions: &["blob", "length"],
    });
}

#[test]
fn chunk_count_rest() {
    check(&Case {
        name: "chunk_count_rest",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: DATA
    id: -1
    doc: Data.
    fields:
      - name: values
        type: u32
        count: rest   # <-
        doc: Everything else.
"#,
        token: "count",
        mentions: &["rest", "length"],
    });
}

#[test]
fn chunk_count_names_unknown_field() {
    check(&Case {
        name: "chunk_count_names_unknown_field",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: DATA
    id: -1
    doc: Data.
    fields:
      - name: n
        type: u32
        doc: A count.
      - name: values
        type: u32
        count: m / 2 + 1   # <-
        doc: The values.
"#,
        token: "count",
        mentions: &["`m`"],
    });
}

#[test]
fn chunk_count_id_outside_positive() {
    check(&Case {
        name: "chunk_count_id_outside_positive",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: DATA
    id: -3
    doc: Data.
    fields:
      - name: values
        type: u32
        count: id   # <-
        doc: The values.
"#,
        token: "count",
        mentions: &["`id`"],
    });
}

#[test]
fn chunk_body_and_fields() {
    check(&Case {
        name: "chunk_body_and_fields",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
structs:
  - name: param
    doc: A parameter.
    fields:
      - { name: value, type: u64, doc: The value. }
chunks:
  - name: ONE_PARAM
    id: -1
    body: param   # <-
    doc: A parameter.
    fields:
      - name: extra
        type: u32
        doc: Something else.
"#,
        token: "body",
        mentions: &["body", "fields"],
    });
}

#[test]
fn chunk_body_unknown_struct() {
    check(&Case {
        name: "chunk_body_unknown_struct",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: PARAM
    id: -1
    body: missing   # <-
    doc: A parameter.
"#,
        token: "body",
        mentions: &["missing"],
    });
}

#[test]
fn chunk_opaque_with_fields() {
    check(&Case {
        name: "chunk_opaque_with_fields",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: SECRET
    id: -1
    opaque: true   # <-
    doc: Undescribed.
    fields:
      - name: value
        type: u32
        doc: Yet described.
"#,
        token: "opaque",
        mentions: &["opaque"],
    });
}

#[test]
fn chunk_field_unsupported_key() {
    check(&Case {
        name: "chunk_field_unsupported_key",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
enums:
  - name: kind
    type: u32
    doc: Kinds.
    values:
      - { name: A, value: 0, doc: A. }
chunks:
  - name: DATA
    id: -1
    doc: Data.
    fields:
      - name: kind
        type: u32
        enum: kind   # <-
        doc: The kind.
"#,
        token: "enum",
        mentions: &["enum", "chunk"],
    });
}

#[test]
fn word_width_unknown_context() {
    check(&Case {
        name: "word_width_unknown_context",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
words:
  - name: ulong
    width: ctx.version   # <-
    doc: A native word.
"#,
        token: "width",
        mentions: &["ctx.version", "ctx.word_size"],
    });
}

#[test]
fn word_type_in_a_record() {
    check(&Case {
        name: "word_type_in_a_record",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
words:
  - name: ulong
    width: ctx.word_size
    doc: A native word.
records:
  - name: DATA
    type: 0x01
    doc: Data.
    fields:
      - name: value
        type: ulong   # <-
        doc: A word in a framed record.
"#,
        token: "type",
        mentions: &["ulong", "chunk"],
    });
}

#[test]
fn chunk_type_name_collision() {
    check(&Case {
        name: "chunk_type_name_collision",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
structs:
  - name: tsc_info
    doc: A struct whose Rust name is TscInfo.
    fields:
      - { name: value, type: u64, doc: The value. }
chunks:
  - name: TSC_INFO   # <-
    id: -7
    doc: A chunk whose Rust name would be TscInfo too.
    fields:
      - name: mode
        type: u32
        doc: The mode.
"#,
        token: "name",
        mentions: &["TSC_INFO"],
    });
}

#[test]
fn part_type_name_collision() {
    check(&Case {
        name: "part_type_name_collision",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
structs:
  - name: tail
    doc: A struct whose Rust name is Tail.
    fields:
      - { name: value, type: u64, doc: The value. }
parts:
  - name: TAIL   # <-
    doc: A part whose Rust name would be Tail too.
    fields:
      - { name: count, type: u32, doc: The count. }
"#,
        token: "name",
        mentions: &["TAIL", "part"],
    });
}

#[test]
fn part_param_named_like_a_field() {
    check(&Case {
        name: "part_param_named_like_a_field",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
parts:
  - name: TAIL
    doc: A part.
    params:
      - name: count   # <-
        doc: A parameter with a field's name.
    fields:
      - { name: count, type: u32, doc: The count. }
"#,
        token: "name",
        mentions: &["count", "parameter"],
    });
}

#[test]
fn part_count_names_unknown_param() {
    check(&Case {
        name: "part_count_names_unknown_param",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
parts:
  - name: TAIL
    doc: A part.
    params:
      - { name: size, doc: The size. }
    fields:
      - name: data
        type: u8
        count: length   # <-
        doc: The data.
"#,
        token: "count",
        mentions: &["length"],
    });
}

#[test]
fn chunk_display_summary_on_a_single_value() {
    check(&Case {
        name: "chunk_display_summary_on_a_single_value",
        text: r#"format: demo
title: Demo
doc: A demo format.
revision: 1
byte_order: little
chunks:
  - name: DATA
    id: -1
    doc: Data.
    fields:
      - name: value
        type: u32
        display: summary   # <-
        doc: One value.
"#,
        token: "display",
        mentions: &["display", "summary"],
    });
}
