//! xenmig-sim: SimDomain, an in-memory simulated Xen domain implementing [`Domain`], for driving the save
//! and restore algorithms without a hypervisor.
//!
//! A source domain is built deterministically from a seed ([`SimDomain::build`]): sparse guest
//! memory with seed-derived contents; for PV guests a real page-table tree over a simulated
//! p2m/m2p, the guest's own p2m frames, start_info, GDT pages, vcpu contexts and shared info;
//! for HVM guests identity-mapped memory with holes, an HVM context and params. A destination
//! ([`SimDomain::empty_for_restore`]) has no memory until a restore populates it, and hands out
//! machine frames of its own, so PV page tables really are localised.
//!
//! Time is virtual: every page the saver reads advances the clock by `4096 / bandwidth`
//! seconds, and a [`Workload`] dirties pages at its rate while the domain runs.
//! [`SimDomain::state_digest`] hashes the whole guest state in a form that is independent of
//! machine frame numbers, so a correct save→restore gives equal digests on both sides.
#![deny(missing_docs)]

// The formats (xenmig-core) and the drivers' traits and x86 facts (xenmig-drivers), at the
// paths the simulator names them by.
pub(crate) use xenmig_core::{libxc, limits, wire, x86_state};
pub(crate) use xenmig_drivers::{domain, x86};

pub mod config;
mod digest;
pub mod dm;
pub mod helper;
mod hvm;
mod memory;
mod pv;
mod workload;

#[cfg(test)]
mod tests;

pub use digest::hex;
pub use hvm::{MMIO_HOLE_PAGES, SPECIAL_PAGES, VGA_HOLE};
pub use pv::PvGuestLayout;
pub use workload::Workload;

pub use config::SimDomainConfig;
pub use dm::{SimDeviceModel, SimGuest, SimGuestExt};
pub use helper::SimBackend;

use crate::domain::{
    errno, BResult, BackendError, Bitmap, Domain, DomainInfo, GuestType, PageType, TscInfo,
    VcpuState, PAGE_SIZE,
};
use crate::x86::PvLayout;
use memory::{Memory, Rng};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// PV or HVM.
    pub guest: GuestType,
    /// Guest word size in octets for PV guests: 4 (32-bit PAE) or 8 (64-bit). Ignored for HVM.
    pub width: u8,
    /// Pages of guest memory: the PV p2m size, or the HVM guest's RAM (holes come on top).
    pub memory_pages: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Seed of the memory contents and layout: equal seeds build equal domains.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            guest: GuestType::X86Pv,
            width: 8,
            memory_pages: 4096,
            vcpus: 2,
            seed: 0,
        }
    }
}

/// The simulated link speed when none is set: 1 GiB/s.
pub const DEFAULT_BANDWIDTH: u64 = 1 << 30;

/// Most vcpus a simulated domain has, and most pfns it addresses (see [`crate::limits`]).
pub use crate::limits::{SIM_MAX_PFNS as MAX_PFNS, SIM_MAX_VCPUS as MAX_VCPUS};

/// An absent p2m entry.
const INVALID_MFN: u64 = u64::MAX;

/// HVM params by index (`xen/include/public/hvm/params.h`).
pub mod hvm_param {
    use crate::libxc::HvmParamIndex as I;

