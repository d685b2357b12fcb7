//! HVM guests: identity-mapped memory with the VGA hole and an MMIO hole, special pages at the
//! top named by HVM params, and an HVM context made of save records.

use super::hvm_param as param;
use super::memory::{seeded_page, Rng};
use super::{SimConfig, SimDomain};
use crate::domain::PAGE_SIZE;
use crate::limits::PAGE_SHIFT;
use crate::wire::{Element, Endian, Put};
use crate::x86_state;

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

/// Appends one save record: its descriptor, then its body (`spec/x86_state.yaml`'s framing).
fn record(out: &mut Vec<u8>, record_type: u32, instance: u16, body: &[u8]) {
    let d = x86_state::SaveDescriptor {
        typecode: record_type as u16,
        instance,
        length: body.len() as u32,
    };
    d.write(&mut Put {
        out,
        endian: Endian::Little,
    });
    out.extend_from_slice(body);
}

/// The encoding of a generated save record (the simulator builds only records the spec's
/// encoders accept).
fn encoded<E: std::fmt::Debug>(r: Result<Vec<u8>, E>) -> Vec<u8> {
    r.unwrap_or_else(|e| unreachable!("the simulator built a save record its spec refuses: {e:?}"))
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
    let header = x86_state::Header {
        magic: x86_state::HVM_FILE_MAGIC,
        version: x86_state::HVM_FILE_VERSION,
        changeset: rng.next_u64(),
        cpuid: 0x0009_06e0 | rng.below(16) as u32,
        gtsc_khz: dom.tsc.khz,
    };
    let le = Endian::Little;
    record(
        &mut ctx,
        x86_state::Header::TYPE,
        0,
        &encoded(header.encode(le)),
    );
    for v in 0..dom.vcpus.len() {
        // A 64-bit guest in long mode, stopped somewhere in its kernel.
        let mut fpu_regs = [0u8; 512];
        fpu_regs.copy_from_slice(&rng.bytes(512));
        let cpu = x86_state::Cpu {
            fpu_regs,
            rax: rng.next_u64(),
            rbx: rng.next_u64(),
            rcx: rng.next_u64(),
            rdx: rng.next_u64(),
            rsp: 0xffff_c900_0000_0000 | (rng.next_u64() & 0xff_fff0),
            rip: 0xffff_ffff_8100_0000 | (rng.next_u64() & 0xff_ffff),
            rflags: 0x202,
            cr0: 0x8005_0033,
            cr3: rng.below(1 << 20) << PAGE_SHIFT,
            cr4: 0x0035_06f0,
            msr_efer: 0xd01,
            tsc: rng.next_u64() >> 8,
            flags: 1,
            ..Default::default()
        };
        record(
            &mut ctx,
            x86_state::Cpu::TYPE,
            v as u16,
            &encoded(cpu.encode(le)),
        );
    }
    for i in 0..2 {
        let pic = x86_state::Pic {
            irr: rng.below(256) as u8,
            imr: rng.below(256) as u8,
            irq_base: if i == 0 { 0x20 } else { 0x28 },
            ..Default::default()
        };
        record(&mut ctx, x86_state::Pic::TYPE, i, &encoded(pic.encode(le)));
    }
    record(&mut ctx, x86_state::End::TYPE, 0, &[]);
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
