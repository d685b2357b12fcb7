//! `xenmig extract-memory`: a saved or captured guest's memory and vCPU registers as a file
//! analysis tools open (ELF core, Xen dump-core, raw, LiME).
//!
//! The input is read once to index its pages (checked as `verify --lenient` checks it: what
//! that refuses, this refuses with the same rule and offset), then the pages are copied from
//! the input in guest-physical order. Standard input that is not a regular file is first
//! copied to an unnamed temporary file, since the copy needs to come back to pages. The
//! output is written to a temporary file beside the target and renamed once complete; a
//! failure removes it. Exit status: 0 written, 1 the stream is refused, 2 usage or I/O.

use crate::io::temp_path;
use clap::ValueEnum;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xenmig::forensics::cpu::PvWidth;
use xenmig::forensics::diff::{diff_images, Status};
use xenmig::forensics::Guest;
use xenmig::forensics::{
    cpu::mode_text, write_dump, DumpFormat, ForensicsError, GuestMemory, PageIndex, Tracker, Which,
};
use xenmig::reader::{Reader, ReaderOptions};
use xenmig::render;
use xenmig::source::MappedSource;
use xenmig::wire::{DecodeCtx, Strictness};
use xenmig::{libxc, libxl, x86_state, Layer};

const EXIT_OK: u8 = 0;
const EXIT_INVALID: u8 = 1;
const EXIT_ERROR: u8 = 2;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MemFormat {
    /// ELF64 core: NT_PRSTATUS and control-register notes per vCPU, a PT_LOAD per run of
    /// frames at its guest-physical address (Volatility, gdb, crash).
    Elf,
    /// The section layout `xl dump-core` writes (.note.Xen, .xen_prstatus, .xen_pfn,
    /// .xen_pages).
    XenCore,
    /// A sparse file with each page at pfn × the page size.
    Raw,
    /// LiME: a range header and the octets of each run of frames.
    Lime,
}

#[derive(clap::Args, Debug)]
pub struct ExtractMemoryArgs {
    /// The save image or captured stream (any framing; `-` for standard input).
    input: String,
    /// Where the dump goes (a regular file, written through a temporary file).
    #[arg(short, long)]
    out: PathBuf,
    /// Dump format.
    #[arg(long, value_enum, default_value = "elf")]
    format: MemFormat,
    /// For a checkpointed stream (Remus, COLO), the checkpoint to extract, from 1 (default:
    /// the last complete one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint: Option<u64>,
    /// Print what was written as JSON (its schema: `xenmig schema extract-memory`).
    #[arg(long)]
    json: bool,
}

/// The input as a file that can be mapped: the path, or standard input (copied to a
/// temporary file unless it is a regular file already).
fn open_input(input: &str) -> io::Result<File> {
    if input != "-" {
        return File::open(input);
    }
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let f = File::from(fd);
    if f.metadata()?.is_file() {
        return Ok(f);
    }
    if io::stdin().is_terminal() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "standard input is a terminal; give a file or pipe a stream in",
        ));
    }
    let mut spool = tempfile_in_tmp()?;
    io::copy(&mut io::stdin().lock(), &mut spool)?;
    Ok(spool)
}

