//! x86 facts the PV hooks need about guest structures: where the frame numbers sit in a vcpu
//! context and in shared info, how cr3 encodes a frame, and what a page-table entry holds.
//! The offsets are generated from `spec/x86_state.yaml` (the layouts of Xen's public ABI for
//! 64-bit and 32-bit PAE guests); the tests pin them to Xen's figures.

use crate::limits::PAGE_SHIFT;
use crate::wire::{Element, Endian};
use crate::x86_state;

/// Layout of one guest width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvLayout {
    /// Octets in a guest word (`unsigned long`).
    pub width: usize,
    /// Page-table levels.
    pub levels: u8,
    /// Size of `vcpu_guest_context`.
    pub vcpu_context_size: usize,
    /// Offset of `user_regs.edx` / `rdx` (vcpu0: start_info frame).
    pub edx: usize,
    /// Offset of `gdt_frames[0]` (16 entries).
    pub gdt_frames: usize,
    /// Offset of `gdt_ents`.
    pub gdt_ents: usize,
    /// Offset of `ctrlreg[0]`.
    pub ctrlreg: usize,
    /// Shared info: offset and size of the `vcpu_info` array (32 entries).
    pub shinfo_vcpu_info: (usize, usize),
    /// Size of one `vcpu_info`.
    pub vcpu_info_size: usize,
    /// Offset of `evtchn_pending_sel` in a `vcpu_info`.
    pub evtchn_pending_sel: usize,
    /// Shared info: offset and size of `evtchn_pending`.
    pub shinfo_evtchn_pending: (usize, usize),
    /// Shared info: offset and size of `evtchn_mask`.
    pub shinfo_evtchn_mask: (usize, usize),
    /// Shared info: offset and size of `arch`.
    pub shinfo_arch: (usize, usize),
    /// Offset of `arch.pfn_to_mfn_frame_list_list`.
    pub pfn_to_mfn_frame_list_list: usize,
    /// Offset of `arch.max_pfn`.
    pub arch_max_pfn: usize,
}

/// A [`PvLayout`] from the generated structs of one guest width: every offset comes from
/// `spec/x86_state.yaml`.
macro_rules! pv_layout {
    ($width:expr, $levels:expr, $ctx:ident, $regs:ident, $edx:ident, $shinfo:ident,
     $vcpu_info:ident, $arch:ident) => {{
        use x86_state::{
            $arch as Arch, $ctx as Ctx, $regs as Regs, $shinfo as Shinfo, $vcpu_info as VcpuInfo,
        };
        PvLayout {
            width: $width,
            levels: $levels,
            vcpu_context_size: Ctx::SIZE,
            edx: Ctx::USER_REGS_OFFSET + Regs::$edx,
            gdt_frames: Ctx::GDT_FRAME0_OFFSET,
            gdt_ents: Ctx::GDT_ENTS_OFFSET,
            ctrlreg: Ctx::CR0_OFFSET,
            shinfo_vcpu_info: (Shinfo::VCPU_INFO_OFFSET, Shinfo::EVTCHN_PENDING_OFFSET),
            vcpu_info_size: VcpuInfo::SIZE,
            evtchn_pending_sel: VcpuInfo::EVTCHN_PENDING_SEL_OFFSET,
            shinfo_evtchn_pending: (
                Shinfo::EVTCHN_PENDING_OFFSET,
                Shinfo::EVTCHN_MASK_OFFSET - Shinfo::EVTCHN_PENDING_OFFSET,
            ),
            shinfo_evtchn_mask: (
                Shinfo::EVTCHN_MASK_OFFSET,
                Shinfo::WC_VERSION_OFFSET - Shinfo::EVTCHN_MASK_OFFSET,
            ),
            shinfo_arch: (Shinfo::ARCH_OFFSET, Arch::SIZE),
            pfn_to_mfn_frame_list_list: Shinfo::ARCH_OFFSET
                + Arch::PFN_TO_MFN_FRAME_LIST_LIST_OFFSET,
            arch_max_pfn: Shinfo::ARCH_OFFSET + Arch::MAX_PFN_OFFSET,
        }
    }};
}

/// 64-bit PV guests (4 levels).
pub const PV64: PvLayout = pv_layout!(
    8,
    4,
    VcpuContextX8664,
    CpuUserRegsX8664,
    RDX_OFFSET,
    SharedInfoX8664,
    VcpuInfoX8664,
    ArchSharedInfoX8664
);

