//! Streaming reader for the legacy libxc save format (Xen <= 4.5, x86 PV and HVM).
//!
//! The legacy format has no magic and no version: the toolstack width, the guest type and the
//! presence of an xl header are either given by the caller or detected from the first octets
//! (format reference section 1). The reader pulls one item at a time from any [`Read`], keeps
//! its memory bounded by the caps below, and reports every failure with the byte offset of the
//! field that was wrong.

use std::fmt;
use std::io::{self, Read};

use crate::wire::{BlobKind, DecodeError, Element, Endian, Value, Visitor, Walk};

use crate::{libxc, xl};

/// The 32-byte magic at the start of an xl save file.
pub const XL_MAGIC: &[u8; 32] = &xl::XL_MAGIC;
/// Size of the fixed part of an xl save-file header (magic and four u32 fields).
pub const XL_HEADER_SIZE: usize = xl::XlHeader::SIZE;
/// The xl header's byte-order marker, as written by a little-endian host.
pub const XL_BYTEORDER: u32 = xl::XL_BYTEORDER;
/// xl mandatory flag: the config is JSON.
pub const XL_MANDATORY_FLAG_JSON: u32 = xl::XlMandatoryFlags::JSON.0;
/// xl mandatory flag: the body is a libxl v2 stream.
pub const XL_MANDATORY_FLAG_STREAMV2: u32 = xl::XlMandatoryFlags::STREAMV2.0;

// The caps this reader enforces (see [`crate::limits`] for the Xen figure of each).
use crate::limits::{
    LEGACY_MAX_BATCH_SIZE as MAX_BATCH_SIZE,
    LEGACY_MAX_HVM_CONTEXT_LENGTH as MAX_HVM_CONTEXT_LENGTH, LEGACY_MAX_P2M_SIZE as MAX_P2M_SIZE,
    LEGACY_MAX_QEMU_RECORD_LENGTH as MAX_QEMU_RECORD_LENGTH,
    LEGACY_MAX_TOOLSTACK_LENGTH as MAX_TOOLSTACK_LENGTH,
    LEGACY_MAX_UNMAPPED_PFNS as MAX_UNMAPPED_PFNS, LEGACY_MAX_VCPU_ID as MAX_VCPU_ID,
    LEGACY_MAX_XSAVE_SIZE as MAX_XSAVE_SIZE, PAGE_SIZE, XL_OPTIONAL_DATA_MAX,
};
/// vcpu_guest_context size of a 32-bit (3-level) PV guest.
pub const VCPU_CONTEXT_SIZE_X86_32: u32 = libxc::X86_32_VCPU_CONTEXT_SIZE;
/// vcpu_guest_context size of a 64-bit (4-level) PV guest.
pub const VCPU_CONTEXT_SIZE_X86_64: u32 = libxc::X86_64_VCPU_CONTEXT_SIZE;
/// Size of the extended vcpu context that follows each vcpu when "extv" is present.
pub const EXTENDED_VCPU_CONTEXT_SIZE: usize = legacy::EXTENDED_VCPU_CONTEXT_SIZE as usize;
/// Length of a qemu trailer signature.
pub const QEMU_SIGNATURE_SIZE: usize = legacy::QEMU_SIGNATURE_LIBXL.len();

/// Type nibble mask of a legacy pfn_type entry (bits 28-31).
pub const LEGACY_TYPE_MASK: u64 = legacy::PFN_TYPE_MASK as u64;
/// Where the type nibble starts in a page batch entry (the spec's mask's lowest bit).
pub const LEGACY_TYPE_SHIFT: u32 = legacy::PFN_TYPE_MASK.trailing_zeros();
/// pfn mask of a legacy pfn_type entry (bits 0-27).
pub const LEGACY_PFN_MASK: u64 = legacy::PFN_MASK as u64;
/// Entries whose type is below this (BROKEN) carry a page of data.
pub const LEGACY_TYPE_BROKEN: u64 = legacy::PFN_TYPE_BROKEN as u64;
/// A bare XTAB entry (pfn 0) that the old saver wrote when mapping failed.
pub const LEGACY_BARE_XTAB: u64 = legacy::PFN_TYPE_XTAB as u64;

/// Largest single read buffer the reader grows at once.
const READ_STEP: usize = 1 << 20;
/// How many bytes the reader can look ahead for detection.
const LOOKAHEAD: usize = 64;

/// Whether a legacy pfn_type entry is followed by a page of data.
pub fn legacy_entry_has_data(entry: u64) -> bool {
    (entry & LEGACY_TYPE_MASK) < LEGACY_TYPE_BROKEN
}

/// Errors from reading a legacy stream. Every variant carries the byte offset into the input.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// The input ended inside an item.
    #[error("offset {offset:#x}: legacy stream truncated in {what}: needed {needed} bytes, got {got} (end of input at offset {end:#x})", end = offset + got)]
    Truncated {
        /// Where the item that could not be read starts.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes the item needs.
        needed: u64,
        /// Bytes read before the end of the input.
        got: u64,
    },
    /// The input breaks a rule of the legacy format or of the converter.
    #[error("offset {offset:#x}: {message}")]
    Malformed {
        /// Where the offending field starts.
        offset: u64,
        /// What was wrong, with the values seen.
        message: String,
    },
    /// The input uses a legacy feature the converter does not handle (tmem, compression, an
    /// unknown qemu signature). The reference converter exits with 2 ("todo") on these.
    #[error("offset {offset:#x}: unsupported: {message}")]
    Unsupported {
        /// Where the unsupported item starts.
        offset: u64,
        /// What is unsupported.
        message: String,
    },
    /// Reading from the input failed.
    #[error("offset {offset:#x}: read error: {source}")]
    Io {
        /// How far the input had been read.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl LegacyError {
    /// The byte offset the error refers to.
    pub fn offset(&self) -> u64 {
        match self {
            LegacyError::Truncated { offset, .. }
            | LegacyError::Malformed { offset, .. }
            | LegacyError::Unsupported { offset, .. }
            | LegacyError::Io { offset, .. } => *offset,
        }
    }

    /// What went wrong, in a word: `truncated`, `malformed`, `unsupported` or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            LegacyError::Truncated { .. } => "truncated",
            LegacyError::Malformed { .. } => "malformed",
            LegacyError::Unsupported { .. } => "unsupported",
            LegacyError::Io { .. } => "io",
        }
    }

    /// The reference converter's exit status: 2 for unsupported features, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            LegacyError::Unsupported { .. } => 2,
            _ => 1,
        }
    }

    pub(crate) fn malformed(offset: u64, message: impl Into<String>) -> Self {
        LegacyError::Malformed {
            offset,
            message: message.into(),
        }
    }

    fn unsupported(offset: u64, message: impl Into<String>) -> Self {
        LegacyError::Unsupported {
            offset,
            message: message.into(),
        }
    }
}

/// The saving toolstack's `unsigned long` width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 32-bit toolstack: `ulong` is 4 bytes.
    Bits32,
    /// 64-bit toolstack: `ulong` is 8 bytes.
    Bits64,
}

impl Width {
    /// Size of a `ulong` in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Width::Bits32 => 4,
            Width::Bits64 => 8,
        }
    }
}

impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Width::Bits32 => "32",
            Width::Bits64 => "64",
        })
    }
}

/// The kind of guest the stream saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestType {
    /// x86 PV.
    Pv,
    /// x86 HVM.
    Hvm,
}

impl fmt::Display for GuestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestType::Pv => "pv",
            GuestType::Hvm => "hvm",
        })
    }
}

/// The fixed fields of an xl save-file header (after the magic), in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XlHeader {
    /// Byte-order marker, 0x01020304.
    pub byteorder: u32,
    /// Mandatory flags: bit 0 JSON, bit 1 STREAMv2.
    pub mandatory_flags: u32,
    /// Optional flags; none are defined.
    pub optional_flags: u32,
    /// Length of the optional data that follows the header.
    pub optional_data_len: u32,
}

// The chunk ids and chunk bodies: generated from `spec/legacy.yaml` in xenmig-core, with the
// other formats.
use xenmig_core::legacy;

/// Legacy chunk ids, from `spec/legacy.yaml`: the page batch (every positive id), the end of
/// the chunk loop (0) and the metadata chunks (negative ids).
pub use self::legacy::ChunkId;

// The spec's figures are the caps' Xen figures.
const _: () = assert!(legacy::MAX_BATCH_SIZE == MAX_BATCH_SIZE);
const _: () = assert!(legacy::ChunkId::PAGE_BATCH_MAX_ID as u32 == MAX_BATCH_SIZE);
const _: () = assert!(legacy::MAX_VCPU_ID == MAX_VCPU_ID);
const _: () = assert!(legacy::PAGE_SIZE as usize == PAGE_SIZE);
const _: () = assert!(legacy::PHYSMAP_ENTRY_SIZE_64 as usize >= legacy::PhysmapEntry::SIZE);

/// Whether a chunk carries one HVM parameter (its body is the spec's `hvm_param`).
pub fn is_hvm_param(chunk: ChunkId) -> bool {
    chunk.body_struct() == Some(legacy::HvmParam::NAME)
}

/// What the PV extended-info block says about the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvExtendedInfo {
    /// Guest width in bytes (4 or 8), from the size of the "vcpu" block.
    pub guest_width: u8,
    /// Page-table levels (3 or 4).
    pub pt_levels: u8,
    /// Size of each vcpu context in the tail (the "vcpu" block size).
    pub vcpu_context_size: u32,
    /// Whether each tail vcpu carries 128 bytes of extended context ("extv").
    pub extended: bool,
    /// The "xcnt" value (xsave buffer size + 16), 0 when there is no xsave state.
    pub xsave_size: u32,
}

/// The set of vcpus from a VCPU_INFO chunk (ids below [`libxc::MAX_VCPUS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuMap {
    words: [u64; VCPU_MAP_WORDS],
}

/// Words of a [`VcpuMap`]: one bit per possible vcpu id.
const VCPU_MAP_WORDS: usize = libxc::MAX_VCPUS as usize / 64;

impl VcpuMap {
    fn empty() -> Self {
        VcpuMap {
            words: [0; VCPU_MAP_WORDS],
        }
    }

    /// Whether vcpu `id` is in the map.
    pub fn contains(&self, id: u32) -> bool {
        self.words
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    /// The first vcpu id in the map that is `>= from`.
    pub fn next_from(&self, from: u32) -> Option<u32> {
        (from..libxc::MAX_VCPUS).find(|&id| self.contains(id))
    }

    /// The vcpu ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..libxc::MAX_VCPUS).filter(move |&id| self.contains(id))
    }

    /// How many vcpus the map holds.
    pub fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }
}

/// The kind of qemu trailer after an HVM tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuRecordKind {
    /// libxl's "DeviceModelRecord0002": u32 length + data.
    DeviceModelRecord0002,
    /// libxl Remus's "RemusDeviceModelState": u32 length + data.
    RemusDeviceModelState,
    /// xend's "QemuDeviceModelRecord": data to the end of the input.
    QemuDeviceModelRecord,
}

impl QemuRecordKind {
    /// The 21-byte signature.
    pub fn signature(self) -> &'static [u8; QEMU_SIGNATURE_SIZE] {
        match self {
            QemuRecordKind::DeviceModelRecord0002 => &legacy::QEMU_SIGNATURE_LIBXL,
            QemuRecordKind::RemusDeviceModelState => &legacy::QEMU_SIGNATURE_REMUS,
            QemuRecordKind::QemuDeviceModelRecord => &legacy::QEMU_SIGNATURE_XEND,
        }
    }
}

