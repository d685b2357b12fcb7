//! Writes a synthetic legacy (Xen <= 4.5) save stream of a given size, for benchmarking the
//! converter: full batches of typed pages (MAX_BATCH_SIZE pages each, the most a legacy saver
//! sends, or `--batch N`), the chunks a real saver sends, and a PV or HVM tail (with the libxl qemu
//! record for HVM).
//!
//! ```text
//! cargo run --release -p xenmig --example gen_legacy -- [--width 32|64] [--guest pv|hvm] [--batch N] --size 1G OUT
//! xenmig convert-legacy -i OUT -o OUT.v2 [-f libxl]
//! ```
//!
//! The stream is written as it is generated: memory use is one batch whatever the size.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use xenmig::libxc::PageType;
use xenmig::{legacy, limits, x86_state};

const PAGE: usize = limits::PAGE_SIZE;
/// The largest batch a legacy saver writes, and the default.
const MAX_BATCH: usize = legacy::MAX_BATCH_SIZE as usize;
/// vcpu_guest_context sizes of 32- and 64-bit PV guests.
const VCPU_CONTEXT_32: usize = x86_state::VcpuContextX8632::SIZE;
const VCPU_CONTEXT_64: usize = x86_state::VcpuContextX8664::SIZE;

struct Options {
    width: usize,
    pv: bool,
    /// Pages per batch.
    batch: usize,
    size: u64,
    out: String,
}

fn parse_size(s: &str) -> Option<u64> {
    let (digits, scale) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        width: 8,
        pv: false,
        batch: MAX_BATCH,
        size: 1 << 30,
        out: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--width" | "-w" => {
                opts.width = match value()?.as_str() {
                    "32" => 4,
                    "64" => 8,
                    v => return Err(format!("--width {v}: expected 32 or 64")),
                }
            }
            "--guest" | "-g" => {
                opts.pv = match value()?.as_str() {
                    "pv" => true,
                    "hvm" => false,
                    v => return Err(format!("--guest {v}: expected pv or hvm")),
                }
            }
            "--batch" | "-b" => {
                let v = value()?;
                opts.batch = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_BATCH).contains(n))
                    .ok_or(format!("--batch {v}: expected 1 to {MAX_BATCH}"))?;
            }
            "--size" | "-s" => {
                let v = value()?;
                opts.size = parse_size(&v).ok_or(format!("--size {v}: expected e.g. 1G"))?;
            }
            _ if opts.out.is_empty() && !a.starts_with('-') => opts.out = a,
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if opts.out.is_empty() {
        return Err(
            "usage: gen_legacy [--width 32|64] [--guest pv|hvm] [--batch N] --size 1G OUT".into(),
        );
    }
    Ok(opts)
}

/// Little-endian writer of the legacy encoding: `ulong` follows the toolstack width.
struct Legacy<W> {
    out: W,
    width: usize,
}

impl<W: Write> Legacy<W> {
    fn i32(&mut self, v: i32) -> io::Result<()> {
        self.out.write_all(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.out.write_all(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.out.write_all(&v.to_le_bytes())
    }
    fn ulong(&mut self, v: u64) -> io::Result<()> {
        self.out.write_all(&v.to_le_bytes()[..self.width])
    }
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)
    }
    fn fill(&mut self, byte: u8, n: usize) -> io::Result<()> {
        self.out.write_all(&vec![byte; n])
    }
    /// `u32 pad, u64 value`: an HVM parameter chunk.
    fn param(&mut self, id: i32, value: u64) -> io::Result<()> {
        self.i32(id)?;
        self.u32(0)?;
        self.u64(value)
    }
}

/// A cheap pseudo-random byte stream, so that pages are not all alike.
fn noise(buf: &mut [u8], mut seed: u64) {
    for chunk in buf.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = chunk.len();
        chunk.copy_from_slice(&seed.to_le_bytes()[..n]);
    }
}