    /// `HVM_PARAM_STORE_PFN`.
    pub const STORE_PFN: u64 = I::STORE_PFN.0;
    /// `HVM_PARAM_STORE_EVTCHN`.
    pub const STORE_EVTCHN: u64 = I::STORE_EVTCHN.0;
    /// `HVM_PARAM_PAE_ENABLED`.
    pub const PAE_ENABLED: u64 = I::PAE_ENABLED.0;
    /// `HVM_PARAM_IOREQ_PFN`.
    pub const IOREQ_PFN: u64 = I::IOREQ_PFN.0;
    /// `HVM_PARAM_BUFIOREQ_PFN`.
    pub const BUFIOREQ_PFN: u64 = I::BUFIOREQ_PFN.0;
    /// `HVM_PARAM_VIRIDIAN`.
    pub const VIRIDIAN: u64 = I::VIRIDIAN.0;
    /// `HVM_PARAM_TIMER_MODE`.
    pub const TIMER_MODE: u64 = 10;
    /// `HVM_PARAM_HPET_ENABLED`.
    pub const HPET_ENABLED: u64 = 11;
    /// `HVM_PARAM_IDENT_PT`.
    pub const IDENT_PT: u64 = I::IDENT_PT.0;
    /// `HVM_PARAM_CONSOLE_PFN`.
    pub const CONSOLE_PFN: u64 = I::CONSOLE_PFN.0;
    /// `HVM_PARAM_CONSOLE_EVTCHN`.
    pub const CONSOLE_EVTCHN: u64 = I::CONSOLE_EVTCHN.0;
    /// `HVM_PARAM_ACPI_IOPORTS_LOCATION`.
    pub const ACPI_IOPORTS_LOCATION: u64 = I::ACPI_IOPORTS_LOCATION.0;
    /// `HVM_PARAM_PAGING_RING_PFN`.
    pub const PAGING_RING_PFN: u64 = I::PAGING_RING_PFN.0;
    /// `HVM_PARAM_MONITOR_RING_PFN`.
    pub const MONITOR_RING_PFN: u64 = I::MONITOR_RING_PFN.0;
    /// `HVM_PARAM_SHARING_RING_PFN`.
    pub const SHARING_RING_PFN: u64 = I::SHARING_RING_PFN.0;
    /// `HVM_PARAM_IOREQ_SERVER_PFN`.
    pub const IOREQ_SERVER_PFN: u64 = I::IOREQ_SERVER_PFN.0;
    /// `HVM_PARAM_NR_IOREQ_SERVER_PAGES`.
    pub const NR_IOREQ_SERVER_PAGES: u64 = I::NR_IOREQ_SERVER_PAGES.0;
    /// `HVM_PARAM_VM_GENERATION_ID_ADDR`.
    pub const VM_GENERATION_ID_ADDR: u64 = I::VM_GENERATION_ID_ADDR.0;
    /// `HVM_PARAM_X87_FIP_WIDTH`.
    pub const X87_FIP_WIDTH: u64 = I::X87_FIP_WIDTH.0;
    /// `HVM_PARAM_VM86_TSS_SIZED`.
    pub const VM86_TSS_SIZED: u64 = I::VM86_TSS_SIZED.0;
    /// `HVM_PARAM_MCA_CAP`.
    pub const MCA_CAP: u64 = I::MCA_CAP.0;

    /// The params Xen's saver sends (when non-zero), in its order: the spec's
    /// `hvm_param_index` values marked `saved`.
    pub fn saved() -> impl Iterator<Item = u64> {
        I::KNOWN.iter().filter(|p| p.saved()).map(|p| p.0)
    }
}

/// The state blobs of one vcpu.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct VcpuBlobs {
    basic: Vec<u8>,
    extended: Vec<u8>,
    xsave: Vec<u8>,
    msrs: Vec<u8>,
}

impl VcpuBlobs {
    fn get(&self, which: VcpuState) -> &Vec<u8> {
        match which {
            VcpuState::Basic => &self.basic,
            VcpuState::Extended => &self.extended,
            VcpuState::Xsave => &self.xsave,
            VcpuState::Msrs => &self.msrs,
        }
    }

    fn get_mut(&mut self, which: VcpuState) -> &mut Vec<u8> {
        match which {
            VcpuState::Basic => &mut self.basic,
            VcpuState::Extended => &mut self.extended,
            VcpuState::Xsave => &mut self.xsave,
            VcpuState::Msrs => &mut self.msrs,
        }
    }

    fn is_empty(&self) -> bool {
        self.basic.is_empty()
            && self.extended.is_empty()
            && self.xsave.is_empty()
            && self.msrs.is_empty()
    }
}

/// An in-memory simulated Xen domain.
#[derive(Debug, Clone)]
pub struct SimDomain {
    guest: GuestType,
    /// Guest word size (PV: 4 or 8; HVM: 8).
    width: u8,
    seed: u64,
    mem: Memory,

    // PV: the p2m (pfn → mfn, INVALID_MFN for none), the m2p, and where new mfns come from.
    p2m: Vec<u64>,
    m2p: HashMap<u64, u64>,
    mfns: pv::MfnAllocator,
    /// PV: pfns of the frames holding the guest's p2m.
    p2m_frames: Vec<u64>,
    /// PV: pinned page tables.
    pins: Vec<(u64, PageType)>,
    p2m_generation: u64,
    /// PV: the shared info page (HVM: empty).
    shared_info: Vec<u8>,
    /// PV source: which pfns hold what.
    layout: Option<PvGuestLayout>,

    vcpus: Vec<VcpuBlobs>,
    hvm_context: Vec<u8>,
    hvm_params: BTreeMap<u64, u64>,
    /// HVM: the pfns the save walks, at least (a destination: its hint, grown to every pfn a
    /// restore gave a type, holes included).
    hvm_pfns: u64,
    tsc: TscInfo,
    cpuid_policy: Vec<u8>,
    msr_policy: Vec<u8>,

