//! COLO through the libxl layer (issue 6): a primary and a secondary over one socket pair,
//! the secondary running its copy between checkpoints with a workload that dirties pages;
//! its dirty pfn lists make every checkpoint's state equal on both sides. The captured
//! forward stream verifies strictly when read as COLO and is refused otherwise; cut anywhere
//! and replayed, it fails over to the last complete checkpoint; hostile CHECKPOINT_STATE
//! records are refused with where and which rule.
//!
//! Run in release mode: `cargo test -p xenmig-tests --release --test colo`.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenmig::dm::{SimDeviceModel, SimGuest, SimGuestExt};
use xenmig::domain::{GuestType, RestoreCallbacks, SaveCallbacks};
use xenmig::libxl_stream::{
    restore_stream, save_libxl, Destination, LibxlRestoreError, LibxlRestoreResult, LibxlSaveError,
};
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::restore::{RestoreError, RestoreOptions};
use xenmig::save::{SaveOptions, StreamType};
use xenmig::sim::{SimConfig, SimDomain, Workload};
use xenmig::wire::Strictness;
use xenmig::writer::StreamWriter;
use xenmig::{libxc, libxl, verify_reader, Layer, Report, StreamError, VerifyOptions};

const PAGES: u64 = 2048;
const CHECKPOINTS: u32 = 4;

// ---------------------------------------------------------------------------------------------
// The two toolstacks

/// The primary's callbacks: the digest at every suspend; the guest runs between checkpoints.
struct PrimaryCb {
    checkpoints: u32,
    epoch: u32,
    digest_at_suspend: Option<String>,
    epoch_digests: Vec<String>,
}

impl SaveCallbacks<SimGuest> for PrimaryCb {
    fn suspend(&mut self, g: &mut SimGuest) -> bool {
        g.dom.suspend();
        self.digest_at_suspend = Some(g.state_digest_hex());
        true
    }
    fn postcopy(&mut self, g: &mut SimGuest) -> i32 {
        self.epoch += 1;
        self.epoch_digests
            .push(self.digest_at_suspend.clone().unwrap_or_default());
        g.dom.resume();
        1
    }
    fn wait_checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        if self.epoch >= self.checkpoints {
            return 0;
        }
        g.dom.run_for(Duration::from_millis(40));
        1
    }
}

/// The secondary's callbacks: the digest right after each checkpoint is applied, and after
/// the guest ran (before it suspends).
#[derive(Default)]
struct SecondaryCb {
    applied: Vec<String>,
    after_running: Vec<String>,
    resumed: u32,
}

impl RestoreCallbacks<SimGuest> for SecondaryCb {
    fn restore_results(&mut self, g: &mut SimGuest, _store: u64, _console: u64) {
        g.dom.checkpoint_applied();
        self.applied.push(g.state_digest_hex());
    }
    fn postcopy(&mut self, g: &mut SimGuest) -> i32 {
        g.dom.resume();
        self.resumed += 1;
        1
    }
    fn wait_checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        g.dom.run_for(Duration::from_millis(40));
        self.after_running.push(g.state_digest_hex());
        1
    }
    fn suspend(&mut self, g: &mut SimGuest) -> i32 {
        g.dom.suspend();
        1
    }
}

fn primary_guest(seed: u64) -> SimGuest {
    let mut dom = SimDomain::build(SimConfig {
        guest: GuestType::X86Hvm,
        width: 8,
        memory_pages: PAGES,
        vcpus: 2,
        seed,
    })
    .unwrap();
    dom.set_workload(Some(Workload {
        rate_pages_per_sec: 5_000,
        seed: seed ^ 1,
    }));
    SimGuest::new(dom, Some(SimDeviceModel::build(seed)))
}

