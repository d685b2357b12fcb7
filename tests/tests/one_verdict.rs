//! One verdict (issue 13): `verify --lenient` is the floor of what every consumer accepts.
//! A restore refuses every stream the verifier refuses, with the same rule at the same
//! offset, because it reads through a reader that runs the verifier's checks on each item
//! (`verify::check_as_read`); the same holds at strict level for a strict reader.
//!
//! The streams that restored although `verify` refused them are regression cases here; then
//! a property over mutated valid streams (every octet of every header and of the start of
//! every body changed, random octets changed, each record dropped): whenever the verifier
//! refuses, the restore into a simulated domain refuses with its rule and offset.
//!
//! Run in release mode: `cargo test -p xenmig-tests --release --test one_verdict`.

use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;
use xenmig::dm::{SimDeviceModel, SimGuest, SimGuestExt};
use xenmig::domain::{CheckpointAnswer, GuestType, RestoreCallbacks, SaveCallbacks};
use xenmig::libxl_stream::{
    restore_stream, save_libxl, save_xl, Destination, LibxlRestoreError, LibxlRestoreResult,
};
use xenmig::reader::{Framing, Item, Reader, ReaderOptions};
use xenmig::restore::{RestoreError, RestoreOptions};
use xenmig::save::{save, SaveOptions, StreamType};
use xenmig::sim::{SimConfig, SimDomain, MAX_VCPUS};
use xenmig::source::{ReadSource, Source};
use xenmig::wire::Strictness;
use xenmig::{libxc, libxl, verify_slice, StreamError, VerifyOptions};

// ---------------------------------------------------------------------------------------------
// Verify and restore, side by side

fn verdict(bytes: &[u8], strictness: Strictness) -> Option<StreamError> {
    verify_slice(
        bytes,
        VerifyOptions {
            framing: None,
            strictness,
        },
        &mut |_| {},
    )
    .error
}

struct RestoreCb;

impl RestoreCallbacks<SimGuest> for RestoreCb {
    fn checkpoint(&mut self, _g: &mut SimGuest) -> CheckpointAnswer {
        CheckpointAnswer::Success
    }
}

/// An empty destination of the stream's guest type, as `xenmig sim restore` makes it.
fn make(d: &Destination<'_>) -> Result<SimGuest, RestoreError> {
    Ok(SimGuest::for_destination(d, MAX_VCPUS, 0x5eed))
}

fn opts(strictness: Strictness) -> ReaderOptions {
    ReaderOptions {
        framing: None,
        strictness,
    }
}

/// Restores as `xenmig sim restore` does (checkpoints recognised by their records).
fn restore(
    bytes: &[u8],
    strictness: Strictness,
) -> Result<(SimGuest, LibxlRestoreResult), LibxlRestoreError> {
    restore_from(Reader::from_slice(bytes, opts(strictness)))
}

/// [`restore`] from a pipe: the page octets are read straight from the input into place.
fn restore_piped(
    bytes: &[u8],
    strictness: Strictness,
) -> Result<(SimGuest, LibxlRestoreResult), LibxlRestoreError> {
    restore_from(Reader::new(
        ReadSource::new(bytes).exact(),
        opts(strictness),
    ))
}

fn restore_from<S: Source>(
    mut r: Reader<S>,
) -> Result<(SimGuest, LibxlRestoreResult), LibxlRestoreError> {
    let opts = RestoreOptions {
        stream_type: StreamType::Remus,
        store_evtchn: 1,
        console_evtchn: 2,
    };
    restore_stream(make, &mut RestoreCb, &mut r, opts, None)
}

/// Where and by which rule a stream was refused.
fn at(e: &StreamError) -> (String, u64) {
    (e.rule.clone(), e.offset)
}

/// Rules only a restore applies, which may refuse a stream at an earlier record than the
/// verifier: the destination's room (its pfns, pages and vcpus), page tables naming pfns the
/// stream never maps, and vcpu 0's context, which the verifier only warns about (converted
/// legacy streams may lack it) but a PV guest cannot resume without.
const RESTORE_ONLY: &[&str] = &[
    "pfn.limit",
    "pages.limit",
    "vcpu_id",
    "localise",
    "vcpu0.missing",
];

