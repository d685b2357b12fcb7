//! Finding a PV guest's p2m (pfn → mfn) in its memory, as libxc's save does
//! (`map_p2m_list` and `map_p2m_tree` in `xg_sr_save_x86_pv.c`): either a linear list the guest
//! maps at `arch.p2m_vaddr` in the address space rooted at `arch.p2m_cr3`, or the older
//! three-level tree anchored at `arch.pfn_to_mfn_frame_list_list`. Both trim `max_pfn` when the
//! tail of the p2m only repeats one frame (ballooned-out memory), as Xen's saver does, so the
//! X86_PV_P2M_FRAMES record comes out the same.
//!
//! The walks read guest frames through a callback, so they run on any memory.

use crate::x86::{self, PvLayout};
use xenmig_drivers::domain::{errno, BResult, BackendError, PAGE_SIZE};

/// Reads whole frames (machine frame numbers) and returns their contents, concatenated.
pub type ReadFrames<'a> = dyn FnMut(&[u64]) -> BResult<Vec<u8>> + 'a;

/// `HYPERVISOR_VIRT_START`/`_END` of 64-bit and 32-bit PV guests.
const HYPERVISOR_VIRT_START_X86_64: u64 = 0xffff_8000_0000_0000;
const HYPERVISOR_VIRT_END_X86_64: u64 = 0xffff_8800_0000_0000;
const HYPERVISOR_VIRT_START_X86_32: u64 = 0xf580_0000;
const HYPERVISOR_VIRT_END_X86_32: u64 = 0xfc00_0000;

/// Fields of `arch_shared_info` in guest words: max_pfn, pfn_to_mfn_frame_list_list,
/// nmi_reason, p2m_cr3, p2m_vaddr, p2m_generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchField {
    /// `max_pfn`: the p2m's size.
    MaxPfn = 0,
    /// `pfn_to_mfn_frame_list_list`: the top of the p2m's frame lists.
    FrameListList = 1,
    /// `p2m_cr3`: the page tables of a virtually mapped p2m.
    P2mCr3 = 3,
    /// `p2m_vaddr`: where a virtually mapped p2m starts.
    P2mVaddr = 4,
    /// `p2m_generation`: bumped whenever the guest changes its p2m.
    P2mGeneration = 5,
}

/// Offset of an `arch_shared_info` field in the shared info page.
pub fn arch_field(l: &PvLayout, f: ArchField) -> usize {
    l.shinfo_arch.0 + f as usize * l.width
}

/// The frames holding a guest's p2m.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2mFrames {
    /// The highest pfn the p2m describes (possibly trimmed).
    pub max_pfn: u64,
    /// The machine frames of the p2m pages, in pfn order.
    pub mfns: Vec<u64>,
}

fn bad(what: String) -> BackendError {
    BackendError::new("map the p2m", what).errno(errno::ERANGE)
}