    suspended: bool,
    clock: workload::Clock,
    workload: Option<workload::WorkloadState>,
    dirty: workload::DirtyLog,
    /// What [`Domain::fill_pages`] lends, kept for the next batch.
    fill_buf: Scratch,
}

/// A buffer reused from call to call; a copy of the domain starts without one.
#[derive(Debug, Default)]
struct Scratch(Vec<u8>);

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

fn einval(op: &'static str, detail: impl Into<String>) -> BackendError {
    BackendError::new(op, detail).errno(errno::EINVAL)
}

fn not_pv(op: &'static str) -> BackendError {
    BackendError::new(op, "not a PV domain").errno(errno::EOPNOTSUPP)
}

fn not_hvm(op: &'static str) -> BackendError {
    BackendError::new(op, "not an HVM domain").errno(errno::EOPNOTSUPP)
}

impl SimDomain {
    fn blank(guest: GuestType, width: u8, vcpus: u32, seed: u64) -> SimDomain {
        SimDomain {
            guest,
            width,
            seed,
            mem: Memory::default(),
            p2m: Vec::new(),
            m2p: HashMap::new(),
            mfns: pv::MfnAllocator::new(seed),
            p2m_frames: Vec::new(),
            pins: Vec::new(),
            p2m_generation: 0,
            shared_info: Vec::new(),
            layout: None,
            vcpus: vec![VcpuBlobs::default(); vcpus as usize],
            hvm_context: Vec::new(),
            hvm_params: BTreeMap::new(),
            hvm_pfns: 0,
            tsc: TscInfo::default(),
            cpuid_policy: Vec::new(),
            msr_policy: Vec::new(),
            suspended: false,
            clock: workload::Clock::new(DEFAULT_BANDWIDTH),
            workload: None,
            dirty: workload::DirtyLog::default(),
            fill_buf: Scratch::default(),
        }
    }

