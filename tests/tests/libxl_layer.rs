//! The libxl stream layer and the xl save-file container (issue 6): simulated PV and HVM
//! guests round-trip in libxl and xl framing with their device model; Remus in libxl framing
//! fails over to the last complete checkpoint, emulator context included, wherever the
//! stream is cut; every stream passes the strict verifier; the real Xen images restore
//! through the layer; bad libxl records are refused; COLO control messages follow §5.
//!
//! Run in release mode: `cargo test -p xenmig-tests --release --test libxl_layer`.

use std::io::{Read, Write};
use std::time::Duration;
use xenmig::dm::{DeviceModel, SimDeviceModel, SimGuest, SimGuestExt};
use xenmig::domain::{
    CheckpointAnswer, GuestType, RestoreCallbacks, SaveCallbacks, ToolstackError,
};
use xenmig::libxl_stream::{
    colo_primary_round, colo_secondary_round, read_checkpoint_state, restore_from_read,
    restore_stream, save_libxl, save_xl, write_checkpoint_state, ColoError, ColoOps, ColoPrimary,
    ColoSecondary, Destination, LibxlRestoreError, LibxlRestoreResult, LibxlSaveStats,
};
use xenmig::reader::{Framing, Item, Reader, ReaderOptions};
use xenmig::restore::{RestoreError, RestoreOptions};
use xenmig::save::{SaveOptions, StreamType};
use xenmig::sim::{SimConfig, SimDomain, Workload, MAX_VCPUS};
use xenmig::wire::{CStrings, Strictness};
use xenmig::writer::StreamWriter;
use xenmig::xlfile::{SimDomainConfig, XlError};
use xenmig::{libxc, libxl, verify_slice, Layer, VerifyOptions};
use xenmig_tests::{read_vector, vectors_dir};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The toolstack's save callbacks: records the guest's digest (device model included) at
/// every suspend; Remus runs the guest between checkpoints.
struct SaveCb {
    remus: Option<u32>,
    epoch: u32,
    digest_at_suspend: Option<String>,
    epoch_digests: Vec<String>,
    /// The device model's context at each suspend.
    epoch_contexts: Vec<Vec<u8>>,
    colo_waits: u32,
}

impl SaveCb {
    fn plain() -> SaveCb {
        SaveCb {
            remus: None,
            epoch: 0,
            digest_at_suspend: None,
            epoch_digests: Vec::new(),
            epoch_contexts: Vec::new(),
            colo_waits: 0,
        }
    }
    fn remus(n: u32) -> SaveCb {
        SaveCb {
            remus: Some(n),
            ..SaveCb::plain()
        }
    }
}

impl SaveCallbacks<SimGuest> for SaveCb {
    fn suspend(&mut self, g: &mut SimGuest) -> bool {
        g.dom.suspend();
        self.digest_at_suspend = Some(g.state_digest_hex());
        self.epoch_contexts.push(
            g.dm.as_ref()
                .map(|d| d.context().to_vec())
                .unwrap_or_default(),
        );
        true
    }
    fn postcopy(&mut self, g: &mut SimGuest) -> i32 {
        self.epoch += 1;
        self.epoch_digests
            .push(self.digest_at_suspend.clone().unwrap_or_default());
        g.dom.resume();
        1
    }
    fn checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        match self.remus {
            Some(n) if self.epoch < n => {
                g.dom.run_for(Duration::from_millis(40));
                1
            }
            _ => 0,
        }
    }
    fn wait_checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        if self.colo_waits == 0 {
            return 0;
        }
        self.colo_waits -= 1;
        g.dom.run_for(Duration::from_millis(40));
        1
    }
}

struct RestoreCb {
    checkpoints: u32,
}

