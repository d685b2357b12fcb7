//! A reader that hands PAGE_DATA out with its page octets still in the input
//! (`Reader::defer_page_data`), as a restore reads them straight into guest frames: the same
//! items in the same order as a whole read, each record's head decoded with the page octets
//! counted, the octets themselves read into pieces cut anywhere or read past when left, and
//! misuse refused without a panic.

use std::io::Read;
use std::path::Path;
use xenmig::domain::{GuestType, SaveCallbacks};
use xenmig::limits::PAGE_SIZE;
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::save::{save, SaveOptions};
use xenmig::sim::{SimConfig, SimDomain};
use xenmig::source::{ReadSource, SliceSource, Source};
use xenmig::wire::Strictness;
use xenmig::{libxc, StreamError};

fn data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors/streams")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const STREAMS: &[&str] = &["v2-hvm-v3-libxc-s126.bin", "v2-hvm-v2-libxc-s123.bin"];

struct Cb;

impl SaveCallbacks<SimDomain> for Cb {
    fn suspend(&mut self, d: &mut SimDomain) -> bool {
        d.suspend();
        true
    }
}

/// A simulated PV guest of 3000 pages saved as a libxc image: several full PAGE_DATA
/// batches, page tables among their pages.
fn sim_pv() -> Vec<u8> {
    let mut dom = SimDomain::build(SimConfig {
        guest: GuestType::X86Pv,
        width: 8,
        memory_pages: 3000,
        vcpus: 1,
        seed: 7,
    })
    .unwrap();
    save(&mut dom, &mut Cb, Vec::new(), SaveOptions::default(), None)
        .unwrap()
        .1
}

/// The streams the tests read: the vectors, and a simulated guest's.
fn streams() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = STREAMS.iter().map(|n| (n.to_string(), data(n))).collect();
    v.push(("simulated pv".into(), sim_pv()));
    v
}

fn opts() -> ReaderOptions {
    ReaderOptions {
        framing: None,
        strictness: Strictness::Strict,
    }
}

/// A reader that hands out at most 1000 octets a call (a pipe's short reads).
struct Dribble<'a>(&'a [u8]);

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1000).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// (offset, type, index, body) of every record, and the item count, read whole.
type Whole = Vec<(u64, u32, u64, Vec<u8>)>;

fn whole(bytes: &[u8]) -> Whole {
    let mut r = Reader::from_slice(bytes, opts());
    let mut out = Vec::new();
    loop {
        match r.next_item().unwrap() {
            Item::Record(rec) => {
                out.push((rec.offset, rec.record_type, rec.index, rec.body.to_vec()))
            }
            Item::Eof { .. } => return out,
            _ => {}
        }
    }
}

/// Reads with deferral: the page octets of every PAGE_DATA record are read into pieces of
/// `cuts` sizes (the rest in one) except for every `leave`-th one, which is left to the reader
/// to read past. Returns what `whole` returns, bodies completed with the octets read (a left
/// record's with zeros).
fn deferred<S: Source>(mut r: Reader<S>, cuts: &[usize], leave: usize) -> Whole {
    r.defer_page_data(true);
    let mut out = Vec::new();
    let mut page_data = 0;
    loop {
        let (offset, record_type, index, mut body, deferred) = match r.next_item().unwrap() {
            Item::Record(rec) => {
                if rec.record_type == libxc::PageData::TYPE {
                    // The head decodes, the page octets counted and not there.
                    let p = match rec.libxc().unwrap() {
                        libxc::Record::PageData(p) => p,
                        other => panic!("{other:?}"),
                    };
                    assert!(p.pages.is_empty());
                    let data = p
                        .entries
                        .iter()
                        .filter(|e| e.page_type().has_data())
                        .count();
                    assert_eq!(rec.ctx.deferred, data * PAGE_SIZE);
                }
                (
                    rec.offset,
                    rec.record_type,
                    rec.index,
                    rec.body.to_vec(),
                    rec.ctx.deferred,
                )
            }
            Item::Eof { .. } => return out,
            _ => continue,
        };
        assert_eq!(r.deferred(), deferred);
        if deferred > 0 {
            page_data += 1;
            let at = body.len();
            body.resize(at + deferred, 0);
            if page_data % leave != 0 {
                let mut pieces: Vec<&mut [u8]> = Vec::new();
                let mut rest = &mut body[at..];
                for &c in cuts {
                    let (a, b) = std::mem::take(&mut rest).split_at_mut(c.min(rest.len()));
                    pieces.push(a);
                    rest = b;
                }
                pieces.push(rest);
                r.read_deferred(&mut pieces).unwrap();
                assert_eq!(r.deferred(), 0);
            }
        }
        out.push((offset, record_type, index, body));
    }
}