/// 32-bit PAE PV guests (3 levels).
pub const PV32: PvLayout = pv_layout!(
    4,
    3,
    VcpuContextX8632,
    CpuUserRegsX8632,
    EDX_OFFSET,
    SharedInfoX8632,
    VcpuInfoX8632,
    ArchSharedInfoX8632
);

impl PvLayout {
    /// The layout for a guest width in octets.
    pub fn for_width(width: u8) -> Option<&'static PvLayout> {
        match width {
            8 => Some(&PV64),
            4 => Some(&PV32),
            _ => None,
        }
    }

    /// Reads a guest word at `off`.
    pub fn get(&self, buf: &[u8], off: usize) -> Option<u64> {
        let b = buf.get(off..off.checked_add(self.width)?)?;
        Some(if self.width == 8 {
            <u64 as Element>::read(b, Endian::Little)
        } else {
            u64::from(<u32 as Element>::read(b, Endian::Little))
        })
    }

    /// Writes a guest word at `off`.
    pub fn set(&self, buf: &mut [u8], off: usize, v: u64) -> Option<()> {
        let b = buf.get_mut(off..off + self.width)?;
        if self.width == 8 {
            b.copy_from_slice(&v.to_le_bytes());
        } else {
            b.copy_from_slice(&(v as u32).to_le_bytes());
        }
        Some(())
    }

    /// Offset of `ctrlreg[n]`.
    pub fn cr(&self, n: usize) -> usize {
        self.ctrlreg + n * self.width
    }

    /// The frame a cr3 value names.
    pub fn cr3_to_frame(&self, cr3: u64) -> u64 {
        if self.width == 8 {
            cr3 >> PAGE_SHIFT
        } else {
            let c = cr3 as u32;
            c.rotate_right(PAGE_SHIFT) as u64
        }
    }

    /// The cr3 value naming a frame.
    pub fn frame_to_cr3(&self, frame: u64) -> u64 {
        if self.width == 8 {
            frame << PAGE_SHIFT
        } else {
            let f = frame as u32;
            f.rotate_left(PAGE_SHIFT) as u64
        }
    }

    /// Page-table entries per page (8-octet entries at every level of 64-bit and PAE guests).
    pub fn ptes_per_page(&self) -> usize {
        512
    }

    /// Xen's own slots of a top-level or second-level table, zeroed when saving: the
    /// hypervisor range of a 64-bit L4 (256..=271), the upper 508 entries of a PAE L3.
    pub fn xen_slots(&self, page_type_level: u8) -> Option<std::ops::RangeInclusive<usize>> {
        match (self.width, page_type_level) {
            (8, 4) => Some(256..=271),
            (4, 3) => Some(4..=511),
            _ => None,
        }
    }
}

/// A [`StartInfo`] from the generated `start_info` struct of one guest width.
macro_rules! start_info {
    ($s:ident) => {{
        use x86_state::$s as S;
        StartInfo {
            nr_pages: S::NR_PAGES_OFFSET,
            shared_info: S::SHARED_INFO_OFFSET,
            flags: S::FLAGS_OFFSET,
            store_mfn: S::STORE_MFN_OFFSET,
            store_evtchn: S::STORE_EVTCHN_OFFSET,
            console_mfn: S::CONSOLE_MFN_OFFSET,
            console_evtchn: S::CONSOLE_EVTCHN_OFFSET,
        }
    }};
}

/// Offsets in the `start_info` page (`xen.h`) that a restore rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    /// Offset of `nr_pages`.
    pub nr_pages: usize,
    /// Offset of `shared_info`.
    pub shared_info: usize,
    /// Offset of `flags`.
    pub flags: usize,
    /// Offset of `store_mfn`.
    pub store_mfn: usize,
    /// Offset of `store_evtchn`.
    pub store_evtchn: usize,
    /// Offset of `console_mfn`.
    pub console_mfn: usize,
    /// Offset of `console_evtchn`.
    pub console_evtchn: usize,
}

impl StartInfo {
    /// 64-bit guests (offsets from `spec/x86_state.yaml`).
    pub const PV64: StartInfo = start_info!(StartInfoX8664);
    /// 32-bit guests (offsets from `spec/x86_state.yaml`).
    pub const PV32: StartInfo = start_info!(StartInfoX8632);