impl RestoreCallbacks<SimGuest> for RestoreCb {
    fn checkpoint(&mut self, _g: &mut SimGuest) -> CheckpointAnswer {
        self.checkpoints += 1;
        CheckpointAnswer::Success
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Frame {
    Libxl,
    Xl,
}

fn guest(kind: GuestType, width: u8, seed: u64, pages: u64) -> SimGuest {
    let dom = SimDomain::build(SimConfig {
        guest: kind,
        width,
        memory_pages: pages,
        vcpus: 2,
        seed,
    })
    .unwrap();
    let dm = (kind == GuestType::X86Hvm).then(|| SimDeviceModel::build(seed));
    SimGuest::new(dom, dm)
}

fn config_of(g: &SimGuest, pages: u64, seed: u64) -> String {
    SimDomainConfig {
        name: "test-guest".into(),
        guest: g.dom.guest(),
        memory: pages * 4096,
        vcpus: 2,
        seed: Some(seed),
        width: None,
    }
    .to_json()
}

fn save_framed(
    g: &mut SimGuest,
    cb: &mut SaveCb,
    frame: Frame,
    opts: SaveOptions,
    config: &str,
) -> (LibxlSaveStats, Vec<u8>) {
    match frame {
        Frame::Libxl => save_libxl(g, cb, Vec::new(), opts, None).unwrap(),
        Frame::Xl => save_xl(g, cb, Vec::new(), opts, Some(config.as_bytes()), None).unwrap(),
    }
}

fn make(d: &Destination<'_>) -> Result<SimGuest, RestoreError> {
    let mut vcpus = MAX_VCPUS;
    if let Some(c) = d.config {
        let c = SimDomainConfig::from_json(c).expect("the xl config parses");
        assert_eq!(c.guest, d.guest, "the config names the stream's guest type");
        vcpus = c.vcpus;
    }
    Ok(SimGuest::for_destination(d, vcpus, 0x5eed))
}

fn restore_bytes(
    bytes: &[u8],
    stream_type: StreamType,
) -> Result<(SimGuest, LibxlRestoreResult), LibxlRestoreError> {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let mut cb = RestoreCb { checkpoints: 0 };
    restore_stream(
        make,
        &mut cb,
        &mut r,
        RestoreOptions {
            stream_type,
            store_evtchn: 1,
            console_evtchn: 2,
        },
        None,
    )
}

fn assert_strict(bytes: &[u8], framing: Framing, what: &str) -> xenmig::Report {
    let r = verify_slice(
        bytes,
        VerifyOptions {
            framing: Some(framing),
            strictness: Strictness::Strict,
        },
        &mut |_| {},
    );
    // A Remus stream stops without END: the verifier notes where a receiver fails over.
    let warnings: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| w.rule != "checkpoint.incomplete")
        .collect();
    assert!(
        r.valid && r.error.is_none() && warnings.is_empty(),
        "{what}: strict verification: {:?} {:?}",
        r.error,
        warnings
    );
    r
}

/// (layer, type name, offset, end offset) of every record.
fn records(bytes: &[u8]) -> Vec<(Layer, String, u64, u64)> {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
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

fn libxl_names(bytes: &[u8]) -> Vec<String> {
    records(bytes)
        .into_iter()
        .filter(|r| r.0 == Layer::Libxl)
        .map(|r| r.1)
        .collect()
}

/// Offset just after the libxc END.
fn libxc_end(bytes: &[u8]) -> usize {
    records(bytes)
        .into_iter()
        .find(|r| r.0 == Layer::Libxc && r.1 == "END")
        .map(|r| r.3 as usize)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn pv_and_hvm_round_trip_in_libxl_and_xl_framing() {
    let kinds = [
        (GuestType::X86Pv, 8u8, 11u64),
        (GuestType::X86Pv, 4, 12),
        (GuestType::X86Hvm, 8, 13), // one physmap region
        (GuestType::X86Hvm, 8, 15), // no physmap keys
        (GuestType::X86Hvm, 8, 17), // two regions
    ];
    for (kind, width, seed) in kinds {
        for frame in [Frame::Libxl, Frame::Xl] {
            let what = format!("{kind:?} width {width} seed {seed} {frame:?}");
            let pages = 3000;
            let mut g = guest(kind, width, seed, pages);
            let config = config_of(&g, pages, seed);
            let mut cb = SaveCb::plain();
            let (stats, bytes) =
                save_framed(&mut g, &mut cb, frame, SaveOptions::default(), &config);
            assert_eq!(stats.bytes, bytes.len() as u64, "{what}");
            let framing = match frame {
                Frame::Libxl => Framing::Libxl,
                Frame::Xl => Framing::Xl,
            };
            let report = assert_strict(&bytes, framing, &what);
            assert!(report.end, "{what}");
            let src_digest = cb.digest_at_suspend.clone().unwrap();
            assert_eq!(src_digest, g.state_digest_hex(), "{what}");

            // The libxl layout of §5.
            let names = libxl_names(&bytes);
            let expected: Vec<&str> = match (kind, seed % 3) {
                (GuestType::X86Pv, _) => vec!["LIBXC_CONTEXT", "END"],
                (_, 0) => vec!["LIBXC_CONTEXT", "EMULATOR_CONTEXT", "END"],
                _ => vec![
                    "LIBXC_CONTEXT",
                    "EMULATOR_XENSTORE_DATA",
                    "EMULATOR_CONTEXT",
                    "END",
                ],
            };
            assert_eq!(names, expected, "{what}");
            assert_eq!(stats.libxl_records, expected.len() as u64, "{what}");

            let (back, res) =
                restore_bytes(&bytes, StreamType::Plain).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(res.end && !res.failed_over, "{what}");
            assert_eq!(res.framing, Some(framing));
            assert_eq!(res.xl.is_some(), frame == Frame::Xl, "{what}");
            assert_eq!(back.state_digest_hex(), src_digest, "{what}");
            if kind == GuestType::X86Hvm {
                // The device model is part of the digest and arrived whole.
                let (sdm, ddm) = (g.dm.as_ref().unwrap(), back.dm.as_ref().unwrap());
                assert_eq!(sdm.state_digest(), ddm.state_digest(), "{what}");
                assert_eq!(sdm.xenstore(), ddm.xenstore(), "{what}");
                assert_ne!(
                    back.state_digest(),
                    back.dom.state_digest(),
                    "{what}: the HVM digest covers the device model"
                );
                assert_eq!(res.emulator_records, expected.len() as u64 - 2, "{what}");
            } else {
                assert!(back.dm.is_none());
                assert_eq!(back.state_digest(), back.dom.state_digest());
            }

            // The same through a `Read` that gives the input back after the stream.
            let mut with_tail = bytes.clone();
            with_tail.extend_from_slice(&xenmig::xl::XL_MIGRATE_PERMISSION_TO_GO);
            for exact in [false, true] {
                let mut cb = RestoreCb { checkpoints: 0 };
                let (r, mut rest_reader, buffered) = restore_from_read(
                    make,
                    &mut cb,
                    &with_tail[..],
                    RestoreOptions::default(),
                    exact,
                    None,
                );
                let (back, _) = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(back.state_digest_hex(), src_digest, "{what}");
                let mut tail = buffered;
                rest_reader.read_to_end(&mut tail).unwrap();
                assert_eq!(tail, xenmig::xl::XL_MIGRATE_PERMISSION_TO_GO, "{what}");
                if exact {
                    assert_eq!(rest_reader.len(), 0);
                }
            }
        }
    }
}

#[test]
fn a_restored_hvm_guest_saves_again_with_the_same_device_model() {
    let mut g = guest(GuestType::X86Hvm, 8, 4, 2048);
    let (_, first) = save_libxl(
        &mut g,
        &mut SaveCb::plain(),
        Vec::new(),
        SaveOptions::default(),
        None,
    )
    .unwrap();
    let (mut back, _) = restore_bytes(&first, StreamType::Plain).unwrap();
    let mut cb = SaveCb::plain();
    let (_, second) =
        save_libxl(&mut back, &mut cb, Vec::new(), SaveOptions::default(), None).unwrap();
    assert_strict(&second, Framing::Libxl, "re-save");
    let (again, _) = restore_bytes(&second, StreamType::Plain).unwrap();
    assert_eq!(again.state_digest(), g.state_digest());
    assert_eq!(
        again.dm.as_ref().unwrap().context(),
        g.dm.as_ref().unwrap().context()
    );
}

#[test]
fn live_hvm_save_in_xl_framing() {
    let pages = 4096;
    let mut g = guest(GuestType::X86Hvm, 8, 7, pages);
    g.dom.set_workload(Some(Workload {
        rate_pages_per_sec: 20_000,
        seed: 3,
    }));
    let config = config_of(&g, pages, 7);
    let mut cb = SaveCb::plain();
    let opts = SaveOptions {
        live: true,
        ..SaveOptions::default()
    };
    let (stats, bytes) = save_framed(&mut g, &mut cb, Frame::Xl, opts, &config);
    assert!(stats.libxc.passes.len() > 1);
    assert_strict(&bytes, Framing::Xl, "live xl");
    let (back, _) = restore_bytes(&bytes, StreamType::Plain).unwrap();
    assert_eq!(back.state_digest_hex(), cb.digest_at_suspend.unwrap());
}

// ---------------------------------------------------------------------------------------------
// Remus

fn remus_stream(kind: GuestType, seed: u64, epochs: u32, frame: Frame) -> (Vec<u8>, SaveCb) {
    let pages = 2048;
    let mut g = guest(kind, 8, seed, pages);
    g.dom.set_workload(Some(Workload {
        rate_pages_per_sec: 5_000,
        seed: seed ^ 1,
    }));
    let config = config_of(&g, pages, seed);
    let mut cb = SaveCb::remus(epochs);
    let opts = SaveOptions {
        stream_type: StreamType::Remus,
        ..SaveOptions::default()
    };
    let (stats, bytes) = save_framed(&mut g, &mut cb, frame, opts, &config);
    assert_eq!(stats.checkpoints, epochs);
    assert_eq!(stats.libxc.checkpoints, epochs);
    assert_eq!(cb.epoch_digests.len(), epochs as usize);
    (bytes, cb)
}

#[test]
fn remus_in_libxl_framing_has_xens_layout_and_fails_over() {
    let epochs = 4;
    let (bytes, cb) = remus_stream(GuestType::X86Hvm, 5, epochs, Frame::Libxl);
    let report = assert_strict(&bytes, Framing::Libxl, "remus");
    assert_eq!(report.checkpoints, epochs as u64);
    assert!(!report.end);

    // As in the real capture: after each libxc CHECKPOINT the libxl records of the checkpoint
    // (here with physmap keys: seed 5 has two regions), then CHECKPOINT_END, then libxc
    // records again without new headers; no END anywhere.
    let recs = records(&bytes);
    let mut checkpoints = 0;
    for (i, r) in recs.iter().enumerate() {
        if r.0 == Layer::Libxc && r.1 == "CHECKPOINT" {
            checkpoints += 1;
            let next: Vec<&str> = recs[i + 1..i + 4].iter().map(|r| r.1.as_str()).collect();
            assert_eq!(
                next,
                [
                    "EMULATOR_XENSTORE_DATA",
                    "EMULATOR_CONTEXT",
                    "CHECKPOINT_END"
                ]
            );
            assert!(recs[i + 1..i + 4].iter().all(|r| r.0 == Layer::Libxl));
            if let Some(after) = recs.get(i + 4) {
                assert_eq!(after.0, Layer::Libxc);
            }
        }
        assert!(r.1 != "END", "a Remus stream has no END");
    }
    assert_eq!(checkpoints, epochs);
    // Each checkpoint carries a different device-model context.
    let contexts: std::collections::HashSet<_> = cb.epoch_contexts.iter().collect();
    assert_eq!(contexts.len(), epochs as usize);

    let (back, res) = restore_bytes(&bytes, StreamType::Remus).unwrap();
    assert!(res.failed_over && !res.end);
    assert_eq!(res.checkpoints, epochs);
    assert_eq!(res.libxc.checkpoints, epochs);
    assert_eq!(
        back.state_digest_hex(),
        cb.epoch_digests[epochs as usize - 1]
    );
    assert_eq!(
        back.dm.as_ref().unwrap().context(),
        cb.epoch_contexts[epochs as usize - 1]
    );
}

#[test]
fn remus_cut_anywhere_restores_the_last_complete_checkpoint() {
    let epochs = 3;
    for (kind, frame) in [
        (GuestType::X86Hvm, Frame::Libxl),
        (GuestType::X86Pv, Frame::Libxl),
        (GuestType::X86Hvm, Frame::Xl),
    ] {
        let (bytes, cb) = remus_stream(kind, 8, epochs, frame);
        let recs = records(&bytes);
        // Ends of the CHECKPOINT_END records: a cut at or after one completes its checkpoint.
        let ends: Vec<u64> = recs
            .iter()
            .filter(|r| r.1 == "CHECKPOINT_END")
            .map(|r| r.3)
            .collect();
        assert_eq!(ends.len(), epochs as usize);
        let first_cp = recs.iter().find(|r| r.1 == "CHECKPOINT").unwrap().2;
        // Every record boundary from the first CHECKPOINT on, a point inside every record
        // there, and a few before it.
        let mut cuts: Vec<u64> = Vec::new();
        for r in &recs {
            if r.3 >= first_cp {
                cuts.push(r.2);
                cuts.push(r.3);
                cuts.push(r.2 + 4);
                if r.3 - r.2 > 16 {
                    cuts.push((r.2 + r.3) / 2 + 3);
                }
            }
        }
        cuts.extend([0, 10, first_cp / 2]);
        cuts.sort();
        cuts.dedup();
        let mut seen = std::collections::BTreeSet::new();
        for cut in cuts {
            let cut = cut.min(bytes.len() as u64);
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            let what = format!("{kind:?} {frame:?} cut at {cut:#x}");
            match restore_bytes(&bytes[..cut as usize], StreamType::Remus) {
                Ok((g, res)) => {
                    assert!(
                        complete > 0,
                        "{what}: restored without a complete checkpoint"
                    );
                    assert!(res.failed_over, "{what}");
                    assert_eq!(res.checkpoints as usize, complete, "{what}");
                    assert_eq!(
                        g.state_digest_hex(),
                        cb.epoch_digests[complete - 1],
                        "{what}"
                    );
                    if kind == GuestType::X86Hvm {
                        assert_eq!(
                            g.dm.as_ref().unwrap().context(),
                            cb.epoch_contexts[complete - 1],
                            "{what}"
                        );
                    }
                    seen.insert(complete);
                }
                Err(e) => assert_eq!(complete, 0, "{what}: {e}"),
            }
        }
        assert_eq!(
            seen.len(),
            epochs as usize,
            "{kind:?}: every checkpoint was a failover target"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Real images

fn real(name: &str) -> Vec<u8> {
    read_vector(&vectors_dir().join("real").join(name))
}

/// (offset, body) of every EMULATOR_CONTEXT.
fn emulator_contexts(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut r = Reader::from_slice(bytes, ReaderOptions::default());
    let mut out = Vec::new();
    loop {
        match r.next_item().unwrap() {
            Item::Record(rec)
                if rec.layer == Layer::Libxl && rec.record_type == libxl::EmulatorContext::TYPE =>
            {
                out.push(rec.body[8..].to_vec())
            }
            Item::Eof { .. } => return out,
            _ => {}
        }
    }
}

#[test]
fn real_images_restore_through_the_libxl_layer() {
    // PV: END only after the image.
    let pv = real("pv64.xl.zst");
    let (g, res) = restore_bytes(&pv, StreamType::Plain).unwrap();
    assert!(res.end && !res.failed_over);
    assert_eq!(res.libxl_records, 2);
    assert_eq!(res.emulator_records, 0);
    assert!(g.dm.is_none());
    let cfg = SimDomainConfig::from_json(res.xl.unwrap().config.as_ref().unwrap()).unwrap();
    assert_eq!(
        (cfg.guest, cfg.vcpus, cfg.memory),
        (GuestType::X86Pv, 2, 128 << 20)
    );

    // HVM: QEMU's context reaches the device model.
    let hvm = real("hvm64.xl.zst");
    let contexts = emulator_contexts(&hvm);
    assert_eq!(contexts.len(), 1);
    let (g, res) = restore_bytes(&hvm, StreamType::Plain).unwrap();
    assert!(res.end);
    assert_eq!(res.libxl_records, 3);
    assert_eq!(res.emulator_records, 1);
    let dm = g.dm.as_ref().unwrap();
    assert_eq!(dm.context(), contexts[0].as_slice());
    assert_eq!(&dm.context()[..4], b"QEVM");
    assert_eq!(dm.generation(), None, "a real QEMU context is kept opaque");
    let cfg = SimDomainConfig::from_json(res.xl.unwrap().config.as_ref().unwrap()).unwrap();
    assert_eq!(cfg.guest, GuestType::X86Hvm);
    assert_eq!(cfg.name, "hvm64");

    // Remus: three complete checkpoints, the fourth discarded; the device model holds the
    // third checkpoint's context.
    let remus = real("hvm64.remus-stream-unterminated.zst");
    let contexts = emulator_contexts(&remus);
    assert_eq!(contexts.len(), 3);
    let (g, res) = restore_bytes(&remus, StreamType::Remus).unwrap();
    assert!(res.failed_over && !res.end);
    assert_eq!(res.checkpoints, 3);
    assert_eq!(res.emulator_records, 3);
    assert_eq!(g.dm.as_ref().unwrap().context(), contexts[2].as_slice());
}

// ---------------------------------------------------------------------------------------------
// Rejections

fn plain_stream(kind: GuestType) -> Vec<u8> {
    let mut g = guest(kind, 8, 1, 1024);
    save_libxl(
        &mut g,
        &mut SaveCb::plain(),
        Vec::new(),
        SaveOptions::default(),
        None,
    )
    .unwrap()
    .1
}

/// `bytes` up to the libxc END, then `tail` libxl records written by `f`.
fn with_tail(bytes: &[u8], f: impl FnOnce(&mut StreamWriter<&mut Vec<u8>>)) -> Vec<u8> {
    let mut out = bytes[..libxc_end(bytes)].to_vec();
    let mut w = StreamWriter::new(&mut out);
    f(&mut w);
    out
}

fn end(w: &mut StreamWriter<&mut Vec<u8>>) {
    w.libxl(&libxl::Record::End(libxl::End {})).unwrap();
}

fn context(w: &mut StreamWriter<&mut Vec<u8>>) {
    w.libxl(&libxl::Record::EmulatorContext(libxl::EmulatorContext {
        emulator_id: libxl::EmulatorId::QEMU_UPSTREAM,
        index: 0,
        context: b"QEVM\0\0\0\x03abc",
    }))
    .unwrap();
}

fn xenstore(w: &mut StreamWriter<&mut Vec<u8>>, key: &[u8]) {
    let entries = CStrings::encode_pairs([(key, &b"1000"[..])]);
    w.libxl(&libxl::Record::EmulatorXenstoreData(
        libxl::EmulatorXenstoreData {
            emulator_id: libxl::EmulatorId::QEMU_UPSTREAM,
            index: 0,
            entries: CStrings::from_bytes(&entries),
        },
    ))
    .unwrap();
}

fn rejected(bytes: &[u8], rule: &str, what: &str) {
    match restore_bytes(bytes, StreamType::Plain) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => match e.stream_error() {
            Some(e) => assert_eq!(e.rule, rule, "{what}: {e}"),
            None => panic!("{what}: wrong error {e}"),
        },
    }
}

#[test]
fn bad_libxl_records_are_refused() {
    let pv = plain_stream(GuestType::X86Pv);
    let hvm = plain_stream(GuestType::X86Hvm);
    // The unmodified tails restore.
    restore_bytes(&with_tail(&pv, end), StreamType::Plain).unwrap();
    restore_bytes(
        &with_tail(&hvm, |w| {
            xenstore(w, b"physmap/f0000000/name");
            context(w);
            end(w)
        }),
        StreamType::Plain,
    )
    .unwrap();

    rejected(
        &with_tail(&pv, |w| {
            context(w);
            end(w)
        }),
        "guests",
        "EMULATOR_CONTEXT in a PV stream",
    );
    rejected(
        &with_tail(&pv, |w| {
            xenstore(w, b"physmap/1/name");
            end(w)
        }),
        "guests",
        "EMULATOR_XENSTORE_DATA in a PV stream",
    );
    rejected(
        &with_tail(&hvm, |w| {
            xenstore(w, b"/local/domain/0/device-model/1/physmap");
            end(w)
        }),
        "entries.key",
        "absolute xenstore key",
    );
    rejected(
        &with_tail(&hvm, |w| {
            let entries = b"\0value\0";
            w.libxl(&libxl::Record::EmulatorXenstoreData(
                libxl::EmulatorXenstoreData {
                    emulator_id: libxl::EmulatorId::QEMU_UPSTREAM,
                    index: 0,
                    entries: CStrings::from_bytes(entries),
                },
            ))
            .unwrap();
            end(w)
        }),
        "entries.key",
        "empty xenstore key",
    );
    rejected(
        &with_tail(&hvm, |w| {
            w.libxl(&libxl::Record::Unknown {
                record_type: libxl::EmulatorContext::TYPE,
                body: b"\x02\0\0\0",
            })
            .unwrap();
            end(w)
        }),
        "length",
        "EMULATOR_CONTEXT shorter than 8",
    );
    rejected(
        &with_tail(&hvm, |w| {
            w.libxl(&libxl::Record::CheckpointEnd(libxl::CheckpointEnd {}))
                .unwrap();
            end(w)
        }),
        // The verifier's table rule comes first: CHECKPOINT_END is checkpoint-only.
        "checkpointed_only",
        "CHECKPOINT_END outside a checkpoint",
    );
    rejected(
        &with_tail(&hvm, |w| {
            w.libxl(&libxl::Record::CheckpointState(libxl::CheckpointState {
                control_id: libxl::CheckpointStateId::NEW,
                padding: 0,
            }))
            .unwrap();
            end(w)
        }),
        "checkpointed_only",
        "CHECKPOINT_STATE not awaited",
    );
    for t in [6u32, 0x8000_0003, 0x8000_0000] {
        rejected(
            &with_tail(&pv, |w| {
                w.libxl(&libxl::Record::Unknown {
                    record_type: t,
                    body: &[0; 8],
                })
                .unwrap();
                end(w)
            }),
            "unknown_record",
            &format!("unknown libxl type {t:#x}"),
        );
    }
    rejected(
        &with_tail(&pv, |w| {
            w.libxl(&libxl::Record::LibxcContext(libxl::LibxcContext {}))
                .unwrap();
            end(w)
        }),
        "libxc_context.once",
        "a second LIBXC_CONTEXT",
    );
    // A missing END is a truncation, not a success.
    let cut = &pv[..libxc_end(&pv)];
    match restore_bytes(cut, StreamType::Plain) {
        Err(e) if e.stream_error().is_some() => {
            assert_eq!(e.stream_error().map(|e| e.rule.as_str()), Some("truncated"))
        }
        other => panic!("missing END: {:?}", other.map(|r| r.1)),
    }
    // END before any image.
    let mut w = StreamWriter::new(Vec::new());
    w.libxl_header(&libxl::LibxlHeader {
        ident: libxl::LIBXL_IDENT,
        version: 2,
        options: libxl::LibxlOptions(0),
    })
    .unwrap();
    w.libxl(&libxl::Record::End(libxl::End {})).unwrap();
    rejected(
        &w.into_inner(),
        "libxc_context.missing",
        "END before LIBXC_CONTEXT",
    );
}

#[test]
fn bad_records_inside_a_checkpoint_fail_the_restore() {
    // An emulator record inside a PV checkpoint is an error, not a failover.
    let (bytes, _) = remus_stream(GuestType::X86Pv, 3, 2, Frame::Libxl);
    let recs = records(&bytes);
    let cpe = recs.iter().find(|r| r.1 == "CHECKPOINT_END").unwrap();
    let mut bad = bytes[..cpe.2 as usize].to_vec();
    {
        let mut w = StreamWriter::new(&mut bad);
        context(&mut w);
    }
    bad.extend_from_slice(&bytes[cpe.2 as usize..]);
    match restore_bytes(&bad, StreamType::Remus) {
        Err(e) if e.stream_error().is_some() => {
            assert_eq!(
                e.stream_error().map(|e| e.rule.as_str()),
                Some("guests"),
                "{e}"
            )
        }
        other => panic!("{:?}", other.map(|r| r.1)),
    }
    // The libxl END inside a checkpoint.
    let mut bad = bytes[..cpe.2 as usize].to_vec();
    {
        let mut w = StreamWriter::new(&mut bad);
        w.libxl(&libxl::Record::End(libxl::End {})).unwrap();
    }
    bad.extend_from_slice(&bytes[cpe.2 as usize..]);
    match restore_bytes(&bad, StreamType::Remus) {
        Err(e) if e.stream_error().is_some() => {
            assert_eq!(
                e.stream_error().map(|e| e.rule.as_str()),
                Some("checkpoint.libxl"),
                "{e}"
            )
        }
        other => panic!("{:?}", other.map(|r| r.1)),
    }
}

#[test]
fn xl_headers_are_checked() {
    let mut g = guest(GuestType::X86Pv, 8, 2, 1024);
    let config = config_of(&g, 1024, 2);
    let (_, bytes) = save_framed(
        &mut g,
        &mut SaveCb::plain(),
        Frame::Xl,
        SaveOptions::default(),
        &config,
    );
    // Mandatory flags JSON | STREAMv2, the config with its NUL.
    assert_eq!(&bytes[36..40], &3u32.to_ne_bytes());
    let len = u32::from_ne_bytes(bytes[44..48].try_into().unwrap()) as usize;
    assert_eq!(len, 4 + config.len() + 1);
    assert_eq!(bytes[48 + len - 1], 0);

    let mut unknown = bytes.clone();
    unknown[36..40].copy_from_slice(&0x13u32.to_ne_bytes());
    assert!(restore_bytes(&unknown, StreamType::Plain).is_err());

    let mut legacy = bytes.clone();
    legacy[36..40].copy_from_slice(&1u32.to_ne_bytes());
    match restore_bytes(&legacy, StreamType::Plain) {
        Err(LibxlRestoreError::Xl(e)) if matches!(*e, XlError::LegacyConversionNeeded(_)) => {
            assert!(e.to_string().contains("legacy conversion is needed"), "{e}")
        }
        other => panic!("{:?}", other.map(|r| r.1)),
    }
    // A config naming another guest type than the stream: the destination refuses.
    let wrong = SimDomainConfig::from_json(config.as_bytes()).unwrap();
    assert_eq!(wrong.guest, GuestType::X86Pv);
}

// ---------------------------------------------------------------------------------------------
// COLO

#[test]
fn checkpoint_state_records_round_trip() {
    let mut buf = Vec::new();
    for id in [0u32, 1, 2, 3] {
        write_checkpoint_state(&mut buf, libxl::CheckpointStateId(id)).unwrap();
    }
    assert_eq!(buf.len(), 64);
    assert_eq!(
        &buf[..16],
        &[5, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let mut r = &buf[..];
    for id in [0u32, 1, 2, 3] {
        assert_eq!(read_checkpoint_state(&mut r).unwrap().0, id);
    }
    assert!(r.is_empty());
    // Another record type is refused.
    let mut other = Vec::new();
    StreamWriter::new(&mut other)
        .libxl(&libxl::Record::CheckpointEnd(libxl::CheckpointEnd {}))
        .unwrap();
    assert!(read_checkpoint_state(&mut &other[..]).is_err());
}

struct Ops<'a> {
    log: Vec<&'static str>,
    /// Secondary: the forward stream the checkpoint comes from; primary: where it goes.
    side: Side<'a>,
}

enum Side<'a> {
    Primary(&'a mut dyn Write),
    Secondary(&'a mut dyn Read),
}

impl ColoOps for Ops<'_> {
    fn suspend(&mut self) -> Result<(), ToolstackError> {
        self.log.push("suspend");
        Ok(())
    }
    fn checkpoint(&mut self) -> Result<(), ToolstackError> {
        self.log.push("checkpoint");
        match &mut self.side {
            Side::Primary(w) => Ok(w.write_all(b"CHECKPNT")?),
            Side::Secondary(r) => {
                let mut b = [0u8; 8];
                r.read_exact(&mut b)?;
                (&b == b"CHECKPNT")
                    .then_some(())
                    .ok_or_else(|| "not a checkpoint".into())
            }
        }
    }
    fn resume(&mut self) -> Result<(), ToolstackError> {
        self.log.push("resume");
        Ok(())
    }
}

#[test]
fn colo_primary_and_secondary_sequences_interlock() {
    use std::os::unix::net::UnixStream;
    let (mut fwd_p, mut fwd_s) = UnixStream::pair().unwrap();
    let (mut back_s, mut back_p) = UnixStream::pair().unwrap();
    let rounds = 4;
    let secondary = std::thread::spawn(move || {
        let mut s = ColoSecondary::new();
        let mut fwd_read = fwd_s.try_clone().unwrap();
        let mut ops = Ops {
            log: Vec::new(),
            side: Side::Secondary(&mut fwd_read),
        };
        let mut result = Ok(());
        for _ in 0..rounds {
            result = colo_secondary_round(&mut s, &mut ops, &mut fwd_s, &mut back_s);
            if result.is_err() {
                break;
            }
        }
        (s.checkpoints(), ops.log, result.map_err(|e| e.to_string()))
    });
    let mut p = ColoPrimary::new();
    let mut fwd_write = fwd_p.try_clone().unwrap();
    let mut ops = Ops {
        log: Vec::new(),
        side: Side::Primary(&mut fwd_write),
    };
    for _ in 0..rounds {
        colo_primary_round(&mut p, &mut ops, &mut fwd_p, &mut back_p).unwrap();
    }
    // The secondary's last round ends with SUSPENDED.
    assert_eq!(
        read_checkpoint_state(&mut back_p).unwrap(),
        libxl::CheckpointStateId::SECONDARY_SUSPENDED
    );
    let (n, slog, r) = secondary.join().unwrap();
    r.unwrap();
    assert_eq!((n, p.checkpoints()), (rounds, rounds));
    assert_eq!(&ops.log[..3], ["suspend", "checkpoint", "resume"]);
    assert_eq!(&slog[..3], ["checkpoint", "resume", "suspend"]);

    // Out of order: a primary cannot resume before the checkpoint is out.
    let mut p = ColoPrimary::new();
    assert!(matches!(
        p.resumed(&mut &[][..]),
        Err(ColoError::Sequence(_))
    ));
    // A wrong message is reported with both ids.
    let mut p = ColoPrimary::new();
    p.suspended(&mut &[][..]).unwrap();
    let mut msg = Vec::new();
    write_checkpoint_state(&mut msg, libxl::CheckpointStateId::SECONDARY_RESUMED).unwrap();
    assert!(matches!(
        p.checkpoint_sent(&mut &msg[..]),
        Err(ColoError::Unexpected { .. })
    ));
}

/// A back channel handing out one scripted message per read, as a socket would.
struct Script(Vec<Vec<u8>>);

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(first) = self.0.first_mut() else {
            return Ok(0);
        };
        let n = buf.len().min(first.len());
        buf[..n].copy_from_slice(&first[..n]);
        first.drain(..n);
        if first.is_empty() {
            self.0.remove(0);
        }
        Ok(n)
    }
}

#[test]
fn colo_primary_save_writes_new_after_each_checkpoint() {
    let state = |id| {
        let mut b = Vec::new();
        write_checkpoint_state(&mut b, libxl::CheckpointStateId(id)).unwrap();
        b
    };
    let dirty_list = {
        let mut b = Vec::new();
        StreamWriter::new(&mut b)
            .libxc(&libxc::Record::CheckpointDirtyPfnList(
                libxc::CheckpointDirtyPfnList {
                    pfns: xenmig::wire::Array::Values(&[1u64, 2, 3]),
                },
            ))
            .unwrap();
        b
    };
    let checkpoints = 3;
    // READY, RESUMED for the first; then SUSPENDED, the dirty pfns, READY, RESUMED.
    let mut msgs = vec![state(2), state(3)];
    for _ in 1..checkpoints {
        msgs.extend([state(1), dirty_list.clone(), state(2), state(3)]);
    }
    let mut back = Script(msgs);
    let mut g = guest(GuestType::X86Hvm, 8, 4, 1024);
    let mut cb = SaveCb::plain();
    cb.colo_waits = checkpoints - 1;
    let opts = SaveOptions {
        stream_type: StreamType::Colo,
        ..SaveOptions::default()
    };
    let (stats, bytes) = save_libxl(&mut g, &mut cb, Vec::new(), opts, Some(&mut back)).unwrap();
    assert_eq!(stats.checkpoints, checkpoints);
    assert!(back.0.is_empty(), "every secondary message was read");
    // CHECKPOINT_END then NEW, except after the last checkpoint.
    let cpe = [4u8, 0, 0, 0, 0, 0, 0, 0];
    let new = [5u8, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let at: Vec<usize> = bytes
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == cpe)
        .map(|(i, _)| i)
        .collect();
    let with_new = at
        .iter()
        .filter(|&&i| bytes.get(i + 8..i + 24) == Some(&new[..]))
        .count();
    assert!(at.len() >= checkpoints as usize);
    assert_eq!(with_new, checkpoints as usize - 1);
    assert!(bytes.ends_with(&cpe));

    // A secondary that answers out of turn stops the save with a COLO error.
    let mut back = Script(vec![state(3)]);
    let mut g = guest(GuestType::X86Hvm, 8, 4, 1024);
    let e = save_libxl(
        &mut g,
        &mut SaveCb::plain(),
        Vec::new(),
        opts,
        Some(&mut back),
    )
    .unwrap_err();
    assert!(e.to_string().contains("COLO"), "{e}");
    let _ = DeviceModel::save(&mut SimDeviceModel::build(1)).unwrap();
}
