//! The demo streams in `samples/` are what `cargo run -p xenmig --example sample` writes, and
//! they verify strictly.

use std::path::Path;
use xenmig::wire::Strictness;
use xenmig::{verify_slice, VerifyOptions};

#[test]
fn samples_verify() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    for name in ["pv64-demo.xl", "hvm64-demo.libxl"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let r = verify_slice(
            &bytes,
            VerifyOptions {
                framing: None,
                strictness: Strictness::Strict,
            },
            &mut |_| {},
        );
        assert!(r.valid, "{name}: {:?}", r.error);
        assert!(r.end, "{name}");
        assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
    }
}

#[test]
fn the_hvm_samples_context_is_xens_save_records() {
    use xenmig::reader::{Item, Reader, ReaderOptions};
    use xenmig::{libxc, x86_state};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let bytes = std::fs::read(dir.join("hvm64-demo.libxl")).unwrap();
    let mut r = Reader::from_slice(&bytes, ReaderOptions::default());
    let mut contexts = 0;
    loop {
        match r.next_item().unwrap() {
            Item::Record(rec) if rec.layer == xenmig::Layer::Libxc => {
                if let libxc::Record::HvmContext(h) = rec.libxc().unwrap() {
                    contexts += 1;
                    let frames: Vec<_> = x86_state::Frames::new(h.context)
                        .iter()
                        .map(|f| f.unwrap())
                        .collect();
                    let types: Vec<u16> = frames.iter().map(|f| f.header.typecode).collect();
                    let cpu = x86_state::Cpu::TYPE as u16;
                    assert_eq!(types.first(), Some(&(x86_state::Header::TYPE as u16)));
                    assert_eq!(types.iter().filter(|&&t| t == cpu).count(), 2);
                    assert_eq!(types.last(), Some(&(x86_state::End::TYPE as u16)));
                }
            }
            Item::Eof { .. } => break,
            _ => {}
        }
    }
    assert_eq!(contexts, 1);
}
