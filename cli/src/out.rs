//! Standard output of the commands, written without panicking: a full disk, a reader that
//! went away (EPIPE) or a descriptor that was closed when the process started make the
//! command report the failure on stderr and exit with status 2, whatever it was doing.
//!
//! [`print()`] returns the error to callers that can act on it; [`say`] (for callbacks and
//! threads that cannot) keeps the first failure, which [`finish`] turns into the exit status.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Mutex;

/// Exit status when standard output could not be written.
pub const EXIT_OUTPUT_FAILED: u8 = 2;

/// The first failure to write standard output, if any.
static FAILED: Mutex<Option<String>> = Mutex::new(None);

fn remember(e: &io::Error) {
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if failed.is_none() {
        *failed = Some(e.to_string());
    }
}

/// Standard output, as a writer that flushes each write and remembers failures for
/// [`finish`]. Descriptor 1 closed at start (Rust's runtime put /dev/null there) is an error
/// rather than output that silently goes nowhere.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = write_all_flushed(buf).map(|()| buf.len());
        if let Err(e) = &r {
            remember(e);
        }
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_all_flushed(buf: &[u8]) -> io::Result<()> {
    if crate::io::closed_at_start(1) {
        return Err(crate::io::closed_error(1));
    }
    let mut o = io::stdout().lock();
    o.write_all(buf)?;
    o.flush()
}

/// Writes `text` to standard output and flushes it.
pub fn print(text: &str) -> io::Result<()> {
    Stdout.write_all(text.as_bytes())
}

/// [`print()`] where the error cannot be handled on the spot; [`finish`] reports it.
pub fn say(text: &str) {
    let _ = print(text);
}

/// The exit status: `code`, unless writing standard output failed, which is reported here
/// and exits with [`EXIT_OUTPUT_FAILED`].
pub fn finish(code: ExitCode) -> ExitCode {
    let failed = FAILED.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(e) => {
            eprintln!("xenmig: cannot write to standard output: {e}");
            ExitCode::from(EXIT_OUTPUT_FAILED)
        }
        None => code,
    }
}
