//! A `Domain` backend of one's own: a tiny in-memory HVM guest that implements
//! [`xenmig::domain::Domain`], saved live with [`xenmig::save::save`] and restored with
//! [`xenmig::restore::restore`] into a second, empty instance, whose memory and state are
//! then compared with the first's.
//!
//! ```text
//! cargo run -p xenmig --example domain_backend
//! ```
//!
//! A backend over a real hypervisor answers the same calls with hypercalls (xenmig-xen does
//! it over libxenctrl); the drivers use nothing else. The guest here keeps writing to its
//! memory until the toolstack suspends it, so the last write reaches the stream only through
//! log-dirty tracking and the final stop-and-copy pass. Exits non-zero if the save or the
//! restore fails or the two domains differ.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use xenmig::domain::{
    errno, BResult, BackendError, Bitmap, Domain, DomainInfo, GuestType, PageType,
    RestoreCallbacks, SaveCallbacks, TscInfo, VcpuState,
};
use xenmig::limits::PAGE_SIZE;
use xenmig::restore::{restore, RestoreOptions};
use xenmig::save::{save, SaveOptions};
use xenmig::wire::Endian;
use xenmig::{x86_state, Reader, ReaderOptions};

/// Pfns the guest addresses: 0..GUEST_PFNS, less a ballooned-out hole.
const GUEST_PFNS: u64 = 64;
const HOLE: std::ops::Range<u64> = 40..48;
/// The page the guest writes to just before it is suspended.
const LAST_WRITE_PFN: u64 = 5;

/// An HVM guest held in memory: pages by pfn (pfn and gfn are the same, as for HVM), its
/// hypervisor context, parameters and TSC, and the log-dirty state.
#[derive(Debug, Default)]
struct MemDomain {
    pages: BTreeMap<u64, Vec<u8>>,
    max_pfn: u64,
    hvm_context: Vec<u8>,
    hvm_params: BTreeMap<u64, u64>,
    tsc: TscInfo,
    cpuid_policy: Vec<u8>,
    msr_policy: Vec<u8>,
    suspended: bool,
    logdirty: bool,
    dirty: BTreeSet<u64>,
}

fn absent(op: &'static str, pfn: u64) -> BackendError {
    BackendError::new(op, format!("pfn {pfn:#x} is not populated")).errno(errno::EINVAL)
}

/// A save record of an HVM context: descriptor, then body.
fn save_record(ctx: &mut Vec<u8>, typecode: u32, body: &[u8]) {
    let d = x86_state::SaveDescriptor {
        typecode: typecode as u16,
        instance: 0,
        length: body.len() as u32,
    };
    ctx.extend(
        d.encode(Endian::Little)
            .expect("a descriptor always encodes"),
    );
    ctx.extend_from_slice(body);
}

impl MemDomain {
    /// The guest to save: every pfn outside the hole holds a page stamped with its pfn.
    fn source() -> Self {
        let mut dom = MemDomain {
            max_pfn: GUEST_PFNS - 1,
            tsc: TscInfo {
                mode: 0,
                khz: 2_400_000,
                nsec: 5_000_000_000,
                incarnation: 0,
            },
            ..Default::default()
        };
        for pfn in (0..GUEST_PFNS).filter(|p| !HOLE.contains(p)) {
            let mut page = vec![0u8; PAGE_SIZE];
            for (i, chunk) in page.chunks_exact_mut(8).enumerate() {
                chunk.copy_from_slice(&(pfn << 32 | i as u64).to_le_bytes());
            }
            dom.pages.insert(pfn, page);
        }
        let le = Endian::Little;
        let header = x86_state::Header {
            magic: x86_state::HVM_FILE_MAGIC,
            version: x86_state::HVM_FILE_VERSION,
            changeset: u64::MAX,
            cpuid: 0x0009_06ea,
            gtsc_khz: dom.tsc.khz,
        };
        let cpu = x86_state::Cpu {
            rip: 0xffff_ffff_8100_1234,
            rflags: 0x202,
            cr0: 0x8005_0033,
            ..Default::default()
        };
        let mut ctx = Vec::new();
        save_record(
            &mut ctx,
            x86_state::Header::TYPE,
            &header.encode(le).expect("header"),
        );
        save_record(
            &mut ctx,
            x86_state::Cpu::TYPE,
            &cpu.encode(le).expect("cpu"),
        );
        save_record(&mut ctx, x86_state::End::TYPE, &[]);
        dom.hvm_context = ctx;
        // Parameters Xen's saver sends (the spec marks them `saved`).
        dom.hvm_params.insert(param::VIRIDIAN, 0x1);
        dom.hvm_params.insert(param::X87_FIP_WIDTH, 8);
        dom
    }

