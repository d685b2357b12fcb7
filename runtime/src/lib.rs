//! xenmig: read, write, verify and convert Xen domain save images and migration streams, and
//! save, restore and migrate domains.
//!
//! This crate is a facade: it re-exports the crates under `runtime/`, each with one job, at
//! the module paths xenmig has always had.
//!
//! - xenmig-core: the formats. The record types and their codecs are generated from the YAML
//!   specs in `spec/`: [`libxc`] (the domain image, migration stream v2), [`libxl`] (the libxl
//!   framing around it), [`xl`] (the header of `xl save` files), [`x86_state`] (the guest
//!   state inside HVM_CONTEXT and the PV vCPU records) and [`legacy`] (the pre-4.6 stream's
//!   chunks), over [`wire`]; every limit
//!   the code enforces is in [`limits`]; [`error`] and [`render`].
//! - xenmig-stream: [`source`], [`reader`] (records from bytes), [`writer`] (records into
//!   bytes), [`verify`] (a whole stream) and [`xlfile`].
//! - xenmig-convert: [`convert`], legacy (Xen 4.5 and older) streams into v2.
//! - xenmig-drivers: [`domain`] (what the drivers ask of a hypervisor), [`save`], [`restore`],
//!   [`hooks`], [`policy`], [`x86`], [`libxl_stream`], [`dm`] and [`migrate`].
//! - xenmig-savehelper: [`savehelper`], the libxl-save-helper replacement.
//! - xenmig-sim (feature `sim`): `sim`, the simulated domain, and its device model in [`dm`].
//! - xenmig-xen (feature `xen`): `xen`, the real-Xen backend, the only FFI.
#![deny(missing_docs)]

pub use xenmig_core::{
    core_dump, error, legacy, libxc, libxl, limits, render, wire, x86_state, xl,
};
pub use xenmig_stream::{reader, source, verify, writer};

/// `xl save` files (xenmig-stream), and with the `sim` feature the simulated guests' JSON
/// domain config.
pub mod xlfile {
    #[cfg(feature = "sim")]
    pub use xenmig_sim::config::SimDomainConfig;
    pub use xenmig_stream::xlfile::*;
}

pub use xenmig_convert as convert;
pub use xenmig_forensics as forensics;

pub use xenmig_drivers::forward_domain;
pub use xenmig_drivers::{domain, hooks, libxl_stream, migrate, policy, restore, save, x86};

/// Device models: the drivers' traits and [`dm::Guest`], and with the `sim` feature the
/// simulated emulator and guest.
pub mod dm {
    pub use xenmig_drivers::dm::*;
    #[cfg(feature = "sim")]
    pub use xenmig_sim::dm::*;
}

#[cfg(feature = "sim")]
pub use xenmig_sim as sim;

#[cfg(feature = "xen")]
pub use xenmig_xen as xen;

/// The libxl-save-helper replacement (xenmig-savehelper), with the backends this build has.
pub mod savehelper {
    pub use xenmig_savehelper::*;
    #[cfg(feature = "sim")]
    pub use xenmig_sim::helper::SimBackend;

    /// The backend chosen by `XENMIG_SAVE_HELPER_BACKEND`, and with the `sim` feature the
    /// simulated one.
    pub mod backend {
        pub use xenmig_savehelper::backend::*;
        #[cfg(feature = "sim")]
        pub use xenmig_sim::helper::{SimBackend, SIM_CHECKPOINT_INTERVAL};
    }

    use std::fs::File;
    use std::io::{Read, Write};

    /// Runs the helper with the backend `backend` names (the parsed [`BACKEND_ENV`], or why
    /// it could not be parsed), with the backends of this build: the simulated one with the
    /// `sim` feature, real Xen with the `xen` feature. `stream` is the io_fd; `back_channel`
    /// the save's recv_fd (COLO).
    pub fn run<R: Read, W: Write>(
        args: &Args,
        backend: Result<BackendSpec, String>,
        pipe: &mut Pipe<R, W>,
        stream: &File,
        back_channel: Option<&File>,
    ) -> Outcome {
        let backends = Backends::<R, W> {
            #[cfg(feature = "sim")]
            sim: Some(xenmig_sim::helper::run::<R, W>),
            #[cfg(not(feature = "sim"))]
            sim: None,
            #[cfg(feature = "xen")]
            xen: Some(xenmig_xen::helper::run::<R, W>),
            #[cfg(not(feature = "xen"))]
            xen: None,
        };
        run_with(args, backend, &backends, pipe, stream, back_channel)
    }
}

pub use error::{ErrorKind, Layer, StreamError};
pub use reader::{Framing, Item, RawRecord, Reader, ReaderOptions};
pub use verify::{verify_reader, verify_slice, Report, VerifyOptions};