/// The secondary's empty domain; its guest dirties `rate` pages per second while it runs.
fn secondary_make(rate: u64) -> impl FnOnce(&Destination<'_>) -> Result<SimGuest, RestoreError> {
    move |d| {
        let mut dom = SimDomain::empty_for_restore(d.guest, 0, 2, 0x5eed);
        if rate > 0 {
            dom.set_workload(Some(Workload {
                rate_pages_per_sec: rate,
                seed: 77,
            }));
        }
        Ok(SimGuest::new(dom, Some(SimDeviceModel::empty())))
    }
}

fn colo_opts() -> RestoreOptions {
    RestoreOptions {
        stream_type: StreamType::Colo,
        store_evtchn: 1,
        console_evtchn: 2,
    }
}

/// A writer that keeps a copy of everything written through it.
struct Tee<W> {
    inner: W,
    copy: Arc<Mutex<Vec<u8>>>,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.copy
            .lock()
            .unwrap()
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type SecondaryOutcome = (
    Result<(SimGuest, LibxlRestoreResult), LibxlRestoreError>,
    SecondaryCb,
);

/// One COLO run: the primary checkpoints `CHECKPOINTS` times over one socket pair (forward
/// stream one way, back channel the other) and closes it. Returns the primary's epoch
/// digests, the forward and back streams as they crossed, and the secondary's outcome.
fn colo_run(seed: u64, secondary_rate: u64) -> (Vec<String>, Vec<u8>, Vec<u8>, SecondaryOutcome) {
    let (p_sock, s_sock) = UnixStream::pair().unwrap();
    let fwd = Arc::new(Mutex::new(Vec::new()));
    let back = Arc::new(Mutex::new(Vec::new()));
    let back_copy = back.clone();
    let secondary = std::thread::spawn(move || {
        let mut cb = SecondaryCb::default();
        let mut reader = Reader::from_read(
            s_sock.try_clone().unwrap(),
            ReaderOptions {
                framing: None,
                strictness: Strictness::Lenient,
            },
        );
        let mut out = Tee {
            inner: s_sock,
            copy: back_copy,
        };
        let r = restore_stream(
            secondary_make(secondary_rate),
            &mut cb,
            &mut reader,
            colo_opts(),
            Some(&mut out),
        );
        (r, cb)
    });
    let mut g = primary_guest(seed);
    let mut cb = PrimaryCb {
        checkpoints: CHECKPOINTS,
        epoch: 0,
        digest_at_suspend: None,
        epoch_digests: Vec::new(),
    };
    let out = Tee {
        inner: p_sock.try_clone().unwrap(),
        copy: fwd.clone(),
    };
    let mut back_in = p_sock;
    let opts = SaveOptions {
        live: true,
        stream_type: StreamType::Colo,
        ..SaveOptions::default()
    };
    let (stats, out) = save_libxl(&mut g, &mut cb, out, opts, Some(&mut back_in))
        .unwrap_or_else(|e| panic!("primary: {e}"));
    assert_eq!(stats.checkpoints, CHECKPOINTS);
    drop(out);
    drop(back_in);
    let outcome = secondary.join().unwrap();
    let fwd = std::mem::take(&mut *fwd.lock().unwrap());
    let back = std::mem::take(&mut *back.lock().unwrap());
    (cb.epoch_digests, fwd, back, outcome)
}

/// The back channel's messages: CHECKPOINT_STATE ids as `S<id>`, dirty pfn lists as their
/// pfn count `D<n>`.
fn back_messages(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let t = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..at + 8 + len];
        if t == libxl::CheckpointState::TYPE {
            let id = u32::from_le_bytes(body[..4].try_into().unwrap());
            out.push(format!("S{id}"));
        } else {
            assert_eq!(t, libxc::CheckpointDirtyPfnList::TYPE);
            out.push(format!("D{}", len / 8));
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    assert_eq!(at, bytes.len(), "the back channel holds whole records");
    out
}

fn verify_colo(bytes: &[u8], colo: bool) -> Report {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Strict,
        },
    );
    r.set_colo(colo);
    verify_reader(
        &mut r,
        VerifyOptions {
            framing: None,
            strictness: Strictness::Strict,
        },
        &mut |_| {},
    )
}

