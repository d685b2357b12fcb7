//! xenmig-xen: the real-Xen backend. `XenDomain` implements
//! [`xenmig_drivers::domain::Domain`] over Debian's libxen-dev 4.17 (libxenctrl,
//! libxenforeignmemory), for x86 PV and HVM/PVH domains; `helper` is the save helper's
//! backend arm for it.
//!
//! Built only with the `xen` feature (without it the crate is empty). The bindings in `ffi`
//! are hand-written and limited to public API; the two things libxc does through private
//! calls are done as its reference says: page types through a raw
//! `XEN_DOMCTL_getpageframeinfo3` (interface version 0x15) in a hypercall buffer, and the m2p
//! and guest frames through `xenforeignmemory_map`. This crate is xenmig's only FFI, and
//! `unsafe` lives here alone.
#![cfg(feature = "xen")]
#![deny(missing_docs)]

// The formats (xenmig-core) and the drivers' x86 facts (xenmig-drivers), at the paths the
// backend names them by; the drivers' `domain` module is named in full (`domain` here is
// [`XenDomain`]'s).
pub(crate) use xenmig_core::{legacy, libxc, limits};
pub(crate) use xenmig_drivers::x86;

pub mod domain;
mod ffi;
pub mod helper;
pub mod p2m;
mod sys;
mod types_ahead;

pub use domain::{RingBackends, XenDomain};
