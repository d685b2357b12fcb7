//! The [`LegacySource`] [`convert_file_to`](super::convert_file_to) reads a file through, and
//! the [`GatherWriter`] it writes through, which share the windows the file is read into.
//!
//! The file is read with positioned reads. Small reads (chunk ids, counts, pfn lists) are
//! copied out of a window read ahead; the page data of a batch that fits a window
//! ([`WINDOW`] octets) is lent in place. The writer, handed a record whose page data lies in
//! the current window, keeps a reference to the window instead of copying the octets, and
//! writes many records at once with one vectored write. So small batches' page data goes from
//! the input's page cache into the window and from the window into the output, both copies the
//! kernel's, as `cat` copies; the two copies it also took in user space (into the batch buffer,
//! then into an output buffer) cost 0.04 s per GiB of 8-pfn batches, now 0.01 s. Larger batches
//! are read straight into the converter's own buffer and written straight from it. A window
//! the writer still refers to is never written again: the source reads into another, and
//! windows come back for reuse once written out.
//!
//! Lending from a memory map of the input ([`super::MappedFile`]) also saves the copy, but
//! populating and dropping the map cost more than it saves there.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::legacy::{LegacySource, Lent};
use super::positioned::Positioned;
use super::writer::write_all_vectored;

/// Octets read from the input at a time to lend page data from; a batch with more page data
/// than this is read into the converter's own buffer (and written straight from it) instead.
pub const WINDOW: usize = 1 << 20;
/// Octets read ahead of a small read (chunk ids, counts, pfn lists), from a file here and from
/// a stream by [`super::convert_to`]'s buffer: a large batch's page data after them is not
/// read ahead only to be copied out again, it is read straight into the batch buffer.
pub(crate) const READ_AHEAD: usize = 64 << 10;

/// Page data referred to by the writer after which it writes out.
const GATHER_OCTETS: usize = 1 << 20;
/// Written-out windows kept for reuse.
const SPARE_WINDOWS: usize = 2;
/// Pieces after which the writer writes out (well within what one vectored write takes).
const GATHER_PIECES: usize = 512;
/// Octets of small pieces (record headers, pfn lists) the writer copies; a piece at least this
/// large that is not in a window is written straight through.
const COPY_OCTETS: usize = 64 << 10;

/// The windows a [`FileSource`] and a [`GatherWriter`] share: the one being read from, and
/// written-out ones to reuse.
#[derive(Default)]
pub struct Windows {
    current: Option<Rc<Vec<u8>>>,
    free: Vec<Vec<u8>>,
}

impl Windows {
    /// A new set, shared between one source and one writer.
    pub fn shared() -> Rc<RefCell<Windows>> {
        Rc::new(RefCell::new(Windows::default()))
    }

    /// Gives a window back for reuse, if no one else refers to it.
    fn recycle(&mut self, window: Rc<Vec<u8>>) {
        if let Ok(v) = Rc::try_unwrap(window) {
            if self.free.len() < SPARE_WINDOWS {
                self.free.push(v);
            }
        }
    }
}

/// A file read from its current position. A regular file is read with positioned reads and
/// its offset is left after what was consumed when the source is dropped (the descriptor may
/// be shared with the process that handed it over); anything else (a pipe, a socket) is read
/// sequentially, never ahead of what is asked for, and lends nothing.
pub struct FileSource {
    at: Positioned,
    /// The window: `window[start..end]` are the file's bytes from `pos` on.
    window: Rc<Vec<u8>>,
    start: usize,
    end: usize,
    windows: Rc<RefCell<Windows>>,
}

impl FileSource {
    /// A source reading `file` from its current position, into windows of its own.
    pub fn new(file: File) -> io::Result<FileSource> {
        FileSource::with_windows(file, Windows::shared())
    }

    /// A source reading `file` from its current position into `windows`, which a
    /// [`GatherWriter`] may share.
    pub fn with_windows(file: File, windows: Rc<RefCell<Windows>>) -> io::Result<FileSource> {
        Ok(FileSource {
            at: Positioned::new(file)?,
            window: Rc::new(Vec::new()),
            start: 0,
            end: 0,
            windows,
        })
    }

    /// Moves what the window holds to the front of a fresh window (one nobody refers to), then
    /// reads behind it, up to `ahead` octets in all, until it holds `want` octets or the input
    /// ends. Returns what it holds.
    fn refill(&mut self, want: usize, ahead: usize) -> io::Result<usize> {
        let mut windows = self.windows.borrow_mut();
        let mut next = windows.free.pop().unwrap_or_default();
        next.resize(WINDOW, 0);
        let held = self.end - self.start;
        next[..held].copy_from_slice(&self.window[self.start..self.end]);
        let mut end = held;
        let ahead = ahead.clamp(want, WINDOW);
        while end < want {
            let n = self
                .at
                .file
                .read_at(&mut next[end..ahead], self.at.pos + end as u64)?;
            if n == 0 {
                break;
            }
            end += n;
        }
        let next = Rc::new(next);
        windows.current = Some(Rc::clone(&next));
        let old = std::mem::replace(&mut self.window, next);
        windows.recycle(old);
        self.start = 0;
        self.end = end;
        Ok(end)
    }
}