    /// The offsets for a guest of `width` octets (4: 32-bit, else 64-bit).
    pub fn for_width(width: u8) -> &'static StartInfo {
        if width == 4 {
            &StartInfo::PV32
        } else {
            &StartInfo::PV64
        }
    }
}

/// A page-table entry is present.
pub const PTE_PRESENT: u64 = 1;
/// Large page (PSE) bit of L2/L3 entries.
pub const PTE_PSE: u64 = 1 << 7;
/// Frame number bits 12..=51 of an entry.
pub const PTE_FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The frame an entry points at.
pub fn pte_frame(pte: u64) -> u64 {
    (pte & PTE_FRAME_MASK) >> PAGE_SHIFT
}

/// The entry with another frame.
pub fn pte_with_frame(pte: u64, frame: u64) -> u64 {
    (pte & !PTE_FRAME_MASK) | ((frame << PAGE_SHIFT) & PTE_FRAME_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_add_up() {
        // The last fields end where the structures end.
        assert_eq!(
            PV64.cr(0) + 8 * 8 + 8 * 8 + 3 * 8 + 8 + 3 * 8,
            PV64.vcpu_context_size
        );
        assert_eq!(PV32.cr(0) + 8 * 4 + 8 * 4 + 5 * 4, PV32.vcpu_context_size);
        assert_eq!(PV64.gdt_frames + 16 * 8, PV64.gdt_ents);
        assert_eq!(PV32.gdt_frames + 16 * 4, PV32.gdt_ents);
    }

    /// The offsets of Xen's public ABI, pinned: an edit of the spec that moves one fails here.
    #[test]
    fn offsets_are_xens() {
        assert_eq!(
            (
                PV64.vcpu_context_size,
                PV64.edx,
                PV64.gdt_frames,
                PV64.gdt_ents,
                PV64.ctrlreg
            ),
            (5168, 616, 4832, 4960, 4984)
        );
        assert_eq!(
            (
                PV32.vcpu_context_size,
                PV32.edx,
                PV32.gdt_frames,
                PV32.gdt_ents,
                PV32.ctrlreg
            ),
            (2800, 524, 2640, 2704, 2716)
        );
        assert_eq!(
            (
                PV64.shinfo_vcpu_info,
                PV64.vcpu_info_size,
                PV64.evtchn_pending_sel,
                PV64.shinfo_evtchn_pending,
                PV64.shinfo_evtchn_mask,
                PV64.shinfo_arch,
                PV64.pfn_to_mfn_frame_list_list,
                PV64.arch_max_pfn
            ),
            (
                (0, 2048),
                64,
                8,
                (2048, 512),
                (2560, 512),
                (3088, 48),
                3096,
                3088
            )
        );
        assert_eq!(
            (
                PV32.shinfo_vcpu_info,
                PV32.vcpu_info_size,
                PV32.evtchn_pending_sel,
                PV32.shinfo_evtchn_pending,
                PV32.shinfo_evtchn_mask,
                PV32.shinfo_arch,
                PV32.pfn_to_mfn_frame_list_list,
                PV32.arch_max_pfn
            ),
            (
                (0, 2048),
                64,
                4,
                (2048, 128),
                (2176, 128),
                (2316, 28),
                2320,
                2316
            )
        );
        let s64 = StartInfo::PV64;
        assert_eq!(
            (
                s64.nr_pages,
                s64.shared_info,
                s64.flags,
                s64.store_mfn,
                s64.store_evtchn,
                s64.console_mfn,
                s64.console_evtchn
            ),
            (32, 40, 48, 56, 64, 72, 80)
        );
        let s32 = StartInfo::PV32;
        assert_eq!(
            (
                s32.nr_pages,
                s32.shared_info,
                s32.flags,
                s32.store_mfn,
                s32.store_evtchn,
                s32.console_mfn,
                s32.console_evtchn
            ),
            (32, 36, 40, 44, 48, 52, 56)
        );
    }

    #[test]
    fn cr3_round_trips() {
        for l in [&PV64, &PV32] {
            for f in [0u64, 1, 0xabcde, 0xfff_ffff] {
                assert_eq!(l.cr3_to_frame(l.frame_to_cr3(f)), f);
            }
        }
    }
}
