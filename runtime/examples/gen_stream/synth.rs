//! Synthetic valid v2 streams of any size, written as they are generated (memory use is one
//! batch of pages whatever the size). Shared by the `gen_stream` example, its test and the
//! criterion benches, which include this file with `#[path]`.
//!
//! Every page is a data page (`NOTAB`) with cheap deterministic contents: one non-zero
//! pattern shared by all pages, the first eight octets replaced by the page's pfn, so pages
//! differ and a reader that copies them cannot skip zeros.

use std::io::Write;
use xenmig::reader::Framing;
use xenmig::wire::{Array, CStrings, Endian};
use xenmig::writer::{StreamWriter, WriteError};
use xenmig::{libxc, libxl, xl};

const PAGE: usize = 4096;

/// The guest the stream describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    Hvm,
    /// A 64-bit PV guest with 4-level page tables.
    Pv,
}

impl std::str::FromStr for Guest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hvm" => Ok(Guest::Hvm),
            "pv" => Ok(Guest::Pv),
            other => Err(format!("unknown guest `{other}` (hvm, pv)")),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Synth {
    /// Approximate length of the stream in octets: the page count is chosen so that the
    /// stream is at most this long, and within a few pages of it.
    pub size: u64,
    /// Pfns per PAGE_DATA record (1 to 1024).
    pub batch: usize,
    pub guest: Guest,
    pub framing: Framing,
}

impl Synth {
    /// Data pages the stream carries.
    pub fn pages(&self) -> u64 {
        let batch = self.batch.clamp(1, libxc::MAX_BATCH_SIZE as usize) as f64;
        // Per page: its contents, its entry, its share of a PAGE_DATA record's framing (8),
        // count and reserved (8), and for PV its share of the p2m frame list (8 per 512).
        let per_page = PAGE as f64 + 8.0 + 16.0 / batch + 8.0 / 512.0;
        // Everything else (headers, policies, vcpu contexts, emulator records) fits in this.
        let fixed = 24.0 * 1024.0;
        ((self.size as f64 - fixed) / per_page).max(1.0) as u64
    }
}

/// Writes the stream; returns the octets written.
pub fn write_stream<W: Write>(out: W, s: &Synth) -> Result<u64, WriteError> {
    let mut w = StreamWriter::new(out);
    let pages = s.pages();
    let batch = s.batch.clamp(1, libxc::MAX_BATCH_SIZE as usize);
    let nested = s.framing != Framing::Libxc;
    if s.framing == Framing::Xl {
        let config: &[u8] = match s.guest {
            Guest::Hvm => b"{\"c_info\": {\"type\": \"hvm\", \"name\": \"synthetic\"}}\0",
            Guest::Pv => b"{\"c_info\": {\"type\": \"pv\", \"name\": \"synthetic\"}}\0",
        };
        let opt = xl::XlOptionalData { config }.encode(Endian::HOST)?;
        w.xl_header(
            &xl::XlHeader {
                mandatory_flags: xl::XlMandatoryFlags::JSON.with(xl::XlMandatoryFlags::STREAMV2),
                optional_data_len: opt.len() as u32,
                ..Default::default()
            },
            &opt,
        )?;
    }
    if nested {
        w.libxl_header(&libxl::LibxlHeader::default())?;
        w.libxl(&libxl::Record::LibxcContext(libxl::LibxcContext {}))?;
    }
    w.image_header(&libxc::ImageHeader {
        version: libxc::VERSION_WRITTEN,
        ..Default::default()
    })?;
    w.domain_header(&libxc::DomainHeader {
        r#type: match s.guest {
            Guest::Hvm => libxc::DomainType::X86_HVM,
            Guest::Pv => libxc::DomainType::X86_PV,
        },
        xen_major: 4,
        xen_minor: 17,
        ..Default::default()
    })?;
    if s.guest == Guest::Pv {
        w.libxc(&libxc::Record::X86PvInfo(libxc::X86PvInfo {
            guest_width: 8,
            pt_levels: 4,
            ..Default::default()
        }))?;
    }
    policies(&mut w)?;
    if s.guest == Guest::Pv {
        // One frame of the p2m per 512 pfns (8-octet entries); the frames' own pfns are
        // arbitrary as far as the stream is concerned.
        // A PV stream's pfns are 32-bit in this record; 2^32 pages are 16 TiB.
        let end = u32::try_from(pages - 1).unwrap_or(u32::MAX);
        let frames: Vec<u64> = (0..u64::from(end) / 512 + 1).collect();
        w.libxc(&libxc::Record::X86PvP2mFrames(libxc::X86PvP2mFrames {
            p2m_start_pfn: 0,
            p2m_end_pfn: end,
            frame_pfns: Array::Values(&frames),
        }))?;
    }
    memory(&mut w, pages, batch)?;
    w.libxc(&libxc::Record::X86TscInfo(libxc::X86TscInfo {
        mode: 0,
        khz: 2_400_000,
        nsec: 123_456_789_000,
        incarnation: 1,
        reserved: 0,
    }))?;
    match s.guest {
        Guest::Pv => pv_tail(&mut w)?,
        Guest::Hvm => hvm_tail(&mut w)?,
    }
    w.libxc(&libxc::Record::End(libxc::End {}))?;
    if nested {
        if s.guest == Guest::Hvm {
            emulator(&mut w)?;
        }
        w.libxl(&libxl::Record::End(libxl::End {}))?;
    }
    w.flush()?;
    Ok(w.offset())
}

