//! Writes streams: headers and framed records (`u32 type, u32 length, body, zero padding to
//! the record alignment`, [`libxc::RecordHeader`] and [`libxc::RECORD_ALIGNMENT`]).
//! Bodies are encoded by the generated codecs into a list of pieces; large pieces (page data,
//! blobs) are borrowed and go out with one vectored write, never copied. A record's page data
//! may also be produced while the record is written ([`StreamWriter::libxc_streamed`]): the
//! save driver reads a large batch 1 MiB at a time into a buffer that stays in cache.

use crate::limits::{
    padded_body_len, MAX_RECORD_LENGTH, RECORD_ALIGNMENT, RECORD_HEADER_SIZE, RECORD_LENGTH_OFFSET,
};
use crate::wire::{EncodeError, Endian, Sink};
use crate::{libxc, libxl, xl};
use std::io::{self, IoSlice, Write};

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing to the output failed.
    #[error("write failed at output offset {offset:#x}: {source}")]
    Io {
        /// Octets written before the failure.
        offset: u64,
        /// The failure.
        source: io::Error,
    },
    /// The record could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A value exceeds a limit Xen's reader enforces.
    #[error("{record}: {what} is {value}, Xen's limit is {limit}")]
    Cap {
        /// The record.
        record: &'static str,
        /// What exceeds the limit.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The encoded record no longer says what it was encoded from: its octets changed in
    /// this process's memory between encoding and writing. Nothing of it was written.
    #[error(
        "the {record} record at output offset {offset:#x} changed in memory after it was \
         encoded ({detail}); it was not written"
    )]
    Changed {
        /// The record.
        record: &'static str,
        /// Where it would have started in the output.
        offset: u64,
        /// What changed.
        detail: String,
    },
}

impl WriteError {
    /// The I/O error behind this one, if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            WriteError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Pieces of one encoded body: copied bytes live in `scratch`, borrowed ones are referenced.
/// The list lives on the stack (records have a handful of parts), so framing a record
/// allocates nothing once the scratch buffers have grown.
struct Pieces<'a> {
    scratch: Vec<u8>,
    inline: [Piece<'a>; INLINE_PIECES],
    n: usize,
    overflow: Vec<Piece<'a>>,
}

/// Parts a record body is written in without a heap list.
const INLINE_PIECES: usize = 16;

#[derive(Clone, Copy)]
enum Piece<'a> {
    Copied(usize, usize),
    Borrowed(&'a [u8]),
}

impl<'a> Pieces<'a> {
    /// An empty list whose copied bytes go to `scratch` (cleared; its capacity is reused).
    fn over(mut scratch: Vec<u8>) -> Self {
        scratch.clear();
        Pieces {
            scratch,
            inline: [Piece::Copied(0, 0); INLINE_PIECES],
            n: 0,
            overflow: Vec::new(),
        }
    }

    fn push(&mut self, p: Piece<'a>) {
        match self.inline.get_mut(self.n) {
            Some(slot) if self.overflow.is_empty() => {
                *slot = p;
                self.n += 1;
            }
            _ => self.overflow.push(p),
        }
    }

    fn last_mut(&mut self) -> Option<&mut Piece<'a>> {
        if let Some(p) = self.overflow.last_mut() {
            return Some(p);
        }
        self.n.checked_sub(1).and_then(|i| self.inline.get_mut(i))
    }

    fn iter(&self) -> impl Iterator<Item = &Piece<'a>> {
        self.inline.iter().take(self.n).chain(self.overflow.iter())
    }

    fn len(&self) -> usize {
        self.n + self.overflow.len()
    }
}

impl<'a> Sink<'a> for Pieces<'a> {
    fn copy(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.scratch.len();
        self.scratch.extend_from_slice(bytes);
        let end = self.scratch.len();
        match self.last_mut() {
            Some(Piece::Copied(_, e)) if *e == start => *e = end,
            _ => self.push(Piece::Copied(start, end)),
        }
    }
    fn borrow(&mut self, bytes: &'a [u8]) {
        if !bytes.is_empty() {
            self.push(Piece::Borrowed(bytes));
        }
    }
}

