//! The state digest: SHA-256 over the whole guest state in a form that does not depend on
//! machine frame numbers, so that a source at suspend and the domain a correct restore built
//! from its stream hash the same.
//!
//! Covered, in order:
//! - every populated pfn (ascending): the pfn, its page type, its contents. Page-table pages
//!   have present entries' mfns turned into pfns and Xen's slots zeroed; the PV p2m frames
//!   have their mfns turned into pfns; start_info has its store and console frames as pfns
//!   (mfns while the guest runs, pfns while it is suspended) and the fields a restore sets from its own domain (store and console event channels,
//!   the shared info address) zeroed. Unpopulated pfns (ballooned, holes) are left out.
//! - each vcpu with any state: its id and its basic (PV: cr3, cr1, the GDT frames and vcpu0's
//!   `edx` as pfns), extended, xsave and MSR blobs;
//! - TSC info; the CPUID and MSR policies;
//! - PV: shared info as Xen's restore leaves it: `vcpu_info` with each `evtchn_pending_sel`
//!   cleared and `arch` with `pfn_to_mfn_frame_list_list` zeroed (the pending bits and the
//!   mask, which a restore resets, and the wallclock, which it keeps from the destination,
//!   are left out);
//! - HVM: the context blob, and the params the saver sends (format reference §6), 0 for
//!   unset ones. STORE_EVTCHN and CONSOLE_EVTCHN are set by the restorer from its own
//!   toolstack and are left out, as are params the saver does not send.