    /// Builds a running source domain, deterministically from `cfg.seed`.
    pub fn build(cfg: SimConfig) -> BResult<SimDomain> {
        const OP: &str = "build simulated domain";
        if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
            return Err(einval(
                OP,
                format!("{} vcpus; the simulator takes 1 to {MAX_VCPUS}", cfg.vcpus),
            ));
        }
        if cfg.memory_pages == 0 || cfg.memory_pages > MAX_PFNS / 2 {
            return Err(einval(
                OP,
                format!(
                    "{} pages of memory; the simulator takes 1 to {}",
                    cfg.memory_pages,
                    MAX_PFNS / 2
                ),
            ));
        }
        let width = match cfg.guest {
            GuestType::X86Pv => cfg.width,
            GuestType::X86Hvm => 8,
        };
        let mut dom = SimDomain::blank(cfg.guest, width, cfg.vcpus, cfg.seed);
        dom.tsc = seeded_tsc(cfg.seed);
        (dom.cpuid_policy, dom.msr_policy) = seeded_policies(cfg.seed);
        match cfg.guest {
            GuestType::X86Pv => pv::build(&mut dom, &cfg)?,
            GuestType::X86Hvm => hvm::build(&mut dom, &cfg),
        }
        Ok(dom)
    }

    /// A fresh destination for a restore: no memory populated, `vcpus` vcpus without state,
    /// machine frames handed out by [`Domain::populate`] from a range no source uses. PV
    /// destinations start 64-bit with a p2m of `max_pfn + 1` empty entries (the stream grows
    /// it); HVM destinations report at least `max_pfn + 1` pfns.
    pub fn empty_for_restore(guest: GuestType, max_pfn: u64, vcpus: u32, seed: u64) -> SimDomain {
        let vcpus = vcpus.clamp(1, MAX_VCPUS);
        let pfns = max_pfn.saturating_add(1).min(MAX_PFNS);
        let mut dom = SimDomain::blank(guest, 8, vcpus, seed);
        dom.mem.reserve(pfns);
        match guest {
            GuestType::X86Pv => {
                dom.p2m = vec![INVALID_MFN; pfns as usize];
                dom.shared_info = vec![0; PAGE_SIZE];
            }
            GuestType::X86Hvm => dom.hvm_pfns = pfns,
        }
        dom
    }

    /// PV or HVM.
    pub fn guest(&self) -> GuestType {
        self.guest
    }

    /// The seed the domain was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Stops the guest (shutdown reason suspend): the workload no longer runs. A PV guest
    /// first canonicalises start_info (its store and console mfns become pfns).
    pub fn suspend(&mut self) {
        if !self.suspended {
            self.pv_canonicalise_start_info(true);
            self.suspended = true;
        }
    }

    /// Lets the guest run again (a PV guest turns start_info's pfns back into mfns).
    pub fn resume(&mut self) {
        if self.suspended {
            self.suspended = false;
            self.pv_canonicalise_start_info(false);
        }
    }

    /// A COLO secondary after a checkpoint was applied over its suspended guest: the domain
    /// is what a restore builds, no longer suspended, and start_info is left as the restore
    /// wrote it (unlike [`SimDomain::resume`], where the guest turns its own pfns back into
    /// mfns). The workload runs again once time passes.
    pub fn checkpoint_applied(&mut self) {
        self.suspended = false;
    }

    /// Whether the guest is suspended.
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// PV source domains: which pfns hold what.
    pub fn pv_layout(&self) -> Option<&PvGuestLayout> {
        self.layout.as_ref()
    }

    /// Pinned page tables, in pinning order.
    pub fn pins(&self) -> &[(u64, PageType)] {
        &self.pins
    }

    /// Number of populated pfns.
    pub fn populated_pages(&self) -> u64 {
        self.mem.populated_count()
    }

    /// A populated page's contents, by pfn.
    pub fn page(&self, pfn: u64) -> Option<Box<[u8; PAGE_SIZE]>> {
        self.mem.page(pfn)
    }

    /// Writes `bytes` into guest memory at guest-physical address `paddr` (to plant a
    /// marker an analysis must find). Every frame it touches must be a populated data page
    /// (never a page table); on refusal nothing is written and the reason is returned.
    pub fn plant(&mut self, paddr: u64, bytes: &[u8]) -> Result<(), String> {
        let end = paddr
            .checked_add(bytes.len() as u64)
            .ok_or_else(|| format!("{paddr:#x} + {} octets overflows", bytes.len()))?;
        let first = paddr >> limits::PAGE_SHIFT;
        let last = end.saturating_sub(1) >> limits::PAGE_SHIFT;
        for pfn in first..=last {
            let t = self.mem.page_type(pfn);
            if !self.mem.is_populated(pfn) || t != PageType::NOTAB {
                return Err(format!(
                    "frame {pfn:#x} is not a populated data page (type {t})"
                ));
            }
        }
        let mut at = paddr;
        let mut rest = bytes;
        while !rest.is_empty() {
            let off = (at & limits::PAGE_OFFSET_MASK) as usize;
            let n = rest.len().min(PAGE_SIZE - off);
            let (now, later) = rest.split_at(n);
            self.mem.modify(at >> limits::PAGE_SHIFT, |p| {
                if let Some(d) = p.get_mut(off..off + n) {
                    d.copy_from_slice(now);
                }
            });
            at += n as u64;
            rest = later;
        }
        Ok(())
    }

    /// The type of a pfn (XTAB when not populated).
    pub fn page_type(&self, pfn: u64) -> PageType {
        self.mem.page_type(pfn)
    }

    fn pv_layout_facts(&self) -> Option<&'static PvLayout> {
        match self.guest {
            GuestType::X86Pv => PvLayout::for_width(self.width),
            GuestType::X86Hvm => None,
        }
    }

    /// The pfn behind a gfn (PV: an mfn, through the m2p; HVM: the same number), populated.
    fn gfn_to_pfn(&self, gfn: u64) -> Option<u64> {
        let pfn = match self.guest {
            GuestType::X86Pv => *self.m2p.get(&gfn)?,
            GuestType::X86Hvm => gfn,
        };
        self.mem.is_populated(pfn).then_some(pfn)
    }

    fn vcpu_mut(&mut self, op: &'static str, vcpu: u32) -> BResult<&mut VcpuBlobs> {
        let n = self.vcpus.len();
        self.vcpus.get_mut(vcpu as usize).ok_or_else(|| {
            einval(
                op,
                format!("vcpu {vcpu} is beyond max_vcpu_id {}", n.saturating_sub(1)),
            )
        })
    }
}

fn seeded_tsc(seed: u64) -> TscInfo {
    let mut r = Rng::stream(seed, 0x0074_7363);
    TscInfo {
        mode: 0,
        khz: 2_000_000 + r.below(1_500_000) as u32,
        nsec: r.below(1 << 40),
        incarnation: r.below(8) as u32,
    }
}

