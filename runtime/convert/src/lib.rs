//! xenmig-convert: legacy (Xen <= 4.5) to v2 stream conversion.
//!
//! [`convert`] reads a legacy libxc stream with [`legacy::LegacyReader`] and emits the
//! records the reference converter (`convert-legacy-stream`) writes, in the same order
//! (format reference section 1.6), through a [`V2Sink`]. The converter never encodes a record
//! body itself: the sink owns the wire encoding. [`CodecSink`] is the sink that writes real
//! streams, with the generated codecs; [`convert_to`] puts the two together.
#![deny(missing_docs)]

pub mod codec_sink;
pub mod file_source;
pub mod legacy;
pub mod mapped;
mod positioned;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::rc::Rc;

use crate::limits::{LEGACY_MAX_BATCH_SIZE, MAX_EMULATOR_XENSTORE_DATA, MAX_HVM_PARAM_CHUNKS};
pub use codec_sink::CodecSink;
pub use file_source::{FileSource, GatherWriter, Windows};
use legacy::{
    ChunkId, Copying, GuestType, LegacyError, LegacyReader, LegacySource, QemuRecordKind,
    ReaderOptions, Record, Width, XlHeader, LEGACY_BARE_XTAB, LEGACY_PFN_MASK, LEGACY_TYPE_MASK,
    LEGACY_TYPE_SHIFT, XL_MANDATORY_FLAG_STREAMV2,
};
pub use mapped::MappedFile;

// The formats (xenmig-core) and the writer (xenmig-stream) the converter builds on.
pub(crate) use xenmig_core::{libxc, libxl, limits, wire, xl};
pub(crate) use xenmig_stream::writer;

/// libxc domain type (the generated one).
pub use crate::libxc::DomainType;

/// libxc image header version the converter writes.
pub const IMAGE_HEADER_VERSION: u32 = libxc::VERSION_WRITTEN;
/// libxc image header options: little-endian.
pub const IMAGE_HEADER_OPTIONS: u16 = 0;
/// Page shift of x86 guests.
pub const PAGE_SHIFT: u16 = libxc::PAGE_SHIFT;
/// xen_major of a converted image (0 marks a converted legacy stream).
pub const CONVERTED_XEN_MAJOR: u32 = libxc::CONVERTED_XEN_MAJOR;
/// xen_minor of a converted image: the reference converter's version.
pub const CONVERTED_XEN_MINOR: u32 = 1;
/// libxl header option bit 1: the stream was converted from a legacy one.
pub const LIBXL_OPTION_LEGACY: u32 = libxl::LibxlOptions::LEGACY.0;
/// libxl emulator id 0: unknown (legacy).
pub const EMULATOR_ID_UNKNOWN: u32 = libxl::EmulatorId::UNKNOWN.0;

/// HVM parameter indices the converter emits (format reference section 6).
pub mod hvm_param {
    use crate::libxc::HvmParamIndex;
    /// HVM_PARAM_STORE_PFN.
    pub const STORE_PFN: u64 = HvmParamIndex::STORE_PFN.0;
    /// HVM_PARAM_IOREQ_PFN.
    pub const IOREQ_PFN: u64 = HvmParamIndex::IOREQ_PFN.0;
    /// HVM_PARAM_BUFIOREQ_PFN.
    pub const BUFIOREQ_PFN: u64 = HvmParamIndex::BUFIOREQ_PFN.0;
    /// HVM_PARAM_VIRIDIAN.
    pub const VIRIDIAN: u64 = HvmParamIndex::VIRIDIAN.0;
    /// HVM_PARAM_IDENT_PT.
    pub const IDENT_PT: u64 = HvmParamIndex::IDENT_PT.0;
    /// HVM_PARAM_VM86_TSS.
    pub const VM86_TSS: u64 = HvmParamIndex::VM86_TSS.0;
    /// HVM_PARAM_CONSOLE_PFN.
    pub const CONSOLE_PFN: u64 = HvmParamIndex::CONSOLE_PFN.0;
    /// HVM_PARAM_ACPI_IOPORTS_LOCATION.
    pub const ACPI_IOPORTS_LOCATION: u64 = HvmParamIndex::ACPI_IOPORTS_LOCATION.0;
    /// HVM_PARAM_PAGING_RING_PFN.
    pub const PAGING_RING_PFN: u64 = HvmParamIndex::PAGING_RING_PFN.0;
    /// HVM_PARAM_MONITOR_RING_PFN.
    pub const MONITOR_RING_PFN: u64 = HvmParamIndex::MONITOR_RING_PFN.0;
    /// HVM_PARAM_SHARING_RING_PFN.
    pub const SHARING_RING_PFN: u64 = HvmParamIndex::SHARING_RING_PFN.0;
    /// HVM_PARAM_IOREQ_SERVER_PFN.
    pub const IOREQ_SERVER_PFN: u64 = HvmParamIndex::IOREQ_SERVER_PFN.0;
    /// HVM_PARAM_NR_IOREQ_SERVER_PAGES.
    pub const NR_IOREQ_SERVER_PAGES: u64 = HvmParamIndex::NR_IOREQ_SERVER_PAGES.0;
    /// HVM_PARAM_VM_GENERATION_ID_ADDR.
    pub const VM_GENERATION_ID_ADDR: u64 = HvmParamIndex::VM_GENERATION_ID_ADDR.0;
}

