//! The [`V2Sink`] that writes real streams: every header and record goes through the
//! generated codecs and [`StreamWriter`]'s framing, so no record body is spelled out here.
//!
//! Page batches reuse one entry buffer for the life of the sink, and their page data is
//! borrowed straight from the converter's buffer into a vectored write.

use std::io::{self, Write};

use super::legacy::XlHeader;
use super::{DomainType, V2Sink};
use crate::wire::{Array, CStrings, Endian};
use crate::writer::{StreamWriter, WriteError};
use crate::{libxc, libxl, xl};

/// Writes converted records to `W` with the generated codecs.
pub struct CodecSink<W> {
    writer: StreamWriter<W>,
    /// PAGE_DATA entries, encoded little-endian; reused for every batch.
    entries: Vec<u8>,
    /// HVM_PARAMS entries; reused.
    params: Vec<libxc::HvmParam>,
}

impl<W: Write> CodecSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        CodecSink {
            writer: StreamWriter::new(out),
            entries: Vec::with_capacity(
                libxc::MAX_BATCH_SIZE as usize * crate::limits::PAGE_ENTRY_SIZE,
            ),
            params: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn output_bytes(&self) -> u64 {
        self.writer.offset()
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().map_err(into_io)
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        self.writer.get_ref()
    }

    /// The output, without flushing.
    pub fn into_inner(self) -> W {
        self.writer.into_inner()
    }

    fn libxc(&mut self, record: &libxc::Record<'_>) -> io::Result<()> {
        self.writer.libxc(record).map_err(into_io)
    }

    fn libxl(&mut self, record: &libxl::Record<'_>) -> io::Result<()> {
        self.writer.libxl(record).map_err(into_io)
    }
}

