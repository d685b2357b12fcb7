//! Inputs and outputs named on the command line: a path, `-` for stdin/stdout, or (in the
//! reference tools' spellings) a decimal file descriptor number. Path outputs are written to
//! a temporary file beside the target and renamed on success; a failure removes it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// Bit `fd` is set for each of the standard descriptors 0-2 that was closed when the process
/// started. Rust's runtime opens /dev/null over closed ones before `main`, so that asking
/// later finds them open and writes vanish; this is recorded earlier, by an ELF constructor.
static CLOSED_AT_START: AtomicU8 = AtomicU8::new(0);

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static RECORD_CLOSED_AT_START: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = record_closed_at_start;

#[cfg(target_os = "linux")]
extern "C" fn record_closed_at_start(
    _argc: libc::c_int,
    _argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    let mut closed = 0u8;
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed |= 1 << fd;
        }
    }
    CLOSED_AT_START.store(closed, Ordering::Relaxed);
}

/// Whether standard descriptor `fd` (0-2) was closed when the process started.
pub fn closed_at_start(fd: i32) -> bool {
    (0..3).contains(&fd) && CLOSED_AT_START.load(Ordering::Relaxed) & (1 << fd) != 0
}

/// The error of a descriptor that is not open.
pub fn closed_error(fd: i32) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("file descriptor {fd} is not open"),
    )
}

/// Octets a pipe that xenmig reads or writes a stream through is widened to: Linux makes
/// pipes of 64 KiB, and a page batch (4 MiB) then crosses one in 64 handovers between the
/// writer and the reader, each a wakeup and a context switch; 1 MiB is the most an
/// unprivileged process may ask for by default (`/proc/sys/fs/pipe-max-size`).
const PIPE_OCTETS: libc::c_int = 1 << 20;

/// Widens the pipe behind `fd` to [`PIPE_OCTETS`] when it is a pipe narrower than that (both
/// of its ends see the new size). Only a hint: a pipe that cannot be widened (a lower limit,
/// a kernel without the call) is used as it is, and anything else is left alone.
pub fn widen_pipe(fd: &impl AsFd) {
    let fd = fd.as_fd().as_raw_fd();
    // SAFETY: F_GETPIPE_SZ only queries the descriptor (-1 for anything but a pipe), and
    // F_SETPIPE_SZ only resizes the pipe's buffer; `fd` is open for as long as the borrow.
    unsafe {
        let size = libc::fcntl(fd, libc::F_GETPIPE_SZ);
        if size > 0 && size < PIPE_OCTETS {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_OCTETS);
        }
    }
}

/// Standard input or output as a file of its own (a duplicate of the descriptor): read and
/// written without the standard library's buffers (a stream is read and written in large
/// pieces, and the line buffering of standard output would search its page data for line
/// ends), its pipe widened.
fn std_stream(fd: BorrowedFd<'_>) -> io::Result<File> {
    let f = File::from(fd.try_clone_to_owned()?);
    widen_pipe(&f);
    Ok(f)
}

/// Where input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    Fd(i32),
    Path(PathBuf),
}

impl Input {
    /// `-` is stdin, anything else a path.
    pub fn from_path_arg(s: &str) -> Input {
        if s == "-" {
            Input::Stdin
        } else {
            Input::Path(PathBuf::from(s))
        }
    }

    /// As the reference tools read `-i/--in`: a decimal number is a file descriptor.
    pub fn from_ref_arg(s: &str) -> Input {
        match parse_fd(s) {
            Some(fd) => Input::Fd(fd),
            None => Input::from_path_arg(s),
        }
    }

    /// A name for messages.
    pub fn describe(&self) -> String {
        match self {
            Input::Stdin => "standard input".into(),
            Input::Fd(fd) => format!("file descriptor {fd}"),
            Input::Path(p) => p.display().to_string(),
        }
    }

    /// Opens the input as a file when it is one (for memory mapping), else as a reader.
    pub fn open(&self) -> io::Result<Opened> {
        match self {
            Input::Stdin if closed_at_start(0) => Err(closed_error(0)),
            Input::Stdin => Ok(Opened::Stream(Box::new(std_stream(io::stdin().as_fd())?))),
            Input::Fd(fd) => Ok(classify(adopt_fd(*fd)?)),
            Input::Path(p) => Ok(classify(File::open(p)?)),
        }
    }
}

/// An opened input.
pub enum Opened {
    /// A regular file: can be memory-mapped.
    File(File),
    /// Anything else: read sequentially.
    Stream(Box<dyn Read>),
}

fn classify(f: File) -> Opened {
    match f.metadata() {
        Ok(m) if m.is_file() => Opened::File(f),
        _ => {
            widen_pipe(&f);
            Opened::Stream(Box::new(f))
        }
    }
}

