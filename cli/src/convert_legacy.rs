//! `xenmig convert-legacy`, and the same command started as `convert-legacy-stream`: a
//! drop-in for Xen's converter of that name (what libxl runs through `LIBXL_CONVERT_HELPER`
//! and xenopsd runs by path).
//!
//! Both spellings take the reference's options (`-i/--in`, `-o/--out` with a decimal number
//! meaning a file descriptor and `-` meaning stdin/stdout, `-w/--width`, `-g/--guest-type` or
//! `--guest`, `-f/--format`, `-x/--xl`, `--skip-qemu`, `-v/--verbose`, `--syslog`); the width,
//! the guest type and the xl header are detected when not given. Exit status as the reference:
//! 0 converted, 1 stream or I/O error, 2 unsupported content or a usage error. A path output is
//! written to a temporary file beside it and renamed once the whole stream is converted.

use crate::io::{Input, Opened, OutputSpec};
use clap::{CommandFactory, FromArgMatches, Parser};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::time::Instant;
use xenmig::convert::legacy::{GuestType, Width};
use xenmig::convert::{convert_file_to, convert_to, ConvertOptions, ConvertSummary, OutputFormat};

/// Exit status: converted.
const EXIT_OK: u8 = 0;
/// Exit status: the input is not a valid legacy stream, or reading or writing failed.
const EXIT_STREAM_ERROR: u8 = 1;
/// Exit status: the input uses something the converter does not handle, or bad usage.
const EXIT_UNSUPPORTED: u8 = 2;

/// Options of `xenmig convert-legacy`, spelled as Xen's `convert-legacy-stream` spells them.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Legacy stream to convert: a path, a decimal file descriptor number, or - for stdin.
    #[arg(short = 'i', long = "in", value_name = "FILE|FD")]
    input: String,
    /// Where the v2 stream goes: a path, a decimal file descriptor number, or - for stdout.
    #[arg(short = 'o', long = "out", value_name = "FILE|FD")]
    output: String,
    /// Width of the saving toolstack, in bits (detected when left out).
    #[arg(short = 'w', long = "width", value_name = "32|64", value_parser = parse_width)]
    width: Option<Width>,
    /// Type of guest in the stream (detected when left out).
    #[arg(
        short = 'g',
        long = "guest-type",
        visible_alias = "guest",
        value_name = "pv|hvm",
        value_parser = parse_guest_type
    )]
    guest_type: Option<GuestType>,
    /// Framing of the output: a bare libxc image, or a libxl stream around it.
    #[arg(
        short = 'f',
        long = "format",
        value_name = "libxc|libxl",
        default_value = "libxc",
        value_parser = parse_format
    )]
    format: OutputFormat,
    /// The input starts with an xl save-file header, copied to the output (detected when left
    /// out).
    #[arg(short = 'x', long = "xl")]
    xl: bool,
    /// Do not read the qemu record after an HVM stream (libxc format only).
    #[arg(long = "skip-qemu")]
    skip_qemu: bool,
    /// Summarise what was converted (on stderr, or to syslog with --syslog).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Log through syslog(3) instead of stderr.
    #[arg(long = "syslog")]
    syslog: bool,
}

/// The command line of `convert-legacy-stream`: the same options, with optparse's habit of
/// accepting any unambiguous prefix of a long option (`--guest`, `--form`, ...).
#[derive(Parser, Debug)]
#[command(
    name = "convert-legacy-stream",
    version,
    about = "Convert a legacy stream to a v2 stream",
    infer_long_args = true
)]
struct Reference {
    #[command(flatten)]
    args: Args,
}

pub(crate) fn parse_width(s: &str) -> Result<Width, String> {
    match s {
        "32" => Ok(Width::Bits32),
        "64" => Ok(Width::Bits64),
        _ => Err("expected 32 or 64".into()),
    }
}

pub(crate) fn parse_guest_type(s: &str) -> Result<GuestType, String> {
    match s {
        "pv" => Ok(GuestType::Pv),
        "hvm" => Ok(GuestType::Hvm),
        _ => Err("expected pv or hvm".into()),
    }
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    match s {
        "libxc" => Ok(OutputFormat::Libxc),
        "libxl" => Ok(OutputFormat::Libxl),
        _ => Err("expected libxc or libxl".into()),
    }
}

/// `xenmig convert-legacy`.
pub fn run(a: Args) -> ExitCode {
    ExitCode::from(convert(&a, "xenmig convert-legacy"))
}

