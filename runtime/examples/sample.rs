//! Writes the demo streams shipped in `samples/`: small, deterministic, valid images made
//! with xenmig's own writer and generated codecs.
//!
//! `cargo run -p xenmig --example sample -- samples/` rewrites them; a test checks that the
//! committed files are what this produces.

use std::io::Write;
use xenmig::wire::{Array, CStrings, Element, Endian, Put};
use xenmig::writer::StreamWriter;
use xenmig::{libxc, libxl, x86_state, xl};

/// A page whose first octets depend on its pfn, so that dumps show distinct pages; the rest
/// is zero, as in a lightly used guest (and so the samples compress well in git).
fn page(pfn: u64) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    let mut x = pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in p[..64].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    p
}

fn headers<W: Write>(w: &mut StreamWriter<W>, domain_type: libxc::DomainType) {
    w.image_header(&libxc::ImageHeader {
        version: libxc::VERSION_WRITTEN,
        ..Default::default()
    })
    .unwrap();
    w.domain_header(&libxc::DomainHeader {
        r#type: domain_type,
        xen_major: 4,
        xen_minor: 17,
        ..Default::default()
    })
    .unwrap();
}

fn policies<W: Write>(w: &mut StreamWriter<W>) {
    let leaves = [
        libxc::CpuidLeaf {
            leaf: 0,
            subleaf: u32::MAX,
            a: 0xd,
            b: 0x756e_6547,
            c: 0x6c65_746e,
            d: 0x4965_6e69,
        },
        libxc::CpuidLeaf {
            leaf: 1,
            subleaf: u32::MAX,
            a: 0x000a_0655,
            b: 0x0100_0800,
            c: 0xf6d8_3203,
            d: 0x178b_fbff,
        },
    ];
    w.libxc(&libxc::Record::X86CpuidPolicy(libxc::X86CpuidPolicy {
        leaves: Array::Values(&leaves),
    }))
    .unwrap();
    let msrs = [libxc::MsrEntry {
        idx: 0xce,
        flags: 0,
        val: 0x8000_0000,
    }];
    w.libxc(&libxc::Record::X86MsrPolicy(libxc::X86MsrPolicy {
        entries: Array::Values(&msrs),
    }))
    .unwrap();
    w.libxc(&libxc::Record::StaticDataEnd(libxc::StaticDataEnd {}))
        .unwrap();
}

/// Guest memory in batches: data pages, a pinned top-level page table, and ballooned holes.
fn memory<W: Write>(w: &mut StreamWriter<W>, pfns: u64, batch: u64) {
    let mut start = 0;
    while start < pfns {
        let end = (start + batch).min(pfns);
        let mut entries = Vec::new();
        let mut pages = Vec::new();
        for pfn in start..end {
            let t = match pfn {
                1 => libxc::PageType::L4TAB_PINNED,
                p if p % 61 == 7 => libxc::PageType::XTAB,
                _ => libxc::PageType::NOTAB,
            };
            entries.push(libxc::PageEntry::default().with_pfn(pfn).with_page_type(t));
            if t.has_data() {
                pages.extend_from_slice(&page(pfn));
            }
        }
        w.libxc(&libxc::Record::PageData(libxc::PageData {
            reserved: 0,
            entries: Array::Values(&entries),
            pages: &pages,
        }))
        .unwrap();
        start = end;
    }
    w.libxc(&libxc::Record::X86TscInfo(libxc::X86TscInfo {
        mode: 0,
        khz: 2_400_000,
        nsec: 123_456_789_000,
        incarnation: 1,
        reserved: 0,
    }))
    .unwrap();
}

/// A 64-bit PV guest of 256 pages and two vcpus, in an xl save file.
fn pv64_xl() -> Vec<u8> {
    let config = b"{\"c_info\": {\"type\": \"pv\", \"name\": \"demo-pv64\"}, \"b_info\": {\"max_vcpus\": 2, \"max_memkb\": 1024}}\0";
    let opt = xl::XlOptionalData { config }.encode(Endian::HOST).unwrap();
    let mut w = StreamWriter::new(Vec::new());
    w.xl_header(
        &xl::XlHeader {
            mandatory_flags: xl::XlMandatoryFlags::JSON.with(xl::XlMandatoryFlags::STREAMV2),
            optional_data_len: opt.len() as u32,
            ..Default::default()
        },
        &opt,
    )
    .unwrap();
    w.libxl_header(&libxl::LibxlHeader::default()).unwrap();
    w.libxl(&libxl::Record::LibxcContext(libxl::LibxcContext {}))
        .unwrap();
    headers(&mut w, libxc::DomainType::X86_PV);
    w.libxc(&libxc::Record::X86PvInfo(libxc::X86PvInfo {
        guest_width: 8,
        pt_levels: 4,
        ..Default::default()
    }))
    .unwrap();
    policies(&mut w);
    let frames = [200u64];
    w.libxc(&libxc::Record::X86PvP2mFrames(libxc::X86PvP2mFrames {
        p2m_start_pfn: 0,
        p2m_end_pfn: 255,
        frame_pfns: Array::Values(&frames),
    }))
    .unwrap();
    memory(&mut w, 256, 100);
    let shared = page(0x5ead);
    w.libxc(&libxc::Record::SharedInfo(libxc::SharedInfo {
        shared_info: &shared,
    }))
    .unwrap();
    for vcpu in 0..2u32 {
        let ctx = vec![vcpu as u8 + 1; 5168];
        w.libxc(&libxc::Record::X86PvVcpuBasic(libxc::X86PvVcpuBasic {
            vcpu_id: vcpu,
            reserved: 0,
            context: &ctx,
        }))
        .unwrap();
        let ext = vec![0u8; 128];
        w.libxc(&libxc::Record::X86PvVcpuExtended(
            libxc::X86PvVcpuExtended {
                vcpu_id: vcpu,
                reserved: 0,
                context: &ext,
            },
        ))
        .unwrap();
    }
    w.libxc(&libxc::Record::End(libxc::End {})).unwrap();
    w.libxl(&libxl::Record::End(libxl::End {})).unwrap();
    w.into_inner()
}

