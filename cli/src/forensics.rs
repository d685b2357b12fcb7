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
use serde_json::json;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xenmig::forensics::{
    cpu::mode_text, write_dump, DumpFormat, ForensicsError, GuestMemory, PageIndex, Which,
};
use xenmig::reader::{Reader, ReaderOptions};
use xenmig::source::MappedSource;
use xenmig::wire::Strictness;

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
    /// A sparse file with each page at pfn × 4096.
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
    /// Print what was written as JSON.
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
        f.sync_all()?;
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
    match run(&a) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(ForensicsError::Stream(e)) => {
            eprintln!("xenmig: {} is refused: {e}", a.input);
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("xenmig: extract-memory: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> ForensicsError {
    move |source| ForensicsError::Io { what, source }
}

fn run(a: &ExtractMemoryArgs) -> Result<(), ForensicsError> {
    let file = open_input(&a.input).map_err(io_error(format!("cannot open {}", a.input)))?;
    let len = file
        .metadata()
        .map_err(io_error(format!("cannot read {}", a.input)))?
        .len();
    if len == 0 {
        return Err(ForensicsError::Usage(format!("{} is empty", a.input)));
    }
    // Safety: the input is mapped read-only and only read through bounds-checked slices;
    // changing the file while it is read gives unspecified octets, never unsafety here.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(io_error(format!("cannot map {}", a.input)))?;
    let reader = Reader::new(
        MappedSource::new(map, 0),
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let which = a.checkpoint.map_or(Which::Last, Which::Checkpoint);
    let index = PageIndex::build(reader, which)?;
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
            "format": format!("{:?}", a.format).to_lowercase(),
            "pages": summary.pages,
            "runs": summary.runs,
            "bytes": summary.bytes,
            "checkpoint": checkpoint.map(|c| c.0),
            "vcpus": index.vcpus(),
        });
        crate::out::say(&format!("{v:#}"));
    } else {
        let mut s = format!(
            "wrote {} ({:?}): {} pages in {} runs, {} octets",
            a.out.display(),
            a.format,
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
