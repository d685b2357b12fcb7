//! `xenmig verify`, `info` and `dump`: check a stream, describe it, list its records (or, for
//! `dump`, the chunks and parts of a legacy stream).
//!
//! Regular files are memory-mapped and read in place (the verifier never touches the page
//! octets it does not need); pipes, stdin and descriptors of pipes are read through the
//! runtime's bounded `Read` source. All three commands exit 0 for a valid stream, 1 for an
//! invalid one (a truncated stream included) and 2 for usage or I/O errors.

use crate::io::{Input, Opened};
use crate::progress::{self, Tracked};
use crate::render::{self, Fields, Val};
use crate::schema::stamp;
use serde_json::json;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use xenmig::convert::legacy::{
    GuestType, LegacyError, LegacyReader, LegacySource, ReaderOptions as LegacyOptions, Width,
};
use xenmig::convert::MappedFile;
use xenmig::error::ErrorKind;
use xenmig::forensics::cpu::mode_text;
use xenmig::forensics::{Tracker, VcpuRegs, Which};
use xenmig::reader::{Framing, Item, Reader, ReaderOptions};
use xenmig::source::{MappedSource, ReadSource, SliceSource, Source};
use xenmig::verify::verify_reader_observed;
use xenmig::verify::Report;
use xenmig::wire::Strictness;
use xenmig::{libxc, verify_reader, xl, Layer, StreamError, VerifyOptions};

/// Exit status of a valid stream.
const EXIT_VALID: u8 = 0;
/// Exit status of an invalid or truncated stream.
const EXIT_INVALID: u8 = 1;
/// Exit status of a usage or I/O error.
const EXIT_ERROR: u8 = 2;

/// The framing to read with: `auto` detects it from the first octets.
#[derive(Debug, Clone, Copy)]
pub struct Format(Option<Framing>);

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "auto" => Ok(Format(None)),
        other => other.parse().map(|f| Format(Some(f))),
    }
}

/// Options shared by the three commands: how to read the input.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// Framing of the input: auto (detect from the first octets), libxc, libxl or xl.
    #[arg(
        short = 'f',
        long = "format",
        value_name = "auto|libxc|libxl|xl",
        default_value = "auto",
        value_parser = parse_format
    )]
    format: Format,
    /// Also reject what Xen's reference verifier rejects (reserved fields, padding): the default.
    #[arg(long, conflicts_with = "lenient")]
    strict: bool,
    /// Reject only what Xen's restore code rejects.
    #[arg(long)]
    lenient: bool,
    /// The stream is a COLO forward stream: the primary's CHECKPOINT_STATE (NEW) follows
    /// each CHECKPOINT_END (its type number overlaps a libxc record's, so it cannot be told
    /// from the bytes).
    #[arg(long)]
    colo: bool,
}

/// How to read an input: the reader's options, and whether it is a COLO forward stream.
#[derive(Debug, Clone, Copy)]
struct ReadMode {
    opts: ReaderOptions,
    colo: bool,
}

impl ReadMode {
    fn reader<S: Source>(self, src: S) -> Reader<S> {
        let mut r = Reader::new(src, self.opts);
        r.set_colo(self.colo);
        r
    }
}

impl ReadArgs {
    fn strictness(&self) -> Strictness {
        if self.lenient {
            Strictness::Lenient
        } else {
            Strictness::Strict
        }
    }

    fn reader_options(&self) -> ReadMode {
        ReadMode {
            opts: ReaderOptions {
                framing: self.format.0,
                strictness: self.strictness(),
            },
            colo: self.colo,
        }
    }

    fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            framing: self.format.0,
            strictness: self.strictness(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Also print warnings and notes, and a short summary of the stream.
    #[arg(short, long, conflicts_with = "quiet")]
    verbose: bool,
    /// Print nothing: the exit status says it all.
    #[arg(short, long)]
    quiet: bool,
    /// Print the whole report as JSON (its schema: `xenmig schema verify`).
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Input as Xen's verify-stream-v2 names it: a path, or a decimal file descriptor number.
    #[arg(
        short = 'i',
        long = "in",
        value_name = "FILE|FD",
        conflicts_with = "file"
    )]
    input: Option<String>,
    /// The stream to check, or - for standard input (the default).
    #[arg(value_name = "FILE|-")]
    file: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Print the report as JSON, for programs (its schema: `xenmig schema info`).
    #[arg(long)]
    json: bool,
    /// The stream to describe, or - for standard input.
    #[arg(value_name = "FILE|-")]
    file: String,
}