/// The HVM context of a 64-bit guest with `vcpus` vCPUs stopped in its kernel: Xen's save
/// records (HEADER, a CPU record per vCPU, END) as `spec/x86_state.yaml` lays them out.
fn hvm_context(vcpus: u16) -> Vec<u8> {
    let le = Endian::Little;
    let mut out = Vec::new();
    let mut record = |typecode: u32, instance: u16, body: Vec<u8>| {
        x86_state::SaveDescriptor {
            typecode: typecode as u16,
            instance,
            length: body.len() as u32,
        }
        .write(&mut Put {
            out: &mut out,
            endian: le,
        });
        out.extend_from_slice(&body);
    };
    let header = x86_state::Header {
        magic: x86_state::HVM_FILE_MAGIC,
        version: x86_state::HVM_FILE_VERSION,
        changeset: 0,
        cpuid: 0x0009_06e9,
        gtsc_khz: 2_400_000,
    };
    record(x86_state::Header::TYPE, 0, header.encode(le).unwrap());
    for v in 0..vcpus {
        let cpu = x86_state::Cpu {
            rip: 0xffff_ffff_8100_0000 + u64::from(v) * 0x40,
            rsp: 0xffff_c900_0000_3f00 + (u64::from(v) << 16),
            rflags: 0x246,
            cr0: 0x8005_0033,
            cr3: 0x0010_0000,
            cr4: 0x0035_06f0,
            msr_efer: 0xd01,
            cs_sel: 0x10,
            ss_sel: 0x18,
            flags: 1,
            ..Default::default()
        };
        record(x86_state::Cpu::TYPE, v, cpu.encode(le).unwrap());
    }
    record(x86_state::End::TYPE, 0, Vec::new());
    out
}

/// An HVM guest of 512 pages in a libxl stream, with device-model state.
fn hvm64_libxl() -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    w.libxl_header(&libxl::LibxlHeader::default()).unwrap();
    w.libxl(&libxl::Record::LibxcContext(libxl::LibxcContext {}))
        .unwrap();
    headers(&mut w, libxc::DomainType::X86_HVM);
    policies(&mut w);
    memory(&mut w, 512, 1024);
    let hvm = hvm_context(2);
    w.libxc(&libxc::Record::HvmContext(libxc::HvmContext {
        context: &hvm,
    }))
    .unwrap();
    let params = [
        libxc::HvmParam {
            index: libxc::HvmParamIndex::STORE_PFN,
            value: 0xfeffc,
        },
        libxc::HvmParam {
            index: libxc::HvmParamIndex::IOREQ_PFN,
            value: 0xff000,
        },
        libxc::HvmParam {
            index: libxc::HvmParamIndex::BUFIOREQ_PFN,
            value: 0xff001,
        },
    ];
    w.libxc(&libxc::Record::HvmParams(libxc::HvmParams {
        reserved: 0,
        params: Array::Values(&params),
    }))
    .unwrap();
    w.libxc(&libxc::Record::End(libxc::End {})).unwrap();
    let keys = CStrings::encode_pairs([
        (&b"physmap/f0000000/start_addr"[..], &b"f0000000"[..]),
        (&b"physmap/f0000000/size"[..], &b"800000"[..]),
        (&b"physmap/f0000000/name"[..], &b"vga.vram"[..]),
    ]);
    w.libxl(&libxl::Record::EmulatorXenstoreData(
        libxl::EmulatorXenstoreData {
            emulator_id: libxl::EmulatorId::QEMU_UPSTREAM,
            index: 0,
            entries: CStrings::from_bytes(&keys),
        },
    ))
    .unwrap();
    let qemu = b"QEVM demo device-model state";
    w.libxl(&libxl::Record::EmulatorContext(libxl::EmulatorContext {
        emulator_id: libxl::EmulatorId::QEMU_UPSTREAM,
        index: 0,
        context: qemu,
    }))
    .unwrap();
    w.libxl(&libxl::Record::End(libxl::End {})).unwrap();
    w.into_inner()
}

/// The samples and their file names.
pub fn samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("pv64-demo.xl", pv64_xl()),
        ("hvm64-demo.libxl", hvm64_libxl()),
    ]
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "samples".into());
    for (name, bytes) in samples() {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
}
