//! Acceptance tests of the save and restore drivers over simulated domains (issue 5):
//! round trips of PV (32- and 64-bit) and HVM guests, plain and live under dirtying
//! workloads, VERIFY mode, Remus checkpoints cut at many points, the precopy policies, and
//! the per-pass statistics. Every stream the saver writes must pass the strict verifier.
//!
//! Run in release mode: `cargo test -p xenmig-tests --release --test save_restore`.

mod support;

use proptest::prelude::*;
use std::time::Duration;
use support::*;
use xenmig::domain::{GuestType, PrecopyDecision};
use xenmig::libxc;
use xenmig::save::{SaveOptions, SaveStats, StreamType};
use xenmig::sim::SimDomain;
use xenmig::Report;

/// The guest kinds: (guest, width in octets, name).
const KINDS: [(GuestType, u8, &str); 3] = [
    (GuestType::X86Pv, 4, "pv32"),
    (GuestType::X86Pv, 8, "pv64"),
    (GuestType::X86Hvm, 8, "hvm"),
];

const MIB: u64 = 256; // pages

fn plain() -> SaveOptions {
    SaveOptions::default()
}

fn live() -> SaveOptions {
    SaveOptions {
        live: true,
        ..SaveOptions::default()
    }
}

/// The per-pass figures agree with the stream: pfns sent per pass add up to the PAGE_DATA
/// entries, the total octet count is the stream's length, and each pass's octets fit in it.
fn assert_stats_match_stream(stats: &SaveStats, bytes: &[u8], report: &Report, what: &str) {
    let sent: u64 = stats.passes.iter().map(|p| p.pages_sent).sum();
    assert_eq!(
        sent,
        report.pages.pfn_entries,
        "{what}: pages sent per pass {:?} do not add up to the stream's PAGE_DATA entries",
        stats
            .passes
            .iter()
            .map(|p| p.pages_sent)
            .collect::<Vec<_>>()
    );
    assert_eq!(stats.bytes, bytes.len() as u64, "{what}: total octets");
    let pass_bytes: u64 = stats.passes.iter().map(|p| p.bytes).sum();
    assert!(
        pass_bytes <= stats.bytes,
        "{what}: passes wrote more than the stream"
    );
    // Each pass's octets are its PAGE_DATA records: 8 + 8·n + 4096·data + framing.
    let data_pages = report.pages.data_pages;
    assert!(
        pass_bytes >= data_pages * 4096 + report.pages.pfn_entries * 8,
        "{what}: {pass_bytes} octets for {data_pages} pages"
    );
    for (i, p) in stats.passes.iter().enumerate() {
        assert_eq!(p.pass as usize, i, "{what}: pass numbers");
    }
}

/// Saves, verifies, restores; checks the digest and the figures; returns what it saw.
fn round_trip(
    dom: &mut SimDomain,
    cb: &mut SaveCb,
    opts: SaveOptions,
    what: &str,
) -> (SaveStats, Vec<u8>, Report) {
    let (stats, bytes) = save_to_vec(dom, cb, opts);
    let report = assert_verifies(&bytes, what);
    assert!(report.end, "{what}: a plain stream ends with END");
    assert_stats_match_stream(&stats, &bytes, &report, what);
    let (restored, result) = restore(&bytes, StreamType::Plain)
        .unwrap_or_else(|e| panic!("{what}: restore failed: {e}"));
    let at_suspend = cb
        .digest_at_suspend
        .clone()
        .expect("the guest was suspended");
    assert_eq!(
        dom.state_digest_hex(),
        at_suspend,
        "{what}: the source changed while suspended"
    );
    assert_eq!(
        restored.state_digest_hex(),
        at_suspend,
        "{what}: the restored domain differs from the source at suspend"
    );
    assert_eq!(result.verify_mismatches, 0, "{what}");
    assert!(!result.failed_over && result.checkpoints == 0, "{what}");
    (stats, bytes, report)
}

