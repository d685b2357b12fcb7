//! The synthetic streams of the `gen_stream` example (and of the benches) are valid: every
//! guest, framing and batch size verifies strictly, through a slice and through `Read`.

#[path = "../examples/gen_stream/synth.rs"]
mod synth;

use synth::{Guest, Synth};
use xenmig::reader::{Framing, Reader, ReaderOptions};
use xenmig::{verify_reader, verify_slice, VerifyOptions};

fn generate(s: &Synth) -> Vec<u8> {
    let mut out = Vec::new();
    let n = synth::write_stream(&mut out, s).expect("the generator writes");
    assert_eq!(n, out.len() as u64);
    out
}

#[test]
fn sixteen_mib_streams_verify_strictly() {
    for guest in [Guest::Hvm, Guest::Pv] {
        for framing in [Framing::Libxc, Framing::Libxl, Framing::Xl] {
            for batch in [1024, 8] {
                let s = Synth {
                    size: 16 << 20,
                    batch,
                    guest,
                    framing,
                };
                let bytes = generate(&s);
                let what = format!("{guest:?} {framing:?} batch {batch}");
                assert!(
                    bytes.len() as u64 <= s.size,
                    "{what}: {} octets",
                    bytes.len()
                );
                assert!(
                    bytes.len() as u64 > s.size - (64 << 10),
                    "{what}: only {} octets",
                    bytes.len()
                );
                let report = verify_slice(&bytes, VerifyOptions::default(), &mut |_| {});
                assert!(report.valid, "{what}: {:?}", report.error);
                assert!(report.warnings.is_empty(), "{what}: {:?}", report.warnings);
                assert_eq!(report.framing, Some(framing), "{what}");
                assert_eq!(report.pages.data_pages, s.pages(), "{what}");
                assert_eq!(
                    report.pages.page_data_records,
                    s.pages().div_ceil(batch as u64),
                    "{what}"
                );
                assert!(report.end, "{what}");
                assert_eq!(report.bytes, bytes.len() as u64, "{what}");
            }
        }
    }
}

#[test]
fn streams_verify_through_read() {
    let s = Synth {
        size: 3 << 20,
        batch: 8,
        guest: Guest::Pv,
        framing: Framing::Xl,
    };
    let bytes = generate(&s);
    let mut r = Reader::from_read(&bytes[..], ReaderOptions::default());
    let report = verify_reader(&mut r, VerifyOptions::default(), &mut |_| {});
    assert!(report.valid, "{:?}", report.error);
    assert_eq!(report.pages.data_pages, s.pages());
}

#[test]
fn generation_is_deterministic_and_pages_differ() {
    let s = Synth {
        size: 1 << 20,
        batch: 1024,
        guest: Guest::Hvm,
        framing: Framing::Libxc,
    };
    let a = generate(&s);
    assert_eq!(a, generate(&s));
    // Two pages of one batch differ (the pfn is stamped in), and no page is all zeros.
    let mut r = Reader::from_slice(&a, ReaderOptions::default());
    let mut seen = 0;
    loop {
        match r.next_item().expect("valid") {
            xenmig::Item::Record(rec) => {
                if let Ok(xenmig::libxc::Record::PageData(p)) = rec.libxc() {
                    let pages: Vec<&[u8]> = p.pages.chunks(4096).collect();
                    assert!(pages.iter().all(|pg| pg.iter().any(|b| *b != 0)));
                    assert_ne!(pages[0], pages[1]);
                    seen += 1;
                }
            }
            xenmig::Item::Eof { .. } => break,
            _ => {}
        }
    }
    assert!(seen > 0);
}