/// Receives the v2 records of a converted stream, one method per record kind, in stream order.
///
/// Implementations encode each record (framing, padding, byte order); the converter only
/// decides which records to emit and with which values. Borrowed arguments are only valid for
/// the call.
pub trait V2Sink {
    /// xl save-file header (fields in host order) followed by its optional data, verbatim.
    fn xl_header(&mut self, header: &XlHeader, optional_data: &[u8]) -> io::Result<()>;
    /// libxl stream header ("LibxlFmt", version 2) with `options`.
    fn libxl_header(&mut self, options: u32) -> io::Result<()>;
    /// libxl LIBXC_CONTEXT (empty): a libxc image follows inline.
    fn libxl_libxc_context(&mut self) -> io::Result<()>;
    /// libxl EMULATOR_XENSTORE_DATA: emulator sub-header + NUL-terminated key/value strings.
    fn libxl_emulator_xenstore_data(
        &mut self,
        emulator_id: u32,
        index: u32,
        key_values: &[u8],
    ) -> io::Result<()>;
    /// libxl EMULATOR_CONTEXT: emulator sub-header + the device-model state.
    fn libxl_emulator_context(
        &mut self,
        emulator_id: u32,
        index: u32,
        context: &[u8],
    ) -> io::Result<()>;
    /// libxl END.
    fn libxl_end(&mut self) -> io::Result<()>;
    /// libxc image header.
    fn image_header(&mut self, version: u32, options: u16) -> io::Result<()>;
    /// libxc domain header.
    fn domain_header(
        &mut self,
        domain_type: DomainType,
        page_shift: u16,
        xen_major: u32,
        xen_minor: u32,
    ) -> io::Result<()>;
    /// PAGE_DATA: v2 pfn_and_type entries and the data pages of the entries that carry data.
    fn page_data(&mut self, pfn_and_type: &[u64], pages: &[u8]) -> io::Result<()>;
    /// X86_PV_INFO.
    fn x86_pv_info(&mut self, guest_width: u8, pt_levels: u8) -> io::Result<()>;
    /// X86_PV_P2M_FRAMES.
    fn x86_pv_p2m_frames(
        &mut self,
        p2m_start_pfn: u32,
        p2m_end_pfn: u32,
        frame_pfns: &[u64],
    ) -> io::Result<()>;
    /// X86_PV_VCPU_BASIC.
    fn x86_pv_vcpu_basic(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()>;
    /// X86_PV_VCPU_EXTENDED.
    fn x86_pv_vcpu_extended(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()>;
    /// X86_PV_VCPU_XSAVE.
    fn x86_pv_vcpu_xsave(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()>;
    /// SHARED_INFO (one page).
    fn shared_info(&mut self, page: &[u8]) -> io::Result<()>;
    /// X86_TSC_INFO.
    fn x86_tsc_info(&mut self, mode: u32, khz: u32, nsec: u64, incarnation: u32) -> io::Result<()>;
    /// HVM_CONTEXT.
    fn hvm_context(&mut self, context: &[u8]) -> io::Result<()>;
    /// HVM_PARAMS as (index, value) pairs.
    fn hvm_params(&mut self, params: &[(u64, u64)]) -> io::Result<()>;
    /// STATIC_DATA_END.
    fn static_data_end(&mut self) -> io::Result<()>;
    /// libxc END.
    fn end(&mut self) -> io::Result<()>;
    /// Bytes passed through unframed (the qemu trailer of libxc-format output).
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl<S: V2Sink + ?Sized> V2Sink for &mut S {
    fn xl_header(&mut self, header: &XlHeader, optional_data: &[u8]) -> io::Result<()> {
        (**self).xl_header(header, optional_data)
    }
    fn libxl_header(&mut self, options: u32) -> io::Result<()> {
        (**self).libxl_header(options)
    }
    fn libxl_libxc_context(&mut self) -> io::Result<()> {
        (**self).libxl_libxc_context()
    }
    fn libxl_emulator_xenstore_data(
        &mut self,
        emulator_id: u32,
        index: u32,
        key_values: &[u8],
    ) -> io::Result<()> {
        (**self).libxl_emulator_xenstore_data(emulator_id, index, key_values)
    }
    fn libxl_emulator_context(
        &mut self,
        emulator_id: u32,
        index: u32,
        context: &[u8],
    ) -> io::Result<()> {
        (**self).libxl_emulator_context(emulator_id, index, context)
    }
    fn libxl_end(&mut self) -> io::Result<()> {
        (**self).libxl_end()
    }
    fn image_header(&mut self, version: u32, options: u16) -> io::Result<()> {
        (**self).image_header(version, options)
    }
    fn domain_header(
        &mut self,
        domain_type: DomainType,
        page_shift: u16,
        xen_major: u32,
        xen_minor: u32,
    ) -> io::Result<()> {
        (**self).domain_header(domain_type, page_shift, xen_major, xen_minor)
    }
    fn page_data(&mut self, pfn_and_type: &[u64], pages: &[u8]) -> io::Result<()> {
        (**self).page_data(pfn_and_type, pages)
    }
    fn x86_pv_info(&mut self, guest_width: u8, pt_levels: u8) -> io::Result<()> {
        (**self).x86_pv_info(guest_width, pt_levels)
    }
    fn x86_pv_p2m_frames(
        &mut self,
        p2m_start_pfn: u32,
        p2m_end_pfn: u32,
        frame_pfns: &[u64],
    ) -> io::Result<()> {
        (**self).x86_pv_p2m_frames(p2m_start_pfn, p2m_end_pfn, frame_pfns)
    }
    fn x86_pv_vcpu_basic(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()> {
        (**self).x86_pv_vcpu_basic(vcpu_id, context)
    }
    fn x86_pv_vcpu_extended(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()> {
        (**self).x86_pv_vcpu_extended(vcpu_id, context)
    }
    fn x86_pv_vcpu_xsave(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()> {
        (**self).x86_pv_vcpu_xsave(vcpu_id, context)
    }
    fn shared_info(&mut self, page: &[u8]) -> io::Result<()> {
        (**self).shared_info(page)
    }
    fn x86_tsc_info(&mut self, mode: u32, khz: u32, nsec: u64, incarnation: u32) -> io::Result<()> {
        (**self).x86_tsc_info(mode, khz, nsec, incarnation)
    }
    fn hvm_context(&mut self, context: &[u8]) -> io::Result<()> {
        (**self).hvm_context(context)
    }
    fn hvm_params(&mut self, params: &[(u64, u64)]) -> io::Result<()> {
        (**self).hvm_params(params)
    }
    fn static_data_end(&mut self) -> io::Result<()> {
        (**self).static_data_end()
    }
    fn end(&mut self) -> io::Result<()> {
        (**self).end()
    }
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).raw(bytes)
    }
}

/// Framing of the converted output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// A bare libxc image, followed by the raw qemu trailer for HVM (`-f libxc`, the default).
    #[default]
    Libxc,
    /// A libxl stream wrapping the libxc image (`-f libxl`).
    Libxl,
}

/// How to convert. `None` fields are detected from the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Saving toolstack width (`-w 32|64`).
    pub width: Option<Width>,
    /// Guest type (`-g pv|hvm`).
    pub guest_type: Option<GuestType>,
    /// Whether an xl header precedes the legacy stream (`-x`): `Some(true)` requires one,
    /// `Some(false)` reads none, `None` looks for the xl magic at offset 0.
    pub xl_header: Option<bool>,
    /// Output framing (`-f`).
    pub format: OutputFormat,
    /// Do not read the qemu trailer of an HVM stream (`--skip-qemu`; libxc format only, as in
    /// the reference: libxl output always needs it).
    pub skip_qemu: bool,
}

/// What a conversion saw and wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertSummary {
    /// Toolstack width used (given or detected).
    pub width: Width,
    /// Guest type used (given or detected).
    pub guest_type: GuestType,
    /// Whether an xl header was copied.
    pub xl_header: bool,
    /// Output framing.
    pub format: OutputFormat,
    /// The legacy p2m_size.
    pub p2m_size: u64,
    /// PAGE_DATA records written.
    pub page_data_records: u64,
    /// Data pages written.
    pub pages: u64,
    /// Bare XTAB (0xF0000000) entries dropped.
    pub dropped_bare_xtab_entries: u64,
    /// Page batches that held only bare XTAB entries and were not written.
    pub dropped_empty_batches: u64,
    /// PV vcpus written.
    pub vcpus: u32,
    /// libxl physmap entries turned into xenstore keys.
    pub physmap_entries: u32,
    /// Whether the stream had a debug (verify) pass.
    pub verify_mode: bool,
    /// The qemu trailer read, if any.
    pub qemu_record: Option<QemuRecordKind>,
    /// Bytes of input consumed.
    pub input_bytes: u64,
    /// Bytes of output written; only [`convert_to`] knows it, [`convert`] leaves it 0.
    pub output_bytes: u64,
}

/// Errors from [`convert`].
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input could not be read or is not a convertible legacy stream.
    #[error(transparent)]
    Legacy(#[from] LegacyError),
    /// The sink failed to write a record.
    #[error("offset {offset:#x}: writing {record}: {source}")]
    Write {
        /// Input offset of the legacy item being converted.
        offset: u64,
        /// The record being written.
        record: &'static str,
        /// The sink's error.
        #[source]
        source: io::Error,
    },
}

impl ConvertError {
    /// The input offset the error refers to.
    pub fn offset(&self) -> u64 {
        match self {
            ConvertError::Legacy(e) => e.offset(),
            ConvertError::Write { offset, .. } => *offset,
        }
    }

    /// The reference converter's exit status: 2 for unsupported input (tmem, compression, an
    /// unknown qemu signature), 1 for every stream or I/O error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConvertError::Legacy(e) => e.exit_code(),
            ConvertError::Write { .. } => 1,
        }
    }
}