/// One item of a legacy stream, borrowing the reader's reused buffers.
#[derive(Debug)]
pub enum Record<'a> {
    /// The xl save-file header and its optional data, as read.
    XlHeader {
        /// The fixed fields.
        header: XlHeader,
        /// The optional data (the domain config).
        optional_data: &'a [u8],
    },
    /// The legacy header: `p2m_size`, with the width and guest type in use.
    Header {
        /// Number of pfns in the guest's p2m.
        p2m_size: u64,
        /// Toolstack width, given or detected.
        width: Width,
        /// Guest type, given or detected.
        guest_type: GuestType,
    },
    /// PV: the extended-info block, once it has been read whole.
    PvExtendedInfo(PvExtendedInfo),
    /// PV: the p2m frame list, widened to u64.
    PvP2mFrameList {
        /// pfns of the p2m leaf frames.
        frames: &'a [u64],
    },
    /// A page batch.
    PageBatch {
        /// Legacy pfn_type entries, widened to u64 and unfiltered.
        entries: &'a [u64],
        /// One page per entry that carries data, in entry order.
        pages: &'a [u8],
    },
    /// ENABLE_VERIFY_MODE: another full pass of pages follows.
    EnableVerifyMode,
    /// VCPU_INFO.
    VcpuInfo {
        /// Highest vcpu id (<= 4095).
        max_vcpu_id: u32,
        /// The vcpus whose state the tail carries.
        vcpus: &'a VcpuMap,
    },
    /// An HVM parameter chunk (`u32 pad, u64 value`).
    HvmParam {
        /// Which chunk.
        chunk: ChunkId,
        /// The parameter's value.
        value: u64,
    },
    /// TSC_INFO.
    TscInfo {
        /// TSC mode.
        mode: u32,
        /// Elapsed nanoseconds.
        nsec: u64,
        /// TSC frequency in kHz.
        khz: u32,
        /// TSC incarnation.
        incarnation: u32,
    },
    /// LAST_CHECKPOINT.
    LastCheckpoint,
    /// TOOLSTACK: the opaque blob (libxl writes a physmap table, see [`parse_toolstack_physmap`]).
    Toolstack {
        /// The blob (may be empty).
        blob: &'a [u8],
    },
    /// The `int 0` that ends the chunk loop.
    EndOfChunks,
    /// PV tail: one vcpu from the vcpu map, in ascending id order.
    PvVcpu {
        /// The vcpu's id.
        vcpu_id: u32,
        /// vcpu_guest_context.
        basic: &'a [u8],
        /// 128 bytes of extended context, when the stream has "extv".
        extended: Option<&'a [u8]>,
        /// `(mask, buffer)` when the stream carries xsave state ("xcnt").
        xsave: Option<(u64, &'a [u8])>,
    },
    /// PV tail: the shared info page. The last item of a PV stream.
    SharedInfo {
        /// [`PAGE_SIZE`] bytes.
        page: &'a [u8],
    },
    /// HVM tail: the magic pfns.
    HvmMagicPfns {
        /// HVM_PARAM_IOREQ_PFN.
        ioreq_pfn: u64,
        /// HVM_PARAM_BUFIOREQ_PFN.
        bufioreq_pfn: u64,
        /// HVM_PARAM_STORE_PFN.
        store_pfn: u64,
    },
    /// HVM tail: the HVM context blob (non-empty).
    HvmContext {
        /// The hypervisor's HVM save records.
        blob: &'a [u8],
    },
    /// The start of the qemu trailer.
    QemuHeader {
        /// Which signature.
        kind: QemuRecordKind,
        /// The signature and (except for xend) the u32 length field, as read.
        raw: &'a [u8],
        /// The announced length; `None` for xend's read-to-end record.
        length: Option<u32>,
    },
    /// A piece of the qemu trailer's data (at most 1 MiB).
    QemuData {
        /// The bytes.
        data: &'a [u8],
    },
}

/// One item of a legacy stream as `spec/legacy.yaml` (or `spec/xl.yaml`) describes it: a
/// chunk, a part, or one of the structs the stream's unframed areas are made of, decoded by
/// the generated decoder. [`LegacyReader::next_item`] hands these out; each walks its fields
/// ([`Walk`]), so that a listing needs no code of its own per chunk.
#[derive(Debug)]
pub struct Item<'a> {
    /// Where the item starts in the input.
    pub offset: u64,
    /// Octets of input the item took (for a chunk: its id, its body and, for a page batch,
    /// its pages).
    pub length: u64,
    /// The decoded value.
    pub value: Decoded<'a>,
    /// The pages that follow a page batch's entries (empty for every other item).
    pub pages: &'a [u8],
}

/// The generated value of an [`Item`].
#[derive(Debug)]
pub enum Decoded<'a> {
    /// The xl save-file header, with its optional data when that decodes.
    XlHeader(XlHeaderItem<'a>),
    /// A chunk: its id and its body.
    Chunk {
        /// The signed id that announced it.
        id: i32,
        /// The body.
        body: legacy::ChunkBody<'a>,
    },
    /// HEADER.
    Header(legacy::Header),
    /// PV_EXT_INFO.
    PvExtInfo(legacy::PvExtInfo),
    /// The header of one block of the PV extended-info area.
    ExtInfoBlock(legacy::ExtInfoBlock),
    /// The start of an `xcnt` block's data.
    XcntData(legacy::XcntData),
    /// P2M_FRAME_LIST.
    P2mFrameList(legacy::P2mFrameList<'a>),
    /// PV_UNMAPPED, its frames held.
    PvUnmapped(legacy::PvUnmapped<'a>),
    /// PV_VCPU.
    PvVcpu(legacy::PvVcpu<'a>),
    /// PV_XSAVE.
    PvXsave(legacy::PvXsave<'a>),
    /// SHARED_INFO.
    SharedInfo(legacy::SharedInfo<'a>),
    /// The three special frames that open an HVM tail.
    HvmMagicPfns(legacy::HvmMagicPfns),
    /// HVM_CONTEXT.
    HvmContext(legacy::HvmContext<'a>),
    /// QEMU_SIGNATURE.
    QemuSignature(legacy::QemuSignature),
    /// QEMU_RECORD, when its data is empty.
    QemuRecord(legacy::QemuRecord<'a>),
    /// A part whose last array is too long to hold (PV_UNMAPPED) or arrives in pieces
    /// (QEMU_RECORD): what is known of it before that array.
    Streamed(Streamed),
    /// A piece of such an array (the device model's state), as read.
    Piece(Piece<'a>),
}

impl Decoded<'_> {
    /// The value as something to walk.
    pub fn as_walk(&self) -> &dyn Walk {
        match self {
            Decoded::XlHeader(x) => x,
            Decoded::Chunk { body, .. } => body,
            Decoded::Header(x) => x,
            Decoded::PvExtInfo(x) => x,
            Decoded::ExtInfoBlock(x) => x,
            Decoded::XcntData(x) => x,
            Decoded::P2mFrameList(x) => x,
            Decoded::PvUnmapped(x) => x,
            Decoded::PvVcpu(x) => x,
            Decoded::PvXsave(x) => x,
            Decoded::SharedInfo(x) => x,
            Decoded::HvmMagicPfns(x) => x,
            Decoded::HvmContext(x) => x,
            Decoded::QemuSignature(x) => x,
            Decoded::QemuRecord(x) => x,
            Decoded::Streamed(x) => x,
            Decoded::Piece(x) => x,
        }
    }
}

impl Item<'_> {
    /// The spec's name for the item (`PAGE_BATCH`, `PV_VCPU`, `ext_info_block`, ...).
    pub fn name(&self) -> &'static str {
        self.value.as_walk().item_name()
    }

    /// The chunk id, for a chunk.
    pub fn chunk_id(&self) -> Option<i32> {
        match self.value {
            Decoded::Chunk { id, .. } => Some(id),
            _ => None,
        }
    }

    /// For a page batch, each entry that carries a page, as a v2 page entry (frame number
    /// and type), with its page; nothing for other items.
    pub fn pages(&self) -> impl Iterator<Item = (libxc::PageEntry, &[u8])> + '_ {
        let entries = match &self.value {
            Decoded::Chunk {
                body: legacy::ChunkBody::PageBatch(batch),
                ..
            } => Some(batch.pfn_types),
            _ => None,
        };
        entries
            .into_iter()
            .flat_map(|words| words.iter())
            .filter(|&e| legacy_entry_has_data(e))
            .map(|e| libxc::PageEntry(crate::legacy_entry_to_v2(e)))
            .zip(self.pages.chunks_exact(PAGE_SIZE))
    }
}

/// The xl header with its optional data, walked one after the other.
#[derive(Debug)]
pub struct XlHeaderItem<'a> {
    /// The fixed fields.
    pub header: xl::XlHeader,
    /// The optional data, when it decodes (leniently: the reader has checked what a legacy
    /// body needs).
    pub optional_data: Option<xl::XlOptionalData<'a>>,
}

impl Walk for XlHeaderItem<'_> {
    fn item_name(&self) -> &'static str {
        self.header.item_name()
    }

    fn walk(&self, v: &mut dyn Visitor) {
        self.header.walk(v);
        if let Some(d) = &self.optional_data {
            d.walk(v);
        }
    }
}

/// A part whose last array the reader does not hold: its name, and that array's size.
#[derive(Clone, Copy, Debug)]
pub struct Streamed {
    /// The part.
    pub name: &'static str,
    /// The array: its name, element count and element size.
    pub array: legacy::Counted,
}

impl Walk for Streamed {
    fn item_name(&self) -> &'static str {
        self.name
    }

    fn walk(&self, v: &mut dyn Visitor) {
        let a = &self.array;
        let text = match a.size {
            1 => format!("{} octets, not held", a.count),
            size => format!("{} elements of {size} octets, not held", a.count),
        };
        v.scalar(a.array, Value::Text(&text), false);
    }
}

/// Octets of an array read in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    /// The array, as `PART.field`.
    pub field: &'static str,
    /// The octets.
    pub data: &'a [u8],
}

impl Walk for Piece<'_> {
    fn item_name(&self) -> &'static str {
        self.field
    }

    fn walk(&self, v: &mut dyn Visitor) {
        v.blob("data", self.data, BlobKind::Opaque, None);
    }
}

/// What a step of the reader read, for [`LegacyReader::next_item`]: where, and which item
/// (the octets are in the reader's buffers, or copied here when they are few).
#[derive(Clone, Copy, Debug)]
struct Seen {
    at: u64,
    end: u64,
    what: What,
}

#[derive(Clone, Copy, Debug)]
enum What {
    XlHeader,
    Header,
    PvExtInfo,
    ExtInfoBlock([u8; legacy::ExtInfoBlock::SIZE]),
    XcntData([u8; legacy::XcntData::SIZE]),
    P2mFrameList,
    Chunk(i32),
    PvUnmapped {
        skipped: Option<legacy::Counted>,
    },
    PvVcpu,
    PvXsave,
    SharedInfo,
    HvmMagicPfns([u8; legacy::HvmMagicPfns::SIZE]),
    HvmContext,
    QemuSignature,
    /// The record's length, and its data's size when the data follows in pieces.
    QemuRecord(Option<legacy::Counted>),
    QemuData(&'static str),
}

/// Most items one step of the reader reads (a PV vCPU and its xsave state; a qemu signature
/// and its record's length).
const SEEN_MAX: usize = 2;

/// The PV extended-info area while its blocks are read, one step each.
#[derive(Clone, Copy, Debug)]
struct ExtBlocks {
    /// Where PV_EXT_INFO starts.
    start: u64,
    total: u32,
    consumed: u32,
    vcpu: Option<u32>,
    extended: bool,
    xsave_size: u32,
}

/// How to read a legacy stream. `None` fields are detected from the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderOptions {
    /// The saving toolstack's width.
    pub width: Option<Width>,
    /// The guest type.
    pub guest_type: Option<GuestType>,
    /// Whether an xl header precedes the legacy stream.
    pub xl_header: Option<bool>,
    /// Whether to read the qemu trailer after an HVM tail.
    pub qemu_trailer: bool,
}

