//! A [`LegacySource`] over a regular file that lends page data through a sliding memory map,
//! so converted pages go from the page cache to the output in one copy (the output's own)
//! instead of two. Populating and dropping the map costs more than the copy it saves on the
//! machines measured, so [`super::convert_file_to`] reads through [`super::FileSource`]
//! instead; this source is for callers that want the input's pages lent in place.
//!
//! Only one window of the file is mapped at a time (populated up front, so there is no fault
//! per page), which keeps the resident size bounded whatever the size of the input.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use memmap2::{Mmap, MmapOptions};

use super::legacy::{LegacySource, Lent};

/// Size of the mapped window; a window always covers at least one whole page batch.
pub const WINDOW: usize = 16 << 20;
/// Windows start at multiples of this (a multiple of every page size in use).
const WINDOW_ALIGN: u64 = 64 << 10;

/// A regular file read from its current position: small reads with `pread`, page data lent
/// from a mapped window. Other files (pipes, sockets) are read sequentially and never mapped.
///
/// Like every reader that maps its input, a file truncated by someone else while it is being
/// converted makes the process fail with SIGBUS; the converter never writes to its input.
pub struct MappedFile {
    file: File,
    /// Whether the file is a regular file (positioned reads, mapping).
    regular: bool,
    /// File offset of the next byte to consume.
    pos: u64,
    /// File length when it was opened; nothing beyond it is mapped.
    len: u64,
    window: Option<Mmap>,
    /// File offset of the window's first byte.
    window_start: u64,
}

impl MappedFile {
    /// A source reading `file` from its current position.
    pub fn new(mut file: File) -> io::Result<MappedFile> {
        let meta = file.metadata()?;
        let regular = meta.is_file();
        let pos = if regular { file.stream_position()? } else { 0 };
        Ok(MappedFile {
            file,
            regular,
            pos,
            len: meta.len(),
            window: None,
            window_start: 0,
        })
    }

    /// The window's bytes from file offset `at`, if the window covers it.
    fn window_from(&self, at: u64) -> Option<&[u8]> {
        let window = self.window.as_ref()?;
        let start = usize::try_from(at.checked_sub(self.window_start)?).ok()?;
        window.get(start..)
    }

    /// Maps a window that covers `[pos, pos + len)`; `false` if that cannot be done.
    fn map_window(&mut self, len: usize) -> bool {
        self.window = None;
        let start = self.pos - self.pos % WINDOW_ALIGN;
        let want = (self.pos - start) + len as u64;
        let size = want.max(WINDOW as u64).min(self.len - start);
        let Ok(size) = usize::try_from(size) else {
            return false;
        };
        // Safety: the map is read-only and only read through bounds-checked slices; see the
        // type's note on files truncated while mapped.
        let map = unsafe {
            MmapOptions::new()
                .offset(start)
                .len(size)
                .populate()
                .map(&self.file)
        };
        match map {
            Ok(map) => {
                self.window = Some(map);
                self.window_start = start;
                true
            }
            Err(_) => false,
        }
    }
}

impl LegacySource for MappedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.regular {
            return self.file.read(buf);
        }
        let n = match self.window_from(self.pos) {
            Some(held) if !held.is_empty() => {
                let n = buf.len().min(held.len());
                buf[..n].copy_from_slice(&held[..n]);
                n
            }
            _ => self.file.read_at(buf, self.pos)?,
        };
        self.pos += n as u64;
        Ok(n)
    }

    fn lend(&mut self, len: usize) -> io::Result<Option<Lent>> {
        if !self.regular || len == 0 || self.pos.saturating_add(len as u64) > self.len {
            // Not mappable, or the input ends early: read, and let the reader report it.
            return Ok(None);
        }
        let covered = self
            .window_from(self.pos)
            .is_some_and(|held| held.len() >= len);
        if !covered && !self.map_window(len) {
            return Ok(None);
        }
        let start = (self.pos - self.window_start) as usize;
        self.pos += len as u64;
        Ok(Some(Lent { start, len }))
    }

    fn lent(&self, lent: Lent) -> &[u8] {
        self.window
            .as_ref()
            .and_then(|w| w.get(lent.start..lent.start + lent.len))
            .unwrap_or_default()
    }
}

impl Drop for MappedFile {
    /// Leaves the file offset after what was consumed, as sequential reads would have (the
    /// descriptor may be shared with the process that handed it over).
    fn drop(&mut self) {
        if self.regular {
            let _ = self.file.seek(SeekFrom::Start(self.pos));
        }
    }
}
