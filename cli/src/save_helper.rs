//! `xenmig save-helper`, also started as `libxl-save-helper`: the process side of
//! [`xenmig::savehelper`]. It takes over the inherited fds, sets the signals the C helper sets,
//! runs the save or restore and exits with the C helper's status.
//!
//! Point libxl at it with `LIBXL_SAVE_HELPER=/path/to/xenmig-as-libxl-save-helper` (a symlink
//! named `libxl-save-helper`), or at a wrapper running `xenmig save-helper "$@"`.

use std::fs::File;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use xenmig::savehelper::{self, Args, BackendSpec, Outcome, Pipe, BACKEND_ENV};

/// The helper's two command lines, as libxl passes them (the subcommand's usage line).
pub const SYNOPSIS: &str = "\
xenmig save-helper --save-domain IO_FD RECV_FD DOMID XCFLAGS CBFLAGS STREAM_TYPE
       xenmig save-helper --restore-domain IO_FD SEND_BACK_FD DOMID STORE_EVTCHN STORE_DOMID \\
                          CONSOLE_EVTCHN CONSOLE_DOMID CBFLAGS STREAM_TYPE";

/// What the subcommand's help and manual page say about it.
pub const ABOUT: &str = "\
A drop-in libxl-save-helper: libxl starts it with these arguments (set LIBXL_SAVE_HELPER, or
start the binary as libxl-save-helper) and talks to it over standard input and output. The
stream and back-channel descriptors are inherited from libxl. XENMIG_SAVE_HELPER_BACKEND
chooses the domain it works on: the real one (the default), or a simulated one.";

/// An fd the process inherited, as a `File` that is never closed by us.
fn inherited(fd: i32) -> ManuallyDrop<File> {
    // The fd number comes from libxl, which keeps it open for the helper's whole life.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// The save's io_fd and the fd the SIGTERM handler puts over it.
static IO_FD: AtomicI32 = AtomicI32::new(-1);
static UNWRITEABLE_FD: AtomicI32 = AtomicI32::new(-1);

/// The C helper's SIGTERM handler for a save: `/dev/null`, opened read-only, goes over the
/// io_fd, so the next write to the stream fails and the save unwinds through its cleanup.
extern "C" fn save_sigterm(_: libc::c_int) {
    let from = UNWRITEABLE_FD.load(Ordering::Relaxed);
    let to = IO_FD.load(Ordering::Relaxed);
    if from >= 0 && to >= 0 {
        // dup2 is async-signal-safe; errno is saved around it like the C handler does.
        unsafe {
            let errno = *libc::__errno_location();
            libc::dup2(from, to);
            *libc::__errno_location() = errno;
        }
    }
}

fn setup_save_signals(io_fd: i32) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new().read(true).open("/dev/null")?;
    UNWRITEABLE_FD.store(std::os::fd::IntoRawFd::into_raw_fd(null), Ordering::Relaxed);
    IO_FD.store(io_fd, Ordering::Relaxed);
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = save_sigterm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `xenmig save-helper --help`: the subcommand's long help, manual sections included.
fn help_text() -> String {
    let mut cmd = crate::manual::command();
    match cmd.find_subcommand_mut("save-helper") {
        Some(sub) => sub.render_long_help().to_string(),
        None => format!("usage: {SYNOPSIS}\n\n{ABOUT}"),
    }
}

/// Runs the helper with the whole argv (`argv[0]` is the program or `save-helper`); never returns.
pub fn main(argv: &[String]) -> ! {
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            let help = matches!(
                argv.get(1).map(String::as_str),
                None | Some("--help" | "-h")
            );
            if help {
                let code = match crate::out::print(&format!("{}\n", help_text())) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("xenmig save-helper: cannot write to standard output: {e}");
                        crate::out::EXIT_OUTPUT_FAILED.into()
                    }
                };
                std::process::exit(code);
            }
            // The C helper asserts on argv libxl would never pass.
            eprintln!("xenmig save-helper: {e}\nusage: {SYNOPSIS}");
            std::process::exit(savehelper::EXIT_FAIL.into());
        }
    };
    // libxl resets SIGPIPE to the default before exec; Rust's start-up ignores it again.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let stdin = inherited(0);
    let stdout = inherited(1);
    let mut pipe = Pipe::new(&*stdin, &*stdout);
    let backend = BackendSpec::parse(std::env::var(BACKEND_ENV).ok().as_deref());
    if let Args::Save(s) = &args {
        // Restore keeps SIGTERM at its default.
        if let Err(e) = setup_save_signals(s.io_fd) {
            savehelper::flow::starting(&mut pipe, "save");
            let o = savehelper::flow::fail(
                &mut pipe,
                e.raw_os_error().unwrap_or(0),
                &format!("open /dev/null for reading: {e}"),
            );
            finish(o);
        }
    }
    let stream = inherited(args.io_fd());
    // A migration's stream is a pipe to ssh (or the like): widened, a page batch crosses it in
    // far fewer handovers between this helper and the other side.
    crate::io::widen_pipe(&*stream);
    let back_channel = match &args {
        Args::Save(s) if s.stream_type == xenmig::save::StreamType::Colo && s.recv_fd >= 0 => {
            Some(inherited(s.recv_fd))
        }
        _ => None,
    };
    let outcome = savehelper::run(&args, backend, &mut pipe, &stream, back_channel.as_deref());
    finish(outcome)
}

fn finish(o: Outcome) -> ! {
    let _ = std::io::stderr().flush();
    match o {
        Outcome::Exit(code) => std::process::exit(code.into()),
        Outcome::Abort => std::process::abort(),
    }
}
