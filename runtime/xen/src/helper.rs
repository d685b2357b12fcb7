//! The save helper over real Xen: the backend arm of [`xenmig_savehelper::run_with`].
//!
//! libxl suspends and resumes the guest itself when it answers `suspend` and `postcopy`, and
//! [`XenDomain`] sees that through getdomaininfo, so the [`HelperDomain`] hooks keep their
//! defaults.

use super::domain::{RingBackends, XenDomain};
use std::fs::File;
use std::io::{Read, Write};
use std::time::Instant;
use xenmig_drivers::domain::errno;
use xenmig_savehelper::{flow, run_restore, run_save, Args, HelperDomain, Outcome, Pipe};

impl HelperDomain for XenDomain {}

/// Set to print, on stderr (xl's), the time each backend operation took.
pub const TIMING_ENV: &str = "XENMIG_XEN_TIMING";

fn report(dom: &XenDomain, what: &str, t0: Instant) {
    if std::env::var_os(TIMING_ENV).is_none() {
        return;
    }
    let ops: Vec<String> = dom
        .timings()
        .iter()
        .map(|(op, n, t)| format!("{op} {n}x {:.2}s", t.as_secs_f64()))
        .collect();
    eprintln!(
        "xenmig: {what} of d{}: {:.2}s, in the Xen backend: {}",
        dom.domid(),
        t0.elapsed().as_secs_f64(),
        ops.join(", ")
    );
}

/// Opens the domain libxl named and runs the save or restore on it.
pub fn run<R: Read, W: Write>(
    args: &Args,
    pipe: &mut Pipe<R, W>,
    stream: &File,
    back_channel: Option<&File>,
) -> Outcome {
    match args {
        Args::Save(a) => match XenDomain::open(a.domid) {
            Ok(mut dom) => {
                let mut back = back_channel;
                let back = back.as_mut().map(|f| f as &mut dyn Read);
                let t0 = Instant::now();
                let o = run_save(&mut dom, a, pipe, stream, back);
                report(&dom, "save", t0);
                o
            }
            Err(e) => flow::fail(
                pipe,
                e.errno.unwrap_or(errno::EINVAL),
                &format!("domain {}: {e}", a.domid),
            ),
        },
        Args::Restore(a) => {
            let backends = RingBackends {
                store_domid: a.store_domid.into(),
                console_domid: a.console_domid.into(),
            };
            match XenDomain::open_for_restore(a.domid, backends) {
                Ok(mut dom) => {
                    let t0 = Instant::now();
                    let o = run_restore(&mut dom, a, pipe, stream);
                    report(&dom, "restore", t0);
                    o
                }
                Err(e) => flow::fail(
                    pipe,
                    e.errno.unwrap_or(errno::EINVAL),
                    &format!("domain {}: {e}", a.domid),
                ),
            }
        }
    }
}