use super::pv::{get_pte, table_level};
use super::{hvm_param, SimDomain, VcpuBlobs};
use crate::domain::{GuestType, PAGE_SIZE};
use crate::limits::PAGE_SHIFT;
use crate::x86::{pte_frame, pte_with_frame, PvLayout, PTE_PRESENT};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn blob(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

impl SimDomain {
    /// A digest of the whole state, independent of machine frame numbers (see the module
    /// documentation for what it covers).
    pub fn state_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"xenmig-sim-state-v1\0");
        h.update([
            match self.guest {
                GuestType::X86Pv => 1,
                GuestType::X86Hvm => 2,
            },
            self.width,
        ]);
        self.hash_memory(&mut h);
        self.hash_vcpus(&mut h);
        h.update(b"tsc");
        h.update(self.tsc.mode.to_le_bytes());
        h.update(self.tsc.khz.to_le_bytes());
        h.update(self.tsc.nsec.to_le_bytes());
        h.update(self.tsc.incarnation.to_le_bytes());
        h.update(b"cpu-policy");
        blob(&mut h, &self.cpuid_policy);
        blob(&mut h, &self.msr_policy);
        match self.guest {
            GuestType::X86Pv => self.hash_shared_info(&mut h),
            GuestType::X86Hvm => {
                h.update(b"hvm-context");
                blob(&mut h, &self.hvm_context);
                h.update(b"hvm-params");
                for i in hvm_param::saved() {
                    h.update(i.to_le_bytes());
                    h.update(self.hvm_params.get(&i).copied().unwrap_or(0).to_le_bytes());
                }
            }
        }
        h.finalize().into()
    }

    /// [`SimDomain::state_digest`] in hex.
    pub fn state_digest_hex(&self) -> String {
        hex(&self.state_digest())
    }

    /// An mfn as a pfn when the domain owns it.
    fn owned_pfn(&self, mfn: u64) -> Option<u64> {
        self.m2p.get(&mfn).copied()
    }

    fn hash_memory(&self, h: &mut Sha256) {
        h.update(b"memory");
        let l = self.pv_layout_facts();
        let p2m_frames: HashSet<u64> = self.p2m_frames.iter().copied().collect();
        let start_info = self.start_info_pfn();
        let mut page = vec![0u8; PAGE_SIZE];
        for pfn in self.mem.populated_pfns() {
            let t = self.mem.page_type(pfn);
            h.update(pfn.to_le_bytes());
            h.update(t.0.to_le_bytes());
            let raw = self.mem.trimmed(pfn).unwrap_or(&[]);
            let Some(l) = l else {
                blob(h, raw);
                continue;
            };
            if let Some(level) = table_level(t) {
                self.mem.read(pfn, &mut page);
                self.normalise_table(l, level, &mut page);
            } else if p2m_frames.contains(&pfn) {
                self.mem.read(pfn, &mut page);
                self.normalise_p2m_frame(l, &mut page);
            } else if start_info == Some(pfn) {
                self.mem.read(pfn, &mut page);
                self.normalise_start_info(l, &mut page);
            } else {
                blob(h, raw);
                continue;
            }
            blob(h, &page[..super::memory::trimmed_len(&page)]);
        }
    }

    fn normalise_table(&self, l: &PvLayout, level: u8, page: &mut [u8]) {
        let xen = l.xen_slots(level);
        for i in 0..l.ptes_per_page() {
            let pte = get_pte(page, i);
            let new = if xen.as_ref().is_some_and(|r| r.contains(&i)) {
                0
            } else if pte & PTE_PRESENT != 0 {
                match self.owned_pfn(pte_frame(pte)) {
                    Some(pfn) => pte_with_frame(pte, pfn),
                    None => pte,
                }
            } else {
                pte
            };
            page[i * 8..i * 8 + 8].copy_from_slice(&new.to_le_bytes());
        }
    }

    fn normalise_p2m_frame(&self, l: &PvLayout, page: &mut [u8]) {
        let invalid = if l.width == 8 { u64::MAX } else { 0xffff_ffff };
        for off in (0..PAGE_SIZE).step_by(l.width) {
            if let Some(v) = l.get(page, off).filter(|&v| v != invalid) {
                if let Some(pfn) = self.owned_pfn(v) {
                    l.set(page, off, pfn);
                }
            }
        }
    }

    fn normalise_start_info(&self, l: &PvLayout, page: &mut [u8]) {
        let si = crate::x86::StartInfo::for_width(l.width as u8);
        for off in [si.store_mfn, si.console_mfn] {
            if let Some(v) = l.get(page, off) {
                // A running guest's field that names no frame of its own hashes as a marker.
                l.set(
                    page,
                    off,
                    self.start_info_field_pfn(v).unwrap_or(u64::MAX - 1),
                );
            }
        }
        l.set(page, si.shared_info, 0);
        for off in [si.store_evtchn, si.console_evtchn] {
            page[off..off + 4].fill(0);
        }
    }

    fn hash_vcpus(&self, h: &mut Sha256) {
        h.update(b"vcpus");
        let l = self.pv_layout_facts();
        for (v, blobs) in self.vcpus.iter().enumerate() {
            if blobs.is_empty() {
                continue;
            }
            h.update((v as u32).to_le_bytes());
            let VcpuBlobs {
                basic,
                extended,
                xsave,
                msrs,
            } = blobs;
            match l.filter(|l| basic.len() == l.vcpu_context_size) {
                Some(l) => blob(h, &self.normalise_context(l, v == 0, basic)),
                None => blob(h, basic),
            }
            blob(h, extended);
            blob(h, xsave);
            blob(h, msrs);
        }
    }

    fn normalise_context(&self, l: &PvLayout, vcpu0: bool, ctx: &[u8]) -> Vec<u8> {
        let mut ctx = ctx.to_vec();
        let to_pfn = |f: u64| self.owned_pfn(f).unwrap_or(f);
        if let Some(cr3) = l.get(&ctx, l.cr(3)) {
            l.set(&mut ctx, l.cr(3), to_pfn(l.cr3_to_frame(cr3)));
        }
        if l.width == 8 {
            if let Some(cr1) = l.get(&ctx, l.cr(1)).filter(|c| c & 1 != 0) {
                l.set(
                    &mut ctx,
                    l.cr(1),
                    (to_pfn(cr1 >> PAGE_SHIFT) << PAGE_SHIFT) | 1,
                );
            }
        }
        let ents = l.get(&ctx, l.gdt_ents).unwrap_or(0);
        for i in 0..(ents.div_ceil(512) as usize).min(16) {
            let off = l.gdt_frames + i * l.width;
            if let Some(f) = l.get(&ctx, off) {
                l.set(&mut ctx, off, to_pfn(f));
            }
        }
        if vcpu0 {
            if let Some(edx) = l.get(&ctx, l.edx) {
                l.set(&mut ctx, l.edx, to_pfn(edx));
            }
        }
        ctx
    }

    fn hash_shared_info(&self, h: &mut Sha256) {
        h.update(b"shared-info");
        let Some(l) = self.pv_layout_facts() else {
            return;
        };
        if self.shared_info.len() != PAGE_SIZE {
            blob(h, &self.shared_info);
            return;
        }
        let (vi_off, vi_len) = l.shinfo_vcpu_info;
        let mut vcpu_info = self.shared_info[vi_off..vi_off + vi_len].to_vec();
        for i in 0..vi_len / l.vcpu_info_size {
            l.set(
                &mut vcpu_info,
                i * l.vcpu_info_size + l.evtchn_pending_sel,
                0,
            );
        }
        blob(h, &vcpu_info);
        let (arch_off, arch_len) = l.shinfo_arch;
        let mut arch = self.shared_info[arch_off..arch_off + arch_len].to_vec();
        l.set(&mut arch, l.pfn_to_mfn_frame_list_list - arch_off, 0);
        blob(h, &arch);
    }
}