#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// One JSON object per line instead of text (their schema: `xenmig schema dump`).
    #[arg(long)]
    json: bool,
    /// Also print the contents of every page (hexdump lines; hex strings in JSON).
    #[arg(long)]
    pages: bool,
    /// Read the input as a legacy (Xen 4.5 and older) stream. Without it, an input that opens
    /// with no xl, libxl or libxc image header, or with an xl header whose STREAMv2 flag is
    /// clear, is read as one.
    #[arg(long, conflicts_with_all = ["format", "colo"])]
    legacy: bool,
    /// Legacy: width of the saving toolstack, in bits (detected when left out; implies
    /// --legacy).
    #[arg(short = 'w', long, value_name = "32|64", value_parser = crate::convert_legacy::parse_width, conflicts_with_all = ["format", "colo"])]
    width: Option<Width>,
    /// Legacy: type of guest in the stream (detected when left out; implies --legacy).
    #[arg(
        short = 'g',
        long = "guest-type",
        visible_alias = "guest",
        value_name = "pv|hvm",
        value_parser = crate::convert_legacy::parse_guest_type,
        conflicts_with_all = ["format", "colo"]
    )]
    guest_type: Option<GuestType>,
    /// Legacy: no qemu record follows an HVM stream's context.
    #[arg(long = "skip-qemu")]
    skip_qemu: bool,
    /// The stream to list, or - for standard input.
    #[arg(value_name = "FILE|-")]
    file: String,
}

// ---------------------------------------------------------------------------------------------
// Opening the input

/// Something that reads a whole stream, whatever its byte source.
trait Job {
    type Out;
    fn run<S: Source>(self, reader: Reader<S>) -> Self::Out;
}

/// A memory map of a file from a starting offset (a descriptor may be handed over part-read).
struct Mapped {
    map: Option<memmap2::Mmap>,
    start: usize,
}

impl Mapped {
    fn bytes(&self) -> &[u8] {
        self.map
            .as_deref()
            .and_then(|m| m.get(self.start..))
            .unwrap_or_default()
    }
}

/// Maps a regular file from its current position; `Err` gives the file back when it cannot
/// be mapped (it is then read as a stream).
fn map_file(mut f: File) -> Result<Mapped, File> {
    let Ok(start) = f.stream_position() else {
        return Err(f);
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return Err(f);
    };
    if len == 0 || start >= len {
        return Ok(Mapped {
            map: None,
            start: 0,
        });
    }
    let Ok(start) = usize::try_from(start) else {
        return Err(f);
    };
    // Safety: the file is mapped read-only; as with any tool that maps its input, changing the
    // file while it is being read gives unspecified contents (never memory unsafety in our
    // code, which only reads the octets through bounds-checked slices).
    match unsafe { memmap2::Mmap::map(&f) } {
        Ok(map) => Ok(Mapped {
            map: Some(map),
            start,
        }),
        Err(_) => Err(f),
    }
}

/// Opens `input` and runs `job` over it: zero-copy over a map for a regular file, through a
/// bounded buffer for anything else. `show_progress` allows a bar on stderr.
fn run_on<J: Job>(
    input: &Input,
    opts: ReadMode,
    show_progress: bool,
    job: J,
) -> io::Result<J::Out> {
    run_opened(open_input(input)?, opts, show_progress, job)
}

/// Opens `input`: standard input that is a regular file as that file.
fn open_input(input: &Input) -> io::Result<Opened> {
    match (input, stdin_file()) {
        (Input::Stdin, Some(f)) => Ok(Opened::File(f)),
        _ => input.open(),
    }
}

/// [`run_on`] for an input already opened.
fn run_opened<J: Job>(
    opened: Opened,
    opts: ReadMode,
    show_progress: bool,
    job: J,
) -> io::Result<J::Out> {
    match opened {
        Opened::File(f) => match map_file(f) {
            Ok(Mapped {
                map: Some(map),
                start,
            }) => {
                // Read in place; pages read past are dropped from the mapping, so the resident
                // size stays bounded.
                let len = map.len().saturating_sub(start) as u64;
                let bar = progress::bar(Some(len), show_progress);
                let src = Tracked::new(MappedSource::new(map, start), bar);
                Ok(job.run(opts.reader(src)))
            }
            Ok(mapped) => {
                let bytes = mapped.bytes();
                let bar = progress::bar(Some(bytes.len() as u64), show_progress);
                let src = Tracked::new(SliceSource::new(bytes), bar);
                Ok(job.run(opts.reader(src)))
            }
            Err(f) => Ok(run_stream(Box::new(f), opts, show_progress, job)),
        },
        Opened::Stream(r) => Ok(run_stream(r, opts, show_progress, job)),
    }
}

/// Standard input when it is a regular file (`xenmig verify - < FILE`), to be mapped like one.
fn stdin_file() -> Option<File> {
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    let f = File::from(fd);
    f.metadata().ok()?.is_file().then_some(f)
}

fn run_stream<J: Job>(r: Box<dyn Read>, opts: ReadMode, show_progress: bool, job: J) -> J::Out {
    let bar = progress::bar(None, show_progress);
    let src = Tracked::new(ReadSource::new(r), bar);
    job.run(opts.reader(src))
}

