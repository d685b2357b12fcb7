//! Reads a stream item by item: headers, framed records of each layer, trailing bytes.
//!
//! Three framings nest: an `xl save` file (header, optional data, then a libxl or libxc body
//! chosen by the STREAMv2 flag), a libxl stream (header, records; the libxc image follows
//! LIBXC_CONTEXT inline and libxl records resume after the libxc END), and a libxc image
//! (image header, domain header, records up to END). In a checkpointed stream, each libxc
//! CHECKPOINT hands over to libxl records (emulator state, CHECKPOINT_END) before the libxc
//! records resume without new headers; such a stream may stop at any record boundary, and
//! its libxc END, if one comes, ends it (libxl reads nothing more once a checkpointed libxc
//! restore returns).
//!
//! A COLO forward stream ([`Reader::colo`]) has one more libxl record per checkpoint: after
//! CHECKPOINT_END the primary sends CHECKPOINT_STATE (NEW) before the libxc records of the
//! next checkpoint. Record types overlap between the layers (libxl 5 is libxc
//! X86_PV_VCPU_EXTENDED), so the caller has to say which kind of stream it reads.
//!
//! The reader checks framing (lengths, caps, padding, headers); what records mean is the
//! verifier's business, which a reader can be asked to run on every item it hands out
//! ([`Reader::check_items`]). Records are handed out borrowed: from the input itself for a
//! slice source (zero-copy, page bytes never touched), from one reused buffer for a `Read`
//! source.

use crate::error::{ErrorKind, Layer, StreamError};
use crate::limits::{self, padded_body_len, RECORD_HEADER_SIZE, RECORD_LENGTH_OFFSET};
use crate::source::{ReadSource, Short, SliceSource, Source};
use crate::wire::{Cursor, DecodeCtx, Endian, Level, Role, Strictness};
use crate::{libxc, libxl, xl};
use std::io::Read;

/// The outermost framing of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// A bare libxc domain image.
    Libxc,
    /// A libxl stream wrapping a libxc image.
    Libxl,
    /// An `xl save` file.
    Xl,
}

impl Framing {
    /// The framing's name in lower case, as `--framing` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Libxc => "libxc",
            Framing::Libxl => "libxl",
            Framing::Xl => "xl",
        }
    }

    /// Recognises a framing from the first octets of a stream.
    pub fn detect(head: &[u8]) -> Option<Framing> {
        if head.len() >= 8 && head.get(..8) == xl::XL_MAGIC.get(..8) {
            Some(Framing::Xl)
        } else if head.get(..8) == Some(&libxl::LIBXL_IDENT.to_be_bytes()[..]) {
            Some(Framing::Libxl)
        } else if head.get(..8) == Some(&libxc::IHDR_MARKER.to_be_bytes()[..]) {
            Some(Framing::Libxc)
        } else {
            None
        }
    }
}

impl std::str::FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "libxc" => Ok(Framing::Libxc),
            "libxl" => Ok(Framing::Libxl),
            "xl" => Ok(Framing::Xl),
            other => Err(format!("unknown framing `{other}` (libxc, libxl, xl)")),
        }
    }
}

/// How to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReaderOptions {
    /// The framing, or `None` to detect it from the first octets.
    pub framing: Option<Framing>,
    /// Strict also rejects non-zero padding and other reference-verifier rules.
    pub strictness: Strictness,
}

/// One framed record, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'r> {
    /// The layer the record belongs to.
    pub layer: Layer,
    /// Index among all records of the stream (all layers), from 0.
    pub index: u64,
    /// Offset of the record header in the input.
    pub offset: u64,
    /// The type in the record header (numbers overlap between layers).
    pub record_type: u32,
    /// The body, without header or padding.
    pub body: &'r [u8],
    /// The context to decode the body with.
    pub ctx: DecodeCtx,
}

impl<'r> RawRecord<'r> {
    /// Offset of the body in the input.
    pub fn body_offset(&self) -> u64 {
        self.offset + RECORD_HEADER_SIZE as u64
    }

    /// The record type's name in its layer (`UNKNOWN(0x..)` for undefined types).
    pub fn type_name(&self) -> String {
        match self.layer {
            Layer::Libxl => libxl::RecordType::from_u32(self.record_type).to_string(),
            _ => libxc::RecordType::from_u32(self.record_type).to_string(),
        }
    }

    /// Places an error in this record.
    pub fn error(&self, e: StreamError) -> StreamError {
        e.with_record(self.index, format!("{} {}", self.layer, self.type_name()))
    }

