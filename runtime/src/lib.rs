//! xenmig: read, write, verify and convert Xen domain save images and migration streams.
//!
//! The record types and their codecs are generated from the YAML specs in `spec/`:
//! [`libxc`] (the domain image, migration stream v2), [`libxl`] (the libxl framing around it)
//! and [`xl`] (the header of `xl save` files). The rest of the crate consumes them:
//! [`reader`] yields records from bytes, [`writer`] frames records into bytes, [`verify`]
//! checks a whole stream, and [`convert`] turns legacy (Xen 4.5 and older) streams into v2.
//! Every limit the code enforces, and the format facts it indexes with, are in [`limits`].

// The format core (xenmig-core): generated records and codecs, their support types, limits,
// errors and rendering.
pub use xenmig_core::{error, libxc, libxl, limits, render, wire, xl};
// The stream layer (xenmig-stream): sources, reader, writer, verifier, xl save files.
pub use xenmig_stream::{reader, source, verify, writer, xlfile};
// Legacy stream conversion (xenmig-convert).
pub use xenmig_convert as convert;

pub mod dm;
pub mod domain;
pub mod hooks;
pub mod libxl_stream;
pub mod migrate;
pub mod policy;
pub mod restore;
pub mod save;
pub mod savehelper;
pub mod sim;
pub mod x86;
#[cfg(feature = "xen")]
pub mod xen;

pub use error::{ErrorKind, Layer, StreamError};
pub use reader::{Framing, Item, RawRecord, Reader, ReaderOptions};
pub use verify::{verify_reader, verify_slice, Report, VerifyOptions};
