//! Reads a stream item by item and prints each one: its offset, its layer and type, and the
//! fields the spec gives it, rendered by `xenmig::render` from the generated walk.
//!
//! ```text
//! cargo run -p xenmig --example read_stream -- [STREAM]
//! ```
//!
//! STREAM defaults to `samples/hvm64-demo.libxl` (run from the repository root). Any framing
//! is accepted (an `xl save` file, a libxl stream or a bare libxc image): the reader detects
//! it from the first octets. Exits non-zero if the stream cannot be read to its end.

use std::process::ExitCode;
use xenmig::error::Layer;
use xenmig::{render, Item, Reader, ReaderOptions};

/// Longest line of fields printed per item; the rest is elided.
const SHOWN: usize = 160;

fn shorten(mut s: String) -> String {
    if s.len() > SHOWN {
        let mut end = SHOWN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" ...");
    }
    s
}

fn walk(bytes: &[u8]) -> Result<u64, xenmig::StreamError> {
    // Zero-copy over the bytes: records are handed out borrowed from `bytes`.
    let mut reader = Reader::from_slice(bytes, ReaderOptions::default());
    let mut records = 0;
    loop {
        match reader.next_item()? {
            Item::XlHeader {
                offset,
                header,
                optional_data,
            } => println!(
                "{offset:#010x} xl header: {} (+{} octets of optional data)",
                render::text(&header),
                optional_data.len()
            ),
            Item::LibxlHeader { offset, header } => {
                println!("{offset:#010x} libxl header: {}", render::text(&header))
            }
            Item::ImageHeader { offset, header } => {
                println!(
                    "{offset:#010x} libxc image header: {}",
                    render::text(&header)
                )
            }
            Item::DomainHeader { offset, header } => {
                println!(
                    "{offset:#010x} libxc domain header: {}",
                    render::text(&header)
                )
            }
            Item::Record(rec) => {
                records += 1;
                // Record type numbers overlap between the layers: decode with the right codec.
                let fields = match rec.layer {
                    Layer::Libxl => render::text(&rec.libxl()?),
                    _ => render::text(&rec.libxc()?),
                };
                println!(
                    "{:#010x} #{} {} {} ({} octets): {}",
                    rec.offset,
                    rec.index,
                    rec.layer,
                    rec.type_name(),
                    rec.body.len(),
                    shorten(fields)
                );
            }
            Item::Trailing { offset, data } => {
                println!("{offset:#010x} {} trailing octets", data.len())
            }
            Item::Eof { complete } => {
                println!(
                    "end of input: {records} records, framing {}, {}",
                    reader.framing().map_or("unknown", |f| f.as_str()),
                    if complete {
                        "complete"
                    } else {
                        "stopped at a checkpoint"
                    }
                );
                return Ok(records);
            }
        }
    }
}

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "samples/hvm64-demo.libxl".into());
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("read_stream: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match walk(&bytes) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("read_stream: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}
