//! Adding a chunk to `spec/legacy.yaml` is an edit of the YAML and nothing else: a copy of the
//! spec gains a chunk with id -21 and two fields (a u32 and a toolstack-width `ulong`); a
//! scratch crate generates the legacy module from the copy with `include_spec!` and is built
//! by cargo. Run, it looks the new id up by number and by name and decodes a body of the new
//! chunk from octets, field by field as a streaming reader would, for both toolstack widths.
//! The test checks what it printed, that the committed spec does not know the id, and that
//! the Markdown regenerated from the copy documents the new chunk.
//!
//! The scratch crate builds in `target/regenerate-walk` (shared with `regenerate_walk.rs`,
//! so the runtime's dependencies are compiled once), offline, with the workspace's lockfile.

use std::path::Path;
use xenmig_tests::scratch;

/// The new chunk, appended to `chunks:` (the last list of the spec).
const NEW_CHUNK: &str = r#"
  - name: HVM_EXAMPLE_PARAMS
    id: -21
    doc: >-
      Chunk added by the legacy regeneration test: a vCPU and an address.
    fields:
      - name: example_vcpu
        type: u32
        max: 4095
        doc: >-
          vCPU the example belongs to.
      - name: example_addr
        type: ulong
        doc: >-
          An address as wide as the saving toolstack's word.
"#;

/// The scratch crate's program: looks the new chunk up and decodes its body.
const MAIN: &str = r#"
xenmig_macros::include_spec!("legacy.yaml");

use legacy::{ChunkBody, ChunkId, ChunkRead};
use xenmig::wire::DecodeCtx;

fn main() {
    let ctx = DecodeCtx::new(0);
    let id = ChunkId::from_i32(-21).expect("the copy knows id -21");
    println!("NAME {}", id.name());
    println!("ID {:?}", id.id());
    println!("FIXED64 {:?}", id.fixed_size());
    assert_eq!(id, ChunkId::HvmExampleParams);
    assert_eq!(legacy::HvmExampleParams::ID, -21);
    println!(
        "COMMITTED {:?}",
        xenmig::convert::legacy::ChunkId::from_i32(-21)
    );

    for word_size in [8usize, 4] {
        let mut body = 7u32.to_le_bytes().to_vec();
        body.extend_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes()[..word_size]);
        // From no octets at all, the decoder asks for one field at a time.
        let mut have = 0;
        loop {
            match ChunkBody::decode(-21, &body[..have], word_size, &ctx).expect("decode") {
                ChunkRead::Need { len, field, .. } => {
                    println!("NEED{word_size} {len} {field}");
                    assert!(len > have && len <= body.len());
                    have = len;
                }
                ChunkRead::Done { value, len } => {
                    println!("DONE{word_size} {len} {value:?}");
                    assert_eq!(value.id(), ChunkId::HvmExampleParams);
                    break;
                }
            }
        }
    }

    // The field's `max` holds.
    let mut bad = 4096u32.to_le_bytes().to_vec();
    bad.extend_from_slice(&[0; 8]);
    let err = legacy::HvmExampleParams::decode(&bad, -21, 8, &ctx).expect_err("4096 > 4095");
    println!("REFUSED {} {} {}", err.rule, err.offset, err.detail);
}
"#;

/// spec/legacy.yaml with the new chunk at the end of its `chunks:` list.
fn edited_spec() -> String {
    let text = std::fs::read_to_string(scratch::root().join("spec/legacy.yaml")).unwrap();
    let chunks = text.find("\nchunks:\n").expect("a chunks list");
    assert!(
        !text[chunks + 1..]
            .lines()
            .skip(1)
            .any(|l| !l.is_empty() && !l.starts_with(' ')),
        "`chunks:` must be the last top-level key of spec/legacy.yaml"
    );
    format!("{}{}", text.trim_end(), NEW_CHUNK)
}

/// The scratch crate: the spec copy, and MAIN.
fn write_scratch_crate(dir: &Path, spec: &str) {
    scratch::write_crate(
        dir,
        "regenerate-legacy-scratch",
        &[("legacy.yaml", spec)],
        MAIN,
    );
}

#[test]
fn new_chunk_reaches_the_decoder_and_the_document() {
    let spec = edited_spec();
    let dir = tempfile::tempdir().unwrap();
    write_scratch_crate(dir.path(), &spec);
    let out = scratch::run(dir.path());

    // (a) The id is known by number and by name; the committed spec does not know it.
    assert_eq!(scratch::line(&out, "NAME "), "HVM_EXAMPLE_PARAMS");
    assert_eq!(scratch::line(&out, "ID "), "Some(-21)");
    assert_eq!(
        scratch::line(&out, "FIXED64 "),
        "None",
        "a ulong's width is not fixed"
    );
    assert_eq!(scratch::line(&out, "COMMITTED "), "None");

    // (b) The body decodes from octets, one field at a time, for both toolstack widths.
    let needs = |w: usize| -> Vec<&str> {
        out.lines()
            .filter_map(|l| l.strip_prefix(&format!("NEED{w} ")))
            .collect()
    };
    assert_eq!(
        needs(8),
        [
            "4 HVM_EXAMPLE_PARAMS.example_vcpu",
            "12 HVM_EXAMPLE_PARAMS.example_addr"
        ]
    );
    assert_eq!(
        needs(4),
        [
            "4 HVM_EXAMPLE_PARAMS.example_vcpu",
            "8 HVM_EXAMPLE_PARAMS.example_addr"
        ]
    );
    let done = scratch::line(&out, "DONE8 ");
    assert!(
        done.starts_with("12 ")
            && done.contains("example_vcpu: 7")
            && done.contains(&format!("example_addr: {}", 0x1234_5678_9abc_def0u64)),
        "{done}"
    );
    let done = scratch::line(&out, "DONE4 ");
    assert!(
        done.starts_with("8 ")
            && done.contains("example_vcpu: 7")
            && done.contains(&format!("example_addr: {}", 0x9abc_def0u64)),
        "{done}"
    );
    assert!(
        scratch::line(&out, "REFUSED ").starts_with("example_vcpu.max 0 "),
        "{out}"
    );

    // (c) The document regenerated from the copy describes the new chunk; the one from the
    // committed spec does not.
    let copy = dir.path().join("legacy.yaml");
    let edited = xenmig_codegen::load(&copy).unwrap_or_else(|e| panic!("{e}"));
    let original = xenmig_codegen::load(&scratch::root().join("spec/legacy.yaml")).unwrap();
    let md_new = xenmig_codegen::markdown::emit(&edited);
    let md_old = xenmig_codegen::markdown::emit(&original);
    for s in [
        "HVM_EXAMPLE_PARAMS (-21)",
        "a vCPU and an address",
        "`example_vcpu`",
        "`example_addr`",
        "at most 4095",
    ] {
        assert!(md_new.contains(s), "the regenerated document lacks `{s}`");
    }
    for s in ["HVM_EXAMPLE_PARAMS", "example_vcpu", "example_addr"] {
        assert!(!md_old.contains(s), "the committed document has `{s}`");
    }
    // The id table lists it with its id.
    assert!(
        md_new
            .lines()
            .any(|l| l.starts_with("| `-21` |") && l.contains("HVM_EXAMPLE_PARAMS")),
        "no id-table row for -21"
    );
}