fn emit(offset: u64, record: &'static str, result: io::Result<()>) -> Result<(), ConvertError> {
    result.map_err(|source| ConvertError::Write {
        offset,
        record,
        source,
    })
}

/// HVM parameter index for a legacy HVM parameter chunk.
fn hvm_param_index(chunk: ChunkId) -> Option<u64> {
    use hvm_param::*;
    Some(match chunk {
        ChunkId::HvmIdentPt => IDENT_PT,
        ChunkId::HvmVm86Tss => VM86_TSS,
        ChunkId::HvmConsolePfn => CONSOLE_PFN,
        ChunkId::HvmAcpiIoportsLocation => ACPI_IOPORTS_LOCATION,
        ChunkId::HvmViridian => VIRIDIAN,
        ChunkId::HvmGenerationIdAddr => VM_GENERATION_ID_ADDR,
        ChunkId::HvmPagingRingPfn => PAGING_RING_PFN,
        ChunkId::HvmMonitorRingPfn => MONITOR_RING_PFN,
        ChunkId::HvmSharingRingPfn => SHARING_RING_PFN,
        ChunkId::HvmIoreqServerPfn => IOREQ_SERVER_PFN,
        ChunkId::HvmNrIoreqServerPages => NR_IOREQ_SERVER_PAGES,
        _ => return None,
    })
}

