//! Converts a legacy (Xen 4.5 and older) save stream into a v2 stream with
//! [`xenmig::convert::convert_to`], then verifies the result.
//!
//! ```text
//! cargo run -p xenmig --example convert_legacy -- [--libxl] [LEGACY [OUT]]
//! ```
//!
//! LEGACY defaults to `tests/vectors/legacy/legacy-pv64-s105.legacy` (run from the repository
//! root). The toolstack width, the guest type and whether an xl header comes first are
//! detected from the input; `--libxl` wraps the image in a libxl stream instead of writing a
//! bare libxc image. With OUT the converted stream is written there. Exits non-zero if the
//! input is not a convertible legacy stream or the output does not verify.

use std::fs::File;
use std::process::ExitCode;
use xenmig::convert::{convert_to, ConvertOptions, OutputFormat};
use xenmig::{verify_slice, VerifyOptions};

fn main() -> ExitCode {
    let mut format = OutputFormat::Libxc;
    let mut paths = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--libxl" => format = OutputFormat::Libxl,
            _ => paths.push(arg),
        }
    }
    let input = paths
        .first()
        .cloned()
        .unwrap_or_else(|| "tests/vectors/legacy/legacy-pv64-s105.legacy".into());
    let file = match File::open(&input) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("convert_legacy: {input}: {e}");
            return ExitCode::FAILURE;
        }
    };

    // `None` everywhere: width, guest type and xl header are detected.
    let opts = ConvertOptions {
        format,
        ..Default::default()
    };
    let mut v2 = Vec::new();
    let summary = match convert_to(file, &mut v2, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "convert_legacy: {input}: at input offset {:#x}: {e}",
                e.offset()
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{input}: {:?} guest saved by a {:?} toolstack{}",
        summary.guest_type,
        summary.width,
        if summary.xl_header {
            ", behind an xl header"
        } else {
            ""
        }
    );
    println!(
        "converted {} octets into {} ({:?} framing): p2m_size {}, {} PAGE_DATA records, {} pages, {} vCPUs",
        summary.input_bytes,
        summary.output_bytes,
        summary.format,
        summary.p2m_size,
        summary.page_data_records,
        summary.pages,
        summary.vcpus
    );
    if let Some(q) = summary.qemu_record {
        println!("device model state: {q:?}");
    }

    let report = verify_slice(&v2, VerifyOptions::default(), &mut |_| {});
    match &report.error {
        None => println!(
            "the v2 stream verifies: {} records, Xen version {} (0.x marks a conversion)",
            report.libxc_records + report.libxl_records,
            report.xen_version.as_deref().unwrap_or("?")
        ),
        Some(e) => {
            eprintln!("convert_legacy: the converted stream is refused: {e}");
            return ExitCode::FAILURE;
        }
    }

    if let Some(out) = paths.get(1) {
        if let Err(e) = std::fs::write(out, &v2) {
            eprintln!("convert_legacy: {out}: {e}");
            return ExitCode::FAILURE;
        }
        println!("written to {out}");
    }
    ExitCode::SUCCESS
}