/// Slices for one vectored write, on the stack unless there are more than a record has.
struct Slices<'a> {
    inline: [IoSlice<'a>; INLINE_PIECES + 2],
    n: usize,
    spill: Vec<IoSlice<'a>>,
}

impl<'a> Slices<'a> {
    fn new() -> Self {
        Slices {
            inline: [IoSlice::new(&[]); INLINE_PIECES + 2],
            n: 0,
            spill: Vec::new(),
        }
    }

    /// Adds `b` (empty slices are left out).
    fn push(&mut self, b: &'a [u8]) {
        if b.is_empty() {
            return;
        }
        match self.inline.get_mut(self.n) {
            Some(slot) if self.spill.is_empty() => {
                *slot = IoSlice::new(b);
                self.n += 1;
            }
            _ => {
                if self.spill.is_empty() {
                    self.spill.extend_from_slice(&self.inline);
                }
                self.spill.push(IoSlice::new(b));
            }
        }
    }

    fn as_mut(&mut self) -> &mut [IoSlice<'a>] {
        if self.spill.is_empty() {
            self.inline.get_mut(..self.n).unwrap_or_default()
        } else {
            &mut self.spill
        }
    }
}

/// Encoded pieces of a record, in order.
type PieceList<'p> = Vec<&'p [u8]>;

/// The encoded pieces of a record of `len` octets before and after `part` (a borrowed piece,
/// matched by address and length), which must stand among them exactly once.
fn split_at_part<'p>(
    pieces: &'p Pieces<'_>,
    part: &[u8],
    name: &'static str,
    len: usize,
) -> Result<(PieceList<'p>, PieceList<'p>), WriteError> {
    let is_part = |p: &Piece<'_>| matches!(p, Piece::Borrowed(s) if std::ptr::eq(s.as_ptr(), part.as_ptr()) && s.len() == part.len());
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let (mut produced, mut found) = (0usize, 0usize);
    for p in pieces.iter() {
        let bytes: &[u8] = match p {
            Piece::Copied(a, b) => pieces.scratch.get(*a..*b).unwrap_or_default(),
            Piece::Borrowed(s) => s,
        };
        produced += bytes.len();
        if is_part(p) {
            found += 1;
        } else if found > 0 {
            after.push(bytes);
        } else {
            before.push(bytes);
        }
    }
    if produced != len || found != 1 {
        return Err(WriteError::Encode(EncodeError {
            item: name,
            field: "(body)",
            rule: None,
            detail: format!(
                "encoded {produced} octets, expected {len}; the part written apart found {found} times"
            ),
        }));
    }
    Ok((before, after))
}

/// Zero padding source.
const ZEROS: [u8; RECORD_ALIGNMENT] = [0; RECORD_ALIGNMENT];

/// Writes `bufs` completely, retrying on short writes and interruptions.
pub fn write_all_vectored<W: Write + ?Sized>(
    out: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Xen's cap on a PAGE_DATA batch.
fn check_batch(record: &libxc::Record<'_>) -> Result<(), WriteError> {
    if let libxc::Record::PageData(p) = record {
        let n = p.entries.len() as u64;
        if n > libxc::MAX_BATCH_SIZE as u64 {
            return Err(WriteError::Cap {
                record: "PAGE_DATA",
                what: "the batch's pfn count",
                value: n,
                limit: libxc::MAX_BATCH_SIZE as u64,
            });
        }
    }
    Ok(())
}

/// The octets of an encoded body, piece by piece.
fn piece_octets<'p>(pieces: &'p Pieces<'_>) -> impl Iterator<Item = &'p [u8]> + 'p {
    pieces.iter().map(move |p| match p {
        Piece::Copied(a, b) => pieces.scratch.get(*a..*b).unwrap_or_default(),
        Piece::Borrowed(s) => s,
    })
}