#[test]
fn plain_round_trips_every_guest_kind() {
    for (guest, width, name) in KINDS {
        for (seed, pages, vcpus) in [(1, 16 * MIB, 2), (2, 3 * MIB + 17, 1), (3, 40 * MIB, 5)] {
            let what = format!("{name} plain seed {seed} {pages} pages {vcpus} vcpus");
            let mut dom = build(guest, width, pages, vcpus, seed);
            let mut cb = SaveCb::new();
            let (stats, _, report) = round_trip(&mut dom, &mut cb, plain(), &what);
            assert_eq!(stats.passes.len(), 1, "{what}: one pass");
            assert!(stats.passes[0].suspended, "{what}");
            assert!(
                cb.decisions.is_empty(),
                "{what}: no precopy policy in a plain save"
            );
            assert_eq!(
                report.guest.as_deref(),
                Some(if guest == GuestType::X86Pv {
                    "X86_PV"
                } else {
                    "X86_HVM"
                })
            );
            if guest == GuestType::X86Pv {
                assert_eq!(report.guest_width, Some(width), "{what}");
                assert_eq!(report.vcpus.len() as u32, vcpus, "{what}");
            }
        }
    }
}

#[test]
fn live_round_trips_under_dirtying_workloads() {
    for (guest, width, name) in KINDS {
        for (i, rate) in [0u64, 2_000, 30_000, 150_000].into_iter().enumerate() {
            let seed = 10 + i as u64;
            let what = format!("{name} live at {rate} pages/s");
            let mut dom = build(guest, width, 32 * MIB, 2, seed);
            dirty_at(&mut dom, rate, seed ^ 0x77);
            let mut cb = SaveCb::new();
            let (stats, _, _) = round_trip(&mut dom, &mut cb, live(), &what);
            let last = stats.passes.last().unwrap();
            assert!(last.suspended, "{what}: the final pass runs suspended");
            assert!(
                stats.passes[..stats.passes.len() - 1]
                    .iter()
                    .all(|p| !p.suspended),
                "{what}: precopy passes run live"
            );
            // Xen's default: at most 5 live iterations after the first pass.
            assert!(
                stats.passes.len() <= 7,
                "{what}: {} passes",
                stats.passes.len()
            );
            if rate == 0 {
                assert_eq!(
                    stats.passes.len(),
                    2,
                    "{what}: an idle guest converges at once"
                );
            } else {
                assert!(dom.pages_written() > 0, "{what}: the workload ran");
                assert!(stats.passes.len() >= 3, "{what}: dirtied pages were resent");
                assert!(stats.passes[0].pages_dirtied > 0, "{what}");
            }
            assert!(stats.downtime.is_some(), "{what}");
        }
    }
}

#[test]
fn verify_mode_streams_restore_without_mismatches() {
    for (guest, width, name) in KINDS {
        let what = format!("{name} verify mode");
        let mut dom = build(guest, width, 24 * MIB, 3, 21);
        dirty_at(&mut dom, 40_000, 5);
        let mut cb = SaveCb::new();
        let opts = SaveOptions {
            live: true,
            debug: true,
            ..SaveOptions::default()
        };
        let (_, bytes) = save_to_vec(&mut dom, &mut cb, opts);
        let report = assert_verifies(&bytes, &what);
        let verify_records: u64 = report
            .records
            .iter()
            .filter(|r| r.record_type == libxc::Verify::TYPE)
            .map(|r| r.count)
            .sum();
        assert_eq!(verify_records, 1, "{what}: one VERIFY record");
        let (restored, result) = restore(&bytes, StreamType::Plain).unwrap();
        assert_eq!(result.verify_mismatches, 0, "{what}");
        assert_eq!(
            restored.state_digest_hex(),
            cb.digest_at_suspend.clone().unwrap(),
            "{what}"
        );
    }
}