/// Entry point when the binary is started as `convert-legacy-stream`.
pub fn main_as_reference() -> ExitCode {
    let matches = match reference_command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return ExitCode::from(usage_error(e)),
    };
    match Reference::from_arg_matches(&matches) {
        Ok(r) => ExitCode::from(convert(&r.args, "convert-legacy-stream")),
        Err(e) => ExitCode::from(usage_error(e)),
    }
}

/// The command line of `convert-legacy-stream`, its help ending with `convert-legacy`'s
/// manual (exit status, environment, examples).
pub fn reference_command() -> clap::Command {
    let cmd = Reference::command();
    match crate::manual::manual(&["convert-legacy"]) {
        Some(m) => cmd.after_long_help(crate::manual::help_text(m)),
        None => cmd,
    }
}

/// Prints a parse error (or help/version) and picks the status the reference exits with:
/// 1 when `--in` or `--out` is missing (it prints its help and exits 1), 2 for anything
/// optparse rejects, 0 for `--help` and `--version`.
fn usage_error(e: clap::Error) -> u8 {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => EXIT_OK,
        clap::error::ErrorKind::MissingRequiredArgument => EXIT_STREAM_ERROR,
        _ => EXIT_UNSUPPORTED,
    }
}

/// Where messages go: stderr, or syslog(3) under `ident`.
struct Log {
    ident: &'static str,
    syslog: bool,
    verbose: bool,
}

impl Log {
    fn open(ident: &'static str, syslog: bool, verbose: bool) -> Log {
        if syslog {
            let tag = match ident {
                "convert-legacy-stream" => c"convert-legacy-stream",
                _ => c"xenmig",
            };
            // Safety: the identity is a static C string, as openlog(3) requires (it keeps the
            // pointer).
            unsafe { libc::openlog(tag.as_ptr(), libc::LOG_PID, libc::LOG_USER) };
        }
        Log {
            ident,
            syslog,
            verbose,
        }
    }

    fn error(&self, message: &str) {
        self.emit(libc::LOG_ERR, message);
    }

    fn info(&self, message: &str) {
        if self.verbose {
            self.emit(libc::LOG_INFO, message);
        }
    }

    fn emit(&self, priority: libc::c_int, message: &str) {
        if !self.syslog {
            eprintln!("{}: {message}", self.ident);
            return;
        }
        for line in message.lines() {
            let Ok(line) = CString::new(line.replace('\0', "\\0")) else {
                continue;
            };
            // Safety: a constant format string and one NUL-terminated argument.
            unsafe { libc::syslog(priority, c"%s".as_ptr(), line.as_ptr()) };
        }
    }
}

/// Where the converted stream goes while it is being written.
enum Destination {
    /// A path (through a temporary file) or an inherited descriptor.
    Output(crate::io::Output),
    /// Our own handle on standard output, unbuffered: records go out as vectored writes.
    Stdout(File),
}

impl Destination {
    /// Opens the output; a descriptor (stdout included) must be open, and open for writing,
    /// before anything is converted.
    fn open(spec: &OutputSpec) -> io::Result<Destination> {
        match spec {
            OutputSpec::Stdout => {
                crate::io::check_writable(1)?;
                Ok(Destination::Stdout(File::from(
                    io::stdout().as_fd().try_clone_to_owned()?,
                )))
            }
            other => other.create().map(Destination::Output),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Destination::Output(o) => o.writer(),
            Destination::Stdout(f) => f,
        }
    }

    /// Makes the output final: a temporary file is renamed over the target.
    fn commit(self) -> io::Result<()> {
        match self {
            Destination::Output(o) => o.commit(),
            Destination::Stdout(mut f) => f.flush(),
        }
    }
}

/// Standard input when it is a regular file (`-i - < FILE`), to be mapped like one.
fn stdin_file() -> Option<File> {
    let f = File::from(io::stdin().as_fd().try_clone_to_owned().ok()?);
    f.metadata().ok()?.is_file().then_some(f)
}

