//! xenmig-drivers: save, restore and migrate a domain, whatever implements it.
//!
//! [`domain`] is what the drivers ask of a hypervisor, as traits; [`save`] and [`restore`]
//! are the libxc drivers (xc_domain_save/restore), with what differs between guest types in
//! [`hooks`] and the x86 facts they need in [`x86`]; [`policy`] decides when a live save stops
//! iterating; [`libxl_stream`] and [`dm`] add the libxl layer (device model, COLO) around
//! them; [`migrate`] is xl's migration protocol over a connection. Streams are read and
//! written with `xenmig-stream`; no backend is here (the simulator and the Xen backend are
//! crates of their own).
#![deny(missing_docs)]

// The formats (xenmig-core) and the stream layer (xenmig-stream), at the paths the drivers
// name them by.
pub(crate) use xenmig_core::{error, libxc, libxl, limits, wire, x86_state, xl};
pub(crate) use xenmig_stream::{reader, source, verify, writer, xlfile};
pub(crate) use xenmig_stream::{Item, Reader, ReaderOptions};

pub mod dm;
pub mod domain;
pub mod hooks;
pub mod libxl_stream;
pub mod migrate;
pub mod policy;
pub mod restore;
pub mod save;
pub mod x86;
