//! Damaged streams never make the verifier panic or hang: a small valid stream cut at every
//! octet, and 10,000 random single-octet corruptions of it, each give an error (with its rule
//! and detail) or a valid verdict, through the zero-copy slice reader and the `Read` reader.

use std::sync::mpsc;
use std::time::Duration;
use xenmig::reader::{Reader, ReaderOptions};
use xenmig::wire::Strictness;
use xenmig::{verify_reader, verify_slice, Report, VerifyOptions};
use xenmig_tests::{read_vector, vectors_dir};

const STREAM: &str = "streams/v2-hvm-v3-libxc-s126.bin";

/// Streams corrupted at random: the small libxc one, and one in each outer framing.
const CORRUPTED: &[&str] = &[
    STREAM,
    "streams/v2-pv-v3-libxl-s121.bin",
    "streams/v2-hvm-v2-xl-s125.bin",
];

/// Longest any of these tests may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(300);

fn opts(strictness: Strictness) -> VerifyOptions {
    VerifyOptions {
        framing: None,
        strictness,
    }
}

fn via_slice(bytes: &[u8], strictness: Strictness) -> Report {
    verify_slice(bytes, opts(strictness), &mut |_| {})
}

fn via_read(bytes: &[u8], strictness: Strictness) -> Report {
    let mut r = Reader::from_read(
        bytes,
        ReaderOptions {
            framing: None,
            strictness,
        },
    );
    verify_reader(&mut r, opts(strictness), &mut |_| {})
}

/// A verdict is either valid with no error, or invalid with an error located inside the
/// input and explained.
fn check(r: &Report, len: usize, what: &str) {
    assert_eq!(r.valid, r.error.is_none(), "{what}");
    if let Some(e) = &r.error {
        assert!(!e.rule.is_empty(), "{what}: {e:?}");
        assert!(!e.detail.is_empty(), "{what}: {e:?}");
        assert!(e.offset <= len as u64, "{what}: {e:?}");
    }
}

/// Runs `f` on another thread and fails if it does not finish in time.
fn within_deadline(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(()) => worker.join().expect("worker"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: surface its message.
            if let Err(p) = worker.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hang: not done in {DEADLINE:?}"),
    }
}

#[test]
fn every_truncation_is_invalid() {
    let bytes = read_vector(&vectors_dir().join(STREAM));
    within_deadline(move || {
        assert!(via_slice(&bytes, Strictness::Strict).valid);
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            for s in [Strictness::Strict, Strictness::Lenient] {
                let r = via_slice(prefix, s);
                check(&r, cut, &format!("cut at {cut}"));
                assert!(
                    !r.valid,
                    "a stream cut at {cut} of {} verifies",
                    bytes.len()
                );
            }
            // The Read path copies; a sample of the cuts is enough to match it.
            if cut % 13 == 0 || cut < 512 {
                let a = via_slice(prefix, Strictness::Strict);
                let b = via_read(prefix, Strictness::Strict);
                assert_eq!(
                    a.error, b.error,
                    "cut at {cut}: slice and Read readers differ"
                );
            }
        }
    });
}

/// A small deterministic generator (xorshift64*).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_single_octet_corruptions_never_panic() {
    for (k, name) in CORRUPTED.iter().enumerate() {
        let bytes = read_vector(&vectors_dir().join(name));
        within_deadline(move || corrupt(name, &bytes, 0x0dd_c0ff_ee15_600d + k as u64));
    }
}

/// 10,000 single-octet corruptions of `bytes`, each on the intact stream.
fn corrupt(name: &str, bytes: &[u8], seed: u64) {
    let mut rng = XorShift(seed);
    let mut b = bytes.to_vec();
    let mut invalid = 0;
    for i in 0..10_000 {
        // Every other corruption lands in the first 512 octets, where the headers, the CPU
        // policy and the first page entries are; the rest anywhere.
        let span = if i % 2 == 0 { 512 } else { b.len() };
        let at = (rng.next() % span as u64) as usize;
        let flip = (rng.next() % 255 + 1) as u8;
        b[at] ^= flip;
        let what = format!("{name}: corruption {i}: octet {at:#x} ^ {flip:#x}");
        let strict = via_slice(&b, Strictness::Strict);
        check(&strict, b.len(), &what);
        let lenient = via_slice(&b, Strictness::Lenient);
        check(&lenient, b.len(), &what);
        // Whatever lenient rejects, strict rejects too.
        assert!(lenient.valid || !strict.valid, "{what}");
        if i % 10 == 0 {
            let read = via_read(&b, Strictness::Strict);
            assert_eq!(
                strict.error, read.error,
                "{what}: slice and Read readers differ"
            );
        }
        if !strict.valid {
            invalid += 1;
        }
        b[at] ^= flip;
    }
    assert_eq!(b, bytes);
    eprintln!("{name}: {invalid} of 10000 corruptions found");
    assert!(
        invalid > 500,
        "{name}: only {invalid} of 10000 corruptions were found"
    );
}