/// For a PAGE_DATA record: the encoded entries, read back from the pieces just before they
/// are written, must still be the record's entries. The saver checks each batch's entries
/// before encoding ([`crate::save`]); this closes the gap between encoding and the write, in
/// which a real-Xen dom0 was seen to change a record's first entries (see
/// `realxen/README.md`). About 8 KiB compared per batch; the page data is not.
fn check_encoded_entries(
    record: &libxc::Record<'_>,
    endian: Endian,
    pieces: &Pieces<'_>,
    offset: u64,
) -> Result<(), WriteError> {
    let libxc::Record::PageData(p) = record else {
        return Ok(());
    };
    // The body: count u32, reserved u32, then one u64 per entry.
    let first = libxc::PageData::ENTRIES_OFFSET;
    let mut at = 0usize;
    let mut word = [0u8; 8];
    let mut filled = 0usize;
    let mut index = 0usize;
    let n = p.entries.len();
    for part in piece_octets(pieces) {
        for &b in part {
            if at >= first && index < n {
                word[filled] = b;
                filled += 1;
                if filled == 8 {
                    let got = match endian {
                        Endian::Little => u64::from_le_bytes(word),
                        Endian::Big => u64::from_be_bytes(word),
                    };
                    let want = p.entries.get(index).map_or(0, |e| e.0);
                    if got != want {
                        return Err(WriteError::Changed {
                            record: "PAGE_DATA",
                            offset,
                            detail: format!("entry {index} reads {got:#x}, was {want:#x}"),
                        });
                    }
                    filled = 0;
                    index += 1;
                }
            }
            at += 1;
            if index >= n {
                return Ok(());
            }
        }
    }
    if index < n {
        return Err(WriteError::Changed {
            record: "PAGE_DATA",
            offset,
            detail: format!("{index} of {n} entries encoded"),
        });
    }
    Ok(())
}

/// A body's length padded to the record alignment, within Xen's cap on a record.
fn padded_len(name: &'static str, len: usize) -> Result<usize, WriteError> {
    let padded = padded_body_len(len);
    if padded as u64 > MAX_RECORD_LENGTH as u64 {
        return Err(WriteError::Cap {
            record: name,
            what: "the padded body length",
            value: padded as u64,
            limit: MAX_RECORD_LENGTH as u64,
        });
    }
    Ok(padded)
}

/// The record header ([`libxc::RecordHeader`]): type, then body length. Written by hand
/// rather than through the generated encoder to stay off the heap on every record.
fn record_header(endian: Endian, record_type: u32, len: usize) -> [u8; RECORD_HEADER_SIZE] {
    let (t, l) = match endian {
        Endian::Little => (record_type.to_le_bytes(), (len as u32).to_le_bytes()),
        Endian::Big => (record_type.to_be_bytes(), (len as u32).to_be_bytes()),
    };
    let mut header = [0u8; RECORD_HEADER_SIZE];
    let (th, lh) = header.split_at_mut(RECORD_LENGTH_OFFSET);
    th.copy_from_slice(&t);
    lh.copy_from_slice(&l);
    header
}

/// A stream writer over any `Write`.
pub struct StreamWriter<W> {
    out: W,
    endian: Endian,
    offset: u64,
    scratch: Vec<u8>,
    /// Scratch for encoders (arrays given as values).
    tmp: Vec<u8>,
    records: u64,
}

impl<W: Write> StreamWriter<W> {
    /// A writer for little-endian streams.
    pub fn new(out: W) -> Self {
        StreamWriter {
            out,
            endian: Endian::Little,
            offset: 0,
            scratch: Vec::with_capacity(64 * 1024),
            tmp: Vec::with_capacity(64 * 1024),
            records: 0,
        }
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The output, mutably (what is written to it directly is not counted in [`Self::offset`]).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The output, giving the writer up.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        let offset = self.offset;
        self.out
            .flush()
            .map_err(|source| WriteError::Io { offset, source })
    }