/// Legacy pfn_type entry to v2 pfn_and_type (type nibble to bits 60-63).
pub fn legacy_entry_to_v2(entry: u64) -> u64 {
    ((entry & LEGACY_TYPE_MASK) << 32) | (entry & LEGACY_PFN_MASK)
}

/// Convert a legacy stream read from `input` into v2 records written to `sink`.
///
/// Memory stays bounded: page batches go through reused buffers, and every length read from
/// the input is capped before anything is allocated for it. On error the sink may have
/// received a prefix of the output.
pub fn convert<R: Read, S: V2Sink + ?Sized>(
    input: R,
    sink: &mut S,
    opts: &ConvertOptions,
) -> Result<ConvertSummary, ConvertError> {
    convert_from(Copying(input), sink, opts)
}

/// [`convert`] from any [`LegacySource`], which may lend page data in place (a
/// [`MappedFile`]) instead of having it read into the converter's buffer.
pub fn convert_from<L: LegacySource, S: V2Sink + ?Sized>(
    input: L,
    sink: &mut S,
    opts: &ConvertOptions,
) -> Result<ConvertSummary, ConvertError> {
    let libxl = opts.format == OutputFormat::Libxl;
    let mut reader = LegacyReader::with_source(
        input,
        ReaderOptions {
            width: opts.width,
            guest_type: opts.guest_type,
            xl_header: opts.xl_header,
            qemu_trailer: libxl || !opts.skip_qemu,
        },
    );
    let mut summary = ConvertSummary {
        width: opts.width.unwrap_or(Width::Bits64),
        guest_type: opts.guest_type.unwrap_or(GuestType::Hvm),
        xl_header: false,
        format: opts.format,
        p2m_size: 0,
        page_data_records: 0,
        pages: 0,
        dropped_bare_xtab_entries: 0,
        dropped_empty_batches: 0,
        vcpus: 0,
        physmap_entries: 0,
        verify_mode: false,
        qemu_record: None,
        input_bytes: 0,
        output_bytes: 0,
    };
    let mut pfns: Vec<u64> = Vec::with_capacity(LEGACY_MAX_BATCH_SIZE as usize);
    let mut sorted: Vec<u64> = Vec::with_capacity(LEGACY_MAX_BATCH_SIZE as usize);
    let mut params: Vec<(u64, u64)> = Vec::new();
    let mut xenstore: Vec<u8> = Vec::new();
    let mut qemu_context: Vec<u8> = Vec::new();

    while let Some((at, record)) = reader.next_record()? {
        match record {
            Record::XlHeader {
                header,
                optional_data,
            } => {
                let mut header = header;
                if libxl {
                    header.mandatory_flags |= XL_MANDATORY_FLAG_STREAMV2;
                }
                summary.xl_header = true;
                emit(at, "xl header", sink.xl_header(&header, optional_data))?;
            }
            Record::Header {
                p2m_size,
                width,
                guest_type,
            } => {
                summary.width = width;
                summary.guest_type = guest_type;
                summary.p2m_size = p2m_size;
                if libxl {
                    emit(at, "libxl header", sink.libxl_header(LIBXL_OPTION_LEGACY))?;
                    emit(at, "LIBXC_CONTEXT", sink.libxl_libxc_context())?;
                }
                emit(
                    at,
                    "image header",
                    sink.image_header(IMAGE_HEADER_VERSION, IMAGE_HEADER_OPTIONS),
                )?;
                let domain_type = match guest_type {
                    GuestType::Pv => DomainType::X86_PV,
                    GuestType::Hvm => DomainType::X86_HVM,
                };
                emit(
                    at,
                    "domain header",
                    sink.domain_header(
                        domain_type,
                        PAGE_SHIFT,
                        CONVERTED_XEN_MAJOR,
                        CONVERTED_XEN_MINOR,
                    ),
                )?;
                if guest_type == GuestType::Hvm {
                    emit(at, "STATIC_DATA_END", sink.static_data_end())?;
                }
            }
            Record::PvExtendedInfo(info) => {
                emit(
                    at,
                    "X86_PV_INFO",
                    sink.x86_pv_info(info.guest_width, info.pt_levels),
                )?;
                emit(at, "STATIC_DATA_END", sink.static_data_end())?;
            }
            Record::PvP2mFrameList { frames } => {
                // p2m_size is 1..=0x0FFFFFFF for PV, checked by the reader.
                let end = (summary.p2m_size - 1) as u32;
                emit(
                    at,
                    "X86_PV_P2M_FRAMES",
                    sink.x86_pv_p2m_frames(0, end, frames),
                )?;
            }
            Record::PageBatch { entries, pages } => {
                pfns.clear();
                sorted.clear();
                for &entry in entries {
                    if entry == LEGACY_BARE_XTAB {
                        summary.dropped_bare_xtab_entries += 1;
                    } else {
                        sorted.push(entry);
                        pfns.push(legacy_entry_to_v2(entry));
                    }
                }
                sorted.sort_unstable();
                if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
                    return Err(LegacyError::malformed(
                        at,
                        format!(
                            "page batch lists pfn {:#x} (type {:#x}) twice",
                            pair[0] & LEGACY_PFN_MASK,
                            (pair[0] & LEGACY_TYPE_MASK) >> LEGACY_TYPE_SHIFT
                        ),
                    )
                    .into());
                }
                if pfns.is_empty() {
                    // Only bare XTAB entries: the reference would write a PAGE_DATA with
                    // count 0, which no v2 reader accepts. Nothing is lost by skipping it.
                    summary.dropped_empty_batches += 1;
                    continue;
                }
                emit(at, "PAGE_DATA", sink.page_data(&pfns, pages))?;
                summary.page_data_records += 1;
                summary.pages += (pages.len() / crate::limits::PAGE_SIZE) as u64;
            }
            Record::EnableVerifyMode => summary.verify_mode = true,
            Record::VcpuInfo { .. } | Record::LastCheckpoint => {}
            Record::HvmParam { chunk, value } => {
                if summary.guest_type == GuestType::Pv {
                    return Err(LegacyError::malformed(
                        at,
                        format!("HVM parameter chunk {} in a PV stream", chunk.name()),
                    )
                    .into());
                }
                if params.len() >= MAX_HVM_PARAM_CHUNKS {
                    return Err(LegacyError::malformed(
                        at,
                        format!("more than {MAX_HVM_PARAM_CHUNKS} HVM parameter chunks"),
                    )
                    .into());
                }
                let Some(index) = hvm_param_index(chunk) else {
                    return Err(LegacyError::malformed(
                        at,
                        format!("{} is not an HVM parameter", chunk.name()),
                    )
                    .into());
                };
                params.push((index, value));
            }
            Record::TscInfo {
                mode,
                nsec,
                khz,
                incarnation,
            } => {
                emit(
                    at,
                    "X86_TSC_INFO",
                    sink.x86_tsc_info(mode, khz, nsec, incarnation),
                )?;
            }
            Record::Toolstack { blob } => {
                if libxl && !blob.is_empty() {
                    // The blob starts after the chunk id and its u32 length.
                    let blob_at = at + 8;
                    let width = summary.width;
                    legacy::parse_toolstack_physmap(blob, width, blob_at, |entry| {
                        append_physmap_keys(&mut xenstore, &entry, blob_at)?;
                        summary.physmap_entries += 1;
                        Ok(())
                    })?;
                }
            }
            Record::EndOfChunks => {
                if !params.is_empty() {
                    emit(at, "HVM_PARAMS", sink.hvm_params(&params))?;
                }
            }
            Record::PvVcpu {
                vcpu_id,
                basic,
                extended,
                xsave,
            } => {
                emit(
                    at,
                    "X86_PV_VCPU_BASIC",
                    sink.x86_pv_vcpu_basic(vcpu_id, basic),
                )?;
                if let Some(extended) = extended {
                    emit(
                        at,
                        "X86_PV_VCPU_EXTENDED",
                        sink.x86_pv_vcpu_extended(vcpu_id, extended),
                    )?;
                }
                if let Some((_mask, xsave)) = xsave {
                    emit(
                        at,
                        "X86_PV_VCPU_XSAVE",
                        sink.x86_pv_vcpu_xsave(vcpu_id, xsave),
                    )?;
                }
                summary.vcpus += 1;
            }
            Record::SharedInfo { page } => {
                emit(at, "SHARED_INFO", sink.shared_info(page))?;
                finish_libxc(sink, at, libxl, &xenstore)?;
            }
            Record::HvmMagicPfns {
                ioreq_pfn,
                bufioreq_pfn,
                store_pfn,
            } => {
                let magic = [
                    (hvm_param::IOREQ_PFN, ioreq_pfn),
                    (hvm_param::BUFIOREQ_PFN, bufioreq_pfn),
                    (hvm_param::STORE_PFN, store_pfn),
                ];
                emit(at, "HVM_PARAMS", sink.hvm_params(&magic))?;
            }
            Record::HvmContext { blob } => {
                emit(at, "HVM_CONTEXT", sink.hvm_context(blob))?;
                finish_libxc(sink, at, libxl, &xenstore)?;
            }
            Record::QemuHeader { kind, raw, .. } => {
                summary.qemu_record = Some(kind);
                if libxl {
                    qemu_context.clear();
                } else {
                    emit(at, "qemu trailer", sink.raw(raw))?;
                }
            }
            Record::QemuData { data } => {
                if libxl {
                    // The reader caps the trailer (limits::LEGACY_MAX_QEMU_RECORD_LENGTH) so
                    // that this stays one record.
                    qemu_context.extend_from_slice(data);
                } else {
                    emit(at, "qemu trailer", sink.raw(data))?;
                }
            }
        }
    }

    let at = reader.offset();
    if libxl {
        if summary.qemu_record.is_some() {
            emit(
                at,
                "EMULATOR_CONTEXT",
                sink.libxl_emulator_context(EMULATOR_ID_UNKNOWN, 0, &qemu_context),
            )?;
        }
        emit(at, "libxl END", sink.libxl_end())?;
    }
    summary.input_bytes = at;
    Ok(summary)
}

