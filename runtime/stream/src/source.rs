//! Where stream bytes come from: a borrowed slice (files through a memory map, zero-copy) or
//! any `Read` (pipes, sockets, stdin) through one reusable buffer.

use std::io::{self, Read};

/// Bytes handed out in order. `take` returns exactly `n` bytes or reports how many were left.
pub trait Source {
    /// The next `n` bytes. On a short input, `Err(Short(available))` and nothing is consumed
    /// beyond what was available.
    fn take(&mut self, n: usize) -> Result<&[u8], Short>;
    /// Up to `n` bytes (fewer only at the end of input).
    fn take_upto(&mut self, n: usize) -> io::Result<&[u8]>;
    /// Up to `n` bytes without consuming them (fewer only at the end of input).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]>;
    /// Bytes consumed so far.
    fn offset(&self) -> u64;
    /// The input's total length when known (files).
    fn len_hint(&self) -> Option<u64>;
    /// A hint that the octet `ahead` octets past the current position will be wanted soon.
    fn prefetch(&self, ahead: usize) {
        let _ = ahead;
    }
    /// Reads the next `dst.len()` bytes into `dst`: a `Read` source reads them straight from
    /// its input (no copy through its buffer), a slice source copies them. On a short input,
    /// `Err(Short::Eof(k))`: the `k` bytes there were are consumed, `dst` holds no promise.
    fn read_into(&mut self, dst: &mut [u8]) -> Result<(), Short> {
        let b = self.take(dst.len())?;
        dst.copy_from_slice(b);
        Ok(())
    }
}

/// Why `take` could not return all the bytes asked for.
#[derive(Debug)]
pub enum Short {
    /// The input ended after this many of the requested bytes.
    Eof(usize),
    /// Reading failed.
    Io(io::Error),
}

/// A byte slice, read without copying.
#[derive(Debug, Clone)]
pub struct SliceSource<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> SliceSource<'a> {
    /// A source over `bytes`, positioned at their start.
    pub fn new(bytes: &'a [u8]) -> Self {
        SliceSource { bytes, pos: 0 }
    }

    /// [`Source::take`], borrowing from the input itself.
    fn take_slice(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let avail = self.bytes.len().saturating_sub(self.pos);
        if n > avail {
            self.pos = self.bytes.len();
            return Err(Short::Eof(avail));
        }
        let s = self.bytes.get(self.pos..self.pos + n).unwrap_or_default();
        self.pos += n;
        Ok(s)
    }

    /// [`Source::take_upto`], borrowing from the input itself.
    fn take_upto_slice(&mut self, n: usize) -> &'a [u8] {
        let avail = self.bytes.len().saturating_sub(self.pos);
        let n = n.min(avail);
        let s = self.bytes.get(self.pos..self.pos + n).unwrap_or_default();
        self.pos += n;
        s
    }

    /// [`Source::peek`], borrowing from the input itself.
    fn peek_slice(&self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.bytes.len());
        self.bytes.get(self.pos..end).unwrap_or_default()
    }
}

impl Source for SliceSource<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Short> {
        self.take_slice(n)
    }

    fn take_upto(&mut self, n: usize) -> io::Result<&[u8]> {
        Ok(self.take_upto_slice(n))
    }

    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        Ok(self.peek_slice(n))
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn len_hint(&self) -> Option<u64> {
        Some(self.bytes.len() as u64)
    }

    fn prefetch(&self, ahead: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(b) = self.bytes.get(self.pos.saturating_add(ahead)) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // Safety: a prefetch reads nothing (it only warms the cache and the TLB), the
            // address is inside the slice, and sse is part of x86_64's baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(b).cast()) };
        }
    }
}

/// Octets a [`MappedSource`] reads past before it releases them.
pub const RELEASE_STEP: usize = 8 << 20;

/// Releases start and end at multiples of this (a multiple of every page size in use).
const RELEASE_ALIGN: usize = 64 << 10;

/// A memory-mapped file, read in place like [`SliceSource`], that gives the pages it has
/// read past back to the kernel.
///
/// Mapped page-cache pages count in a process's resident size, and the kernel maps a whole
/// folio (and its fault-around neighbours) on each fault: a verifier that touches one header
/// per 32 KiB record would end up with the whole file resident. Every [`RELEASE_STEP`] octets
/// the part already consumed is dropped from the mapping with `MADV_DONTNEED`; the pages stay
/// in the page cache, and the resident size stays bounded whatever the file's size.
#[cfg(unix)]
#[derive(Debug)]
pub struct MappedSource {
    map: memmap2::Mmap,
    /// Offset in the map where the stream starts (a descriptor may be handed over part-read).
    start: usize,
    /// Position, from `start`.
    pos: usize,
    /// Offset in the map below which the pages were released.
    released: usize,
}

#[cfg(unix)]
impl MappedSource {
    /// Reads `map` from offset `start`.
    pub fn new(map: memmap2::Mmap, start: usize) -> Self {
        MappedSource {
            map,
            start,
            pos: 0,
            released: 0,
        }
    }

    /// The map back.
    pub fn into_map(self) -> memmap2::Mmap {
        self.map
    }

