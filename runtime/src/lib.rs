//! xenmig: read, write, verify and convert Xen domain save images and migration streams, and
//! save, restore and migrate domains.
//!
//! This crate is a facade: it re-exports the crates under `runtime/`, each with one job, at
//! the module paths xenmig has always had. A toolstack embeds this crate; the others are its
//! parts.
//!
//! # Which crate does what
//!
//! - xenmig-core: the formats. The record types and their codecs are generated from the YAML
//!   specs in `spec/`: [`libxc`] (the domain image, migration stream v2), [`libxl`] (the libxl
//!   framing around it), [`xl`] (the header of `xl save` files), [`x86_state`] (the guest
//!   state inside HVM_CONTEXT and the PV vCPU records), [`legacy`] (the pre-4.6 stream's
//!   chunks) and [`core_dump`] (Xen's dump-core ELF notes), over [`wire`]; every limit the
//!   code enforces is in [`limits`]; [`error`], and [`render`], which prints any decoded
//!   record from its generated walk.
//! - xenmig-stream: [`source`], [`reader`] (records from bytes), [`writer`] (records into
//!   bytes), [`verify`] (a whole stream) and [`xlfile`].
//! - xenmig-convert: [`convert`], legacy (Xen 4.5 and older) streams into v2.
//! - xenmig-forensics: [`forensics`], a saved domain as an analyst opens it: its pages by
//!   frame ([`forensics::index::PageIndex`], [`forensics::memory::GuestMemory`]), its vCPU
//!   registers, core files, and the difference between two images.
//! - xenmig-drivers: [`domain`] (what the drivers ask of a hypervisor), [`save`], [`restore`],
//!   [`hooks`], [`policy`], [`x86`], [`libxl_stream`], [`dm`] and [`migrate`].
//! - xenmig-savehelper: [`savehelper`], the libxl-save-helper replacement.
//! - xenmig-sim (feature `sim`): `sim`, the simulated domain, and its device model in [`dm`].
//! - xenmig-xen (feature `xen`): `xen`, the real-Xen backend, the only FFI.
//!
//! # Features
//!
//! - `sim`: the simulated domain and device model (`xenmig::sim`, the simulated types in
//!   [`dm`]) and the save helper's `sim:` backend. Pure Rust.
//! - `xen`: the real-Xen backend (`xenmig::xen`, the save helper's `xen` backend). Links
//!   libxenctrl and libxenforeignmemory: it needs Xen's development files (Debian's
//!   `libxen-dev`) to build.
//!
//! Without either, the crate reads, writes, verifies, converts and analyses streams, and
//! drives any [`domain::Domain`] a caller implements.
//!
//! # Verifying and reading a stream
//!
//! [`verify_slice`] checks a whole stream in memory (a memory-mapped file works the same);
//! [`verify_reader`] does it from any `Read` with bounded memory. The [`Report`] says why a
//! stream is refused, and describes it either way:
//!
//! ```
//! use xenmig::{verify_slice, VerifyOptions};
//!
//! let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/pv64-demo.xl"))?;
//! let report = verify_slice(&bytes, VerifyOptions::default(), &mut |_offset| {});
//! assert!(report.valid, "{:?}", report.error);
//! assert_eq!(report.guest.as_deref(), Some("X86_PV"));
//! assert_eq!(report.pages.data_pages, 251);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A [`Reader`] hands out the stream item by item: headers, then records of each layer,
//! borrowed from the input. [`RawRecord::libxc`] and [`RawRecord::libxl`] decode a record
//! with the generated codecs, and [`render`] prints its fields:
//!
//! ```
//! use xenmig::error::Layer;
//! use xenmig::{libxc, render, Item, Reader, ReaderOptions};
//!
//! let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/pv64-demo.xl"))?;
//! let mut reader = Reader::from_slice(&bytes, ReaderOptions::default());
//! let mut pfns = 0;
//! loop {
//!     match reader.next_item()? {
//!         Item::Record(rec) if rec.layer == Layer::Libxc => {
//!             let record = rec.libxc()?;
//!             if let libxc::Record::PageData(p) = &record {
//!                 pfns += p.entries.len();
//!             } else {
//!                 println!("{:#x} {}: {}", rec.offset, rec.type_name(), render::text(&record));
//!             }
//!         }
//!         Item::Eof { complete } => {
//!             assert!(complete);
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(pfns, 256);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Examples
//!
//! `runtime/examples/` has one program per task, each run by the tests
//! (`cargo run -p xenmig --example NAME`, from the repository root):
//!
//! - `read_stream`: every item of a stream, with its offset, type and fields.
//! - `verify_stream`: the verdict and report, with [`verify_slice`] and [`verify_reader`].
//! - `write_stream`: a small valid libxc image made with [`writer::StreamWriter`] and the
//!   generated record types.
//! - `convert_legacy`: a legacy stream converted with [`convert::convert_to`].
//! - `extract_page`: one guest page of a stream file, by pfn.
//! - `domain_backend`: an in-memory [`domain::Domain`], saved live with [`save::save`] and
//!   restored with [`restore::restore`] into another.
//! - `gen_stream`, `gen_legacy` and `sample`: synthetic streams of any size, and the demo
//!   streams in `samples/`.
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