/// An unnamed temporary file under $TMPDIR (or /tmp), gone when closed.
fn tempfile_in_tmp() -> io::Result<File> {
    let dir = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let path = dir.join(format!(".xenmig-spool-{}.tmp", std::process::id()));
    let f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// A file being written beside its target, removed unless [`Partial::finish`] renames it.
struct Partial {
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Partial {
    fn create(target: &Path) -> io::Result<(Partial, File)> {
        if let Ok(m) = std::fs::metadata(target) {
            if !m.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a regular file", target.display()),
                ));
            }
        }
        let temp = temp_path(target);
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok((
            Partial {
                temp,
                target: target.to_path_buf(),
                done: false,
            },
            f,
        ))
    }

    fn finish(mut self, f: File) -> io::Result<()> {
        // As the other outputs: written, closed, then renamed (no sync: the file system
        // orders a rename over a file after its data, and a sync of a large dump would cost
        // more than writing it).
        drop(f);
        std::fs::rename(&self.temp, &self.target)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

pub fn extract_memory(a: ExtractMemoryArgs) -> ExitCode {
    exit(&a.input, run(&a))
}

/// The exit status of a command's result, with its error reported.
fn exit(input: &str, r: Result<(), ForensicsError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(ForensicsError::Stream(e)) => {
            eprintln!("xenmig: {input} is refused: {e}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("xenmig: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> ForensicsError {
    move |source| ForensicsError::Io { what, source }
}

/// Opens `input` (a file, or standard input spooled to one) and indexes it with `tracker`,
/// through a reader checked as `verify --lenient` checks.
fn index_input(input: &str, tracker: Tracker) -> Result<(File, PageIndex), ForensicsError> {
    let file = open_input(input).map_err(io_error(format!("cannot open {input}")))?;
    let len = file
        .metadata()
        .map_err(io_error(format!("cannot read {input}")))?
        .len();
    if len == 0 {
        return Err(ForensicsError::Usage(format!("{input} is empty")));
    }
    // Safety: the input is mapped read-only and only read through bounds-checked slices;
    // changing the file while it is read gives unspecified octets, never unsafety here.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(io_error(format!("cannot map {input}")))?;
    let reader = Reader::new(
        MappedSource::new(map, 0),
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let index = PageIndex::build_with(reader, tracker)?;
    Ok((file, index))
}

fn run(a: &ExtractMemoryArgs) -> Result<(), ForensicsError> {
    let which = a.checkpoint.map_or(Which::Last, Which::Checkpoint);
    let (file, index) = index_input(&a.input, Tracker::new(which))?;
    let mem = GuestMemory::new(&file, 0, &index);
    let format = match a.format {
        MemFormat::Elf => DumpFormat::Elf,
        MemFormat::XenCore => DumpFormat::XenCore,
        MemFormat::Raw => DumpFormat::Raw,
        MemFormat::Lime => DumpFormat::Lime,
    };
    let (partial, mut out) =
        Partial::create(&a.out).map_err(io_error(format!("cannot create {}", a.out.display())))?;
    let summary = write_dump(&mem, format, &mut out)?;
    partial
        .finish(out)
        .map_err(io_error(format!("cannot complete {}", a.out.display())))?;

    let checkpoint = match (index.checkpoints(), a.checkpoint) {
        (Some(n), Some(k)) => Some((k, n)),
        (Some(n), None) => Some((n, n)),
        _ => None,
    };
    if a.json {
        let v = json!({
            "output": a.out.display().to_string(),
            "format": a.format.to_possible_value().map(|v| v.get_name().to_string()),
            "pages": summary.pages,
            "runs": summary.runs,
            "bytes": summary.bytes,
            "checkpoint": checkpoint.map(|c| c.0),
            "vcpus": index.vcpus(),
        });
        crate::out::say(&format!("{:#}", crate::schema::stamp(v)));
    } else {
        let mut s = format!(
            "wrote {} ({}): {} pages in {} runs, {} octets",
            a.out.display(),
            a.format
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
            summary.pages,
            summary.runs,
            summary.bytes
        );
        if let Some((k, _)) = checkpoint {
            s.push_str(&format!(", checkpoint {k}"));
        }
        for v in index.vcpus() {
            s.push_str(&format!(
                "\nvcpu {}: mode {}, rip {:#x}, rsp {:#x}, cr3 {:#x}",
                v.vcpu,
                mode_text(v.mode),
                v.rip,
                v.rsp,
                v.cr3
            ));
        }
        crate::out::say(&s);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// extract

#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    /// The save image or captured stream (any framing; `-` for standard input).
    input: String,
    /// The directory the files go to (made if missing; files of the same names are
    /// replaced, each through a temporary file), with a manifest.json listing them (its
    /// schema: `xenmig schema extract-manifest`).
    dir: PathBuf,
    /// For a checkpointed stream, the checkpoint to extract, from 1 (default: the last
    /// complete one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint: Option<u64>,
}

/// Files written, with what each holds.
struct Written {
    dir: PathBuf,
    files: Vec<(String, String)>,
}

impl Written {
    /// Writes `bytes` to `name` in the directory through a temporary file.
    fn file(&mut self, name: &str, what: &str, bytes: &[u8]) -> Result<(), ForensicsError> {
        let target = self.dir.join(name);
        let (partial, mut f) = Partial::create(&target)
            .map_err(io_error(format!("cannot create {}", target.display())))?;
        f.write_all(bytes)
            .map_err(io_error(format!("cannot write {}", target.display())))?;
        partial
            .finish(f)
            .map_err(io_error(format!("cannot complete {}", target.display())))?;
        self.files.push((name.to_string(), what.to_string()));
        Ok(())
    }

    fn json(&mut self, name: &str, what: &str, v: &Value) -> Result<(), ForensicsError> {
        let mut text = format!("{v:#}");
        text.push('\n');
        self.file(name, what, text.as_bytes())
    }
}

/// A file-name part from a type or id name (`QEMU_UPSTREAM` → `qemu-upstream`).
fn slug(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub fn extract(a: ExtractArgs) -> ExitCode {
    exit(&a.input, run_extract(&a))
}

fn run_extract(a: &ExtractArgs) -> Result<(), ForensicsError> {
    let which = a.checkpoint.map_or(Which::Last, Which::Checkpoint);
    let (_file, index) = index_input(&a.input, Tracker::registers_only(which))?;
    std::fs::create_dir_all(&a.dir)
        .map_err(io_error(format!("cannot make {}", a.dir.display())))?;
    let mut w = Written {
        dir: a.dir.clone(),
        files: Vec::new(),
    };

    if let Some((header, optional)) = index.xl_header() {
        let info = xenmig::xlfile::parse(header, optional)?;
        if let Some(config) = &info.config {
            let name = if info.json {
                "xl-config.json"
            } else {
                "xl-config.cfg"
            };
            w.file(name, "the domain config from the xl header", config)?;
        }
    }

    // Per-vCPU state: the decoded registers, then each context record of the vCPU.
    let mut vcpus: BTreeMap<u32, Map<String, Value>> = BTreeMap::new();
    for v in index.vcpus() {
        vcpus
            .entry(v.vcpu)
            .or_default()
            .insert("registers".into(), json!(v));
    }
    for (id, ctx) in index.pv_contexts() {
        let width = match index.guest() {
            Guest::Pv(Some(w)) => w,
            _ => continue,
        };
        let lenient = DecodeCtx::new(x86_state::REVISION).with_strictness(Strictness::Lenient);
        let decoded = match width {
            PvWidth::W64 => {
                x86_state::VcpuContextX8664::decode(ctx, &lenient).map(|c| render::json(&c))
            }
            PvWidth::W32 => {
                x86_state::VcpuContextX8632::decode(ctx, &lenient).map(|c| render::json(&c))
            }
        };
        if let Ok(j) = decoded {
            vcpus.entry(*id).or_default().insert("context".into(), j);
        }
    }

    if let Some(ctx) = index.hvm_context() {
        w.file(
            "hvm-context.bin",
            "the HVM context (Xen's save records), as the stream carries it",
            ctx,
        )?;
        let frames = x86_state::Frames::new(ctx);
        w.json(
            "hvm-context.json",
            "the HVM context's save records, decoded",
            &render::json(&frames),
        )?;
        let lenient = DecodeCtx::new(x86_state::REVISION).with_strictness(Strictness::Lenient);
        for f in frames.iter().flatten() {
            if u32::from(f.header.typecode) == x86_state::Cpu::TYPE {
                if let Ok(c) = x86_state::Cpu::decode(f.body, &lenient) {
                    vcpus
                        .entry(u32::from(f.header.instance))
                        .or_default()
                        .insert("cpu_save_record".into(), render::json(&c));
                }
            }
        }
    }
    if let Some(s) = index.shared_info() {
        w.file("shared-info.bin", "the shared info page", s)?;
    }

    for r in index.records() {
        match r.layer {
            Layer::Libxl => match libxl::Record::decode(r.record_type, &r.body, &r.ctx) {
                Ok(libxl::Record::EmulatorContext(c)) => {
                    let name = format!("emulator-{}-context.bin", slug(&c.emulator_id.to_string()));
                    w.file(&name, "the device model's saved state", c.context)?;
                }
                Ok(libxl::Record::EmulatorXenstoreData(d)) => {
                    let keys: Map<String, Value> = d
                        .entries
                        .pairs()
                        .map(|(k, v)| {
                            (
                                String::from_utf8_lossy(k).into_owned(),
                                v.map_or(Value::Null, |v| {
                                    Value::String(String::from_utf8_lossy(v).into_owned())
                                }),
                            )
                        })
                        .collect();
                    let name = format!(
                        "emulator-{}-xenstore.json",
                        slug(&d.emulator_id.to_string())
                    );
                    w.json(
                        &name,
                        "the device model's xenstore keys",
                        &Value::Object(keys),
                    )?;
                }
                _ => {}
            },
            _ => {
                let Ok(rec) = libxc::Record::decode(r.record_type, &r.body, &r.ctx) else {
                    continue;
                };
                let vcpu_part = |key: &str, vcpus: &mut BTreeMap<u32, Map<String, Value>>| {
                    vcpus
                        .entry(r.key)
                        .or_default()
                        .insert(key.into(), render::json(&rec));
                };
                match &rec {
                    libxc::Record::X86PvVcpuExtended(_) => vcpu_part("extended", &mut vcpus),
                    libxc::Record::X86PvVcpuXsave(_) => vcpu_part("xsave", &mut vcpus),
                    libxc::Record::X86PvVcpuMsrs(_) => vcpu_part("msrs", &mut vcpus),
                    libxc::Record::HvmParams(p) => {
                        let by_name: Map<String, Value> = p
                            .params
                            .iter()
                            .map(|e| (e.index.to_string(), json!(e.value)))
                            .collect();
                        w.json(
                            "hvm-params.json",
                            "HVM params by name",
                            &Value::Object(by_name),
                        )?;
                    }
                    libxc::Record::X86TscInfo(_) => w.json(
                        "tsc-info.json",
                        "the TSC mode and frequency",
                        &render::json(&rec),
                    )?,
                    libxc::Record::X86CpuidPolicy(_) => {
                        w.json("cpuid-policy.json", "the CPUID policy", &render::json(&rec))?
                    }
                    libxc::Record::X86MsrPolicy(_) => {
                        w.json("msr-policy.json", "the MSR policy", &render::json(&rec))?
                    }
                    libxc::Record::X86PvP2mFrames(_) => w.json(
                        "p2m-frames.json",
                        "the PV guest's p2m frame list",
                        &render::json(&rec),
                    )?,
                    other => {
                        let name = format!(
                            "record-{}-{}.json",
                            slug(&libxc::RecordType::from_u32(r.record_type).to_string()),
                            r.key
                        );
                        w.json(&name, "a state record, decoded", &render::json(other))?;
                    }
                }
            }
        }
    }
    for (id, v) in vcpus {
        w.json(
            &format!("vcpu-{id}.json"),
            "a vCPU's registers and context records, decoded",
            &Value::Object(v),
        )?;
    }
    let files: Vec<Value> = w
        .files
        .iter()
        .map(|(n, what)| json!({ "file": n, "holds": what }))
        .collect();
    let manifest = crate::schema::stamp(json!({
        "input": a.input,
        "checkpoint": index.checkpoints().map(|n| a.checkpoint.unwrap_or(n)),
        "files": files,
    }));
    w.json("manifest.json", "this list", &manifest)?;
    let mut text = format!("wrote {} files to {}", w.files.len(), a.dir.display());
    for (n, what) in &w.files {
        text.push_str(&format!("\n  {n:<40} {what}"));
    }
    crate::out::say(&text);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// diff

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The first image or captured stream.
    a: String,
    /// The second (may be the same file, with different checkpoints).
    b: String,
    /// The checkpoint of both inputs to compare (default: the last complete one of each).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint: Option<u64>,
    /// The checkpoint of the first input (overrides --checkpoint for it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_a: Option<u64>,
    /// The checkpoint of the second input (overrides --checkpoint for it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_b: Option<u64>,
    /// Also list the records that are the same.
    #[arg(short, long)]
    verbose: bool,
    /// The comparison as JSON (its schema: `xenmig schema diff`).
    #[arg(long)]
    json: bool,
}

/// Exit status of images that differ (as diff(1)); 0 when the same, 2 on trouble.
const EXIT_DIFFERENT: u8 = 1;

pub fn diff(a: DiffArgs) -> ExitCode {
    match run_diff(&a) {
        Ok(true) => ExitCode::from(EXIT_OK),
        Ok(false) => ExitCode::from(EXIT_DIFFERENT),
        Err(e) => {
            eprintln!("xenmig: diff: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs as `0x10-0x1f, 0x30` (the first few, and how many more).
fn runs_text(runs: &[(u64, u64)]) -> String {
    const SHOWN: usize = 8;
    let mut parts: Vec<String> = runs
        .iter()
        .take(SHOWN)
        .map(|&(a, b)| {
            if a == b {
                format!("{a:#x}")
            } else {
                format!("{a:#x}-{b:#x}")
            }
        })
        .collect();
    if runs.len() > SHOWN {
        parts.push(format!("and {} more runs", runs.len() - SHOWN));
    }
    parts.join(", ")
}

fn run_diff(a: &DiffArgs) -> Result<bool, ForensicsError> {
    let which = |n: Option<u64>| n.or(a.checkpoint).map_or(Which::Last, Which::Checkpoint);
    let (fa, ia) = index_input(&a.a, Tracker::new(which(a.checkpoint_a)))?;
    let (fb, ib) = index_input(&a.b, Tracker::new(which(a.checkpoint_b)))?;
    let d = diff_images(
        &GuestMemory::new(&fa, 0, &ia),
        &GuestMemory::new(&fb, 0, &ib),
    )?;
    if a.json {
        let mut v = json!(d);
        if let Some(o) = v.as_object_mut() {
            o.insert("identical".into(), json!(d.identical()));
        }
        crate::out::say(&format!("{:#}", crate::schema::stamp(v)));
        return Ok(d.identical());
    }
    let p = &d.pages;
    let mut o = format!(
        "pages: {} in A, {} in B: {} the same, {} changed, {} added, {} removed",
        p.pages_a, p.pages_b, p.same, p.changed_count, p.added_count, p.removed_count
    );
    for (what, runs) in [
        ("changed", &p.changed),
        ("added", &p.added),
        ("removed", &p.removed),
    ] {
        if !runs.is_empty() {
            o.push_str(&format!("\n  {what:<8} pfns {}", runs_text(runs)));
        }
    }
    let same = d
        .records
        .iter()
        .filter(|r| r.status == Status::Same)
        .count();
    o.push_str(&format!(
        "\nrecords: {} compared, {same} the same",
        d.records.len()
    ));
    for r in &d.records {
        let status = match r.status {
            Status::Same if !a.verbose => continue,
            Status::Same => "same",
            Status::Changed => "changed",
            Status::Added => "only in B",
            Status::Removed => "only in A",
        };
        o.push_str(&format!("\n  {status:<10} {}", r.record));
        for c in &r.changes {
            let short = |v: &Value| {
                let s = match v {
                    Value::Number(n) => n
                        .as_u64()
                        .map_or_else(|| n.to_string(), |n| format!("{n:#x}")),
                    other => other.to_string(),
                };
                if s.len() > 40 {
                    format!("{}…", &s[..s.floor_char_boundary(40)])
                } else {
                    s
                }
            };
            o.push_str(&format!(
                "\n      {}: {} -> {}",
                c.path,
                short(&c.a),
                short(&c.b)
            ));
        }
        if r.more_changes > 0 {
            o.push_str(&format!("\n      … and {} more fields", r.more_changes));
        }
    }
    o.push_str(if d.identical() {
        "\nthe images are the same"
    } else {
        "\nthe images differ"
    });
    crate::out::say(&o);
    Ok(d.identical())
}
