//! A vCPU's registers as an analyst wants them, from whichever record the image keeps them
//! in: a PV guest's `vcpu_guest_context` (X86_PV_VCPU_BASIC, both widths) or an HVM guest's
//! CPU save record inside HVM_CONTEXT. Both layouts are `spec/x86_state.yaml`'s.

use crate::ForensicsError;
use serde::Serialize;
use xenmig_core::core_dump::{CpuStateFlags, PagingMode};
use xenmig_core::limits::PAGE_SHIFT;
use xenmig_core::wire::{DecodeCtx, Strictness};
use xenmig_core::x86_state;
use xenmig_core::x86_state::{Cr0Bits, Cr4Bits, EferBits, VgcfBits};

/// The general, segment and control registers of one vCPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VcpuRegs {
    /// The vCPU's id.
    pub vcpu: u32,
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// RSP.
    pub rsp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// The CS selector.
    pub cs: u16,
    /// The SS selector.
    pub ss: u16,
    /// The DS selector.
    pub ds: u16,
    /// The ES selector.
    pub es: u16,
    /// The FS selector.
    pub fs: u16,
    /// The GS selector.
    pub gs: u16,
    /// The FS base.
    pub fs_base: u64,
    /// The GS base of the vCPU's current mode.
    pub gs_base: u64,
    /// The other GS base (what `swapgs` brings in).
    pub gs_base_kernel: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2: the last page-fault address.
    pub cr2: u64,
    /// cr3 as a guest-physical address (for a PV guest, converted from its frame number).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER, where the image has it (HVM).
    pub efer: Option<u64>,
    /// The GDTR base address.
    pub gdtr_base: u64,
    /// The IDTR base address.
    pub idtr_base: u64,
    /// The paging mode the control registers select.
    #[serde(serialize_with = "mode_name")]
    pub mode: PagingMode,
    /// The vCPU of a PV guest.
    pub pv: bool,
}

fn mode_name<S: serde::Serializer>(m: &PagingMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mode_text(*m))
}

/// The paging mode's name in lower case (`long`, `pae`, `real`...).
pub fn mode_text(m: PagingMode) -> String {
    m.to_string().to_lowercase()
}

/// A guest word width: 8 octets for a 64-bit PV guest, 4 for a 32-bit (PAE) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvWidth {
    /// A 32-bit (PAE) guest: 4-octet words.
    W32,
    /// A 64-bit guest: 8-octet words.
    W64,
}

impl PvWidth {
    /// From X86_PV_INFO's guest_width (octets).
    pub fn from_octets(w: u8) -> Option<PvWidth> {
        match w {
            4 => Some(PvWidth::W32),
            8 => Some(PvWidth::W64),
            _ => None,
        }
    }
}

fn ctx() -> DecodeCtx {
    DecodeCtx::new(x86_state::REVISION).with_strictness(Strictness::Lenient)
}

/// The paging mode from cr0, cr4 and EFER.
pub fn paging_mode(cr0: u64, cr4: u64, efer: u64) -> PagingMode {
    if cr0 & Cr0Bits::PE.0 == 0 {
        PagingMode::REAL
    } else if cr0 & Cr0Bits::PG.0 == 0 {
        PagingMode::PROTECTED
    } else if efer & EferBits::LMA.0 != 0 {
        if cr4 & Cr4Bits::LA57.0 != 0 {
            PagingMode::LONG_LA57
        } else {
            PagingMode::LONG
        }
    } else if cr4 & Cr4Bits::PAE.0 != 0 {
        PagingMode::PAE
    } else {
        PagingMode::PAGED_32
    }
}

impl VcpuRegs {
    /// The flags of the `xenmig_cpu_state` note for these registers.
    pub fn note_flags(&self) -> CpuStateFlags {
        let mut f = 0;
        if self.efer.is_some() {
            f |= CpuStateFlags::EFER_KNOWN.0;
        }
        if self.pv {
            f |= CpuStateFlags::PV.0;
        }
        CpuStateFlags(f)
    }

