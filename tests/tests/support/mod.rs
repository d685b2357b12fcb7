//! Helpers of the save/restore acceptance tests: toolstack callbacks over simulated domains,
//! save and restore in memory, the strict verifier, and a walk over a stream's libxc records.

#![allow(dead_code)]

use std::time::Duration;
use xenmig::domain::{
    CheckpointAnswer, GuestType, PrecopyDecision, PrecopyStats, RestoreCallbacks, SaveCallbacks,
};
use xenmig::policy::DowntimeTarget;
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::restore::{restore_new, RestoreError, RestoreOptions, RestoreResult};
use xenmig::save::{save, SaveOptions, SaveStats, StreamType};
use xenmig::sim::{SimConfig, SimDomain, Workload, MAX_VCPUS};
use xenmig::wire::Strictness;
use xenmig::{libxc, verify_slice, Layer, Report, VerifyOptions};

/// The toolstack side of a save, as `xl` would answer it, recording the source's digest at
/// every suspend.
pub struct SaveCb {
    /// Checkpoints to take before the primary "dies" (Remus); `None` for other saves.
    pub remus_epochs: Option<u32>,
    pub epoch: u32,
    /// Digest at the latest suspend.
    pub digest_at_suspend: Option<String>,
    /// Digest of each completed epoch (Remus).
    pub epoch_digests: Vec<String>,
    /// Guest run time between checkpoints.
    pub interval: Duration,
    pub downtime: Option<DowntimeTarget>,
    /// Every policy call and its answer, in order.
    pub decisions: Vec<(PrecopyStats, PrecopyDecision)>,
}

impl SaveCb {
    pub fn new() -> SaveCb {
        SaveCb {
            remus_epochs: None,
            epoch: 0,
            digest_at_suspend: None,
            epoch_digests: Vec::new(),
            interval: Duration::from_millis(50),
            downtime: None,
            decisions: Vec::new(),
        }
    }

    pub fn remus(epochs: u32) -> SaveCb {
        SaveCb {
            remus_epochs: Some(epochs),
            ..SaveCb::new()
        }
    }

    pub fn with_downtime(target: Duration) -> SaveCb {
        SaveCb {
            downtime: Some(DowntimeTarget::new(target)),
            ..SaveCb::new()
        }
    }
}

impl SaveCallbacks<SimDomain> for SaveCb {
    fn suspend(&mut self, dom: &mut SimDomain) -> bool {
        dom.suspend();
        self.digest_at_suspend = Some(dom.state_digest_hex());
        true
    }

    fn postcopy(&mut self, dom: &mut SimDomain) -> i32 {
        self.epoch += 1;
        self.epoch_digests
            .push(self.digest_at_suspend.clone().unwrap_or_default());
        dom.resume();
        1
    }

    fn checkpoint(&mut self, dom: &mut SimDomain) -> i32 {
        match self.remus_epochs {
            Some(n) if self.epoch < n => {
                dom.run_for(self.interval);
                1
            }
            _ => 0,
        }
    }

    fn precopy_policy(&mut self, stats: PrecopyStats) -> Option<PrecopyDecision> {
        let d = match &mut self.downtime {
            Some(p) => p.decide(stats),
            None => xenmig::save::default_policy(stats),
        };
        self.decisions.push((stats, d));
        Some(d)
    }
}

/// The toolstack side of a restore: every checkpoint is accepted.
pub struct RestoreCb {
    pub checkpoints: u32,
}

impl RestoreCallbacks<SimDomain> for RestoreCb {
    fn checkpoint(&mut self, _dom: &mut SimDomain) -> CheckpointAnswer {
        self.checkpoints += 1;
        CheckpointAnswer::Success
    }
}

/// A source domain.
pub fn build(guest: GuestType, width: u8, memory_pages: u64, vcpus: u32, seed: u64) -> SimDomain {
    SimDomain::build(SimConfig {
        guest,
        width,
        memory_pages,
        vcpus,
        seed,
    })
    .unwrap_or_else(|e| panic!("build {guest:?} width {width} {memory_pages} pages: {e}"))
}

