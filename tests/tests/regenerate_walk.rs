//! Adding to `spec/libxc.yaml` reaches the tool's output without touching any code: a copy of
//! the spec gains an optional record with two fields and a field on X86_TSC_INFO; a scratch
//! crate generates the codec from the copy with `include_spec!`, and is built by cargo. Run, it
//! writes a stream holding the new record and the longer X86_TSC_INFO, reads it back with the
//! runtime's reader, decodes each record with the copy's decoder and renders it with
//! `xenmig::render` — the walk-based renderer `xenmig dump` uses — as text and JSON. The test
//! checks that both renderings name the new fields with their values, and that the Markdown
//! regenerated from the copy documents them.
//!
//! The scratch crate builds in `target/regenerate-walk` (kept between runs, so only the first
//! run compiles the runtime's dependencies), offline, with the workspace's lockfile.

use std::path::Path;
use xenmig_tests::scratch;

/// The new optional record, inserted before `layouts:`.
const NEW_RECORD: &str = r#"  - name: X86_WALK_EXAMPLE
    type: 0x80000013
    doc: >-
      Optional record added by the walk regeneration test.
    fields:
      - name: walk_vcpu
        type: u32
        doc: >-
          vCPU the example belongs to.
      - name: walk_rip
        type: u64
        display: hex
        doc: >-
          An address, shown in hex.
"#;

/// The new field, appended to X86_TSC_INFO.
const NEW_TSC_FIELD: &str = r#"      - name: tsc_walk_extra
        type: u64
        doc: >-
          An extra value appended by the walk regeneration test.
"#;

/// The scratch crate's program: writes, reads, decodes with the copy and renders.
const MAIN: &str = r#"
xenmig_macros::include_spec!("libxc.yaml");
// The format whose structs and records the copy's blob layouts name.
xenmig_macros::include_spec!("x86_state.yaml");

use xenmig::wire::{DecodeCtx, Endian};

fn main() {
    let example = libxc::X86WalkExample { walk_vcpu: 3, walk_rip: 0xffff_8000_dead_beef };
    let tsc = libxc::X86TscInfo {
        mode: 1,
        khz: 2_400_000,
        nsec: 77,
        incarnation: 5,
        tsc_walk_extra: 123_456_789,
        ..Default::default()
    };
    let example_body = example.encode(Endian::Little).expect("encode the new record");
    let tsc_body = tsc.encode(Endian::Little).expect("encode X86_TSC_INFO");
    assert_eq!(tsc_body.len(), libxc::X86TscInfo::SIZE);

    // A stream framed by the runtime, its records encoded by the copy.
    let mut w = xenmig::writer::StreamWriter::new(Vec::new());
    w.image_header(&xenmig::libxc::ImageHeader::default()).unwrap();
    w.domain_header(&xenmig::libxc::DomainHeader {
        r#type: xenmig::libxc::DomainType::X86_HVM,
        ..Default::default()
    })
    .unwrap();
    for (t, body) in [
        (libxc::X86TscInfo::TYPE, &tsc_body[..]),
        (libxc::X86WalkExample::TYPE, &example_body[..]),
        (libxc::End::TYPE, &[][..]),
    ] {
        w.libxc(&xenmig::libxc::Record::Unknown { record_type: t, body }).unwrap();
    }
    let bytes = w.into_inner();

    let mut reader = xenmig::Reader::from_slice(&bytes, Default::default());
    loop {
        match reader.next_item().expect("read the stream") {
            xenmig::Item::Record(rec) => {
                let ctx: DecodeCtx = rec.ctx;
                let decoded = libxc::Record::decode(rec.record_type, rec.body, &ctx)
                    .expect("the copy's decoder accepts its own encoding");
                let name = decoded.record_type().name();
                println!("DECODED {name} {decoded:?}");
                println!("TEXT {name} {}", xenmig::render::text(&decoded));
                println!("JSON {name} {}", xenmig::render::json(&decoded));
            }
            xenmig::Item::Eof { .. } => break,
            _ => {}
        }
    }
}
"#;