    /// A PV vCPU from X86_PV_VCPU_BASIC's context (the 64- or 32-bit `vcpu_guest_context`).
    pub fn from_pv(vcpu: u32, context: &[u8], width: PvWidth) -> Result<VcpuRegs, ForensicsError> {
        let bad = |e: xenmig_core::wire::DecodeError| ForensicsError::State {
            what: format!("vCPU {vcpu}'s PV context"),
            detail: e.to_string(),
        };
        match width {
            PvWidth::W64 => {
                let c = x86_state::VcpuContextX8664::decode(context, &ctx()).map_err(bad)?;
                let u = &c.user_regs;
                let in_kernel = c.flags & VgcfBits::IN_KERNEL.0 != 0;
                let (gs_base, gs_base_kernel) = if in_kernel {
                    (c.gs_base_kernel, c.gs_base_user)
                } else {
                    (c.gs_base_user, c.gs_base_kernel)
                };
                // A 64-bit PV cr3 holds the frame shifted up by the page shift.
                let cr3 = (c.cr3 >> PAGE_SHIFT) << PAGE_SHIFT;
                let mode = if c.cr4 & Cr4Bits::LA57.0 != 0 {
                    PagingMode::LONG_LA57
                } else {
                    PagingMode::LONG
                };
                Ok(VcpuRegs {
                    vcpu,
                    rax: u.rax,
                    rbx: u.rbx,
                    rcx: u.rcx,
                    rdx: u.rdx,
                    rsi: u.rsi,
                    rdi: u.rdi,
                    rbp: u.rbp,
                    rsp: u.rsp,
                    r8: u.r8,
                    r9: u.r9,
                    r10: u.r10,
                    r11: u.r11,
                    r12: u.r12,
                    r13: u.r13,
                    r14: u.r14,
                    r15: u.r15,
                    rip: u.rip,
                    rflags: u.rflags,
                    cs: u.cs,
                    ss: u.ss,
                    ds: u.ds,
                    es: u.es,
                    fs: u.fs,
                    gs: u.gs,
                    fs_base: c.fs_base,
                    gs_base,
                    gs_base_kernel,
                    cr0: c.cr0,
                    cr2: c.cr2,
                    cr3,
                    cr4: c.cr4,
                    efer: None,
                    gdtr_base: 0,
                    idtr_base: 0,
                    mode,
                    pv: true,
                })
            }
            PvWidth::W32 => {
                let c = x86_state::VcpuContextX8632::decode(context, &ctx()).map_err(bad)?;
                let u = &c.user_regs;
                // A 32-bit PAE guest's cr3 holds the frame rotated left by 12 in 32 bits (its
                // top bits wrapped into the low ones), so frames above 4 GiB fit.
                let c3 = c.cr3;
                let frame = u64::from(c3.rotate_right(PAGE_SHIFT));
                Ok(VcpuRegs {
                    vcpu,
                    rax: u64::from(u.eax),
                    rbx: u64::from(u.ebx),
                    rcx: u64::from(u.ecx),
                    rdx: u64::from(u.edx),
                    rsi: u64::from(u.esi),
                    rdi: u64::from(u.edi),
                    rbp: u64::from(u.ebp),
                    rsp: u64::from(u.esp),
                    rip: u64::from(u.eip),
                    rflags: u64::from(u.eflags),
                    cs: u.cs,
                    ss: u.ss,
                    ds: u.ds,
                    es: u.es,
                    fs: u.fs,
                    gs: u.gs,
                    cr0: u64::from(c.cr0),
                    cr2: u64::from(c.cr2),
                    cr3: frame << PAGE_SHIFT,
                    cr4: u64::from(c.cr4),
                    efer: None,
                    mode: PagingMode::PAE,
                    pv: true,
                    ..VcpuRegs::default()
                })
            }
        }
    }

