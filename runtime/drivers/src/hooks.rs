//! What differs between guest types when saving (format-reference §3 "Hooks"): x86 PV guests
//! carry their own p2m and page tables that must be rewritten from machine frames to pfns;
//! x86 HVM guests carry parameters and a hypervisor context blob.

use crate::domain::{errno, BResult, BackendError, Domain, GuestType, SaveCallbacks, VcpuState};
use crate::libxc;
use crate::limits::{table_level, PAGE_OFFSET_MASK, PAGE_SHIFT};
use crate::wire::Array;
use crate::writer::{StreamWriter, WriteError};
use crate::x86::{self, PvLayout};
use std::io::Write;

/// Why a save failed. It is defined here, with the hooks that return it, so that the saver
/// ([`crate::save`], which re-exports it) depends on the hooks and not the other way round.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The domain refused an operation.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Writing the stream failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The guest could not be suspended.
    #[error("the guest did not suspend: {0}")]
    Suspend(String),
    /// The precopy policy gave up.
    #[error("the precopy policy aborted the save")]
    Aborted,
    /// The domain's state cannot be saved as it is.
    #[error("{0}")]
    Invalid(String),
    /// The back channel from the restorer (COLO) failed.
    #[error("back channel: {0}")]
    BackChannel(String),
}

/// A writer of libxc records, whatever it writes to.
pub type Out<'w> = dyn RecordOut + 'w;