/// Inserts `what` just before `anchor`, which must occur once.
fn insert_before(text: &str, anchor: &str, what: &str) -> String {
    assert_eq!(text.matches(anchor).count(), 1, "anchor {anchor:?}");
    let at = text.find(anchor).unwrap();
    format!("{}{}{}", &text[..at], what, &text[at..])
}

/// spec/libxc.yaml with the new record and the new X86_TSC_INFO field.
fn edited_spec() -> String {
    let text = std::fs::read_to_string(scratch::root().join("spec/libxc.yaml")).unwrap();
    let tsc = text.find("  - name: X86_TSC_INFO\n").expect("X86_TSC_INFO");
    let hvm = text.find("  - name: HVM_CONTEXT\n").expect("HVM_CONTEXT");
    assert!(tsc < hvm, "X86_TSC_INFO must come right before HVM_CONTEXT");
    let text = insert_before(&text, "\n  - name: HVM_CONTEXT\n", NEW_TSC_FIELD);
    insert_before(
        &text,
        "\nlayouts:\n",
        &format!("\n{}", NEW_RECORD.trim_end()),
    )
}

/// The scratch crate: the spec copy and the spec its layouts name, and MAIN.
fn write_scratch_crate(dir: &Path, spec: &str) {
    let x86 = std::fs::read_to_string(scratch::root().join("spec/x86_state.yaml")).unwrap();
    scratch::write_crate(
        dir,
        "regenerate-walk-scratch",
        &[("libxc.yaml", spec), ("x86_state.yaml", &x86)],
        MAIN,
    );
}

#[test]
fn new_record_and_field_reach_decoder_rendering_and_docs() {
    let spec = edited_spec();
    let dir = tempfile::tempdir().unwrap();
    write_scratch_crate(dir.path(), &spec);
    let out = scratch::run(dir.path());

    // (a) The copy's decoder read both records from the stream, the new field included.
    let decoded = scratch::line(&out, "DECODED X86_WALK_EXAMPLE ");
    assert!(
        decoded.contains("walk_vcpu: 3") && decoded.contains("walk_rip: 18446603339957124847"),
        "{decoded}"
    );
    let decoded = scratch::line(&out, "DECODED X86_TSC_INFO ");
    assert!(decoded.contains("tsc_walk_extra: 123456789"), "{decoded}");

    // (b) The walk-based rendering names the new fields with their values, in spec order and
    // with the spec's display (hex for walk_rip), as text and as JSON.
    assert_eq!(
        scratch::line(&out, "TEXT X86_WALK_EXAMPLE "),
        "walk_vcpu=3 walk_rip=0xffff8000deadbeef"
    );
    assert_eq!(
        scratch::line(&out, "TEXT X86_TSC_INFO "),
        "mode=1 khz=2400000 nsec=77 incarnation=5 reserved=0x0 tsc_walk_extra=123456789"
    );
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(scratch::line(&out, &format!("JSON {name} "))).unwrap()
    };
    assert_eq!(
        json("X86_WALK_EXAMPLE"),
        serde_json::json!({ "walk_vcpu": 3, "walk_rip": 0xffff_8000_dead_beefu64 })
    );
    let tsc = json("X86_TSC_INFO");
    assert_eq!(tsc["tsc_walk_extra"], 123_456_789, "{tsc}");
    assert_eq!(tsc["khz"], 2_400_000, "{tsc}");
    assert_eq!(scratch::line(&out, "TEXT END "), "", "END has no fields");

    // (c) The document regenerated from the copy describes the new record and fields; the one
    // from the committed spec does not.
    let copy = dir.path().join("libxc.yaml");
    let edited = xenmig_codegen::load(&copy).unwrap_or_else(|e| panic!("{e}"));
    let original = xenmig_codegen::load(&scratch::root().join("spec/libxc.yaml")).unwrap();
    let md_new = xenmig_codegen::markdown::emit(&edited);
    let md_old = xenmig_codegen::markdown::emit(&original);
    for s in [
        "X86_WALK_EXAMPLE",
        "walk_vcpu",
        "walk_rip",
        "tsc_walk_extra",
    ] {
        assert!(md_new.contains(s), "the regenerated document lacks `{s}`");
        assert!(!md_old.contains(s), "the committed document has `{s}`");
    }
}
