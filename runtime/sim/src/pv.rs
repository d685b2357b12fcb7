//! PV guests: building a source (p2m/m2p, page-table tree, p2m frames, start_info, GDT pages,
//! vcpu contexts, shared info) and what a restore asks of a destination (machine frames,
//! writing the p2m back, pinning with validation).

use super::memory::{seeded_page, Rng};
use super::{einval, SimConfig, SimDomain, VcpuBlobs, INVALID_MFN, MAX_PFNS};
use crate::domain::{errno, BResult, BackendError, PageType, PAGE_SIZE};
use crate::limits::PAGE_SHIFT;
use crate::x86::{self, pte_frame, pte_with_frame, PvLayout, PTE_PRESENT, PTE_PSE};
use std::collections::HashMap;

/// Source machine frames: `SOURCE_MFN_BASE + (pfn ^ mask)`.
const SOURCE_MFN_BASE: u64 = 0x10_0000;
/// Destination machine frames: `FRESH_MFN_BASE + a bijection of the allocation count`.
const FRESH_MFN_BASE: u64 = 0x4000_0000;
const FRESH_MFN_SPAN: u64 = 1 << 28;
/// Machine frames that belong to the hypervisor, never to a guest (Xen's own L4 slots, the
/// shared info frame).
const XEN_MFN_BASE: u64 = 0x1000;
const SHARED_INFO_MFN: u64 = XEN_MFN_BASE + 0x800;

/// Flags of present entries: present, writable, user, accessed, dirty.
const PTE_RW_FLAGS: u64 = 0x67;
/// Read-only mapping (page-table pages in the linear map).
const PTE_RO_FLAGS: u64 = 0x65;
/// A PAE L3 entry: present only (Xen rejects other bits there).
const PAE_L3_FLAGS: u64 = 0x1;
/// Entries per page-table page.
const PTES: usize = 512;

/// Offset of `flags` in a vcpu_guest_context (after the 512-octet fpu_ctxt), both widths.
const VCPU_FLAGS: usize = 512;
/// VGCF_i387_valid | VGCF_in_kernel | VGCF_online.
const VCPU_FLAGS_VALUE: u64 = 0x25;
/// Descriptors in each vcpu's GDT (one frame).
const GDT_ENTS: u64 = 512;

/// Where a domain's new machine frames come from: fresh frames in allocation order,
/// scattered over `FRESH_MFN_BASE..+FRESH_MFN_SPAN` by an odd stride (a bijection).
#[derive(Debug, Clone)]
pub(crate) struct MfnAllocator {
    next: u64,
    stride: u64,
    offset: u64,
}

impl MfnAllocator {
    pub(crate) fn new(seed: u64) -> MfnAllocator {
        let mut r = Rng::stream(seed, 0x006d_666e);
        MfnAllocator {
            next: 0,
            stride: (r.next_u64() % FRESH_MFN_SPAN) | 1,
            offset: r.next_u64() % FRESH_MFN_SPAN,
        }
    }

    /// A machine frame no pfn has yet.
    pub(crate) fn allocate(&mut self, m2p: &HashMap<u64, u64>) -> u64 {
        loop {
            let i = self.next;
            self.next += 1;
            let mfn = FRESH_MFN_BASE
                + (i.wrapping_mul(self.stride).wrapping_add(self.offset) % FRESH_MFN_SPAN);
            if !m2p.contains_key(&mfn) {
                return mfn;
            }
        }
    }
}

/// Offsets of the `start_info` fields only a builder fills (`xen/include/public/xen.h`);
/// those a restore rewrites are in [`x86::StartInfo`].
struct StartInfoBuild {
    pt_base: usize,
    nr_pt_frames: usize,
    mfn_list: usize,
    cmd_line: usize,
}

impl StartInfoBuild {
    fn for_width(width: u8) -> StartInfoBuild {
        if width == 4 {
            StartInfoBuild {
                pt_base: 60,
                nr_pt_frames: 64,
                mfn_list: 68,
                cmd_line: 80,
            }
        } else {
            StartInfoBuild {
                pt_base: 88,
                nr_pt_frames: 96,
                mfn_list: 104,
                cmd_line: 128,
            }
        }
    }
}