/// Sets a dirtying workload (0: none).
pub fn dirty_at(dom: &mut SimDomain, rate: u64, seed: u64) {
    dom.set_workload((rate > 0).then_some(Workload {
        rate_pages_per_sec: rate,
        seed,
    }));
}

/// Saves into memory.
pub fn save_to_vec(
    dom: &mut SimDomain,
    cb: &mut SaveCb,
    opts: SaveOptions,
) -> (SaveStats, Vec<u8>) {
    save(dom, cb, Vec::new(), opts, None).unwrap_or_else(|e| panic!("save failed: {e}"))
}

/// Restores bytes into a fresh simulated domain created from the headers, reading as Xen does
/// (lenient) unless `strictness` says otherwise.
pub fn restore_with(
    bytes: &[u8],
    stream_type: StreamType,
    strictness: Strictness,
) -> Result<(SimDomain, RestoreResult), RestoreError> {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness,
        },
    );
    let mut cb = RestoreCb { checkpoints: 0 };
    restore_new(
        |guest: GuestType, _h: &libxc::DomainHeader| {
            Ok(SimDomain::empty_for_restore(guest, 0, MAX_VCPUS, 0x5eed))
        },
        &mut cb,
        &mut r,
        RestoreOptions {
            stream_type,
            store_evtchn: 1,
            console_evtchn: 2,
        },
    )
}

pub fn restore(
    bytes: &[u8],
    stream_type: StreamType,
) -> Result<(SimDomain, RestoreResult), RestoreError> {
    restore_with(bytes, stream_type, Strictness::Lenient)
}

/// The strict verifier's report.
pub fn verify_strict(bytes: &[u8]) -> Report {
    verify_slice(
        bytes,
        VerifyOptions {
            framing: None,
            strictness: Strictness::Strict,
        },
        &mut |_| {},
    )
}

/// Asserts that the strict verifier accepts `bytes` without errors or warnings.
pub fn assert_verifies(bytes: &[u8], what: &str) -> Report {
    let r = verify_strict(bytes);
    assert!(
        r.valid && r.error.is_none(),
        "{what}: the saver's stream fails strict verification: {:?}",
        r.error
    );
    // The only note a saver's stream may get: a checkpointed one stops without END.
    assert!(
        r.warnings.iter().all(|w| w.rule == "checkpoint.incomplete"),
        "{what}: warnings {:?}",
        r.warnings
    );
    r
}

/// One libxc record of a stream: where it starts and ends, its type, its body.
#[derive(Debug, Clone)]
pub struct Rec {
    pub offset: u64,
    /// Offset just past its padding.
    pub end: u64,
    pub record_type: u32,
    pub body: Vec<u8>,
}

/// The headers and libxc records of a stream (libxl records are left out), read leniently.
pub fn records(bytes: &[u8]) -> (Vec<u8>, Vec<Rec>) {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let mut headers = Vec::new();
    let mut out: Vec<Rec> = Vec::new();
    loop {
        let before = r.offset();
        let item = r.next_item().unwrap_or_else(|e| panic!("cannot read: {e}"));
        let got = match item {
            Item::ImageHeader { .. } | Item::DomainHeader { .. } => Some(None),
            Item::Record(rec) if rec.layer == Layer::Libxc => {
                Some(Some((rec.offset, rec.record_type, rec.body.to_vec())))
            }
            Item::Eof { .. } => break,
            _ => None,
        };
        let after = r.offset();
        match got {
            Some(None) => headers.extend_from_slice(&bytes[before as usize..after as usize]),
            Some(Some((offset, record_type, body))) => out.push(Rec {
                offset,
                end: after,
                record_type,
                body,
            }),
            None => {}
        }
    }
    (headers, out)
}