/// (layer, type name, offset, end offset) of every record of a COLO forward stream.
fn records(bytes: &[u8]) -> Vec<(Layer, String, u64, u64)> {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    )
    .colo();
    let mut out = Vec::new();
    loop {
        match r.next_item().unwrap() {
            Item::Record(rec) => {
                let end = rec.offset + 8 + (rec.body.len() as u64).div_ceil(8) * 8;
                out.push((rec.layer, rec.type_name(), rec.offset, end));
            }
            Item::Eof { .. } => return out,
            _ => {}
        }
    }
}

/// Replays a captured forward stream into a fresh secondary (its back channel discarded).
fn replay(bytes: &[u8], rate: u64) -> SecondaryOutcome {
    let mut cb = SecondaryCb::default();
    let mut reader = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let mut sink = io::sink();
    let r = restore_stream(
        secondary_make(rate),
        &mut cb,
        &mut reader,
        colo_opts(),
        Some(&mut sink),
    );
    (r, cb)
}

// ---------------------------------------------------------------------------------------------
// Round trip

#[test]
fn colo_secondary_matches_the_primary_at_every_checkpoint() {
    let (primary, fwd, back, (r, cb)) = colo_run(21, 3_000);
    let (g, res) = r.unwrap_or_else(|e| panic!("secondary: {e}"));
    assert_eq!(primary.len(), CHECKPOINTS as usize);
    // Right after each checkpoint, the secondary holds what the primary had at its suspend.
    assert_eq!(cb.applied, primary);
    // The link closed after the last one: failover, the guest as it ran on.
    assert!(res.failed_over && !res.end, "{res:?}");
    assert_eq!(res.checkpoints, CHECKPOINTS);
    assert_eq!(res.libxc.checkpoints, CHECKPOINTS);
    assert_eq!(cb.resumed, CHECKPOINTS);
    assert!(!g.dom.is_suspended());
    // The secondary really diverged between checkpoints (its workload ran).
    for (k, (applied, ran)) in cb.applied.iter().zip(&cb.after_running).enumerate() {
        assert_ne!(
            applied,
            ran,
            "checkpoint {}: the secondary's guest ran",
            k + 1
        );
    }
    assert_eq!(
        g.state_digest_hex(),
        cb.after_running[CHECKPOINTS as usize - 1]
    );

    // The back channel in §5's order, a non-empty dirty list after each suspend.
    let msgs = back_messages(&back);
    let mut expected = Vec::new();
    for k in 0..CHECKPOINTS {
        expected.extend(["S2".to_string(), "S3".to_string()]);
        if k + 1 < CHECKPOINTS {
            expected.push("S1".into());
            expected.push("D".into());
        }
    }
    let shape: Vec<String> = msgs
        .iter()
        .map(|m| {
            if m.starts_with('D') {
                "D".into()
            } else {
                m.clone()
            }
        })
        .collect();
    assert_eq!(shape, expected);
    let dirty: Vec<u64> = msgs
        .iter()
        .filter_map(|m| m.strip_prefix('D').map(|n| n.parse().unwrap()))
        .collect();
    assert_eq!(dirty.len(), CHECKPOINTS as usize - 1);
    assert!(dirty.iter().all(|&n| n > 0), "dirty pfn counts {dirty:?}");

    // The forward stream: NEW after every CHECKPOINT_END but the last.
    let recs = records(&fwd);
    let names: Vec<&str> = recs
        .iter()
        .filter(|r| r.0 == Layer::Libxl)
        .map(|r| r.1.as_str())
        .collect();
    let news = names.iter().filter(|n| **n == "CHECKPOINT_STATE").count();
    assert_eq!(news, CHECKPOINTS as usize - 1);
    for w in names.windows(2) {
        if w[1] == "CHECKPOINT_STATE" {
            assert_eq!(w[0], "CHECKPOINT_END");
        }
    }
}