/// Convert a legacy stream from `input` into a v2 stream written to `output` with the
/// generated codecs ([`CodecSink`]), then flush `output`.
///
/// `input` is buffered here; `output` is not (records go out with one vectored write each), so
/// hand it a file, a pipe or your own buffered writer. On error `output` may hold a prefix of
/// the stream: callers that write to a path should write to a temporary file.
pub fn convert_to<R: Read, W: Write>(
    input: R,
    output: W,
    opts: &ConvertOptions,
) -> Result<ConvertSummary, ConvertError> {
    convert_source_to(
        Copying(BufReader::with_capacity(file_source::READ_AHEAD, input)),
        output,
        opts,
    )
}

/// [`convert_to`] from a file, read from its current position, whose offset is left after
/// what was consumed. Unlike [`convert_to`], the output is buffered here: page data goes from
/// the windows the input is read into straight to `output`, many records per write
/// ([`FileSource`], [`GatherWriter`]).
pub fn convert_file_to<W: Write>(
    input: File,
    output: W,
    opts: &ConvertOptions,
) -> Result<ConvertSummary, ConvertError> {
    let windows = Windows::shared();
    let source = FileSource::with_windows(input, Rc::clone(&windows))
        .map_err(|source| LegacyError::Io { offset: 0, source })?;
    convert_source_to(source, GatherWriter::new(output, windows), opts)
}

