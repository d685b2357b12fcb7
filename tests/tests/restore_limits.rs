//! The restore driver's memory is bounded by the destination domain (issue 10): whatever pfns
//! a stream names, the driver asks the backend for the domain's limits first and grows its
//! per-pfn structures only inside them. Hostile pfns are refused at the offending record's
//! offset, and the peak of what the driver allocates stays far below what the pfns would ask
//! for. Peaks are measured with a counting allocator, in this test binary only.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use support::*;
use xenmig::domain::{BResult, Domain, GuestType, MemoryLimits, PageType};
use xenmig::reader::{Reader, ReaderOptions};
use xenmig::restore::{restore, RestoreError, RestoreOptions};
use xenmig::save::{SaveOptions, StreamType};
use xenmig::sim::{SimDomain, MAX_VCPUS};
use xenmig::wire::Strictness;
use xenmig::{libxc, StreamError};

// ---------------------------------------------------------------------------------------
// Peak heap use of this process.

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tests measure one at a time.
static MEASURE: Mutex<()> = Mutex::new(());

/// Runs `f` and returns its result with the most it had allocated at once beyond what was
/// live before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// Destinations.

/// A destination with the limits a real Xen domain of `max_pages` pages would report, that
/// keeps no guest memory: what is measured is the restore driver's own memory.
struct Sink {
    dom: SimDomain,
    limits: MemoryLimits,
    populated: u64,
}

impl Sink {
    fn new(guest: GuestType, max_pages: u64) -> Sink {
        Sink {
            dom: SimDomain::empty_for_restore(guest, 0, MAX_VCPUS, 7),
            limits: MemoryLimits::for_pages(0, max_pages),
            populated: 0,
        }
    }
}