    /// A destination as a toolstack creates it: no memory yet, the same maximum.
    fn empty(max_pfn: u64) -> Self {
        MemDomain {
            max_pfn,
            ..Default::default()
        }
    }

    /// The guest writes to its own memory (log-dirty notes the page).
    fn guest_write(&mut self, pfn: u64, offset: usize, data: &[u8]) {
        if let Some(page) = self.pages.get_mut(&pfn) {
            page[offset..offset + data.len()].copy_from_slice(data);
            if self.logdirty {
                self.dirty.insert(pfn);
            }
        }
    }
}

/// HVM parameter numbers (`xen/include/public/hvm/params.h`), from the spec.
mod param {
    use xenmig::libxc::HvmParamIndex;
    pub const VIRIDIAN: u64 = HvmParamIndex::VIRIDIAN.0;
    pub const X87_FIP_WIDTH: u64 = HvmParamIndex::X87_FIP_WIDTH.0;
}

impl Domain for MemDomain {
    fn info(&mut self) -> BResult<DomainInfo> {
        Ok(DomainInfo {
            guest: GuestType::X86Hvm,
            guest_width: 8,
            pt_levels: 4,
            max_pfn: self.max_pfn,
            max_vcpu_id: 0,
            suspended: self.suspended,
        })
    }

    fn p2m_size(&mut self) -> BResult<u64> {
        Ok(self.max_pfn + 1)
    }

    fn pfn_to_gfn(&mut self, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()> {
        for (pfn, gfn) in pfns.iter().zip(out) {
            *gfn = self.pages.contains_key(pfn).then_some(*pfn);
        }
        Ok(())
    }

    fn page_types(&mut self, gfns: &[u64], out: &mut [PageType]) -> BResult<()> {
        for (gfn, t) in gfns.iter().zip(out) {
            *t = if self.pages.contains_key(gfn) {
                PageType::NOTAB
            } else {
                PageType::XTAB
            };
        }
        Ok(())
    }

    fn read_pages(&mut self, gfns: &[u64], out: &mut [u8]) -> BResult<()> {
        for (gfn, dst) in gfns.iter().zip(out.chunks_exact_mut(PAGE_SIZE)) {
            dst.copy_from_slice(
                self.pages
                    .get(gfn)
                    .ok_or_else(|| absent("read pages", *gfn))?,
            );
        }
        Ok(())
    }

    fn write_pages(&mut self, gfns: &[u64], data: &[u8]) -> BResult<()> {
        for (gfn, src) in gfns.iter().zip(data.chunks_exact(PAGE_SIZE)) {
            let page = self
                .pages
                .get_mut(gfn)
                .ok_or_else(|| absent("write pages", *gfn))?;
            page.copy_from_slice(src);
        }
        Ok(())
    }

    fn populate(&mut self, pfns: &[u64]) -> BResult<()> {
        for &pfn in pfns {
            if pfn > self.max_pfn {
                return Err(
                    BackendError::new("populate", format!("pfn {pfn:#x} beyond max_pfn"))
                        .errno(errno::ENOMEM),
                );
            }
            self.pages.entry(pfn).or_insert_with(|| vec![0; PAGE_SIZE]);
        }
        Ok(())
    }

    fn vcpu_state(&mut self, _vcpu: u32, _which: VcpuState) -> BResult<Vec<u8>> {
        // An HVM guest's vCPU state travels in its HVM context.
        Ok(Vec::new())
    }

    fn set_vcpu_state(&mut self, vcpu: u32, _which: VcpuState, data: &[u8]) -> BResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        Err(BackendError::new(
            "set vcpu state",
            format!("vcpu {vcpu}: an HVM guest takes its vCPU state from its HVM context"),
        )
        .errno(errno::EOPNOTSUPP))
    }

    fn online_vcpus(&mut self) -> BResult<Vec<u32>> {
        Ok(vec![0])
    }

    fn hvm_context(&mut self) -> BResult<Vec<u8>> {
        Ok(self.hvm_context.clone())
    }

    fn set_hvm_context(&mut self, data: &[u8]) -> BResult<()> {
        self.hvm_context = data.to_vec();
        Ok(())
    }

    fn hvm_param(&mut self, index: u64) -> BResult<u64> {
        Ok(self.hvm_params.get(&index).copied().unwrap_or(0))
    }

