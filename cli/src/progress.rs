//! A progress bar on stderr for long inputs, fed by the offset the reader has reached.
//!
//! It is shown only when stderr is a terminal and the input is long (over 64 MiB) or of
//! unknown length (a pipe); otherwise nothing is drawn. [`Tracked`] wraps the reader's byte
//! source and moves the bar as records are taken, so it advances inside long runs of large
//! records as well.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{self, IsTerminal};
use xenmig::source::{Short, Source};

/// Inputs longer than this get a bar.
pub const LONG_INPUT: u64 = 64 << 20;

/// Octets between two updates of the bar.
const STEP: u64 = 1 << 20;

/// A bar for an input of `len` octets (`None`: unknown), or `None` when none is to be shown.
pub fn bar(len: Option<u64>, allowed: bool) -> Option<ProgressBar> {
    if !allowed || !io::stderr().is_terminal() {
        return None;
    }
    match len {
        Some(n) if n <= LONG_INPUT => None,
        Some(n) => {
            let style = ProgressStyle::with_template(
                "{spinner} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            Some(ProgressBar::new(n).with_style(style))
        }
        None => {
            let style =
                ProgressStyle::with_template("{spinner} {bytes} read, {bytes_per_sec}, {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            Some(ProgressBar::new_spinner().with_style(style))
        }
    }
}

/// A byte source that moves a progress bar as it is read.
pub struct Tracked<S> {
    inner: S,
    bar: Option<ProgressBar>,
    next: u64,
}

impl<S: Source> Tracked<S> {
    pub fn new(inner: S, bar: Option<ProgressBar>) -> Self {
        Tracked {
            inner,
            bar,
            next: 0,
        }
    }

    /// Called before taking `n` more octets.
    fn advance(&mut self, n: usize) {
        if let Some(bar) = &self.bar {
            let at = self.inner.offset().saturating_add(n as u64);
            if at >= self.next {
                bar.set_position(at);
                self.next = at.saturating_add(STEP);
            }
        }
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl<S: Source> Source for Tracked<S> {
    fn take(&mut self, n: usize) -> Result<&[u8], Short> {
        self.advance(n);
        self.inner.take(n)
    }

    fn take_upto(&mut self, n: usize) -> io::Result<&[u8]> {
        self.advance(n);
        self.inner.take_upto(n)
    }

    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        self.inner.peek(n)
    }

    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    fn len_hint(&self) -> Option<u64> {
        self.inner.len_hint()
    }

    fn prefetch(&self, ahead: usize) {
        self.inner.prefetch(ahead);
    }

    fn read_into(&mut self, dst: &mut [u8]) -> Result<(), Short> {
        self.advance(dst.len());
        self.inner.read_into(dst)
    }
}
