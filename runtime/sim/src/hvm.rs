//! HVM guests: identity-mapped memory with the VGA hole and an MMIO hole, special pages at the
//! top named by HVM params, and an HVM context made of save records.

use super::hvm_param as param;
use super::memory::{seeded_page, Rng};
use super::{SimConfig, SimDomain};
use crate::domain::PAGE_SIZE;
use crate::limits::PAGE_SHIFT;

/// The legacy VGA hole, never populated.
pub const VGA_HOLE: std::ops::Range<u64> = 0xa0..0xc0;
/// pfns of the MMIO hole between RAM and the special pages.
pub const MMIO_HOLE_PAGES: u64 = 64;
/// Special pages after the MMIO hole: the last pfns of the guest.
pub const SPECIAL_PAGES: u64 = 8;

// Offsets of the special pages from the first one.
const BUFIOREQ: u64 = 0;
const STORE: u64 = 1;
const IOREQ: u64 = 2;
const IDENT_PT: u64 = 3;
const CONSOLE: u64 = 4;
const VM86_TSS: u64 = 5;

/// HVM save record type codes (`xen/include/public/arch-x86/hvm/save.h`).
const HVM_SAVE_END: u16 = 0;
const HVM_SAVE_HEADER: u16 = 1;
const HVM_SAVE_CPU: u16 = 2;
const HVM_SAVE_PIC: u16 = 3;
const HVM_SAVE_MAGIC: u32 = 0x5438_1286;

fn record(out: &mut Vec<u8>, code: u16, instance: u16, body: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&instance.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// Builds an HVM source domain into `dom` (a blank one).
pub(crate) fn build(dom: &mut SimDomain, cfg: &SimConfig) {
    let mut rng = Rng::stream(cfg.seed, 0x0068_766d);

    // RAM pfns skip the VGA hole; then the MMIO hole; then the special pages.
    let mut ram = Vec::with_capacity(cfg.memory_pages as usize);
    let mut pfn = 0;
    while (ram.len() as u64) < cfg.memory_pages {
        if !VGA_HOLE.contains(&pfn) {
            ram.push(pfn);
        }
        pfn += 1;
    }
    let special = pfn + MMIO_HOLE_PAGES;
    let end = special + SPECIAL_PAGES;
    dom.hvm_pfns = end;
    dom.mem.reserve(end);
    let mut page = vec![0u8; PAGE_SIZE];
    for &pfn in &ram {
        dom.mem.populate(pfn);
        seeded_page(cfg.seed, pfn, &mut page);
        dom.mem.write(pfn, &page);
    }
    for pfn in special..end {
        dom.mem.populate(pfn);
    }
    // The identity page table (4 MiB PSE entries), as hvmloader writes it.
    page.fill(0);
    for (i, e) in page.chunks_exact_mut(4).enumerate() {
        e.copy_from_slice(&(((i as u32) << 22) | 0xe7).to_le_bytes());
    }
    dom.mem.write(special + IDENT_PT, &page);

    let p = &mut dom.hvm_params;
    p.insert(param::STORE_PFN, special + STORE);
    p.insert(param::STORE_EVTCHN, 1 + rng.below(63));
    p.insert(param::PAE_ENABLED, 1);
    p.insert(param::IOREQ_PFN, special + IOREQ);
    p.insert(param::BUFIOREQ_PFN, special + BUFIOREQ);
    p.insert(
        param::VIRIDIAN,
        [0, 0x1, 0x1f, 0x17f][rng.below(4) as usize],
    );
    p.insert(param::TIMER_MODE, 1);
    p.insert(param::HPET_ENABLED, 1);
    p.insert(param::IDENT_PT, (special + IDENT_PT) << PAGE_SHIFT);
    p.insert(param::CONSOLE_PFN, special + CONSOLE);
    p.insert(param::CONSOLE_EVTCHN, 1 + rng.below(63));
    p.insert(param::ACPI_IOPORTS_LOCATION, 1);
    p.insert(
        param::VM86_TSS_SIZED,
        (0x80 << 32) | ((special + VM86_TSS) << PAGE_SHIFT),
    );
    let genid = ram[rng.below(ram.len() as u64) as usize];
    p.insert(param::VM_GENERATION_ID_ADDR, (genid << PAGE_SHIFT) | 0x10);
    p.insert(param::X87_FIP_WIDTH, 8);

    // The context: header, a CPU record per vcpu, two PICs, end.
    let mut ctx = Vec::new();
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&HVM_SAVE_MAGIC.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&rng.next_u64().to_le_bytes());
    header.extend_from_slice(&(0x0009_06e0u32 | rng.below(16) as u32).to_le_bytes());
    header.extend_from_slice(&dom.tsc.khz.to_le_bytes());
    record(&mut ctx, HVM_SAVE_HEADER, 0, &header);
    for v in 0..dom.vcpus.len() {
        record(&mut ctx, HVM_SAVE_CPU, v as u16, &rng.bytes(1016));
    }
    for i in 0..2 {
        record(&mut ctx, HVM_SAVE_PIC, i, &rng.bytes(8));
    }
    record(&mut ctx, HVM_SAVE_END, 0, &[]);
    dom.hvm_context = ctx;
}

impl SimDomain {
    /// HVM: the pfns the params name as special pages (the restorer clears some of them, so
    /// the workload leaves them alone).
    pub(crate) fn hvm_special_pfns(&self) -> Vec<u64> {
        let get = |i: u64| self.hvm_params.get(&i).copied().unwrap_or(0);
        let mut out: Vec<u64> = [
            param::STORE_PFN,
            param::IOREQ_PFN,
            param::BUFIOREQ_PFN,
            param::CONSOLE_PFN,
            param::PAGING_RING_PFN,
            param::MONITOR_RING_PFN,
            param::SHARING_RING_PFN,
        ]
        .iter()
        .map(|&i| get(i))
        .filter(|&v| v != 0)
        .collect();
        for addr in [
            get(param::IDENT_PT),
            get(param::VM86_TSS_SIZED) & 0xffff_ffff,
        ] {
            if addr != 0 {
                out.push(addr >> PAGE_SHIFT);
            }
        }
        let servers = get(param::IOREQ_SERVER_PFN);
        if servers != 0 {
            out.extend(servers..servers + get(param::NR_IOREQ_SERVER_PAGES).min(256));
        }
        out
    }
}