    /// Decodes a libxc record with the generated codec.
    pub fn libxc(&self) -> Result<libxc::Record<'r>, StreamError> {
        libxc::Record::decode(self.record_type, self.body, &self.ctx)
            .map_err(|e| self.error(StreamError::from_decode(&e, self.layer, self.body_offset())))
    }

    /// Decodes a libxl record with the generated codec.
    pub fn libxl(&self) -> Result<libxl::Record<'r>, StreamError> {
        libxl::Record::decode(self.record_type, self.body, &self.ctx)
            .map_err(|e| self.error(StreamError::from_decode(&e, self.layer, self.body_offset())))
    }

    /// What the spec says about this record's type, if it defines it.
    pub fn info(&self) -> Option<&'static crate::wire::RecordInfo> {
        match self.layer {
            Layer::Libxl => libxl::RecordType::from_u32(self.record_type).info(),
            _ => libxc::RecordType::from_u32(self.record_type).info(),
        }
    }
}

/// One item of a stream.
#[derive(Debug)]
pub enum Item<'r> {
    /// The `xl save` file header and its optional data (the domain config).
    XlHeader {
        /// Where the header starts.
        offset: u64,
        /// The decoded header.
        header: xl::XlHeader,
        /// The optional data that follows it.
        optional_data: &'r [u8],
    },
    /// The libxl stream header.
    LibxlHeader {
        /// Where the header starts.
        offset: u64,
        /// The decoded header.
        header: libxl::LibxlHeader,
    },
    /// The libxc image header.
    ImageHeader {
        /// Where the header starts.
        offset: u64,
        /// The decoded header.
        header: libxc::ImageHeader,
    },
    /// The libxc domain header.
    DomainHeader {
        /// Where the header starts.
        offset: u64,
        /// The decoded header.
        header: libxc::DomainHeader,
    },
    /// A framed record of any layer.
    Record(RawRecord<'r>),
    /// Octets after the stream's final END (e.g. xl's migration protocol message, or the
    /// qemu trailer a legacy conversion to libxc framing passes through), handed out in
    /// chunks of at most 1 MiB, in order.
    Trailing {
        /// Where the octets start.
        offset: u64,
        /// The octets.
        data: &'r [u8],
    },
    /// The end of the input. `complete` is false for a checkpointed stream that stopped at a
    /// record boundary without END (what a receiver sees when the primary dies).
    Eof {
        /// Whether the stream ended as its framing says it must.
        complete: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    LibxlHeader,
    LibxlRecords,
    ImageHeader,
    DomainHeader,
    LibxcRecords,
    /// COLO: after CHECKPOINT_END, the primary's CHECKPOINT_STATE (NEW) is next.
    ColoAwaitingNew,
    AfterEnd,
    Done {
        complete: bool,
    },
}

/// How many records ahead of the current one [`Source::prefetch`] is asked to warm.
const PREFETCH_RECORDS: usize = 4;

/// The framing state machine under a [`Reader`]: items in stream order, unchecked beyond
/// framing.
struct Frames<S> {
    src: S,
    opts: ReaderOptions,
    state: State,
    framing: Option<Framing>,
    /// The libxc image sits inside libxl framing.
    nested: bool,
    /// A libxc CHECKPOINT was seen.
    checkpointed: bool,
    /// Inside libxl framing: the libxc image paused at a CHECKPOINT.
    libxc_paused: bool,
    /// A COLO forward stream: CHECKPOINT_STATE follows each CHECKPOINT_END.
    colo: bool,
    libxc_ctx: DecodeCtx,
    libxl_ctx: DecodeCtx,
    index: u64,
    /// Offset just past the octets looked at without consuming them (framing detection).
    peeked: u64,
    /// Hand PAGE_DATA records out with their page octets unread ([`Reader::defer_page_data`]).
    defer_pages: bool,
    /// The page octets of the record handed out last, still in the input.
    pending: Option<Deferred>,
    /// The body of a deferred record up to its page octets.
    head: Vec<u8>,
}

/// A record handed out without its page octets: what is needed to read them, or to skip
/// them, and to report a short input exactly as reading the whole body would have.
#[derive(Debug, Clone, Copy)]
struct Deferred {
    layer: Layer,
    index: u64,
    record_type: u32,
    /// Offset of the body in the input.
    body_at: u64,
    /// The body's length (a deferred body has no padding).
    len: usize,
    /// Octets of the body consumed so far.
    read: usize,
}

impl Deferred {
    /// Page octets still in the input.
    fn left(&self) -> usize {
        self.len - self.read
    }

    /// The error of an input that ended inside the body.
    fn truncated(&self) -> StreamError {
        truncated_body(
            self.layer,
            self.index,
            self.record_type,
            self.body_at,
            self.len,
            0,
            self.read,
        )
    }
}

/// The error of an input that ended inside a record's body of `len` octets and `padding`
/// more, `present` of them there.
fn truncated_body(
    layer: Layer,
    index: u64,
    record_type: u32,
    body_at: u64,
    len: usize,
    padding: usize,
    present: usize,
) -> StreamError {
    StreamError::new(
        ErrorKind::Truncated,
        body_at,
        "truncated",
        format!(
            "the input ends inside the body: {len} octets and {padding} of padding needed, {present} present"
        ),
    )
    .with_record(index, format!("{layer} {}", record_name(layer, record_type)))
}

/// Reads past the page octets `d` left in `src`.
fn skip_pages<S: Source>(src: &mut S, mut d: Deferred) -> Result<(), StreamError> {
    while d.left() > 0 {
        let n = d.left().min(crate::source::READ_BUFFER);
        let at = src.offset();
        let got = src.take_upto(n).map_err(|e| StreamError::io(at, &e))?.len();
        if got == 0 {
            return Err(d.truncated());
        }
        d.read += got;
    }
    Ok(())
}

/// A record type's name in its layer, for errors.
fn record_name(layer: Layer, record_type: u32) -> String {
    match layer {
        Layer::Libxl => libxl::RecordType::from_u32(record_type).to_string(),
        _ => libxc::RecordType::from_u32(record_type).to_string(),
    }
}

impl<S: Source> Frames<S> {
    fn new(src: S, opts: ReaderOptions) -> Self {
        let ctx = DecodeCtx::new(0).with_strictness(opts.strictness);
        Frames {
            src,
            opts,
            state: State::Start,
            framing: opts.framing,
            nested: false,
            checkpointed: false,
            libxc_paused: false,
            colo: false,
            libxc_ctx: ctx,
            libxl_ctx: ctx,
            index: 0,
            peeked: 0,
            defer_pages: false,
            pending: None,
            head: Vec::new(),
        }
    }

    /// Reads the deferred page octets of the last record into `dst`, in order; their lengths
    /// must add up to the octets left.
    fn read_deferred(&mut self, dst: &mut [&mut [u8]]) -> Result<(), StreamError> {
        let Some(mut d) = self.pending else {
            return if dst.iter().all(|b| b.is_empty()) {
                Ok(())
            } else {
                Err(StreamError::new(
                    ErrorKind::Io,
                    self.src.offset(),
                    "deferred",
                    "page octets were asked for, and the last record has none left to read",
                ))
            };
        };
        let want: usize = dst.iter().map(|b| b.len()).sum();
        if want != d.left() {
            return Err(StreamError::new(
                ErrorKind::Io,
                self.src.offset(),
                "deferred",
                format!(
                    "{want} page octets asked for, {} left in the record",
                    d.left()
                ),
            ));
        }
        for b in dst.iter_mut() {
            let r = self.src.read_into(b);
            match r {
                Ok(()) => d.read += b.len(),
                Err(e) => {
                    self.pending = None;
                    return Err(match e {
                        Short::Eof(k) => {
                            d.read += k;
                            d.truncated()
                        }
                        Short::Io(e) => StreamError::io(self.src.offset(), &e),
                    });
                }
            }
        }
        self.pending = None;
        Ok(())
    }

    /// Reads past the deferred page octets of the last record, if any are left.
    fn skip_deferred(&mut self) -> Result<(), StreamError> {
        match self.pending.take() {
            Some(d) => skip_pages(&mut self.src, d),
            None => Ok(()),
        }
    }

    fn detect_framing(&mut self) -> Result<Framing, StreamError> {
        if let Some(f) = self.framing {
            return Ok(f);
        }
        let at = self.src.offset();
        let head = self.src.peek(8).map_err(|e| StreamError::io(0, &e))?;
        self.peeked = self.peeked.max(at + head.len() as u64);
        let f = Framing::detect(head).ok_or_else(|| {
            StreamError::invalid(
                0,
                "framing",
                format!(
                    "the first octets {head:02x?} are neither an xl header, a libxl header nor a libxc image header"
                ),
            )
        })?;
        self.framing = Some(f);
        Ok(f)
    }

    fn take(&mut self, n: usize, what: &str, layer: Layer) -> Result<&[u8], StreamError> {
        let at = self.src.offset();
        match self.src.take(n) {
            Ok(b) => Ok(b),
            Err(Short::Eof(k)) => Err(StreamError::new(
                ErrorKind::Truncated,
                at,
                "truncated",
                format!("the input ends inside the {what}: {n} octets needed, {k} present"),
            )
            .with_item(format!("{layer} {what}"))),
            Err(Short::Io(e)) => Err(StreamError::io(at, &e)),
        }
    }

    /// The next item, run through `check` (a deferred PAGE_DATA record is checked where it
    /// is read, so that a refusal can first read past its page octets).
    fn next_item(
        &mut self,
        check: Option<&mut (dyn ItemCheck + 'static)>,
    ) -> Result<Item<'_>, StreamError> {
        self.skip_deferred()?;
        let offset = self.src.offset();
        let colo = self.colo;
        let mut check = check;
        let item = self.next_unchecked(check.as_deref_mut(), offset)?;
        let checked = matches!(&item, Item::Record(r) if r.ctx.deferred > 0);
        if let (false, Some(c)) = (checked, check) {
            c.check(&item, offset, colo)?;
        }
        Ok(item)
    }

    fn next_unchecked(
        &mut self,
        check: Option<&mut (dyn ItemCheck + 'static)>,
        offset: u64,
    ) -> Result<Item<'_>, StreamError> {
        loop {
            match self.state {
                State::Start => {
                    let framing = self.detect_framing()?;
                    match framing {
                        Framing::Xl => return self.xl_header(),
                        Framing::Libxl => self.state = State::LibxlHeader,
                        Framing::Libxc => self.state = State::ImageHeader,
                    }
                }
                State::LibxlHeader => {
                    let at = self.src.offset();
                    let strictness = self.opts.strictness;
                    let ctx = DecodeCtx::new(0).with_strictness(strictness);
                    let b = self.take(libxl::LibxlHeader::SIZE, "libxl_header", Layer::Libxl)?;
                    let header = libxl::LibxlHeader::decode(b, &ctx)
                        .map_err(|e| StreamError::from_decode(&e, Layer::Libxl, at))?;
                    self.libxl_ctx.version = header.version;
                    self.libxl_ctx.endian =
                        endian_of(header.options.contains(libxl::LibxlOptions::BIG_ENDIAN));
                    self.nested = true;
                    self.state = State::LibxlRecords;
                    return Ok(Item::LibxlHeader { offset: at, header });
                }
                State::ImageHeader => {
                    let at = self.src.offset();
                    let ctx = DecodeCtx::new(0).with_strictness(self.opts.strictness);
                    let b = self.take(libxc::ImageHeader::SIZE, "image_header", Layer::Libxc)?;
                    let header = libxc::ImageHeader::decode(b, &ctx)
                        .map_err(|e| StreamError::from_decode(&e, Layer::Libxc, at))?;
                    self.libxc_ctx.version = header.version;
                    self.libxc_ctx.endian =
                        endian_of(header.options.contains(libxc::ImageOptions::BIG_ENDIAN));
                    self.state = State::DomainHeader;
                    return Ok(Item::ImageHeader { offset: at, header });
                }
                State::DomainHeader => {
                    let at = self.src.offset();
                    let ctx = self.libxc_ctx;
                    let b = self.take(libxc::DomainHeader::SIZE, "domain_header", Layer::Libxc)?;
                    let header = libxc::DomainHeader::decode(b, &ctx)
                        .map_err(|e| StreamError::from_decode(&e, Layer::Libxc, at))?;
                    self.state = State::LibxcRecords;
                    return Ok(Item::DomainHeader { offset: at, header });
                }
                State::LibxcRecords => return self.record(Layer::Libxc, check, offset),
                State::LibxlRecords | State::ColoAwaitingNew => {
                    return self.record(Layer::Libxl, check, offset)
                }
                State::AfterEnd => {
                    let at = self.src.offset();
                    let data = self
                        .src
                        .take_upto(1 << 20)
                        .map_err(|e| StreamError::io(at, &e))?;
                    if data.is_empty() {
                        self.state = State::Done { complete: true };
                        return Ok(Item::Eof { complete: true });
                    }
                    return Ok(Item::Trailing { offset: at, data });
                }
                State::Done { complete } => return Ok(Item::Eof { complete }),
            }
        }
    }

    fn xl_header(&mut self) -> Result<Item<'_>, StreamError> {
        let ctx = DecodeCtx::new(0).with_strictness(self.opts.strictness);
        let b = self.take(xl::XlHeader::SIZE, "xl_header", Layer::Xl)?;
        let header = xl::XlHeader::decode(b, &ctx)
            .map_err(|e| StreamError::from_decode(&e, Layer::Xl, 0))?;
        if header.optional_data_len > limits::XL_OPTIONAL_DATA_MAX {
            return Err(StreamError::invalid(
                xl::XlHeader::OPTIONAL_DATA_LEN_OFFSET as u64,
                "optional_data_len.max",
                format!(
                    "optional data of {} octets is over xenmig's limit of {}",
                    header.optional_data_len,
                    limits::XL_OPTIONAL_DATA_MAX
                ),
            )
            .with_item("xl xl_header"));
        }
        self.state = if header
            .mandatory_flags
            .contains(xl::XlMandatoryFlags::STREAMV2)
        {
            State::LibxlHeader
        } else {
            State::ImageHeader
        };
        let n = header.optional_data_len as usize;
        let optional_data = self.take(n, "optional data", Layer::Xl)?;
        Ok(Item::XlHeader {
            offset: 0,
            header,
            optional_data,
        })
    }

    /// When a PAGE_DATA body of `len` octets may be handed out without its page octets: the
    /// length of what precedes them (count, reserved, entries). Only a body whose length
    /// needs no padding and covers its entries, with page octets after them, is deferred;
    /// any other is read whole, and decoding it reports what is wrong with it.
    fn page_data_head(
        &mut self,
        layer: Layer,
        record_type: u32,
        len: usize,
        endian: Endian,
    ) -> Option<usize> {
        if !self.defer_pages
            || layer != Layer::Libxc
            || record_type != libxc::PageData::TYPE
            || padded_body_len(len) != len
        {
            return None;
        }
        // The count, read as the generated decoder reads it (its checks run on the head
        // once it is read).
        let b = self.src.peek(libxc::PageData::MIN_SIZE).ok()?;
        let mut c = Cursor::new(b, endian, libxc::PageData::NAME);
        c.take("count", libxc::PageData::COUNT_OFFSET).ok()?;
        let count = c.u32("count").ok()?;
        let head = (count as usize)
            .checked_mul(limits::PAGE_ENTRY_SIZE)?
            .checked_add(libxc::PageData::MIN_SIZE)?;
        (head < len).then_some(head)
    }

    /// Hands out a PAGE_DATA record whose first `head` octets are read (into `self.head`) and
    /// whose page octets stay in the input ([`Reader::read_deferred`]), checked by `check`:
    /// when it refuses the record, the page octets are read past first, and an input that
    /// ends inside them is reported as such, as a whole read would report it.
    fn deferred_record(
        &mut self,
        mut d: Deferred,
        at: u64,
        head: usize,
        mut ctx: DecodeCtx,
        check: Option<&mut (dyn ItemCheck + 'static)>,
        offset: u64,
    ) -> Result<Item<'_>, StreamError> {
        self.head.clear();
        self.head.resize(head, 0);
        match self.src.read_into(&mut self.head) {
            Ok(()) => d.read = head,
            Err(Short::Eof(k)) => {
                d.read = k;
                return Err(d.truncated());
            }
            Err(Short::Io(e)) => return Err(StreamError::io(d.body_at, &e)),
        }
        self.index += 1;
        ctx.deferred = d.len - head;
        let rec = RawRecord {
            layer: d.layer,
            index: d.index,
            offset: at,
            record_type: d.record_type,
            body: &self.head,
            ctx,
        };
        if let Some(c) = check {
            if let Err(e) = c.check(&Item::Record(rec), offset, self.colo) {
                return Err(match skip_pages(&mut self.src, d) {
                    Err(short) => short,
                    Ok(()) => e,
                });
            }
        }
        self.pending = Some(d);
        Ok(Item::Record(rec))
    }

    fn record(
        &mut self,
        layer: Layer,
        check: Option<&mut (dyn ItemCheck + 'static)>,
        offset: u64,
    ) -> Result<Item<'_>, StreamError> {
        let at = self.src.offset();
        let ctx = match layer {
            Layer::Libxl => self.libxl_ctx,
            _ => self.libxc_ctx,
        };
        let (record_type, len) = match self.src.take(RECORD_HEADER_SIZE) {
            Ok(h) => {
                // Read by hand rather than through `libxc::RecordHeader::decode`: this runs
                // once per record, and the two fields have nothing to check here.
                let (t, l) = h.split_at(RECORD_LENGTH_OFFSET.min(h.len()));
                let t: [u8; 4] = t.try_into().unwrap_or_default();
                let l: [u8; 4] = l.try_into().unwrap_or_default();
                match ctx.endian {
                    Endian::Little => (u32::from_le_bytes(t), u32::from_le_bytes(l)),
                    Endian::Big => (u32::from_be_bytes(t), u32::from_be_bytes(l)),
                }
            }
            Err(Short::Eof(0)) => {
                if self.checkpointed {
                    self.state = State::Done { complete: false };
                    return Ok(Item::Eof { complete: false });
                }
                let what = match layer {
                    Layer::Libxl => "the libxl END record",
                    _ => "the libxc END record",
                };
                return Err(StreamError::new(
                    ErrorKind::Truncated,
                    at,
                    "truncated",
                    format!("the input ends before {what}"),
                )
                .with_item(format!("{layer} stream")));
            }
            Err(Short::Eof(k)) => {
                return Err(StreamError::new(
                    ErrorKind::Truncated,
                    at,
                    "truncated",
                    format!("the input ends inside a record header: {RECORD_HEADER_SIZE} octets needed, {k} present"),
                )
                .with_record(self.index, format!("{layer} record header")))
            }
            Err(Short::Io(e)) => return Err(StreamError::io(at, &e)),
        };
        let index = self.index;
        // The record's name, for errors only (formatting it for every record costs more than
        // reading the record).
        let name = || record_name(layer, record_type);
        if len > limits::MAX_RECORD_LENGTH {
            return Err(StreamError::invalid(
                at + RECORD_LENGTH_OFFSET as u64,
                "body_length.max",
                format!(
                    "body length {len:#x} is over Xen's limit of {:#x} ({} MiB)",
                    limits::MAX_RECORD_LENGTH,
                    limits::MAX_RECORD_LENGTH >> 20
                ),
            )
            .with_record(index, format!("{layer} {}", name())));
        }
        let awaited_state = self.state == State::ColoAwaitingNew;
        if awaited_state && record_type != libxl::CheckpointState::TYPE {
            return Err(StreamError::invalid(
                at,
                "colo.checkpoint_state",
                format!(
                    "in a COLO stream the primary's CHECKPOINT_STATE follows each CHECKPOINT_END; found type {record_type:#x} (libxl {}, libxc {})",
                    libxl::RecordType::from_u32(record_type),
                    libxc::RecordType::from_u32(record_type)
                ),
            )
            .with_record(index, format!("{layer} record header")));
        }
        let len = len as usize;
        let padded = padded_body_len(len);
        let strict = self.opts.strictness.enforces(Level::Strict);
        let body_at = at + RECORD_HEADER_SIZE as u64;
        if let Some(head) = self.page_data_head(layer, record_type, len, ctx.endian) {
            let d = Deferred {
                layer,
                index,
                record_type,
                body_at,
                len,
                read: 0,
            };
            return self.deferred_record(d, at, head, ctx, check, offset);
        }
        // Records of a stream mostly come in runs of one size (full PAGE_DATA batches): warm
        // the headers a few records ahead, whose loads otherwise each stall on a cache and TLB
        // miss when the bodies between them are never read (a memory-mapped file).
        for ahead in 1..=PREFETCH_RECORDS {
            self.src
                .prefetch(ahead * (RECORD_HEADER_SIZE + padded) - RECORD_HEADER_SIZE);
        }
        let whole = match self.src.take(padded) {
            Ok(b) => b,
            Err(Short::Eof(k)) => {
                return Err(truncated_body(
                    layer,
                    index,
                    record_type,
                    body_at,
                    len,
                    padded - len,
                    k,
                ))
            }
            Err(Short::Io(e)) => return Err(StreamError::io(body_at, &e)),
        };
        let (body, padding) = whole.split_at(len.min(whole.len()));
        if strict && padding.iter().any(|b| *b != 0) {
            return Err(StreamError::invalid(
                body_at + len as u64,
                "padding",
                format!("padding after the body must be zero, found {padding:02x?}"),
            )
            .with_level(Level::Strict)
            .with_record(index, format!("{layer} {}", name())));
        }
        self.index += 1;
        // Follow the nesting.
        let role = match layer {
            Layer::Libxl => libxl::RecordType::from_u32(record_type)
                .info()
                .and_then(|i| i.role),
            _ => libxc::RecordType::from_u32(record_type)
                .info()
                .and_then(|i| i.role),
        };
        let mut ctx = ctx;
        match (layer, role) {
            (Layer::Libxc, Some(Role::End)) => {
                // In a checkpointed stream the libxc END ends the stream for libxl too: the
                // receiver fails over there and reads nothing more (format-reference §5,
                // "When libxc returns").
                self.state = if self.nested && !self.checkpointed {
                    State::LibxlRecords
                } else {
                    State::AfterEnd
                };
            }
            (Layer::Libxc, Some(Role::Checkpoint)) => {
                self.checkpointed = true;
                if self.nested {
                    self.libxc_paused = true;
                    self.state = State::LibxlRecords;
                }
            }
            (Layer::Libxl, Some(Role::LibxcContext)) => {
                self.state = State::ImageHeader;
            }
            (Layer::Libxl, Some(Role::CheckpointEnd)) if self.libxc_paused => {
                self.libxc_paused = false;
                self.state = if self.colo {
                    State::ColoAwaitingNew
                } else {
                    State::LibxcRecords
                };
            }
            (Layer::Libxl, Some(Role::CheckpointState)) if awaited_state => {
                self.state = State::LibxcRecords;
            }
            (Layer::Libxl, Some(Role::End)) => {
                self.state = State::AfterEnd;
            }
            _ => {}
        }
        if layer == Layer::Libxc && record_type == libxc::X86PvInfo::TYPE {
            if let Ok(info) = libxc::X86PvInfo::decode(body, &ctx) {
                self.libxc_ctx.guest_width = Some(info.guest_width as u64);
                ctx.guest_width = Some(info.guest_width as u64);
            }
        }
        Ok(Item::Record(RawRecord {
            layer,
            index,
            offset: at,
            record_type,
            body,
            ctx,
        }))
    }
}

