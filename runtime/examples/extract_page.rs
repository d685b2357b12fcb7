//! Reads one guest page out of a stream file by its pfn, without extracting the image:
//! [`xenmig::forensics::index::PageIndex`] reads the stream once and notes where each frame's
//! octets are, [`xenmig::forensics::memory::GuestMemory`] then reads them from the file.
//!
//! ```text
//! cargo run -p xenmig --example extract_page -- [STREAM [PFN [OUT]]]
//! ```
//!
//! STREAM defaults to `samples/pv64-demo.xl` (run from the repository root); PFN (decimal or
//! `0x` hex) to the first frame that has data. The page is dumped in hex (its first lines) and,
//! with OUT, written there whole. Exits non-zero when the stream is refused or has no such
//! frame.

use std::fmt::Write as _;
use std::fs::File;
use std::process::ExitCode;
use xenmig::forensics::index::{PageAt, PageIndex, Which};
use xenmig::forensics::memory::GuestMemory;
use xenmig::limits::PAGE_SIZE;
use xenmig::{Reader, ReaderOptions};

/// Octets of the page shown, 16 to a line.
const SHOWN: usize = 128;

fn parse_pfn(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn run(path: &str, pfn: Option<u64>, out: Option<&str>) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // One pass over the stream, checked as `xenmig verify --lenient` checks it. The reader
    // borrows the file; the index keeps stream offsets, not pages.
    let reader = Reader::from_read(&file, ReaderOptions::default());
    let index = PageIndex::build(reader, Which::Last).map_err(|e| format!("{path}: {e}"))?;
    println!(
        "{path}: {:?} guest, {} frames in {} runs, {} vCPUs",
        index.guest(),
        index.pages().len(),
        index.runs().len(),
        index.vcpus().len()
    );

    let pfn = match pfn {
        Some(p) => p,
        None => index
            .pages()
            .iter()
            .find(|(_, at)| matches!(at, PageAt::Stream(_)))
            .map(|&(p, _)| p)
            .ok_or("the image has no page with data")?,
    };
    let at = index
        .find(pfn)
        .ok_or_else(|| format!("frame {pfn:#x} is not in the image"))?;
    match at {
        PageAt::Stream(offset) => println!("frame {pfn:#x}: at stream offset {offset:#x}"),
        PageAt::Zero => println!("frame {pfn:#x}: allocated without data (zeros)"),
    }

    // The stream starts at offset 0 of the file.
    let memory = GuestMemory::new(&file, 0, &index);
    let mut page = vec![0u8; PAGE_SIZE];
    memory
        .read_page(pfn, &mut page)
        .map_err(|e| format!("{path}: {e}"))?;
    for (i, line) in page[..SHOWN].chunks(16).enumerate() {
        let mut text = String::new();
        for b in line {
            let _ = write!(text, "{b:02x} ");
        }
        println!("  {:04x}: {text}", i * 16);
    }
    let nonzero = page.iter().filter(|&&b| b != 0).count();
    println!("  ... {nonzero} non-zero octets in the page");

    if let Some(out) = out {
        std::fs::write(out, &page).map_err(|e| format!("{out}: {e}"))?;
        println!("written to {out}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().map_or("samples/pv64-demo.xl", String::as_str);
    let pfn = match args.get(1) {
        Some(s) => match parse_pfn(s) {
            Some(p) => Some(p),
            None => {
                eprintln!("extract_page: `{s}` is not a pfn");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    match run(path, pfn, args.get(2).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extract_page: {e}");
            ExitCode::FAILURE
        }
    }
}