    /// Bytes written as they are (e.g. a trailer copied from elsewhere).
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let offset = self.offset;
        self.out
            .write_all(bytes)
            .map_err(|source| WriteError::Io { offset, source })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// The xl save-file header and its optional data (whose length the header must give).
    pub fn xl_header(
        &mut self,
        header: &xl::XlHeader,
        optional_data: &[u8],
    ) -> Result<(), WriteError> {
        if header.optional_data_len as usize != optional_data.len() {
            return Err(EncodeError {
                item: "xl_header",
                field: "optional_data_len",
                rule: None,
                detail: format!(
                    "is {} but {} octets of optional data were given",
                    header.optional_data_len,
                    optional_data.len()
                ),
            }
            .into());
        }
        let mut h = header.encode(Endian::HOST)?;
        h.extend_from_slice(optional_data);
        self.raw(&h)
    }

    /// The libxl stream header.
    pub fn libxl_header(&mut self, header: &libxl::LibxlHeader) -> Result<(), WriteError> {
        let h = header.encode(Endian::Big)?;
        self.raw(&h)
    }

    /// The libxc image header; its options decide the byte order of what follows.
    pub fn image_header(&mut self, header: &libxc::ImageHeader) -> Result<(), WriteError> {
        let h = header.encode(Endian::Big)?;
        self.endian = if header.options.contains(libxc::ImageOptions::BIG_ENDIAN) {
            Endian::Big
        } else {
            Endian::Little
        };
        self.raw(&h)
    }

    /// Sets the byte order of what follows, as [`StreamWriter::image_header`] does from the
    /// header's options; for an image header written with [`StreamWriter::raw`] (a test
    /// writing a big-endian image, which the encoder refuses since Xen does).
    pub fn set_endian(&mut self, endian: Endian) {
        self.endian = endian;
    }

    /// The libxc domain header.
    pub fn domain_header(&mut self, header: &libxc::DomainHeader) -> Result<(), WriteError> {
        let h = header.encode(self.endian)?;
        self.raw(&h)
    }

    /// A libxc record, checked against Xen's caps.
    pub fn libxc(&mut self, record: &libxc::Record<'_>) -> Result<(), WriteError> {
        check_batch(record)?;
        let t = record.record_type().to_u32();
        let name = record.record_type().name();
        let endian = self.endian;
        self.framed(
            t,
            name,
            record.encoded_len(),
            |sink, scratch| record.encode_to(endian, sink, scratch),
            |pieces, offset| check_encoded_entries(record, endian, pieces, offset),
        )
    }

