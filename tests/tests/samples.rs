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
