//! Generated encoders refuse what their own decoders refuse at the `required` level, naming
//! the rule, instead of writing bytes no reader accepts.

use xenmig::libxc;
use xenmig::wire::{Array, DecodeCtx, Endian, Strictness};

fn lenient() -> DecodeCtx {
    DecodeCtx::new(3).with_strictness(Strictness::Lenient)
}

#[test]
fn page_data_without_entries_is_refused_by_name() {
    let empty = libxc::PageData::default();
    let e = empty
        .encode(Endian::Little)
        .expect_err("an empty batch must not encode");
    assert_eq!(e.item, "PAGE_DATA");
    assert_eq!(e.field, "count");
    assert_eq!(e.rule, Some("count.min"));
    assert!(e.to_string().contains("count.min"), "{e}");

    // The decoder refuses the same thing under the same name.
    let mut body = vec![0u8; 8];
    body[4..].copy_from_slice(&0u32.to_le_bytes());
    let d = libxc::PageData::decode(&body, &lenient()).expect_err("decoder refuses count 0");
    assert_eq!(d.rule, e.rule.unwrap());
}

#[test]
fn record_rules_are_checked_when_encoding() {
    // X86_PV_INFO: guest width 8 goes with 4 page-table levels, never 3.
    let bad = libxc::X86PvInfo {
        guest_width: 8,
        pt_levels: 3,
        ..Default::default()
    };
    let e = bad
        .encode(Endian::Little)
        .expect_err("width and levels disagree");
    assert_eq!(e.rule, Some("width_matches_levels"), "{e}");
    let good = libxc::X86PvInfo {
        guest_width: 8,
        pt_levels: 4,
        ..Default::default()
    };
    let bytes = good
        .encode(Endian::Little)
        .expect("a consistent value encodes");
    assert_eq!(libxc::X86PvInfo::decode(&bytes, &lenient()), Ok(good));
}

#[test]
fn unknown_page_types_are_refused_when_encoding() {
    // Page type 0x5 is not one the spec defines: the decoder refuses it (required).
    let entries = [libxc::PageEntry(0)
        .with_pfn(1)
        .with_page_type(libxc::PageType(0x5))];
    let p = libxc::PageData {
        entries: Array::Values(&entries),
        ..Default::default()
    };
    let e = p.encode(Endian::Little).expect_err("unknown page type");
    assert_eq!(e.field, "entries");
    assert_eq!(e.rule, Some("page_entry.page_type.known"), "{e}");
}

#[test]
fn strict_only_rules_do_not_stop_an_encoder() {
    // A non-zero reserved field is refused only by strict readers: encoding it is allowed
    // (tests and fault injection write such streams on purpose).
    let entries = [libxc::PageEntry(0).with_pfn(1)];
    let pages = vec![0u8; xenmig::limits::PAGE_SIZE];
    let p = libxc::PageData {
        reserved: 7,
        entries: Array::Values(&entries),
        pages: &pages,
    };
    let bytes = p
        .encode(Endian::Little)
        .expect("strict-only rules are the reader's");
    assert!(libxc::PageData::decode(&bytes, &lenient()).is_ok());
    assert!(libxc::PageData::decode(&bytes, &DecodeCtx::new(3)).is_err());
}