#[test]
fn without_the_secondarys_dirty_pages_the_checkpoints_would_differ() {
    // The forward stream of a run whose secondary dirtied pages, replayed into a secondary
    // that dirties none: its checkpoints match, since the primary resent those pages. The
    // same stream replayed into a secondary with another workload does not: the pages that
    // one dirties were never reported, so they are not resent.
    let (primary, fwd, _, (r, cb)) = colo_run(22, 3_000);
    r.unwrap();
    assert_eq!(cb.applied, primary);
    let (r, quiet) = replay(&fwd, 0);
    r.unwrap();
    assert_eq!(quiet.applied, primary);
    let (r, other) = replay(&fwd, 9_000);
    r.unwrap();
    assert_eq!(other.applied[0], primary[0]);
    for (k, (o, p)) in other.applied.iter().zip(&primary).enumerate().skip(1) {
        assert_ne!(o, p, "checkpoint {}", k + 1);
    }
}

// ---------------------------------------------------------------------------------------------
// The forward stream

#[test]
fn the_forward_stream_verifies_strictly_only_as_colo() {
    let (_, fwd, _, (r, _)) = colo_run(23, 2_000);
    r.unwrap();
    let report = verify_colo(&fwd, true);
    assert!(report.valid, "{:?}", report.error);
    assert_eq!(report.checkpoints, CHECKPOINTS as u64);
    assert!(!report.end);
    // The only note: the stream stops without END, a receiver fails over.
    let rules: Vec<&str> = report.warnings.iter().map(|w| w.rule.as_str()).collect();
    assert_eq!(rules, ["checkpoint.incomplete"]);
    // Read as Remus, NEW looks like a libxc X86_PV_VCPU_EXTENDED: refused.
    let report = verify_colo(&fwd, false);
    assert!(!report.valid);
    // Restored as Remus the same way.
    let mut reader = Reader::from_slice(
        &fwd,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let remus = restore_stream(
        secondary_make(0),
        &mut SecondaryCb::default(),
        &mut reader,
        RestoreOptions {
            stream_type: StreamType::Remus,
            ..colo_opts()
        },
        None,
    );
    assert!(remus.is_err());
}

#[test]
fn a_cut_forward_stream_fails_over_to_the_last_complete_checkpoint() {
    let rate = 3_000;
    let (primary, fwd, _, (r, _)) = colo_run(24, rate);
    r.unwrap();
    let recs = records(&fwd);
    let ends: Vec<u64> = recs
        .iter()
        .filter(|r| r.1 == "CHECKPOINT_END")
        .map(|r| r.3)
        .collect();
    assert_eq!(ends.len(), CHECKPOINTS as usize);
    let first_cp = recs.iter().find(|r| r.1 == "CHECKPOINT").unwrap().2;
    // Every record boundary from the first CHECKPOINT on, points inside each record there,
    // and a few before it.
    let mut cuts: Vec<u64> = vec![0, 10, first_cp / 2];
    for r in recs.iter().filter(|r| r.3 >= first_cp) {
        cuts.extend([r.2, r.3, r.2 + 4, r.2 + 12]);
        if r.3 - r.2 > 32 {
            cuts.push((r.2 + r.3) / 2 + 3);
        }
    }
    cuts.sort();
    cuts.dedup();
    let mut targets = std::collections::BTreeSet::new();
    let mut tried = 0;
    for cut in cuts {
        let cut = cut.min(fwd.len() as u64);
        tried += 1;
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        let what = format!("cut at {cut:#x} of {:#x}", fwd.len());
        let (r, cb) = replay(&fwd[..cut as usize], rate);
        match r {
            Ok((g, res)) => {
                assert!(complete > 0, "{what}: restored without a checkpoint");
                assert!(res.failed_over, "{what}");
                assert_eq!(res.checkpoints as usize, complete, "{what}");
                assert_eq!(cb.applied.len(), complete, "{what}");
                assert_eq!(cb.applied[..], primary[..complete], "{what}");
                // Every checkpoint applied was resumed; at failover nothing is re-applied,
                // the guest is as it ran (or suspended) after the last one.
                assert_eq!(cb.resumed as usize, complete, "{what}");
                let last = &cb.after_running;
                if let Some(ran) = last.get(complete - 1) {
                    assert_eq!(&g.state_digest_hex(), ran, "{what}");
                }
                targets.insert(complete);
            }
            Err(e) => assert_eq!(complete, 0, "{what}: {e}"),
        }
    }
    assert!(tried > 40, "{tried} cuts");
    eprintln!("{tried} cuts of a {} octet forward stream", fwd.len());
    assert_eq!(
        targets.len(),
        CHECKPOINTS as usize,
        "every checkpoint was a target"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile CHECKPOINT_STATE records

/// The offset just after the first CHECKPOINT_END, where the first NEW sits.
fn first_new(fwd: &[u8]) -> (u64, u64) {
    let recs = records(fwd);
    let i = recs.iter().position(|r| r.1 == "CHECKPOINT_STATE").unwrap();
    assert_eq!(recs[i - 1].1, "CHECKPOINT_END");
    (recs[i].2, recs[i].3)
}

fn state_record(id: u32) -> Vec<u8> {
    let mut b = Vec::new();
    StreamWriter::new(&mut b)
        .libxl(&libxl::Record::CheckpointState(libxl::CheckpointState {
            control_id: libxl::CheckpointStateId(id),
            padding: 0,
        }))
        .unwrap();
    b
}

fn stream_error(report: &Report) -> &StreamError {
    report.error.as_ref().expect("the stream is refused")
}

#[test]
fn hostile_checkpoint_state_records_are_refused_with_where_and_which_rule() {
    let (_, fwd, _, (r, _)) = colo_run(25, 1_000);
    r.unwrap();
    let (at, end) = first_new(&fwd);
    let (at_u, end_u) = (at as usize, end as usize);

    // A SUSPENDED on the forward stream where NEW belongs.
    let mut bad = fwd.clone();
    bad[at_u + 8..at_u + 12].copy_from_slice(&1u32.to_le_bytes());
    let report = verify_colo(&bad, true);
    let e = stream_error(&report);
    assert_eq!(
        (e.rule.as_str(), e.offset),
        ("checkpoint_state.id", at),
        "{e}"
    );
    assert!(
        e.record_index.is_some() && e.to_string().contains("SECONDARY_SUSPENDED"),
        "{e}"
    );
    let (r, _) = replay(&bad, 0);
    match r.as_ref().map_err(LibxlRestoreError::stream_error) {
        Err(Some(e)) => {
            assert_eq!(
                (e.rule.as_str(), e.offset),
                ("checkpoint_state.id", at),
                "{e}"
            )
        }
        other => panic!("a wrong id is refused: {:?}", other.map(|r| &r.1)),
    }

    // Another record where NEW belongs: the reader says which rule and what it found.
    let mut bad = fwd.clone();
    bad[at_u..at_u + 4].copy_from_slice(&libxl::CheckpointEnd::TYPE.to_le_bytes());
    let report = verify_colo(&bad, true);
    let e = stream_error(&report);
    assert_eq!(
        (e.rule.as_str(), e.offset),
        ("colo.checkpoint_state", at),
        "{e}"
    );
    assert!(e.to_string().contains("CHECKPOINT_END"), "{e}");
    let (r, _) = replay(&bad, 0);
    assert!(r.unwrap_err().to_string().contains("colo.checkpoint_state"));

    // NEW missing altogether: libxc records right after CHECKPOINT_END.
    let bad = [&fwd[..at_u], &fwd[end_u..]].concat();
    let report = verify_colo(&bad, true);
    let e = stream_error(&report);
    assert_eq!(
        (e.rule.as_str(), e.offset),
        ("colo.checkpoint_state", at),
        "{e}"
    );

    // Truncated inside NEW: the header, then half the body. A secondary fails over to the
    // checkpoint before it, and the verifier agrees (one verdict): a checkpointed stream may
    // stop anywhere, inside a record too; it notes where.
    for cut in [at_u + 4, at_u + 12] {
        let report = verify_colo(&fwd[..cut], true);
        assert!(report.valid, "{:?}", report.error);
        let note = report
            .warnings
            .iter()
            .find(|w| w.rule == "checkpoint.incomplete")
            .expect("a note on the incomplete checkpoint");
        assert_eq!(
            note.offset,
            if cut == at_u + 4 { at } else { at + 8 },
            "{note}"
        );
        let (r, cb) = replay(&fwd[..cut], 0);
        let (_, res) = r.unwrap();
        assert!(res.failed_over);
        assert_eq!(cb.applied.len(), 1);
    }

    // A short CHECKPOINT_STATE body (4 octets).
    let mut short = fwd[..at_u].to_vec();
    short.extend_from_slice(&libxl::CheckpointState::TYPE.to_le_bytes());
    short.extend_from_slice(&4u32.to_le_bytes());
    short.extend_from_slice(&[0; 8]);
    short.extend_from_slice(&fwd[end_u..]);
    let report = verify_colo(&short, true);
    let e = stream_error(&report);
    assert_eq!(
        e.record_index,
        Some(records(&fwd).iter().position(|r| r.2 == at).unwrap() as u64)
    );
    assert_eq!(e.item.as_deref(), Some("libxl CHECKPOINT_STATE"), "{e}");

    // NEW in the wrong place: a second one right after the first, and one inside a
    // checkpoint (before its CHECKPOINT_END).
    let new = state_record(0);
    let bad = [&fwd[..end_u], &new, &fwd[end_u..]].concat();
    let report = verify_colo(&bad, true);
    assert!(!report.valid);
    let cpe = records(&fwd)
        .into_iter()
        .filter(|r| r.1 == "CHECKPOINT_END")
        .nth(1)
        .unwrap()
        .2 as usize;
    let bad = [&fwd[..cpe], &new, &fwd[cpe..]].concat();
    let report = verify_colo(&bad, true);
    let e = stream_error(&report);
    assert_eq!(
        (e.rule.as_str(), e.offset),
        ("checkpoint_state.place", cpe as u64),
        "{e}"
    );
    let (r, _) = replay(&bad, 0);
    assert!(
        r.is_err(),
        "a CHECKPOINT_STATE inside a checkpoint is refused"
    );

    // Read as Remus, a libxl CHECKPOINT_STATE inside a checkpoint is refused as not COLO.
    let cpe0 = records(&fwd)
        .into_iter()
        .find(|r| r.1 == "CHECKPOINT_END")
        .unwrap()
        .2 as usize;
    let bad = [&fwd[..cpe0], &new, &fwd[cpe0..at_u]].concat();
    let report = verify_colo(&bad, false);
    let e = stream_error(&report);
    assert_eq!(
        (e.rule.as_str(), e.offset),
        ("checkpoint_state.colo", cpe0 as u64),
        "{e}"
    );
}

#[test]
fn colo_is_for_hvm_guests_and_needs_a_back_channel() {
    let dom = SimDomain::build(SimConfig {
        guest: GuestType::X86Pv,
        width: 8,
        memory_pages: 512,
        vcpus: 1,
        seed: 3,
    })
    .unwrap();
    let mut g = SimGuest::new(dom, None);
    let mut cb = PrimaryCb {
        checkpoints: 2,
        epoch: 0,
        digest_at_suspend: None,
        epoch_digests: Vec::new(),
    };
    let opts = SaveOptions {
        stream_type: StreamType::Colo,
        ..SaveOptions::default()
    };
    let mut back: &[u8] = &[];
    match save_libxl(&mut g, &mut cb, Vec::new(), opts, Some(&mut back)) {
        Err(LibxlSaveError::Invalid(m)) => assert!(m.contains("HVM"), "{m}"),
        other => panic!("a PV COLO save is refused: {:?}", other.map(|r| r.0)),
    }

    // A COLO restore without a back channel, and one of a PV stream, are refused.
    let (_, fwd, _, (r, _)) = colo_run(26, 0);
    r.unwrap();
    let mut reader = Reader::from_slice(&fwd, ReaderOptions::default());
    let e = restore_stream(
        secondary_make(0),
        &mut SecondaryCb::default(),
        &mut reader,
        colo_opts(),
        None,
    )
    .map(|r| r.1)
    .unwrap_err();
    assert!(e.to_string().contains("back channel"), "{e}");
    let mut pv = Vec::new();
    let mut g = SimGuest::new(
        SimDomain::build(SimConfig {
            guest: GuestType::X86Pv,
            width: 8,
            memory_pages: 512,
            vcpus: 1,
            seed: 3,
        })
        .unwrap(),
        None,
    );
    let remus = SaveOptions {
        stream_type: StreamType::Remus,
        ..SaveOptions::default()
    };
    let mut cb = PrimaryCb {
        checkpoints: 1,
        epoch: 0,
        digest_at_suspend: None,
        epoch_digests: Vec::new(),
    };
    (_, pv) = save_libxl(&mut g, &mut cb, pv, remus, None).unwrap();
    let (r, _) = replay(&pv, 0);
    match r {
        Err(LibxlRestoreError::Restore(e)) => match *e {
            RestoreError::Stream(s) => assert_eq!(s.rule, "colo.guests", "{s}"),
            other => panic!("{other}"),
        },
        other => panic!("a PV COLO restore is refused: {:?}", other.map(|r| r.1)),
    }
}

#[test]
fn corrupted_colo_streams_never_panic_and_errors_say_where() {
    let (primary, fwd, _, (r, _)) = colo_run(27, 1_000);
    r.unwrap();
    let recs = records(&fwd);
    // Around each NEW: the header of the CHECKPOINT_END before it, NEW itself (header and
    // body) and the header of the record after it, each octet set to a few values. The
    // verifier (as COLO) and a secondary either accept the result or refuse it with an
    // offset inside the input; an id other than NEW is always refused.
    let mut spots = Vec::new();
    let mut ids = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        if r.1 != "CHECKPOINT_STATE" {
            continue;
        }
        spots.extend(recs[i - 1].2..recs[i - 1].2 + 8);
        spots.extend(r.2..r.3);
        ids.extend(r.2 + 8..r.2 + 12);
        if let Some(next) = recs.get(i + 1) {
            spots.extend(next.2..next.2 + 8);
        }
    }
    assert_eq!(ids.len(), 4 * (CHECKPOINTS as usize - 1));
    let (mut tried, mut refused) = (0, 0);
    for &at in &spots {
        for v in [0x00u8, 0x01, 0x05, 0x80, 0xff] {
            let mut bad = fwd.clone();
            if bad[at as usize] == v {
                continue;
            }
            bad[at as usize] = v;
            tried += 1;
            let report = verify_colo(&bad, true);
            if let Some(e) = &report.error {
                assert!(e.offset <= bad.len() as u64, "{e}");
                refused += 1;
            }
            if ids.contains(&at) {
                let e = stream_error(&report);
                assert_eq!(e.rule, "checkpoint_state.id", "{e}");
            }
            let (r, cb) = replay(&bad, 0);
            match r {
                Ok((_, res)) => {
                    // Accepted (an unknown optional record is skipped, as in Xen): no more
                    // checkpoints than were sent, the first one (before every spot) intact.
                    assert!(res.checkpoints as usize <= primary.len());
                    assert_eq!(cb.applied.len(), res.checkpoints as usize);
                    assert_eq!(cb.applied.first(), primary.first());
                }
                Err(e) => assert!(!ids.contains(&at) || e.to_string().contains("NEW"), "{e}"),
            }
        }
    }
    assert!(
        tried > 300 && refused > tried / 2,
        "{refused} of {tried} refused"
    );
}