/// [`convert_to`] from any [`LegacySource`].
pub fn convert_source_to<L: LegacySource, W: Write>(
    input: L,
    output: W,
    opts: &ConvertOptions,
) -> Result<ConvertSummary, ConvertError> {
    let mut sink = CodecSink::new(output);
    let mut summary = convert_from(input, &mut sink, opts)?;
    emit(summary.input_bytes, "the end of the output", sink.flush())?;
    summary.output_bytes = sink.output_bytes();
    Ok(summary)
}

/// libxc END, then (libxl) the physmap keys gathered from TOOLSTACK chunks.
fn finish_libxc<S: V2Sink + ?Sized>(
    sink: &mut S,
    at: u64,
    libxl: bool,
    xenstore: &[u8],
) -> Result<(), ConvertError> {
    emit(at, "END", sink.end())?;
    if libxl && !xenstore.is_empty() {
        emit(
            at,
            "EMULATOR_XENSTORE_DATA",
            sink.libxl_emulator_xenstore_data(EMULATOR_ID_UNKNOWN, 0, xenstore),
        )?;
    }
    Ok(())
}

/// Append `physmap/<phys>/{start_addr,size,name}` keys and values, each NUL-terminated.
fn append_physmap_keys(
    out: &mut Vec<u8>,
    entry: &legacy::PhysmapEntry<'_>,
    blob_at: u64,
) -> Result<(), LegacyError> {
    let before = out.len();
    let phys = entry.phys_offset;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "physmap/{phys:x}/start_addr\0{:x}\0", entry.start_addr);
    let _ = write!(out, "physmap/{phys:x}/size\0{:x}\0", entry.size);
    let _ = write!(out, "physmap/{phys:x}/name\0");
    out.extend_from_slice(entry.name);
    out.push(0);
    if out.len() > MAX_EMULATOR_XENSTORE_DATA {
        out.truncate(before);
        return Err(LegacyError::malformed(
            blob_at,
            format!("physmap keys exceed the EMULATOR_XENSTORE_DATA cap {MAX_EMULATOR_XENSTORE_DATA:#x}"),
        ));
    }
    Ok(())
}