/// Checks applied to every item a [`Reader`] yields, before its caller sees it.
///
/// The verifier is one ([`crate::verify::check_as_read`]): a restore, the libxl layer or a
/// listing that reads through a checked reader refuses what `xenmig verify` refuses, at the
/// same record with the same rule, without repeating the rules.
pub trait ItemCheck: Send {
    /// Checks `item`. `offset` is where the reader stood before reading it (for
    /// [`Item::Eof`], where the input ended); `colo` whether the stream is read as a COLO
    /// forward stream. An error stops the reader: it returns that error from then on.
    fn check(&mut self, item: &Item<'_>, offset: u64, colo: bool) -> Result<(), StreamError>;
}

/// A stream reader over a [`Source`], optionally checking every item it yields
/// ([`Reader::check_items`]).
pub struct Reader<S> {
    frames: Frames<S>,
    check: Option<Box<dyn ItemCheck>>,
    /// The error the check returned: the reader goes no further.
    refused: Option<StreamError>,
    /// An item was handed out: a check installed now would miss the stream's start.
    started: bool,
}

impl<'a> Reader<SliceSource<'a>> {
    /// A zero-copy reader over bytes (e.g. a memory-mapped file).
    pub fn from_slice(bytes: &'a [u8], opts: ReaderOptions) -> Self {
        Reader::new(SliceSource::new(bytes), opts)
    }
}

impl<R: Read> Reader<ReadSource<R>> {
    /// A reader over any `Read`, with bounded memory.
    pub fn from_read(r: R, opts: ReaderOptions) -> Self {
        Reader::new(ReadSource::new(r), opts)
    }
}

impl<S: Source> Reader<S> {
    /// A reader over any [`Source`].
    pub fn new(src: S, opts: ReaderOptions) -> Self {
        Reader {
            frames: Frames::new(src, opts),
            check: None,
            refused: None,
            started: false,
        }
    }