/// A plausible CPUID policy and MSR policy, as the generated `cpuid_leaf` and `msr_entry`
/// elements of X86_CPUID_POLICY and X86_MSR_POLICY lay them out.
fn seeded_policies(seed: u64) -> (Vec<u8>, Vec<u8>) {
    use libxc::{CpuidLeaf, MsrEntry, XEN_CPUID_NO_SUBLEAF as NO_SUBLEAF};
    use wire::{Element, Endian, Put};
    let mut r = Rng::stream(seed, 0x0063_7075_6964);
    let stepping = r.below(16) as u32;
    let leaf = |leaf, subleaf, a, b, c, d| CpuidLeaf {
        leaf,
        subleaf,
        a,
        b,
        c,
        d,
    };
    let leaves = [
        leaf(0, NO_SUBLEAF, 0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
        leaf(
            1,
            NO_SUBLEAF,
            0x0009_06e0 | stepping,
            (r.below(256) as u32) << 24 | 0x0080_0800,
            0xf7fa_3203,
            0x1f8b_fbff,
        ),
        leaf(
            7,
            0,
            0,
            0x009c_27ab & r.next_u64() as u32 | 0x0000_0001,
            0,
            0,
        ),
        leaf(0xd, 0, 0x7, 0x340, 0x340, 0),
        leaf(0xd, 1, 0x1, 0, 0, 0),
        leaf(0x8000_0000, NO_SUBLEAF, 0x8000_0008, 0, 0, 0),
        leaf(0x8000_0001, NO_SUBLEAF, 0, 0, 0x121, 0x2c10_0800),
        leaf(0x8000_0008, NO_SUBLEAF, 0x3027, 0, 0, 0),
    ];
    let mut cpuid = Vec::new();
    for l in &leaves {
        l.write(&mut Put {
            out: &mut cpuid,
            endian: Endian::Little,
        });
    }
    let mut msrs = Vec::new();
    for (idx, val) in [(0xceu32, r.below(1 << 16) << 8), (0x10a, r.below(256))] {
        MsrEntry { idx, flags: 0, val }.write(&mut Put {
            out: &mut msrs,
            endian: Endian::Little,
        });
    }
    (cpuid, msrs)
}

impl Domain for SimDomain {
    fn info(&mut self) -> BResult<DomainInfo> {
        let p2m_size = self.p2m_size()?;
        Ok(DomainInfo {
            guest: self.guest,
            guest_width: self.width,
            pt_levels: if self.width == 4 { 3 } else { 4 },
            max_pfn: p2m_size.saturating_sub(1),
            max_vcpu_id: self.vcpus.len().saturating_sub(1) as u32,
            suspended: self.suspended,
        })
    }

    /// A simulated destination takes as much memory as the simulator can hold (half of its
    /// pfns, as [`SimDomain::build`] allows), its pfns inside the simulator's range.
    fn memory_limits(&mut self) -> BResult<crate::domain::MemoryLimits> {
        let info = self.info()?;
        let mut limits = crate::domain::MemoryLimits::for_pages(info.max_pfn, MAX_PFNS / 2);
        limits.max_pfn = limits.max_pfn.min(MAX_PFNS - 1);
        Ok(limits)
    }

    fn p2m_size(&mut self) -> BResult<u64> {
        Ok(match self.guest {
            GuestType::X86Pv => self.p2m.len() as u64,
            GuestType::X86Hvm => self.hvm_pfns.max(self.mem.populated_end()),
        })
    }

    fn pfn_to_gfn(&mut self, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()> {
        if pfns.len() != out.len() {
            return Err(einval("pfn_to_gfn", "output length differs from input"));
        }
        for (pfn, o) in pfns.iter().zip(out.iter_mut()) {
            *o = match self.guest {
                GuestType::X86Pv => self
                    .p2m
                    .get(*pfn as usize)
                    .copied()
                    .filter(|&m| m != INVALID_MFN),
                GuestType::X86Hvm => self.mem.is_populated(*pfn).then_some(*pfn),
            };
        }
        Ok(())
    }

    fn page_types(&mut self, gfns: &[u64], out: &mut [PageType]) -> BResult<()> {
        if gfns.len() != out.len() {
            return Err(einval("page_types", "output length differs from input"));
        }
        for (gfn, o) in gfns.iter().zip(out.iter_mut()) {
            *o = match self.gfn_to_pfn(*gfn) {
                Some(pfn) => self.mem.page_type(pfn),
                None => PageType::XTAB,
            };
        }
        Ok(())
    }

    fn read_pages(&mut self, gfns: &[u64], out: &mut [u8]) -> BResult<()> {
        if out.len() != gfns.len() * PAGE_SIZE {
            return Err(einval(
                "map pages",
                format!("{} octets for {} pages", out.len(), gfns.len()),
            ));
        }
        for (gfn, page) in gfns.iter().zip(out.chunks_exact_mut(PAGE_SIZE)) {
            let pfn = self.gfn_to_pfn(*gfn).ok_or_else(|| {
                BackendError::new("map pages", format!("gfn {gfn:#x} is not mapped"))
                    .errno(errno::EINVAL)
            })?;
            self.mem.read(pfn, page);
        }
        self.transfer(gfns.len() as u64);
        Ok(())
    }

    fn lends_pages(&self) -> bool {
        true
    }

    /// Lends the stored pages as they are: each page's stored octets, then the zeros it was
    /// trimmed of (from a shared page of zeros).
    fn lend_pages(
        &mut self,
        gfns: &[u64],
        f: &mut dyn FnMut(&[&[u8]]) -> BResult<()>,
    ) -> BResult<()> {
        static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(gfns.len() * 2);
        for gfn in gfns {
            let stored = self
                .gfn_to_pfn(*gfn)
                .and_then(|pfn| self.mem.trimmed(pfn))
                .ok_or_else(|| {
                    BackendError::new("map pages", format!("gfn {gfn:#x} is not mapped"))
                        .errno(errno::EINVAL)
                })?;
            if !stored.is_empty() {
                pieces.push(stored);
            }
            if stored.len() < PAGE_SIZE {
                pieces.push(&ZERO_PAGE[stored.len()..]);
            }
        }
        let r = f(&pieces);
        drop(pieces);
        self.transfer(gfns.len() as u64);
        r
    }

    fn write_pages(&mut self, gfns: &[u64], data: &[u8]) -> BResult<()> {
        if data.len() != gfns.len() * PAGE_SIZE {
            return Err(einval(
                "write pages",
                format!("{} octets for {} pages", data.len(), gfns.len()),
            ));
        }
        for (gfn, page) in gfns.iter().zip(data.chunks_exact(PAGE_SIZE)) {
            let pfn = self
                .gfn_to_pfn(*gfn)
                .ok_or_else(|| einval("write pages", format!("gfn {gfn:#x} is not populated")))?;
            self.mem.write(pfn, page);
        }
        self.forget_workload_layout();
        Ok(())
    }

    /// Lends a buffer kept from batch to batch, then stores it as `write_pages` does.
    fn fill_pages(
        &mut self,
        gfns: &[u64],
        f: &mut dyn FnMut(&mut [&mut [u8]]) -> BResult<()>,
    ) -> BResult<()> {
        let mut buf = std::mem::take(&mut self.fill_buf.0);
        buf.resize(gfns.len() * PAGE_SIZE, 0);
        let r = f(&mut [&mut buf]).and_then(|()| self.write_pages(gfns, &buf));
        self.fill_buf.0 = buf;
        r
    }

    fn populate(&mut self, pfns: &[u64]) -> BResult<()> {
        for &pfn in pfns {
            match self.guest {
                GuestType::X86Pv => {
                    let entry = self.p2m.get(pfn as usize).copied().ok_or_else(|| {
                        BackendError::new(
                            "populate",
                            format!(
                                "pfn {pfn:#x} is beyond max_pfn {:#x}",
                                self.p2m.len() as u64 - 1
                            ),
                        )
                        .errno(errno::ERANGE)
                    })?;
                    if entry != INVALID_MFN {
                        continue;
                    }
                    let mfn = self.mfns.allocate(&self.m2p);
                    self.p2m[pfn as usize] = mfn;
                    self.m2p.insert(mfn, pfn);
                    self.p2m_generation += 1;
                }
                GuestType::X86Hvm => {
                    if pfn >= MAX_PFNS {
                        return Err(BackendError::new(
                            "populate",
                            format!("pfn {pfn:#x} is beyond the simulator's {MAX_PFNS:#x} pfns"),
                        )
                        .errno(errno::ERANGE));
                    }
                }
            }
            self.mem.populate(pfn);
        }
        self.forget_workload_layout();
        Ok(())
    }

    fn set_page_types(&mut self, pfns: &[u64], types: &[PageType]) -> BResult<()> {
        if pfns.len() != types.len() {
            return Err(einval("set page types", "as many types as pfns are needed"));
        }
        for (&pfn, &t) in pfns.iter().zip(types) {
            if self.guest == GuestType::X86Hvm && pfn < MAX_PFNS {
                // The guest's physical space reaches every pfn the stream names, holes too.
                self.hvm_pfns = self.hvm_pfns.max(pfn + 1);
            }
            let stored = match (t, crate::limits::table_level(t)) {
                (PageType::XTAB, _) => continue,
                (PageType::XALLOC, _) => PageType::NOTAB,
                // A pinned type is the page's only once it is pinned.
                (_, Some(level)) => PageType::from(level),
                _ if PageType::KNOWN.contains(&t) => t,
                _ => {
                    return Err(einval(
                        "set page types",
                        format!("pfn {pfn:#x}: unknown page type {:#x}", t.0),
                    ))
                }
            };
            self.mem.set_type(pfn, stored);
        }
        self.forget_workload_layout();
        Ok(())
    }

    fn vcpu_state(&mut self, vcpu: u32, which: VcpuState) -> BResult<Vec<u8>> {
        Ok(self.vcpu_mut("get vcpu state", vcpu)?.get(which).clone())
    }

    fn set_vcpu_state(&mut self, vcpu: u32, which: VcpuState, data: &[u8]) -> BResult<()> {
        const OP: &str = "set vcpu state";
        self.vcpu_mut(OP, vcpu)?;
        match which {
            VcpuState::Basic => {
                if let Some(l) = self.pv_layout_facts() {
                    if data.len() != l.vcpu_context_size {
                        return Err(einval(
                            OP,
                            format!(
                                "vcpu {vcpu}: basic context of {} octets, a {}-bit guest's is {}",
                                data.len(),
                                l.width * 8,
                                l.vcpu_context_size
                            ),
                        ));
                    }
                    self.check_context_frames(vcpu, data)?;
                }
            }
            VcpuState::Extended if data.len() > 128 => {
                return Err(einval(
                    OP,
                    format!("vcpu {vcpu}: extended context of {} octets", data.len()),
                ))
            }
            VcpuState::Xsave if !data.is_empty() && data.len() < 16 => {
                return Err(einval(
                    OP,
                    format!("vcpu {vcpu}: xsave state of {} octets", data.len()),
                ))
            }
            VcpuState::Msrs if !data.len().is_multiple_of(16) => {
                return Err(einval(
                    OP,
                    format!("vcpu {vcpu}: MSRs of {} octets", data.len()),
                ))
            }
            _ => {}
        }
        *self.vcpu_mut(OP, vcpu)?.get_mut(which) = data.to_vec();
        self.forget_workload_layout();
        Ok(())
    }

    fn online_vcpus(&mut self) -> BResult<Vec<u32>> {
        let all = 0..self.vcpus.len() as u32;
        if self.guest == GuestType::X86Pv {
            let with_context: Vec<u32> = all
                .clone()
                .filter(|&v| !self.vcpus[v as usize].basic.is_empty())
                .collect();
            if !with_context.is_empty() {
                return Ok(with_context);
            }
        }
        Ok(all.collect())
    }

    fn hvm_context(&mut self) -> BResult<Vec<u8>> {
        match self.guest {
            GuestType::X86Hvm => Ok(self.hvm_context.clone()),
            GuestType::X86Pv => Err(not_hvm("get HVM context")),
        }
    }

    fn set_hvm_context(&mut self, data: &[u8]) -> BResult<()> {
        if self.guest != GuestType::X86Hvm {
            return Err(not_hvm("set HVM context"));
        }
        if data.is_empty() {
            return Err(einval("set HVM context", "empty context"));
        }
        self.hvm_context = data.to_vec();
        Ok(())
    }

    fn hvm_param(&mut self, index: u64) -> BResult<u64> {
        match self.guest {
            GuestType::X86Hvm => Ok(self.hvm_params.get(&index).copied().unwrap_or(0)),
            GuestType::X86Pv => Err(not_hvm("get HVM param")),
        }
    }

    fn set_hvm_param(&mut self, index: u64, value: u64) -> BResult<()> {
        if self.guest != GuestType::X86Hvm {
            return Err(not_hvm("set HVM param"));
        }
        self.hvm_params.insert(index, value);
        self.forget_workload_layout();
        Ok(())
    }

    fn tsc_info(&mut self) -> BResult<TscInfo> {
        Ok(self.tsc)
    }

    fn set_tsc_info(&mut self, tsc: TscInfo) -> BResult<()> {
        self.tsc = tsc;
        Ok(())
    }

    fn shared_info(&mut self) -> BResult<Vec<u8>> {
        match self.guest {
            GuestType::X86Pv => Ok(self.shared_info.clone()),
            GuestType::X86Hvm => Err(not_pv("get shared info")),
        }
    }

    fn set_shared_info(&mut self, page: &[u8]) -> BResult<()> {
        if self.guest != GuestType::X86Pv {
            return Err(not_pv("set shared info"));
        }
        if page.len() != PAGE_SIZE {
            return Err(einval(
                "set shared info",
                format!("{} octets, a page is {PAGE_SIZE}", page.len()),
            ));
        }
        self.shared_info = page.to_vec();
        Ok(())
    }

    fn cpu_policy(&mut self) -> BResult<(Vec<u8>, Vec<u8>)> {
        Ok((self.cpuid_policy.clone(), self.msr_policy.clone()))
    }

    fn set_cpu_policy(&mut self, cpuid: &[u8], msrs: &[u8]) -> BResult<()> {
        use libxc::{CpuidLeaf, MsrEntry};
        if !cpuid.len().is_multiple_of(CpuidLeaf::SIZE)
            || !msrs.len().is_multiple_of(MsrEntry::SIZE)
        {
            return Err(einval(
                "set CPU policy",
                format!(
                    "{} octets of CPUID leaves ({} each), {} of MSRs ({} each)",
                    cpuid.len(),
                    CpuidLeaf::SIZE,
                    msrs.len(),
                    MsrEntry::SIZE
                ),
            ));
        }
        self.cpuid_policy = cpuid.to_vec();
        self.msr_policy = msrs.to_vec();
        Ok(())
    }

    fn enable_logdirty(&mut self) -> BResult<()> {
        self.dirty.enable();
        Ok(())
    }

    fn disable_logdirty(&mut self) -> BResult<()> {
        self.dirty.disable();
        Ok(())
    }

    fn clean_dirty(&mut self, bitmap: &mut Bitmap, _final_pass: bool) -> BResult<u64> {
        self.dirty.clean(bitmap)
    }

    fn peek_dirty(&mut self) -> BResult<u64> {
        self.dirty.peek()
    }

    fn pv_p2m(&mut self) -> BResult<(Vec<u64>, Vec<u64>)> {
        match self.guest {
            GuestType::X86Pv => Ok((self.p2m.clone(), self.p2m_frames.clone())),
            GuestType::X86Hvm => Err(not_pv("pv_p2m")),
        }
    }

    fn mfn_to_pfn(&mut self, mfn: u64) -> Option<u64> {
        match self.guest {
            GuestType::X86Pv => self.m2p.get(&mfn).copied(),
            GuestType::X86Hvm => None,
        }
    }

    fn set_address_size(&mut self, width: u8) -> BResult<()> {
        if self.guest != GuestType::X86Pv {
            return Err(not_pv("set_address_size"));
        }
        if PvLayout::for_width(width).is_none() {
            return Err(einval(
                "set_address_size",
                format!("guest width {width}; 4 or 8 octets"),
            ));
        }
        self.width = width;
        Ok(())
    }

    fn expand_p2m(&mut self, max_pfn: u64) -> BResult<()> {
        if self.guest != GuestType::X86Pv {
            return Err(not_pv("expand_p2m"));
        }
        if max_pfn >= MAX_PFNS {
            return Err(BackendError::new(
                "expand_p2m",
                format!("max_pfn {max_pfn:#x} is beyond the simulator's {MAX_PFNS:#x} pfns"),
            )
            .errno(errno::ERANGE));
        }
        if max_pfn + 1 > self.p2m.len() as u64 {
            self.p2m.resize(max_pfn as usize + 1, INVALID_MFN);
            self.mem.reserve(max_pfn + 1);
            self.p2m_generation += 1;
        }
        Ok(())
    }

    fn write_p2m(&mut self, frames: &[u64]) -> BResult<()> {
        if self.guest != GuestType::X86Pv {
            return Err(not_pv("write_p2m"));
        }
        self.pv_write_p2m(frames)
    }

    fn pin_page_tables(&mut self, tables: &[(u64, PageType)]) -> BResult<()> {
        if self.guest != GuestType::X86Pv {
            return Err(not_pv("pin_page_tables"));
        }
        for &(pfn, t) in tables {
            self.pv_pin(pfn, t)?;
        }
        self.forget_workload_layout();
        Ok(())
    }

    fn p2m_generation(&mut self) -> BResult<u64> {
        Ok(self.p2m_generation)
    }

    fn now(&self) -> Duration {
        self.clock.now()
    }
}
