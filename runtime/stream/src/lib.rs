//! xenmig-stream: streams as records, in and out, and the verdict on a whole stream.
//!
//! [`source`] holds the bytes (a slice, a mapping or a reader), [`reader`] yields records from
//! them in any of the three framings (bare libxc image, libxl stream, `xl save` file),
//! [`writer`] frames records into bytes, [`verify`] checks a whole stream, and [`xlfile`]
//! reads and writes the `xl save` header and its domain config. The formats themselves are
//! [`xenmig_core`]'s; nothing here drives a domain.
#![deny(missing_docs)]

pub(crate) use xenmig_core::{error, libxc, libxl, limits, render, wire, xl};

pub mod reader;
pub mod source;
pub mod verify;
pub mod writer;
pub mod xlfile;

pub use reader::{Framing, Item, RawRecord, Reader, ReaderOptions};
pub use verify::{verify_reader, verify_reader_observed, verify_slice, Report, VerifyOptions};
