//! [`XenDomain`]: one domain of the running hypervisor as the save and restore drivers see it.

use super::ffi::{self, cmd, dominf, shadow_op, XenDomctl};
use super::p2m::{self, arch_field, ArchField};
use super::sys::{HypercallBuffer, Mapping, Xc};
use super::types_ahead::{self, TypesAhead};
use crate::x86::{PvLayout, StartInfo};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use xenmig_drivers::domain::{
    errno, BResult, BackendError, Bitmap, Domain, DomainInfo, GuestType, PageType, TscInfo,
    VcpuState, PAGE_SIZE,
};

use crate::limits::PFINFO_BATCH;
/// `HVM_PARAM_STORE_PFN` and `HVM_PARAM_CONSOLE_PFN`.
const HVM_PARAM_STORE_PFN: u32 = 1;
const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// Octets of the m2p chunks Xen lists (`M2P_CHUNK_SIZE`, 2 MiB).
const M2P_CHUNK: u64 = 1 << 21;

/// The domains serving a restored guest's xenstore and console rings, whose grant entries a
/// restore seeds (as libxc's `xc_dom_gnttab_seed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingBackends {
    /// The domain serving xenstore.
    pub store_domid: u32,
    /// The domain serving the console.
    pub console_domid: u32,
}

/// How many [`M2P_CHUNK`]s hold the m2p of a host whose `XENMEM_maximum_ram_page` is
/// `max_page` (libxc's `M2P_CHUNKS`).
fn m2p_chunks(max_page: u64) -> usize {
    (max_page.saturating_mul(8).div_ceil(M2P_CHUNK)) as usize
}

/// The machine-to-physical table, mapped read-only from `DOMID_XEN`.
struct M2p {
    map: Mapping,
    max_mfn: u64,
}

impl M2p {
    fn get(&self, mfn: u64) -> Option<u64> {
        if mfn > self.max_mfn {
            return None;
        }
        self.map.read_u64(mfn as usize * 8).ok()
    }
}

/// A domain of the running Xen, over libxenctrl and libxenforeignmemory.
///
/// Besides what the [`Domain`] calls ask, a restore does what libxc's `stream_complete` does
/// and the drivers cannot: it points the PV start_info page at the new domain's shared info
/// (when vcpu 0's context is set) and seeds the grant table entries of the xenstore and
/// console rings (after the PV p2m is written, or the HVM context set), when the domain was
/// opened with [`XenDomain::open_for_restore`].
pub struct XenDomain {
    // Mappings and buffers first: fields drop in order, the interface last.
    /// Save: the last batch lent, kept mapped until the next one is, then unmapped in the
    /// background while that one is written out.
    lent: Option<Mapping>,
    /// Restore: the last batch filled, likewise; every mapping of the restore's is gone
    /// before the domain's state is set ([`XenDomain::settle`]).
    filled: Option<Mapping>,
    m2p: Option<M2p>,
    shinfo: Option<Mapping>,
    pfinfo: Option<HypercallBuffer>,
    dirty: Option<HypercallBuffer>,
    /// HVM save of a suspended domain: page types looked up ahead of the walk.
    types_ahead: Option<TypesAhead>,
    /// Whether looking types up ahead may still start (once per domain, never once log-dirty
    /// mode was enabled: pages of a live domain can change type).
    ahead_allowed: bool,
    xc: Xc,
    domid: u32,
    backends: Option<RingBackends>,
    /// PV: pfn → mfn. Save: the guest's p2m as mapped at setup; restore: built by populate.
    p2m: Vec<u64>,
    /// PV save: the pfns of the frames holding the guest's p2m.
    p2m_frame_pfns: Vec<u64>,
    p2m_mapped: bool,
    /// PV restore: the xenstore and console ring mfns found in start_info.
    rings: Option<(u64, u64)>,
    timings: Timings,
}

/// An x86 superpage (2 MiB) as a populate extent order, and its pages.
const SUPERPAGE_ORDER: u32 = 9;
const SUPERPAGE_PFNS: u64 = 1 << SUPERPAGE_ORDER;

/// Splits pfns to populate into the starts of whole superpage-aligned runs (all
/// [`SUPERPAGE_PFNS`] pfns of the run present, in order, in one stretch of `pfns`) and the
/// pfns outside such runs.
fn superpage_runs(pfns: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let mut bases = Vec::new();
    let mut singles = Vec::new();
    let mut i = 0;
    while let Some(&p) = pfns.get(i) {
        let n = SUPERPAGE_PFNS as usize;
        let whole = p % SUPERPAGE_PFNS == 0
            && pfns
                .get(i..i + n)
                .is_some_and(|run| run.iter().zip(p..).all(|(&q, want)| q == want));
        if whole {
            bases.push(p);
            i += n;
        } else {
            singles.push(p);
            i += 1;
        }
    }
    (bases, singles)
}

/// Calls and time spent per backend operation (`XENMIG_XEN_TIMING`); a clone adds to the
/// same counts.
#[derive(Default, Clone)]
pub(crate) struct Timings {
    ops: Rc<RefCell<BTreeMap<&'static str, (u64, Duration)>>>,
}

impl Timings {
    pub(crate) fn start(&self, op: &'static str) -> TimedCall {
        TimedCall {
            ops: self.ops.clone(),
            op,
            t0: Instant::now(),
        }
    }
}

pub(crate) struct TimedCall {
    ops: Rc<RefCell<BTreeMap<&'static str, (u64, Duration)>>>,
    op: &'static str,
    t0: Instant,
}