    /// The stream's bytes and the position in them, as a slice source.
    fn slice(&self) -> SliceSource<'_> {
        SliceSource {
            bytes: self.map.get(self.start..).unwrap_or_default(),
            pos: self.pos,
        }
    }

    /// Drops the pages read past from the mapping, once there are enough of them.
    fn release(&mut self) {
        let at = self.start.saturating_add(self.pos) / RELEASE_ALIGN * RELEASE_ALIGN;
        let at = at.min(self.map.len() / RELEASE_ALIGN * RELEASE_ALIGN);
        if at >= self.released.saturating_add(RELEASE_STEP) {
            // Safety: the range is inside the map and behind the position, and no slice of
            // it is alive (what `take` returns borrows `self` mutably, so it has ended by the
            // time `take` runs again). The map is a read-only shared mapping of a file, so a
            // later access would refault the same octets from the page cache.
            let done = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.released,
                    at - self.released,
                )
            };
            // A failure leaves the pages mapped: only the resident size suffers.
            if done.is_ok() {
                self.released = at;
            }
        }
    }
}

#[cfg(unix)]
impl Source for MappedSource {
    fn take(&mut self, n: usize) -> Result<&[u8], Short> {
        self.release();
        let mut s = SliceSource {
            bytes: self.map.get(self.start..).unwrap_or_default(),
            pos: self.pos,
        };
        let r = s.take_slice(n);
        self.pos = s.pos;
        r
    }

    fn take_upto(&mut self, n: usize) -> io::Result<&[u8]> {
        self.release();
        let mut s = SliceSource {
            bytes: self.map.get(self.start..).unwrap_or_default(),
            pos: self.pos,
        };
        let r = s.take_upto_slice(n);
        self.pos = s.pos;
        Ok(r)
    }

    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let s = SliceSource {
            bytes: self.map.get(self.start..).unwrap_or_default(),
            pos: self.pos,
        };
        Ok(s.peek_slice(n))
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn len_hint(&self) -> Option<u64> {
        Some(self.map.len().saturating_sub(self.start) as u64)
    }

    fn prefetch(&self, ahead: usize) {
        self.slice().prefetch(ahead);
    }
}

/// Size of the read-ahead buffer of [`ReadSource`].
pub const READ_BUFFER: usize = 1 << 20;

/// Any reader, through one buffer that grows to the largest item asked for (a record body is
/// at most 128 MiB, so memory stays bounded whatever the stream's length).
///
/// With `exact` set, it never reads past the bytes asked for, so another reader can continue
/// on the same file descriptor (the save helper shares its stream fd with libxl).
#[derive(Debug)]
pub struct ReadSource<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    offset: u64,
    exact: bool,
    len_hint: Option<u64>,
}

impl<R: Read> ReadSource<R> {
    /// A source reading `inner` from its current position, buffering one item at a time.
    pub fn new(inner: R) -> Self {
        ReadSource {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            offset: 0,
            exact: false,
            len_hint: None,
        }
    }

    /// Never read ahead of what is asked for.
    pub fn exact(mut self) -> Self {
        self.exact = true;
        self
    }

    /// Declares the input's length (for progress reports).
    pub fn with_len_hint(mut self, len: Option<u64>) -> Self {
        self.len_hint = len;
        self
    }

