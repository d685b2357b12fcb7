//! x86 facts the PV hooks need about guest structures: where the frame numbers sit in a vcpu
//! context and in shared info, how cr3 encodes a frame, and what a page-table entry holds.
//! Offsets are those of Xen's public ABI (`arch-x86/xen.h`, `xen.h`) for 64-bit and 32-bit
//! (PAE) guests.

use crate::limits::PAGE_SHIFT;

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
    /// Shared info: offset and size of `evtchn_pending` and `evtchn_mask`.
    pub shinfo_evtchn_pending: (usize, usize),
    pub shinfo_evtchn_mask: (usize, usize),
    /// Shared info: offset and size of `arch`.
    pub shinfo_arch: (usize, usize),
    /// Offset of `arch.pfn_to_mfn_frame_list_list`.
    pub pfn_to_mfn_frame_list_list: usize,
    /// Offset of `arch.max_pfn`.
    pub arch_max_pfn: usize,
}

/// 64-bit PV guests (4 levels).
pub const PV64: PvLayout = PvLayout {
    width: 8,
    levels: 4,
    vcpu_context_size: 5168,
    edx: 616,
    gdt_frames: 4832,
    gdt_ents: 4960,
    ctrlreg: 4984,
    shinfo_vcpu_info: (0, 2048),
    vcpu_info_size: 64,
    evtchn_pending_sel: 8,
    shinfo_evtchn_pending: (2048, 512),
    shinfo_evtchn_mask: (2560, 512),
    shinfo_arch: (3088, 48),
    pfn_to_mfn_frame_list_list: 3096,
    arch_max_pfn: 3088,
};

/// 32-bit PAE PV guests (3 levels).
pub const PV32: PvLayout = PvLayout {
    width: 4,
    levels: 3,
    vcpu_context_size: 2800,
    edx: 524,
    gdt_frames: 2640,
    gdt_ents: 2704,
    ctrlreg: 2716,
    shinfo_vcpu_info: (0, 2048),
    vcpu_info_size: 64,
    evtchn_pending_sel: 4,
    shinfo_evtchn_pending: (2048, 128),
    shinfo_evtchn_mask: (2176, 128),
    shinfo_arch: (2316, 28),
    pfn_to_mfn_frame_list_list: 2320,
    arch_max_pfn: 2316,
};

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
        let b = buf.get(off..off + self.width)?;
        Some(if self.width == 8 {
            u64::from_le_bytes(b.try_into().ok()?)
        } else {
            u32::from_le_bytes(b.try_into().ok()?) as u64
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

/// Offsets in the `start_info` page (`xen.h`) that a restore rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    pub nr_pages: usize,
    pub shared_info: usize,
    pub flags: usize,
    pub store_mfn: usize,
    pub store_evtchn: usize,
    pub console_mfn: usize,
    pub console_evtchn: usize,
}

impl StartInfo {
    /// 64-bit guests: words are 8 octets and aligned.
    pub const PV64: StartInfo = StartInfo {
        nr_pages: 32,
        shared_info: 40,
        flags: 48,
        store_mfn: 56,
        store_evtchn: 64,
        console_mfn: 72,
        console_evtchn: 80,
    };
    /// 32-bit guests.
    pub const PV32: StartInfo = StartInfo {
        nr_pages: 32,
        shared_info: 36,
        flags: 40,
        store_mfn: 44,
        store_evtchn: 48,
        console_mfn: 52,
        console_evtchn: 56,
    };

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

    #[test]
    fn cr3_round_trips() {
        for l in [&PV64, &PV32] {
            for f in [0u64, 1, 0xabcde, 0xfff_ffff] {
                assert_eq!(l.cr3_to_frame(l.frame_to_cr3(f)), f);
            }
        }
    }
}