/// Which pfns of a built PV guest hold what. Special pages sit at seed-chosen pfns scattered
/// through memory; every other populated pfn is an ordinary data page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvGuestLayout {
    /// start_info (NOTAB); vcpu0's `edx` holds its mfn. Its store and console fields name
    /// the pages below by mfn while the guest runs and by pfn while it is suspended (the
    /// guest canonicalises them when it suspends, as Linux does, dirtying the page).
    pub start_info: u64,
    /// The xenstore ring's page.
    pub store: u64,
    /// The console ring's page.
    pub console: u64,
    /// One GDT page per vcpu (NOTAB), in `gdt_frames[0]` of that vcpu's context.
    pub gdt: Vec<u64>,
    /// The guest's p2m, `4096 / width` entries per frame (NOTAB).
    pub p2m_frames: Vec<u64>,
    /// The pinned top-level table in every vcpu's cr3: L4TAB_PINNED (64-bit) or
    /// L3TAB_PINNED (32-bit PAE).
    pub root: u64,
    /// 64-bit: the pinned user L4 in vcpu0's cr1.
    pub user_root: Option<u64>,
    /// Page-table pages by level (`tables[0]` are the L1s), roots included.
    pub tables: [Vec<u64>; 4],
    /// pfns without a machine frame.
    pub ballooned: Vec<u64>,
}

fn xen_slot_entry(slot: usize) -> u64 {
    ((XEN_MFN_BASE + slot as u64) << PAGE_SHIFT) | 0x63
}

