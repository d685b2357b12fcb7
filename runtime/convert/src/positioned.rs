//! What the file sources ([`super::FileSource`], [`super::MappedFile`]) share: a file read
//! from the position it was handed over at, whose offset is left after what was consumed.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};

/// A file and where reading it has got to.
pub(crate) struct Positioned {
    pub(crate) file: File,
    /// A regular file, read with positioned reads; anything else (a pipe, a socket) is read
    /// sequentially, never ahead of what is asked for.
    pub(crate) regular: bool,
    /// File offset of the next byte to consume.
    pub(crate) pos: u64,
    /// The file's length when it was opened (0 when it is not a regular file).
    pub(crate) len: u64,
}

impl Positioned {
    /// `file`, read from its current position.
    pub(crate) fn new(mut file: File) -> io::Result<Positioned> {
        let meta = file.metadata()?;
        let regular = meta.is_file();
        let (pos, len) = if regular {
            (file.stream_position()?, meta.len())
        } else {
            (0, 0)
        };
        Ok(Positioned {
            file,
            regular,
            pos,
            len,
        })
    }
}

impl Drop for Positioned {
    /// Leaves the file offset after what was consumed, as sequential reads would have (the
    /// descriptor may be shared with the process that handed it over).
    fn drop(&mut self) {
        if self.regular {
            let _ = self.file.seek(SeekFrom::Start(self.pos));
        }
    }
}