/// When the verifier refuses `bytes` at `strictness`, the restore refuses it by the same rule
/// at the same offset (or earlier, by one of the [`RESTORE_ONLY`] rules). Returns whether the
/// verifier refused.
fn assert_one_verdict(bytes: &[u8], strictness: Strictness, what: &str) -> bool {
    let Some(v) = verdict(bytes, strictness) else {
        return false;
    };
    match restore(bytes, strictness) {
        Ok((_, res)) => panic!("{what}: verify refuses ({v}) but the restore succeeds: {res:?}"),
        Err(e) => match e.stream_error() {
            Some(r) if r.offset < v.offset && RESTORE_ONLY.contains(&r.rule.as_str()) => {}
            Some(r) => assert_eq!(
                at(r),
                at(&v),
                "{what}: verify refuses with `{v}`, the restore with `{r}`"
            ),
            None => panic!("{what}: verify refuses ({v}), the restore fails otherwise: {e}"),
        },
    }
    true
}

fn data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors/streams")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Valid streams

struct SaveCb {
    remus: Option<u32>,
    epoch: u32,
}

impl SaveCallbacks<SimGuest> for SaveCb {
    fn suspend(&mut self, g: &mut SimGuest) -> bool {
        g.dom.suspend();
        true
    }
    fn postcopy(&mut self, g: &mut SimGuest) -> i32 {
        self.epoch += 1;
        g.dom.resume();
        1
    }
    fn checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        match self.remus {
            Some(n) if self.epoch < n => {
                g.dom.run_for(Duration::from_millis(20));
                1
            }
            _ => 0,
        }
    }
}

fn sim_guest(kind: GuestType, seed: u64) -> SimGuest {
    let dom = SimDomain::build(SimConfig {
        guest: kind,
        width: 8,
        memory_pages: 64,
        vcpus: 2,
        seed,
    })
    .unwrap();
    let dm = (kind == GuestType::X86Hvm).then(|| SimDeviceModel::build(seed));
    SimGuest::new(dom, dm)
}

/// A simulated guest saved in `framing`; `remus` checkpoints make a checkpointed stream.
fn sim_stream(kind: GuestType, framing: Framing, remus: Option<u32>) -> Vec<u8> {
    let mut g = sim_guest(kind, 21);
    let mut cb = SaveCb { remus, epoch: 0 };
    let opts = SaveOptions {
        stream_type: if remus.is_some() {
            StreamType::Remus
        } else {
            StreamType::Plain
        },
        ..SaveOptions::default()
    };
    match framing {
        Framing::Libxc => save(&mut g, &mut cb, Vec::new(), opts, None).unwrap().1,
        Framing::Libxl => {
            save_libxl(&mut g, &mut cb, Vec::new(), opts, None)
                .unwrap()
                .1
        }
        Framing::Xl => {
            let config = br#"{"c_info":{"type":"hvm","name":"g"}}"#;
            save_xl(&mut g, &mut cb, Vec::new(), opts, Some(config), None)
                .unwrap()
                .1
        }
    }
}

/// Valid streams that restore: the two HVM libxc vectors (copied from the shared set) and
/// simulated guests in every framing, Remus ones included.
fn bases() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (
            "vector hvm v2".to_string(),
            data("v2-hvm-v2-libxc-s123.bin"),
        ),
        (
            "vector hvm v3".to_string(),
            data("v2-hvm-v3-libxc-s126.bin"),
        ),
        (
            "pv libxl".into(),
            sim_stream(GuestType::X86Pv, Framing::Libxl, None),
        ),
        (
            "hvm xl".into(),
            sim_stream(GuestType::X86Hvm, Framing::Xl, None),
        ),
        (
            "pv remus libxc".into(),
            sim_stream(GuestType::X86Pv, Framing::Libxc, Some(2)),
        ),
        (
            "hvm remus libxl".into(),
            sim_stream(GuestType::X86Hvm, Framing::Libxl, Some(2)),
        ),
    ];
    for (name, bytes) in &mut v {
        for strictness in [Strictness::Strict, Strictness::Lenient] {
            assert_eq!(verdict(bytes, strictness), None, "{name}");
            if let Err(e) = restore(bytes, strictness) {
                panic!("{name}: {e}");
            }
        }
        name.push(':');
    }
    v
}

