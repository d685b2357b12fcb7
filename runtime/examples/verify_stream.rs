//! Verifies a stream and prints the report: the verdict, what the headers say, the records
//! by type, the guest memory, and every warning.
//!
//! ```text
//! cargo run -p xenmig --example verify_stream -- [--lenient] [STREAM]
//! ```
//!
//! STREAM defaults to `samples/pv64-demo.xl` (run from the repository root). The stream is
//! verified twice, as an embedder would choose between the two: [`xenmig::verify_slice`] over
//! the bytes in memory (zero-copy; a memory-mapped file works the same), and
//! [`xenmig::verify_reader`] over the open file (bounded memory, for pipes and sockets). Both
//! must give the same verdict. Exits 1 when the stream is invalid.

use std::fs::File;
use std::process::ExitCode;
use xenmig::wire::Strictness;
use xenmig::{verify_reader, verify_slice, Reader, ReaderOptions, Report, VerifyOptions};

fn print(report: &Report) {
    println!(
        "verdict: {} ({} checks)",
        if report.valid { "valid" } else { "INVALID" },
        report.strictness
    );
    if let Some(f) = report.framing {
        println!("framing: {}", f.as_str());
    }
    if let Some(g) = &report.guest {
        println!(
            "guest: {g}, saved by Xen {}",
            report.xen_version.as_deref().unwrap_or("?")
        );
    }
    println!(
        "records: {} libxc, {} libxl; END read: {}",
        report.libxc_records, report.libxl_records, report.end
    );
    for r in &report.records {
        println!(
            "  {:5} {:<28} x{:<5} {} octets",
            r.layer.as_str(),
            r.name,
            r.count,
            r.bytes
        );
    }
    let p = &report.pages;
    println!(
        "memory: {} PAGE_DATA records, {} pfn entries, {} data pages, pfns {:?}..={:?}",
        p.page_data_records, p.pfn_entries, p.data_pages, p.pfn_min, p.pfn_max
    );
    for (t, n) in &p.by_type {
        println!("  {t}: {n}");
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    if let Some(e) = &report.error {
        println!("error: {e}");
    }
}

fn main() -> ExitCode {
    let mut strictness = Strictness::Strict;
    let mut path = "samples/pv64-demo.xl".to_string();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--lenient" => strictness = Strictness::Lenient,
            _ => path = arg,
        }
    }
    let opts = VerifyOptions {
        framing: None,
        strictness,
    };

    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("verify_stream: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut last_progress = 0;
    let report = verify_slice(&bytes, opts, &mut |offset| last_progress = offset);
    print(&report);

    // The same stream from a `Read`: one item at a time in memory, whatever the stream's size.
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("verify_stream: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut reader = Reader::from_read(
        file,
        ReaderOptions {
            framing: opts.framing,
            strictness: opts.strictness,
        },
    );
    let streamed = verify_reader(&mut reader, opts, &mut |_| {});
    if streamed.valid != report.valid || streamed.records != report.records {
        eprintln!("verify_stream: the slice and the reader disagree about {path}");
        return ExitCode::from(2);
    }
    println!(
        "verify_reader over the file agrees ({} octets read; progress reported up to {last_progress:#x})",
        streamed.bytes
    );

    if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
