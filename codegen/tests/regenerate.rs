//! Adding to a spec is an edit of its YAML and nothing else: a copy of `spec/libxc.yaml` with
//! one more optional record type and one more field must yield Rust and Markdown that carry
//! them, while the committed spec's outputs do not; and a broken edit must be reported at its
//! line in the copy.

use std::path::{Path, PathBuf};
use xenmig_codegen::{load, markdown, rust_source, Spec};

/// The new optional record, inserted before `layouts:`.
const NEW_RECORD: &str = r#"  - name: X86_EXAMPLE_STATE
    type: 0x80000013
    doc: >-
      Example optional record added by the regeneration test: per-vCPU state a future Xen
      might send.
    fields:
      - name: vcpu_id
        type: u32
        doc: >-
          vCPU the state belongs to.
      - name: example_reserved
        type: u32
        reserved: true
        doc: >-
          Unused; zero for the verifier.
      - name: example_payload
        type: blob
        doc: >-
          Opaque example state.
    rules:
      - name: example_payload_whole_words
        check: "body_length % 8 == 0"
        level: strict
        doc: >-
          The payload is a whole number of 8-octet words.

"#;

/// The new field, appended to X86_TSC_INFO.
const NEW_TSC_FIELD: &str = r#"      - name: tsc_extra
        type: u64
        doc: >-
          An extra value appended by the regeneration test.
"#;

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("spec")
}

fn original_text() -> String {
    std::fs::read_to_string(spec_dir().join("libxc.yaml")).expect("read spec/libxc.yaml")
}

/// Inserts `what` just before the first occurrence of `anchor` (which must be unique).
fn insert_before(text: &str, anchor: &str, what: &str) -> String {
    assert_eq!(
        text.matches(anchor).count(),
        1,
        "anchor {anchor:?} must occur once in the spec"
    );
    let at = text.find(anchor).unwrap();
    format!("{}{}{}", &text[..at], what, &text[at..])
}

/// The spec text with the new record and the new X86_TSC_INFO field.
fn edited_text(record: &str) -> String {
    let text = original_text();
    // X86_TSC_INFO's last field ends just before the next record, HVM_CONTEXT.
    let tsc = text.find("  - name: X86_TSC_INFO\n").expect("X86_TSC_INFO");
    let hvm = text.find("  - name: HVM_CONTEXT\n").expect("HVM_CONTEXT");
    assert!(tsc < hvm, "X86_TSC_INFO must precede HVM_CONTEXT");
    let tsc_block = &text[tsc..hvm];
    assert!(
        tsc_block.trim_end().ends_with("zero for the verifier."),
        "X86_TSC_INFO no longer ends with its reserved field:\n{tsc_block}"
    );
    let text = insert_before(&text, "\n  - name: HVM_CONTEXT\n", NEW_TSC_FIELD);
    insert_before(
        &text,
        "\nlayouts:\n",
        &format!("\n{}", record.trim_end_matches('\n')),
    )
}

/// Writes the copy, with the spec its blob layouts name beside it.
fn write_copy(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("libxc.yaml");
    std::fs::write(&path, text).expect("write the copy");
    std::fs::copy(
        spec_dir().join("x86_state.yaml"),
        dir.join("x86_state.yaml"),
    )
    .expect("copy spec/x86_state.yaml");
    path
}

fn load_ok(path: &Path) -> Spec {
    load(path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()))
}

/// The generated Rust between `pub struct NAME` and the next item's doc comment.
fn struct_body<'a>(src: &'a str, decl: &str) -> &'a str {
    let at = src
        .find(decl)
        .unwrap_or_else(|| panic!("`{decl}` is not generated"));
    let end = src[at..].find("\n    }").map_or(src.len(), |e| at + e);
    &src[at..end]
}