impl Domain for Sink {
    xenmig::forward_domain!(
        dom:
        info, p2m_size, page_types, read_pages, vcpu_state, set_vcpu_state, online_vcpus,
        hvm_context, set_hvm_context, hvm_param, set_hvm_param, tsc_info, set_tsc_info,
        shared_info, set_shared_info, cpu_policy, set_cpu_policy, enable_logdirty,
        disable_logdirty, clean_dirty, peek_dirty, pv_p2m, mfn_to_pfn, set_address_size,
        expand_p2m, write_p2m, pin_page_tables, p2m_generation, now, reads_whole_batches
    );
    fn memory_limits(&mut self) -> BResult<MemoryLimits> {
        Ok(self.limits)
    }
    fn populate(&mut self, pfns: &[u64]) -> BResult<()> {
        self.populated += pfns.len() as u64;
        Ok(())
    }
    fn pfn_to_gfn(&mut self, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()> {
        for (o, &p) in out.iter_mut().zip(pfns) {
            *o = Some(p);
        }
        Ok(())
    }
    fn set_page_types(&mut self, _pfns: &[u64], _types: &[PageType]) -> BResult<()> {
        Ok(())
    }
    fn write_pages(&mut self, _gfns: &[u64], _data: &[u8]) -> BResult<()> {
        Ok(())
    }
}

fn restore_into<D: Domain>(
    dom: &mut D,
    bytes: &[u8],
    stream_type: StreamType,
) -> Result<(), RestoreError> {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let mut cb = NoCheckpointsSink;
    restore(
        dom,
        &mut cb,
        &mut r,
        RestoreOptions {
            stream_type,
            store_evtchn: 1,
            console_evtchn: 2,
        },
    )
    .map(|_| ())
}

struct NoCheckpointsSink;

impl<D: Domain> xenmig::domain::RestoreCallbacks<D> for NoCheckpointsSink {
    fn checkpoint(&mut self, _dom: &mut D) -> xenmig::domain::CheckpointAnswer {
        xenmig::domain::CheckpointAnswer::Success
    }
}

fn stream_error(e: RestoreError) -> StreamError {
    match e {
        RestoreError::Stream(s) => s,
        other => panic!("expected a stream error, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Hostile streams built from a valid one.

/// The headers and records of a small saved HVM or PV domain up to its first PAGE_DATA, then
/// one PAGE_DATA of a single data page at `pfn`: about 4 KiB of page and a few records.
fn hostile_page_data(guest: GuestType, pfn: u64) -> (Vec<u8>, u64) {
    let mut src = build(guest, 8, 256, 1, 11);
    let mut cb = SaveCb::new();
    let (_, bytes) = save_to_vec(&mut src, &mut cb, SaveOptions::default());
    let (headers, recs) = records(&bytes);
    let mut out = headers;
    for r in &recs {
        if r.record_type == libxc::PageData::TYPE {
            break;
        }
        out.extend_from_slice(&bytes[r.offset as usize..r.end as usize]);
    }
    let at = out.len() as u64;
    let entry = (pfn & libxc::PAGE_DATA_PFN_MASK) | ((PageType::NOTAB.0 as u64) << 60);
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&entry.to_le_bytes());
    body.extend_from_slice(&[0x5a; 4096]);
    out.extend_from_slice(&libxc::PageData::TYPE.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    (out, at)
}

#[test]
fn a_pfn_beyond_the_destination_is_refused_at_its_record_in_bounded_memory() {
    let _g = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    for guest in [GuestType::X86Hvm, GuestType::X86Pv] {
        let (bytes, at) = hostile_page_data(guest, 0x4_0000_0000);
        assert!(bytes.len() < 16 * 1024, "{} octets", bytes.len());
        // The simulator as the destination (its own limits), and one sized like a 128 MiB
        // Xen guest.
        let mut sim = SimDomain::empty_for_restore(guest, 0, MAX_VCPUS, 3);
        let (r, peak) = peak_of(|| restore_into(&mut sim, &bytes, StreamType::Plain));
        let e = stream_error(r.expect_err("a pfn of 0x400000000 restores"));
        assert_eq!(e.offset, at, "{guest:?}: {e}");
        assert!(
            e.rule == "pfn.limit" || e.rule == "pfn.max_pfn",
            "{guest:?}: {e}"
        );
        assert!(e.to_string().contains("0x400000000"), "{e}");
        assert!(peak < 64 * MIB, "{guest:?}: peak {peak} octets");

        let mut sink = Sink::new(guest, 33_280);
        let (r, peak) = peak_of(|| restore_into(&mut sink, &bytes, StreamType::Plain));
        let e = stream_error(r.expect_err("a pfn of 0x400000000 restores"));
        assert_eq!(e.offset, at, "{guest:?}: {e}");
        assert!(peak < 64 * MIB, "{guest:?}: peak {peak} octets");
        assert_eq!(sink.populated, 0, "nothing populated for the refused batch");
    }
}

#[test]
fn pfns_inside_the_address_limit_but_past_the_page_allowance_are_refused() {
    let _g = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    // A destination of 64 pages: pfns up to 4 GiB + 64 pages are addressable, but it may
    // populate only 64 of them. One more page than that is refused at its record.
    let (bytes, at) = hostile_page_data(GuestType::X86Hvm, 0x1000);
    let mut sink = Sink::new(GuestType::X86Hvm, 0);
    let e = stream_error(
        restore_into(&mut sink, &bytes, StreamType::Plain).expect_err("restores into 0 pages"),
    );
    assert_eq!(e.offset, at, "{e}");
    assert_eq!(e.rule, "pages.limit", "{e}");
    // With room for it, the same pfn is accepted (the stream then ends without END).
    let mut sink = Sink::new(GuestType::X86Hvm, 64);
    let e = stream_error(
        restore_into(&mut sink, &bytes, StreamType::Plain).expect_err("the stream has no END"),
    );
    assert_eq!(e.rule, "truncated", "{e}");
    assert_eq!(sink.populated, 1);
}

#[test]
fn a_valid_stream_restores_within_its_domain_limits() {
    let _g = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let mut src = build(GuestType::X86Hvm, 8, 2048, 2, 5);
    let mut cb = SaveCb::new();
    let (_, bytes) = save_to_vec(&mut src, &mut cb, SaveOptions::default());
    // Xen's max_pages for such a guest is its memory plus what libxl adds; the sim's HVM
    // guest populates a few special pages besides its RAM.
    let mut sink = Sink::new(GuestType::X86Hvm, 2048 + 256);
    restore_into(&mut sink, &bytes, StreamType::Plain).expect("restores");
    assert!(sink.populated >= 2048);
    let (_, restored) = restore_with(&bytes, StreamType::Plain, Strictness::Lenient)
        .expect("restores into the simulator");
    assert_eq!(restored.pages, sink.populated.min(restored.pages));
}

/// The captured first pass of the Remus primary whose pfn arrays held freed heap words
/// (`../shared/evidence/pvh-remus-attempt1.stream.zst`, cut after record #213; in the
/// repository as `tests/data/pvh-remus-sender-garbage.prefix.stream.zst`). Its receiver
/// aborted trying to allocate 560399234973764 octets; restored into a destination of the
/// captured guest's size (128 MiB), it is refused at record #213, the first with a garbage
/// pfn, and the driver's own memory stays small.
#[test]
fn the_captured_garbage_stream_is_refused_at_its_first_garbage_record() {
    let _g = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("pvh-remus-sender-garbage.prefix.stream.zst");
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bytes = zstd::stream::decode_all(&raw[..]).expect("decompress");
    drop(raw);
    let mut sink = Sink::new(GuestType::X86Hvm, 32_768 + 512);
    let mut cb = NoCheckpointsSink;
    let mut r = Reader::from_slice(
        &bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let (result, peak) = peak_of(|| {
        restore(
            &mut sink,
            &mut cb,
            &mut r,
            RestoreOptions {
                stream_type: StreamType::Remus,
                store_evtchn: 1,
                console_evtchn: 2,
            },
        )
        .map(|_| ())
    });
    let e = stream_error(result.expect_err("the garbage stream restores"));
    assert_eq!(e.offset, 0x81a26a9, "{e}");
    assert_eq!(e.record_index, Some(213), "{e}");
    assert_eq!(e.rule, "pfn.limit", "{e}");
    assert!(e.to_string().contains("0x5e2343"), "{e}");
    assert!(peak < 64 * MIB, "peak {peak} octets");
}