impl Drop for TimedCall {
    fn drop(&mut self) {
        let mut ops = self.ops.borrow_mut();
        let e = ops.entry(self.op).or_default();
        e.0 += 1;
        e.1 += self.t0.elapsed();
    }
}

impl XenDomain {
    /// Opens domain `domid` (to save it, or as a restore target without grant seeding).
    pub fn open(domid: u32) -> BResult<XenDomain> {
        let xc = Xc::open()?;
        xc.getinfo(domid)?;
        Ok(XenDomain {
            lent: None,
            filled: None,
            m2p: None,
            shinfo: None,
            pfinfo: None,
            types_ahead: None,
            ahead_allowed: true,
            dirty: None,
            xc,
            domid,
            backends: None,
            p2m: Vec::new(),
            p2m_frame_pfns: Vec::new(),
            p2m_mapped: false,
            rings: None,
            timings: Timings::default(),
        })
    }

    /// Opens the empty domain libxl created for a restore; the grant table will be seeded for
    /// `backends` when the stream completes.
    pub fn open_for_restore(domid: u32, backends: RingBackends) -> BResult<XenDomain> {
        let mut d = XenDomain::open(domid)?;
        d.backends = Some(backends);
        Ok(d)
    }

    /// The domain's id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// Unmaps the restore's last batch and waits for the batches unmapped in the background:
    /// no writable mapping of the domain's frames is left in this process when its state is
    /// set (a frame Xen validates as a page table must have none).
    fn settle(&mut self) {
        if let Some(m) = self.filled.take() {
            let _t = self.timings.start("unmap_pages");
            drop(m);
        }
        self.xc.wait_for_releases();
    }

    /// Where time spent outside the backend (the stream) can be counted with the backend's.
    pub(crate) fn timer(&self) -> Timings {
        self.timings.clone()
    }