fn generate(o: &Options) -> io::Result<(u64, u64)> {
    let file = File::create(&o.out)?;
    let mut s = Legacy {
        out: BufWriter::with_capacity(1 << 20, file),
        width: o.width,
    };
    let batch_len = o.batch;
    let per_batch = (batch_len * (o.width + PAGE) + 4) as u64;
    let batches = o.size.div_ceil(per_batch).max(1);
    let pages = batches * batch_len as u64;
    let p2m_size = pages + 16;
    let vcpu_context = if o.width == 8 {
        VCPU_CONTEXT_64
    } else {
        VCPU_CONTEXT_32
    };

    s.ulong(p2m_size)?;
    if o.pv {
        // Ext-info: "vcpu" (its size gives the guest width) and "extv".
        s.ulong(u64::MAX)?;
        s.u32((8 + vcpu_context + 8) as u32)?;
        s.bytes(b"vcpu")?;
        s.u32(vcpu_context as u32)?;
        s.fill(0, vcpu_context)?;
        s.bytes(b"extv")?;
        s.u32(0)?;
        // The p2m frame list: one frame per page of p2m entries (guest width = toolstack's).
        let per_frame = (PAGE / o.width) as u64;
        for frame in 0..p2m_size.div_ceil(per_frame) {
            s.ulong(p2m_size + frame)?;
        }
    }
    // TSC_INFO, as a non-live saver sends it first.
    s.i32(-7)?;
    s.u32(0)?;
    s.u64(123_456_789)?;
    s.u32(2_000_000)?;
    s.u32(1)?;

    let mut data = vec![0u8; batch_len * PAGE];
    noise(&mut data, 0x9E37_79B9_7F4A_7C15);
    let mut entries = Vec::with_capacity(batch_len * o.width);
    for batch in 0..batches {
        entries.clear();
        let mut with_data = 0;
        for i in 0..batch_len as u64 {
            let pfn = batch * batch_len as u64 + i;
            // Mostly plain pages; some page tables (PV), an XTAB now and then (by pfn, so that
            // small batches have the same mix).
            let ty = match pfn % 64 {
                63 => PageType::XTAB,
                1 if o.pv => PageType::L1TAB,
                2 if o.pv => PageType::L1TAB_PINNED,
                _ => PageType::NOTAB,
            };
            if ty.has_data() {
                data[with_data * PAGE..with_data * PAGE + 8].copy_from_slice(&pfn.to_le_bytes());
                with_data += 1;
            }
            let shift = legacy::PFN_TYPE_MASK.trailing_zeros();
            let entry = (u64::from(ty.0) << shift) | pfn;
            entries.extend_from_slice(&entry.to_le_bytes()[..o.width]);
        }
        s.i32(batch_len as i32)?;
        s.bytes(&entries)?;
        s.bytes(&data[..with_data * PAGE])?;
    }

    // VCPU_INFO: vcpus 0 and 1.
    s.i32(-2)?;
    s.i32(1)?;
    s.u64(0b11)?;
    if !o.pv {
        s.param(-14, 0xFEFF_F000)?;
        s.param(-3, 0xFEFF_E000)?;
        s.param(-4, 0xFEFF_D000)?;
        s.param(-8, 0xFEFF_C000)?;
        s.param(-10, 1)?;
        s.param(-11, 1)?;
    }
    s.i32(-9)?;
    s.i32(0)?;

    if o.pv {
        s.u32(0)?; // no unmapped pfns
        for _ in 0..2 {
            s.fill(0x11, vcpu_context)?;
            s.fill(0x22, 128)?;
        }
        s.fill(0x33, PAGE)?; // shared info
    } else {
        s.u64(0xFEFF_B000)?;
        s.u64(0xFEFF_A000)?;
        s.u64(0xFEFF_9000)?;
        let context = [0x44u8; 1024];
        s.u32(context.len() as u32)?;
        s.bytes(&context)?;
        let qemu = [0x55u8; 64 << 10];
        s.bytes(b"DeviceModelRecord0002")?;
        s.u32(qemu.len() as u32)?;
        s.bytes(&qemu)?;
    }
    s.out.flush()?;
    let len = s.out.get_ref().metadata()?.len();
    Ok((pages, len))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gen_legacy: {e}");
            return ExitCode::from(2);
        }
    };
    match generate(&opts) {
        Ok((pages, len)) => {
            eprintln!(
                "gen_legacy: {}: {} {}-bit legacy stream, {pages} pfns, {len} bytes",
                opts.out,
                if opts.pv { "PV" } else { "HVM" },
                opts.width * 8
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_legacy: {}: {e}", opts.out);
            let _ = std::fs::remove_file(&opts.out);
            ExitCode::from(1)
        }
    }
}