    /// How the reader reads (the framing it was given, and its strictness).
    pub fn options(&self) -> ReaderOptions {
        self.frames.opts
    }

    /// Runs `check` on every item from now on. Refused (false) once an item was handed out:
    /// the checks need the stream from its start.
    pub fn check_items(&mut self, check: Box<dyn ItemCheck>) -> bool {
        if self.started {
            return false;
        }
        self.check = Some(check);
        true
    }

    /// Whether the items are checked ([`Reader::check_items`]).
    pub fn is_checked(&self) -> bool {
        self.check.is_some()
    }

    /// Octets consumed so far.
    pub fn offset(&self) -> u64 {
        self.frames.src.offset()
    }

    /// Octets looked at so far: those consumed, or more when the framing was detected from
    /// octets that were then refused.
    pub fn examined(&self) -> u64 {
        self.offset().max(self.frames.peeked)
    }

    /// The input's length when known.
    pub fn len_hint(&self) -> Option<u64> {
        self.frames.src.len_hint()
    }

    /// The framing, once known.
    pub fn framing(&self) -> Option<Framing> {
        self.frames.framing
    }

    /// Whether the libxc image sits inside libxl framing.
    pub fn nested(&self) -> bool {
        self.frames.nested
    }

    /// Whether a libxc CHECKPOINT has been seen.
    pub fn checkpointed(&self) -> bool {
        self.frames.checkpointed
    }