/// Takes ownership of a descriptor the caller handed us by number, after checking that it
/// is open (a closed or invalid number is an error, not undefined behaviour).
pub fn adopt_fd(fd: i32) -> io::Result<File> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if fd < 0 || closed_at_start(fd) || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(closed_error(fd));
    }
    // SAFETY: the descriptor is open and the caller gave it to this process to use; from
    // here on the File owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Whether descriptor `fd` is open for writing (open, and not read-only): writes to it would
/// otherwise fail, or vanish into the /dev/null Rust's runtime put over a closed stdout.
pub fn check_writable(fd: i32) -> io::Result<()> {
    if fd < 0 || closed_at_start(fd) {
        return Err(closed_error(fd));
    }
    // SAFETY: F_GETFL only queries the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 {
        return Err(closed_error(fd));
    }
    let mode = flags & libc::O_ACCMODE;
    if mode != libc::O_WRONLY && mode != libc::O_RDWR {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("file descriptor {fd} is not open for writing"),
        ));
    }
    Ok(())
}

/// [`adopt_fd`] for an output: the descriptor must also be open for writing.
pub fn adopt_fd_for_writing(fd: i32) -> io::Result<File> {
    check_writable(fd)?;
    adopt_fd(fd)
}

/// Parses a decimal file descriptor number.
pub fn parse_fd(s: &str) -> Option<i32> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Where output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    Stdout,
    Fd(i32),
    Path(PathBuf),
}

impl OutputSpec {
    pub fn from_path_arg(s: &str) -> OutputSpec {
        if s == "-" {
            OutputSpec::Stdout
        } else {
            OutputSpec::Path(PathBuf::from(s))
        }
    }

    pub fn from_ref_arg(s: &str) -> OutputSpec {
        match parse_fd(s) {
            Some(fd) => OutputSpec::Fd(fd),
            None => OutputSpec::from_path_arg(s),
        }
    }

    /// Opens the output; a path is written through a temporary file beside it.
    pub fn create(&self) -> io::Result<Output> {
        match self {
            OutputSpec::Stdout => {
                check_writable(1)?;
                Ok(Output {
                    w: Box::new(std_stream(io::stdout().as_fd())?),
                    temp: None,
                })
            }
            OutputSpec::Fd(fd) => {
                let f = adopt_fd_for_writing(*fd)?;
                widen_pipe(&f);
                Ok(Output {
                    w: Box::new(f),
                    temp: None,
                })
            }
            OutputSpec::Path(p) => {
                // Devices, pipes and sockets are written in place: only a regular file (or a
                // new one) goes through a temporary file and a rename.
                if let Ok(m) = std::fs::metadata(p) {
                    if !m.is_file() {
                        let f = File::options().write(true).open(p)?;
                        return Ok(Output {
                            w: Box::new(f),
                            temp: None,
                        });
                    }
                }
                let temp = temp_path(p);
                let f = File::options().write(true).create_new(true).open(&temp)?;
                Ok(Output {
                    w: Box::new(f),
                    temp: Some((temp, p.clone())),
                })
            }
        }
    }
}

pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(".{name}.xenmig-{}.tmp", std::process::id()))
}

/// An output being written. Dropping it without [`Output::commit`] removes a temporary file.
pub struct Output {
    w: Box<dyn Write>,
    temp: Option<(PathBuf, PathBuf)>,
}

impl Output {
    pub fn writer(&mut self) -> &mut dyn Write {
        &mut *self.w
    }

    /// Flushes, and for a path renames the temporary file over the target.
    pub fn commit(mut self) -> io::Result<()> {
        self.w.flush()?;
        if let Some((temp, target)) = self.temp.take() {
            // Drop the handle before renaming.
            self.w = Box::new(io::sink());
            if let Err(e) = std::fs::rename(&temp, &target) {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some((temp, _)) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.w.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn pipe_size(fd: &impl AsFd) -> libc::c_int {
        // SAFETY: F_GETPIPE_SZ only queries the descriptor.
        unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETPIPE_SZ) }
    }

    #[test]
    fn pipes_are_widened_and_files_left_alone() {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe() just opened both, and nothing else owns them.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        assert!(pipe_size(&r) < PIPE_OCTETS);
        widen_pipe(&w);
        // Both ends see the new size (the limit lets a test widen to 1 MiB: root, or
        // Linux's default pipe-max-size).
        assert_eq!(pipe_size(&r), PIPE_OCTETS);
        assert_eq!(pipe_size(&w), PIPE_OCTETS);
        // Asked again: nothing changes.
        widen_pipe(&r);
        assert_eq!(pipe_size(&r), PIPE_OCTETS);
        let f = tempfile::tempfile().unwrap();
        widen_pipe(&f);
        assert_eq!(pipe_size(&f), -1);
    }
}