    /// A libxc record one of whose borrowed parts, `streamed` (a slice of the record's own
    /// data, by address and length), is not read from memory as it stands: its octets are
    /// produced `chunk_octets` at a time by `fill(range_in_streamed, chunk)` into `chunk` and
    /// written right away. The record's layout, lengths and caps are still the codec's and
    /// [`StreamWriter::libxc`]'s; what `streamed` holds is never read. Large page batches go
    /// out this way so that the pages are read into a buffer small enough to stay in cache
    /// until the write copies them. An error from `fill` or the output leaves the stream cut
    /// inside this record.
    pub fn libxc_streamed<E: From<WriteError>>(
        &mut self,
        record: &libxc::Record<'_>,
        streamed: &[u8],
        chunk: &mut Vec<u8>,
        chunk_octets: usize,
        mut fill: impl FnMut(std::ops::Range<usize>, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.libxc_with_part(record, streamed, |w, header, before, after| {
            let start = w.offset;
            let io = |offset: u64| move |source| WriteError::Io { offset, source };
            let mut written = before.iter().map(|s| s.len() as u64).sum::<u64>();
            let mut first = Slices::new();
            first.push(header);
            for b in before {
                first.push(b);
            }
            write_all_vectored(&mut w.out, first.as_mut()).map_err(io(start))?;
            let step = chunk_octets.max(1);
            if chunk.len() < step.min(streamed.len()) {
                chunk.resize(step.min(streamed.len()), 0);
            }
            written += header.len() as u64;
            let mut at = 0;
            while at < streamed.len() {
                let end = (at + step).min(streamed.len());
                let buf = chunk.get_mut(..end - at).unwrap_or_default();
                fill(at..end, buf)?;
                w.out.write_all(buf).map_err(io(start + written))?;
                written += (end - at) as u64;
                at = end;
            }
            let mut rest = Slices::new();
            for a in after {
                rest.push(a);
            }
            write_all_vectored(&mut w.out, rest.as_mut()).map_err(io(start + written))?;
            Ok(())
        })
    }

    /// A libxc record one of whose borrowed parts, `gathered` (a slice of the record's own
    /// data, by address and length), is written from `parts` instead: octets elsewhere in
    /// memory, as many as `gathered` holds, in order. Everything goes out in one vectored
    /// write, so a save sends pages lent by the domain (its mapped frames) without copying
    /// them first. The record's layout, lengths and caps are the codec's and
    /// [`StreamWriter::libxc`]'s; what `gathered` holds is never read. An error from the
    /// output leaves the stream cut inside this record.
    pub fn libxc_gathered(
        &mut self,
        record: &libxc::Record<'_>,
        gathered: &[u8],
        parts: &[&[u8]],
    ) -> Result<(), WriteError> {
        let parts_len: usize = parts.iter().map(|p| p.len()).sum();
        if parts_len != gathered.len() {
            return Err(WriteError::Encode(EncodeError {
                item: record.record_type().name(),
                field: "(body)",
                rule: None,
                detail: format!(
                    "given {parts_len} octets for the {} of the gathered part",
                    gathered.len()
                ),
            }));
        }
        self.libxc_with_part(record, gathered, |w, header, before, after| {
            let mut slices = Slices::new();
            slices.push(header);
            for b in before.iter().chain(parts).chain(after) {
                slices.push(b);
            }
            let start = w.offset;
            write_all_vectored(&mut w.out, slices.as_mut()).map_err(|source| WriteError::Io {
                offset: start,
                source,
            })?;
            Ok(())
        })
    }

    /// Encodes and checks a libxc record as [`StreamWriter::libxc`] does, then has `write`
    /// send it: given the record header and the encoded pieces before and after `part` (one
    /// of the record's borrowed slices, by address and length, found exactly once; the
    /// padding is in `after`), `write` puts the octets of `part` between them itself. The
    /// offset and record count move on only when `write` succeeds.
    fn libxc_with_part<E: From<WriteError>>(
        &mut self,
        record: &libxc::Record<'_>,
        part: &[u8],
        write: impl FnOnce(&mut Self, &[u8], &[&[u8]], &[&[u8]]) -> Result<(), E>,
    ) -> Result<(), E> {
        check_batch(record)?;
        let name = record.record_type().name();
        let len = record.encoded_len();
        let padded = padded_len(name, len)?;
        let mut pieces = Pieces::over(std::mem::take(&mut self.scratch));
        let mut tmp = std::mem::take(&mut self.tmp);
        let r = record.encode_to(self.endian, &mut pieces, &mut tmp);
        self.tmp = tmp;
        let split = r
            .map_err(WriteError::Encode)
            .and_then(|()| check_encoded_entries(record, self.endian, &pieces, self.offset))
            .and_then(|()| split_at_part(&pieces, part, name, len));
        let result = match split {
            Err(e) => Err(e.into()),
            Ok((before, mut after)) => {
                after.push(ZEROS.get(..padded - len).unwrap_or_default());
                let header = record_header(self.endian, record.record_type().to_u32(), len);
                write(self, &header, &before, &after)
            }
        };
        self.scratch = pieces.scratch;
        if result.is_ok() {
            self.offset += (RECORD_HEADER_SIZE + padded) as u64;
            self.records += 1;
        }
        result
    }

    /// A libxl record.
    pub fn libxl(&mut self, record: &libxl::Record<'_>) -> Result<(), WriteError> {
        let t = record.record_type().to_u32();
        let name = record.record_type().name();
        let endian = self.endian;
        self.framed(
            t,
            name,
            record.encoded_len(),
            |sink, scratch| record.encode_to(endian, sink, scratch),
            |_, _| Ok(()),
        )
    }

    /// Frames one body: header, the encoded pieces, padding; one vectored write.
    fn framed<'a, F>(
        &mut self,
        record_type: u32,
        name: &'static str,
        len: usize,
        encode: F,
        check: impl FnOnce(&Pieces<'a>, u64) -> Result<(), WriteError>,
    ) -> Result<(), WriteError>
    where
        F: FnOnce(&mut Pieces<'a>, &mut Vec<u8>) -> Result<(), EncodeError>,
    {
        let padded = padded_len(name, len)?;
        let mut pieces = Pieces::over(std::mem::take(&mut self.scratch));
        let header = record_header(self.endian, record_type, len);
        let mut tmp = std::mem::take(&mut self.tmp);
        let r = encode(&mut pieces, &mut tmp);
        self.tmp = tmp;
        let result = match r {
            Err(e) => Err(WriteError::Encode(e)),
            Ok(()) => {
                let produced: usize = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Copied(a, b) => b - a,
                        Piece::Borrowed(s) => s.len(),
                    })
                    .sum();
                if produced != len {
                    Err(WriteError::Encode(EncodeError {
                        item: name,
                        field: "(body)",
                        rule: None,
                        detail: format!("encoded {produced} octets, expected {len}"),
                    }))
                } else if let Err(e) = check(&pieces, self.offset) {
                    Err(e)
                } else {
                    let pad = padded - len;
                    let parts = pieces.iter().map(|p| match p {
                        Piece::Copied(a, b) => pieces.scratch.get(*a..*b).unwrap_or_default(),
                        Piece::Borrowed(s) => s,
                    });
                    let all = std::iter::once(&header[..])
                        .chain(parts)
                        .chain(std::iter::once(ZEROS.get(..pad).unwrap_or_default()))
                        .filter(|s| !s.is_empty());
                    let offset = self.offset;
                    let written = if pieces.len() + 2 <= INLINE_PIECES + 2 {
                        let mut slices = [IoSlice::new(&[]); INLINE_PIECES + 2];
                        let mut k = 0;
                        for (slot, part) in slices.iter_mut().zip(all) {
                            *slot = IoSlice::new(part);
                            k += 1;
                        }
                        write_all_vectored(&mut self.out, slices.get_mut(..k).unwrap_or_default())
                    } else {
                        let mut slices: Vec<IoSlice<'_>> = all.map(IoSlice::new).collect();
                        write_all_vectored(&mut self.out, &mut slices)
                    };
                    written.map_err(|source| WriteError::Io { offset, source })
                }
            }
        };
        self.scratch = pieces.scratch;
        if result.is_ok() {
            self.offset += (RECORD_HEADER_SIZE + padded) as u64;
            self.records += 1;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::PAGE_SIZE;
    use crate::wire::Array;

    /// Encodes `rec` into pieces as `StreamWriter::libxc` does.
    fn encoded<'a>(rec: &'a libxc::Record<'a>) -> Pieces<'a> {
        let mut pieces = Pieces::over(Vec::new());
        let mut tmp = Vec::new();
        rec.encode_to(Endian::Little, &mut pieces, &mut tmp)
            .unwrap();
        pieces
    }

    #[test]
    fn encoded_entries_that_changed_before_the_write_are_refused() {
        let entries: Vec<libxc::PageEntry> = (0x34400..0x34800)
            .map(|p| {
                libxc::PageEntry::default()
                    .with_pfn(p)
                    .with_page_type(libxc::PageType::XTAB)
            })
            .collect();
        let rec = libxc::Record::PageData(libxc::PageData {
            reserved: 0,
            entries: Array::Values(&entries),
            pages: &[],
        });
        let mut pieces = encoded(&rec);
        check_encoded_entries(&rec, Endian::Little, &pieces, 0x40).unwrap();
        // What the real-Xen capture showed: the first entry replaced by another word.
        let at = pieces
            .scratch
            .windows(8)
            .position(|w| w == entries[0].0.to_le_bytes())
            .unwrap();
        pieces.scratch[at..at + 8].copy_from_slice(&0x59307b3u64.to_le_bytes());
        let e = check_encoded_entries(&rec, Endian::Little, &pieces, 0x40).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, WriteError::Changed { offset: 0x40, .. }),
            "{text}"
        );
        assert!(text.contains("entry 0 reads 0x59307b3"), "{text}");
        // A change at the last entry is seen as well.
        let mut pieces = encoded(&rec);
        let last = entries[1023].0.to_le_bytes();
        let at = pieces.scratch.windows(8).position(|w| w == last).unwrap();
        pieces.scratch[at] ^= 1;
        let e = check_encoded_entries(&rec, Endian::Little, &pieces, 0).unwrap_err();
        assert!(e.to_string().contains("entry 1023"), "{e}");
    }

