//! Guest-physical memory read straight from a saved stream, through a [`PageIndex`]: no
//! extraction, one positioned read per page touched.

use crate::index::{PageAt, PageIndex};
use crate::ForensicsError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use xenmig_core::limits::{PAGE_SHIFT, PAGE_SIZE};

/// Reads guest-physical addresses of one image of a stream kept in a file.
#[derive(Debug)]
pub struct GuestMemory<'a> {
    file: &'a File,
    /// Offset in the file of the stream's first octet.
    base: u64,
    index: &'a PageIndex,
}

impl<'a> GuestMemory<'a> {
    /// Memory of `index`'s image, whose stream starts at offset `base` of `file`.
    pub fn new(file: &'a File, base: u64, index: &'a PageIndex) -> Self {
        GuestMemory { file, base, index }
    }

    /// The index it reads through.
    pub fn index(&self) -> &PageIndex {
        self.index
    }

    /// Fills `buf` with the guest's octets from guest-physical address `paddr`. Fails on the
    /// first frame the image does not hold (with its address) or on a read error.
    pub fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), ForensicsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = paddr
                .checked_add(done as u64)
                .ok_or(ForensicsError::Absent { paddr: u64::MAX })?;
            let pfn = addr >> PAGE_SHIFT;
            let in_page = (addr as usize) & (PAGE_SIZE - 1);
            let mut n = (PAGE_SIZE - in_page).min(buf.len() - done);
            match self.index.find(pfn) {
                Some(PageAt::Stream(at)) => {
                    // Frames whose copies follow each other in the stream (a batch of
                    // consecutive pfns) are read with one call.
                    let mut next = pfn + 1;
                    while done + n < buf.len()
                        && self.index.find(next)
                            == Some(PageAt::Stream(at + ((next - pfn) << PAGE_SHIFT)))
                    {
                        n += (buf.len() - done - n).min(PAGE_SIZE);
                        next += 1;
                    }
                    let out = buf
                        .get_mut(done..done + n)
                        .ok_or(ForensicsError::Absent { paddr: addr })?;
                    self.file
                        .read_exact_at(out, self.base + at + in_page as u64)
                        .map_err(|e| ForensicsError::Io {
                            what: format!("reading guest page {pfn:#x} from the input"),
                            source: e,
                        })?;
                }
                Some(PageAt::Zero) => {
                    if let Some(out) = buf.get_mut(done..done + n) {
                        out.fill(0);
                    }
                }
                None => return Err(ForensicsError::Absent { paddr: addr }),
            }
            done += n;
        }
        Ok(())
    }

    /// Reads whole frame `pfn` into `page` (PAGE_SIZE octets).
    pub fn read_page(&self, pfn: u64, page: &mut [u8]) -> Result<(), ForensicsError> {
        self.read(pfn << PAGE_SHIFT, page)
    }
}
