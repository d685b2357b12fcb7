//! The two runs of the helper (`libxl_save_helper.c`): save and restore, from the first log
//! message to `complete`, with xenmig's drivers in place of `xc_domain_save`/`_restore`.

use super::args::{stream_type_number, RestoreArgs, SaveArgs};
use super::backend::HelperDomain;
use super::callbacks::{HelperCallbacks, Pipe, PipeFailure, HELPER_CONTEXT};
use super::protocol::{msgtype, Level, Message};
use crate::domain::{errno, BackendError, GuestType};
use crate::error::ErrorKind;
use crate::reader::{Framing, Reader, ReaderOptions};
use crate::restore::{restore, RestoreError, RestoreOptions};
use crate::save::{save, SaveError, SaveOptions, StreamType};
use crate::source::ReadSource;
use crate::wire::Strictness;
use crate::writer::WriteError;
use std::io::{Read, Write};

/// How the helper process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `exit(status)`: 0 after `complete`, 254 when libxl closed stdin while the helper waited
    /// for a reply, 255 for `fail()` (a setup failure, or a broken pipe).
    Exit(u8),
    /// What the C helper's `assert` does: libxl did not provide a callback libxc needs.
    Abort,
}

/// Exit status after `complete`.
pub const EXIT_OK: u8 = 0;
/// Exit status when stdin ends while a reply is awaited.
pub const EXIT_EOF: u8 = 254;
/// Exit status of `fail()`.
pub const EXIT_FAIL: u8 = 255;

/// The helper's first message, `starting save|restore`; the C helper sends it before it
/// opens its hypervisor interface.
pub fn starting<R: Read, W: Write>(pipe: &mut Pipe<R, W>, op: &str) {
    pipe.log(Level::Debug, 0, HELPER_CONTEXT, &format!("starting {op}"));
}

/// `fail()`: a log message, then exit 255.
pub fn fail<R: Read, W: Write>(pipe: &mut Pipe<R, W>, errnoval: i32, what: &str) -> Outcome {
    pipe.log(Level::Error, errnoval, HELPER_CONTEXT, what);
    Outcome::Exit(EXIT_FAIL)
}

/// Sends `complete(retval, errnoval)`, waits for libxl's reply, and ends.
fn complete<R: Read, W: Write>(pipe: &mut Pipe<R, W>, retval: i32, errnoval: i32) -> Outcome {
    if let Some(o) = pipe_outcome(pipe) {
        return o;
    }
    pipe.log(
        Level::Debug,
        errnoval,
        HELPER_CONTEXT,
        &format!("complete r={retval}"),
    );
    pipe.call(&Message::Complete { retval, errnoval });
    pipe_outcome(pipe).unwrap_or(Outcome::Exit(EXIT_OK))
}

fn pipe_outcome<R: Read, W: Write>(pipe: &Pipe<R, W>) -> Option<Outcome> {
    match pipe.failure()? {
        PipeFailure::Eof => Some(Outcome::Exit(EXIT_EOF)),
        PipeFailure::Io(_) => Some(Outcome::Exit(EXIT_FAIL)),
    }
}

/// Callbacks libxc requires for this save or restore (it asserts them): `None` when libxl
/// provided them all, else the first one missing.
fn missing_callback(cbflags: super::protocol::CbFlags, required: &[u16]) -> Option<&'static str> {
    required
        .iter()
        .find(|&&t| !cbflags.has(t))
        .and_then(|&t| super::protocol::type_name(t))
}