#[test]
fn new_record_and_field_reach_rust_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let copy = write_copy(dir.path(), &edited_text(NEW_RECORD));
    let edited = load_ok(&copy);
    let original = load_ok(&spec_dir().join("libxc.yaml"));

    let rust_new = rust_source(&edited, None).expect("generated Rust parses");
    let rust_old = rust_source(&original, None).expect("generated Rust parses");

    // The new record: its type, its place in the record enums and tables, its fields, its rule.
    let expected_rust = [
        "pub struct X86ExampleState<'a>",
        "RecordType::X86ExampleState",
        "Record::X86ExampleState(",
        "name: \"X86_EXAMPLE_STATE\"",
        "0x80000013",
        // The decode dispatch and the TYPE constant write the number in decimal.
        "2147483667u32",
        "pub vcpu_id: u32",
        "pub example_reserved: u32",
        "pub example_payload: &'a [u8]",
        "\"example_payload_whole_words\"",
        "pub tsc_extra: u64",
    ];
    for s in expected_rust {
        assert!(rust_new.contains(s), "edited spec: Rust lacks `{s}`");
    }
    for s in [
        "X86ExampleState",
        "X86_EXAMPLE_STATE",
        "0x80000013",
        "2147483667",
        "example_payload",
        "example_reserved",
        "example_payload_whole_words",
        "tsc_extra",
    ] {
        assert!(!rust_old.contains(s), "committed spec: Rust has `{s}`");
    }

    // The new field belongs to X86TscInfo, after its old last field, and its size grew by 8.
    let tsc = struct_body(&rust_new, "pub struct X86TscInfo {");
    let reserved = tsc.find("pub reserved: u32").expect("X86TscInfo.reserved");
    let extra = tsc
        .find("pub tsc_extra: u64")
        .expect("X86TscInfo.tsc_extra");
    assert!(reserved < extra, "tsc_extra must follow reserved:\n{tsc}");
    let size_of = |src: &str| {
        let body = &src[src.find("impl X86TscInfo {").expect("impl X86TscInfo")..];
        let line = body
            .lines()
            .find(|l| l.contains("pub const SIZE: usize"))
            .expect("X86TscInfo::SIZE")
            .to_string();
        line
    };
    assert_eq!(
        size_of(&rust_old).trim(),
        "pub const SIZE: usize = 24usize;"
    );
    assert_eq!(
        size_of(&rust_new).trim(),
        "pub const SIZE: usize = 32usize;"
    );

    // The new record is optional: bit 31 of its type is set, so a reader may skip it.
    let info = &rust_new[rust_new
        .find("name: \"X86_EXAMPLE_STATE\"")
        .expect("RecordInfo of X86_EXAMPLE_STATE")..];
    let info = &info[..info.find("},").unwrap_or(info.len())];
    assert!(info.contains("record_type: 2147483667u32"), "{info}");

    // The Markdown names the record, its fields, its rule and the new TSC field.
    let md_new = markdown::emit(&edited);
    let md_old = markdown::emit(&original);
    for s in [
        "X86_EXAMPLE_STATE",
        "example_reserved",
        "example_payload",
        "example_payload_whole_words",
        "tsc_extra",
    ] {
        assert!(md_new.contains(s), "edited spec: Markdown lacks `{s}`");
        assert!(!md_old.contains(s), "committed spec: Markdown has `{s}`");
    }
    assert!(
        md_new.contains("vcpu_id"),
        "edited spec: Markdown lacks `vcpu_id`"
    );
    // The record's section lists its vcpu_id field: the name appears after the record's first
    // mention more often than before.
    assert!(md_new.matches("vcpu_id").count() > md_old.matches("vcpu_id").count());
    assert!(md_new.len() > md_old.len());

    // Nothing else changed: the edited outputs contain the original records too.
    for s in ["pub struct X86MsrPolicy<'a>", "RecordType::StaticDataEnd"] {
        assert!(rust_new.contains(s), "edited spec: Rust lost `{s}`");
    }
}

#[test]
fn broken_edit_is_reported_at_its_line_in_the_copy() {
    // The new record reuses X86_TSC_INFO's type number.
    let broken_record = NEW_RECORD.replace("type: 0x80000013", "type: 0x08");
    let text = edited_text(&broken_record);
    let dir = tempfile::tempdir().unwrap();
    let copy = write_copy(dir.path(), &text);

    let errors = load(&copy)
        .expect_err("a duplicate type number is refused")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];

    // The `type:` line of the inserted record, counted in the copy.
    let record_line = text
        .lines()
        .position(|l| l == "  - name: X86_EXAMPLE_STATE")
        .expect("inserted record")
        + 1;
    let type_line = record_line + 1;
    assert_eq!(
        text.lines().nth(type_line - 1),
        Some("    type: 0x08"),
        "the inserted record's type is on the line after its name"
    );
    assert_eq!((e.line, e.col), (type_line, 5), "{e}");
    assert_eq!(e.file, copy);
    assert_eq!(e.key.as_deref(), Some("type"));
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:{type_line}:5: error: ", copy.display())),
        "{shown}"
    );
    assert!(shown.contains("X86_TSC_INFO"), "{shown}");
    assert!(shown.contains("0x8"), "{shown}");

    // The committed spec, unchanged, still loads.
    load_ok(&spec_dir().join("libxc.yaml"));
}

#[test]
fn broken_field_edit_is_reported_at_its_line() {
    // The new TSC field names a type that does not exist.
    let text = edited_text(NEW_RECORD).replacen(
        "      - name: tsc_extra\n        type: u64\n",
        "      - name: tsc_extra\n        type: u128\n",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = write_copy(dir.path(), &text);
    let errors = load(&copy).expect_err("an unknown type is refused").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let line = text
        .lines()
        .position(|l| l == "        type: u128")
        .expect("edited line")
        + 1;
    assert_eq!((errors[0].line, errors[0].col), (line, 9), "{}", errors[0]);
    assert!(errors[0].to_string().contains("u128"), "{}", errors[0]);
}
