//! The real-Xen backend: [`XenDomain`] implements [`crate::domain::Domain`] over Debian's
//! libxen-dev 4.17 (libxenctrl, libxenforeignmemory), for x86 PV and HVM/PVH domains.
//!
//! Built only with the `xen` feature. The bindings in [`ffi`] are hand-written and limited to
//! public API; the two things libxc does through private calls are done as its reference
//! says: page types through a raw `XEN_DOMCTL_getpageframeinfo3` (interface version 0x15)
//! in a hypercall buffer, and the m2p and guest frames through `xenforeignmemory_map`.
//! `unsafe` lives in this module only.

pub mod domain;
pub mod ffi;
pub mod helper;
pub mod p2m;
pub mod sys;

pub use domain::{RingBackends, XenDomain};