/// Blanks the page octets of every `leave`-th PAGE_DATA record, as `deferred` leaves them.
fn blank_left(mut w: Whole, leave: usize) -> Whole {
    let mut page_data = 0;
    for (_, t, _, body) in &mut w {
        if *t != libxc::PageData::TYPE {
            continue;
        }
        let count = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        let head = 8 + 8 * count;
        if body.len() > head {
            page_data += 1;
            if page_data % leave == 0 {
                body[head..].fill(0);
            }
        }
    }
    w
}

#[test]
fn deferred_reads_match_whole_reads() {
    let mut several = false;
    for (name, bytes) in streams() {
        let want = whole(&bytes);
        several |= want.iter().filter(|r| r.1 == libxc::PageData::TYPE).count() >= 3;
        for (cuts, leave) in [
            (&[][..], usize::MAX),
            (&[1, 4095, 4096, 7][..], 3),
            (&[0, 8192][..], 2),
        ] {
            let what = format!("{name}, pieces {cuts:?}, every {leave} left");
            let want = blank_left(want.clone(), leave);
            let slice = Reader::new(SliceSource::new(&bytes), opts());
            assert!(deferred(slice, cuts, leave) == want, "{what}: slice");
            let exact = Reader::new(ReadSource::new(Dribble(&bytes)).exact(), opts());
            assert!(deferred(exact, cuts, leave) == want, "{what}: exact pipe");
            let buffered = Reader::new(ReadSource::new(Dribble(&bytes)), opts());
            assert!(
                deferred(buffered, cuts, leave) == want,
                "{what}: buffered pipe"
            );
        }
    }
    assert!(
        several,
        "a stream with several PAGE_DATA records is among them"
    );
}

/// The first PAGE_DATA record, deferred; returns the reader positioned after its head.
fn at_first_page_data(bytes: &[u8]) -> (Reader<ReadSource<Dribble<'_>>>, usize) {
    let mut r = Reader::new(ReadSource::new(Dribble(bytes)).exact(), opts());
    r.defer_page_data(true);
    loop {
        match r.next_item().unwrap() {
            Item::Record(rec) if rec.ctx.deferred > 0 => {
                let n = rec.ctx.deferred;
                return (r, n);
            }
            Item::Eof { .. } => panic!("no PAGE_DATA with pages"),
            _ => {}
        }
    }
}

fn error_of(bytes: &[u8]) -> StreamError {
    let mut r = Reader::from_slice(bytes, opts());
    loop {
        match r.next_item() {
            Ok(Item::Eof { .. }) => panic!("no error"),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

#[test]
fn a_cut_inside_deferred_octets_is_reported_as_a_whole_read_reports_it() {
    let bytes = data(STREAMS[0]);
    let (_, n) = at_first_page_data(&bytes);
    // Where the first PAGE_DATA's page octets start.
    let start = {
        let mut r = Reader::from_slice(&bytes, opts());
        loop {
            if let Item::Record(rec) = r.next_item().unwrap() {
                if rec.record_type == libxc::PageData::TYPE {
                    break rec.body_offset() as usize + rec.body.len() - n;
                }
            }
        }
    };
    for cut in [start, start + 1, start + n / 2, start + n - 1] {
        let short = &bytes[..cut];
        let want = error_of(short);
        assert_eq!(want.rule, "truncated");
        // Read into place.
        let (mut r, m) = at_first_page_data(short);
        let mut buf = vec![0u8; m];
        let got = r.read_deferred(&mut [&mut buf]).unwrap_err();
        assert_eq!(got.to_string(), want.to_string(), "cut at {cut:#x}, read");
        // Left for the reader to read past.
        let (mut r, _) = at_first_page_data(short);
        let got = r.next_item().unwrap_err();
        assert_eq!(got.to_string(), want.to_string(), "cut at {cut:#x}, left");
        let (mut r, _) = at_first_page_data(short);
        let got = r.skip_deferred().unwrap_err();
        assert_eq!(
            got.to_string(),
            want.to_string(),
            "cut at {cut:#x}, skipped"
        );
    }
}

#[test]
fn asking_for_other_octets_than_are_left_is_refused() {
    let bytes = data(STREAMS[0]);
    let (mut r, n) = at_first_page_data(&bytes);
    let mut short = vec![0u8; n - 1];
    let e = r.read_deferred(&mut [&mut short]).unwrap_err();
    assert_eq!(e.rule, "deferred", "{e}");
    // Nothing deferred: only nothing may be asked for.
    let mut r = Reader::from_slice(&bytes, opts());
    r.next_item().unwrap();
    assert_eq!(r.deferred(), 0);
    r.read_deferred(&mut []).unwrap();
    let mut one = [0u8; 1];
    assert_eq!(
        r.read_deferred(&mut [&mut one]).unwrap_err().rule,
        "deferred"
    );
}

#[test]
fn without_deferral_nothing_is_held_back() {
    let bytes = data(STREAMS[0]);
    let mut r = Reader::from_slice(&bytes, opts());
    loop {
        match r.next_item().unwrap() {
            Item::Record(rec) => assert_eq!(rec.ctx.deferred, 0),
            Item::Eof { .. } => break,
            _ => {}
        }
    }
}