/// Whether `out` names the file `input` is, so that writing it would replace the input.
fn same_file(input: &File, out: &OutputSpec) -> bool {
    let OutputSpec::Path(path) = out else {
        return false;
    };
    match (input.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn convert(a: &Args, ident: &'static str) -> u8 {
    let log = Log::open(ident, a.syslog, a.verbose);
    let opts = ConvertOptions {
        width: a.width,
        guest_type: a.guest_type,
        xl_header: if a.xl { Some(true) } else { None },
        format: a.format,
        skip_qemu: a.skip_qemu,
    };
    let input = Input::from_ref_arg(&a.input);
    let output = OutputSpec::from_ref_arg(&a.output);
    let opened = match (&input, stdin_file()) {
        (Input::Stdin, Some(f)) => Ok(Opened::File(f)),
        _ => input.open(),
    };
    let opened = match opened {
        Ok(Opened::File(f)) if same_file(&f, &output) => {
            log.error(&format!(
                "{} is both the input and the output; the input is never overwritten",
                a.output
            ));
            return EXIT_UNSUPPORTED;
        }
        Ok(o) => o,
        Err(e) => {
            log.error(&format!("cannot open {}: {e}", input.describe()));
            return EXIT_STREAM_ERROR;
        }
    };
    let mut destination = match Destination::open(&output) {
        Ok(d) => d,
        // A descriptor that is not open (or not for writing) is a usage error.
        Err(e) if !matches!(output, OutputSpec::Path(_)) => {
            log.error(&format!("cannot write to {}: {e}", describe(&output)));
            return EXIT_UNSUPPORTED;
        }
        Err(e) => {
            log.error(&format!("cannot create {}: {e}", describe(&output)));
            return EXIT_STREAM_ERROR;
        }
    };
    let started = Instant::now();
    let converted = {
        // Records go out many at a time: a batch of a few pages is a record of a few dozen
        // KiB, and its head puts its pages off the output's page alignment, so written one by
        // one they cost the output file twice per page (8-pfn batches onto the disk: 0.52x of
        // `cat` unbuffered, 0.91x buffered). A failed write is reported at the offset of the
        // record that found it, which may be up to a MiB after the octets that failed.
        match opened {
            // Regular files: page data from the windows the input is read into, gathered.
            Opened::File(f) => convert_file_to(f, destination.writer(), &opts),
            Opened::Stream(r) => convert_to(
                r,
                std::io::BufWriter::with_capacity(1 << 20, destination.writer()),
                &opts,
            ),
        }
    };
    let summary = match converted {
        Ok(s) => s,
        Err(e) => {
            // Dropping the destination removes a temporary file: no partial output is left.
            drop(destination);
            let kind = if e.exit_code() == i32::from(EXIT_UNSUPPORTED) {
                "cannot convert"
            } else {
                "stream error"
            };
            log.error(&format!("{kind}: {}: {e}", input.describe()));
            return u8::try_from(e.exit_code()).unwrap_or(EXIT_STREAM_ERROR);
        }
    };
    if let Err(e) = destination.commit() {
        log.error(&format!("cannot finish {}: {e}", describe(&output)));
        return EXIT_STREAM_ERROR;
    }
    log.info(&summarise(
        &summary,
        &input,
        &output,
        started.elapsed().as_secs_f64(),
    ));
    EXIT_OK
}

fn describe(output: &OutputSpec) -> String {
    match output {
        OutputSpec::Stdout => "standard output".into(),
        OutputSpec::Fd(fd) => format!("file descriptor {fd}"),
        OutputSpec::Path(p) => p.display().to_string(),
    }
}

/// The verbose report: what was detected, what was written, how fast.
fn summarise(s: &ConvertSummary, input: &Input, output: &OutputSpec, seconds: f64) -> String {
    let format = match s.format {
        OutputFormat::Libxc => "libxc",
        OutputFormat::Libxl => "libxl",
    };
    let mut text = format!(
        "converted {} to {}: {}-bit toolstack, {} guest, {format} format{}\n",
        input.describe(),
        describe(output),
        s.width,
        s.guest_type,
        if s.xl_header {
            ", xl header copied"
        } else {
            ""
        },
    );
    text += &format!(
        "  p2m_size {:#x}; {} PAGE_DATA records, {} pages",
        s.p2m_size, s.page_data_records, s.pages
    );
    if s.dropped_bare_xtab_entries > 0 || s.dropped_empty_batches > 0 {
        text += &format!(
            " ({} bare XTAB entries and {} empty batches dropped)",
            s.dropped_bare_xtab_entries, s.dropped_empty_batches
        );
    }
    if s.guest_type == GuestType::Pv {
        text += &format!("; {} vcpus", s.vcpus);
    }
    if s.physmap_entries > 0 {
        text += &format!("; {} physmap entries", s.physmap_entries);
    }
    if let Some(q) = s.qemu_record {
        text += &format!("; qemu record {q:?}");
    }
    if s.verify_mode {
        text += "; debug verify pass";
    }
    let mib_per_s = if seconds > 0.0 {
        s.input_bytes as f64 / seconds / f64::from(1u32 << 20)
    } else {
        0.0
    };
    text += &format!(
        "\n  {} bytes in, {} bytes out, {seconds:.3} s ({mib_per_s:.0} MiB/s)",
        s.input_bytes, s.output_bytes
    );
    text
}
