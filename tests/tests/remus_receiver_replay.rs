//! The Remus receiver's stream as xl fed it on a real Xen (issue 10), replayed through the save
//! helper's restore side with a peer that plays libxl's part on the same descriptor.
//!
//! `tests/data/pvh-remus-receiver-misread.stream.zst` is the wire of a `pvh-remus` attempt in
//! which the receiving helper refused "record #1035 (libxc PAGE_DATA) … element 688", page
//! data read as entries, although the wire verifies strictly. Here the wire goes through an OS
//! pipe written in different ways (whole, page-sized pieces, random pieces, one octet at a time
//! around every checkpoint boundary, pauses at the boundaries) while the peer reads libxl's
//! own records from the same pipe between the helper's checkpoints, as libxl does: before the
//! helper starts (up to LIBXC_CONTEXT) and at each `checkpoint` message (up to CHECKPOINT_END),
//! in whole records or one octet at a time. Every way must restore the last complete
//! checkpoint (3) with the digest a restore of the whole stream gives.
//!
//! Run in release mode: `cargo test -p xenmig-tests --release --test remus_receiver_replay`.

mod support;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Duration;
use xenmig::domain::GuestType;
use xenmig::libxc;
use xenmig::libxl;
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::save::StreamType;
use xenmig::savehelper::protocol::{read_message, write_reply, CbFlags, Message};
use xenmig::savehelper::{run_restore, Outcome, Pipe, RestoreArgs, SimBackend, SimSpec};
use xenmig::Layer;

fn wire() -> &'static [u8] {
    static WIRE: OnceLock<Vec<u8>> = OnceLock::new();
    WIRE.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/pvh-remus-receiver-misread.stream.zst");
        zstd::decode_all(std::fs::File::open(path).expect("the captured wire")).expect("zstd")
    })
}

/// Where libxl hands the stream to the helper (just past LIBXC_CONTEXT), and the offsets
/// around which the two readers take turns: each libxc CHECKPOINT and each libxl
/// CHECKPOINT_END, with the record that follows it.
struct Layout {
    libxc_start: usize,
    boundaries: Vec<usize>,
}

fn layout() -> &'static Layout {
    static L: OnceLock<Layout> = OnceLock::new();
    L.get_or_init(|| {
        let mut r = Reader::from_slice(wire(), ReaderOptions::default());
        let mut libxc_start = None;
        let mut boundaries = Vec::new();
        loop {
            match r.next_item() {
                Ok(Item::Record(rec)) => {
                    let end = rec.offset as usize + 8 + rec.body.len().div_ceil(8) * 8;
                    match (rec.layer, rec.record_type) {
                        (Layer::Libxl, t) if t == libxl::LibxcContext::TYPE => {
                            libxc_start = Some(end)
                        }
                        (Layer::Libxl, t) if t == libxl::CheckpointEnd::TYPE => {
                            boundaries.extend([rec.offset as usize, end])
                        }
                        (Layer::Libxc, t) if t == libxc::Checkpoint::TYPE => {
                            boundaries.extend([rec.offset as usize, end])
                        }
                        _ => {}
                    }
                }
                Ok(Item::Eof { .. }) => break,
                Ok(_) => {}
                Err(e) => panic!("the captured wire does not read: {e}"),
            }
        }
        assert_eq!(boundaries.len(), 12, "three checkpoints on the wire");
        Layout {
            libxc_start: libxc_start.expect("LIBXC_CONTEXT"),
            boundaries,
        }
    })
}

/// How the sending side writes the wire into the pipe, and how libxl's side reads.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// One write; libxl reads whole records.
    Whole,
    /// Page-sized writes.
    Pages,
    /// Pieces of 1 octet to 256 KiB from a seeded generator.
    Random(u64),
    /// One octet at a time within 16 KiB of every boundary, 64 KiB elsewhere; libxl reads
    /// one octet at a time too.
    Dribble,
    /// Random pieces, with a pause just before and after every boundary.
    Pauses(u64),
}

impl Pattern {
    fn libxl_reads_octets(self) -> bool {
        matches!(self, Pattern::Dribble)
    }
}

