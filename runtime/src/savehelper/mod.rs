//! A drop-in replacement for libxl's `libxl-save-helper` (Xen 4.17): the process libxl starts
//! to save or restore a domain, talking to it over a pipe protocol on stdin/stdout while the
//! libxc stream goes through an fd it shares with libxl.
//!
//! [`protocol`] frames the messages and replies, [`args`] reads libxl's argv, [`callbacks`]
//! answers the drivers' callbacks over the pipe, [`flow`] runs a save or a restore from the
//! first log message to `complete`, and [`backend`] chooses what is saved or restored: a
//! simulated domain (`XENMIG_SAVE_HELPER_BACKEND=sim:...`) or, in a build with one, real Xen.
//! The process itself (fds, signals, exit) is the CLI's.

pub mod args;
pub mod backend;
pub mod callbacks;
pub mod flow;
pub mod protocol;

pub use args::{Args, ArgsError, RestoreArgs, SaveArgs};
pub use backend::{BackendSpec, HelperDomain, RestoreTarget, SimBackend, SimSpec, BACKEND_ENV};
pub use callbacks::{HelperCallbacks, Pipe, PipeFailure};
pub use flow::{run_restore, run_save, Outcome, EXIT_EOF, EXIT_FAIL, EXIT_OK};
pub use protocol::{CbFlags, Level, Message, ProtocolError};

use crate::domain::errno;
use std::fs::File;
use std::io::{Read, Write};

/// Runs the helper with the backend `backend` names (the parsed [`BACKEND_ENV`], or why it
/// could not be parsed). `stream` is the io_fd; `back_channel` the save's recv_fd (COLO).
///
/// This is where backends are chosen: a Xen backend adds an arm that opens domain
/// `args.domid()` (for a restore, with [`RestoreTarget`]) and calls [`run_save`] or
/// [`run_restore`] with it, as the simulated one does.
pub fn run<R: Read, W: Write>(
    args: &Args,
    backend: Result<BackendSpec, String>,
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
    match (spec, args) {
        (BackendSpec::Sim(sim), Args::Save(a)) => match SimBackend::for_save(&sim) {
            Ok(mut dom) => {
                let mut back = back_channel;
                let back = back.as_mut().map(|f| f as &mut dyn Read);
                run_save(&mut dom, a, pipe, stream, back)
            }
            Err(e) => flow::fail(
                pipe,
                e.errno.unwrap_or(errno::EINVAL),
                &format!("simulated domain: {e}"),
            ),
        },
        (BackendSpec::Sim(sim), Args::Restore(a)) => {
            let mut dom = SimBackend::for_restore(&sim);
            run_restore(&mut dom, a, pipe, stream)
        }
        // The real-Xen backend (runtime/src/xen), in builds with the `xen` feature.
        #[cfg(feature = "xen")]
        (BackendSpec::Xen, _) => crate::xen::helper::run(args, pipe, stream, back_channel),
        #[cfg(not(feature = "xen"))]
        (BackendSpec::Xen, _) => flow::fail(
            pipe,
            errno::EOPNOTSUPP,
            &format!(
                "this xenmig has no Xen backend (build it with the `xen` feature), \
                 or set {BACKEND_ENV}=sim:SPEC"
            ),
        ),
    }
}
