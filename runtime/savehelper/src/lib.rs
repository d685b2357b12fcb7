//! xenmig-savehelper: a drop-in replacement for libxl's `libxl-save-helper` (Xen 4.17): the process libxl starts
//! to save or restore a domain, talking to it over a pipe protocol on stdin/stdout while the
//! libxc stream goes through an fd it shares with libxl.
//!
//! [`protocol`] frames the messages and replies, [`args`] reads libxl's argv, [`callbacks`]
//! answers the drivers' callbacks over the pipe, [`flow`] runs a save or a restore from the
//! first log message to `complete`, and [`backend`] reads which backend is to be saved or
//! restored: a simulated domain (`XENMIG_SAVE_HELPER_BACKEND=sim:...`) or real Xen. The
//! backends themselves are other crates' (xenmig-sim's `helper`, xenmig-xen's `helper`),
//! handed to [`run_with`] as [`Backends`]. The process itself (fds, signals, exit) is the
//! CLI's.
#![deny(missing_docs)]

// The formats (xenmig-core), the stream layer (xenmig-stream) and the drivers
// (xenmig-drivers), at the paths the helper names them by.
pub(crate) use xenmig_core::{error, limits, wire};
pub(crate) use xenmig_drivers::{domain, restore, save};
pub(crate) use xenmig_stream::{reader, source, writer};

pub mod args;
pub mod backend;
pub mod callbacks;
pub mod flow;
pub mod protocol;

pub use args::{Args, ArgsError, RestoreArgs, SaveArgs};
pub use backend::{BackendSpec, HelperDomain, RestoreTarget, SimSpec, BACKEND_ENV};
pub use callbacks::{HelperCallbacks, Pipe, PipeFailure};
pub use flow::{run_restore, run_save, Outcome, EXIT_EOF, EXIT_FAIL, EXIT_OK};
pub use protocol::{CbFlags, Level, Message, ProtocolError};

use crate::domain::errno;
use std::fs::File;
use std::io::{Read, Write};

/// How the simulated backend runs a save or restore: builds the domain `spec` describes and
/// calls [`run_save`] or [`run_restore`] on it.
pub type SimRun<R, W> = fn(&SimSpec, &Args, &mut Pipe<R, W>, &File, Option<&File>) -> Outcome;

/// How the Xen backend runs a save or restore: opens domain `args.domid()` (for a restore,
/// with [`RestoreTarget`]) and calls [`run_save`] or [`run_restore`] on it.
pub type XenRun<R, W> = fn(&Args, &mut Pipe<R, W>, &File, Option<&File>) -> Outcome;

/// The backends a build has; `None` for one it was built without.
pub struct Backends<R, W> {
    /// The simulated backend, if built.
    pub sim: Option<SimRun<R, W>>,
    /// The Xen backend, if built.
    pub xen: Option<XenRun<R, W>>,
}

/// Runs the helper with the backend `backend` names (the parsed [`BACKEND_ENV`], or why it
/// could not be parsed), from those `backends` the build has. `stream` is the io_fd;
/// `back_channel` the save's recv_fd (COLO).
pub fn run_with<R: Read, W: Write>(
    args: &Args,
    backend: Result<BackendSpec, String>,
    backends: &Backends<R, W>,
    pipe: &mut Pipe<R, W>,
    stream: &File,
    back_channel: Option<&File>,
) -> Outcome {
    let op = match args {
        Args::Save(_) => "save",
        Args::Restore(_) => "restore",
    };
    flow::starting(pipe, op);
    let spec = match backend {
        Ok(s) => s,
        Err(e) => return flow::fail(pipe, errno::EINVAL, &e),
    };
    match spec {
        BackendSpec::Sim(sim) => match backends.sim {
            Some(run) => run(&sim, args, pipe, stream, back_channel),
            None => flow::fail(
                pipe,
                errno::EOPNOTSUPP,
                "this xenmig has no simulated backend (build it with the `sim` feature)",
            ),
        },
        BackendSpec::Xen => match backends.xen {
            Some(run) => run(args, pipe, stream, back_channel),
            None => flow::fail(
                pipe,
                errno::EOPNOTSUPP,
                &format!(
                    "this xenmig has no Xen backend (build it with the `xen` feature), \
                     or set {BACKEND_ENV}=sim:SPEC"
                ),
            ),
        },
    }
}
