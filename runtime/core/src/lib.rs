//! xenmig-core: the formats, and nothing that reads or writes a stream.
//!
//! The record types and their codecs are generated from the YAML specs in `spec/`:
//! [`libxc`] (the domain image, migration stream v2), [`libxl`] (the libxl framing around it),
//! [`xl`] (the header of `xl save` files), [`x86_state`] (x86 guest state: the HVM save records
//! inside HVM_CONTEXT, the PV vCPU context, start_info and shared_info) and [`legacy`] (the
//! pre-4.6 stream's chunks) and [`core_dump`] (the memory dumps `extract-memory` writes: ELF
//! core, Xen dump-core, LiME), over the support types in [`wire`]. Every limit
//! the code enforces, and the format facts it indexes with, are in [`limits`]; [`error`] is
//! the one error of the stream layers, [`render`] prints any decoded record, and
//! [`GuestType`] names the guest types the domain header knows.
#![deny(missing_docs)]

// The generated code names `::xenmig::wire`; inside this crate that is `crate::wire`.
extern crate self as xenmig;

pub mod render;
pub mod wire;

xenmig_macros::include_spec!("../../spec/libxc.yaml");
xenmig_macros::include_spec!("../../spec/libxl.yaml");
xenmig_macros::include_spec!("../../spec/xl.yaml");
xenmig_macros::include_spec!("../../spec/x86_state.yaml");
xenmig_macros::include_spec!("../../spec/legacy.yaml");
xenmig_macros::include_spec!("../../spec/core_dump.yaml");

pub mod error;
mod guest;
pub mod limits;

pub use error::{ErrorKind, Layer, StreamError};
pub use guest::GuestType;