    /// Time spent in the backend so far, by operation, longest first: `op calls seconds`.
    pub fn timings(&self) -> Vec<(&'static str, u64, Duration)> {
        let mut v: Vec<_> = self
            .timings
            .ops
            .borrow()
            .iter()
            .map(|(op, (n, t))| (*op, *n, *t))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.2));
        v
    }

    /// The hypervisor's version (major, minor), for the domain header.
    pub fn xen_version(&self) -> BResult<(u32, u32)> {
        self.xc.version()
    }

    fn raw_info(&self) -> BResult<ffi::DomainInfoRaw> {
        self.xc.getinfo(self.domid)
    }

    fn is_hvm(&self) -> BResult<bool> {
        Ok(self.raw_info()?.flags & dominf::HVM_GUEST != 0)
    }

    fn layout(&self) -> BResult<&'static PvLayout> {
        let w = self.xc.guest_width(self.domid)?;
        PvLayout::for_width(w).ok_or_else(|| {
            BackendError::new("guest width", format!("d{}: width {w}", self.domid))
                .errno(errno::EINVAL)
        })
    }

    fn pv_only(&self, op: &'static str) -> BResult<&'static PvLayout> {
        if self.is_hvm()? {
            return Err(BackendError::new(op, "not a PV domain").errno(errno::EINVAL));
        }
        self.layout()
    }

    fn ensure_m2p(&mut self) -> BResult<&M2p> {
        if self.m2p.is_none() {
            let max_mfn = self.xc.maximum_ram_page()?;
            // Xen's max_page is one past the highest mfn: the table holds max_mfn entries,
            // and Xen lists exactly the chunks they fill (asking for one more fails the call,
            // as on a host whose memory ends on a 1 GiB boundary).
            let chunks = m2p_chunks(max_mfn);
            let bases = self.xc.machphys_mfn_list(chunks)?;
            let per_chunk = M2P_CHUNK / PAGE_SIZE as u64;
            let frames: Vec<u64> = bases
                .iter()
                .flat_map(|&b| (0..per_chunk).map(move |i| b + i))
                .collect();
            let map = self
                .xc
                .map("map the m2p", ffi::DOMID_XEN, ffi::PROT_READ, &frames)?;
            self.m2p = Some(M2p { map, max_mfn });
        }
        self.m2p
            .as_ref()
            .ok_or_else(|| BackendError::new("map the m2p", "not mapped"))
    }

    /// The shared info page, mapped read-only once.
    fn shinfo(&mut self) -> BResult<&Mapping> {
        if self.shinfo.is_none() {
            let frame = self.raw_info()?.shared_info_frame;
            let m = self
                .xc
                .map("map shared info", self.domid, ffi::PROT_READ, &[frame])?;
            self.shinfo = Some(m);
        }
        self.shinfo
            .as_ref()
            .ok_or_else(|| BackendError::new("map shared info", "not mapped"))
    }

    fn shinfo_copy(&mut self) -> BResult<Vec<u8>> {
        let m = self.shinfo()?;
        let mut page = vec![0u8; PAGE_SIZE];
        m.read(0, &mut page)?;
        Ok(page)
    }

    /// Locates and copies the guest's p2m (save).
    fn map_p2m(&mut self) -> BResult<()> {
        if self.p2m_mapped {
            return Ok(());
        }
        let l = self.pv_only("map the p2m")?;
        let max_mfn = self.ensure_m2p()?.max_mfn;
        let shinfo = self.shinfo_copy()?;
        let field = |f| l.get(&shinfo, arch_field(l, f)).unwrap_or(0);
        let nr = field(ArchField::MaxPfn);
        if nr == 0 {
            return Err(BackendError::new(
                "map the p2m",
                format!(
                    "d{}: the guest has published no p2m (arch.max_pfn is 0)",
                    self.domid
                ),
            )
            .errno(errno::EINVAL));
        }
        let p2m_cr3 = field(ArchField::P2mCr3);
        let (xc, domid) = (self.xc.clone(), self.domid);
        let mut read = move |mfns: &[u64]| -> BResult<Vec<u8>> {
            let m = xc.map("map the p2m", domid, ffi::PROT_READ, mfns)?;
            let mut v = vec![0u8; m.len()];
            m.read(0, &mut v)?;
            Ok(v)
        };
        let frames = if p2m_cr3 != 0 {
            p2m::list_frames(
                l,
                max_mfn,
                nr - 1,
                p2m_cr3,
                field(ArchField::P2mVaddr),
                &mut read,
            )?
        } else {
            p2m::tree_frames(
                l,
                max_mfn,
                nr - 1,
                field(ArchField::FrameListList),
                &mut read,
            )?
        };
        let pages = read(&frames.mfns)?;
        self.p2m = p2m::decode_entries(l.width, &pages, frames.max_pfn as usize + 1)?;
        let mut pfns = Vec::with_capacity(frames.mfns.len());
        for (x, &mfn) in frames.mfns.iter().enumerate() {
            let pfn = self.mfn_to_pfn(mfn).ok_or_else(|| {
                BackendError::new(
                    "map the p2m",
                    format!("bad mfn {mfn:#x} in p2m_frame_list[{x}]"),
                )
                .errno(errno::ERANGE)
            })?;
            pfns.push(pfn);
        }
        self.p2m_frame_pfns = pfns;
        self.p2m_mapped = true;
        Ok(())
    }

    fn p2m_entry(&self, pfn: u64) -> Option<u64> {
        self.p2m
            .get(pfn as usize)
            .copied()
            .filter(|&m| m != ffi::INVALID_MFN)
    }

    fn mfn_of(&self, op: &'static str, pfn: u64) -> BResult<u64> {
        self.p2m_entry(pfn).ok_or_else(|| {
            BackendError::new(op, format!("pfn {pfn:#x} has no frame")).errno(errno::ERANGE)
        })
    }

    fn domctl(&self, op: &'static str, d: &mut XenDomctl) -> BResult<()> {
        self.xc.domctl(op, d)
    }

    /// PV restore, vcpu 0: start_info gets the new shared info's address; the ring frames
    /// (already machine frames, rewritten by the driver) are kept for grant seeding.
    fn fix_start_info(&mut self, l: &PvLayout, ctx: &[u8]) -> BResult<()> {
        let si = StartInfo::for_width(l.width as u8);
        let mfn = l
            .get(ctx, l.edx)
            .ok_or_else(|| BackendError::new("start_info", "short vcpu context"))?;
        let shared_info = self.raw_info()?.shared_info_frame << crate::limits::PAGE_SHIFT;
        let mut m = self.xc.map(
            "map start_info",
            self.domid,
            ffi::PROT_READ | ffi::PROT_WRITE,
            &[mfn],
        )?;
        let mut page = vec![0u8; PAGE_SIZE];
        m.read(0, &mut page)?;
        let store = l.get(&page, si.store_mfn).unwrap_or(u64::MAX);
        let console = l.get(&page, si.console_mfn).unwrap_or(u64::MAX);
        let mut word = vec![0u8; l.width];
        l.set(&mut word, 0, shared_info);
        m.write(si.shared_info, &word)?;
        self.rings = Some((store, console));
        Ok(())
    }

    /// Grants the xenstore and console backends access to the rings (entries 0 and 1 of the
    /// guest's grant table), as `xc_dom_gnttab_seed` does at the end of libxc's restore.
    pub fn seed_grant_table(&mut self, console_gfn: u64, store_gfn: u64) -> BResult<()> {
        let Some(b) = self.backends else {
            return Ok(());
        };
        let mut table = self.xc.map_resource(
            "seed the grant table",
            self.domid,
            ffi::XENMEM_RESOURCE_GRANT_TABLE,
            ffi::XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED,
            0,
            1,
        )?;
        for (index, backend, gfn) in [
            (ffi::GNTTAB_RESERVED_CONSOLE, b.console_domid, console_gfn),
            (ffi::GNTTAB_RESERVED_XENSTORE, b.store_domid, store_gfn),
        ] {
            if backend == self.domid || gfn == u64::MAX {
                continue;
            }
            let off = index * std::mem::size_of::<ffi::GrantEntryV1>();
            // domid and frame first, then the flags that make the entry valid.
            table.write(off + 2, &(backend as u16).to_le_bytes())?;
            table.write(off + 4, &(gfn as u32).to_le_bytes())?;
            table.write(off, &ffi::GTF_PERMIT_ACCESS.to_le_bytes())?;
        }
        Ok(())
    }

    fn dirty_buffer(&mut self, pages: u64) -> BResult<&mut HypercallBuffer> {
        let need = (pages.div_ceil(64) * 8) as usize;
        let small = match &self.dirty {
            Some(b) => b.len() < need,
            None => true,
        };
        if small {
            self.dirty = Some(self.xc.buffer(need)?);
        }
        self.dirty
            .as_mut()
            .ok_or_else(|| BackendError::new("logdirty", "no bitmap"))
    }

    fn logdirty(&mut self, sop: u32, pages: u64, mode: u32) -> BResult<(u64, Vec<u8>)> {
        let domid = self.domid;
        let xc = self.xc.clone();
        let buf = self.dirty_buffer(pages)?;
        let stats = xc.logdirty(domid, sop, buf, pages, mode)?;
        let bytes = buf.to_vec((pages.div_ceil(64) * 8) as usize)?;
        Ok((stats.dirty_count as u64, bytes))
    }
}