fn set_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn set_pte(page: &mut [u8], i: usize, v: u64) {
    page[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn get_pte(page: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

/// Builds a PV source domain into `dom` (a blank one).
pub(crate) fn build(dom: &mut SimDomain, cfg: &SimConfig) -> BResult<()> {
    const OP: &str = "build simulated PV domain";
    let l = PvLayout::for_width(cfg.width)
        .ok_or_else(|| einval(OP, format!("guest width {}; 4 or 8 octets", cfg.width)))?;
    let p = cfg.memory_pages;
    let wide = l.width == 8;
    let fpp = (PAGE_SIZE / l.width) as u64;
    let n_p2m = p.div_ceil(fpp);
    let n_l1 = p.div_ceil(PTES as u64);
    let n_l2 = n_l1.div_ceil(PTES as u64);
    let (n_l3, n_l4) = if wide {
        (n_l2.div_ceil(PTES as u64), 2)
    } else {
        (1, 0)
    };
    if !wide && n_l2 > 4 {
        return Err(einval(OP, "a 32-bit guest maps at most 4 GiB"));
    }
    if wide && n_l3 > 256 {
        return Err(einval(OP, "too much memory for one L4's lower half"));
    }
    let vcpus = dom.vcpus.len() as u64;
    let specials = 3 + vcpus + n_p2m + n_l1 + n_l2 + n_l3 + n_l4;

    let mut rng = Rng::stream(cfg.seed, 0x7076_6c61_796f_7574);
    let mut is_ballooned = vec![false; p as usize];
    let mut ballooned = Vec::new();
    for pfn in 1..p.saturating_sub(1) {
        if rng.below(64) == 0 {
            is_ballooned[pfn as usize] = true;
            ballooned.push(pfn);
        }
    }
    let usable = p - ballooned.len() as u64;
    if usable < specials + 16 {
        return Err(einval(
            OP,
            format!(
                "{p} pages are too few: the guest's own structures take {specials} and at \
                 least 16 data pages are needed"
            ),
        ));
    }

    // Special pages at seed-chosen pfns: a partial Fisher-Yates shuffle of the usable ones.
    let mut order: Vec<u64> = (0..p).filter(|&pfn| !is_ballooned[pfn as usize]).collect();
    for i in 0..specials as usize {
        let j = i + rng.below((order.len() - i) as u64) as usize;
        order.swap(i, j);
    }
    let mut next = order.into_iter();
    let mut take = |n: u64| -> Vec<u64> { next.by_ref().take(n as usize).collect() };
    let start_info = take(1)[0];
    let store = take(1)[0];
    let console = take(1)[0];
    let gdt = take(vcpus);
    let p2m_frames = take(n_p2m);
    let l4s = take(n_l4);
    let l3s = take(n_l3);
    let l2s = take(n_l2);
    let l1s = take(n_l1);
    let (root, user_root) = if wide {
        (l4s[0], Some(l4s[1]))
    } else {
        (l3s[0], None)
    };

    // Machine frames and memory.
    let mask = rng.next_u64() & (p.next_power_of_two() - 1);
    let mfn = |pfn: u64| SOURCE_MFN_BASE + (pfn ^ mask);
    dom.p2m = vec![INVALID_MFN; p as usize];
    dom.mem.reserve(p);
    let mut page = vec![0u8; PAGE_SIZE];
    for pfn in 0..p {
        if is_ballooned[pfn as usize] {
            continue;
        }
        dom.p2m[pfn as usize] = mfn(pfn);
        dom.m2p.insert(mfn(pfn), pfn);
        dom.mem.populate(pfn);
        seeded_page(cfg.seed, pfn, &mut page);
        dom.mem.write(pfn, &page);
    }

    // Page tables.
    let mut is_table = vec![false; p as usize];
    for &t in l1s.iter().chain(&l2s).chain(&l3s).chain(&l4s) {
        is_table[t as usize] = true;
    }
    let mut is_special = is_table.clone();
    for &s in [start_info, store, console]
        .iter()
        .chain(&gdt)
        .chain(&p2m_frames)
    {
        is_special[s as usize] = true;
    }
    let mut holes = Rng::stream(cfg.seed, 0x686f_6c65);
    for (k, &t) in l1s.iter().enumerate() {
        page.fill(0);
        for i in 0..PTES {
            let pfn = (k * PTES + i) as u64;
            if pfn >= p || is_ballooned[pfn as usize] {
                continue;
            }
            if !is_special[pfn as usize] && holes.below(32) == 0 {
                continue;
            }
            let flags = if is_table[pfn as usize] {
                PTE_RO_FLAGS
            } else {
                PTE_RW_FLAGS
            };
            set_pte(&mut page, i, (mfn(pfn) << PAGE_SHIFT) | flags);
        }
        dom.mem.write(t, &page);
        dom.mem.set_type(t, PageType::L1TAB);
    }
    let link = |page: &mut [u8], children: &[u64], k: usize, flags: u64| {
        for i in 0..PTES {
            if let Some(&c) = children.get(k * PTES + i) {
                set_pte(page, i, (mfn(c) << PAGE_SHIFT) | flags);
            }
        }
    };
    for (k, &t) in l2s.iter().enumerate() {
        page.fill(0);
        link(&mut page, &l1s, k, PTE_RW_FLAGS);
        dom.mem.write(t, &page);
        dom.mem.set_type(t, PageType::L2TAB);
    }
    if wide {
        for (k, &t) in l3s.iter().enumerate() {
            page.fill(0);
            link(&mut page, &l2s, k, PTE_RW_FLAGS);
            dom.mem.write(t, &page);
            dom.mem.set_type(t, PageType::L3TAB);
        }
        for &t in &l4s {
            page.fill(0);
            link(&mut page, &l3s, 0, PTE_RW_FLAGS);
            if let Some(slots) = l.xen_slots(4) {
                for s in slots {
                    set_pte(&mut page, s, xen_slot_entry(s));
                }
            }
            dom.mem.write(t, &page);
            dom.mem.set_type(t, PageType::L4TAB_PINNED);
            dom.pins.push((t, PageType::L4TAB_PINNED));
        }
    } else {
        page.fill(0);
        link(&mut page, &l2s, 0, PAE_L3_FLAGS);
        if let Some(slots) = l.xen_slots(3) {
            for s in slots {
                set_pte(
                    &mut page,
                    s,
                    ((XEN_MFN_BASE + s as u64) << PAGE_SHIFT) | PAE_L3_FLAGS,
                );
            }
        }
        dom.mem.write(root, &page);
        dom.mem.set_type(root, PageType::L3TAB_PINNED);
        dom.pins.push((root, PageType::L3TAB_PINNED));
    }

    // The guest's p2m.
    for (f, &frame) in p2m_frames.iter().enumerate() {
        page.fill(0);
        for i in 0..fpp {
            let pfn = f as u64 * fpp + i;
            let v = dom.p2m.get(pfn as usize).copied().unwrap_or(INVALID_MFN);
            l.set(&mut page, i as usize * l.width, v);
        }
        dom.mem.write(frame, &page);
    }
    dom.p2m_frames = p2m_frames.clone();

    // start_info, as a running guest has it (store and console by mfn).
    let si = x86::StartInfo::for_width(cfg.width);
    let sb = StartInfoBuild::for_width(cfg.width);
    page.fill(0);
    let magic: &[u8] = if wide {
        b"xen-3.0-x86_64"
    } else {
        b"xen-3.0-x86_32p"
    };
    page[..magic.len()].copy_from_slice(magic);
    l.set(&mut page, si.nr_pages, p);
    l.set(&mut page, si.shared_info, SHARED_INFO_MFN << PAGE_SHIFT);
    set_u32(&mut page, si.flags, 0);
    l.set(&mut page, si.store_mfn, mfn(store));
    set_u32(&mut page, si.store_evtchn, 1 + rng.below(31) as u32);
    l.set(&mut page, si.console_mfn, mfn(console));
    set_u32(&mut page, si.console_evtchn, 1 + rng.below(31) as u32);
    l.set(&mut page, sb.pt_base, root << PAGE_SHIFT);
    l.set(&mut page, sb.nr_pt_frames, n_l1 + n_l2 + n_l3 + n_l4);
    l.set(&mut page, sb.mfn_list, p2m_frames[0] << PAGE_SHIFT);
    let cmd = format!("root=/dev/xvda1 console=hvc0 xenmig-sim seed={}", cfg.seed);
    page[sb.cmd_line..sb.cmd_line + cmd.len()].copy_from_slice(cmd.as_bytes());
    dom.mem.write(start_info, &page);

    // GDT pages: a null descriptor, then 15 seed-derived ones.
    for &g in &gdt {
        page.fill(0);
        rng.fill(&mut page[8..128]);
        dom.mem.write(g, &page);
    }

    // Shared info.
    let mut shinfo = vec![0u8; PAGE_SIZE];
    let (vi_off, vi_len) = l.shinfo_vcpu_info;
    rng.fill(&mut shinfo[vi_off..vi_off + vi_len]);
    let (pend_off, pend_len) = l.shinfo_evtchn_pending;
    for b in &mut shinfo[pend_off..pend_off + pend_len] {
        *b = (rng.next_u64() & rng.next_u64() & rng.next_u64()) as u8;
    }
    let (mask_off, mask_len) = l.shinfo_evtchn_mask;
    rng.fill(&mut shinfo[mask_off..mask_off + mask_len]);
    // The wallclock between the mask and arch.
    rng.fill(&mut shinfo[mask_off + mask_len..l.shinfo_arch.0]);
    l.set(&mut shinfo, l.arch_max_pfn, p);
    l.set(
        &mut shinfo,
        l.pfn_to_mfn_frame_list_list,
        mfn(p2m_frames[0]),
    );
    l.set(&mut shinfo, l.arch_max_pfn + 2 * l.width, rng.below(4)); // nmi_reason
    dom.shared_info = shinfo;

    // vcpus.
    for (v, &gdt_pfn) in gdt.iter().enumerate() {
        let mut ctx = rng.bytes(l.vcpu_context_size);
        l.set(&mut ctx, VCPU_FLAGS, VCPU_FLAGS_VALUE);
        for i in 0..16 {
            l.set(&mut ctx, l.gdt_frames + i * l.width, 0);
        }
        l.set(&mut ctx, l.gdt_frames, mfn(gdt_pfn));
        l.set(&mut ctx, l.gdt_ents, GDT_ENTS);
        let cr2 = rng.next_u64() & 0x7fff_ffff_f000;
        let crs: [u64; 8] = [
            0x8005_003b,
            0,
            cr2,
            l.frame_to_cr3(mfn(root)),
            if wide { 0x2660 } else { 0x0660 },
            0,
            0,
            0,
        ];
        for (i, cr) in crs.into_iter().enumerate() {
            l.set(&mut ctx, l.cr(i), cr);
        }
        if v == 0 {
            l.set(&mut ctx, l.edx, mfn(start_info));
            if let Some(u) = user_root {
                l.set(&mut ctx, l.cr(1), (mfn(u) << PAGE_SHIFT) | 1);
            }
        }
        let mut xsave = Vec::with_capacity(8 + 832);
        xsave.extend_from_slice(&7u64.to_le_bytes());
        let mut area = rng.bytes(832);
        area[..8].copy_from_slice(&7u64.to_le_bytes()); // xcr0
        area[8..16].copy_from_slice(&7u64.to_le_bytes()); // xcr0_accum
        xsave.extend_from_slice(&area);
        let mut msrs = Vec::with_capacity(32);
        for idx in [0xc001_1027u32, 0xc001_1019] {
            msrs.extend_from_slice(&idx.to_le_bytes());
            msrs.extend_from_slice(&0u32.to_le_bytes());
            msrs.extend_from_slice(&(rng.next_u64() & 0xffc).to_le_bytes());
        }
        dom.vcpus[v] = VcpuBlobs {
            basic: ctx,
            extended: rng.bytes(128),
            xsave,
            msrs,
        };
    }

    dom.layout = Some(PvGuestLayout {
        start_info,
        store,
        console,
        gdt,
        p2m_frames,
        root,
        user_root,
        tables: [l1s, l2s, l3s, l4s],
        ballooned,
    });
    Ok(())
}

/// The level of a page-table type (1 to 4), pinned or not; values past the last pinned
/// table type are none, whatever their low bits.
pub(crate) fn table_level(t: PageType) -> Option<u8> {
    crate::limits::table_level(t)
        .filter(|_| t.0 <= PageType::L4TAB_PINNED.0)
        .map(|l| l as u8)
}

fn unpinned(level: u8) -> PageType {
    PageType::from(level as u32)
}

impl SimDomain {
    fn pv_facts(&self, op: &'static str) -> BResult<&'static PvLayout> {
        self.pv_layout_facts().ok_or_else(|| super::not_pv(op))
    }

    /// Pins `pfn` as `t` (a pinned L1..L4 type), validating the tree below it as Xen does:
    /// every present entry outside Xen's slots must name a frame the domain owns, and no
    /// page may be used as two different levels. Tables found below get their level's type;
    /// a 64-bit L4 gets Xen's own slots filled in.
    pub(crate) fn pv_pin(&mut self, pfn: u64, t: PageType) -> BResult<()> {
        const OP: &str = "pin page table";
        let l = self.pv_facts(OP)?;
        let level = match table_level(t) {
            Some(level) if t.0 & 8 != 0 => level,
            _ => {
                return Err(einval(
                    OP,
                    format!("pfn {pfn:#x}: {t:?} is not a pinned page-table type"),
                ))
            }
        };
        if level > l.levels {
            return Err(einval(
                OP,
                format!(
                    "pfn {pfn:#x}: an L{level} table in a {}-level guest",
                    l.levels
                ),
            ));
        }
        if !self.mem.is_populated(pfn) {
            return Err(einval(OP, format!("pfn {pfn:#x} is not populated")));
        }
        if self.pins.iter().any(|&(p, _)| p == pfn) {
            return Err(einval(OP, format!("pfn {pfn:#x} is already pinned")));
        }
        let current = self.mem.page_type(pfn);
        if table_level(current).is_some_and(|c| c != level) {
            return Err(einval(
                OP,
                format!("pfn {pfn:#x} is in use as {current:?}, cannot pin it as {t:?}"),
            ));
        }
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.validate_table(l, pfn, level, &mut found, &mut seen)?;
        for (child, child_level) in found {
            let ct = self.mem.page_type(child);
            match table_level(ct) {
                Some(cl) if cl != child_level => {
                    return Err(einval(
                        OP,
                        format!(
                            "pfn {child:#x} is used as an L{child_level} table below pfn \
                             {pfn:#x} but is {ct:?}"
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    self.mem.set_type(child, unpinned(child_level));
                }
            }
        }
        self.mem.set_type(pfn, t);
        if level == 4 {
            if let Some(slots) = l.xen_slots(4) {
                self.mem.modify(pfn, |page| {
                    for s in slots {
                        set_pte(page, s, xen_slot_entry(s));
                    }
                });
            }
        }
        self.pins.push((pfn, t));
        Ok(())
    }

    /// Checks the table at `pfn` (level `level`) and, recursively, the tables below it;
    /// collects `(pfn, level)` of every table below.
    fn validate_table(
        &self,
        l: &PvLayout,
        pfn: u64,
        level: u8,
        found: &mut Vec<(u64, u8)>,
        seen: &mut std::collections::HashSet<(u64, u8)>,
    ) -> BResult<()> {
        const OP: &str = "pin page table";
        if !seen.insert((pfn, level)) {
            return Ok(());
        }
        let page = self
            .mem
            .page(pfn)
            .ok_or_else(|| einval(OP, format!("L{level} table pfn {pfn:#x} is not populated")))?;
        let xen = l.xen_slots(level);
        for i in 0..l.ptes_per_page() {
            if xen.as_ref().is_some_and(|r| r.contains(&i)) {
                continue;
            }
            let pte = get_pte(&page[..], i);
            if pte & PTE_PRESENT == 0 {
                continue;
            }
            let frame = pte_frame(pte);
            let child = self.m2p.get(&frame).copied().ok_or_else(|| {
                einval(
                    OP,
                    format!(
                        "entry {i} of L{level} table pfn {pfn:#x} names mfn {frame:#x}, which \
                         the domain does not own"
                    ),
                )
            })?;
            if level > 1 && pte & PTE_PSE == 0 {
                found.push((child, level - 1));
                self.validate_table(l, child, level - 1, found, seen)?;
            }
        }
        Ok(())
    }

    /// Writes the p2m (mfns, width-sized, all ones for none) into the frames at `frames`.
    pub(crate) fn pv_write_p2m(&mut self, frames: &[u64]) -> BResult<()> {
        const OP: &str = "write_p2m";
        let l = self.pv_facts(OP)?;
        let fpp = PAGE_SIZE / l.width;
        let needed = self.p2m.len().div_ceil(fpp);
        if frames.len() < needed {
            return Err(einval(
                OP,
                format!(
                    "{} frames cannot hold a p2m of {} entries ({needed} are needed)",
                    frames.len(),
                    self.p2m.len()
                ),
            ));
        }
        if let Some(&f) = frames.iter().find(|&&f| !self.mem.is_populated(f)) {
            return Err(einval(OP, format!("p2m frame pfn {f:#x} is not populated")));
        }
        let mut page = vec![0u8; PAGE_SIZE];
        for (k, &f) in frames.iter().enumerate() {
            for i in 0..fpp {
                let v = self.p2m.get(k * fpp + i).copied().unwrap_or(INVALID_MFN);
                l.set(&mut page, i * l.width, v);
            }
            self.mem.write(f, &page);
        }
        self.p2m_frames = frames.to_vec();
        self.forget_workload_layout();
        Ok(())
    }

    /// The frames a basic context names (cr3, 64-bit cr1, the GDT frames) must be the
    /// domain's own, as Xen's setcontext requires.
    pub(crate) fn check_context_frames(&self, vcpu: u32, ctx: &[u8]) -> BResult<()> {
        let l = self.pv_facts("set vcpu state")?;
        for (what, frame) in context_frames(l, ctx) {
            if frame != 0 && !self.m2p.contains_key(&frame) {
                return Err(BackendError::new(
                    "set vcpu state",
                    format!(
                        "vcpu {vcpu}: {} names mfn {frame:#x}, which the domain does not own",
                        what.name()
                    ),
                )
                .errno(errno::EINVAL));
            }
        }
        Ok(())
    }

    /// Checks the PV invariants: every present entry of every page-table page (outside
    /// Xen's slots) names an mfn the m2p maps back to a populated pfn whose p2m entry is that
    /// mfn; every vcpu's cr3 names a pinned root; the p2m frames hold the p2m.
    pub fn check_page_tables(&self) -> Result<(), String> {
        let l = match self.pv_layout_facts() {
            Some(l) => l,
            None => return Ok(()),
        };
        let owned = |mfn: u64| -> Option<u64> {
            let pfn = *self.m2p.get(&mfn)?;
            (self.p2m.get(pfn as usize) == Some(&mfn) && self.mem.is_populated(pfn)).then_some(pfn)
        };
        for pfn in self.mem.populated_pfns() {
            let t = self.mem.page_type(pfn);
            let Some(level) = table_level(t) else {
                continue;
            };
            let page = self.mem.page(pfn).ok_or("page vanished")?;
            let xen = l.xen_slots(level);
            for i in 0..PTES {
                let pte = get_pte(&page[..], i);
                if xen.as_ref().is_some_and(|r| r.contains(&i)) || pte & PTE_PRESENT == 0 {
                    continue;
                }
                let frame = pte_frame(pte);
                let Some(target) = owned(frame) else {
                    return Err(format!(
                        "entry {i} of {t:?} pfn {pfn:#x} names mfn {frame:#x}, not the domain's"
                    ));
                };
                if level > 1 && table_level(self.mem.page_type(target)) != Some(level - 1) {
                    return Err(format!(
                        "entry {i} of {t:?} pfn {pfn:#x} names pfn {target:#x}, which is {:?}",
                        self.mem.page_type(target)
                    ));
                }
            }
        }
        let root_type = if l.levels == 4 {
            PageType::L4TAB_PINNED
        } else {
            PageType::L3TAB_PINNED
        };
        for (v, blobs) in self.vcpus.iter().enumerate() {
            if blobs.basic.len() != l.vcpu_context_size {
                continue;
            }
            let cr3 = l.get(&blobs.basic, l.cr(3)).unwrap_or(0);
            let frame = l.cr3_to_frame(cr3);
            match owned(frame) {
                Some(pfn) if self.mem.page_type(pfn) == root_type => {}
                _ => {
                    return Err(format!(
                        "vcpu {v}: cr3 {cr3:#x} does not name a pinned root"
                    ))
                }
            }
        }
        let fpp = PAGE_SIZE / l.width;
        for (k, &f) in self.p2m_frames.iter().enumerate() {
            let page = self
                .mem
                .page(f)
                .ok_or(format!("p2m frame {f:#x} is not populated"))?;
            for i in 0..fpp {
                let want = self.p2m.get(k * fpp + i).copied().unwrap_or(INVALID_MFN);
                let want = if l.width == 4 {
                    want & 0xffff_ffff
                } else {
                    want
                };
                if l.get(&page[..], i * l.width) != Some(want) {
                    return Err(format!("p2m frame pfn {f:#x} entry {i} is stale"));
                }
            }
        }
        Ok(())
    }

    /// Applies one workload write to a page table: a present entry of an L1 goes away, or
    /// an absent one maps an ordinary page. Returns the pfn written.
    pub(crate) fn toggle_pte(&mut self, l1: u64, entry: usize, data_pfn: u64) -> Option<u64> {
        let mfn = *self.p2m.get(data_pfn as usize)?;
        if mfn == INVALID_MFN {
            return None;
        }
        self.mem
            .modify(l1, |page| {
                let pte = get_pte(page, entry);
                let new = if pte & PTE_PRESENT != 0 {
                    0
                } else {
                    pte_with_frame(PTE_RW_FLAGS, mfn)
                };
                set_pte(page, entry, new);
            })
            .then_some(l1)
    }
}

/// A frame-bearing field of a basic vcpu context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextFrame {
    Cr3,
    Cr1,
    Gdt,
}

impl ContextFrame {
    fn name(self) -> &'static str {
        match self {
            ContextFrame::Cr3 => "cr3",
            ContextFrame::Cr1 => "cr1",
            ContextFrame::Gdt => "a GDT frame",
        }
    }
}

/// The machine frames a basic context names; cr1 only when valid.
pub(crate) fn context_frames(l: &PvLayout, ctx: &[u8]) -> Vec<(ContextFrame, u64)> {
    let mut out = Vec::new();
    if ctx.len() != l.vcpu_context_size {
        return out;
    }
    if let Some(cr3) = l.get(ctx, l.cr(3)) {
        out.push((ContextFrame::Cr3, l.cr3_to_frame(cr3)));
    }
    if l.width == 8 {
        if let Some(cr1) = l.get(ctx, l.cr(1)).filter(|c| c & 1 != 0) {
            out.push((ContextFrame::Cr1, cr1 >> PAGE_SHIFT));
        }
    }
    let ents = l.get(ctx, l.gdt_ents).unwrap_or(0);
    for i in 0..(ents.div_ceil(512) as usize).min(16) {
        if let Some(f) = l.get(ctx, l.gdt_frames + i * l.width) {
            out.push((ContextFrame::Gdt, f));
        }
    }
    out
}

// Source and destination frames never meet.
const _: () = assert!(SOURCE_MFN_BASE + MAX_PFNS < FRESH_MFN_BASE);

impl SimDomain {
    /// The pfn a start_info store or console field names: the field holds an mfn while the
    /// guest runs and a pfn while it is suspended. `None`: an mfn the domain does not own.
    pub(crate) fn start_info_field_pfn(&self, v: u64) -> Option<u64> {
        if self.suspended {
            Some(v)
        } else {
            self.m2p.get(&v).copied()
        }
    }

    /// What a PV guest does to start_info when it suspends (`to_pfn`) or resumes: the store
    /// and console fields go mfn → pfn or back. The page is dirtied.
    pub(crate) fn pv_canonicalise_start_info(&mut self, to_pfn: bool) {
        let (Some(l), Some(pfn)) = (self.pv_layout_facts(), self.start_info_pfn()) else {
            return;
        };
        let si = x86::StartInfo::for_width(self.width);
        let Some(mut page) = self.mem.page(pfn) else {
            return;
        };
        for off in [si.store_mfn, si.console_mfn] {
            let Some(v) = l.get(&page[..], off) else {
                continue;
            };
            let new = if to_pfn {
                self.m2p.get(&v).copied()
            } else {
                self.p2m
                    .get(v as usize)
                    .copied()
                    .filter(|&m| m != INVALID_MFN)
            };
            if let Some(new) = new {
                l.set(&mut page[..], off, new);
            }
        }
        self.mem.write(pfn, &page[..]);
        self.dirty.mark(pfn);
    }

    /// The start_info pfn: vcpu0's `edx`, through the m2p.
    pub(crate) fn start_info_pfn(&self) -> Option<u64> {
        let l = self.pv_layout_facts()?;
        let ctx = &self.vcpus.first()?.basic;
        if ctx.len() != l.vcpu_context_size {
            return None;
        }
        self.m2p.get(&l.get(ctx, l.edx)?).copied()
    }

    /// pfns of the guest's own structures that a workload must not scribble on: start_info
    /// and the store and console pages it names, the GDT pages, the p2m frames.
    pub(crate) fn pv_structure_pfns(&self) -> Vec<u64> {
        let mut out = self.p2m_frames.clone();
        let Some(l) = self.pv_layout_facts() else {
            return out;
        };
        if let Some(si) = self.start_info_pfn() {
            let sl = x86::StartInfo::for_width(self.width);
            out.push(si);
            if let Some(page) = self.mem.page(si) {
                for off in [sl.store_mfn, sl.console_mfn] {
                    if let Some(pfn) = l
                        .get(&page[..], off)
                        .and_then(|v| self.start_info_field_pfn(v))
                    {
                        out.push(pfn);
                    }
                }
            }
        }
        for blobs in &self.vcpus {
            for (what, frame) in context_frames(l, &blobs.basic) {
                if what == ContextFrame::Gdt {
                    if let Some(&pfn) = self.m2p.get(&frame) {
                        out.push(pfn);
                    }
                }
            }
        }
        out
    }
}