impl LegacySource for FileSource {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.at.regular {
            return self.at.file.read(out);
        }
        if self.start == self.end {
            if out.len() >= READ_AHEAD {
                let n = self.at.file.read_at(out, self.at.pos)?;
                self.at.pos += n as u64;
                return Ok(n);
            }
            // One octet is enough; the rest of the window is read ahead.
            self.refill(1, READ_AHEAD)?;
        }
        let held = self.window.get(self.start..self.end).unwrap_or_default();
        let n = out.len().min(held.len());
        out[..n].copy_from_slice(&held[..n]);
        self.start += n;
        self.at.pos += n as u64;
        Ok(n)
    }

    fn lend(&mut self, len: usize) -> io::Result<Option<Lent>> {
        if !self.at.regular || len == 0 || len > WINDOW {
            return Ok(None);
        }
        if self.end - self.start < len && self.refill(len, WINDOW)? < len {
            // The input ends early: read, and let the reader report it.
            return Ok(None);
        }
        let lent = Lent {
            start: self.start,
            len,
        };
        self.start += len;
        self.at.pos += len as u64;
        Ok(Some(lent))
    }

    fn lent(&self, lent: Lent) -> &[u8] {
        self.window
            .get(lent.start..lent.start + lent.len)
            .unwrap_or_default()
    }
}

/// A piece of output waiting to be written.
enum Piece {
    /// Octets of a window.
    Window {
        window: Rc<Vec<u8>>,
        start: usize,
        len: usize,
    },
    /// Octets copied into the writer's own buffer.
    Copied { start: usize, len: usize },
}

/// A buffered writer that refers to octets in the shared windows instead of copying them
/// (see the module note): what it is given is written out, in order, once enough is held, on
/// [`Write::flush`] or when a large piece from elsewhere comes. Like a `BufWriter`, it may hold
/// octets it said it wrote until then: flush it before dropping it to see a failed write.
pub struct GatherWriter<W: Write> {
    out: W,
    windows: Rc<RefCell<Windows>>,
    pieces: Vec<Piece>,
    copied: Vec<u8>,
    /// Octets held in pieces of windows.
    gathered: usize,
}

impl<W: Write> GatherWriter<W> {
    /// A writer to `out` sharing `windows` with a [`FileSource`].
    pub fn new(out: W, windows: Rc<RefCell<Windows>>) -> GatherWriter<W> {
        GatherWriter {
            out,
            windows,
            pieces: Vec::new(),
            copied: Vec::new(),
            gathered: 0,
        }
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Where `buf` lies in the current window, if it does.
    fn in_window(&self, buf: &[u8]) -> Option<(Rc<Vec<u8>>, usize)> {
        let windows = self.windows.borrow();
        let window = windows.current.as_ref()?;
        // Addresses compared, never dereferenced: `buf` is borrowed now, so if it lies
        // within the window's octets it is those octets.
        let base = window.as_ptr() as usize;
        let at = (buf.as_ptr() as usize).checked_sub(base)?;
        (at.checked_add(buf.len())? <= window.len()).then(|| (Rc::clone(window), at))
    }

    /// Writes out everything held, and gives the windows it referred to back.
    fn write_held(&mut self) -> io::Result<()> {
        if self.pieces.is_empty() {
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Window { window, start, len } => {
                    IoSlice::new(window.get(*start..*start + *len).unwrap_or_default())
                }
                Piece::Copied { start, len } => {
                    IoSlice::new(self.copied.get(*start..*start + *len).unwrap_or_default())
                }
            })
            .collect();
        let r = write_all_vectored(&mut self.out, &mut slices);
        drop(slices);
        let mut windows = self.windows.borrow_mut();
        for p in self.pieces.drain(..) {
            if let Piece::Window { window, .. } = p {
                windows.recycle(window);
            }
        }
        self.copied.clear();
        self.gathered = 0;
        r
    }

    fn take(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Some((window, start)) = self.in_window(buf) {
            match self.pieces.last_mut() {
                Some(Piece::Window {
                    window: w,
                    start: s,
                    len,
                }) if Rc::ptr_eq(w, &window) && *s + *len == start => *len += buf.len(),
                _ => self.pieces.push(Piece::Window {
                    window,
                    start,
                    len: buf.len(),
                }),
            }
            self.gathered += buf.len();
        } else if buf.len() >= COPY_OCTETS {
            self.write_held()?;
            return self.out.write_all(buf);
        } else {
            let start = self.copied.len();
            self.copied.extend_from_slice(buf);
            match self.pieces.last_mut() {
                Some(Piece::Copied { start: s, len }) if *s + *len == start => *len += buf.len(),
                _ => self.pieces.push(Piece::Copied {
                    start,
                    len: buf.len(),
                }),
            }
        }
        if self.gathered >= GATHER_OCTETS
            || self.copied.len() >= COPY_OCTETS
            || self.pieces.len() >= GATHER_PIECES
        {
            self.write_held()?;
        }
        Ok(())
    }
}

impl<W: Write> Write for GatherWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.take(buf)?;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.take(b)?;
            n += b.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_held()?;
        self.out.flush()
    }
}
