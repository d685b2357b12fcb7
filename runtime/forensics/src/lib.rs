//! xenmig-forensics: a saved or migrated Xen domain as an analyst opens it.
//!
//! [`index::PageIndex`] reads a stream once (checked as `xenmig verify --lenient` checks it)
//! and records where the latest copy of every guest page is, for a plain image or for one
//! checkpoint of a checkpointed stream, with each vCPU's registers ([`cpu::VcpuRegs`]).
//! [`memory::GuestMemory`] answers guest-physical reads from the stream's file through that
//! index, without extracting anything, and [`dump::write_dump`] writes the image as an ELF
//! core, a Xen dump-core file, a sparse raw image or LiME, for Volatility, gdb, crash and the
//! other tools that read those. [`diff::diff_images`] compares two images (two saves, or two
//! checkpoints of one stream) frame by frame and record by record.
#![deny(missing_docs)]

pub mod cpu;
pub mod diff;
pub mod dump;
pub mod index;
pub mod memory;

pub use cpu::VcpuRegs;
pub use diff::{diff_images, ImageDiff};
pub use dump::{write_dump, DumpFormat, DumpSummary};
pub use index::{Guest, KeptRecord, PageAt, PageIndex, Tracker, Which};
pub use memory::GuestMemory;

use xenmig_core::StreamError;

/// Why a forensic read or dump failed.
#[derive(Debug, thiserror::Error)]
pub enum ForensicsError {
    /// The stream is refused (the rule, offset and record are in the error).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// What was asked for is not in the stream.
    #[error("{0}")]
    Usage(String),
    /// A guest state record cannot be decoded.
    #[error("{what}: {detail}")]
    State {
        /// The record or structure.
        what: String,
        /// Why it cannot be decoded.
        detail: String,
    },
    /// A guest-physical address the image holds no page for.
    #[error("guest-physical address {paddr:#x} is not in the image")]
    Absent {
        /// The address.
        paddr: u64,
    },
    /// Reading the input or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}