    /// The reader back, with any bytes read ahead but not consumed.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let rest = self
            .buf
            .get(self.start..self.end)
            .unwrap_or_default()
            .to_vec();
        (self.inner, rest)
    }

    /// Makes at least `n` bytes available from `start`, or as many as the input has.
    ///
    /// The buffer grows with the data that actually arrives (doubling, up to what is asked
    /// for), never to an announced size ahead of it: a record header announcing 128 MiB on a
    /// pipe that then stalls or closes costs what was sent, not 128 MiB. In `exact` mode
    /// nothing past the `n` bytes asked for is read.
    fn fill(&mut self, n: usize) -> io::Result<()> {
        if self.end - self.start >= n {
            return Ok(());
        }
        // Move what is left to the front, then read into the rest.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // The most the buffer may hold for this request, and the least it starts with.
        let most = if self.exact { n } else { n.max(READ_BUFFER) };
        let first = most.min(READ_BUFFER);
        if self.buf.len() < first {
            self.buf.resize(first, 0);
        }
        while self.end < n {
            if self.end >= self.buf.len() {
                let grown = self.buf.len().saturating_mul(2).clamp(first, most);
                if grown <= self.buf.len() {
                    break;
                }
                self.buf.resize(grown, 0);
            }
            let limit = if self.exact {
                n.min(self.buf.len())
            } else {
                self.buf.len()
            };
            let dst = match self.buf.get_mut(self.end..limit) {
                Some(d) if !d.is_empty() => d,
                _ => break,
            };
            match self.inner.read(dst) {
                Ok(0) => break,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Source for ReadSource<R> {
    fn take(&mut self, n: usize) -> Result<&[u8], Short> {
        self.fill(n).map_err(Short::Io)?;
        let avail = self.end - self.start;
        if avail < n {
            self.start = self.end;
            self.offset += avail as u64;
            return Err(Short::Eof(avail));
        }
        let s = self.start;
        self.start += n;
        self.offset += n as u64;
        Ok(self.buf.get(s..s + n).unwrap_or_default())
    }

    fn take_upto(&mut self, n: usize) -> io::Result<&[u8]> {
        self.fill(n)?;
        let k = n.min(self.end - self.start);
        let s = self.start;
        self.start += k;
        self.offset += k as u64;
        Ok(self.buf.get(s..s + k).unwrap_or_default())
    }

    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        self.fill(n)?;
        let k = n.min(self.end - self.start);
        Ok(self.buf.get(self.start..self.start + k).unwrap_or_default())
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn len_hint(&self) -> Option<u64> {
        self.len_hint
    }

    fn read_into(&mut self, dst: &mut [u8]) -> Result<(), Short> {
        // What was read ahead first, then straight from the input.
        let buffered = (self.end - self.start).min(dst.len());
        let (head, rest) = dst.split_at_mut(buffered);
        head.copy_from_slice(
            self.buf
                .get(self.start..self.start + buffered)
                .unwrap_or_default(),
        );
        self.start += buffered;
        self.offset += buffered as u64;
        let mut done = 0;
        while done < rest.len() {
            let Some(d) = rest.get_mut(done..) else { break };
            match self.inner.read(d) {
                Ok(0) => {
                    self.offset += done as u64;
                    return Err(Short::Eof(buffered + done));
                }
                Ok(k) => done += k.min(d.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.offset += done as u64;
                    return Err(Short::Io(e));
                }
            }
        }
        self.offset += done as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most 3 bytes a call.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_source_matches_slice_source() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        for exact in [false, true] {
            let mut a = SliceSource::new(&data);
            let mut b = ReadSource::new(Dribble(&data));
            if exact {
                b = b.exact();
            }
            for n in [1usize, 7, 8, 4096, 100, 3000] {
                assert_eq!(a.take(n).unwrap(), b.take(n).unwrap());
                assert_eq!(a.offset(), b.offset());
            }
            let left = data.len() - a.offset() as usize;
            assert!(matches!(b.take(left + 1), Err(Short::Eof(k)) if k == left));
        }
    }

    #[cfg(unix)]
    #[test]
    fn mapped_source_reads_like_a_slice_and_releases_behind() {
        let data: Vec<u8> = (0..(3 * RELEASE_STEP + 12345) as u32)
            .map(|i| (i ^ (i >> 13)) as u8)
            .collect();
        let path = std::env::temp_dir().join(format!("xenmig-mapped-{}", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // Safety: a private temporary file nobody else writes.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        std::fs::remove_file(&path).unwrap();
        let start = 100;
        let mut a = SliceSource::new(&data[start..]);
        let mut b = MappedSource::new(map, start);
        assert_eq!(b.len_hint(), Some((data.len() - start) as u64));
        for n in [8usize, 1 << 20, 7, 5 << 20, 4096, 3 << 20, 9 << 20] {
            assert_eq!(a.peek(16).unwrap(), b.peek(16).unwrap());
            assert_eq!(a.take(n).unwrap(), b.take(n).unwrap());
            assert_eq!(a.offset(), b.offset());
            b.prefetch(1 << 20);
        }
        assert_eq!(a.take_upto(1 << 30).unwrap(), b.take_upto(1 << 30).unwrap());
        assert!(b.released >= 2 * RELEASE_STEP, "released {}", b.released);
        assert!(matches!(b.take(1), Err(Short::Eof(0))));
        // Released pages read back from the page cache.
        assert_eq!(&b.into_map()[..], &data[..]);
    }

    /// A stream that announces more than it sends: the buffer follows what arrives.
    #[test]
    fn the_buffer_grows_with_the_data_not_the_request() {
        let data = [7u8; 56];
        for exact in [false, true] {
            let mut r = ReadSource::new(&data[..]);
            if exact {
                r = r.exact();
            }
            assert!(matches!(r.take(128 << 20), Err(Short::Eof(56))));
            assert!(
                r.buf.len() <= READ_BUFFER,
                "buffer of {} octets",
                r.buf.len()
            );
        }
        // Data that does arrive is all read, in doubling steps, whatever the read sizes.
        let data: Vec<u8> = (0..(5 * READ_BUFFER + 3) as u32).map(|i| i as u8).collect();
        for exact in [false, true] {
            let mut r = ReadSource::new(Dribble(&data));
            if exact {
                r = r.exact();
            }
            r.take(4).unwrap();
            let body = r.take(data.len() - 4).unwrap();
            assert_eq!(body, &data[4..]);
            assert!(
                r.buf.len() < 2 * data.len(),
                "buffer of {} octets",
                r.buf.len()
            );
        }
    }

    #[test]
    fn exact_never_reads_ahead() {
        let data = [1u8; 100];
        let mut r = ReadSource::new(&data[..]).exact();
        r.take(10).unwrap();
        let (rest, buffered) = r.into_parts();
        assert!(buffered.is_empty());
        assert_eq!(rest.len(), 90);
    }
}
