//! The save helper over real Xen: the backend arm of [`xenmig_savehelper::run_with`].
//!
//! libxl suspends and resumes the guest itself when it answers `suspend` and `postcopy`, and
//! [`XenDomain`] sees that through getdomaininfo, so the [`HelperDomain`] hooks keep their
//! defaults.

use super::domain::{RingBackends, Timings, XenDomain};
use std::fs::File;
use std::io::{Read, Write};
use std::time::Instant;
use xenmig_drivers::domain::errno;
use xenmig_savehelper::{flow, run_restore, run_save, Args, HelperDomain, Outcome, Pipe};

impl HelperDomain for XenDomain {}

/// Set to print, on stderr (xl's), the time each backend operation took.
pub const TIMING_ENV: &str = "XENMIG_XEN_TIMING";

fn report(dom: &XenDomain, what: &str, opened: Instant, t0: Instant) {
    if std::env::var_os(TIMING_ENV).is_none() {
        return;
    }
    let ops: Vec<String> = dom
        .timings()
        .iter()
        .map(|(op, n, t)| format!("{op} {n}x {:.2}s", t.as_secs_f64()))
        .collect();
    eprintln!(
        "xenmig: {what} of d{}: {:.2}s (opening its interfaces {:.3}s before); in the Xen \
         backend and on the stream: {}",
        dom.domid(),
        t0.elapsed().as_secs_f64(),
        t0.duration_since(opened).as_secs_f64(),
        ops.join(", ")
    );
}

/// Closes the domain's interfaces (unmapping what is still mapped, joining the unmapping
/// thread), saying how long that took (`XENMIG_XEN_TIMING`): libxl waits for the helper to
/// exit before it goes on, so this is part of a migration's downtime.
fn close(dom: XenDomain) {
    let domid = dom.domid();
    let t = Instant::now();
    drop(dom);
    if std::env::var_os(TIMING_ENV).is_some() {
        eprintln!(
            "xenmig: closed d{domid}'s interfaces in {:.3}s",
            t.elapsed().as_secs_f64()
        );
    }
}

/// The stream, with the time spent reading or writing it counted (`XENMIG_XEN_TIMING`) as
/// `stream_read` and `stream_write`.
struct Timed<'a> {
    file: &'a File,
    timer: Option<Timings>,
}

impl<'a> Timed<'a> {
    fn new(file: &'a File, dom: &XenDomain) -> Self {
        let timer = std::env::var_os(TIMING_ENV).map(|_| dom.timer());
        Timed { file, timer }
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let _t = self.timer.as_ref().map(|t| t.start("stream_read"));
        self.file.read(buf)
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _t = self.timer.as_ref().map(|t| t.start("stream_write"));
        self.file.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let _t = self.timer.as_ref().map(|t| t.start("stream_write"));
        self.file.write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Opens the domain libxl named and runs the save or restore on it.
pub fn run<R: Read, W: Write>(
    args: &Args,
    pipe: &mut Pipe<R, W>,
    stream: &File,
    back_channel: Option<&File>,
) -> Outcome {
    match args {
        Args::Save(a) => match (Instant::now(), XenDomain::open(a.domid)) {
            (opened, Ok(mut dom)) => {
                let mut back = back_channel;
                let back = back.as_mut().map(|f| f as &mut dyn Read);
                let t0 = Instant::now();
                let stream = Timed::new(stream, &dom);
                let o = run_save(&mut dom, a, pipe, stream, back);
                report(&dom, "save", opened, t0);
                close(dom);
                o
            }
            (_, Err(e)) => flow::fail(
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
            let opened = Instant::now();
            match XenDomain::open_for_restore(a.domid, backends) {
                Ok(mut dom) => {
                    let t0 = Instant::now();
                    let stream = Timed::new(stream, &dom);
                    let o = run_restore(&mut dom, a, pipe, stream);
                    report(&dom, "restore", opened, t0);
                    close(dom);
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
