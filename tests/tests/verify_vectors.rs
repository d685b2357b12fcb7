//! The verifier against the shared vectors: the reference tools' verdicts, the converter's
//! expected outputs, and the real Xen images with the counts their manifest gives.

use xenmig::reader::Framing;
use xenmig::wire::Strictness;
use xenmig::{verify_slice, Report, VerifyOptions};
use xenmig_tests::{
    manifest, read_vector, vectors_dir, with_xl_config_length, xl_config_length_missing,
};

/// A vector in xl framing without the config length xl reads (see
/// [`xl_config_length_missing`]) is refused as xl refuses it, at the end of the optional
/// data's first u32; with the length put in, it gets the reference verdict. Returns the bytes
/// to judge against the manifest.
fn as_xl_reads_it(name: &str, bytes: Vec<u8>) -> Vec<u8> {
    if !xl_config_length_missing(&bytes) {
        return bytes;
    }
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        let r = verify(&bytes, None, strictness);
        let e = r
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(
            (e.rule.as_str(), e.offset),
            ("config.length", 52),
            "{name}: {e}"
        );
    }
    with_xl_config_length(&bytes)
}

fn verify(bytes: &[u8], framing: Option<Framing>, strictness: Strictness) -> Report {
    verify_slice(
        bytes,
        VerifyOptions {
            framing,
            strictness,
        },
        &mut |_| {},
    )
}

#[test]
fn verify_rows_get_the_reference_verdict() {
    let dir = vectors_dir();
    let mut n = 0;
    for row in manifest(&dir.join("manifest.tsv")) {
        if row[0] != "verify" {
            continue;
        }
        let bytes = as_xl_reads_it(&row[1], read_vector(&dir.join(&row[2])));
        let framing: Framing = row[3].parse().unwrap();
        for f in [Some(framing), None] {
            let r = verify(&bytes, f, Strictness::Strict);
            let want = row[4] == "pass";
            assert_eq!(
                r.valid, want,
                "{} ({:?}): {:?} warnings {:?}",
                row[1], f, r.error, r.warnings
            );
            if let Some(e) = &r.error {
                assert!(!e.rule.is_empty() && !e.detail.is_empty());
            }
        }
        n += 1;
    }
    assert_eq!(n, 31);
}

#[test]
fn converter_outputs_verify() {
    let dir = vectors_dir();
    for row in manifest(&dir.join("manifest.tsv")) {
        if row[0] != "convert" {
            continue;
        }
        let bytes = as_xl_reads_it(&row[1], read_vector(&dir.join(&row[4])));
        let r = verify(&bytes, None, Strictness::Strict);
        assert!(r.valid, "{}: {:?}", row[1], r.error);
        assert!(r.converted_from_legacy, "{}", row[1]);
    }
}

#[test]
fn real_images_verify_with_manifest_counts() {
    let dir = vectors_dir().join("real");
    for row in manifest(&dir.join("manifest.tsv")) {
        let bytes = read_vector(&dir.join(&row[1]));
        for strictness in [Strictness::Strict, Strictness::Lenient] {
            let r = verify(&bytes, Some(row[2].parse().unwrap()), strictness);
            assert_eq!(r.valid, row[3] == "pass", "{}: {:?}", row[0], r.error);
            let n = |i: usize| row[i].parse::<u64>().unwrap();
            assert_eq!(r.libxc_records, n(4), "{} libxc records", row[0]);
            assert_eq!(r.libxl_records, n(5), "{} libxl records", row[0]);
            assert_eq!(r.pages.page_data_records, n(6), "{}", row[0]);
            assert_eq!(r.pages.pfn_entries, n(7), "{}", row[0]);
            assert_eq!(r.pages.data_pages, n(8), "{}", row[0]);
            assert_eq!(r.checkpoints, n(9), "{}", row[0]);
            assert_eq!(r.trailing_bytes, n(10), "{}", row[0]);
            assert_eq!(r.end as u64, n(11), "{}", row[0]);
        }
    }
}

#[test]
fn trailing_protocol_message_is_a_note() {
    let dir = vectors_dir().join("real");
    let mut bytes = read_vector(&dir.join("pv64.xl.zst"));
    bytes.extend_from_slice(b"domain is yours, you are cleared to unpause\0");
    let r = verify(&bytes, None, Strictness::Strict);
    assert!(r.valid, "{:?}", r.error);
    assert_eq!(r.trailing_bytes, 44);
    assert!(r.warnings.iter().any(|w| w.rule == "trailing_data"));
}