/// Saves domain `args.domid` into `stream` (the helper's io_fd), talking to libxl over `pipe`.
/// `back_channel` is the receiver's channel (recv_fd), read only by COLO.
pub fn run_save<D, R, W, S>(
    dom: &mut D,
    args: &SaveArgs,
    pipe: &mut Pipe<R, W>,
    stream: S,
    back_channel: Option<&mut dyn Read>,
) -> Outcome
where
    D: HelperDomain + 'static,
    R: Read,
    W: Write,
    S: Write,
{
    let info = match dom.info() {
        Ok(i) => i,
        Err(e) => return save_failed(pipe, &SaveError::Backend(e)),
    };
    let hvm = info.guest == GuestType::X86Hvm;
    pipe.xc_log(
        Level::Detail,
        &format!(
            "fd {}, dom {}, flags {}, hvm {}",
            args.io_fd, args.domid, args.xcflags, hvm as u8
        ),
    );
    let type_name = dom.type_name();
    pipe.xc_log(
        Level::Info,
        &format!("Saving domain {}, type {type_name}", args.domid),
    );
    if !hvm {
        pipe.xc_log(
            Level::Detail,
            &format!(
                "{} bits, {} levels",
                info.guest_width as u32 * 8,
                info.pt_levels
            ),
        );
        pipe.xc_log(Level::Detail, &format!("max_pfn {:#x}", info.max_pfn));
    }
    let mut required = vec![msgtype::SUSPEND];
    if hvm {
        required.push(msgtype::SWITCH_QEMU_LOGDIRTY);
    }
    if args.stream_type != StreamType::Plain {
        required.extend([msgtype::CHECKPOINT, msgtype::POSTCOPY]);
    }
    if args.stream_type == StreamType::Colo {
        required.push(msgtype::WAIT_CHECKPOINT);
    }
    if let Some(name) = missing_callback(args.cbflags, &required) {
        pipe.xc_log(
            Level::Critical,
            &format!(
                "libxl provides no {name} callback (cbflags {:#x}), which this save needs",
                args.cbflags.0
            ),
        );
        return Outcome::Abort;
    }
    let mut opts = SaveOptions {
        live: args.live(),
        debug: args.debug(),
        stream_type: args.stream_type,
        ..SaveOptions::default()
    };
    if let Some((major, minor)) = dom.xen_version() {
        opts.xen_major = major;
        opts.xen_minor = minor;
    }
    let back_channel = match args.stream_type {
        StreamType::Colo => back_channel,
        _ => None,
    };
    let result = {
        let mut cb = HelperCallbacks::new(pipe, args.cbflags, args.domid, args.stream_type);
        save(dom, &mut cb, stream, opts, back_channel).map(|_| ())
    };
    if let Some(o) = pipe_outcome(pipe) {
        return o;
    }
    match result {
        Ok(()) => complete(pipe, 0, 0),
        Err(e) => save_failed(pipe, &e),
    }
}

fn save_failed<R: Read, W: Write>(pipe: &mut Pipe<R, W>, e: &SaveError) -> Outcome {
    let errnoval = save_errno(e);
    pipe.xc_log(Level::Error, &e.to_string());
    pipe.xc_log(
        Level::Error,
        &format!("Save failed ({errnoval} = {})", strerror(errnoval)),
    );
    complete(pipe, -1, errnoval)
}

/// The errno a failed save reports, as close to libxc's as xenmig's errors tell.
pub fn save_errno(e: &SaveError) -> i32 {
    match e {
        SaveError::Backend(b) => b.errno.unwrap_or(EIO),
        SaveError::Write(WriteError::Io { source, .. }) => source.raw_os_error().unwrap_or(EIO),
        SaveError::Write(_) | SaveError::Invalid(_) => errno::EINVAL,
        SaveError::BackChannel(_) => EIO,
        SaveError::Suspend(_) | SaveError::Aborted => 0,
    }
}