    #[test]
    fn frames_with_padding_and_caps() {
        let mut w = StreamWriter::new(Vec::new());
        let entries = [libxc::PageEntry::default().with_pfn(5)];
        let page = [7u8; PAGE_SIZE];
        let rec = page_data(&entries, &page);
        w.libxc(&rec).unwrap();
        w.libxc(&libxc::Record::X86PvInfo(libxc::X86PvInfo {
            guest_width: 8,
            pt_levels: 4,
            ..Default::default()
        }))
        .unwrap();
        let out = w.into_inner();
        assert_eq!(&out[..8], &[1, 0, 0, 0, 16, 16, 0, 0]);
        assert_eq!(out.len(), 8 + 4112 + 8 + 8);

        let xtab = libxc::PageEntry::default().with_page_type(libxc::PageType::XTAB);
        let many = vec![xtab; libxc::MAX_BATCH_SIZE as usize + 1];
        let mut w = StreamWriter::new(Vec::new());
        let rec = page_data(&many, &[]);
        assert!(matches!(w.libxc(&rec), Err(WriteError::Cap { .. })));
        assert!(w.into_inner().is_empty());
    }

    /// `n` PAGE_DATA entries from pfn `first`, and their pages, octet `i` being
    /// `i * mul % modulo`.
    fn batch(n: u64, first: u64, mul: usize, modulo: usize) -> (Vec<libxc::PageEntry>, Vec<u8>) {
        let entries = (0..n)
            .map(|i| libxc::PageEntry::default().with_pfn(first + i))
            .collect();
        let pages = (0..n as usize * PAGE_SIZE)
            .map(|i| (i * mul % modulo) as u8)
            .collect();
        (entries, pages)
    }