/// xorshift64*: a small reproducible generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes `wire` into `w` as `pattern` says; stops quietly when the reader is gone.
fn write_wire(mut w: std::io::PipeWriter, pattern: Pattern) {
    let wire = wire();
    let b = &layout().boundaries;
    let near = |at: usize| {
        b.iter()
            .any(|&x| at + (16 << 10) > x && at < x + (16 << 10))
    };
    let mut rng = Rng(match pattern {
        Pattern::Random(s) | Pattern::Pauses(s) => s | 1,
        _ => 1,
    });
    let mut at = 0usize;
    while at < wire.len() {
        let mut n = match pattern {
            Pattern::Whole => wire.len() - at,
            Pattern::Pages => 4096,
            Pattern::Random(_) | Pattern::Pauses(_) => 1 + (rng.next() % (256 << 10)) as usize,
            Pattern::Dribble => {
                if near(at) {
                    1
                } else {
                    64 << 10
                }
            }
        };
        if let Pattern::Pauses(_) = pattern {
            // Stop at the next boundary, pause there, then go on.
            if let Some(&x) = b.iter().find(|&&x| x > at && x < at + n) {
                n = x - at;
            }
            if b.contains(&at) {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let end = (at + n).min(wire.len());
        if w.write_all(&wire[at..end]).is_err() {
            return;
        }
        at = end;
    }
}

/// Reads exactly `buf.len()` octets, one at a time or in one go.
fn read_exact(r: &mut impl Read, buf: &mut [u8], octets: bool) -> std::io::Result<()> {
    if !octets {
        return r.read_exact(buf);
    }
    for b in buf.iter_mut() {
        r.read_exact(std::slice::from_mut(b))?;
    }
    Ok(())
}

/// What the libxl peer saw.
#[derive(Debug, Default)]
struct Peer {
    checkpoint_ends: u32,
    restore_results: Option<(u64, u64)>,
    complete: Option<(i32, i32)>,
    errors: Vec<String>,
}

/// libxl's side of the helper's pipes; at `checkpoint` it reads its records from the stream
/// up to CHECKPOINT_END before it answers.
fn play_libxl(
    mut from_helper: std::io::PipeReader,
    mut to_helper: std::io::PipeWriter,
    mut stream: std::io::PipeReader,
    octets: bool,
) -> Peer {
    let mut peer = Peer::default();
    loop {
        let m = match read_message(&mut from_helper) {
            Ok(Some(m)) => m,
            Ok(None) => return peer,
            Err(e) => {
                peer.errors.push(format!("bad message: {e}"));
                return peer;
            }
        };
        let reply = match &m {
            // xentoollog levels: 8 is ERROR, 9 CRITICAL.
            Message::Log { level, text, .. } if *level >= 8 => {
                peer.errors.push(String::from_utf8_lossy(text).into_owned());
                None
            }
            Message::Checkpoint => {
                // libxl reads its checkpoint records; a broken stream means failover.
                let mut answer = 2;
                loop {
                    let mut h = [0u8; 8];
                    if read_exact(&mut stream, &mut h, octets).is_err() {
                        break;
                    }
                    let t = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
                    let mut body = vec![0u8; len.div_ceil(8) * 8];
                    if read_exact(&mut stream, &mut body, octets).is_err() {
                        break;
                    }
                    if t == libxl::CheckpointEnd::TYPE {
                        peer.checkpoint_ends += 1;
                        answer = 1;
                        break;
                    }
                }
                Some(answer)
            }
            Message::RestoreResults {
                store_gfn,
                console_gfn,
            } => {
                peer.restore_results = Some((*store_gfn, *console_gfn));
                None
            }
            Message::Complete { retval, errnoval } => {
                peer.complete = Some((*retval, *errnoval));
                Some(0)
            }
            m if m.expects_reply() => Some(0),
            _ => None,
        };
        if let Some(r) = reply {
            if write_reply(&mut to_helper, r).is_err() {
                return peer;
            }
        }
    }
}

/// The helper's restore side over the wire written as `pattern` says; returns its outcome,
/// what the libxl peer saw, and the restored domain's digest.
fn replay(pattern: Pattern) -> (Outcome, Peer, String) {
    let l = layout();
    let (stream_rd, stream_wr) = std::io::pipe().expect("pipe");
    let writer = std::thread::spawn(move || write_wire(stream_wr, pattern));
    // libxl reads the xl header, its own header and LIBXC_CONTEXT before it starts the
    // helper on the same descriptor.
    let mut libxl_stream = stream_rd.try_clone().expect("dup");
    let mut head = vec![0u8; l.libxc_start];
    read_exact(&mut libxl_stream, &mut head, pattern.libxl_reads_octets()).expect("head");
    assert_eq!(&head[..], &wire()[..l.libxc_start]);
    let (from_helper, to_libxl) = std::io::pipe().expect("pipe");
    let (from_libxl, to_helper) = std::io::pipe().expect("pipe");
    let octets = pattern.libxl_reads_octets();
    let peer = std::thread::spawn(move || play_libxl(from_helper, to_helper, libxl_stream, octets));
    let spec = SimSpec::parse("pvh,64,128M,2,seed=24300").expect("spec");
    let mut dom = SimBackend::for_restore(&spec);
    let args = RestoreArgs {
        io_fd: stream_rd.as_raw_fd(),
        send_back_fd: -1,
        domid: 2,
        store_evtchn: 1,
        store_domid: 0,
        console_evtchn: 2,
        console_domid: 0,
        cbflags: CbFlags(800),
        stream_type: StreamType::Remus,
    };
    let outcome = {
        let mut pipe = Pipe::new(from_libxl, to_libxl);
        run_restore(&mut dom, &args, &mut pipe, &stream_rd)
    };
    drop(stream_rd);
    let peer = peer.join().expect("libxl peer");
    writer.join().expect("writer");
    (outcome, peer, dom.dom.state_digest_hex())
}

/// The digest of the last complete checkpoint, from a restore of the whole stream in memory.
fn reference_digest() -> &'static str {
    static D: OnceLock<String> = OnceLock::new();
    D.get_or_init(|| {
        let (dom, _) = support::restore(wire(), StreamType::Remus)
            .unwrap_or_else(|e| panic!("the whole wire does not restore: {e}"));
        dom.state_digest_hex()
    })
}

fn check(pattern: Pattern) {
    let (outcome, peer, digest) = replay(pattern);
    assert!(peer.errors.is_empty(), "{pattern:?}: {:?}", peer.errors);
    assert_eq!(outcome, Outcome::Exit(0), "{pattern:?}: {peer:?}");
    assert_eq!(peer.complete, Some((0, 0)), "{pattern:?}");
    assert!(peer.restore_results.is_some(), "{pattern:?}");
    assert_eq!(peer.checkpoint_ends, 3, "{pattern:?}");
    assert_eq!(
        digest,
        reference_digest(),
        "{pattern:?}: not checkpoint 3's state"
    );
}

#[test]
fn the_wire_is_a_pvh_remus_stream_of_three_checkpoints() {
    let r = support::verify_strict(wire());
    assert!(r.valid && r.error.is_none(), "{:?}", r.error);
    let mut rd = Reader::from_slice(wire(), ReaderOptions::default());
    while let Ok(item) = rd.next_item() {
        if let Item::DomainHeader { header, .. } = item {
            assert_eq!(
                GuestType::from_domain_type(header.r#type),
                Some(GuestType::X86Hvm)
            );
            return;
        }
    }
    panic!("no domain header");
}

#[test]
fn whole_and_page_sized_writes_restore_checkpoint_3() {
    check(Pattern::Whole);
    check(Pattern::Pages);
}

#[test]
fn random_pieces_restore_checkpoint_3() {
    for seed in [1, 0x5eed, 0xdead_beef] {
        check(Pattern::Random(seed));
    }
}

#[test]
fn octets_around_every_boundary_restore_checkpoint_3() {
    check(Pattern::Dribble);
}

#[test]
fn pauses_at_every_boundary_restore_checkpoint_3() {
    check(Pattern::Pauses(7));
}
