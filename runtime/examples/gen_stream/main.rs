//! Writes a synthetic valid v2 stream of a given size, for benchmarks:
//!
//! ```text
//! cargo run --release -p xenmig --example gen_stream -- \
//!     [--size 1G] [--batch 1024] [--guest hvm|pv] [--framing libxc|libxl|xl] OUT
//! ```
//!
//! OUT may be `-` for standard output. The stream is written as it is generated (memory use
//! is one batch of pages whatever the size); `xenmig verify` accepts it.

mod synth;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use synth::{Guest, Synth};
use xenmig::reader::Framing;

const USAGE: &str =
    "usage: gen_stream [--size 1G] [--batch 1024] [--guest hvm|pv] [--framing libxc|libxl|xl] OUT";

/// `123`, `64K`, `16M`, `1G`: octets.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, scale) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn parse_args() -> Result<(Synth, String), String> {
    let mut synth = Synth {
        size: 1 << 30,
        batch: 1024,
        guest: Guest::Hvm,
        framing: Framing::Libxl,
    };
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size" => {
                let v = value()?;
                synth.size = parse_size(&v).ok_or(format!("--size {v}: expected e.g. 1G"))?;
            }
            "--batch" => {
                let v = value()?;
                synth.batch = match v.parse() {
                    Ok(n @ 1..=1024) => n,
                    _ => return Err(format!("--batch {v}: expected 1 to 1024")),
                };
            }
            "--guest" => synth.guest = value()?.parse()?,
            "--framing" => synth.framing = value()?.parse()?,
            "-h" | "--help" => return Err(USAGE.into()),
            _ if out.is_none() && (a == "-" || !a.starts_with('-')) => out = Some(a),
            _ => return Err(format!("unexpected argument `{a}`\n{USAGE}")),
        }
    }
    let out = out.ok_or(USAGE)?;
    Ok((synth, out))
}

fn main() -> ExitCode {
    let (synth, out) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let w: Box<dyn Write> = if out == "-" {
        Box::new(io::stdout().lock())
    } else {
        match File::create(&out) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("gen_stream: cannot create {out}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match synth::write_stream(BufWriter::with_capacity(1 << 20, w), &synth) {
        Ok(n) => {
            eprintln!(
                "gen_stream: wrote {out}: {n} octets, {} pages in batches of {}",
                synth.pages(),
                synth.batch
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_stream: {out}: {e}");
            ExitCode::FAILURE
        }
    }
}