/// Decodes `count` p2m entries of `width` octets; a 32-bit ~0 becomes `u64::MAX`.
pub fn decode_entries(width: usize, bytes: &[u8], count: usize) -> BResult<Vec<u64>> {
    if bytes.len() < count * width {
        return Err(bad(format!(
            "{count} p2m entries need {} octets, the frames hold {}",
            count * width,
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(width)
        .take(count)
        .map(|c| {
            if width == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            } else {
                let mut b = [0u8; 4];
                b.copy_from_slice(c);
                match u32::from_le_bytes(b) {
                    u32::MAX => u64::MAX,
                    v => v as u64,
                }
            }
        })
        .collect())
}

/// Encodes p2m entries as a guest of `width` octets stores them.
pub fn encode_entries(width: usize, p2m: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p2m.len() * width);
    for &m in p2m {
        if width == 8 {
            out.extend_from_slice(&m.to_le_bytes());
        } else {
            out.extend_from_slice(&(m as u32).to_le_bytes());
        }
    }
    out
}

fn entry(bytes: &[u8], i: u64) -> BResult<u64> {
    let off = i as usize * 8;
    let b = bytes
        .get(off..off + 8)
        .ok_or_else(|| bad(format!("page-table index {i} is beyond the mapped tables")))?;
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    Ok(u64::from_le_bytes(w))
}

fn canonical(vaddr: u64) -> bool {
    ((vaddr as i64) >> 47) == ((vaddr as i64) >> 63)
}

/// The p2m frames of a linear p2m list (`map_p2m_list`).
pub fn list_frames(
    l: &PvLayout,
    max_mfn: u64,
    mut max_pfn: u64,
    p2m_cr3: u64,
    p2m_vaddr: u64,
    read: &mut ReadFrames<'_>,
) -> BResult<P2mFrames> {
    let width = l.width as u64;
    let fpp = PAGE_SIZE as u64 / width;
    let root = l.cr3_to_frame(p2m_cr3);
    if root == 0 || root > max_mfn {
        return Err(bad(format!("bad p2m_cr3 value {p2m_cr3:#x}")));
    }
    let mut p2m_frames = max_pfn / fpp + 1;
    let mut p2m_end = p2m_vaddr
        .wrapping_add(p2m_frames.wrapping_mul(PAGE_SIZE as u64))
        .wrapping_sub(1);
    let mask: u64 = if l.width == 8 {
        if !canonical(p2m_vaddr)
            || !canonical(p2m_end)
            || p2m_end < p2m_vaddr
            || (p2m_vaddr <= HYPERVISOR_VIRT_END_X86_64 && p2m_end > HYPERVISOR_VIRT_START_X86_64)
        {
            return Err(bad(format!(
                "bad virtual p2m address range {p2m_vaddr:#x}-{p2m_end:#x}"
            )));
        }
        0x0000_ffff_ffff_ffff
    } else {
        let mask = 0xffff_ffff;
        if p2m_vaddr > mask
            || p2m_end > mask
            || p2m_end < p2m_vaddr
            || (p2m_vaddr <= HYPERVISOR_VIRT_END_X86_32 && p2m_end > HYPERVISOR_VIRT_START_X86_32)
        {
            return Err(bad(format!(
                "bad virtual p2m address range {p2m_vaddr:#x}-{p2m_end:#x}"
            )));
        }
        mask
    };
    let mut mfns = vec![root];
    let mut off = 0u64;
    let (mut idx_start, mut idx_end, mut saved_idx, mut saved_mfn) = (0u64, 0u64, 0u64, 0u64);
    for level in (1..=l.levels as u64).rev() {
        let n_pages = (idx_end - idx_start + 1) as usize;
        let tables = read(mfns.get(..n_pages).ok_or_else(|| {
            bad(format!(
                "level {level}: {n_pages} tables, {} known",
                mfns.len()
            ))
        })?)?;
        let shift = level * 9 + 3;
        idx_start = (p2m_vaddr.wrapping_sub(off) & mask) >> shift;
        idx_end = (p2m_end.wrapping_sub(off) & mask) >> shift;
        let mut next = Vec::with_capacity((idx_end - idx_start + 1) as usize);
        for idx in idx_start..=idx_end {
            let mfn = x86::pte_frame(entry(&tables, idx)?);
            if mfn == 0 || mfn > max_mfn {
                return Err(bad(format!(
                    "bad mfn {mfn:#x} during page table walk for vaddr {:#x} at level {level} of the p2m list",
                    off.wrapping_add(idx << shift)
                )));
            }
            next.push(mfn);
            if level == 2 && mfn != saved_mfn {
                saved_mfn = mfn;
                saved_idx = idx - idx_start;
            }
        }
        if level == 2 {
            // libxc compares the relative index with the absolute one here.
            if saved_idx == idx_end {
                saved_idx += 1;
            }
            let trimmed = (saved_idx << 9).wrapping_mul(fpp).wrapping_sub(1);
            if trimmed < max_pfn {
                max_pfn = trimmed;
                p2m_frames = (max_pfn + fpp) / fpp;
                p2m_end = p2m_vaddr
                    .wrapping_add(p2m_frames.wrapping_mul(PAGE_SIZE as u64))
                    .wrapping_sub(1);
                idx_end = idx_start + saved_idx;
            }
        }
        off = p2m_vaddr & ((mask >> shift) << shift);
        mfns = next;
    }
    let n = (idx_end - idx_start + 1) as usize;
    mfns.truncate(n);
    if mfns.len() != n {
        return Err(bad(format!(
            "{n} p2m frames expected, {} found",
            mfns.len()
        )));
    }
    Ok(P2mFrames { max_pfn, mfns })
}

/// The p2m frames of a three-level p2m tree (`map_p2m_tree`).
pub fn tree_frames(
    l: &PvLayout,
    max_mfn: u64,
    mut max_pfn: u64,
    fll_mfn: u64,
    read: &mut ReadFrames<'_>,
) -> BResult<P2mFrames> {
    let width = l.width;
    let fpp = (PAGE_SIZE / width) as u64;
    let mut fll_entries = max_pfn / (fpp * fpp) + 1;
    if fll_entries > fpp {
        return Err(bad(format!("max_pfn {max_pfn:#x} too large for p2m tree")));
    }
    if fll_mfn == 0 || fll_mfn > max_mfn {
        return Err(bad(format!("bad mfn {fll_mfn:#x} for p2m frame list list")));
    }
    let fll_page = read(&[fll_mfn])?;
    let fll = decode_entries(width, &fll_page, fll_entries as usize)?;
    let (mut saved_mfn, mut saved_x) = (0u64, 0u64);
    for (x, &m) in fll.iter().enumerate() {
        if m == 0 || m > max_mfn {
            return Err(bad(format!(
                "bad mfn {m:#x} at index {x} (of {fll_entries}) in p2m frame list list"
            )));
        }
        if m != saved_mfn {
            saved_mfn = m;
            saved_x = x as u64;
        }
    }
    let trimmed = (saved_x + 1) * fpp * fpp - 1;
    if trimmed < max_pfn {
        max_pfn = trimmed;
        fll_entries = max_pfn / (fpp * fpp) + 1;
    }
    let fl_entries = (max_pfn / fpp + 1) as usize;
    let fl_pages = read(fll.get(..fll_entries as usize).unwrap_or(&fll))?;
    let fl = decode_entries(width, &fl_pages, fl_entries)?;
    for (x, &m) in fl.iter().enumerate() {
        if m == 0 || m > max_mfn {
            return Err(bad(format!(
                "bad mfn {m:#x} at index {x} (of {fl_entries}) in p2m frame list"
            )));
        }
    }
    Ok(P2mFrames { max_pfn, mfns: fl })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::{PV32, PV64};
    use std::collections::HashMap;

    /// Guest memory by mfn.
    #[derive(Default)]
    struct Mem {
        frames: HashMap<u64, Vec<u8>>,
        next: u64,
    }

    impl Mem {
        fn alloc(&mut self) -> u64 {
            self.next += 1;
            let m = 0x1000 + self.next;
            self.frames.insert(m, vec![0; PAGE_SIZE]);
            m
        }
        fn set_u64(&mut self, mfn: u64, idx: usize, v: u64) {
            let f = self.frames.get_mut(&mfn).unwrap();
            f[idx * 8..idx * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn reader(&self) -> impl FnMut(&[u64]) -> BResult<Vec<u8>> + '_ {
            |mfns: &[u64]| {
                let mut out = Vec::new();
                for m in mfns {
                    let f = self
                        .frames
                        .get(m)
                        .ok_or_else(|| BackendError::new("read", format!("no frame {m:#x}")))?;
                    out.extend_from_slice(f);
                }
                Ok(out)
            }
        }
    }

    /// Maps `leaves` at `vaddr` in a fresh 4-level address space; returns the L4 mfn.
    fn map_list(mem: &mut Mem, vaddr: u64, leaves: &[u64]) -> u64 {
        let l4 = mem.alloc();
        let mut tables: HashMap<(u32, u64), u64> = HashMap::new();
        for (i, &leaf) in leaves.iter().enumerate() {
            let va = vaddr + (i as u64) * 4096;
            let mut table = l4;
            for level in (2..=4u32).rev() {
                let shift = level * 9 + 3;
                let idx = ((va & 0x0000_ffff_ffff_ffff) >> shift) & 511;
                let key_base = va >> shift;
                let next = *tables
                    .entry((level, key_base))
                    .or_insert_with(|| mem.alloc());
                mem.set_u64(table, idx as usize, (next << 12) | 0x67);
                table = next;
            }
            let idx = ((va >> 12) & 511) as usize;
            mem.set_u64(table, idx, (leaf << 12) | 0x67);
        }
        l4
    }

    #[test]
    fn linear_list_is_walked_to_its_leaves() {
        let mut mem = Mem::default();
        let leaves: Vec<u64> = (0..64).map(|_| mem.alloc()).collect();
        let vaddr = 0xffff_c900_0000_0000;
        let l4 = map_list(&mut mem, vaddr, &leaves);
        let max_pfn = 64 * 512 - 1;
        let mut read = mem.reader();
        let got = list_frames(&PV64, 0x10_0000, max_pfn, l4 << 12, vaddr, &mut read).unwrap();
        assert_eq!(got.max_pfn, max_pfn);
        assert_eq!(got.mfns, leaves);
    }

    #[test]
    fn linear_list_spanning_l1_tables() {
        let mut mem = Mem::default();
        let leaves: Vec<u64> = (0..1000).map(|_| mem.alloc()).collect();
        let vaddr = 0xffff_c900_4000_0000;
        let l4 = map_list(&mut mem, vaddr, &leaves);
        let max_pfn = 1000 * 512 - 1;
        let mut read = mem.reader();
        let got = list_frames(&PV64, 0x10_0000, max_pfn, l4 << 12, vaddr, &mut read).unwrap();
        assert_eq!((got.max_pfn, got.mfns), (max_pfn, leaves));
    }

    #[test]
    fn unaligned_list_is_trimmed_as_libxc_trims_it() {
        // A list that does not start at L2 index 0: libxc compares the relative index of the
        // last distinct L2 entry with the absolute end index, and cuts max_pfn to the first
        // L1 table's worth. Linux aligns its p2m to 1 GiB, so this never bites in practice;
        // the walk keeps libxc's arithmetic so that records come out the same.
        let mut mem = Mem::default();
        let leaves: Vec<u64> = (0..600).map(|_| mem.alloc()).collect();
        let vaddr = 0xffff_c900_3ff0_0000;
        let l4 = map_list(&mut mem, vaddr, &leaves);
        let mut read = mem.reader();
        let got = list_frames(&PV64, 0x10_0000, 600 * 512 - 1, l4 << 12, vaddr, &mut read).unwrap();
        assert_eq!(got.max_pfn, 512 * 512 - 1);
        assert_eq!(got.mfns, &leaves[..512]);
    }

    #[test]
    fn linear_list_with_a_repeated_tail_is_trimmed() {
        // Four L2 entries: the first L1 table maps real leaves, the other three entries all
        // point at one L1 table that maps a single `missing` frame in every slot (Linux's
        // p2m_missing). max_pfn is cut to what the first L1 table maps.
        let mut mem = Mem::default();
        let vaddr = 0xffff_c900_0000_0000u64;
        let mut leaves: Vec<u64> = (0..512).map(|_| mem.alloc()).collect();
        let missing = mem.alloc();
        leaves.extend(vec![missing; 512 * 3]);
        let l4 = map_list(&mut mem, vaddr, &leaves[..1024]);
        // Point L2 entries 2 and 3 at the L1 table of entry 1 (all `missing`).
        let l3 = mem.frames[&l4][((vaddr >> 39) & 511) as usize * 8..][..8].to_vec();
        let l3 = x86::pte_frame(u64::from_le_bytes(l3.try_into().unwrap()));
        let l2 = mem.frames[&l3][((vaddr >> 30) & 511) as usize * 8..][..8].to_vec();
        let l2 = x86::pte_frame(u64::from_le_bytes(l2.try_into().unwrap()));
        let e1 = mem.frames[&l2][8..16].to_vec();
        let e1 = u64::from_le_bytes(e1.try_into().unwrap());
        mem.set_u64(l2, 2, e1);
        mem.set_u64(l2, 3, e1);
        let max_pfn = 4 * 512 * 512 - 1;
        let mut read = mem.reader();
        let got = list_frames(&PV64, 0x10_0000, max_pfn, l4 << 12, vaddr, &mut read).unwrap();
        assert_eq!(got.max_pfn, 512 * 512 - 1);
        assert_eq!(got.mfns, &leaves[..512]);
    }

    #[test]
    fn bad_roots_and_ranges_are_refused() {
        let mem = Mem::default();
        let mut read = mem.reader();
        let e = list_frames(&PV64, 0x1000, 100, 0, 0xffff_c900_0000_0000, &mut read).unwrap_err();
        assert_eq!(e.errno, Some(errno::ERANGE));
        let e = list_frames(
            &PV64,
            0x10_0000,
            100,
            0x2000 << 12,
            0xffff_8000_0000_0000,
            &mut read,
        )
        .unwrap_err();
        assert!(e.detail.contains("virtual p2m address range"), "{e}");
    }

    #[test]
    fn tree_is_walked_and_trimmed() {
        let mut mem = Mem::default();
        let fpp = 512usize;
        let leaves: Vec<u64> = (0..70).map(|_| mem.alloc()).collect();
        let fl = mem.alloc();
        for (i, &m) in leaves.iter().enumerate() {
            mem.set_u64(fl, i, m);
        }
        let fll = mem.alloc();
        mem.set_u64(fll, 0, fl);
        let max_pfn = 70 * fpp as u64 - 1;
        let mut read = mem.reader();
        let got = tree_frames(&PV64, 0x10_0000, max_pfn, fll, &mut read).unwrap();
        assert_eq!(
            got,
            P2mFrames {
                max_pfn,
                mfns: leaves
            }
        );
    }

    #[test]
    fn entries_round_trip_in_both_widths() {
        let p2m = vec![5, u64::MAX, 0x1234];
        for w in [4usize, 8] {
            let b = encode_entries(w, &p2m);
            assert_eq!(b.len(), 3 * w);
            assert_eq!(decode_entries(w, &b, 3).unwrap(), p2m);
        }
        assert!(decode_entries(8, &[0; 8], 2).is_err());
    }

    #[test]
    fn arch_fields() {
        // gcc: offsetof(shared_info_t, arch.p2m_cr3) == 3112 on x86-64.
        assert_eq!(arch_field(&PV64, ArchField::MaxPfn), 3088);
        assert_eq!(arch_field(&PV64, ArchField::FrameListList), 3096);
        assert_eq!(arch_field(&PV64, ArchField::P2mCr3), 3112);
        assert_eq!(arch_field(&PV64, ArchField::P2mVaddr), 3120);
        assert_eq!(arch_field(&PV64, ArchField::P2mGeneration), 3128);
        assert_eq!(arch_field(&PV32, ArchField::P2mCr3), 2328);
    }
}