/// The sink interface speaks `io::Error`; keep the kind of an I/O failure and say where in the
/// output it happened. Encoding and cap failures are bugs or impossible input: `InvalidData`.
fn into_io(e: WriteError) -> io::Error {
    match e {
        WriteError::Io { offset, source } => io::Error::new(
            source.kind(),
            format!("output offset {offset:#x}: {source}"),
        ),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<W: Write> V2Sink for CodecSink<W> {
    fn xl_header(&mut self, header: &XlHeader, optional_data: &[u8]) -> io::Result<()> {
        let header = xl::XlHeader {
            magic: xl::XL_MAGIC,
            byteorder: header.byteorder,
            mandatory_flags: xl::XlMandatoryFlags(header.mandatory_flags),
            optional_flags: header.optional_flags,
            optional_data_len: header.optional_data_len,
        };
        self.writer
            .xl_header(&header, optional_data)
            .map_err(into_io)
    }

    fn libxl_header(&mut self, options: u32) -> io::Result<()> {
        let header = libxl::LibxlHeader {
            ident: libxl::LIBXL_IDENT,
            version: libxl::VERSION_WRITTEN,
            options: libxl::LibxlOptions(options),
        };
        self.writer.libxl_header(&header).map_err(into_io)
    }

    fn libxl_libxc_context(&mut self) -> io::Result<()> {
        self.libxl(&libxl::Record::LibxcContext(libxl::LibxcContext {}))
    }

    fn libxl_emulator_xenstore_data(
        &mut self,
        emulator_id: u32,
        index: u32,
        key_values: &[u8],
    ) -> io::Result<()> {
        self.libxl(&libxl::Record::EmulatorXenstoreData(
            libxl::EmulatorXenstoreData {
                emulator_id: libxl::EmulatorId(emulator_id),
                index,
                entries: CStrings::from_bytes(key_values),
            },
        ))
    }

    fn libxl_emulator_context(
        &mut self,
        emulator_id: u32,
        index: u32,
        context: &[u8],
    ) -> io::Result<()> {
        self.libxl(&libxl::Record::EmulatorContext(libxl::EmulatorContext {
            emulator_id: libxl::EmulatorId(emulator_id),
            index,
            context,
        }))
    }

    fn libxl_end(&mut self) -> io::Result<()> {
        self.libxl(&libxl::Record::End(libxl::End {}))
    }

    fn image_header(&mut self, version: u32, options: u16) -> io::Result<()> {
        let header = libxc::ImageHeader {
            version,
            options: libxc::ImageOptions(options),
            ..libxc::ImageHeader::default()
        };
        self.writer.image_header(&header).map_err(into_io)
    }

    fn domain_header(
        &mut self,
        domain_type: DomainType,
        page_shift: u16,
        xen_major: u32,
        xen_minor: u32,
    ) -> io::Result<()> {
        let header = libxc::DomainHeader {
            r#type: domain_type,
            page_shift,
            reserved: 0,
            xen_major,
            xen_minor,
        };
        self.writer.domain_header(&header).map_err(into_io)
    }

    fn page_data(&mut self, pfn_and_type: &[u64], pages: &[u8]) -> io::Result<()> {
        self.entries.clear();
        for entry in pfn_and_type {
            self.entries.extend_from_slice(&entry.to_le_bytes());
        }
        let record = libxc::Record::PageData(libxc::PageData {
            reserved: 0,
            entries: Array::Encoded {
                bytes: &self.entries,
                endian: Endian::Little,
            },
            pages,
        });
        self.writer.libxc(&record).map_err(into_io)
    }

    fn x86_pv_info(&mut self, guest_width: u8, pt_levels: u8) -> io::Result<()> {
        self.libxc(&libxc::Record::X86PvInfo(libxc::X86PvInfo {
            guest_width,
            pt_levels,
            ..Default::default()
        }))
    }

    fn x86_pv_p2m_frames(
        &mut self,
        p2m_start_pfn: u32,
        p2m_end_pfn: u32,
        frame_pfns: &[u64],
    ) -> io::Result<()> {
        self.libxc(&libxc::Record::X86PvP2mFrames(libxc::X86PvP2mFrames {
            p2m_start_pfn,
            p2m_end_pfn,
            frame_pfns: Array::Values(frame_pfns),
        }))
    }

    fn x86_pv_vcpu_basic(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()> {
        self.libxc(&libxc::Record::X86PvVcpuBasic(libxc::X86PvVcpuBasic {
            vcpu_id,
            reserved: 0,
            context,
        }))
    }

    fn x86_pv_vcpu_extended(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()> {
        self.libxc(&libxc::Record::X86PvVcpuExtended(
            libxc::X86PvVcpuExtended {
                vcpu_id,
                reserved: 0,
                context,
            },
        ))
    }

    fn x86_pv_vcpu_xsave(&mut self, vcpu_id: u32, context: &[u8]) -> io::Result<()> {
        self.libxc(&libxc::Record::X86PvVcpuXsave(libxc::X86PvVcpuXsave {
            vcpu_id,
            reserved: 0,
            context,
        }))
    }

    fn shared_info(&mut self, page: &[u8]) -> io::Result<()> {
        self.libxc(&libxc::Record::SharedInfo(libxc::SharedInfo {
            shared_info: page,
        }))
    }

    fn x86_tsc_info(&mut self, mode: u32, khz: u32, nsec: u64, incarnation: u32) -> io::Result<()> {
        self.libxc(&libxc::Record::X86TscInfo(libxc::X86TscInfo {
            mode,
            khz,
            nsec,
            incarnation,
            ..Default::default()
        }))
    }

    fn hvm_context(&mut self, context: &[u8]) -> io::Result<()> {
        self.libxc(&libxc::Record::HvmContext(libxc::HvmContext { context }))
    }

    fn hvm_params(&mut self, params: &[(u64, u64)]) -> io::Result<()> {
        self.params.clear();
        self.params
            .extend(params.iter().map(|&(index, value)| libxc::HvmParam {
                index: libxc::HvmParamIndex(index),
                value,
            }));
        let record = libxc::Record::HvmParams(libxc::HvmParams {
            reserved: 0,
            params: Array::Values(&self.params),
        });
        self.writer.libxc(&record).map_err(into_io)
    }

    fn static_data_end(&mut self) -> io::Result<()> {
        self.libxc(&libxc::Record::StaticDataEnd(libxc::StaticDataEnd {}))
    }

    fn end(&mut self) -> io::Result<()> {
        self.libxc(&libxc::Record::End(libxc::End {}))
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.raw(bytes).map_err(into_io)
    }
}