/// Restores `stream` (the helper's io_fd, positioned by libxl at the libxc image) into domain
/// `args.domid`. The stream is read exactly up to the libxc END (or, in a checkpointed stream,
/// each CHECKPOINT), never further: libxl reads its own records from the same fd.
pub fn run_restore<D, R, W, S>(
    dom: &mut D,
    args: &RestoreArgs,
    pipe: &mut Pipe<R, W>,
    stream: S,
) -> Outcome
where
    D: HelperDomain,
    R: Read,
    W: Write,
    S: Read,
{
    let hvm = matches!(dom.info(), Ok(i) if i.guest == GuestType::X86Hvm);
    pipe.xc_log(
        Level::Detail,
        &format!(
            "fd {}, dom {}, hvm {}, stream_type {}",
            args.io_fd,
            args.domid,
            hvm as u8,
            stream_type_number(args.stream_type)
        ),
    );
    let mut required = Vec::new();
    if args.stream_type != StreamType::Plain {
        required.push(msgtype::CHECKPOINT);
    }
    if let Some(name) = missing_callback(args.cbflags, &required) {
        pipe.xc_log(
            Level::Critical,
            &format!(
                "libxl provides no {name} callback (cbflags {:#x}), which this restore needs",
                args.cbflags.0
            ),
        );
        return Outcome::Abort;
    }
    pipe.xc_log(Level::Info, "Restoring domain");
    let result = if args.stream_type == StreamType::Colo {
        Err(RestoreError::Backend {
            context: "COLO restore".into(),
            source: BackendError::new(
                "restore",
                "xenmig's restore driver has no COLO secondary mode",
            )
            .errno(errno::EOPNOTSUPP),
        })
    } else {
        let opts = ReaderOptions {
            framing: Some(Framing::Libxc),
            strictness: Strictness::Lenient,
        };
        let mut reader = Reader::new(ReadSource::new(stream).exact(), opts).libxc_only();
        let ropts = RestoreOptions {
            stream_type: args.stream_type,
            store_evtchn: args.store_evtchn,
            console_evtchn: args.console_evtchn,
        };
        let mut cb = HelperCallbacks::new(pipe, args.cbflags, args.domid, args.stream_type);
        restore(dom, &mut cb, &mut reader, ropts)
    };
    if let Some(o) = pipe_outcome(pipe) {
        return o;
    }
    let (store_gfn, console_gfn, retval, errnoval) = match result {
        Ok(r) => {
            pipe.xc_log(Level::Info, "Restore successful");
            pipe.xc_log(
                Level::Info,
                &format!(
                    "XenStore: mfn {:#x}, dom {}, evt {}",
                    r.store_gfn, args.store_domid, args.store_evtchn
                ),
            );
            pipe.xc_log(
                Level::Info,
                &format!(
                    "Console: mfn {:#x}, dom {}, evt {}",
                    r.console_gfn, args.console_domid, args.console_evtchn
                ),
            );
            (r.store_gfn, r.console_gfn, 0, 0)
        }
        Err(e) => {
            let errnoval = restore_errno(&e);
            pipe.xc_log(Level::Error, &e.to_string());
            pipe.xc_log(
                Level::Error,
                &format!("Restore failed ({errnoval} = {})", strerror(errnoval)),
            );
            (0, 0, -1, errnoval)
        }
    };
    // Sent whatever happened (zeros on failure): libxl waits for it.
    pipe.send(&Message::RestoreResults {
        store_gfn,
        console_gfn,
    });
    complete(pipe, retval, errnoval)
}

/// The errno a failed restore reports. A stream that ends early reports 0, as libxc's
/// `read_exact` leaves errno at end of file.
pub fn restore_errno(e: &RestoreError) -> i32 {
    match e {
        RestoreError::Stream(s) => match s.kind {
            ErrorKind::Truncated => 0,
            ErrorKind::Io => EIO,
            _ => errno::EINVAL,
        },
        RestoreError::Backend { source, .. } => source.errno.unwrap_or(EIO),
    }
}

const EIO: i32 = 5;

/// glibc's text for the errnos the helper reports.
fn strerror(e: i32) -> &'static str {
    match e {
        0 => "Success",
        1 => "Operation not permitted",
        5 => "Input/output error",
        9 => "Bad file descriptor",
        11 => "Resource temporarily unavailable",
        12 => "Cannot allocate memory",
        22 => "Invalid argument",
        28 => "No space left on device",
        32 => "Broken pipe",
        34 => "Numerical result out of range",
        95 => "Operation not supported",
        _ => "Unknown error",
    }
}