    fn page_data<'a>(entries: &'a [libxc::PageEntry], pages: &'a [u8]) -> libxc::Record<'a> {
        libxc::Record::PageData(libxc::PageData {
            reserved: 0,
            entries: Array::Values(entries),
            pages,
        })
    }

    #[test]
    fn gathered_page_data_is_the_same_record() {
        let (entries, pages) = batch(3, 7, 13, 241);
        let record = |pages| page_data(&entries, pages);
        let mut w = StreamWriter::new(Vec::new());
        w.libxc(&record(&pages)).unwrap();
        let want = w.into_inner();
        let placeholder = vec![0xeeu8; pages.len()];
        // The octets cut anywhere, as a domain may lend them.
        let parts: Vec<&[u8]> = vec![&pages[..1], &pages[1..5000], &[], &pages[5000..]];
        let mut w = StreamWriter::new(Vec::new());
        w.libxc_gathered(&record(&placeholder), &placeholder, &parts)
            .unwrap();
        assert_eq!((w.offset(), w.records()), (want.len() as u64, 1));
        assert_eq!(w.into_inner(), want);
        // Parts of another length, or a placeholder the record does not hold: refused,
        // nothing written, nothing counted.
        let mut w = StreamWriter::new(Vec::new());
        let short: Vec<&[u8]> = vec![&pages[..PAGE_SIZE]];
        assert!(matches!(
            w.libxc_gathered(&record(&placeholder), &placeholder, &short),
            Err(WriteError::Encode(_))
        ));
        let other = vec![0u8; pages.len()];
        assert!(matches!(
            w.libxc_gathered(&record(&placeholder), &other, &parts),
            Err(WriteError::Encode(_))
        ));
        assert_eq!((w.offset(), w.records()), (0, 0));
        assert!(w.into_inner().is_empty());
    }