/// Where a [`LegacyReader`] gets its bytes.
///
/// Everything can be read with [`LegacySource::read`]; a source that holds the input in memory
/// (a mapped file, see [`super::MappedFile`]) can also lend the page data of a batch in place,
/// so that it goes from the input to the output without being copied into a buffer first.
pub trait LegacySource {
    /// Reads into `buf`; returns 0 only at the end of the input.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Consumes the next `len` bytes and lends them in place. `Ok(None)` when the source cannot
    /// (nothing is consumed then, and the reader reads the bytes instead); a source must not
    /// lend fewer than `len` bytes.
    fn lend(&mut self, len: usize) -> io::Result<Option<Lent>> {
        let _ = len;
        Ok(None)
    }

    /// The bytes of a [`Lent`] from the last call to [`LegacySource::lend`]; valid until the
    /// source is next used.
    fn lent(&self, lent: Lent) -> &[u8] {
        let _ = lent;
        &[]
    }
}

/// Bytes a [`LegacySource`] lent: a range of the memory it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lent {
    /// Where the bytes start, in the source's own terms.
    pub start: usize,
    /// How many bytes.
    pub len: usize,
}

/// A [`LegacySource`] over any [`Read`]: every byte is copied out of it.
pub struct Copying<R>(pub R);

impl<R: Read> LegacySource for Copying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Where the bytes of an item are: in one of the reader's buffers, or lent by the source.
#[derive(Clone, Copy, Debug)]
enum Bytes {
    Copied,
    Lent(Lent),
}

/// How to read an array whose count an item's decoder has just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Take {
    /// All the elements, then go on decoding.
    Whole,
    /// One element at a time (a cut is reported at the element it falls in).
    Each,
    /// None: the caller reads or skips the array itself.
    Stop,
}

/// How reading an item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemEnd {
    /// The item is read whole.
    Done,
    /// Before an array the caller takes on: `octets` of `field` come next in the input.
    Array { octets: u64, field: &'static str },
}

/// Byte source with offset tracking and a small look-ahead for detection.
struct Input<R> {
    inner: R,
    offset: u64,
    lookahead: [u8; LOOKAHEAD],
    lookahead_start: usize,
    lookahead_end: usize,
}

impl<R: LegacySource> Input<R> {
    fn new(inner: R) -> Self {
        Input {
            inner,
            offset: 0,
            lookahead: [0; LOOKAHEAD],
            lookahead_start: 0,
            lookahead_end: 0,
        }
    }