/// Offsets to cut a stream at inside `rec`: its start (a record boundary) and a few points
/// inside its header and body.
fn cut_points(rec: &Rec) -> Vec<u64> {
    let len = rec.end - rec.offset;
    let mut v = vec![rec.offset, rec.offset + 1, rec.offset + 7];
    if len > 8 {
        v.extend([rec.offset + 8, rec.offset + 8 + (len - 8) / 2, rec.end - 1]);
    }
    if len > 4096 {
        v.extend([rec.offset + 8 + 8 * 3, rec.end - 4096, rec.end - 4095]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn remus_epochs_restore_and_cut_streams_fail_over_to_the_previous_epoch() {
    const EPOCHS: u32 = 4;
    for (k, (guest, width, name)) in KINDS.into_iter().enumerate() {
        let what = format!("{name} remus");
        let mut dom = build(guest, width, 6 * MIB, 2, 31 + k as u64);
        dirty_at(&mut dom, 20_000, 7);
        let mut cb = SaveCb::remus(EPOCHS);
        let opts = SaveOptions {
            stream_type: StreamType::Remus,
            ..SaveOptions::default()
        };
        let (stats, bytes) = save_to_vec(&mut dom, &mut cb, opts);
        assert_eq!(stats.checkpoints, EPOCHS, "{what}");
        assert_eq!(cb.epoch_digests.len(), EPOCHS as usize, "{what}");
        let distinct: std::collections::HashSet<_> = cb.epoch_digests.iter().collect();
        assert_eq!(
            distinct.len(),
            EPOCHS as usize,
            "{what}: the guest changes between epochs"
        );
        let report = assert_verifies(&bytes, &what);
        assert!(!report.end, "{what}: a Remus stream ends without END");
        assert_eq!(report.checkpoints, EPOCHS as u64, "{what}");
        assert_stats_match_stream(&stats, &bytes, &report, &what);

        // The whole stream: the primary died after the last checkpoint.
        let (restored, result) = restore(&bytes, StreamType::Remus).unwrap();
        assert!(result.failed_over, "{what}");
        assert_eq!(result.checkpoints, EPOCHS, "{what}");
        assert_eq!(
            restored.state_digest_hex(),
            cb.epoch_digests[EPOCHS as usize - 1],
            "{what}"
        );

        // Cuts: a stream cut inside epoch k restores epoch k-1.
        let (_, recs) = records(&bytes);
        let checkpoint_ends: Vec<u64> = recs
            .iter()
            .filter(|r| r.record_type == libxc::Checkpoint::TYPE)
            .map(|r| r.end)
            .collect();
        assert_eq!(checkpoint_ends.len(), EPOCHS as usize, "{what}");
        let mut cuts: Vec<u64> = recs.iter().flat_map(cut_points).collect();
        cuts.extend([0, 1, 23, 24, 39, 40]); // inside and between the headers
        cuts.push(bytes.len() as u64 - 1);
        cuts.sort_unstable();
        cuts.dedup();
        let (mut failed, mut per_epoch) = (0, vec![0u32; EPOCHS as usize]);
        for &cut in &cuts {
            let complete = checkpoint_ends.iter().filter(|&&e| e <= cut).count();
            let r = restore(&bytes[..cut as usize], StreamType::Remus);
            if complete == 0 {
                let e = r.err().unwrap_or_else(|| {
                    panic!("{what}: a cut at {cut} before the first checkpoint restored")
                });
                assert!(!e.to_string().is_empty());
                failed += 1;
                continue;
            }
            let (d, res) = r.unwrap_or_else(|e| panic!("{what}: cut at {cut}: {e}"));
            assert!(res.failed_over, "{what}: cut at {cut}");
            assert_eq!(res.checkpoints as usize, complete, "{what}: cut at {cut}");
            assert_eq!(
                d.state_digest_hex(),
                cb.epoch_digests[complete - 1],
                "{what}: a cut at {cut} (after {complete} checkpoints) restores epoch {complete}"
            );
            per_epoch[complete - 1] += 1;
        }
        assert!(failed > 20, "{what}: {failed} cuts inside the first epoch");
        // The stream ends with the last CHECKPOINT: every epoch but the last has cuts after it.
        assert!(
            per_epoch[..EPOCHS as usize - 1].iter().all(|&n| n >= 10),
            "{what}: cuts per epoch {per_epoch:?}"
        );
    }
}

#[test]
fn xen_default_policy_cannot_converge_above_the_link_rate() {
    // 1 GiB/s is 262144 pages/s; the guest dirties 400000 pages/s.
    let mut dom = build(GuestType::X86Hvm, 8, 64 * MIB, 2, 41);
    dom.set_bandwidth(1 << 30);
    dirty_at(&mut dom, 400_000, 9);
    let mut cb = SaveCb::new();
    let (stats, _, _) = round_trip(&mut dom, &mut cb, live(), "xen default at 400000 pages/s");
    // It gives up after 5 iterations with much more than 50 pages dirty.
    assert!(
        stats.stop_reason.contains("iteration 5"),
        "{}",
        stats.stop_reason
    );
    // Passes 0 to 4 live (iterations 0-4), then stop-and-copy.
    assert_eq!(stats.passes.len(), 6, "{:?}", stats.passes);
    let last_live = &stats.passes[stats.passes.len() - 2];
    assert!(last_live.pages_dirtied >= 50, "{last_live:?}");
    assert!(
        stats.passes.last().unwrap().pages_sent >= 1000,
        "{:?}",
        stats.passes
    );
}

#[test]
fn downtime_policy_meets_its_target_or_says_it_cannot() {
    let target = Duration::from_millis(5);
    // Unreachable: the guest dirties faster than the link sends.
    for (guest, width, name) in KINDS {
        let what = format!("{name} downtime:5 at 400000 pages/s");
        let mut dom = build(guest, width, 64 * MIB, 2, 43);
        dom.set_bandwidth(1 << 30);
        dirty_at(&mut dom, 400_000, 11);
        let mut cb = SaveCb::with_downtime(target);
        let (stats, _, _) = round_trip(&mut dom, &mut cb, live(), &what);
        let v = cb
            .downtime
            .as_ref()
            .unwrap()
            .verdict
            .clone()
            .expect("a verdict");
        if v.met {
            assert!(v.predicted <= target, "{what}: {v:?}");
        } else {
            assert!(v.predicted > target, "{what}: {v:?}");
            assert!(v.reason.contains("cannot meet"), "{what}: {}", v.reason);
        }
        assert!(
            !v.met,
            "{what}: 400000 pages/s over a 262144 pages/s link: {v:?}"
        );
        assert!(stats.passes.len() >= 3, "{what}");
        // It stops by itself, within its iteration cap.
        assert!(
            v.iteration <= cb.downtime.as_ref().unwrap().max_iterations,
            "{what}: {v:?}"
        );
        assert!(
            cb.decisions.last().map(|d| d.1) == Some(PrecopyDecision::StopAndCopy),
            "{what}"
        );
    }
    // Reachable: a modest dirty rate converges within the target.
    for (guest, width, name) in KINDS {
        let what = format!("{name} downtime:5 at 20000 pages/s");
        let mut dom = build(guest, width, 64 * MIB, 2, 45);
        dom.set_bandwidth(1 << 30);
        dirty_at(&mut dom, 20_000, 13);
        let mut cb = SaveCb::with_downtime(target);
        let (stats, _, _) = round_trip(&mut dom, &mut cb, live(), &what);
        let v = cb
            .downtime
            .as_ref()
            .unwrap()
            .verdict
            .clone()
            .expect("a verdict");
        assert!(v.met, "{what}: {v:?}");
        assert!(v.predicted <= target, "{what}: {v:?}");
        let downtime = stats.downtime.expect("downtime measured");
        // The prediction holds up: the real stop-and-copy fits the target with some slack for
        // the pages the guest dirtied meanwhile and the deferred ones.
        assert!(
            downtime <= target * 2,
            "{what}: downtime {downtime:?}, {v:?}"
        );
    }
}

#[test]
fn per_pass_predictions_follow_the_pass_rates() {
    let mut dom = build(GuestType::X86Pv, 8, 32 * MIB, 2, 47);
    dirty_at(&mut dom, 60_000, 17);
    let mut cb = SaveCb::new();
    let (stats, _, _) = round_trip(&mut dom, &mut cb, live(), "pv64 predictions");
    // Each live pass records what it saw dirtied, and the next pass sends exactly that.
    for w in stats.passes.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if !b.suspended {
            assert_eq!(b.pages_sent, a.pages_dirtied, "{:?}", stats.passes);
        } else {
            // The final pass also sends the deferred (ballooned) pfns.
            assert!(b.pages_sent >= a.pages_dirtied, "{:?}", stats.passes);
        }
        // A live pass followed by another carries the prediction its figures give.
        if !b.suspended && a.pages_dirtied > 0 && a.pages_sent > 0 {
            let p = a.predicted_downtime.expect("a prediction");
            let want = a.time.mul_f64(a.pages_dirtied as f64 / a.pages_sent as f64);
            let diff = p.abs_diff(want);
            assert!(diff <= Duration::from_micros(1), "{a:?}");
        }
    }
    // The policy saw the same figures.
    let live_decisions: Vec<_> = cb
        .decisions
        .iter()
        .filter(|d| d.0.dirty_count >= 0)
        .collect();
    assert!(!live_decisions.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_domains_round_trip(
        kind in 0usize..3,
        mib in 1u64..=64,
        vcpus in 1u32..=8,
        seed in any::<u64>(),
        is_live in any::<bool>(),
        rate in prop_oneof![Just(0u64), 1u64..5_000, 5_000u64..300_000],
    ) {
        let (guest, width, name) = KINDS[kind];
        let what = format!("{name} {mib} MiB {vcpus} vcpus seed {seed} live {is_live} rate {rate}");
        let mut dom = build(guest, width, mib * MIB, vcpus, seed);
        dirty_at(&mut dom, rate, seed.rotate_left(17));
        let mut cb = SaveCb::new();
        let opts = if is_live { live() } else { plain() };
        round_trip(&mut dom, &mut cb, opts, &what);
    }
}

/// A domain that records the size of every `read_pages` call and says whether it wants whole
/// batches read at once.
struct Reads {
    dom: SimDomain,
    whole: bool,
    pages_per_read: Vec<usize>,
}

impl xenmig::domain::Domain for Reads {
    xenmig::forward_domain!(
        dom:
        info, p2m_size, pfn_to_gfn, page_types, write_pages, populate, set_page_types,
        vcpu_state, set_vcpu_state, online_vcpus, hvm_context, set_hvm_context, hvm_param,
        set_hvm_param, tsc_info, set_tsc_info, shared_info, set_shared_info, cpu_policy,
        set_cpu_policy, enable_logdirty, disable_logdirty, clean_dirty, peek_dirty, pv_p2m,
        mfn_to_pfn, set_address_size, expand_p2m, write_p2m, pin_page_tables,
        p2m_generation, now, memory_limits
    );
    fn read_pages(&mut self, gfns: &[u64], out: &mut [u8]) -> xenmig::domain::BResult<()> {
        self.pages_per_read.push(gfns.len());
        self.dom.read_pages(gfns, out)
    }
    fn reads_whole_batches(&self) -> bool {
        self.whole
    }
}

struct SuspendOnly;

impl xenmig::domain::SaveCallbacks<Reads> for SuspendOnly {
    fn suspend(&mut self, d: &mut Reads) -> bool {
        d.dom.suspend();
        true
    }
}

#[test]
fn batches_read_in_pieces_make_the_same_stream_as_batches_read_whole() {
    for (guest, width, name) in KINDS {
        let save = |whole: bool| {
            let mut d = Reads {
                dom: build(guest, width, 16 * MIB, 2, 7),
                whole,
                pages_per_read: Vec::new(),
            };
            let (_, bytes) =
                xenmig::save::save(&mut d, &mut SuspendOnly, Vec::new(), plain(), None)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            (bytes, d.pages_per_read)
        };
        let (whole, whole_reads) = save(true);
        let (pieces, piece_reads) = save(false);
        assert!(whole == pieces, "{name}: the streams differ");
        assert_verifies(&pieces, name);
        // 1 MiB at a time at most when read in pieces; HVM batches are all plain pages, so
        // read whole they come 1024 at a time.
        let largest = |r: &[usize]| r.iter().copied().max().unwrap_or(0);
        assert!(largest(&piece_reads) <= 1024, "{name}");
        if guest == GuestType::X86Hvm {
            assert_eq!(largest(&whole_reads), 1024, "{name}");
            assert_eq!(largest(&piece_reads), 256, "{name}");
            assert_eq!(
                whole_reads.iter().sum::<usize>(),
                piece_reads.iter().sum::<usize>(),
                "{name}: the same pages read"
            );
        }
    }
}