fn cannot_open(input: &Input, e: &io::Error) -> ExitCode {
    eprintln!("xenmig: cannot read {}: {e}", input.describe());
    ExitCode::from(EXIT_ERROR)
}

struct VerifyJob(VerifyOptions);

impl Job for VerifyJob {
    type Out = Report;
    fn run<S: Source>(self, mut reader: Reader<S>) -> Report {
        verify_reader(&mut reader, self.0, &mut |_| {})
    }
}

/// The exit status a report calls for.
fn status(report: &Report) -> u8 {
    match &report.error {
        None => EXIT_VALID,
        Some(e) if e.kind == ErrorKind::Io => EXIT_ERROR,
        Some(_) => EXIT_INVALID,
    }
}

/// Prints `v` as indented JSON, with `format_version`; false when it cannot be.
fn print_json<T: serde::Serialize>(v: &T) -> bool {
    match serde_json::to_value(v).and_then(|v| serde_json::to_string_pretty(&stamp(v))) {
        Ok(s) => {
            crate::out::say(&format!("{s}\n"));
            true
        }
        Err(e) => {
            eprintln!("xenmig: cannot write JSON: {e}");
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// verify

pub fn verify(a: VerifyArgs) -> ExitCode {
    let input = match (&a.input, &a.file) {
        (Some(i), _) => Input::from_ref_arg(i),
        (None, Some(f)) => Input::from_path_arg(f),
        (None, None) => Input::Stdin,
    };
    let report = match run_on(
        &input,
        a.read.reader_options(),
        !a.quiet,
        VerifyJob(a.read.verify_options()),
    ) {
        Ok(r) => r,
        Err(e) => return cannot_open(&input, &e),
    };
    let code = status(&report);
    if a.quiet {
        return ExitCode::from(code);
    }
    if a.json {
        if !print_json(&report) {
            return ExitCode::from(EXIT_ERROR);
        }
        return ExitCode::from(code);
    }
    match &report.error {
        Some(e) if e.kind == ErrorKind::Io => {
            eprintln!("xenmig: error reading {}: {e}", input.describe());
        }
        Some(e) => crate::out::say(&format!("INVALID: {e}\n")),
        None => crate::out::say(&format!("VALID: {}\n", verdict_line(&report))),
    }
    if a.verbose {
        let mut out = String::new();
        for w in &report.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        if report.warnings_dropped > 0 {
            let _ = writeln!(
                out,
                "warning: ... and {} more, not listed",
                report.warnings_dropped
            );
        }
        short_summary(&report, &mut out);
        crate::out::say(&out);
    }
    ExitCode::from(code)
}

/// What follows `VALID:`: framing, guest, versions, Xen, then counts.
fn verdict_line(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{} {}",
        r.framing.map_or("?", Framing::as_str),
        r.guest.as_deref().unwrap_or("unknown-guest")
    );
    if let Some(v) = r.libxc_version {
        let _ = write!(s, " v{v}");
    }
    if let Some(v) = r.libxl_version {
        let _ = write!(s, " (libxl v{v})");
    }
    if let Some(x) = &r.xen_version {
        if r.converted_from_legacy {
            let _ = write!(s, ", converted from legacy ({x})");
        } else {
            let _ = write!(s, ", Xen {x}");
        }
    }
    let _ = write!(
        s,
        ": {} records, {} data pages",
        r.libxc_records + r.libxl_records,
        r.pages.data_pages
    );
    if r.checkpoints > 0 {
        let _ = write!(s, ", {} checkpoints", r.checkpoints);
    }
    if !r.end {
        s.push_str(", no END");
    }
    if r.trailing_bytes > 0 {
        let _ = write!(s, ", {} trailing octets", r.trailing_bytes);
    }
    let warnings = r.warning_count();
    if warnings > 0 {
        let _ = write!(
            s,
            ", {warnings} warning{}",
            if warnings == 1 { "" } else { "s" }
        );
    }
    s
}

/// A few lines for `verify -v`.
fn short_summary(r: &Report, out: &mut String) {
    let _ = writeln!(out, "  framing:     {}", framing_text(r));
    let _ = writeln!(out, "  guest:       {}", guest_text(r));
    let _ = writeln!(
        out,
        "  records:     {} libxc, {} libxl",
        r.libxc_records, r.libxl_records
    );
    let _ = writeln!(out, "  pages:       {}", pages_text(r));
    if r.checkpoints > 0 || !r.end {
        let _ = writeln!(
            out,
            "  checkpoints: {}, END {}",
            r.checkpoints,
            if r.end { "reached" } else { "not reached" }
        );
    }
    let _ = writeln!(
        out,
        "  read:        {} octets, checked {}",
        r.bytes, r.strictness
    );
}

fn framing_text(r: &Report) -> String {
    let mut s = r.framing.map_or("?", Framing::as_str).to_string();
    if let Some(v) = r.libxl_version {
        let _ = write!(s, ", libxl v{v}");
    }
    if let Some(v) = r.libxc_version {
        let _ = write!(s, ", libxc v{v}");
    }
    s
}

fn guest_text(r: &Report) -> String {
    let mut s = r.guest.clone().unwrap_or_else(|| "?".into());
    if let Some(x) = &r.xen_version {
        if r.converted_from_legacy {
            let _ = write!(s, ", Xen {x} (converted from a legacy stream)");
        } else {
            let _ = write!(s, ", Xen {x}");
        }
    }
    s
}

fn pages_text(r: &Report) -> String {
    let p = &r.pages;
    let mut s = format!(
        "{} PAGE_DATA records, {} entries, {} data pages",
        p.page_data_records, p.pfn_entries, p.data_pages
    );
    if let (Some(a), Some(b)) = (p.pfn_min, p.pfn_max) {
        let _ = write!(s, ", pfns {a:#x}-{b:#x}");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// info

/// `info`'s pass: the verifier's report, and each vCPU's registers from the same items.
struct InfoJob(VerifyOptions);

impl Job for InfoJob {
    type Out = (Report, Vec<VcpuRegs>);
    fn run<S: Source>(self, mut reader: Reader<S>) -> Self::Out {
        let mut t = Tracker::registers_only(Which::Last);
        let mut failed = false;
        let report = verify_reader_observed(&mut reader, self.0, &mut |_| {}, &mut |item| {
            if !failed && t.item(item).is_err() {
                failed = true;
            }
        });
        // Registers are shown for a whole image (or a complete checkpoint) only.
        let vcpus = match (failed, t.finish()) {
            (false, Ok(index)) => index.vcpus().to_vec(),
            _ => Vec::new(),
        };
        (report, vcpus)
    }
}

pub fn info(a: InfoArgs) -> ExitCode {
    let input = Input::from_path_arg(&a.file);
    let (report, vcpus) = match run_on(
        &input,
        a.read.reader_options(),
        true,
        InfoJob(a.read.verify_options()),
    ) {
        Ok(r) => r,
        Err(e) => return cannot_open(&input, &e),
    };
    let code = status(&report);
    if a.json {
        let mut v = match serde_json::to_value(&report) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("xenmig: cannot write JSON: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("vcpu_registers".into(), json!(vcpus));
        }
        if !print_json(&v) {
            return ExitCode::from(EXIT_ERROR);
        }
    } else {
        let mut text = info_text(&report, &input.describe());
        registers_text(&mut text, &vcpus);
        crate::out::say(&text);
    }
    if code == EXIT_ERROR {
        if let Some(e) = &report.error {
            eprintln!("xenmig: error reading {}: {e}", input.describe());
        }
    }
    ExitCode::from(code)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Per vCPU, the registers an analyst looks at first, after the report's lines.
fn registers_text(o: &mut String, vcpus: &[VcpuRegs]) {
    for v in vcpus {
        let _ = write!(
            o,
            "vcpu {}:         {} mode, rip {:#x}, rsp {:#x}, cr0 {:#x}, cr3 {:#x}, cr4 {:#x}",
            v.vcpu,
            mode_text(v.mode),
            v.rip,
            v.rsp,
            v.cr0,
            v.cr3,
            v.cr4
        );
        match v.efer {
            Some(e) => {
                let _ = writeln!(o, ", efer {e:#x}");
            }
            None => o.push('\n'),
        }
    }
}

/// The report laid out for a person.
fn info_text(r: &Report, name: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "input:          {name} ({} octets read)", r.bytes);
    let _ = writeln!(
        o,
        "framing:        {}",
        r.framing.map_or("?", Framing::as_str)
    );
    if let Some(x) = &r.xl {
        let _ = write!(
            o,
            "xl header:      mandatory flags {}, optional data {} octets",
            list_or_none(&x.mandatory_flags),
            x.optional_data_len
        );
        if let Some(c) = x.config_len {
            let _ = write!(o, ", config {c} octets");
        }
        o.push('\n');
    }
    if let Some(v) = r.libxl_version {
        let _ = writeln!(
            o,
            "libxl:          version {v}, options {}",
            list_or_none(&r.libxl_options)
        );
    }
    if let Some(v) = r.libxc_version {
        let _ = writeln!(
            o,
            "libxc:          version {v}, options {}",
            list_or_none(&r.libxc_options)
        );
    }
    let _ = writeln!(o, "guest:          {}", r.guest.as_deref().unwrap_or("?"));
    if r.guest_width.is_some() || r.pt_levels.is_some() {
        let _ = writeln!(
            o,
            "width/levels:   {}-bit, {} page-table levels",
            r.guest_width
                .map_or("?".into(), |w| (u32::from(w) * 8).to_string()),
            r.pt_levels.map_or("?".into(), |l| l.to_string())
        );
    }
    if let Some(x) = &r.xen_version {
        if r.converted_from_legacy {
            let _ = writeln!(
                o,
                "xen:            {x} (converted from a legacy stream; the minor is the converter's version)"
            );
        } else {
            let _ = writeln!(o, "xen:            {x}");
        }
    }
    let _ = writeln!(
        o,
        "records:        {} libxc, {} libxl",
        r.libxc_records, r.libxl_records
    );
    if !r.records.is_empty() {
        let _ = writeln!(
            o,
            "  {:<6} {:<10}  {:<26} {:>9} {:>14}",
            "layer", "type", "name", "count", "bytes"
        );
        for rc in &r.records {
            let _ = writeln!(
                o,
                "  {:<6} {:#010x}  {:<26} {:>9} {:>14}",
                rc.layer.as_str(),
                rc.record_type,
                rc.name,
                rc.count,
                rc.bytes
            );
        }
        if r.records_of_other_types > 0 {
            let _ = writeln!(
                o,
                "  {:<6} {:<10}  {:<26} {:>9} {:>14}",
                "-", "-", "(other types)", r.records_of_other_types, r.bytes_of_other_types
            );
        }
    }
    let p = &r.pages;
    let _ = writeln!(
        o,
        "pages:          {} PAGE_DATA records, {} entries, {} data pages",
        p.page_data_records, p.pfn_entries, p.data_pages
    );
    if !p.by_type.is_empty() {
        let types: Vec<String> = p.by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let _ = writeln!(o, "  by type:      {}", types.join(", "));
    }
    if let (Some(a), Some(b)) = (p.pfn_min, p.pfn_max) {
        let _ = writeln!(o, "  pfn range:    {a:#x}-{b:#x}");
    }
    if !r.vcpus.is_empty() {
        let ids: Vec<String> = r.vcpus.iter().map(u32::to_string).collect();
        let _ = write!(o, "vcpus:          {} ({})", r.vcpus.len(), ids.join(", "));
        if r.vcpus_unlisted > 0 {
            let _ = write!(o, ", and {} records of ids not listed", r.vcpus_unlisted);
        }
        o.push('\n');
    }
    if r.guest.as_deref() == Some("X86_HVM") || r.hvm_params > 0 {
        let _ = writeln!(o, "hvm params:     {}", r.hvm_params);
    }
    let _ = writeln!(o, "checkpoints:    {}", r.checkpoints);
    let _ = writeln!(o, "end reached:    {}", yes_no(r.end));
    let _ = writeln!(o, "trailing:       {} octets", r.trailing_bytes);
    let _ = writeln!(o, "warnings:       {}", r.warning_count());
    for w in &r.warnings {
        let _ = writeln!(o, "  {w}");
    }
    if r.warnings_dropped > 0 {
        let _ = writeln!(o, "  ... and {} more, not listed", r.warnings_dropped);
    }
    match &r.error {
        None => {
            let _ = writeln!(o, "verdict:        VALID ({})", r.strictness);
        }
        Some(e) => {
            let _ = writeln!(o, "verdict:        INVALID ({}): {e}", r.strictness);
        }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// dump

pub fn dump(a: DumpArgs) -> ExitCode {
    let input = Input::from_path_arg(&a.file);
    // A bar would mix with the listing on a terminal.
    let show_progress = !io::stdout().is_terminal();
    let job = DumpJob {
        json: a.json,
        pages: a.pages,
    };
    let opened = match open_input(&input) {
        Ok(o) => o,
        Err(e) => return cannot_open(&input, &e),
    };
    let asked = a.legacy || a.width.is_some() || a.guest_type.is_some();
    let (opened, legacy) = match (asked, a.read.format.0) {
        (true, _) => (opened, Some(None)),
        (false, None) => match legacy_head(opened) {
            Ok((opened, why)) => (opened, why.map(Some)),
            Err(e) => return cannot_open(&input, &e),
        },
        (false, Some(_)) => (opened, None),
    };
    if let Some(why) = legacy {
        let options = LegacyOptions {
            width: a.width,
            guest_type: a.guest_type,
            xl_header: None,
            qemu_trailer: !a.skip_qemu,
        };
        return dump_legacy(&input, opened, options, why, job);
    }
    let result = match run_opened(opened, a.read.reader_options(), show_progress, job) {
        Ok(r) => r,
        Err(e) => return cannot_open(&input, &e),
    };
    match result {
        Ok(None) => ExitCode::from(EXIT_VALID),
        Ok(Some(e)) if e.kind == ErrorKind::Io => {
            eprintln!("xenmig: error reading {}: {e}", input.describe());
            ExitCode::from(EXIT_ERROR)
        }
        Ok(Some(_)) => ExitCode::from(EXIT_INVALID),
        // A full disk, or a reader that went away (EPIPE): the listing is incomplete
        // (`out::finish` says why).
        Err(_) => ExitCode::from(EXIT_ERROR),
    }
}

struct DumpJob {
    json: bool,
    pages: bool,
}

impl Job for DumpJob {
    /// The stream error that stopped the listing, if any; `Err` when writing failed.
    type Out = io::Result<Option<StreamError>>;

    fn run<S: Source>(self, mut reader: Reader<S>) -> Self::Out {
        // The listing stops where `verify` would: at the first item it refuses.
        xenmig::verify::check_as_read(&mut reader);
        let mut out = io::BufWriter::new(crate::out::Stdout);
        let mut line = String::new();
        // Each vCPU's registers and mode, listed before the end of input.
        let mut tracker = Some(Tracker::registers_only(Which::Last));
        loop {
            line.clear();
            let item = match reader.next_item() {
                Ok(item) => item,
                Err(e) => {
                    self.error(&e, &mut line);
                    out.write_all(line.as_bytes())?;
                    out.flush()?;
                    return Ok(Some(e));
                }
            };
            let done = matches!(item, Item::Eof { .. });
            if let Err(e) = self.item(&item, &mut line) {
                self.error(&e, &mut line);
                out.write_all(line.as_bytes())?;
                out.flush()?;
                return Ok(Some(e));
            }
            if let Some(t) = tracker.as_mut() {
                if t.item(&item).is_err() {
                    tracker = None;
                }
            }
            if done {
                let vcpus = tracker
                    .take()
                    .and_then(|t| t.finish().ok())
                    .map(|index| index.vcpus().to_vec())
                    .unwrap_or_default();
                let mut regs = String::new();
                if self.json {
                    for v in &vcpus {
                        regs.push_str(&stamp(json!({ "vcpu_registers": v })).to_string());
                        regs.push('\n');
                    }
                } else {
                    registers_text(&mut regs, &vcpus);
                }
                out.write_all(regs.as_bytes())?;
            }
            out.write_all(line.as_bytes())?;
            if done {
                out.flush()?;
                return Ok(None);
            }
        }
    }
}

/// One dump line, before rendering.
struct Entry<'a> {
    offset: u64,
    /// The layer (`libxc`, ...), or `legacy` for an item of a legacy stream.
    layer: Option<&'static str>,
    index: Option<u64>,
    record_type: Option<u32>,
    /// A legacy chunk's id.
    chunk_id: Option<i32>,
    name: String,
    length: u64,
    fields: Fields,
    /// Page contents for `--pages`: (pfn, type, octets).
    pages: Vec<(u64, libxc::PageType, &'a [u8])>,
}

impl DumpJob {
    fn error(&self, e: &StreamError, line: &mut String) {
        if self.json {
            line.push_str(&stamp(json!({ "error": e })).to_string());
            line.push('\n');
        } else {
            let _ = writeln!(line, "ERROR: {e}");
        }
    }

    /// Renders one item into `line`; a record that cannot be decoded is an error.
    fn item(&self, item: &Item<'_>, line: &mut String) -> Result<(), StreamError> {
        let entry = match item {
            Item::XlHeader {
                offset,
                header,
                optional_data,
            } => Entry {
                offset: *offset,
                layer: Some(Layer::Xl.as_str()),
                index: None,
                record_type: None,
                chunk_id: None,
                name: "xl_header".into(),
                length: (xenmig::xl::XlHeader::SIZE + optional_data.len()) as u64,
                fields: render::xl_header(header, optional_data),
                pages: Vec::new(),
            },
            Item::LibxlHeader { offset, header } => Entry {
                offset: *offset,
                layer: Some(Layer::Libxl.as_str()),
                index: None,
                record_type: None,
                chunk_id: None,
                name: "libxl_header".into(),
                length: xenmig::libxl::LibxlHeader::SIZE as u64,
                fields: render::fields_of(header),
                pages: Vec::new(),
            },
            Item::ImageHeader { offset, header } => Entry {
                offset: *offset,
                layer: Some(Layer::Libxc.as_str()),
                index: None,
                record_type: None,
                chunk_id: None,
                name: "image_header".into(),
                length: libxc::ImageHeader::SIZE as u64,
                fields: render::fields_of(header),
                pages: Vec::new(),
            },
            Item::DomainHeader { offset, header } => Entry {
                offset: *offset,
                layer: Some(Layer::Libxc.as_str()),
                index: None,
                record_type: None,
                chunk_id: None,
                name: "domain_header".into(),
                length: libxc::DomainHeader::SIZE as u64,
                fields: render::fields_of(header),
                pages: Vec::new(),
            },
            Item::Record(rec) => {
                let mut pages = Vec::new();
                let fields = match rec.layer {
                    Layer::Libxl => render::fields_of(&rec.libxl()?),
                    _ => {
                        let decoded = rec.libxc()?;
                        // `--pages` shows page contents, which are not fields: it pairs each
                        // data-carrying entry with its page, a meaning only PAGE_DATA's
                        // `pages` field has. The fields themselves come from the walk below.
                        if let (true, libxc::Record::PageData(p)) = (self.pages, &decoded) {
                            let mut chunks = p.pages.chunks(xenmig::limits::PAGE_SIZE);
                            for e in p.entries.iter().filter(|e| e.page_type().has_data()) {
                                if let Some(c) = chunks.next() {
                                    pages.push((e.pfn(), e.page_type(), c));
                                }
                            }
                        }
                        render::fields_of(&decoded)
                    }
                };
                Entry {
                    offset: rec.offset,
                    layer: Some(rec.layer.as_str()),
                    index: Some(rec.index),
                    record_type: Some(rec.record_type),
                    chunk_id: None,
                    name: rec.type_name(),
                    length: rec.body.len() as u64,
                    fields,
                    pages,
                }
            }
            Item::Trailing { offset, data } => {
                let text = xenmig::verify::printable(data, 64);
                Entry {
                    offset: *offset,
                    layer: None,
                    index: None,
                    record_type: None,
                    chunk_id: None,
                    name: "trailing".into(),
                    length: data.len() as u64,
                    fields: vec![("text", Val::Str(text))],
                    pages: Vec::new(),
                }
            }
            Item::Eof { complete } => {
                self.eof(*complete, line);
                return Ok(());
            }
        };
        if self.json {
            self.json_line(&entry, line);
        } else {
            self.text_line(&entry, line);
        }
        Ok(())
    }

    fn eof(&self, complete: bool, line: &mut String) {
        if self.json {
            line.push_str(&stamp(json!({ "name": "eof", "complete": complete })).to_string());
            line.push('\n');
        } else if complete {
            line.push_str("end of input: the stream is complete\n");
        } else {
            line.push_str(
                "end of input at a record boundary without END: a checkpointed stream cut short\n",
            );
        }
    }

    fn text_line(&self, e: &Entry<'_>, line: &mut String) {
        let index = e.index.map_or("-".to_string(), |i| format!("#{i}"));
        let _ = write!(
            line,
            "{:#010x}  {:<5}  {:>6}  {:<26} len {:<8}",
            e.offset,
            e.layer.unwrap_or("-"),
            index,
            e.name,
            e.length
        );
        if let Some(id) = e.chunk_id {
            let _ = write!(line, " id={id}");
        }
        if e.fields.is_empty() {
            line.truncate(line.trim_end().len());
        } else {
            line.push(' ');
            render::write_fields(&e.fields, " ", line);
        }
        line.push('\n');
        for (pfn, t, bytes) in &e.pages {
            let _ = writeln!(line, "    page pfn {pfn:#x} {t}");
            render::hexdump(bytes, "      ", line);
        }
    }

    fn json_line(&self, e: &Entry<'_>, line: &mut String) {
        let mut obj = serde_json::Map::new();
        obj.insert("offset".into(), json!(e.offset));
        if let Some(l) = e.layer {
            obj.insert("layer".into(), json!(l));
        }
        if let Some(i) = e.index {
            obj.insert("index".into(), json!(i));
        }
        if let Some(t) = e.record_type {
            obj.insert("type".into(), json!(t));
        }
        if let Some(id) = e.chunk_id {
            obj.insert("id".into(), json!(id));
        }
        obj.insert("name".into(), json!(e.name));
        obj.insert("length".into(), json!(e.length));
        obj.insert("fields".into(), render::fields_json(&e.fields));
        if self.pages && !e.pages.is_empty() {
            let pages: Vec<serde_json::Value> = e
                .pages
                .iter()
                .map(|(pfn, t, bytes)| {
                    json!({ "pfn": pfn, "type": t.to_string(), "hex": render::hex_string(bytes) })
                })
                .collect();
            obj.insert("pages".into(), serde_json::Value::Array(pages));
        }
        line.push_str(&stamp(serde_json::Value::Object(obj)).to_string());
        line.push('\n');
    }
}

// ---------------------------------------------------------------------------------------------
// dump of a legacy stream

/// Octets looked at to tell a legacy stream from a v2 one: an xl header's fixed part.
const HEAD: usize = xl::XlHeader::SIZE;

/// Why an input whose framing was not given is read as a legacy stream, from its first
/// octets: `None` when they open a v2 stream. Gives the input back, with the octets looked at
/// still to be read.
fn legacy_head(opened: Opened) -> io::Result<(Opened, Option<&'static str>)> {
    let mut head = Vec::with_capacity(HEAD);
    let opened = match opened {
        Opened::File(mut f) => {
            use std::os::unix::fs::FileExt;
            let at = f.stream_position()?;
            head.resize(HEAD, 0);
            let mut got = 0;
            while got < HEAD {
                match f.read_at(&mut head[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            head.truncate(got);
            Opened::File(f)
        }
        Opened::Stream(mut r) => {
            (&mut r).take(HEAD as u64).read_to_end(&mut head)?;
            let again = io::Cursor::new(head.clone());
            Opened::Stream(Box::new(again.chain(r)))
        }
    };
    let why = match Framing::detect(&head) {
        None => Some("the input opens with no xl, libxl or libxc image header"),
        Some(Framing::Xl) => {
            let ctx = xenmig::wire::DecodeCtx::new(0).with_strictness(Strictness::Lenient);
            // A header that does not decode is left to the v2 reader to report.
            match xl::XlHeader::decode(&head, &ctx) {
                Ok(h) if !h.mandatory_flags.contains(xl::XlMandatoryFlags::STREAMV2) => {
                    Some("the xl header's STREAMv2 flag is clear")
                }
                _ => None,
            }
        }
        Some(_) => None,
    };
    Ok((opened, why))
}

/// `dump` of a legacy stream: one line per chunk, part or struct the reader reads, each
/// rendered from its generated walk. `why` says why the input is read as one, when it was not
/// asked for.
fn dump_legacy(
    input: &Input,
    opened: Opened,
    options: LegacyOptions,
    why: Option<&'static str>,
    job: DumpJob,
) -> ExitCode {
    let result = match opened {
        // Pages are lent from a map of the file, not copied.
        Opened::File(f) => match MappedFile::new(f) {
            Ok(src) => job.legacy(LegacyReader::with_source(src, options), why),
            Err(e) => return cannot_open(input, &e),
        },
        Opened::Stream(r) => job.legacy(LegacyReader::new(io::BufReader::new(r), options), why),
    };
    match result {
        Ok(None) => ExitCode::from(EXIT_VALID),
        Ok(Some(LegacyError::Io { source, .. })) => {
            eprintln!("xenmig: error reading {}: {source}", input.describe());
            ExitCode::from(EXIT_ERROR)
        }
        Ok(Some(_)) => ExitCode::from(EXIT_INVALID),
        Err(_) => ExitCode::from(EXIT_ERROR),
    }
}

impl DumpJob {
    /// Lists a legacy stream; the reader's error that stopped it, if any.
    fn legacy<S: LegacySource>(
        &self,
        mut reader: LegacyReader<S>,
        why: Option<&'static str>,
    ) -> io::Result<Option<LegacyError>> {
        let mut out = io::BufWriter::new(crate::out::Stdout);
        let mut line = String::new();
        let mut index = 0;
        loop {
            line.clear();
            match reader.next_item() {
                Ok(Some(item)) => {
                    let pages = match self.pages {
                        true => item
                            .pages()
                            .map(|(e, page)| (e.pfn(), e.page_type(), page))
                            .collect(),
                        false => Vec::new(),
                    };
                    let entry = Entry {
                        offset: item.offset,
                        layer: Some("legacy"),
                        index: Some(index),
                        record_type: None,
                        chunk_id: item.chunk_id(),
                        name: item.name().to_string(),
                        length: item.length,
                        fields: render::fields_of(item.value.as_walk()),
                        pages,
                    };
                    index += 1;
                    if self.json {
                        self.json_line(&entry, &mut line);
                    } else {
                        self.text_line(&entry, &mut line);
                    }
                    out.write_all(line.as_bytes())?;
                }
                Ok(None) => {
                    let at = reader.offset();
                    if self.json {
                        let end = json!({ "name": "eof", "complete": true, "offset": at });
                        line.push_str(&stamp(end).to_string());
                        line.push('\n');
                    } else {
                        let _ =
                            writeln!(line, "end of the legacy stream at offset {at:#x}: complete");
                    }
                    out.write_all(line.as_bytes())?;
                    out.flush()?;
                    return Ok(None);
                }
                Err(e) => {
                    if self.json {
                        let mut error = json!({
                            "offset": e.offset(),
                            "kind": e.kind(),
                            "message": e.to_string(),
                        });
                        if let Some(why) = why {
                            error["read_as_legacy_because"] = json!(why);
                        }
                        line.push_str(&stamp(json!({ "error": error })).to_string());
                        line.push('\n');
                    } else {
                        let _ = write!(line, "ERROR: {e}");
                        if let Some(why) = why {
                            let _ = write!(line, " (read as a legacy stream: {why})");
                        }
                        line.push('\n');
                    }
                    out.write_all(line.as_bytes())?;
                    out.flush()?;
                    return Ok(Some(e));
                }
            }
        }
    }
}