    /// One read, from the look-ahead first; does not move `offset`.
    fn pull(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.lookahead_start < self.lookahead_end {
            let n = buf.len().min(self.lookahead_end - self.lookahead_start);
            let from = &self.lookahead[self.lookahead_start..self.lookahead_start + n];
            buf[..n].copy_from_slice(from);
            self.lookahead_start += n;
            return Ok(n);
        }
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Up to `n` (<= 64) bytes ahead without consuming them; fewer only at the end of input.
    fn peek(&mut self, n: usize) -> Result<&[u8], LegacyError> {
        let n = n.min(LOOKAHEAD);
        if self.lookahead_start > 0 {
            self.lookahead
                .copy_within(self.lookahead_start..self.lookahead_end, 0);
            self.lookahead_end -= self.lookahead_start;
            self.lookahead_start = 0;
        }
        while self.lookahead_end < n {
            match self.inner.read(&mut self.lookahead[self.lookahead_end..n]) {
                Ok(0) => break,
                Ok(k) => self.lookahead_end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LegacyError::Io {
                        offset: self.offset + self.lookahead_end as u64,
                        source,
                    })
                }
            }
        }
        Ok(&self.lookahead[..self.lookahead_end])
    }

    /// Fill `buf` completely; `item_start` and `already` describe the enclosing item for errors.
    fn fill(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
        item_start: u64,
        needed: u64,
    ) -> Result<(), LegacyError> {
        let mut got = 0;
        while got < buf.len() {
            match self.pull(&mut buf[got..]) {
                Ok(0) => {
                    return Err(LegacyError::Truncated {
                        offset: item_start,
                        what,
                        needed,
                        got: self.offset - item_start,
                    })
                }
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(source) => {
                    return Err(LegacyError::Io {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), LegacyError> {
        let start = self.offset;
        self.fill(buf, what, start, buf.len() as u64)
    }

    /// Read a fixed-size struct of `spec/legacy.yaml` field by field: `fields` gives where
    /// each field ends and what to call it, so that a cut reports the field it falls in.
    fn read_fields<const N: usize>(
        &mut self,
        fields: &[(usize, &'static str)],
    ) -> Result<[u8; N], LegacyError> {
        let mut raw = [0u8; N];
        self.read_fields_into(&mut raw, 0, fields)?;
        Ok(raw)
    }

    /// [`Input::read_fields`] into `raw`, from its octet `from` on.
    fn read_fields_into(
        &mut self,
        raw: &mut [u8],
        from: usize,
        fields: &[(usize, &'static str)],
    ) -> Result<(), LegacyError> {
        let mut at = from;
        for &(end, what) in fields {
            let Some(field) = raw.get_mut(at..end) else {
                return Err(LegacyError::malformed(
                    self.offset,
                    format!("internal: {what} lies outside its struct"),
                ));
            };
            self.read_exact(field, what)?;
            at = end;
        }
        Ok(())
    }

    /// Read an item of `spec/legacy.yaml` (a part or a chunk body) into `buf` field by field,
    /// as its generated decoder asks for the fields; `decode` is that decoder. `take` sees
    /// each array's count before the elements are read, and says how to read them: a cap is
    /// checked there. `error` turns a decoder's refusal into a reader error, given where the
    /// item starts and the octets read so far. Returns where the item starts and how reading
    /// ended.
    fn read_item(
        &mut self,
        buf: &mut Vec<u8>,
        decode: impl Fn(&[u8]) -> Result<legacy::ChunkRead<()>, DecodeError>,
        mut take: impl FnMut(&legacy::Counted, u64) -> Result<Take, LegacyError>,
        error: impl Fn(u64, &[u8], &DecodeError) -> LegacyError,
    ) -> Result<(u64, ItemEnd), LegacyError> {
        let at = self.offset;
        buf.clear();
        loop {
            let (len, field, counted) = match decode(buf) {
                Ok(legacy::ChunkRead::Done { .. }) => return Ok((at, ItemEnd::Done)),
                Ok(legacy::ChunkRead::Need {
                    len,
                    field,
                    counted,
                }) => (len, field, counted),
                Err(e) => return Err(error(at, buf, &e)),
            };
            let mut more = len.saturating_sub(buf.len());
            if let Some(counted) = counted {
                match take(&counted, at)? {
                    Take::Whole => {}
                    Take::Each => more = more.min(counted.size),
                    Take::Stop => {
                        return Ok((
                            at,
                            ItemEnd::Array {
                                octets: counted.count.saturating_mul(counted.size as u64),
                                field,
                            },
                        ))
                    }
                }
            }
            self.read_more(buf, more, field)?;
        }
    }

    /// Read `len` bytes into `out` (whose length becomes `len`), growing it as the data
    /// arrives so that a truncated input never causes a large allocation. Bytes `out` already
    /// holds are overwritten, not zeroed first.
    fn read_vec(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        what: &'static str,
    ) -> Result<(), LegacyError> {
        let start = self.offset;
        let mut done = 0;
        while done < len {
            let step = (len - done).min(READ_STEP);
            if out.len() < done + step {
                out.resize(done + step, 0);
            }
            self.fill(&mut out[done..done + step], what, start, len as u64)?;
            done += step;
        }
        out.truncate(len);
        Ok(())
    }

    /// Append `len` bytes to `out`, growing it as the data arrives (see [`Input::read_vec`]).
    fn read_more(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        what: &'static str,
    ) -> Result<(), LegacyError> {
        let start = self.offset;
        let base = out.len();
        let mut done = 0;
        while done < len {
            let step = (len - done).min(READ_STEP);
            out.resize(base + done + step, 0);
            self.fill(
                &mut out[base + done..base + done + step],
                what,
                start,
                len as u64,
            )?;
            done += step;
        }
        Ok(())
    }

    /// Consume `len` bytes: lent in place by the source when it can, else read into `out` as
    /// [`Input::read_vec`] does.
    fn take(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        what: &'static str,
    ) -> Result<Bytes, LegacyError> {
        if self.lookahead_start == self.lookahead_end {
            let lent = self.inner.lend(len).map_err(|source| LegacyError::Io {
                offset: self.offset,
                source,
            })?;
            if let Some(lent) = lent {
                self.offset += len as u64;
                return Ok(Bytes::Lent(lent));
            }
        }
        self.read_vec(out, len, what)?;
        Ok(Bytes::Copied)
    }

    /// Read and discard `len` bytes.
    fn skip(&mut self, len: u64, what: &'static str) -> Result<(), LegacyError> {
        let start = self.offset;
        let mut scratch = [0u8; 8192];
        let mut remaining = len;
        while remaining > 0 {
            let n = remaining.min(scratch.len() as u64) as usize;
            self.fill(&mut scratch[..n], what, start, len)?;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// Read up to `max` bytes into `out` (cleared first), stopping early only at the end of
    /// the input. Returns the number of bytes read.
    fn read_up_to(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize, LegacyError> {
        out.clear();
        out.resize(max, 0);
        let mut got = 0;
        while got < max {
            match self.pull(&mut out[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(source) => {
                    return Err(LegacyError::Io {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        out.truncate(got);
        Ok(got)
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    XlHeader,
    Header,
    PvExtendedInfo,
    PvExtBlocks(ExtBlocks),
    PvP2mFrames,
    Chunks,
    PvUnmapped,
    PvVcpus {
        next: u32,
    },
    PvSharedInfo,
    HvmMagicPfns,
    HvmContext,
    QemuSignature,
    QemuData {
        remaining: Option<u64>,
        field: &'static str,
    },
    Done,
    Failed,
}

/// What a step produced; the buffers it refers to live in the reader.
enum Step {
    XlHeader(XlHeader),
    Header {
        p2m_size: u64,
        width: Width,
        guest_type: GuestType,
    },
    /// The last block of the extended-info area was read: the area's summary, which starts
    /// at `at`.
    PvExtendedInfo {
        at: u64,
        info: PvExtendedInfo,
    },
    /// An item was read that makes no [`Record`] by itself.
    Quiet,
    PvP2mFrameList,
    PageBatch,
    EnableVerifyMode,
    VcpuInfo {
        max_vcpu_id: u32,
    },
    HvmParam {
        chunk: ChunkId,
        value: u64,
    },
    TscInfo {
        mode: u32,
        nsec: u64,
        khz: u32,
        incarnation: u32,
    },
    LastCheckpoint,
    Toolstack,
    EndOfChunks,
    PvVcpu {
        vcpu_id: u32,
        context_size: usize,
        extended: bool,
        xsave_mask: Option<u64>,
    },
    SharedInfo,
    HvmMagicPfns {
        ioreq_pfn: u64,
        bufioreq_pfn: u64,
        store_pfn: u64,
    },
    HvmContext,
    QemuHeader {
        kind: QemuRecordKind,
        length: Option<u32>,
    },
    QemuData,
}

/// The context the generated chunk decoders get (only `hvm_param` bodies look at it).
fn chunk_ctx() -> crate::wire::DecodeCtx {
    crate::wire::DecodeCtx::new(0)
}

/// Octets after the ext-info marker that guest type detection looks at: PV_EXT_INFO's
/// `total_size` and the first block's id.
const DETECT_AFTER_MARKER: usize = std::mem::size_of::<u32>() + legacy::ExtInfoBlock::SIZE_OFFSET;

/// EXT_INFO_MARKER at a `ulong` of `width` octets.
fn ext_info_marker(width: usize) -> u64 {
    let bits = (width as u32).saturating_mul(u8::BITS);
    legacy::EXT_INFO_MARKER
        .checked_shr(u64::BITS.saturating_sub(bits))
        .unwrap_or(0)
}

/// An extended-info block id as messages show it (`"vcpu"`).
fn ext_info_name(id: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(id))
}

/// Every array of an item is read whole.
fn whole(_: &legacy::Counted, _: u64) -> Result<Take, LegacyError> {
    Ok(Take::Whole)
}

/// A generated decoder's refusal of a part of `spec/legacy.yaml` that starts at `at`, as a
/// reader error at the offending field.
fn part_error(at: u64, _read: &[u8], e: &DecodeError) -> LegacyError {
    LegacyError::malformed(at + e.offset as u64, format!("{}: {}", e.item, e.detail))
}

/// The value of an item [`Input::read_item`] read whole, which starts at `at`.
fn item_value<T>(
    decoded: Result<legacy::ChunkRead<T>, DecodeError>,
    at: u64,
) -> Result<T, LegacyError> {
    match decoded {
        Ok(legacy::ChunkRead::Done { value, .. }) => Ok(value),
        Ok(legacy::ChunkRead::Need { field, .. }) => Err(LegacyError::malformed(
            at,
            format!("internal: {field} not read whole"),
        )),
        Err(e) => Err(part_error(at, &[], &e)),
    }
}

/// A struct of `spec/legacy.yaml` decoded from octets read whole, or an error at `at`.
fn struct_value<T>(
    decoded: Result<T, crate::wire::DecodeError>,
    at: u64,
) -> Result<T, LegacyError> {
    decoded.map_err(|e| LegacyError::malformed(at + e.offset as u64, e.to_string()))
}

/// A chunk body the generated decoder refused, as a reader error at the offending field.
fn chunk_error(
    chunk: ChunkId,
    body_at: u64,
    body: &[u8],
    e: &crate::wire::DecodeError,
) -> LegacyError {
    let offset = body_at + e.offset as u64;
    if chunk == ChunkId::VcpuInfo && e.rule == "max_vcpu_id.max" {
        // The field is a C int: show it signed, as the saver wrote it.
        let at = legacy::VcpuInfo::MAX_VCPU_ID_OFFSET;
        let max = signed_word_at(body, at).unwrap_or(0);
        return LegacyError::malformed(
            offset,
            format!("VCPU_INFO max_vcpu_id {max} out of range 0..={MAX_VCPU_ID}"),
        );
    }
    LegacyError::malformed(offset, format!("{} chunk: {}", chunk.name(), e.detail))
}

/// The C `int` at `at` (a chunk id, a vCPU count), as the little-endian saver wrote it.
fn signed_word_at(bytes: &[u8], at: usize) -> Option<i32> {
    unsigned_word_at(bytes, at).map(|w| w as i32)
}

/// The `u32` at `at`, in the little-endian saver's order.
fn unsigned_word_at(bytes: &[u8], at: usize) -> Option<u32> {
    let size = std::mem::size_of::<u32>();
    let b = bytes.get(at..at.checked_add(size)?)?;
    Some(<u32 as Element>::read(b, Endian::Little))
}

/// Guest type from the octets at the start of the legacy stream (`ahead` holds at least
/// `2 * ulong` bytes, and up to 8 more).
///
/// PV streams continue after `p2m_size` with the ext-info signature `ulong ~0`, `u32 tot_sz`
/// and a block id. An HVM stream whose first chunk is ENABLE_VERIFY_MODE (-1) looks the same on
/// a 32-bit toolstack, so an all-ones word only means PV when a known block id follows it, or
/// when the word after it is no chunk id the spec knows (`ChunkId::from_i32`).
fn detect_guest_type(ahead: &[u8], ulong: usize) -> GuestType {
    let signature = ahead
        .get(ulong..2 * ulong)
        .and_then(|s| legacy::Words::new(s, ulong, Endian::Little).get(0))
        == Some(ext_info_marker(ulong));
    if !signature {
        return GuestType::Hvm;
    }
    let id_at = 2 * ulong + std::mem::size_of::<u32>();
    let block_id = ahead.get(id_at..id_at + legacy::ExtInfoBlock::SIZE_OFFSET);
    let known = [
        &legacy::EXT_INFO_VCPU[..],
        &legacy::EXT_INFO_EXTV[..],
        &legacy::EXT_INFO_XCNT[..],
    ];
    if block_id.is_some_and(|id| known.contains(&id)) {
        return GuestType::Pv;
    }
    let next = signed_word_at(ahead, 2 * ulong);
    match next {
        Some(id) if ChunkId::from_i32(id).is_some() => GuestType::Hvm,
        _ => GuestType::Pv,
    }
}

/// Pull reader for a legacy stream. Call [`LegacyReader::next_record`] until it returns
/// `Ok(None)` (the stream is complete) or an error.
pub struct LegacyReader<S> {
    input: Input<S>,
    options: ReaderOptions,
    state: State,
    width: Width,
    guest_type: GuestType,
    p2m_size: u64,
    pv: Option<PvExtendedInfo>,
    vcpus: Option<VcpuMap>,
    qemu_total: u64,
    words: Vec<u64>,
    data: Vec<u8>,
    /// The body of the chunk being read, as the generated decoder reads it.
    body: Vec<u8>,
    /// Where the page data of the last batch is.
    pages: Bytes,
    /// The xsave header and area of the last PV vCPU.
    xsave: Vec<u8>,
    /// The xl header as read.
    xl_raw: [u8; xl::XlHeader::SIZE],
    /// The items the last step read, and how many [`LegacyReader::next_item`] handed out.
    seen: [Option<Seen>; SEEN_MAX],
    seen_next: usize,
}

impl<R: Read> LegacyReader<Copying<R>> {
    /// A reader over `input`, copying everything out of it.
    pub fn new(input: R, options: ReaderOptions) -> Self {
        LegacyReader::with_source(Copying(input), options)
    }
}

impl<S: LegacySource> LegacyReader<S> {
    /// A reader over `source`, which may lend page data in place.
    pub fn with_source(source: S, options: ReaderOptions) -> Self {
        LegacyReader {
            input: Input::new(source),
            options,
            state: State::XlHeader,
            width: options.width.unwrap_or(Width::Bits64),
            guest_type: options.guest_type.unwrap_or(GuestType::Hvm),
            p2m_size: 0,
            pv: None,
            vcpus: None,
            qemu_total: 0,
            words: Vec::new(),
            data: Vec::new(),
            body: Vec::new(),
            pages: Bytes::Copied,
            xsave: Vec::new(),
            xl_raw: [0; xl::XlHeader::SIZE],
            seen: [None; SEEN_MAX],
            seen_next: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.input.offset
    }

    /// The next item and the offset it starts at, or `None` once the stream is complete.
    pub fn next_record(&mut self) -> Result<Option<(u64, Record<'_>)>, LegacyError> {
        if let State::Failed = self.state {
            return Err(LegacyError::malformed(
                self.input.offset,
                "legacy reader used again after an error",
            ));
        }
        let start = self.input.offset;
        let (offset, step) = loop {
            match self.step() {
                Ok(Some((_, Step::Quiet))) => continue,
                Ok(Some((_, Step::PvExtendedInfo { at, info }))) => {
                    break (at, Step::PvExtendedInfo { at, info })
                }
                Ok(Some(found)) => break found,
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        };
        debug_assert!(offset >= start);
        let record = match step {
            Step::XlHeader(header) => Record::XlHeader {
                header,
                optional_data: &self.data,
            },
            Step::Header {
                p2m_size,
                width,
                guest_type,
            } => Record::Header {
                p2m_size,
                width,
                guest_type,
            },
            Step::PvExtendedInfo { info, .. } => Record::PvExtendedInfo(info),
            Step::Quiet => {
                return Err(LegacyError::malformed(
                    offset,
                    "internal: an item without a record",
                ))
            }
            Step::PvP2mFrameList => Record::PvP2mFrameList {
                frames: &self.words,
            },
            Step::PageBatch => Record::PageBatch {
                entries: &self.words,
                pages: match self.pages {
                    Bytes::Copied => &self.data,
                    Bytes::Lent(lent) => self.input.inner.lent(lent),
                },
            },
            Step::EnableVerifyMode => Record::EnableVerifyMode,
            Step::VcpuInfo { max_vcpu_id } => match &self.vcpus {
                Some(vcpus) => Record::VcpuInfo { max_vcpu_id, vcpus },
                None => return Err(LegacyError::malformed(offset, "internal: vcpu map missing")),
            },
            Step::HvmParam { chunk, value } => Record::HvmParam { chunk, value },
            Step::TscInfo {
                mode,
                nsec,
                khz,
                incarnation,
            } => Record::TscInfo {
                mode,
                nsec,
                khz,
                incarnation,
            },
            Step::LastCheckpoint => Record::LastCheckpoint,
            Step::Toolstack => Record::Toolstack { blob: &self.data },
            Step::EndOfChunks => Record::EndOfChunks,
            Step::PvVcpu {
                vcpu_id,
                context_size,
                extended,
                xsave_mask,
            } => Record::PvVcpu {
                vcpu_id,
                basic: self.data.get(..context_size).unwrap_or_default(),
                extended: extended.then(|| self.data.get(context_size..).unwrap_or_default()),
                xsave: xsave_mask.map(|mask| {
                    let area = self.xsave.get(legacy::PvXsave::AREA_OFFSET..);
                    (mask, area.unwrap_or_default())
                }),
            },
            Step::SharedInfo => Record::SharedInfo { page: &self.data },
            Step::HvmMagicPfns {
                ioreq_pfn,
                bufioreq_pfn,
                store_pfn,
            } => Record::HvmMagicPfns {
                ioreq_pfn,
                bufioreq_pfn,
                store_pfn,
            },
            Step::HvmContext => Record::HvmContext {
                blob: self
                    .data
                    .get(legacy::HvmContext::CONTEXT_OFFSET..)
                    .unwrap_or_default(),
            },
            Step::QemuHeader { kind, length } => Record::QemuHeader {
                kind,
                raw: &self.data,
                length,
            },
            Step::QemuData => Record::QemuData { data: &self.data },
        };
        Ok(Some((offset, record)))
    }

    /// The next item as the spec describes it, decoded by the generated decoders, or `None`
    /// once the stream is complete. Items come in stream order, chunks and parts alike, each
    /// with the offset it starts at; they borrow the reader's buffers, so page data is not
    /// copied for them. Call either this or [`LegacyReader::next_record`] on one reader, not
    /// both: they step through the same input.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, LegacyError> {
        loop {
            if let Some(seen) = self.seen.get(self.seen_next).copied().flatten() {
                self.seen_next += 1;
                return self.item(seen).map(Some);
            }
            if let State::Failed = self.state {
                return Err(LegacyError::malformed(
                    self.input.offset,
                    "legacy reader used again after an error",
                ));
            }
            match self.step() {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
    }

    /// Notes that the step being taken read an item, from `at` to where the input is now.
    fn saw(&mut self, at: u64, what: What) {
        let end = self.input.offset;
        if let Some(slot) = self.seen.iter_mut().find(|s| s.is_none()) {
            *slot = Some(Seen { at, end, what });
        }
    }

    /// An item the last step read, decoded again from the buffers it was read into.
    fn item(&self, seen: Seen) -> Result<Item<'_>, LegacyError> {
        use legacy as l;
        let Seen { at, end, what } = seen;
        let ctx = chunk_ctx();
        let ws = self.width.bytes();
        let mut pages: &[u8] = &[];
        let value = match what {
            What::XlHeader => {
                let lenient = ctx.with_strictness(crate::wire::Strictness::Lenient);
                let header = struct_value(xl::XlHeader::decode(&self.xl_raw, &lenient), at)?;
                let optional_data = match self.data.is_empty() {
                    true => None,
                    false => xl::XlOptionalData::decode(&self.data, &lenient).ok(),
                };
                Decoded::XlHeader(XlHeaderItem {
                    header,
                    optional_data,
                })
            }
            What::Header => {
                Decoded::Header(item_value(l::Header::decode(&self.body, ws, &ctx), at)?)
            }
            What::PvExtInfo => {
                Decoded::PvExtInfo(item_value(l::PvExtInfo::decode(&self.body, ws, &ctx), at)?)
            }
            What::ExtInfoBlock(raw) => {
                Decoded::ExtInfoBlock(struct_value(l::ExtInfoBlock::decode(&raw, &ctx), at)?)
            }
            What::XcntData(raw) => {
                Decoded::XcntData(struct_value(l::XcntData::decode(&raw, &ctx), at)?)
            }
            What::P2mFrameList => {
                let guest_width = self.pv.map_or(8, |pv| u64::from(pv.guest_width));
                let list =
                    l::P2mFrameList::decode(&self.body, ws, self.p2m_size, guest_width, &ctx);
                Decoded::P2mFrameList(item_value(list, at)?)
            }
            What::Chunk(id) => {
                let body = item_value(l::ChunkBody::decode(id, &self.body, ws, &ctx), at)?;
                if let l::ChunkBody::PageBatch(_) = body {
                    pages = match self.pages {
                        Bytes::Copied => &self.data,
                        Bytes::Lent(lent) => self.input.inner.lent(lent),
                    };
                }
                Decoded::Chunk { id, body }
            }
            What::PvUnmapped { skipped: None } => {
                Decoded::PvUnmapped(item_value(l::PvUnmapped::decode(&self.body, ws, &ctx), at)?)
            }
            What::PvUnmapped {
                skipped: Some(array),
            } => Decoded::Streamed(Streamed {
                name: l::PvUnmapped::NAME,
                array,
            }),
            What::PvVcpu => {
                let Some(pv) = self.pv else {
                    return Err(LegacyError::malformed(
                        at,
                        "internal: PV tail without PV state",
                    ));
                };
                let extended = match pv.extended {
                    true => u64::from(l::EXTENDED_VCPU_CONTEXT_SIZE),
                    false => 0,
                };
                let context = u64::from(pv.vcpu_context_size);
                let vcpu = l::PvVcpu::decode(&self.data, ws, context, extended, &ctx);
                Decoded::PvVcpu(item_value(vcpu, at)?)
            }
            What::PvXsave => {
                Decoded::PvXsave(item_value(l::PvXsave::decode(&self.xsave, ws, &ctx), at)?)
            }
            What::SharedInfo => {
                Decoded::SharedInfo(item_value(l::SharedInfo::decode(&self.data, ws, &ctx), at)?)
            }
            What::HvmMagicPfns(raw) => {
                Decoded::HvmMagicPfns(struct_value(l::HvmMagicPfns::decode(&raw, &ctx), at)?)
            }
            What::HvmContext => {
                Decoded::HvmContext(item_value(l::HvmContext::decode(&self.data, ws, &ctx), at)?)
            }
            What::QemuSignature => {
                let raw = self.data.get(..QEMU_SIGNATURE_SIZE).unwrap_or_default();
                Decoded::QemuSignature(item_value(l::QemuSignature::decode(raw, ws, &ctx), at)?)
            }
            What::QemuRecord(None) => {
                Decoded::QemuRecord(item_value(l::QemuRecord::decode(&self.body, ws, &ctx), at)?)
            }
            What::QemuRecord(Some(array)) => Decoded::Streamed(Streamed {
                name: l::QemuRecord::NAME,
                array,
            }),
            What::QemuData(field) => Decoded::Piece(Piece {
                field,
                data: &self.data,
            }),
        };
        Ok(Item {
            offset: at,
            length: end.saturating_sub(at),
            value,
            pages,
        })
    }

    fn step(&mut self) -> Result<Option<(u64, Step)>, LegacyError> {
        self.seen = [None; SEEN_MAX];
        self.seen_next = 0;
        loop {
            let start = self.input.offset;
            let step = match self.state {
                State::XlHeader => match self.read_xl_header()? {
                    Some(step) => step,
                    None => continue,
                },
                State::Header => self.read_header()?,
                State::PvExtendedInfo => self.read_pv_extended_info()?,
                State::PvExtBlocks(blocks) => self.read_ext_info_block(blocks)?,
                State::PvP2mFrames => self.read_pv_p2m_frames()?,
                State::Chunks => self.read_chunk()?,
                State::PvUnmapped => self.read_pv_unmapped()?,
                State::PvVcpus { next } => match self.read_pv_vcpu(next)? {
                    Some(step) => step,
                    None => continue,
                },
                State::PvSharedInfo => self.read_shared_info()?,
                State::HvmMagicPfns => {
                    use legacy::HvmMagicPfns as P;
                    let raw: [u8; P::SIZE] = self.input.read_fields(&[
                        (P::BUFIOREQ_PFN_OFFSET, "hvm_magic_pfns.ioreq_pfn"),
                        (P::STORE_PFN_OFFSET, "hvm_magic_pfns.bufioreq_pfn"),
                        (P::SIZE, "hvm_magic_pfns.store_pfn"),
                    ])?;
                    let pfns = struct_value(P::decode(&raw, &chunk_ctx()), start)?;
                    self.saw(start, What::HvmMagicPfns(raw));
                    self.state = State::HvmContext;
                    Step::HvmMagicPfns {
                        ioreq_pfn: pfns.ioreq_pfn,
                        bufioreq_pfn: pfns.bufioreq_pfn,
                        store_pfn: pfns.store_pfn,
                    }
                }
                State::HvmContext => self.read_hvm_context()?,
                State::QemuSignature => self.read_qemu_signature()?,
                State::QemuData { remaining, field } => {
                    match self.read_qemu_data(remaining, field)? {
                        Some(step) => step,
                        None => return Ok(None),
                    }
                }
                State::Done => return Ok(None),
                State::Failed => {
                    return Err(LegacyError::malformed(
                        start,
                        "legacy reader used again after an error",
                    ))
                }
            };
            return Ok(Some((start, step)));
        }
    }

    /// The xl header, if there is one; `None` moves straight on to the legacy header. The
    /// fields are where `spec/xl.yaml` puts them; the checks are the ones a legacy body needs.
    fn read_xl_header(&mut self) -> Result<Option<Step>, LegacyError> {
        use xl::XlHeader as H;
        self.state = State::Header;
        let start = self.input.offset;
        let present = match self.options.xl_header {
            Some(present) => present,
            None => self.input.peek(XL_MAGIC.len())? == &XL_MAGIC[..],
        };
        if !present {
            return Ok(None);
        }
        let mut raw = [0u8; H::SIZE];
        self.input
            .read_fields_into(&mut raw, 0, &[(H::BYTEORDER_OFFSET, "xl_header.magic")])?;
        let magic = raw.get(H::MAGIC_OFFSET..H::BYTEORDER_OFFSET);
        if magic != Some(&XL_MAGIC[..]) {
            return Err(LegacyError::malformed(
                start,
                format!(
                    "no xl header: expected the xl magic, found {:02x?}",
                    magic.and_then(|m| m.get(..8)).unwrap_or_default()
                ),
            ));
        }
        self.input.read_fields_into(
            &mut raw,
            H::BYTEORDER_OFFSET,
            &[
                (H::MANDATORY_FLAGS_OFFSET, "xl_header.byteorder"),
                (H::OPTIONAL_FLAGS_OFFSET, "xl_header.mandatory_flags"),
                (H::OPTIONAL_DATA_LEN_OFFSET, "xl_header.optional_flags"),
                (H::SIZE, "xl_header.optional_data_len"),
            ],
        )?;
        let word = |at: usize| unsigned_word_at(&raw, at).unwrap_or_default();
        let header = XlHeader {
            byteorder: word(H::BYTEORDER_OFFSET),
            mandatory_flags: word(H::MANDATORY_FLAGS_OFFSET),
            optional_flags: word(H::OPTIONAL_FLAGS_OFFSET),
            optional_data_len: word(H::OPTIONAL_DATA_LEN_OFFSET),
        };
        if header.byteorder != XL_BYTEORDER {
            return Err(LegacyError::malformed(
                start + H::BYTEORDER_OFFSET as u64,
                format!(
                    "xl header byteorder {:#010x}, expected {XL_BYTEORDER:#010x}",
                    header.byteorder
                ),
            ));
        }
        if header.mandatory_flags & XL_MANDATORY_FLAG_STREAMV2 != 0 {
            return Err(LegacyError::malformed(
                start + H::MANDATORY_FLAGS_OFFSET as u64,
                "xl header has STREAMv2 set: the body is already a v2 stream, not a legacy one",
            ));
        }
        let unknown =
            header.mandatory_flags & !(XL_MANDATORY_FLAG_JSON | XL_MANDATORY_FLAG_STREAMV2);
        if unknown != 0 {
            return Err(LegacyError::malformed(
                start + H::MANDATORY_FLAGS_OFFSET as u64,
                format!("xl header has unknown mandatory flags {unknown:#x}"),
            ));
        }
        if header.optional_data_len > XL_OPTIONAL_DATA_MAX {
            return Err(LegacyError::malformed(
                start + H::OPTIONAL_DATA_LEN_OFFSET as u64,
                format!(
                    "xl optional_data_len {:#x} exceeds the cap {XL_OPTIONAL_DATA_MAX:#x}",
                    header.optional_data_len
                ),
            ));
        }
        self.input.read_vec(
            &mut self.data,
            header.optional_data_len as usize,
            "xl optional data",
        )?;
        self.xl_raw = raw;
        self.saw(start, What::XlHeader);
        Ok(Some(Step::XlHeader(header)))
    }

    /// Detect what the caller did not give, then read the spec's HEADER (`p2m_size`).
    fn read_header(&mut self) -> Result<Step, LegacyError> {
        let start = self.input.offset;
        let width = match self.options.width {
            Some(width) => width,
            None => {
                // A 64-bit `p2m_size` below 2^32 has four zero octets after its low half.
                let half = Width::Bits32.bytes();
                let ahead = self.input.peek(2 * half)?;
                match ahead.get(half..2 * half) {
                    Some([0, 0, 0, 0]) => Width::Bits64,
                    Some(_) => Width::Bits32,
                    None => {
                        return Err(LegacyError::Truncated {
                            offset: start,
                            what: "legacy header (toolstack width detection)",
                            needed: 2 * half as u64,
                            got: ahead.len() as u64,
                        })
                    }
                }
            }
        };
        let size = width.bytes();
        let guest_type = match self.options.guest_type {
            Some(guest_type) => guest_type,
            None => {
                let ahead = self.input.peek(2 * size + DETECT_AFTER_MARKER)?;
                if ahead.len() < 2 * size {
                    return Err(LegacyError::Truncated {
                        offset: start,
                        what: "legacy header (guest type detection)",
                        needed: 2 * size as u64,
                        got: ahead.len() as u64,
                    });
                }
                detect_guest_type(ahead, size)
            }
        };
        self.width = width;
        self.guest_type = guest_type;
        let ctx = chunk_ctx();
        let (at, _) = self.input.read_item(
            &mut self.body,
            |b| legacy::Header::decode(b, size, &ctx).map(|r| r.map(drop)),
            whole,
            part_error,
        )?;
        let legacy::Header { p2m_size } =
            item_value(legacy::Header::decode(&self.body, size, &ctx), at)?;
        if p2m_size > MAX_P2M_SIZE {
            return Err(LegacyError::malformed(
                start,
                format!(
                    "p2m_size {p2m_size:#x} exceeds the legacy maximum {MAX_P2M_SIZE:#x} \
                     (wrong toolstack width {width}?)"
                ),
            ));
        }
        if guest_type == GuestType::Pv && p2m_size == 0 {
            return Err(LegacyError::malformed(
                start,
                "p2m_size is 0 in a PV stream",
            ));
        }
        self.p2m_size = p2m_size;
        self.saw(at, What::Header);
        self.state = match guest_type {
            GuestType::Pv => State::PvExtendedInfo,
            GuestType::Hvm => State::Chunks,
        };
        Ok(Step::Header {
            p2m_size,
            width,
            guest_type,
        })
    }

    fn read_pv_extended_info(&mut self) -> Result<Step, LegacyError> {
        use legacy::PvExtInfo as P;
        let ws = self.width.bytes();
        let ctx = chunk_ctx();
        let (start, _) = self.input.read_item(
            &mut self.body,
            |b| P::decode(b, ws, &ctx).map(|r| r.map(drop)),
            whole,
            part_error,
        )?;
        let P {
            marker,
            total_size: total,
        } = item_value(P::decode(&self.body, ws, &ctx), start)?;
        let expected = ext_info_marker(ws);
        if marker != expected {
            return Err(LegacyError::malformed(
                start,
                format!(
                    "PV extended-info signature {marker:#x}, expected {expected:#x} \
                     (not a PV stream, or wrong toolstack width {})",
                    self.width
                ),
            ));
        }
        self.saw(start, What::PvExtInfo);
        self.ext_blocks_read(ExtBlocks {
            start,
            total,
            consumed: 0,
            vcpu: None,
            extended: false,
            xsave_size: 0,
        })
    }

    /// One block of the PV extended-info area (see [`LegacyReader::read_pv_extended_info`]).
    fn read_ext_info_block(&mut self, mut blocks: ExtBlocks) -> Result<Step, LegacyError> {
        use legacy::{ExtInfoBlock as B, XcntData as X};
        let ctx = chunk_ctx();
        let ExtBlocks {
            start,
            total,
            consumed,
            ..
        } = blocks;
        // `total_size` follows the marker, a `ulong`.
        let total_at = start + self.width.bytes() as u64;
        let vcpu_id = ext_info_name(&legacy::EXT_INFO_VCPU);
        let xcnt_id = ext_info_name(&legacy::EXT_INFO_XCNT);
        let block_at = self.input.offset;
        let left = total - consumed;
        if left < B::SIZE as u32 {
            return Err(LegacyError::malformed(
                block_at,
                format!(
                    "PV extended-info: {left} bytes left of total size {total:#x} (at {total_at:#x}), \
                     too few for a block header"
                ),
            ));
        }
        let raw: [u8; B::SIZE] = self.input.read_fields(&[
            (B::SIZE_OFFSET, "ext_info_block.id"),
            (B::SIZE, "ext_info_block.size"),
        ])?;
        let B { id, size } = struct_value(B::decode(&raw, &ctx), block_at)?;
        let left = left - B::SIZE as u32;
        if size > left {
            return Err(LegacyError::malformed(
                block_at,
                format!(
                    "PV extended-info block {:?} of size {size:#x} overruns the total size {total:#x} \
                     ({left:#x} bytes left)",
                    String::from_utf8_lossy(&id)
                ),
            ));
        }
        // Each item takes the octets up to the next: a block the data it carries, the
        // `xcnt` value what is left of its block.
        let block = What::ExtInfoBlock(raw);
        match id {
            legacy::EXT_INFO_VCPU => {
                if blocks.vcpu.is_some() {
                    return Err(LegacyError::malformed(
                        block_at,
                        format!("PV extended-info has a second {vcpu_id} block"),
                    ));
                }
                if size != VCPU_CONTEXT_SIZE_X86_32 && size != VCPU_CONTEXT_SIZE_X86_64 {
                    return Err(LegacyError::malformed(
                        block_at,
                        format!(
                            "{vcpu_id} block size {size:#x} gives no guest width: expected \
                             {VCPU_CONTEXT_SIZE_X86_32:#x} (32-bit) or {VCPU_CONTEXT_SIZE_X86_64:#x} (64-bit)"
                        ),
                    ));
                }
                blocks.vcpu = Some(size);
                self.input
                    .skip(u64::from(size), "PV extended-info block data")?;
                self.saw(block_at, block);
            }
            legacy::EXT_INFO_EXTV => {
                blocks.extended = true;
                self.input
                    .skip(u64::from(size), "PV extended-info block data")?;
                self.saw(block_at, block);
            }
            legacy::EXT_INFO_XCNT => {
                if (size as usize) < X::SIZE {
                    return Err(LegacyError::malformed(
                        block_at,
                        format!("{xcnt_id} block size {size} is too small for its u32"),
                    ));
                }
                self.saw(block_at, block);
                let value_at = self.input.offset;
                let raw: [u8; X::SIZE] = self
                    .input
                    .read_fields(&[(X::SIZE, "xcnt_data.xsave_size")])?;
                let X { xsave_size: value } = struct_value(X::decode(&raw, &ctx), value_at)?;
                let least = legacy::PvXsave::AREA_OFFSET as u32;
                if value != 0 && !(least..=MAX_XSAVE_SIZE).contains(&value) {
                    return Err(LegacyError::malformed(
                        value_at,
                        format!("{xcnt_id} xsave size {value:#x} out of range ({least}..={MAX_XSAVE_SIZE:#x})"),
                    ));
                }
                blocks.xsave_size = value;
                self.input.skip(
                    u64::from(size) - X::SIZE as u64,
                    "PV extended-info block data",
                )?;
                self.saw(value_at, What::XcntData(raw));
            }
            _ => {
                return Err(LegacyError::malformed(
                    block_at,
                    format!("unrecognised PV extended-info block id {:02x?}", id),
                ))
            }
        }
        blocks.consumed += B::SIZE as u32 + size;
        self.ext_blocks_read(blocks)
    }

    /// The next block of the extended-info area, or the area's summary once its total size
    /// has been read.
    fn ext_blocks_read(&mut self, blocks: ExtBlocks) -> Result<Step, LegacyError> {
        if blocks.consumed < blocks.total {
            self.state = State::PvExtBlocks(blocks);
            return Ok(Step::Quiet);
        }
        let Some(vcpu_context_size) = blocks.vcpu else {
            let vcpu_id = ext_info_name(&legacy::EXT_INFO_VCPU);
            return Err(LegacyError::malformed(
                blocks.start,
                format!("PV extended-info has no {vcpu_id} block: the guest width is unknown"),
            ));
        };
        let (guest_width, pt_levels) = if vcpu_context_size == VCPU_CONTEXT_SIZE_X86_64 {
            (8, 4)
        } else {
            (4, 3)
        };
        let info = PvExtendedInfo {
            guest_width,
            pt_levels,
            vcpu_context_size,
            extended: blocks.extended,
            xsave_size: blocks.xsave_size,
        };
        self.pv = Some(info);
        self.state = State::PvP2mFrames;
        Ok(Step::PvExtendedInfo {
            at: blocks.start,
            info,
        })
    }

    fn read_pv_p2m_frames(&mut self) -> Result<Step, LegacyError> {
        use legacy::P2mFrameList as L;
        let guest_width = self.pv.map_or(8, |pv| u64::from(pv.guest_width));
        let (ws, p2m_size) = (self.width.bytes(), self.p2m_size);
        let ctx = chunk_ctx();
        // p2m_size is 1..=MAX_P2M_SIZE here, so the count is at most 2^18.
        let (at, _) = self.input.read_item(
            &mut self.body,
            |b| L::decode(b, ws, p2m_size, guest_width, &ctx).map(|r| r.map(drop)),
            whole,
            part_error,
        )?;
        let list = item_value(L::decode(&self.body, ws, p2m_size, guest_width, &ctx), at)?;
        self.words.clear();
        self.words.extend(list.frames.iter());
        self.saw(at, What::P2mFrameList);
        self.state = State::Chunks;
        Ok(Step::PvP2mFrameList)
    }

    fn read_chunk(&mut self) -> Result<Step, LegacyError> {
        let start = self.input.offset;
        let (id, step) = self.read_chunk_at(start)?;
        self.saw(start, What::Chunk(id));
        Ok(step)
    }

    /// [`LegacyReader::read_chunk`]: the chunk that starts at `start`, and its id.
    fn read_chunk_at(&mut self, start: u64) -> Result<(i32, Step), LegacyError> {
        let raw: [u8; legacy::CHUNK_ID_SIZE] = self
            .input
            .read_fields(&[(legacy::CHUNK_ID_SIZE, "chunk id")])?;
        let id = signed_word_at(&raw, 0).unwrap_or_default();
        let Some(chunk) = ChunkId::from_i32(id) else {
            return Err(LegacyError::malformed(
                start,
                if id > 0 {
                    format!("page batch of {id} entries exceeds MAX_BATCH_SIZE {MAX_BATCH_SIZE}")
                } else {
                    format!("unrecognised chunk id {id}")
                },
            ));
        };
        match chunk {
            ChunkId::End => {
                if self.guest_type == GuestType::Pv {
                    if self.vcpus.is_none() {
                        return Err(LegacyError::malformed(
                            start,
                            "end of the chunk loop without a VCPU_INFO chunk: the PV tail cannot be read",
                        ));
                    }
                    self.state = State::PvUnmapped;
                } else {
                    self.state = State::HvmMagicPfns;
                }
                return Ok((id, Step::EndOfChunks));
            }
            ChunkId::Tmem
            | ChunkId::TmemExtra
            | ChunkId::CompressedData
            | ChunkId::EnableCompression => {
                return Err(LegacyError::unsupported(
                    start,
                    format!(
                        "{} chunk ({id}): tmem and compressed streams cannot be converted",
                        chunk.name()
                    ),
                ))
            }
            _ => {}
        }
        let body_at = self.read_chunk_body(start, chunk, id)?;
        let decoded = legacy::ChunkBody::decode(id, &self.body, self.width.bytes(), &chunk_ctx());
        let body = match decoded {
            Ok(legacy::ChunkRead::Done { value, .. }) => value,
            Ok(legacy::ChunkRead::Need { .. }) => {
                return Err(LegacyError::malformed(
                    body_at,
                    format!("internal: {} chunk body not read whole", chunk.name()),
                ))
            }
            Err(e) => return Err(chunk_error(chunk, body_at, &self.body, &e)),
        };
        if let Some(param) = body.as_hvm_param() {
            return Ok((
                id,
                Step::HvmParam {
                    chunk,
                    value: param.value,
                },
            ));
        }
        let step = match body {
            legacy::ChunkBody::PageBatch(batch) => {
                self.words.clear();
                self.words.extend(batch.pfn_types.iter());
                let pages = self
                    .words
                    .iter()
                    .filter(|&&e| legacy_entry_has_data(e))
                    .count();
                self.pages =
                    self.input
                        .take(&mut self.data, pages * PAGE_SIZE, "page batch data")?;
                Step::PageBatch
            }
            legacy::ChunkBody::EnableVerifyMode => Step::EnableVerifyMode,
            legacy::ChunkBody::VcpuInfo(info) => {
                let mut map = VcpuMap::empty();
                for (word, bits) in map.words.iter_mut().zip(info.vcpu_map.iter()) {
                    *word = bits;
                }
                self.vcpus = Some(map);
                Step::VcpuInfo {
                    max_vcpu_id: info.max_vcpu_id,
                }
            }
            legacy::ChunkBody::TscInfo(tsc) => Step::TscInfo {
                mode: tsc.mode,
                nsec: tsc.nsec,
                khz: tsc.khz,
                incarnation: tsc.incarnation,
            },
            legacy::ChunkBody::LastCheckpoint => Step::LastCheckpoint,
            legacy::ChunkBody::Toolstack(toolstack) => {
                self.data.clear();
                self.data.extend_from_slice(toolstack.data);
                Step::Toolstack
            }
            _ => {
                return Err(LegacyError::malformed(
                    start,
                    format!("unhandled chunk id {id}"),
                ))
            }
        };
        Ok((id, step))
    }

    /// Read the body of chunk `id` (which started at `start`) into `self.body`, field by field
    /// as the generated decoder asks for them; the caps are checked on each array's count
    /// before its elements are read. Returns where the body starts.
    fn read_chunk_body(&mut self, start: u64, chunk: ChunkId, id: i32) -> Result<u64, LegacyError> {
        let ws = self.width.bytes();
        let ctx = chunk_ctx();
        let second_vcpu_info = self.vcpus.is_some();
        let (body_at, _) = self.input.read_item(
            &mut self.body,
            |b| legacy::ChunkBody::decode(id, b, ws, &ctx).map(|r| r.map(drop)),
            |counted, body_at| {
                let at = body_at + counted.at as u64;
                Ok(match chunk {
                    ChunkId::VcpuInfo if second_vcpu_info => {
                        return Err(LegacyError::malformed(start, "second VCPU_INFO chunk"));
                    }
                    // The vcpu map is read (and a truncation reported) one word at a time.
                    ChunkId::VcpuInfo => Take::Each,
                    ChunkId::Toolstack if counted.count > u64::from(MAX_TOOLSTACK_LENGTH) => {
                        return Err(LegacyError::malformed(
                            at,
                            format!(
                                "TOOLSTACK length {:#x} exceeds the cap {MAX_TOOLSTACK_LENGTH:#x}",
                                counted.count
                            ),
                        ));
                    }
                    _ => Take::Whole,
                })
            },
            |body_at, body, e| chunk_error(chunk, body_at, body, e),
        )?;
        Ok(body_at)
    }

    fn read_pv_unmapped(&mut self) -> Result<Step, LegacyError> {
        let ws = self.width.bytes();
        let ctx = chunk_ctx();
        let mut skipped = None;
        let (at, end) = self.input.read_item(
            &mut self.body,
            |b| legacy::PvUnmapped::decode(b, ws, &ctx).map(|r| r.map(drop)),
            |counted, at| {
                if counted.count > u64::from(MAX_UNMAPPED_PFNS) {
                    return Err(LegacyError::malformed(
                        at + counted.at as u64,
                        format!(
                            "PV unmapped pfn count {:#x} exceeds {MAX_UNMAPPED_PFNS:#x}",
                            counted.count
                        ),
                    ));
                }
                // The frames mean nothing to a converter: they are held for a listing
                // when they are few, and stepped over otherwise.
                if counted.count.saturating_mul(counted.size as u64) <= READ_STEP as u64 {
                    return Ok(Take::Whole);
                }
                skipped = Some(*counted);
                Ok(Take::Stop)
            },
            part_error,
        )?;
        if let ItemEnd::Array { octets, field } = end {
            self.input.skip(octets, field)?;
        }
        self.saw(at, What::PvUnmapped { skipped });
        self.state = State::PvVcpus { next: 0 };
        Ok(Step::Quiet)
    }

    fn read_pv_vcpu(&mut self, next: u32) -> Result<Option<Step>, LegacyError> {
        let (Some(pv), Some(vcpus)) = (self.pv, self.vcpus.as_ref()) else {
            return Err(LegacyError::malformed(
                self.input.offset,
                "internal: PV tail without PV state",
            ));
        };
        let Some(vcpu_id) = vcpus.next_from(next) else {
            self.state = State::PvSharedInfo;
            return Ok(None);
        };
        let ws = self.width.bytes();
        let ctx = chunk_ctx();
        let context_size = u64::from(pv.vcpu_context_size);
        let extended_size = if pv.extended {
            u64::from(legacy::EXTENDED_VCPU_CONTEXT_SIZE)
        } else {
            0
        };
        let (vcpu_at, _) = self.input.read_item(
            &mut self.data,
            |b| {
                legacy::PvVcpu::decode(b, ws, context_size, extended_size, &ctx)
                    .map(|r| r.map(drop))
            },
            whole,
            part_error,
        )?;
        self.saw(vcpu_at, What::PvVcpu);
        let mut xsave_mask = None;
        if pv.xsave_size != 0 {
            use legacy::PvXsave as X;
            // xcnt is at least the header's size (checked when it was read).
            let expected = u64::from(pv.xsave_size).saturating_sub(X::AREA_OFFSET as u64);
            let mismatch = |size: u64, at: u64| {
                LegacyError::malformed(
                    at,
                    format!(
                        "vcpu {vcpu_id} xsave size {size:#x}, expected {expected:#x} ({} {:#x} - {})",
                        ext_info_name(&legacy::EXT_INFO_XCNT),
                        pv.xsave_size,
                        X::AREA_OFFSET
                    ),
                )
            };
            let (at, _) = self.input.read_item(
                &mut self.xsave,
                |b| X::decode(b, ws, &ctx).map(|r| r.map(drop)),
                |counted, at| match counted.count == expected {
                    true => Ok(Take::Whole),
                    false => Err(mismatch(counted.count, at + counted.at as u64)),
                },
                part_error,
            )?;
            let X { mask, size, .. } = item_value(X::decode(&self.xsave, ws, &ctx), at)?;
            if size != expected {
                return Err(mismatch(size, at + X::SIZE_OFFSET as u64));
            }
            self.saw(at, What::PvXsave);
            xsave_mask = Some(mask);
        }
        self.state = State::PvVcpus { next: vcpu_id + 1 };
        Ok(Some(Step::PvVcpu {
            vcpu_id,
            context_size: pv.vcpu_context_size as usize,
            extended: pv.extended,
            xsave_mask,
        }))
    }

    fn read_shared_info(&mut self) -> Result<Step, LegacyError> {
        let ctx = chunk_ctx();
        let ws = self.width.bytes();
        let (at, _) = self.input.read_item(
            &mut self.data,
            |b| legacy::SharedInfo::decode(b, ws, &ctx).map(|r| r.map(drop)),
            whole,
            part_error,
        )?;
        self.saw(at, What::SharedInfo);
        self.state = State::Done;
        Ok(Step::SharedInfo)
    }

    fn read_hvm_context(&mut self) -> Result<Step, LegacyError> {
        use legacy::HvmContext as C;
        let ctx = chunk_ctx();
        let ws = self.width.bytes();
        let (start, _) = self.input.read_item(
            &mut self.data,
            |b| C::decode(b, ws, &ctx).map(|r| r.map(drop)),
            |counted, at| {
                if counted.count > u64::from(MAX_HVM_CONTEXT_LENGTH) {
                    return Err(LegacyError::malformed(
                        at + counted.at as u64,
                        format!(
                            "HVM context length {:#x} exceeds the cap {MAX_HVM_CONTEXT_LENGTH:#x}",
                            counted.count
                        ),
                    ));
                }
                Ok(Take::Whole)
            },
            part_error,
        )?;
        let C { length, .. } = item_value(C::decode(&self.data, ws, &ctx), start)?;
        if length == 0 {
            return Err(LegacyError::malformed(start, "HVM context is empty"));
        }
        self.saw(start, What::HvmContext);
        self.state = if self.options.qemu_trailer {
            State::QemuSignature
        } else {
            State::Done
        };
        Ok(Step::HvmContext)
    }

    fn read_qemu_signature(&mut self) -> Result<Step, LegacyError> {
        let ctx = chunk_ctx();
        let ws = self.width.bytes();
        let (start, _) = self.input.read_item(
            &mut self.data,
            |b| legacy::QemuSignature::decode(b, ws, &ctx).map(|r| r.map(drop)),
            whole,
            part_error,
        )?;
        let legacy::QemuSignature { signature } =
            item_value(legacy::QemuSignature::decode(&self.data, ws, &ctx), start)?;
        let kind = [
            QemuRecordKind::DeviceModelRecord0002,
            QemuRecordKind::RemusDeviceModelState,
            QemuRecordKind::QemuDeviceModelRecord,
        ]
        .into_iter()
        .find(|kind| kind.signature()[..] == signature[..]);
        let Some(kind) = kind else {
            return Err(LegacyError::unsupported(
                start,
                format!(
                    "unrecognised qemu signature {:?}",
                    String::from_utf8_lossy(&signature)
                ),
            ));
        };
        self.saw(start, What::QemuSignature);
        let (length, field) = match kind {
            QemuRecordKind::QemuDeviceModelRecord => (None, legacy::QemuSignature::NAME),
            _ => {
                let mut length = 0;
                let mut streamed = None;
                let (record_at, end) = self.input.read_item(
                    &mut self.body,
                    |b| legacy::QemuRecord::decode(b, ws, &ctx).map(|r| r.map(drop)),
                    |counted, at| {
                        if counted.count > MAX_QEMU_RECORD_LENGTH {
                            return Err(LegacyError::malformed(
                                at + counted.at as u64,
                                format!(
                                    "qemu record length {:#x} exceeds the cap {MAX_QEMU_RECORD_LENGTH:#x}",
                                    counted.count
                                ),
                            ));
                        }
                        length = counted.count;
                        streamed = Some(*counted);
                        // The state is passed on in pieces as it arrives.
                        Ok(Take::Stop)
                    },
                    part_error,
                )?;
                self.saw(record_at, What::QemuRecord(streamed));
                self.data.extend_from_slice(&self.body);
                let field = match end {
                    ItemEnd::Array { field, .. } => field,
                    ItemEnd::Done => legacy::QemuRecord::NAME,
                };
                // The cap keeps the length within a u32.
                (Some(u32::try_from(length).unwrap_or(u32::MAX)), field)
            }
        };
        self.state = State::QemuData {
            remaining: length.map(u64::from),
            field,
        };
        Ok(Step::QemuHeader { kind, length })
    }

    fn read_qemu_data(
        &mut self,
        remaining: Option<u64>,
        field: &'static str,
    ) -> Result<Option<Step>, LegacyError> {
        match remaining {
            Some(0) => {
                self.state = State::Done;
                Ok(None)
            }
            Some(left) => {
                let at = self.input.offset;
                let n = left.min(READ_STEP as u64);
                self.input.read_vec(&mut self.data, n as usize, field)?;
                self.saw(at, What::QemuData(field));
                self.state = State::QemuData {
                    remaining: Some(left - n),
                    field,
                };
                Ok(Some(Step::QemuData))
            }
            None => {
                let at = self.input.offset;
                let n = self.input.read_up_to(&mut self.data, READ_STEP)?;
                if n == 0 {
                    self.state = State::Done;
                    return Ok(None);
                }
                self.qemu_total += n as u64;
                if self.qemu_total > MAX_QEMU_RECORD_LENGTH {
                    return Err(LegacyError::malformed(
                        at,
                        format!("xend qemu record exceeds the cap {MAX_QEMU_RECORD_LENGTH:#x}"),
                    ));
                }
                self.saw(at, What::QemuData(field));
                Ok(Some(Step::QemuData))
            }
        }
    }
}

/// One entry of libxl's physmap table in a TOOLSTACK blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysmapEntry<'a> {
    /// Guest physical offset; names the entry's xenstore directory.
    pub phys_offset: u64,
    /// Start address of the mapping.
    pub start_addr: u64,
    /// Size of the mapping.
    pub size: u64,
    /// The name without its NUL terminator.
    pub name: &'a [u8],
}

/// Walk libxl's TOOLSTACK blob (version 1 physmap table), calling `each` per entry.
///
/// 64-bit toolstacks leak 4 bytes of structure padding after each name (format reference
/// 1.5); `width` says whether to skip them. `blob_offset` is where the blob starts in the
/// input, for error offsets. Names must be non-empty, NUL-terminated and free of inner NULs.
pub fn parse_toolstack_physmap<'a>(
    blob: &'a [u8],
    width: Width,
    blob_offset: u64,
    mut each: impl FnMut(PhysmapEntry<'a>) -> Result<(), LegacyError>,
) -> Result<(), LegacyError> {
    use legacy::{PhysmapEntry as E, PhysmapHeader as H};
    let at = |pos: usize| blob_offset + pos as u64;
    let ctx = chunk_ctx();
    let Some(Ok(H { version, count })) = blob.get(..H::SIZE).map(|b| H::decode(b, &ctx)) else {
        return Err(LegacyError::malformed(
            at(0),
            format!(
                "libxl toolstack blob of {} bytes is too short for its header",
                blob.len()
            ),
        ));
    };
    if version != legacy::PHYSMAP_VERSION {
        return Err(LegacyError::malformed(
            at(H::VERSION_OFFSET),
            format!(
                "libxl toolstack blob version {version}, expected {}",
                legacy::PHYSMAP_VERSION
            ),
        ));
    }
    // A 64-bit toolstack steps by its C structure's size: junk follows each name.
    let padding = match width {
        Width::Bits32 => 0,
        Width::Bits64 => legacy::PHYSMAP_ENTRY_SIZE_64 as usize - E::SIZE,
    };
    let mut pos = H::SIZE;
    for index in 0..count {
        let Some(Ok(E {
            phys_offset,
            start_addr,
            size,
            namelen,
        })) = blob.get(pos..pos + E::SIZE).map(|b| E::decode(b, &ctx))
        else {
            return Err(LegacyError::malformed(
                at(pos),
                format!("physmap entry {index} of {count}: blob too short for the entry header"),
            ));
        };
        if namelen == 0 {
            return Err(LegacyError::malformed(
                at(pos + E::NAMELEN_OFFSET),
                format!("physmap entry {index}: empty name"),
            ));
        }
        let name_at = pos + E::SIZE;
        let stored = namelen as usize + padding;
        let Some(stored_name) = blob.get(name_at..name_at + stored) else {
            return Err(LegacyError::malformed(
                at(name_at),
                format!(
                    "physmap entry {index}: name of {namelen} bytes (+{padding} padding) overruns the blob \
                     ({} bytes left)",
                    blob.len().saturating_sub(name_at)
                ),
            ));
        };
        let Some((&last, name)) = stored_name[..namelen as usize].split_last() else {
            return Err(LegacyError::malformed(
                at(pos + E::NAMELEN_OFFSET),
                format!("physmap entry {index}: empty name"),
            ));
        };
        if last != 0 {
            return Err(LegacyError::malformed(
                at(name_at + namelen as usize - 1),
                format!("physmap entry {index}: name is not NUL-terminated"),
            ));
        }
        if let Some(inner) = name.iter().position(|&b| b == 0) {
            return Err(LegacyError::malformed(
                at(name_at + inner),
                format!("physmap entry {index}: name has a NUL inside it"),
            ));
        }
        each(PhysmapEntry {
            phys_offset,
            start_addr,
            size,
            name,
        })?;
        pos = name_at + stored;
    }
    Ok(())
}

#[cfg(test)]
mod chunk_tests {
    //! The chunk loop on the generated decoders: ids, field-by-field reads and the offsets
    //! errors report.

    use super::*;

    /// An HVM stream (64-bit toolstack) whose header is `p2m_size` 16, then `chunks`.
    fn hvm(chunks: &[u8]) -> Vec<u8> {
        let mut b = 16u64.to_le_bytes().to_vec();
        b.extend_from_slice(chunks);
        b
    }

    fn opts() -> ReaderOptions {
        ReaderOptions {
            width: Some(Width::Bits64),
            guest_type: Some(GuestType::Hvm),
            xl_header: Some(false),
            qemu_trailer: false,
        }
    }

    /// Reads until an error; the error.
    fn first_error(input: &[u8]) -> LegacyError {
        let mut r = LegacyReader::new(input, opts());
        loop {
            match r.next_record() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream was accepted"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn every_id_of_the_spec_round_trips() {
        let known: Vec<(i32, &str)> = vec![
            (-1, "ENABLE_VERIFY_MODE"),
            (-2, "VCPU_INFO"),
            (-3, "HVM_IDENT_PT"),
            (-4, "HVM_VM86_TSS"),
            (-5, "TMEM"),
            (-6, "TMEM_EXTRA"),
            (-7, "TSC_INFO"),
            (-8, "HVM_CONSOLE_PFN"),
            (-9, "LAST_CHECKPOINT"),
            (-10, "HVM_ACPI_IOPORTS_LOCATION"),
            (-11, "HVM_VIRIDIAN"),
            (-12, "COMPRESSED_DATA"),
            (-13, "ENABLE_COMPRESSION"),
            (-14, "HVM_GENERATION_ID_ADDR"),
            (-15, "HVM_PAGING_RING_PFN"),
            (-16, "HVM_MONITOR_RING_PFN"),
            (-17, "HVM_SHARING_RING_PFN"),
            (-18, "TOOLSTACK"),
            (-19, "HVM_IOREQ_SERVER_PFN"),
            (-20, "HVM_NR_IOREQ_SERVER_PAGES"),
            (0, "END"),
        ];
        for (id, name) in &known {
            let chunk = ChunkId::from_i32(*id).unwrap_or_else(|| panic!("id {id}"));
            assert_eq!(chunk.name(), *name);
            assert_eq!(chunk.id(), Some(*id));
        }
        assert_eq!(ChunkId::from_i32(1), Some(ChunkId::PageBatch));
        let max = ChunkId::PAGE_BATCH_MAX_ID;
        assert_eq!(ChunkId::from_i32(max), Some(ChunkId::PageBatch));
        assert_eq!(ChunkId::from_i32(max + 1), None);
        assert_eq!(ChunkId::from_i32(-21), None);
        let params = ChunkId::ALL.iter().filter(|c| is_hvm_param(**c)).count();
        assert_eq!(params, 11);
        assert_eq!(ChunkId::ALL.len(), known.len() + 1);
    }

    #[test]
    fn a_cut_inside_a_field_is_reported_at_that_field() {
        // TSC_INFO cut in the middle of `nsec`.
        let mut c = (-7i32).to_le_bytes().to_vec();
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&[0, 0, 0]);
        let input = hvm(&c);
        match first_error(&input) {
            LegacyError::Truncated {
                offset,
                what,
                needed,
                got,
            } => {
                assert_eq!(offset, 8 + 4 + 4, "nsec starts after the id and mode");
                assert_eq!((what, needed, got), ("TSC_INFO.nsec", 8, 3));
            }
            e => panic!("{e}"),
        }

        // VCPU_INFO with two map words, cut in the second: reported at that word.
        let mut c = (-2i32).to_le_bytes().to_vec();
        c.extend_from_slice(&64u32.to_le_bytes());
        c.extend_from_slice(&1u64.to_le_bytes());
        c.extend_from_slice(&[1, 0]);
        let input = hvm(&c);
        match first_error(&input) {
            LegacyError::Truncated {
                offset,
                what,
                needed,
                got,
            } => {
                assert_eq!(offset, 8 + 4 + 4 + 8);
                assert_eq!((what, needed, got), ("VCPU_INFO.vcpu_map", 8, 2));
            }
            e => panic!("{e}"),
        }

        // An HVM parameter chunk cut in its value.
        let mut c = (-8i32).to_le_bytes().to_vec();
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&[7; 5]);
        let input = hvm(&c);
        match first_error(&input) {
            LegacyError::Truncated {
                offset, what, got, ..
            } => {
                assert_eq!((offset, what, got), (8 + 4 + 4, "HVM_CONSOLE_PFN.value", 5));
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn chunk_values_reach_the_records() {
        let mut c = (-7i32).to_le_bytes().to_vec();
        for v in [
            &3u32.to_le_bytes()[..],
            &9u64.to_le_bytes(),
            &2_000_000u32.to_le_bytes(),
            &4u32.to_le_bytes(),
        ] {
            c.extend_from_slice(v);
        }
        c.extend_from_slice(&(-2i32).to_le_bytes());
        c.extend_from_slice(&65u32.to_le_bytes());
        c.extend_from_slice(&1u64.to_le_bytes());
        c.extend_from_slice(&2u64.to_le_bytes());
        c.extend_from_slice(&(-18i32).to_le_bytes());
        c.extend_from_slice(&3u32.to_le_bytes());
        c.extend_from_slice(b"abc");
        c.extend_from_slice(&(-9i32).to_le_bytes());
        let input = hvm(&c);
        let mut r = LegacyReader::new(&input[..], opts());
        let mut seen = Vec::new();
        while let Ok(Some((offset, rec))) = r.next_record() {
            seen.push(match rec {
                Record::TscInfo {
                    mode,
                    nsec,
                    khz,
                    incarnation,
                } => format!("{offset} tsc {mode} {nsec} {khz} {incarnation}"),
                Record::VcpuInfo { max_vcpu_id, vcpus } => {
                    format!(
                        "{offset} vcpus {max_vcpu_id} {:?}",
                        vcpus.iter().collect::<Vec<_>>()
                    )
                }
                Record::Toolstack { blob } => format!("{offset} toolstack {blob:?}"),
                Record::LastCheckpoint => format!("{offset} last"),
                other => format!("{offset} {other:?}"),
            });
        }
        assert_eq!(
            seen,
            [
                "0 Header { p2m_size: 16, width: Bits64, guest_type: Hvm }",
                "8 tsc 3 9 2000000 4",
                "32 vcpus 65 [0, 65]",
                "56 toolstack [97, 98, 99]",
                "67 last",
            ]
        );
    }

    #[test]
    fn the_tails_are_read_as_the_spec_parts() {
        // HVM: END, the three special frames, then an HVM_CONTEXT whose length is cut.
        let mut c = 0i32.to_le_bytes().to_vec();
        c.extend_from_slice(&[0; legacy::HvmMagicPfns::SIZE]);
        c.extend_from_slice(&[9, 0]);
        let input = hvm(&c);
        match first_error(&input) {
            LegacyError::Truncated {
                offset, what, got, ..
            } => {
                assert_eq!((offset, what, got), (8 + 4 + 24, "HVM_CONTEXT.length", 2));
            }
            e => panic!("{e}"),
        }

        // The context is cut: reported at its first octet, with its whole length needed.
        let mut c = 0i32.to_le_bytes().to_vec();
        c.extend_from_slice(&[0; legacy::HvmMagicPfns::SIZE]);
        c.extend_from_slice(&9u32.to_le_bytes());
        c.extend_from_slice(&[1; 5]);
        let input = hvm(&c);
        match first_error(&input) {
            LegacyError::Truncated {
                offset,
                what,
                needed,
                got,
            } => {
                assert_eq!(offset, 8 + 4 + 24 + 4);
                assert_eq!((what, needed, got), ("HVM_CONTEXT.context", 9, 5));
            }
            e => panic!("{e}"),
        }

        // A whole one reaches the record without its length.
        let mut c = 0i32.to_le_bytes().to_vec();
        c.extend_from_slice(&[0; legacy::HvmMagicPfns::SIZE]);
        c.extend_from_slice(&3u32.to_le_bytes());
        c.extend_from_slice(b"abc");
        let input = hvm(&c);
        let mut r = LegacyReader::new(&input[..], opts());
        let mut blob = None;
        while let Ok(Some((_, rec))) = r.next_record() {
            if let Record::HvmContext { blob: b } = rec {
                blob = Some(b.to_vec());
            }
        }
        assert_eq!(blob.as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn the_ext_info_marker_follows_the_width() {
        assert_eq!(ext_info_marker(8), u64::MAX);
        assert_eq!(ext_info_marker(4), u64::from(u32::MAX));
        assert_eq!(DETECT_AFTER_MARKER, 8);
    }
}