    /// Reads a COLO forward stream: after each CHECKPOINT_END comes the primary's libxl
    /// CHECKPOINT_STATE, then the libxc records of the next checkpoint.
    pub fn colo(mut self) -> Self {
        self.frames.colo = true;
        self
    }

    /// [`Reader::colo`] on a reader already in use (before its first CHECKPOINT_END).
    pub fn set_colo(&mut self, colo: bool) {
        self.frames.colo = colo;
    }

    /// Whether the stream is read as a COLO forward stream.
    pub fn is_colo(&self) -> bool {
        self.frames.colo
    }

    /// The decode context of libxc records (version, byte order, guest width).
    pub fn libxc_ctx(&self) -> DecodeCtx {
        self.frames.libxc_ctx
    }

    /// The source, e.g. to continue reading after the libxc END.
    pub fn into_source(self) -> S {
        self.frames.src
    }

    /// Positions the reader at the start of a libxc image inside a stream whose outer layers
    /// someone else reads (the save helper after libxl's LIBXC_CONTEXT): it then stops after
    /// the libxc END or a CHECKPOINT.
    pub fn libxc_only(mut self) -> Self {
        self.frames.framing = Some(Framing::Libxc);
        self.frames.state = State::ImageHeader;
        self
    }

    /// Reads bare libxc records with no headers (the COLO back channel).
    pub fn libxc_records_only(mut self) -> Self {
        self.frames.framing = Some(Framing::Libxc);
        self.frames.state = State::LibxcRecords;
        self.frames.libxc_ctx.version = libxc::VERSION_WRITTEN;
        self
    }