    fn set_hvm_param(&mut self, index: u64, value: u64) -> BResult<()> {
        self.hvm_params.insert(index, value);
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
        Err(BackendError::new(
            "shared info",
            "only PV guests have one the save copies",
        ))
    }

    fn set_shared_info(&mut self, _page: &[u8]) -> BResult<()> {
        Err(BackendError::new(
            "set shared info",
            "only PV guests have one the save copies",
        ))
    }

    fn cpu_policy(&mut self) -> BResult<(Vec<u8>, Vec<u8>)> {
        Ok((self.cpuid_policy.clone(), self.msr_policy.clone()))
    }

    fn set_cpu_policy(&mut self, cpuid: &[u8], msrs: &[u8]) -> BResult<()> {
        self.cpuid_policy = cpuid.to_vec();
        self.msr_policy = msrs.to_vec();
        Ok(())
    }

    fn enable_logdirty(&mut self) -> BResult<()> {
        self.logdirty = true;
        self.dirty.clear();
        Ok(())
    }

    fn disable_logdirty(&mut self) -> BResult<()> {
        self.logdirty = false;
        Ok(())
    }

    fn clean_dirty(&mut self, bitmap: &mut Bitmap, _final_pass: bool) -> BResult<u64> {
        let n = self.dirty.len() as u64;
        for pfn in std::mem::take(&mut self.dirty) {
            bitmap.set(pfn);
        }
        Ok(n)
    }

    fn peek_dirty(&mut self) -> BResult<u64> {
        Ok(self.dirty.len() as u64)
    }
}

/// The toolstack's answers: suspending the guest is the only one a save needs; the restore
/// takes every default.
struct Toolstack {
    suspends: u32,
}

impl SaveCallbacks<MemDomain> for Toolstack {
    fn suspend(&mut self, dom: &mut MemDomain) -> bool {
        // The guest's last write before it stops: only log-dirty brings it to the stream.
        dom.guest_write(LAST_WRITE_PFN, 16, b"written at suspend");
        dom.suspended = true;
        self.suspends += 1;
        true
    }
}

impl RestoreCallbacks<MemDomain> for Toolstack {}

fn run() -> Result<(), String> {
    let mut source = MemDomain::source();
    let mut toolstack = Toolstack { suspends: 0 };
    let opts = SaveOptions {
        live: true,
        ..Default::default()
    };
    let (stats, stream) = save(&mut source, &mut toolstack, Vec::new(), opts, None)
        .map_err(|e| format!("save: {e}"))?;
    println!(
        "saved {} pages of {} pfns into {} octets in {} passes (stopped: {})",
        source.pages.len(),
        GUEST_PFNS,
        stats.bytes,
        stats.passes.len(),
        stats.stop_reason
    );
    for p in &stats.passes {
        println!(
            "  pass {}: {} pfns sent, {} dirtied meanwhile{}",
            p.pass,
            p.pages_sent,
            p.pages_dirtied,
            if p.suspended { " (suspended)" } else { "" }
        );
    }

    let mut dest = MemDomain::empty(source.max_pfn);
    let mut reader = Reader::from_slice(&stream, ReaderOptions::default());
    let result = restore(
        &mut dest,
        &mut toolstack,
        &mut reader,
        RestoreOptions::default(),
    )
    .map_err(|e| format!("restore: {e}"))?;
    println!(
        "restored {} data pages from {} libxc records",
        result.pages, result.libxc_records
    );

    if dest.pages != source.pages {
        let differ: Vec<u64> = source
            .pages
            .keys()
            .chain(dest.pages.keys())
            .filter(|p| source.pages.get(p) != dest.pages.get(p))
            .copied()
            .collect();
        return Err(format!("memory differs at pfns {differ:?}"));
    }
    if dest.hvm_context != source.hvm_context {
        return Err("the HVM context differs".into());
    }
    if dest.tsc != source.tsc {
        return Err(format!("TSC differs: {:?} vs {:?}", dest.tsc, source.tsc));
    }
    for (index, value) in &source.hvm_params {
        if dest.hvm_params.get(index) != Some(value) {
            return Err(format!("HVM param {index} differs"));
        }
    }
    let last = &dest.pages[&LAST_WRITE_PFN][16..16 + 18];
    println!(
        "the destination matches: {} pages, the HVM context, TSC and params; pfn {LAST_WRITE_PFN} holds {:?}",
        dest.pages.len(),
        String::from_utf8_lossy(last)
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("domain_backend: {e}");
            ExitCode::FAILURE
        }
    }
}
