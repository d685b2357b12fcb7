//! Writes a small, valid libxc image with [`xenmig::writer::StreamWriter`] and the generated
//! record types, then verifies it strictly and walks its HVM context back.
//!
//! ```text
//! cargo run -p xenmig --example write_stream -- [OUT]
//! ```
//!
//! The image is an HVM guest of a few pages and one vCPU: image and domain headers, the end of
//! the static data, one PAGE_DATA batch, TSC_INFO, HVM_CONTEXT (save records built with the
//! `x86_state` types), HVM_PARAMS and END. With OUT the image is also written to that file
//! (`xenmig verify OUT` and `xenmig dump OUT` read it). Exits non-zero if the writer refuses a
//! record or the verifier refuses the image.

use std::process::ExitCode;
use xenmig::limits::PAGE_SIZE;
use xenmig::wire::{Array, DecodeCtx, Endian, Strictness};
use xenmig::writer::StreamWriter;
use xenmig::{libxc, render, verify_slice, x86_state, VerifyOptions};

/// Guest pages in the image.
const PAGES: u64 = 8;

/// One save record of an HVM context: its descriptor, then its body.
fn save_record(out: &mut Vec<u8>, typecode: u32, instance: u16, body: &[u8]) -> Result<(), String> {
    let d = x86_state::SaveDescriptor {
        typecode: u16::try_from(typecode).map_err(|_| "save record type beyond u16")?,
        instance,
        length: u32::try_from(body.len()).map_err(|_| "save record too long")?,
    };
    out.extend(d.encode(Endian::Little).map_err(|e| e.to_string())?);
    out.extend_from_slice(body);
    Ok(())
}

/// The hypervisor's part of an HVM guest: a header, one vCPU, the end marker.
fn hvm_context(khz: u32) -> Result<Vec<u8>, String> {
    let le = Endian::Little;
    let mut ctx = Vec::new();
    let header = x86_state::Header {
        magic: x86_state::HVM_FILE_MAGIC,
        version: x86_state::HVM_FILE_VERSION,
        changeset: u64::MAX,
        cpuid: 0x0009_06ea,
        gtsc_khz: khz,
    };
    let body = header.encode(le).map_err(|e| e.to_string())?;
    save_record(&mut ctx, x86_state::Header::TYPE, 0, &body)?;
    // vCPU 0 in long mode, stopped in its kernel.
    let cpu = x86_state::Cpu {
        rip: 0xffff_ffff_8100_0000,
        rsp: 0xffff_c900_0000_3f00,
        rflags: 0x202,
        cr0: 0x8005_0033,
        cr3: 0x1000,
        cr4: 0x0000_06f0,
        msr_efer: 0xd01,
        ..Default::default()
    };
    let body = cpu.encode(le).map_err(|e| e.to_string())?;
    save_record(&mut ctx, x86_state::Cpu::TYPE, 0, &body)?;
    save_record(&mut ctx, x86_state::End::TYPE, 0, &[])?;
    Ok(ctx)
}

/// The image, in memory, and the HVM context it carries.
fn image() -> Result<(Vec<u8>, Vec<u8>), Box<dyn std::error::Error>> {
    let mut w = StreamWriter::new(Vec::new());
    w.image_header(&libxc::ImageHeader {
        version: libxc::VERSION_WRITTEN,
        ..Default::default()
    })?;
    w.domain_header(&libxc::DomainHeader {
        r#type: libxc::DomainType::X86_HVM,
        xen_major: 4,
        xen_minor: 17,
        ..Default::default()
    })?;
    w.libxc(&libxc::Record::StaticDataEnd(libxc::StaticDataEnd {}))?;

    // Memory: every page has data except the last, which the guest ballooned out (XTAB).
    let mut entries = Vec::new();
    let mut pages = Vec::new();
    for pfn in 0..PAGES {
        let t = if pfn == PAGES - 1 {
            libxc::PageType::XTAB
        } else {
            libxc::PageType::NOTAB
        };
        entries.push(libxc::PageEntry::default().with_pfn(pfn).with_page_type(t));
        if t.has_data() {
            let mut page = vec![0u8; PAGE_SIZE];
            page[..8].copy_from_slice(&pfn.to_le_bytes());
            pages.extend_from_slice(&page);
        }
    }
    // Entries and pages are borrowed by the record, and written with one vectored write.
    w.libxc(&libxc::Record::PageData(libxc::PageData {
        reserved: 0,
        entries: Array::Values(&entries),
        pages: &pages,
    }))?;

    let khz = 2_400_000;
    w.libxc(&libxc::Record::X86TscInfo(libxc::X86TscInfo {
        mode: 0,
        khz,
        nsec: 1_000_000_000,
        incarnation: 0,
        reserved: 0,
    }))?;
    let ctx = hvm_context(khz)?;
    w.libxc(&libxc::Record::HvmContext(libxc::HvmContext {
        context: &ctx,
    }))?;
    let params = [libxc::HvmParam {
        index: libxc::HvmParamIndex::PAE_ENABLED,
        value: 1,
    }];
    w.libxc(&libxc::Record::HvmParams(libxc::HvmParams {
        reserved: 0,
        params: Array::Values(&params),
    }))?;
    w.libxc(&libxc::Record::End(libxc::End {}))?;
    println!("wrote {} records, {} octets", w.records(), w.offset());
    Ok((w.into_inner(), ctx))
}

fn main() -> ExitCode {
    let (bytes, context) = match image() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("write_stream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = verify_slice(
        &bytes,
        VerifyOptions {
            framing: None,
            strictness: Strictness::Strict,
        },
        &mut |_| {},
    );
    if let Some(e) = &report.error {
        eprintln!("write_stream: the image is refused: {e}");
        return ExitCode::FAILURE;
    }
    if !report.warnings.is_empty() {
        eprintln!("write_stream: warnings: {:?}", report.warnings);
        return ExitCode::FAILURE;
    }
    println!(
        "verified strictly: {} guest, {} data pages, {} records",
        report.guest.as_deref().unwrap_or("?"),
        report.pages.data_pages,
        report.libxc_records
    );
    // The HVM context read back, save record by save record, with the generated framing.
    let ctx = DecodeCtx::new(libxc::VERSION_WRITTEN);
    for frame in x86_state::Frames::new(&context).iter() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                eprintln!("write_stream: the HVM context does not decode: {e}");
                return ExitCode::FAILURE;
            }
        };
        match frame.decode(&ctx) {
            Ok(x86_state::Record::Cpu(cpu)) => println!(
                "  {:#06x} CPU instance {}: rip={:#x} cr3={:#x}",
                frame.offset, frame.header.instance, cpu.rip, cpu.cr3
            ),
            Ok(record) => println!(
                "  {:#06x} {} instance {}: {}",
                frame.offset,
                frame.record_type(),
                frame.header.instance,
                render::text(&record)
            ),
            Err(e) => {
                eprintln!("write_stream: save record at {:#x}: {e}", frame.offset);
                return ExitCode::FAILURE;
            }
        }
    }

    if let Some(out) = std::env::args().nth(1) {
        if let Err(e) = std::fs::write(&out, &bytes) {
            eprintln!("write_stream: {out}: {e}");
            return ExitCode::FAILURE;
        }
        println!("written to {out}");
    }
    ExitCode::SUCCESS
}