    #[test]
    fn streamed_page_data_is_the_same_record() {
        let (entries, pages) = batch(5, 100, 7, 251);
        let mut w = StreamWriter::new(Vec::new());
        w.libxc(&page_data(&entries, &pages)).unwrap();
        let want = w.into_inner();
        // A placeholder of the right length; the octets come from `fill`, in pieces of every
        // size from one octet to more than the whole.
        let placeholder = vec![0xeeu8; pages.len()];
        const P: usize = PAGE_SIZE;
        for step in [1, P - 1, P, 3 * P, 5 * P, 8 * P] {
            let mut w = StreamWriter::new(Vec::new());
            let record = page_data(&entries, &placeholder);
            let mut chunk = Vec::new();
            let mut calls = 0;
            w.libxc_streamed(&record, &placeholder, &mut chunk, step, |r, buf| {
                calls += 1;
                buf.copy_from_slice(&pages[r]);
                Ok::<(), WriteError>(())
            })
            .unwrap();
            assert_eq!(calls, pages.len().div_ceil(step), "step {step}");
            assert_eq!((w.offset(), w.records()), (want.len() as u64, 1));
            assert_eq!(w.into_inner(), want, "step {step}");
        }

        // A failing fill stops the record there and is what the call returns.
        let mut w = StreamWriter::new(Vec::new());
        let record = page_data(&entries, &placeholder);
        let err = w
            .libxc_streamed(&record, &placeholder, &mut Vec::new(), P, |r, buf| {
                if r.start >= 2 * P {
                    return Err(WriteError::Cap {
                        record: "test",
                        what: "fill",
                        value: r.start as u64,
                        limit: 0,
                    });
                }
                buf.fill(1);
                Ok(())
            })
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Cap { value, .. } if value == 2 * P as u64),
            "{err}"
        );
        assert_eq!(w.records(), 0);

        // `streamed` must be a part of the record.
        let other = vec![0u8; pages.len()];
        let mut w = StreamWriter::new(Vec::new());
        let err = w
            .libxc_streamed(&record, &other, &mut Vec::new(), P, |_, _| {
                Ok::<(), WriteError>(())
            })
            .unwrap_err();
        assert!(matches!(err, WriteError::Encode(_)), "{err}");
        assert!(w.into_inner().is_empty());

        // Xen's caps hold as for any record.
        let over = libxc::MAX_BATCH_SIZE as usize + 1;
        let many = vec![libxc::PageEntry::default(); over];
        let big = vec![0u8; over * P];
        let record = page_data(&many, &big);
        let mut w = StreamWriter::new(Vec::new());
        let err = w
            .libxc_streamed(&record, &big, &mut Vec::new(), P, |_, _| {
                Ok::<(), WriteError>(())
            })
            .unwrap_err();
        assert!(matches!(err, WriteError::Cap { .. }), "{err}");
    }

    #[test]
    fn odd_lengths_are_padded_with_zeros() {
        let mut w = StreamWriter::new(Vec::new());
        let ctx = [9u8; 13];
        w.libxc(&libxc::Record::HvmContext(libxc::HvmContext {
            context: &ctx,
        }))
        .unwrap();
        let out = w.into_inner();
        assert_eq!(out.len(), 8 + 16);
        assert_eq!(&out[4..8], &13u32.to_le_bytes());
        assert!(out[8 + 13..].iter().all(|b| *b == 0));
    }
}