    /// The framing: the one given in the options, or detected from the first 8 octets without
    /// consuming them (a `Read` source reads just those).
    pub fn detect_framing(&mut self) -> Result<Framing, StreamError> {
        self.frames.detect_framing()
    }

    /// From the next item on, hands a libxc PAGE_DATA record out with its page octets still
    /// in the input, when it is well framed (its length needs no padding and covers its
    /// entries): the body is what precedes the page octets, `ctx.deferred` counts those, and
    /// the decoded record's `pages` is empty. The caller then reads them where they belong
    /// with [`Reader::read_deferred`] (straight into guest frames); whatever it leaves unread
    /// is read past before the next item. Checks run on such a record as on a whole one, and
    /// a refusal or a short input is reported with the same rule and offset: when a check
    /// refuses the record, its page octets are read past first, so an input that also ends
    /// inside them is reported as truncated, as a whole read would.
    pub fn defer_page_data(&mut self, on: bool) {
        self.frames.defer_pages = on;
    }

    /// Page octets of the last record still to be read ([`Reader::defer_page_data`]).
    pub fn deferred(&self) -> usize {
        self.frames.pending.map_or(0, |d| d.left())
    }

    /// Reads the page octets of the last record ([`Reader::defer_page_data`]) into `dst`, in
    /// order; the lengths of `dst` must add up to [`Reader::deferred`]. An input that ends
    /// inside them is reported as [`Reader::next_item`] reports a truncated body.
    pub fn read_deferred(&mut self, dst: &mut [&mut [u8]]) -> Result<(), StreamError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        let r = self.frames.read_deferred(dst);
        if let Err(e) = &r {
            self.refused = Some(e.clone());
        }
        r
    }

    /// Reads past the page octets of the last record still in the input
    /// ([`Reader::defer_page_data`]); an input that ends inside them is reported as
    /// [`Reader::next_item`] reports a truncated body.
    pub fn skip_deferred(&mut self) -> Result<(), StreamError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        let r = self.frames.skip_deferred();
        if let Err(e) = &r {
            self.refused = Some(e.clone());
        }
        r
    }

    /// The next item, checked when the reader checks items.
    pub fn next_item(&mut self) -> Result<Item<'_>, StreamError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        self.started = true;
        match self.frames.next_item(self.check.as_deref_mut()) {
            Ok(item) => Ok(item),
            Err(e) => {
                if self.check.is_some() {
                    self.refused = Some(e.clone());
                }
                Err(e)
            }
        }
    }
}

fn endian_of(big: bool) -> Endian {
    if big {
        Endian::Big
    } else {
        Endian::Little
    }
}