impl Domain for XenDomain {
    /// Every read maps the frames and unmaps them: a batch is read in one go.
    fn reads_whole_batches(&self) -> bool {
        true
    }

    fn info(&mut self) -> BResult<DomainInfo> {
        let _t = self.timings.start("info");
        let raw = self.raw_info()?;
        let hvm = raw.flags & dominf::HVM_GUEST != 0;
        let (guest, guest_width, pt_levels) = if hvm {
            (GuestType::X86Hvm, 8, 4)
        } else {
            let w = self.xc.guest_width(self.domid)?;
            (GuestType::X86Pv, w, if w == 4 { 3 } else { 4 })
        };
        let max_pfn = if !hvm && !self.p2m.is_empty() {
            self.p2m.len() as u64 - 1
        } else {
            self.xc.maximum_gpfn(self.domid)?
        };
        let reason = (raw.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK;
        Ok(DomainInfo {
            guest,
            guest_width,
            pt_levels,
            max_pfn,
            max_vcpu_id: raw.max_vcpu_id,
            suspended: raw.flags & dominf::SHUTDOWN != 0 && reason == ffi::SHUTDOWN_SUSPEND,
        })
    }

    /// Xen's `max_pages` for the domain (what libxl allowed it when it created it), and the
    /// pfns that allowance can reach; a pfn Xen already has beyond that counts too.
    fn memory_limits(&mut self) -> BResult<xenmig_drivers::domain::MemoryLimits> {
        let _t = self.timings.start("memory_limits");
        let raw = self.raw_info()?;
        let max_gpfn = self.xc.maximum_gpfn(self.domid)?;
        Ok(xenmig_drivers::domain::MemoryLimits::for_pages(
            max_gpfn,
            raw.max_pages,
        ))
    }

    fn p2m_size(&mut self) -> BResult<u64> {
        let _t = self.timings.start("p2m_size");
        if self.is_hvm()? {
            return self.xc.nr_gpfns(self.domid);
        }
        self.map_p2m()?;
        Ok(self.p2m.len() as u64)
    }

    fn pfn_to_gfn(&mut self, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()> {
        let _t = self.timings.start("pfn_to_gfn");
        if self.is_hvm()? {
            for (o, &p) in out.iter_mut().zip(pfns) {
                *o = Some(p);
            }
            return Ok(());
        }
        for (o, &p) in out.iter_mut().zip(pfns) {
            *o = self.p2m_entry(p);
        }
        Ok(())
    }

    fn page_types(&mut self, gfns: &[u64], out: &mut [PageType]) -> BResult<()> {
        let _t = self.timings.start("page_types");
        if let Some(ahead) = self.types_ahead.as_mut() {
            if ahead.take(gfns, out).is_some() {
                return Ok(());
            }
            // The walk went elsewhere (or a lookup there failed): stop it, and look up here.
            self.types_ahead = None;
        }
        // A walk from pfn 0 of a suspended HVM domain: the rest is looked up ahead.
        let walk_starts = self.ahead_allowed
            && gfns.first() == Some(&0)
            && gfns.iter().zip(0u64..).all(|(&g, p)| g == p);
        if self.pfinfo.is_none() {
            self.pfinfo = Some(self.xc.buffer(PFINFO_BATCH * 8)?);
        }
        let buf = self
            .pfinfo
            .as_mut()
            .ok_or_else(|| BackendError::new("getpageframeinfo3", "no buffer"))?;
        types_ahead::lookup(&self.xc, buf, self.domid, gfns, out)?;
        if walk_starts {
            self.ahead_allowed = false;
            let raw = self.raw_info()?;
            let reason = (raw.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK;
            let suspended = raw.flags & dominf::SHUTDOWN != 0 && reason == ffi::SHUTDOWN_SUSPEND;
            if suspended && raw.flags & dominf::HVM_GUEST != 0 {
                let end = self.xc.nr_gpfns(self.domid)?;
                let from = gfns.len() as u64;
                if end > from {
                    self.types_ahead = Some(TypesAhead::start(self.domid, from, end)?);
                }
            }
        }
        Ok(())
    }

    fn read_pages(&mut self, gfns: &[u64], out: &mut [u8]) -> BResult<()> {
        let _t = self.timings.start("read_pages");
        if out.len() != gfns.len() * PAGE_SIZE {
            return Err(BackendError::new("read pages", "buffer size mismatch"));
        }
        if gfns.is_empty() {
            return Ok(());
        }
        let m = self
            .xc
            .map("map guest pages", self.domid, ffi::PROT_READ, gfns)?;
        m.read(0, out)
    }

    fn lends_pages(&self) -> bool {
        true
    }

    /// Maps the frames and lends the mapping itself.
    fn lend_pages(
        &mut self,
        gfns: &[u64],
        f: &mut dyn FnMut(&[&[u8]]) -> BResult<()>,
    ) -> BResult<()> {
        if gfns.is_empty() {
            return f(&[]);
        }
        let m = {
            let _t = self.timings.start("map_pages");
            self.xc
                .map("map guest pages", self.domid, ffi::PROT_READ, gfns)?
        };
        // The previous batch is unmapped while this one is written: unmapping takes the
        // address space's lock, writing from a mapping made already does not.
        if let Some(old) = self.lent.take() {
            let _t = self.timings.start("unmap_pages");
            old.release_in_background();
        }
        let r = {
            let _t = self.timings.start("lent_pages");
            f(&[m.lend()])
        };
        self.lent = Some(m);
        r
    }

    fn write_pages(&mut self, gfns: &[u64], data: &[u8]) -> BResult<()> {
        let _t = self.timings.start("write_pages");
        if data.len() != gfns.len() * PAGE_SIZE {
            return Err(BackendError::new("write pages", "buffer size mismatch"));
        }
        if gfns.is_empty() {
            return Ok(());
        }
        let mut m = self.xc.map(
            "map guest pages",
            self.domid,
            ffi::PROT_READ | ffi::PROT_WRITE,
            gfns,
        )?;
        m.write(0, data)
    }

    /// Maps the frames writable and lends the mapping itself.
    fn fill_pages(
        &mut self,
        gfns: &[u64],
        f: &mut dyn FnMut(&mut [&mut [u8]]) -> BResult<()>,
    ) -> BResult<()> {
        if gfns.is_empty() {
            return f(&mut []);
        }
        let mut m = {
            let _t = self.timings.start("map_pages");
            self.xc.map(
                "map guest pages",
                self.domid,
                ffi::PROT_READ | ffi::PROT_WRITE,
                gfns,
            )?
        };
        if let Some(old) = self.filled.take() {
            let _t = self.timings.start("unmap_pages");
            old.release_in_background();
        }
        let r = {
            let _t = self.timings.start("filled_pages");
            f(&mut [m.lend_mut()?])
        };
        self.filled = Some(m);
        r
    }

    fn populate(&mut self, pfns: &[u64]) -> BResult<()> {
        let _t = self.timings.start("populate");
        if pfns.is_empty() {
            return Ok(());
        }
        let hvm = self.is_hvm()?;
        // Whole aligned 2 MiB runs as one extent each: one allocation and one p2m update in
        // Xen instead of 512 (and 2 MiB mappings for an HVM guest). What Xen cannot give as
        // superpages is populated page by page.
        let (bases, mut singles) = superpage_runs(pfns);
        let mut got: Vec<(u64, u64)> = Vec::new();
        if !bases.is_empty() {
            let (done, firsts) =
                self.xc
                    .populate_physmap_order(self.domid, &bases, SUPERPAGE_ORDER)?;
            for (k, &base) in bases.iter().enumerate() {
                let run = base..base + SUPERPAGE_PFNS;
                match firsts.get(k) {
                    Some(&first) if k < done => {
                        got.extend(run.map(|pfn| (pfn, first.wrapping_add(pfn - base))))
                    }
                    _ => singles.extend(run),
                }
            }
        }
        if !singles.is_empty() {
            let mfns = self.xc.populate_physmap_exact(self.domid, &singles)?;
            got.extend(singles.iter().copied().zip(mfns));
        }
        if hvm {
            return Ok(());
        }
        for (pfn, mfn) in got {
            if mfn == ffi::INVALID_MFN {
                return Err(BackendError::new(
                    "populate_physmap",
                    format!("pfn {pfn:#x} got no frame"),
                )
                .errno(errno::ENOMEM));
            }
            let i = pfn as usize;
            if i >= self.p2m.len() {
                self.p2m.resize(i + 1, ffi::INVALID_MFN);
            }
            if let Some(slot) = self.p2m.get_mut(i) {
                *slot = mfn;
            }
        }
        Ok(())
    }

    fn vcpu_state(&mut self, vcpu: u32, which: VcpuState) -> BResult<Vec<u8>> {
        let _t = self.timings.start("vcpu_state");
        let domid = self.domid;
        match which {
            VcpuState::Basic => {
                if self.is_hvm()? {
                    return Ok(Vec::new());
                }
                let l = self.layout()?;
                let mut ctx = self.xc.vcpu_context(domid, vcpu)?;
                ctx.truncate(l.vcpu_context_size);
                if l.width == 8 {
                    // Xen reports a 64-bit guest's user page table in ctrlreg[1] as a bare cr3
                    // value; the stream marks it valid with bit 0 (libxc's saver writes
                    // `1 | pfn << 12`), which is what the drivers convert.
                    let cr1 = l.get(&ctx, l.cr(1)).unwrap_or(0);
                    if cr1 != 0 {
                        l.set(&mut ctx, l.cr(1), cr1 | 1);
                    }
                }
                Ok(ctx)
            }
            VcpuState::Extended => {
                let mut d = XenDomctl::new(cmd::GET_EXT_VCPUCONTEXT, domid);
                d.u.ext_vcpucontext = ffi::ExtVcpuContext {
                    vcpu,
                    size: 0,
                    rest: [0; 7],
                };
                self.domctl("get_ext_vcpucontext", &mut d)?;
                // SAFETY: the payload is plain data that Xen filled in as this member.
                let size = unsafe { d.u.ext_vcpucontext.size } as usize;
                Ok(d.payload_bytes()[..size.min(128)].to_vec())
            }
            VcpuState::Xsave => {
                let mut d = XenDomctl::new(cmd::GETVCPUEXTSTATE, domid);
                d.u.vcpuextstate = ffi::VcpuExtState {
                    vcpu,
                    ..Default::default()
                };
                self.domctl("getvcpuextstate", &mut d)?;
                // SAFETY: the payload is plain data that Xen filled in as this member.
                let q = unsafe { d.u.vcpuextstate };
                if q.xfeature_mask == 0 {
                    return Ok(Vec::new());
                }
                let buf = self.xc.buffer(q.size as usize)?;
                d.u.vcpuextstate = ffi::VcpuExtState {
                    buffer: buf.handle(),
                    ..q
                };
                self.domctl("getvcpuextstate", &mut d)?;
                // SAFETY: as above.
                let size = unsafe { d.u.vcpuextstate.size } as usize;
                buf.to_vec(size.min(buf.len()))
            }
            VcpuState::Msrs => {
                let mut d = XenDomctl::new(cmd::GET_VCPU_MSRS, domid);
                d.u.vcpu_msrs = ffi::VcpuMsrs {
                    vcpu,
                    ..Default::default()
                };
                self.domctl("get_vcpu_msrs", &mut d)?;
                // SAFETY: the payload is plain data that Xen filled in as this member.
                let count = unsafe { d.u.vcpu_msrs.msr_count } as usize;
                if count == 0 {
                    return Ok(Vec::new());
                }
                let buf = self.xc.buffer(count * 16)?;
                d.u.vcpu_msrs = ffi::VcpuMsrs {
                    vcpu,
                    msr_count: count as u32,
                    msrs: buf.handle(),
                };
                self.domctl("get_vcpu_msrs", &mut d)?;
                // SAFETY: as above.
                let count = unsafe { d.u.vcpu_msrs.msr_count } as usize;
                buf.to_vec((count * 16).min(buf.len()))
            }
        }
    }

    fn set_vcpu_state(&mut self, vcpu: u32, which: VcpuState, data: &[u8]) -> BResult<()> {
        self.settle();
        let _t = self.timings.start("set_vcpu_state");
        let domid = self.domid;
        match which {
            VcpuState::Basic => {
                let l = self.pv_only("set vcpu context")?;
                let mut ctx = data.to_vec();
                if vcpu == 0 {
                    self.fix_start_info(l, &ctx)?;
                }
                if l.width == 8 {
                    // The stream's valid bit is not part of the cr3 value (libxc's restorer
                    // hands Xen `mfn << 12`).
                    let cr1 = l.get(&ctx, l.cr(1)).unwrap_or(0);
                    l.set(&mut ctx, l.cr(1), cr1 & !1);
                }
                let flags = l.get(&ctx, ffi::VCPU_CONTEXT_FLAGS).unwrap_or(0);
                l.set(&mut ctx, ffi::VCPU_CONTEXT_FLAGS, flags | ffi::VGCF_ONLINE);
                self.xc.set_vcpu_context(domid, vcpu, &ctx)
            }
            VcpuState::Extended => {
                if data.len() > 128 {
                    return Err(BackendError::new(
                        "set_ext_vcpucontext",
                        format!("{} octets, at most 128", data.len()),
                    )
                    .errno(errno::EINVAL));
                }
                let mut d = XenDomctl::new(cmd::SET_EXT_VCPUCONTEXT, domid);
                d.set_payload_bytes(data);
                // Writing a union field is safe: only the vcpu field is rewritten.
                d.u.ext_vcpucontext.vcpu = vcpu;
                self.domctl("set_ext_vcpucontext", &mut d)
            }
            VcpuState::Xsave => {
                let mut buf = self.xc.buffer(data.len())?;
                buf.write(0, data)?;
                let mut d = XenDomctl::new(cmd::SETVCPUEXTSTATE, domid);
                d.u.vcpuextstate = ffi::VcpuExtState {
                    vcpu,
                    xfeature_mask: 0,
                    size: data.len() as u64,
                    buffer: buf.handle(),
                };
                self.domctl("setvcpuextstate", &mut d)
            }
            VcpuState::Msrs => {
                if !data.len().is_multiple_of(16) {
                    return Err(BackendError::new(
                        "set_vcpu_msrs",
                        format!("{} octets is not a whole number of entries", data.len()),
                    )
                    .errno(errno::EINVAL));
                }
                let mut buf = self.xc.buffer(data.len())?;
                buf.write(0, data)?;
                let mut d = XenDomctl::new(cmd::SET_VCPU_MSRS, domid);
                d.u.vcpu_msrs = ffi::VcpuMsrs {
                    vcpu,
                    msr_count: (data.len() / 16) as u32,
                    msrs: buf.handle(),
                };
                self.domctl("set_vcpu_msrs", &mut d)
            }
        }
    }

    fn online_vcpus(&mut self) -> BResult<Vec<u32>> {
        let _t = self.timings.start("online_vcpus");
        let max = self.raw_info()?.max_vcpu_id;
        if max == u32::MAX {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for v in 0..=max {
            if self.xc.vcpu_online(self.domid, v)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    fn hvm_context(&mut self) -> BResult<Vec<u8>> {
        let _t = self.timings.start("hvm_context");
        self.xc.hvm_context(self.domid)
    }

    fn set_hvm_context(&mut self, data: &[u8]) -> BResult<()> {
        self.settle();
        let _t = self.timings.start("set_hvm_context");
        self.xc.set_hvm_context(self.domid, data)?;
        if self.backends.is_some() {
            // The end of an HVM restore (libxc seeds right after setting the context).
            let store = self.xc.hvm_param(self.domid, HVM_PARAM_STORE_PFN)?;
            let console = self.xc.hvm_param(self.domid, HVM_PARAM_CONSOLE_PFN)?;
            self.seed_grant_table(console, store)?;
        }
        Ok(())
    }

    fn hvm_param(&mut self, index: u64) -> BResult<u64> {
        self.xc.hvm_param(self.domid, index as u32)
    }

    fn set_hvm_param(&mut self, index: u64, value: u64) -> BResult<()> {
        self.settle();
        self.xc.set_hvm_param(self.domid, index as u32, value)
    }

    fn tsc_info(&mut self) -> BResult<TscInfo> {
        let _t = self.timings.start("tsc_info");
        let (mode, nsec, khz, incarnation) = self.xc.tsc_info(self.domid)?;
        Ok(TscInfo {
            mode,
            khz,
            nsec,
            incarnation,
        })
    }

    fn set_tsc_info(&mut self, t: TscInfo) -> BResult<()> {
        self.settle();
        let _t = self.timings.start("set_tsc_info");
        self.xc
            .set_tsc_info(self.domid, t.mode, t.nsec, t.khz, t.incarnation)
    }

    fn shared_info(&mut self) -> BResult<Vec<u8>> {
        let _t = self.timings.start("shared_info");
        self.pv_only("shared info")?;
        self.shinfo_copy()
    }

    fn set_shared_info(&mut self, page: &[u8]) -> BResult<()> {
        self.settle();
        let _t = self.timings.start("set_shared_info");
        self.pv_only("shared info")?;
        let frame = self.raw_info()?.shared_info_frame;
        let mut m = self.xc.map(
            "map shared info",
            self.domid,
            ffi::PROT_READ | ffi::PROT_WRITE,
            &[frame],
        )?;
        m.write(0, page.get(..PAGE_SIZE).unwrap_or(page))
    }

    fn cpu_policy(&mut self) -> BResult<(Vec<u8>, Vec<u8>)> {
        let _t = self.timings.start("cpu_policy");
        let mut d = XenDomctl::new(cmd::GET_CPU_POLICY, self.domid);
        d.u.cpu_policy = ffi::CpuPolicy::default();
        self.domctl("get_cpu_policy", &mut d)?;
        // SAFETY: the payload is plain data that Xen filled in as this member.
        let max = unsafe { d.u.cpu_policy };
        let leaves = self.xc.buffer(max.nr_leaves as usize * 24)?;
        let msrs = self.xc.buffer(max.nr_msrs as usize * 16)?;
        d.u.cpu_policy = ffi::CpuPolicy {
            nr_leaves: max.nr_leaves,
            nr_msrs: max.nr_msrs,
            leaves: leaves.handle(),
            msrs: msrs.handle(),
            ..Default::default()
        };
        self.domctl("get_cpu_policy", &mut d)?;
        // SAFETY: as above.
        let got = unsafe { d.u.cpu_policy };
        let cpuid = leaves.to_vec((got.nr_leaves as usize * 24).min(leaves.len()))?;
        let msr = msrs.to_vec((got.nr_msrs as usize * 16).min(msrs.len()))?;
        Ok((cpuid, msr))
    }

    fn set_cpu_policy(&mut self, cpuid: &[u8], msrs: &[u8]) -> BResult<()> {
        self.settle();
        let _t = self.timings.start("set_cpu_policy");
        let mut lb = self.xc.buffer(cpuid.len())?;
        lb.write(0, cpuid)?;
        let mut mb = self.xc.buffer(msrs.len())?;
        mb.write(0, msrs)?;
        let mut d = XenDomctl::new(cmd::SET_CPU_POLICY, self.domid);
        d.u.cpu_policy = ffi::CpuPolicy {
            nr_leaves: (cpuid.len() / 24) as u32,
            nr_msrs: (msrs.len() / 16) as u32,
            leaves: lb.handle(),
            msrs: mb.handle(),
            err_leaf: u32::MAX,
            err_subleaf: u32::MAX,
            err_msr: u32::MAX,
        };
        self.domctl("set_cpu_policy", &mut d).map_err(|mut e| {
            // SAFETY: the payload is plain data; Xen may have set the error fields.
            let p = unsafe { d.u.cpu_policy };
            e.detail = format!(
                "{}: leaf {:08x}, subleaf {:08x}, msr {:08x}",
                e.detail, p.err_leaf, p.err_subleaf, p.err_msr
            );
            e
        })
    }

    fn enable_logdirty(&mut self) -> BResult<()> {
        let _t = self.timings.start("enable_logdirty");
        self.ahead_allowed = false;
        self.types_ahead = None;
        self.xc
            .shadow_control(self.domid, shadow_op::ENABLE_LOGDIRTY)
    }

    fn disable_logdirty(&mut self) -> BResult<()> {
        let _t = self.timings.start("disable_logdirty");
        self.xc.shadow_control(self.domid, shadow_op::OFF)
    }

    fn clean_dirty(&mut self, bitmap: &mut Bitmap, final_pass: bool) -> BResult<u64> {
        let _t = self.timings.start("clean_dirty");
        let mode = if final_pass {
            shadow_op::LOGDIRTY_FINAL
        } else {
            0
        };
        let pages = bitmap.len();
        let (count, bytes) = self.logdirty(shadow_op::CLEAN, pages, mode)?;
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            let mut word = u64::from_ne_bytes(b);
            while word != 0 {
                let bit = word.trailing_zeros() as u64;
                word &= word - 1;
                bitmap.set(i as u64 * 64 + bit);
            }
        }
        Ok(count)
    }

    fn peek_dirty(&mut self) -> BResult<u64> {
        let _t = self.timings.start("peek_dirty");
        let pages = self.p2m_size()?;
        Ok(self.logdirty(shadow_op::PEEK, pages, 0)?.0)
    }

    fn pv_p2m(&mut self) -> BResult<(Vec<u64>, Vec<u64>)> {
        let _t = self.timings.start("pv_p2m");
        self.map_p2m()?;
        Ok((self.p2m.clone(), self.p2m_frame_pfns.clone()))
    }

    fn mfn_to_pfn(&mut self, mfn: u64) -> Option<u64> {
        let pfn = self.ensure_m2p().ok()?.get(mfn)?;
        (self.p2m_entry(pfn) == Some(mfn)).then_some(pfn)
    }

    fn set_address_size(&mut self, width: u8) -> BResult<()> {
        let _t = self.timings.start("set_address_size");
        let mut d = XenDomctl::new(cmd::SET_ADDRESS_SIZE, self.domid);
        d.u.address_size = ffi::AddressSize {
            size: width as u32 * 8,
        };
        self.domctl("set_address_size", &mut d)
    }

    fn expand_p2m(&mut self, max_pfn: u64) -> BResult<()> {
        let n = max_pfn as usize + 1;
        if n > self.p2m.len() {
            self.p2m.resize(n, ffi::INVALID_MFN);
        }
        Ok(())
    }

    fn write_p2m(&mut self, frames: &[u64]) -> BResult<()> {
        self.settle();
        let _t = self.timings.start("write_p2m");
        let l = self.pv_only("write the p2m")?;
        let mfns = frames
            .iter()
            .map(|&pfn| self.mfn_of("write the p2m", pfn))
            .collect::<BResult<Vec<u64>>>()?;
        let bytes = p2m::encode_entries(l.width, &self.p2m);
        if bytes.len() > mfns.len() * PAGE_SIZE {
            return Err(BackendError::new(
                "write the p2m",
                format!(
                    "{} entries need {} frames, the stream lists {}",
                    self.p2m.len(),
                    bytes.len().div_ceil(PAGE_SIZE),
                    mfns.len()
                ),
            )
            .errno(errno::ERANGE));
        }
        if !mfns.is_empty() {
            let mut m = self.xc.map(
                "map the p2m",
                self.domid,
                ffi::PROT_READ | ffi::PROT_WRITE,
                &mfns,
            )?;
            m.write(0, &bytes)?;
        }
        // The end of a PV restore (libxc seeds right after rewriting the p2m).
        if let Some((store, console)) = self.rings {
            self.seed_grant_table(console, store)?;
        }
        Ok(())
    }

    fn pin_page_tables(&mut self, tables: &[(u64, PageType)]) -> BResult<()> {
        self.settle();
        let _t = self.timings.start("pin_page_tables");
        let mut ops = Vec::with_capacity(tables.len());
        for &(pfn, t) in tables {
            let Some(level) = crate::limits::table_level(t) else {
                continue;
            };
            ops.push(ffi::MmuextOp {
                cmd: ffi::MMUEXT_PIN_L1_TABLE + level - 1,
                arg1: self.mfn_of("pin page tables", pfn)?,
                arg2: 0,
            });
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.xc.mmuext(self.domid, &mut ops)
    }

    fn p2m_generation(&mut self) -> BResult<u64> {
        let l = self.pv_only("p2m generation")?;
        let off = arch_field(l, ArchField::P2mGeneration);
        let m = self.shinfo()?;
        if l.width == 8 {
            m.read_u64(off)
        } else {
            let mut b = [0u8; 4];
            m.read(off, &mut b)?;
            Ok(u32::from_le_bytes(b) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn superpage_runs_take_whole_aligned_runs_only() {
        use super::{superpage_runs, SUPERPAGE_PFNS as N};
        // [0, N) whole; [N, 2N) missing its last pfn; [2N, 3N) whole but after a stray pfn.
        let mut pfns: Vec<u64> = (0..N).collect();
        pfns.extend(N..2 * N - 1);
        pfns.push(7 * N + 3);
        pfns.extend(2 * N..3 * N);
        // Out of order: not a run.
        pfns.extend((4 * N..5 * N).rev());
        let (bases, singles) = superpage_runs(&pfns);
        assert_eq!(bases, [0, 2 * N]);
        assert_eq!(singles.len(), (N - 1) as usize + 1 + N as usize);
        assert_eq!(singles.first(), Some(&N));
        assert!(superpage_runs(&[]).0.is_empty());
        // Unaligned start.
        let pfns: Vec<u64> = (1..N + 1).collect();
        assert_eq!(superpage_runs(&pfns), (vec![], pfns.clone()));
    }

    use super::*;

    #[test]
    fn the_m2p_fills_exactly_the_chunks_xen_lists() {
        // 2 MiB chunks of 8-octet entries: 262144 mfns each.
        assert_eq!(m2p_chunks(0xc0000), 3, "3 GiB host");
        assert_eq!(
            m2p_chunks(0x140000),
            5,
            "RAM ending at 5 GiB (4 GiB under QEMU's pc)"
        );
        assert_eq!(m2p_chunks(0x140001), 6);
        assert_eq!(m2p_chunks(1), 1);
    }
}