/// (offset, length with padding) of every header and record of a stream.
fn items(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut r = Reader::from_slice(bytes, opts(Strictness::Lenient));
    let mut out = Vec::new();
    loop {
        let before = r.offset() as usize;
        let item = r.next_item().unwrap();
        let header = matches!(
            item,
            Item::XlHeader { .. }
                | Item::LibxlHeader { .. }
                | Item::ImageHeader { .. }
                | Item::DomainHeader { .. }
                | Item::Record(_)
        );
        let eof = matches!(item, Item::Eof { .. });
        if header {
            out.push((before, r.offset() as usize - before));
        }
        if eof {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The streams of the issue

/// A record of `record_type` with `body`, framed (header, body, padding).
fn framed(record_type: u32, body: &[u8]) -> Vec<u8> {
    let mut out = record_type.to_le_bytes().to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + body.len().next_multiple_of(8) - body.len(), 0);
    out
}

fn spliced(bytes: &[u8], at: usize, insert: &[u8], remove: usize) -> Vec<u8> {
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(insert);
    out.extend_from_slice(&bytes[at + remove..]);
    out
}

/// Offset of the first record named `name` (of either layer).
fn record_at(bytes: &[u8], name: &str, nth: usize) -> usize {
    let mut r = Reader::from_slice(bytes, opts(Strictness::Lenient));
    let mut seen = 0;
    loop {
        match r.next_item().unwrap() {
            Item::Record(rec) if rec.type_name() == name => {
                if seen == nth {
                    return rec.offset as usize;
                }
                seen += 1;
            }
            Item::Eof { .. } => panic!("no {name} #{nth}"),
            _ => {}
        }
    }
}

fn record_len(bytes: &[u8], at: usize) -> usize {
    let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    8 + len.next_multiple_of(8)
}

/// Refused by `verify` (at `strictness`) with `rule`, and by the restore the same way.
fn refused_by_both(bytes: &[u8], strictness: Strictness, rule: &str, what: &str) {
    let v = verdict(bytes, strictness).unwrap_or_else(|| panic!("{what}: verify accepts"));
    assert_eq!(v.rule, rule, "{what}: {v}");
    assert!(assert_one_verdict(bytes, strictness, what));
}

/// An HVM image whose pages were all dropped along with STATIC_DATA_END: nothing implies the
/// boundary, and the restore used to accept it.
fn v3_without_static_data_end_or_pages() -> Vec<u8> {
    let mut bytes = data("v2-hvm-v3-libxc-s126.bin");
    let page = record_at(&bytes, "PAGE_DATA", 0);
    bytes = spliced(&bytes, page, &[], record_len(&bytes, page));
    let sde = record_at(&bytes, "STATIC_DATA_END", 0);
    spliced(&bytes, sde, &[], record_len(&bytes, sde))
}

#[test]
fn a_v3_image_without_static_data_end_is_refused() {
    let bytes = v3_without_static_data_end_or_pages();
    refused_by_both(
        &bytes,
        Strictness::Lenient,
        "static_data_end.missing",
        "no STATIC_DATA_END, no pages",
    );
    // With pages, by the verifier's ordering rule at the first one.
    let bytes = data("v2-hvm-v3-libxc-s126.bin");
    let sde = record_at(&bytes, "STATIC_DATA_END", 0);
    let bytes = spliced(&bytes, sde, &[], record_len(&bytes, sde));
    refused_by_both(&bytes, Strictness::Lenient, "order", "no STATIC_DATA_END");
}

struct DomainCb;

impl RestoreCallbacks<SimDomain> for DomainCb {
    fn checkpoint(&mut self, _dom: &mut SimDomain) -> CheckpointAnswer {
        CheckpointAnswer::Success
    }
}

#[test]
fn the_save_helpers_reading_refuses_what_verify_refuses() {
    // The save helper's restore side: the libxc image alone, read exactly (libxl reads on
    // from the same descriptor), straight into the driver.
    let bytes = v3_without_static_data_end_or_pages();
    let v = verdict(&bytes, Strictness::Lenient).expect("refused");
    let opts = ReaderOptions {
        framing: Some(Framing::Libxc),
        strictness: Strictness::Lenient,
    };
    let mut reader = Reader::new(ReadSource::new(&bytes[..]).exact(), opts).libxc_only();
    let mut dom = SimDomain::empty_for_restore(GuestType::X86Hvm, 0, MAX_VCPUS, 1);
    let opts = RestoreOptions {
        stream_type: StreamType::Plain,
        store_evtchn: 1,
        console_evtchn: 2,
    };
    match xenmig::restore::restore(&mut dom, &mut DomainCb, &mut reader, opts) {
        Err(RestoreError::Stream(e)) => assert_eq!(at(&e), at(&v), "{e}"),
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(r) => panic!("restored: {r:?}"),
    }
}

#[test]
fn emulator_records_of_a_pv_stream_are_refused_wherever_they_are() {
    let mut body = 2u32.to_le_bytes().to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(b"a\0b\0");
    let xenstore = framed(libxl::EmulatorXenstoreData::TYPE, &body);
    let plain = sim_stream(GuestType::X86Pv, Framing::Libxl, None);
    let remus = sim_stream(GuestType::X86Pv, Framing::Libxl, Some(2));
    let cases = [
        (
            "before LIBXC_CONTEXT",
            &plain,
            record_at(&plain, "LIBXC_CONTEXT", 0),
        ),
        ("after the libxc END", &plain, record_at(&plain, "END", 1)),
        (
            "inside a checkpoint",
            &remus,
            record_at(&remus, "CHECKPOINT_END", 0),
        ),
        (
            "inside the last checkpoint",
            &remus,
            record_at(&remus, "CHECKPOINT_END", 1),
        ),
    ];
    for (what, base, at) in cases {
        let bytes = spliced(base, at, &xenstore, 0);
        for strictness in [Strictness::Lenient, Strictness::Strict] {
            refused_by_both(&bytes, strictness, "guests", what);
        }
    }
}

#[test]
fn strict_rules_hold_for_a_strict_restore() {
    // X86_CPUID_POLICY in a version 2 image (`since_version`).
    let bytes = data("v2-hvm-v2-libxc-s123.bin");
    let policy = framed(libxc::X86CpuidPolicy::TYPE, &[0; 24]);
    let bytes = spliced(&bytes, 40, &policy, 0);
    refused_by_both(
        &bytes,
        Strictness::Strict,
        "since_version",
        "CPUID policy in v2",
    );
    assert!(verdict(&bytes, Strictness::Lenient).is_none());

    // An emulator id no device model has (`emulator_id.known`).
    let bytes = sim_stream(GuestType::X86Hvm, Framing::Libxl, None);
    let at = record_at(&bytes, "EMULATOR_CONTEXT", 0);
    let mut bad = bytes.clone();
    bad[at + 8..at + 12].copy_from_slice(&7u32.to_le_bytes());
    refused_by_both(
        &bad,
        Strictness::Strict,
        "emulator_id.known",
        "emulator id 7",
    );
    assert!(verdict(&bad, Strictness::Lenient).is_none());
}

#[test]
fn an_xl_config_shorter_than_its_length_is_refused_by_verify_too() {
    let bytes = sim_stream(GuestType::X86Hvm, Framing::Xl, None);
    // The config length claims one octet more than the optional data holds.
    let mut bad = bytes.clone();
    let config_len = u32::from_le_bytes(bad[48..52].try_into().unwrap());
    bad[48..52].copy_from_slice(&(config_len + 1).to_le_bytes());
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        refused_by_both(&bad, strictness, "config.length", "config length + 1");
    }
    // Without the JSON flag the optional data is read all the same, as xl reads it.
    bad[36] &= !1;
    refused_by_both(&bad, Strictness::Strict, "config.length", "no JSON flag");
}

#[test]
fn what_xenmig_writes_it_verifies_and_restores() {
    // Remus in every framing, a bare libxc image included (issue 13, 7).
    for kind in [GuestType::X86Pv, GuestType::X86Hvm] {
        for framing in [Framing::Libxc, Framing::Libxl, Framing::Xl] {
            let bytes = sim_stream(kind, framing, Some(3));
            let what = format!("{kind:?} {framing:?} remus 3");
            assert_eq!(verdict(&bytes, Strictness::Strict), None, "{what}");
            let (_, res) =
                restore(&bytes, Strictness::Strict).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(res.failed_over, "{what}");
            assert_eq!(res.libxc.checkpoints, 3, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The property

/// Octets whose change is the most likely to matter: every octet of the stream headers and
/// record headers, and the first 24 of each body.
fn interesting_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    for (at, len) in items(bytes) {
        out.extend(at..at + len.min(32));
    }
    out
}

#[test]
fn single_octet_corruptions_get_one_verdict() {
    let mut refused = 0;
    let mut cases = 0;
    for (name, base) in bases() {
        for at in interesting_offsets(&base) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bytes = base.clone();
                bytes[at] ^= flip;
                let what = format!("{name} octet {at:#x} ^ {flip:#04x}");
                cases += 1;
                if assert_one_verdict(&bytes, Strictness::Lenient, &what) {
                    refused += 1;
                }
                assert_one_verdict(&bytes, Strictness::Strict, &what);
            }
        }
    }
    // Many such changes break a rule (the rest change opaque values): not a vacuous check.
    assert!(refused * 4 > cases, "{refused} of {cases} refused");
}

#[test]
fn record_drops_get_one_verdict() {
    let mut refused = 0;
    for (name, base) in bases() {
        for (at, len) in items(&base) {
            let bytes = spliced(&base, at, &[], len);
            let what = format!("{name} without the item at {at:#x}");
            if assert_one_verdict(&bytes, Strictness::Lenient, &what) {
                refused += 1;
            }
            assert_one_verdict(&bytes, Strictness::Strict, &what);
        }
    }
    assert!(refused > 20, "{refused} drops refused");
}

/// A restore reads a PAGE_DATA's page octets straight into the domain's frames once the
/// record's head (count, entries) is checked. Cut anywhere in those octets, with or without a
/// broken entry ahead of the cut, a stream gets the verdict a whole read gives it, restored
/// from a slice and from a pipe.
#[test]
fn cuts_inside_page_data_get_one_verdict() {
    let mut cases = 0;
    for (name, base) in bases_once() {
        let at = record_at(base, "PAGE_DATA", 0);
        let body = at + 8;
        let count = u32::from_le_bytes(base[body..body + 4].try_into().unwrap()) as usize;
        let pages = body + 8 + 8 * count;
        let end = at + record_len(base, at);
        assert!(pages < end, "{name} its first PAGE_DATA carries pages");
        let cuts = [pages, pages + 1, pages + 4096, (pages + end) / 2, end - 1];
        for cut in cuts.into_iter().filter(|&c| c < end) {
            for broken_entry in [false, true] {
                let mut bytes = base[..cut].to_vec();
                if broken_entry {
                    // The first entry's type nibble: a type no stream may carry.
                    bytes[body + 8 + 7] = 0x50;
                }
                let what = format!("{name} cut at {cut:#x} (entry broken: {broken_entry})");
                cases += 1;
                for strictness in [Strictness::Lenient, Strictness::Strict] {
                    let v = verdict(&bytes, strictness)
                        .unwrap_or_else(|| panic!("{what}: verify accepts a cut stream"));
                    assert_eq!(v.rule, "truncated", "{what}: {v}");
                    assert!(assert_one_verdict(&bytes, strictness, &what));
                    match restore_piped(&bytes, strictness) {
                        Ok(_) => panic!("{what}: the piped restore accepts a cut stream"),
                        Err(e) => match e.stream_error() {
                            Some(r) => assert_eq!(at_of(r), at_of(&v), "{what}: `{v}` vs `{r}`"),
                            None => panic!("{what}: the piped restore fails otherwise: {e}"),
                        },
                    }
                }
            }
        }
    }
    assert!(cases >= 30, "{cases} cases");
}

fn at_of(e: &StreamError) -> (String, u64, String) {
    (e.rule.clone(), e.offset, e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Anywhere in the stream, any new value.
    #[test]
    fn random_octet_changes_get_one_verdict(
        which in 0usize..6,
        pos in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let (name, base) = &bases_once()[which];
        let mut bytes = base.clone();
        let at = pos.index(bytes.len());
        bytes[at] = value;
        let what = format!("{name} octet {at:#x} = {value:#04x}");
        assert_one_verdict(&bytes, Strictness::Lenient, &what);
        assert_one_verdict(&bytes, Strictness::Strict, &what);
    }
}

/// The bases, made once for the property's cases.
fn bases_once() -> &'static [(String, Vec<u8>)] {
    static BASES: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    BASES.get_or_init(bases)
}