/// Writes libxc records (object-safe view of [`StreamWriter`]).
pub trait RecordOut {
    /// Writes one record.
    fn record(&mut self, r: &libxc::Record<'_>) -> Result<(), SaveError>;
}

impl<W: Write> RecordOut for StreamWriter<W> {
    fn record(&mut self, r: &libxc::Record<'_>) -> Result<(), SaveError> {
        self.libxc(r).map_err(SaveError::from)
    }
}

/// Per-guest-type steps of a save.
pub trait SaveHooks<D: Domain> {
    /// Prepares the save (PV: reads the guest's p2m).
    fn setup(&mut self, dom: &mut D, cb: &mut dyn SaveCallbacks<D>) -> Result<(), SaveError>;
    /// The number of pfns the save walks.
    fn p2m_size(&mut self, dom: &mut D) -> BResult<u64>;
    /// Writes the static data: what is sent once, before memory.
    fn static_data(&mut self, dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError>;
    /// Writes the records that follow the static data, before any memory (PV: X86_PV_P2M_FRAMES).
    fn start_of_stream(&mut self, dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError>;
    /// Writes the records that start a checkpoint.
    fn start_of_checkpoint(&mut self, _dom: &mut D, _w: &mut Out<'_>) -> Result<(), SaveError> {
        Ok(())
    }
    /// Writes the state that ends a checkpoint or the stream: vCPUs, HVM context, TSC, shared info.
    fn end_of_checkpoint(&mut self, dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError>;
    /// Checks, at the start of each checkpoint, that the guest is still as the save found it
    /// (PV: its p2m has not changed).
    fn check_vm_state(&mut self, _dom: &mut D) -> Result<(), SaveError> {
        Ok(())
    }
    /// The gfn behind each pfn, as [`Domain::pfn_to_gfn`].
    fn pfn_to_gfn(&mut self, dom: &mut D, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()>;
    /// Rewrites a page before it is sent (page tables: machine frames to pfns).
    fn normalise_page(
        &mut self,
        dom: &mut D,
        page_type: libxc::PageType,
        page: &mut [u8],
    ) -> BResult<()>;
    /// Whether [`SaveHooks::normalise_page`] may change (or refuse) pages of this type; a
    /// batch with none of them goes out as read, in pieces.
    fn normalises(&self, _page_type: libxc::PageType) -> bool {
        true
    }
    /// Releases what [`SaveHooks::setup`] took.
    fn cleanup(&mut self, dom: &mut D, cb: &mut dyn SaveCallbacks<D>) -> Result<(), SaveError>;
}

/// The hooks for a guest type.
pub fn save_hooks<D: Domain + 'static>(guest: GuestType) -> Box<dyn SaveHooks<D>> {
    match guest {
        GuestType::X86Pv => Box::new(X86PvSave::default()),
        GuestType::X86Hvm => Box::new(X86HvmSave::default()),
    }
}

fn policies<D: Domain>(dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError> {
    let (cpuid, msrs) = dom.cpu_policy()?;
    let le = crate::wire::Endian::Little;
    if !cpuid.is_empty() {
        w.record(&libxc::Record::X86CpuidPolicy(libxc::X86CpuidPolicy {
            leaves: Array::Encoded {
                bytes: &cpuid,
                endian: le,
            },
        }))?;
    }
    if !msrs.is_empty() {
        w.record(&libxc::Record::X86MsrPolicy(libxc::X86MsrPolicy {
            entries: Array::Encoded {
                bytes: &msrs,
                endian: le,
            },
        }))?;
    }
    Ok(())
}

fn tsc<D: Domain>(dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError> {
    let t = dom.tsc_info()?;
    w.record(&libxc::Record::X86TscInfo(libxc::X86TscInfo {
        mode: t.mode,
        khz: t.khz,
        nsec: t.nsec,
        incarnation: t.incarnation,
        reserved: 0,
    }))
}

/// x86 PV guests.
#[derive(Default)]
pub struct X86PvSave {
    layout: Option<&'static PvLayout>,
    p2m: Vec<u64>,
    p2m_frames: Vec<u64>,
    p2m_size: u64,
    generation: u64,
}

impl X86PvSave {
    fn layout(&self) -> BResult<&'static PvLayout> {
        self.layout
            .ok_or_else(|| BackendError::new("pv save", "setup has not run"))
    }
}

/// Rewrites the present entries of a page table with `map` (frame → frame), zeroing Xen's
/// slots. Shared by save (mfn → pfn) and restore (pfn → mfn).
pub fn rewrite_page_table(
    layout: &PvLayout,
    page_type: libxc::PageType,
    page: &mut [u8],
    mut map: impl FnMut(u64) -> BResult<u64>,
) -> BResult<()> {
    // Callers pass page tables only; any other type has no level and no Xen slots.
    let level = page_type.level().unwrap_or(0);
    let xen = layout.xen_slots(level);
    for (i, chunk) in page.chunks_exact_mut(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let pte = u64::from_le_bytes(b);
        let new = if xen.as_ref().is_some_and(|r| r.contains(&i)) {
            0
        } else if pte & x86::PTE_PRESENT == 0 {
            pte
        } else {
            if level > 1 && pte & x86::PTE_PSE != 0 {
                return Err(BackendError::new(
                    "normalise page table",
                    format!("L{level} entry {i} maps a superpage, which PV guests cannot migrate"),
                )
                .errno(errno::E2BIG));
            }
            x86::pte_with_frame(pte, map(x86::pte_frame(pte))?)
        };
        chunk.copy_from_slice(&new.to_le_bytes());
    }
    Ok(())
}

/// Converts the frame fields of a vcpu context with `map`: cr3, cr1 (64-bit, when valid),
/// the GDT frames in use and, for vcpu 0, the start_info frame in edx.
pub fn rewrite_vcpu_context(
    layout: &PvLayout,
    vcpu: u32,
    ctx: &mut [u8],
    mut map: impl FnMut(u64) -> BResult<u64>,
) -> BResult<()> {
    let bad = || BackendError::new("vcpu context", "the context is shorter than its layout");
    let cr3_off = layout.cr(3);
    let cr3 = layout.get(ctx, cr3_off).ok_or_else(bad)?;
    let frame = map(layout.cr3_to_frame(cr3))?;
    layout
        .set(ctx, cr3_off, layout.frame_to_cr3(frame))
        .ok_or_else(bad)?;
    if layout.width == 8 {
        let cr1_off = layout.cr(1);
        let cr1 = layout.get(ctx, cr1_off).ok_or_else(bad)?;
        if cr1 & 1 != 0 {
            let f = map(cr1 >> PAGE_SHIFT)?;
            layout
                .set(ctx, cr1_off, (f << PAGE_SHIFT) | (cr1 & PAGE_OFFSET_MASK))
                .ok_or_else(bad)?;
        }
    }
    let ents = layout.get(ctx, layout.gdt_ents).ok_or_else(bad)?;
    let frames = ents.div_ceil(512).min(16) as usize;
    for i in 0..frames {
        let off = layout.gdt_frames + i * layout.width;
        let f = layout.get(ctx, off).ok_or_else(bad)?;
        layout.set(ctx, off, map(f)?).ok_or_else(bad)?;
    }
    if vcpu == 0 {
        let f = layout.get(ctx, layout.edx).ok_or_else(bad)?;
        layout.set(ctx, layout.edx, map(f)?).ok_or_else(bad)?;
    }
    Ok(())
}

impl<D: Domain> SaveHooks<D> for X86PvSave {
    fn setup(&mut self, dom: &mut D, _cb: &mut dyn SaveCallbacks<D>) -> Result<(), SaveError> {
        let info = dom.info()?;
        self.layout = Some(PvLayout::for_width(info.guest_width).ok_or_else(|| {
            SaveError::Invalid(format!(
                "PV guest width {} is neither 4 nor 8",
                info.guest_width
            ))
        })?);
        let (p2m, frames) = dom.pv_p2m()?;
        self.p2m = p2m;
        self.p2m_frames = frames;
        self.p2m_size = dom.p2m_size()?;
        self.generation = dom.p2m_generation()?;
        Ok(())
    }

    fn p2m_size(&mut self, _dom: &mut D) -> BResult<u64> {
        Ok(self.p2m_size)
    }

    fn static_data(&mut self, dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError> {
        let l = self.layout()?;
        w.record(&libxc::Record::X86PvInfo(libxc::X86PvInfo {
            guest_width: l.width as u8,
            pt_levels: l.levels,
            ..Default::default()
        }))?;
        policies(dom, w)
    }

    fn start_of_stream(&mut self, _dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError> {
        let end = self.p2m_size.saturating_sub(1);
        w.record(&libxc::Record::X86PvP2mFrames(libxc::X86PvP2mFrames {
            p2m_start_pfn: 0,
            p2m_end_pfn: u32::try_from(end).map_err(|_| {
                SaveError::Invalid(format!(
                    "max_pfn {end:#x} does not fit the P2M_FRAMES record"
                ))
            })?,
            frame_pfns: Array::Values(&self.p2m_frames),
        }))
    }

    fn end_of_checkpoint(&mut self, dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError> {
        let l = self.layout()?;
        tsc(dom, w)?;
        let shinfo = dom.shared_info()?;
        w.record(&libxc::Record::SharedInfo(libxc::SharedInfo {
            shared_info: &shinfo,
        }))?;
        for vcpu in dom.online_vcpus()? {
            let mut basic = dom.vcpu_state(vcpu, VcpuState::Basic)?;
            rewrite_vcpu_context(l, vcpu, &mut basic, |mfn| {
                dom.mfn_to_pfn(mfn).ok_or_else(|| {
                    BackendError::new(
                        "vcpu context",
                        format!("vcpu {vcpu}: frame {mfn:#x} is not the guest's"),
                    )
                    .errno(errno::ERANGE)
                })
            })?;
            w.record(&libxc::Record::X86PvVcpuBasic(libxc::X86PvVcpuBasic {
                vcpu_id: vcpu,
                reserved: 0,
                context: &basic,
            }))?;
            let ext = dom.vcpu_state(vcpu, VcpuState::Extended)?;
            if !ext.is_empty() {
                w.record(&libxc::Record::X86PvVcpuExtended(
                    libxc::X86PvVcpuExtended {
                        vcpu_id: vcpu,
                        reserved: 0,
                        context: &ext,
                    },
                ))?;
            }
            let xsave = dom.vcpu_state(vcpu, VcpuState::Xsave)?;
            if !xsave.is_empty() {
                w.record(&libxc::Record::X86PvVcpuXsave(libxc::X86PvVcpuXsave {
                    vcpu_id: vcpu,
                    reserved: 0,
                    context: &xsave,
                }))?;
            }
            let msrs = dom.vcpu_state(vcpu, VcpuState::Msrs)?;
            if !msrs.is_empty() {
                w.record(&libxc::Record::X86PvVcpuMsrs(libxc::X86PvVcpuMsrs {
                    vcpu_id: vcpu,
                    reserved: 0,
                    msrs: Array::Encoded {
                        bytes: &msrs,
                        endian: crate::wire::Endian::Little,
                    },
                }))?;
            }
        }
        Ok(())
    }

    fn check_vm_state(&mut self, dom: &mut D) -> Result<(), SaveError> {
        let g = dom.p2m_generation()?;
        if g != self.generation {
            return Err(SaveError::Invalid(format!(
                "the guest changed its p2m during a live save (generation {} → {g})",
                self.generation
            )));
        }
        Ok(())
    }

    fn pfn_to_gfn(&mut self, _dom: &mut D, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()> {
        for (o, p) in out.iter_mut().zip(pfns) {
            *o = self
                .p2m
                .get(*p as usize)
                .copied()
                .filter(|m| *m != u64::MAX);
        }
        Ok(())
    }

    fn normalise_page(
        &mut self,
        dom: &mut D,
        page_type: libxc::PageType,
        page: &mut [u8],
    ) -> BResult<()> {
        if table_level(page_type).is_none() {
            return Ok(());
        }
        let l = self.layout()?;
        rewrite_page_table(l, page_type, page, |mfn| {
            dom.mfn_to_pfn(mfn).ok_or_else(|| {
                BackendError::new(
                    "normalise page table",
                    format!("frame {mfn:#x} is not the guest's"),
                )
                .errno(errno::EAGAIN)
            })
        })
    }

    fn normalises(&self, page_type: libxc::PageType) -> bool {
        table_level(page_type).is_some()
    }

    fn cleanup(&mut self, dom: &mut D, _cb: &mut dyn SaveCallbacks<D>) -> Result<(), SaveError> {
        let _ = dom.disable_logdirty();
        Ok(())
    }
}

/// HVM parameters a save sends, in Xen's order: the spec's `hvm_param_index` values
/// marked `saved`.
pub fn hvm_saved_params() -> impl Iterator<Item = libxc::HvmParamIndex> {
    libxc::HvmParamIndex::KNOWN
        .iter()
        .copied()
        .filter(|p| p.saved())
}

/// x86 HVM guests.
#[derive(Default)]
pub struct X86HvmSave {
    logdirty_on: bool,
}

impl<D: Domain> SaveHooks<D> for X86HvmSave {
    fn setup(&mut self, _dom: &mut D, cb: &mut dyn SaveCallbacks<D>) -> Result<(), SaveError> {
        if cb.switch_qemu_logdirty(true) != 0 {
            return Err(SaveError::Invalid(
                "the device model refused to track dirty pages".into(),
            ));
        }
        self.logdirty_on = true;
        Ok(())
    }

    fn p2m_size(&mut self, dom: &mut D) -> BResult<u64> {
        dom.p2m_size()
    }

    fn static_data(&mut self, dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError> {
        policies(dom, w)
    }

    fn start_of_stream(&mut self, _dom: &mut D, _w: &mut Out<'_>) -> Result<(), SaveError> {
        Ok(())
    }

    fn end_of_checkpoint(&mut self, dom: &mut D, w: &mut Out<'_>) -> Result<(), SaveError> {
        tsc(dom, w)?;
        let ctx = dom.hvm_context()?;
        w.record(&libxc::Record::HvmContext(libxc::HvmContext {
            context: &ctx,
        }))?;
        let mut params = Vec::new();
        for index in hvm_saved_params() {
            let value = dom.hvm_param(index.0)?;
            if value != 0 {
                params.push(libxc::HvmParam { index, value });
            }
        }
        w.record(&libxc::Record::HvmParams(libxc::HvmParams {
            reserved: 0,
            params: Array::Values(&params),
        }))
    }

    fn pfn_to_gfn(&mut self, dom: &mut D, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()> {
        dom.pfn_to_gfn(pfns, out)
    }

    fn normalise_page(
        &mut self,
        _dom: &mut D,
        _t: libxc::PageType,
        _page: &mut [u8],
    ) -> BResult<()> {
        Ok(())
    }

    fn normalises(&self, _page_type: libxc::PageType) -> bool {
        false
    }

    fn cleanup(&mut self, dom: &mut D, cb: &mut dyn SaveCallbacks<D>) -> Result<(), SaveError> {
        let _ = dom.disable_logdirty();
        if self.logdirty_on {
            self.logdirty_on = false;
            cb.switch_qemu_logdirty(false);
        }
        Ok(())
    }
}
