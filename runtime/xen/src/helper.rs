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
        "xenmig: {what} of d{}: {:.2}s; in the Xen backend and on the stream: {}",
        dom.domid(),
        t0.elapsed().as_secs_f64(),
        ops.join(", ")
    );
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
        Args::Save(a) => match XenDomain::open(a.domid) {
            Ok(mut dom) => {
                let mut back = back_channel;
                let back = back.as_mut().map(|f| f as &mut dyn Read);
                let t0 = Instant::now();
                let stream = Timed::new(stream, &dom);
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
                    let stream = Timed::new(stream, &dom);
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
