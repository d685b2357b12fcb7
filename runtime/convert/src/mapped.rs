//! A [`LegacySource`] over a regular file that lends page data through a sliding memory map,
//! so converted pages go from the page cache to the output in one copy (the output's own)
//! instead of two. Populating and dropping the map costs more than the copy it saves on the
//! machines measured, so [`super::convert_file_to`] reads through [`super::FileSource`]
//! instead; this source is for callers that want the input's pages lent in place.
//!
//! Only one window of the file is mapped at a time (populated up front, so there is no fault
//! per page), which keeps the resident size bounded whatever the size of the input.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use memmap2::{Mmap, MmapOptions};

use super::legacy::{LegacySource, Lent};
use super::positioned::Positioned;

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
    /// The file; nothing beyond the length it had when opened is mapped.
    at: Positioned,
    window: Option<Mmap>,
    /// File offset of the window's first byte.
    window_start: u64,
}

impl MappedFile {
    /// A source reading `file` from its current position.
    pub fn new(file: File) -> io::Result<MappedFile> {
        Ok(MappedFile {
            at: Positioned::new(file)?,
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
        let start = self.at.pos - self.at.pos % WINDOW_ALIGN;
        let want = (self.at.pos - start) + len as u64;
        let size = want.max(WINDOW as u64).min(self.at.len - start);
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
                .map(&self.at.file)
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
        if !self.at.regular {
            return self.at.file.read(buf);
        }
        let n = match self.window_from(self.at.pos) {
            Some(held) if !held.is_empty() => {
                let n = buf.len().min(held.len());
                buf[..n].copy_from_slice(&held[..n]);
                n
            }
            _ => self.at.file.read_at(buf, self.at.pos)?,
        };
        self.at.pos += n as u64;
        Ok(n)
    }

    fn lend(&mut self, len: usize) -> io::Result<Option<Lent>> {
        if !self.at.regular || len == 0 || self.at.pos.saturating_add(len as u64) > self.at.len {
            // Not mappable, or the input ends early: read, and let the reader report it.
            return Ok(None);
        }
        let covered = self
            .window_from(self.at.pos)
            .is_some_and(|held| held.len() >= len);
        if !covered && !self.map_window(len) {
            return Ok(None);
        }
        let start = (self.at.pos - self.window_start) as usize;
        self.at.pos += len as u64;
        Ok(Some(Lent { start, len }))
    }

    fn lent(&self, lent: Lent) -> &[u8] {
        self.window
            .as_ref()
            .and_then(|w| w.get(lent.start..lent.start + lent.len))
            .unwrap_or_default()
    }
}