fn policies<W: Write>(w: &mut StreamWriter<W>) -> Result<(), WriteError> {
    let leaves = [libxc::CpuidLeaf {
        leaf: 0,
        subleaf: u32::MAX,
        a: 0xd,
        b: 0x756e_6547,
        c: 0x6c65_746e,
        d: 0x4965_6e69,
    }];
    w.libxc(&libxc::Record::X86CpuidPolicy(libxc::X86CpuidPolicy {
        leaves: Array::Values(&leaves),
    }))?;
    let msrs = [libxc::MsrEntry {
        idx: 0xce,
        flags: 0,
        val: 0x8000_0000,
    }];
    w.libxc(&libxc::Record::X86MsrPolicy(libxc::X86MsrPolicy {
        entries: Array::Values(&msrs),
    }))?;
    w.libxc(&libxc::Record::StaticDataEnd(libxc::StaticDataEnd {}))
}

/// Pfns 0..pages in PAGE_DATA records of `batch` entries, all carrying data.
fn memory<W: Write>(w: &mut StreamWriter<W>, pages: u64, batch: usize) -> Result<(), WriteError> {
    let mut data = vec![0u8; batch * PAGE];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for word in data.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&(x | 1).to_le_bytes());
    }
    let mut entries = Vec::with_capacity(batch);
    let mut pfn = 0u64;
    while pfn < pages {
        let n = (pages - pfn).min(batch as u64) as usize;
        entries.clear();
        for (i, page) in data.chunks_exact_mut(PAGE).take(n).enumerate() {
            let p = pfn + i as u64;
            entries.push(libxc::PageEntry::default().with_pfn(p));
            page[..8].copy_from_slice(&(p | 1 << 63).to_le_bytes());
        }
        w.libxc(&libxc::Record::PageData(libxc::PageData {
            reserved: 0,
            entries: Array::Values(&entries),
            pages: &data[..n * PAGE],
        }))?;
        pfn += n as u64;
    }
    Ok(())
}

fn pv_tail<W: Write>(w: &mut StreamWriter<W>) -> Result<(), WriteError> {
    let shared = [0x5au8; PAGE];
    w.libxc(&libxc::Record::SharedInfo(libxc::SharedInfo {
        shared_info: &shared,
    }))?;
    // vcpu_guest_context of a 64-bit guest.
    let basic = [1u8; 5168];
    w.libxc(&libxc::Record::X86PvVcpuBasic(libxc::X86PvVcpuBasic {
        vcpu_id: 0,
        reserved: 0,
        context: &basic,
    }))?;
    let extended = [0u8; 128];
    w.libxc(&libxc::Record::X86PvVcpuExtended(
        libxc::X86PvVcpuExtended {
            vcpu_id: 0,
            reserved: 0,
            context: &extended,
        },
    ))
}

fn hvm_tail<W: Write>(w: &mut StreamWriter<W>) -> Result<(), WriteError> {
    let context = [0xc3u8; 1500];
    w.libxc(&libxc::Record::HvmContext(libxc::HvmContext {
        context: &context,
    }))?;
    let params = [
        libxc::HvmParam {
            index: libxc::HvmParamIndex::STORE_PFN,
            value: 0xfeffc,
        },
        libxc::HvmParam {
            index: libxc::HvmParamIndex::IOREQ_PFN,
            value: 0xff000,
        },
    ];
    w.libxc(&libxc::Record::HvmParams(libxc::HvmParams {
        reserved: 0,
        params: Array::Values(&params),
    }))
}

fn emulator<W: Write>(w: &mut StreamWriter<W>) -> Result<(), WriteError> {
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
    ))?;
    w.libxl(&libxl::Record::EmulatorContext(libxl::EmulatorContext {
        emulator_id: libxl::EmulatorId::QEMU_UPSTREAM,
        index: 0,
        context: b"QEVM synthetic device-model state",
    }))
}