    /// An HVM vCPU from its CPU save record.
    pub fn from_hvm(vcpu: u32, c: &x86_state::Cpu) -> VcpuRegs {
        VcpuRegs {
            vcpu,
            rax: c.rax,
            rbx: c.rbx,
            rcx: c.rcx,
            rdx: c.rdx,
            rsi: c.rsi,
            rdi: c.rdi,
            rbp: c.rbp,
            rsp: c.rsp,
            r8: c.r8,
            r9: c.r9,
            r10: c.r10,
            r11: c.r11,
            r12: c.r12,
            r13: c.r13,
            r14: c.r14,
            r15: c.r15,
            rip: c.rip,
            rflags: c.rflags,
            cs: c.cs_sel as u16,
            ss: c.ss_sel as u16,
            ds: c.ds_sel as u16,
            es: c.es_sel as u16,
            fs: c.fs_sel as u16,
            gs: c.gs_sel as u16,
            fs_base: c.fs_base,
            gs_base: c.gs_base,
            gs_base_kernel: c.shadow_gs,
            cr0: c.cr0,
            cr2: c.cr2,
            cr3: c.cr3,
            cr4: c.cr4,
            efer: Some(c.msr_efer),
            gdtr_base: c.gdtr_base,
            idtr_base: c.idtr_base,
            mode: paging_mode(c.cr0, c.cr4, c.msr_efer),
            pv: false,
        }
    }

    /// Every vCPU of an HVM context (the CPU save records inside HVM_CONTEXT), by vCPU id.
    pub fn from_hvm_context(context: &[u8]) -> Result<Vec<VcpuRegs>, ForensicsError> {
        let mut out = Vec::new();
        for f in x86_state::Frames::new(context).iter() {
            let f = f.map_err(|e| ForensicsError::State {
                what: "HVM_CONTEXT".into(),
                detail: e.to_string(),
            })?;
            if u32::from(f.header.typecode) == x86_state::Cpu::TYPE {
                let vcpu = u32::from(f.header.instance);
                let c =
                    x86_state::Cpu::decode(f.body, &ctx()).map_err(|e| ForensicsError::State {
                        what: format!("vCPU {vcpu}'s CPU save record"),
                        detail: e.to_string(),
                    })?;
                out.push(VcpuRegs::from_hvm(vcpu, &c));
            }
        }
        out.sort_by_key(|v| v.vcpu);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_control_registers() {
        assert_eq!(paging_mode(0x10, 0, 0), PagingMode::REAL);
        assert_eq!(paging_mode(0x11, 0, 0), PagingMode::PROTECTED);
        assert_eq!(paging_mode(0x8000_0011, 0, 0), PagingMode::PAGED_32);
        assert_eq!(paging_mode(0x8000_0011, 0x20, 0), PagingMode::PAE);
        assert_eq!(paging_mode(0x8005_0033, 0x20, 0xd01), PagingMode::LONG);
        assert_eq!(
            paging_mode(0x8005_0033, 0x1020, 0xd01),
            PagingMode::LONG_LA57
        );
        assert_eq!(mode_text(PagingMode::LONG_LA57), "long_la57");
    }

    #[test]
    fn a_pae_guests_cr3_names_a_frame_above_4_gib() {
        // A 32-bit PV guest keeps a frame above 4 GiB in cr3 rotated left by 12 within 32 bits.
        let frame: u32 = 0x0012_3456;
        let c = x86_state::VcpuContextX8632 {
            cr3: frame.rotate_left(12),
            user_regs: x86_state::CpuUserRegsX8632 {
                eip: 0xc010_0000,
                ..Default::default()
            },
            ..Default::default()
        };
        let bytes = c.encode(xenmig_core::wire::Endian::Little).unwrap();
        let v = VcpuRegs::from_pv(1, &bytes, PvWidth::W32).unwrap();
        assert_eq!(v.cr3, u64::from(frame) << 12);
        assert_eq!(v.rip, 0xc010_0000);
        assert_eq!(v.mode, PagingMode::PAE);
        assert_eq!(v.note_flags(), CpuStateFlags::PV);
    }
}
