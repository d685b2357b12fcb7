//! Virtual time, the dirty log, and a deterministic workload that dirties guest pages at a
//! chosen rate while the domain runs.

use super::memory::Rng;
use super::pv::table_level;
use super::SimDomain;
use crate::domain::{errno, BResult, BackendError, Bitmap, GuestType, PageType, PAGE_SIZE};
use std::collections::HashSet;
use std::time::Duration;

/// A guest workload: `rate_pages_per_sec` page writes per second of virtual time while the
/// domain runs, to pages chosen by `seed`. Each write stores a 16-octet stamp at a
/// seed-chosen offset in the first KiB of an ordinary page; for PV guests one write in 32
/// instead updates a page table (an L1 entry appears or goes away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Page writes per second of virtual time.
    pub rate_pages_per_sec: u64,
    /// Chooses the pages and offsets written.
    pub seed: u64,
}

/// The virtual clock: advanced by transfers over the simulated link and by [`SimDomain::run_for`].
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    now_ns: u64,
    /// Remainder of the last transfer's nanoseconds, in units of 1/bandwidth ns.
    rem: u128,
    bandwidth: u64,
}

impl Clock {
    pub(crate) fn new(bandwidth: u64) -> Clock {
        Clock {
            now_ns: 0,
            rem: 0,
            bandwidth: bandwidth.max(1),
        }
    }

    pub(crate) fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns)
    }

    /// Advances by the time `bytes` take over the link; returns the nanoseconds elapsed.
    fn transfer(&mut self, bytes: u64) -> u64 {
        let total = bytes as u128 * 1_000_000_000 + self.rem;
        let bw = self.bandwidth as u128;
        self.rem = total % bw;
        let dt = (total / bw) as u64;
        self.now_ns += dt;
        dt
    }
}

/// The log-dirty state: one bit per pfn written by the guest since the last clean.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirtyLog {
    enabled: bool,
    bits: Bitmap,
}

impl DirtyLog {
    pub(crate) fn enable(&mut self) {
        self.enabled = true;
        self.bits.clear_all();
    }

    pub(crate) fn disable(&mut self) {
        self.enabled = false;
        self.bits.clear_all();
    }

    pub(crate) fn mark(&mut self, pfn: u64) {
        if self.enabled {
            self.bits.grow(pfn + 1);
            self.bits.set(pfn);
        }
    }

    fn require(&self, op: &'static str) -> BResult<()> {
        if self.enabled {
            Ok(())
        } else {
            Err(BackendError::new(op, "log-dirty mode is off").errno(errno::EINVAL))
        }
    }

    pub(crate) fn clean(&mut self, bitmap: &mut Bitmap) -> BResult<u64> {
        self.require("clean dirty log")?;
        let n = self.bits.count();
        bitmap.or(&self.bits);
        self.bits.clear_all();
        Ok(n)
    }

    pub(crate) fn peek(&self) -> BResult<u64> {
        self.require("peek dirty log")?;
        Ok(self.bits.count())
    }
}

/// Pages a workload writes to.
#[derive(Debug, Clone)]
struct Targets {
    data: Vec<u64>,
    l1s: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct WorkloadState {
    cfg: Workload,
    rng: Rng,
    /// Virtual time the domain has run under this workload.
    run_ns: u128,
    writes: u64,
    targets: Option<Targets>,
}

impl SimDomain {
    /// Sets (or removes) the workload that runs while the domain is not suspended.
    pub fn set_workload(&mut self, workload: Option<Workload>) {
        self.workload = workload.map(|cfg| WorkloadState {
            cfg,
            rng: Rng::stream(cfg.seed, 0x776f_726b),
            run_ns: 0,
            writes: 0,
            targets: None,
        });
    }

    /// The workload running, if any.
    pub fn workload(&self) -> Option<Workload> {
        self.workload.as_ref().map(|w| w.cfg)
    }

    /// Page writes the current workload has made.
    pub fn pages_written(&self) -> u64 {
        self.workload.as_ref().map_or(0, |w| w.writes)
    }

    /// Sets the simulated link speed in octets per second (at least 1).
    pub fn set_bandwidth(&mut self, bytes_per_sec: u64) {
        self.clock.bandwidth = bytes_per_sec.max(1);
        self.clock.rem = 0;
    }

    /// The simulated link speed in octets per second.
    pub fn bandwidth(&self) -> u64 {
        self.clock.bandwidth
    }

    /// Lets `dt` of virtual time pass (the workload runs if the domain does).
    pub fn run_for(&mut self, dt: Duration) {
        let ns = dt.as_nanos().min(u64::MAX as u128) as u64;
        self.clock.now_ns += ns;
        self.run_workload(ns);
    }

    /// `pages` pages went over the link: time passes accordingly.
    pub(crate) fn transfer(&mut self, pages: u64) {
        let ns = self.clock.transfer(pages * PAGE_SIZE as u64);
        self.run_workload(ns);
    }

    /// The layout the workload picked its pages from may have changed.
    pub(crate) fn forget_workload_layout(&mut self) {
        if let Some(w) = &mut self.workload {
            w.targets = None;
        }
    }

    fn workload_targets(&self) -> Targets {
        let mut avoid: HashSet<u64> = match self.guest {
            GuestType::X86Pv => self.pv_structure_pfns(),
            GuestType::X86Hvm => self.hvm_special_pfns(),
        }
        .into_iter()
        .collect();
        avoid.shrink_to_fit();
        let mut data = Vec::new();
        let mut l1s = Vec::new();
        for pfn in self.mem.populated_pfns() {
            let t = self.mem.page_type(pfn);
            if t == PageType::NOTAB && !avoid.contains(&pfn) {
                data.push(pfn);
            } else if self.guest == GuestType::X86Pv && table_level(t) == Some(1) {
                l1s.push(pfn);
            }
        }
        Targets { data, l1s }
    }

    fn run_workload(&mut self, ns: u64) {
        if self.suspended {
            return;
        }
        let Some(mut w) = self.workload.take() else {
            return;
        };
        w.run_ns += ns as u128;
        let due = (w.cfg.rate_pages_per_sec as u128 * w.run_ns / 1_000_000_000) as u64;
        if due > w.writes && w.targets.is_none() {
            w.targets = Some(self.workload_targets());
        }
        while w.writes < due {
            self.workload_write(&mut w);
            w.writes += 1;
        }
        self.workload = Some(w);
    }

    fn workload_write(&mut self, w: &mut WorkloadState) {
        let Some(t) = &w.targets else {
            return;
        };
        if t.data.is_empty() {
            return;
        }
        let r = w.rng.next_u64();
        let data = t.data[w.rng.below(t.data.len() as u64) as usize];
        if !t.l1s.is_empty() && r.is_multiple_of(32) {
            let l1 = t.l1s[w.rng.below(t.l1s.len() as u64) as usize];
            let entry = w.rng.below(512) as usize;
            if let Some(pfn) = self.toggle_pte(l1, entry, data) {
                self.dirty.mark(pfn);
            }
            return;
        }
        let off = w.rng.below(64) as usize * 16;
        let stamp = w.writes + 1;
        let noise = w.rng.next_u64();
        if self.mem.modify(data, |page| {
            page[off..off + 8].copy_from_slice(&stamp.to_le_bytes());
            page[off + 8..off + 16].copy_from_slice(&noise.to_le_bytes());
        }) {
            self.dirty.mark(data);
        }
    }
}
