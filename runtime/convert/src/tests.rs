//! Converter tests: the reference vectors byte for byte through the generated codecs
//! ([`CodecSink`], the path `convert_to` and the CLI use), and malformed legacy input.

use super::legacy::{GuestType, LegacyError, QemuRecordKind, Width, XlHeader, XL_MAGIC};
use super::*;
use crate::limits::{LEGACY_MAX_HVM_CONTEXT_LENGTH, LEGACY_MAX_TOOLSTACK_LENGTH, PAGE_SIZE};
use std::io::{self, Read};
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Sinks.

/// The bytes `CodecSink` writes for the calls in `f`: expected fragments of converted streams.
fn encoded(f: impl FnOnce(&mut CodecSink<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    let mut sink = CodecSink::new(Vec::new());
    f(&mut sink).expect("encode");
    sink.into_inner()
}

/// A sink that fails on the n-th call.
struct FailingSink {
    inner: CodecSink<Vec<u8>>,
    calls_left: u32,
}

impl FailingSink {
    fn tick(&mut self) -> io::Result<()> {
        if self.calls_left == 0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "sink closed"));
        }
        self.calls_left -= 1;
        Ok(())
    }
}

macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name(&mut self, $($arg: $ty),*) -> io::Result<()> { self.tick()?; self.inner.$name($($arg),*) })*
    };
}

impl V2Sink for FailingSink {
    forward! {
        xl_header(header: &XlHeader, optional_data: &[u8]);
        libxl_header(options: u32);
        libxl_libxc_context();
        libxl_emulator_xenstore_data(emulator_id: u32, index: u32, key_values: &[u8]);
        libxl_emulator_context(emulator_id: u32, index: u32, context: &[u8]);
        libxl_end();
        image_header(version: u32, options: u16);
        domain_header(domain_type: DomainType, page_shift: u16, xen_major: u32, xen_minor: u32);
        page_data(pfn_and_type: &[u64], pages: &[u8]);
        x86_pv_info(guest_width: u8, pt_levels: u8);
        x86_pv_p2m_frames(p2m_start_pfn: u32, p2m_end_pfn: u32, frame_pfns: &[u64]);
        x86_pv_vcpu_basic(vcpu_id: u32, context: &[u8]);
        x86_pv_vcpu_extended(vcpu_id: u32, context: &[u8]);
        x86_pv_vcpu_xsave(vcpu_id: u32, context: &[u8]);
        shared_info(page: &[u8]);
        x86_tsc_info(mode: u32, khz: u32, nsec: u64, incarnation: u32);
        hvm_context(context: &[u8]);
        hvm_params(params: &[(u64, u64)]);
        static_data_end();
        end();
        raw(bytes: &[u8]);
    }
}

/// A reader that hands out at most a few bytes per call, to exercise short reads.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step = self.step % 7 + 1;
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn run(input: &[u8], opts: &ConvertOptions) -> Result<(Vec<u8>, ConvertSummary), ConvertError> {
    let mut out = Vec::new();
    let summary = convert_to(input, &mut out, opts)?;
    assert_eq!(summary.output_bytes, out.len() as u64);
    Ok((out, summary))
}

fn run_err(input: &[u8], opts: &ConvertOptions) -> ConvertError {
    match run(input, opts) {
        Ok(_) => panic!("conversion unexpectedly succeeded"),
        Err(e) => e,
    }
}

/// Assert that `err` is a malformed-input error at `offset` whose message contains `needle`,
/// and that its text names the offset.
fn assert_malformed(err: &ConvertError, offset: u64, needle: &str) {
    let text = err.to_string();
    match err {
        ConvertError::Legacy(LegacyError::Malformed {
            offset: at,
            message,
        }) => {
            assert_eq!(*at, offset, "wrong offset in {text:?}");
            assert!(
                message.contains(needle),
                "{text:?} does not mention {needle:?}"
            );
        }
        other => panic!("expected a malformed-input error at {offset:#x}, got {other:?}"),
    }
    assert!(
        text.contains(&format!("offset {offset:#x}")),
        "{text:?} does not name the offset"
    );
    assert_eq!(err.exit_code(), 1);
    assert_eq!(err.offset(), offset);
}

fn assert_unsupported(err: &ConvertError, offset: u64) {
    assert!(
        matches!(err, ConvertError::Legacy(LegacyError::Unsupported { offset: at, .. }) if *at == offset),
        "expected unsupported at {offset:#x}, got {err:?}"
    );
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains(&format!("offset {offset:#x}")));
}

// ---------------------------------------------------------------------------------------------
// Reference vectors.

/// The repository's test vectors (`tests/vectors`, see its README).
fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

struct ConvertCase {
    name: String,
    input: Vec<u8>,
    expected: Vec<u8>,
    opts: ConvertOptions,
}

fn parse_flags(flags: &str) -> ConvertOptions {
    let mut opts = ConvertOptions {
        xl_header: Some(false),
        ..ConvertOptions::default()
    };
    let mut words = flags.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "-w" => {
                opts.width = Some(match words.next() {
                    Some("32") => Width::Bits32,
                    Some("64") => Width::Bits64,
                    other => panic!("bad -w {other:?}"),
                })
            }
            "-g" => {
                opts.guest_type = Some(match words.next() {
                    Some("pv") => GuestType::Pv,
                    Some("hvm") => GuestType::Hvm,
                    other => panic!("bad -g {other:?}"),
                })
            }
            "-f" => {
                opts.format = match words.next() {
                    Some("libxc") => OutputFormat::Libxc,
                    Some("libxl") => OutputFormat::Libxl,
                    other => panic!("bad -f {other:?}"),
                }
            }
            "-x" => opts.xl_header = Some(true),
            "--skip-qemu" => opts.skip_qemu = true,
            other => panic!("unknown flag {other:?}"),
        }
    }
    opts
}

fn convert_cases() -> Vec<ConvertCase> {
    let dir = vectors_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("read manifest.tsv");
    let read =
        |rel: &str| std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    let cases: Vec<ConvertCase> = manifest
        .lines()
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .filter(|cols| cols.first() == Some(&"convert"))
        .map(|cols| {
            assert_eq!(cols.len(), 5, "bad manifest row {cols:?}");
            ConvertCase {
                name: cols[1].to_string(),
                input: read(cols[2]),
                expected: read(cols[4]),
                opts: parse_flags(cols[3]),
            }
        })
        .collect();
    assert!(!cases.is_empty(), "no convert rows in the manifest");
    cases
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn check_exact(case: &ConvertCase, opts: &ConvertOptions, label: &str) {
    let (out, summary) =
        run(&case.input, opts).unwrap_or_else(|e| panic!("{} ({label}): {e}", case.name));
    assert!(
        out == case.expected,
        "{} ({label}): output differs from the reference at byte {:#x} (got {} bytes, expected {})",
        case.name,
        first_difference(&out, &case.expected),
        out.len(),
        case.expected.len()
    );
    if let Some(width) = case.opts.width {
        assert_eq!(summary.width, width, "{}: width", case.name);
    }
    if let Some(guest) = case.opts.guest_type {
        assert_eq!(summary.guest_type, guest, "{}: guest type", case.name);
    }
    assert_eq!(
        Some(summary.xl_header),
        case.opts.xl_header,
        "{}: xl header",
        case.name
    );
}

#[test]
fn vectors_byte_exact_with_reference_flags() {
    for case in convert_cases() {
        check_exact(&case, &case.opts, "reference flags");
    }
}

#[test]
fn vectors_byte_exact_with_detection() {
    for case in convert_cases() {
        let detect_all = ConvertOptions {
            width: None,
            guest_type: None,
            xl_header: None,
            ..case.opts
        };
        check_exact(
            &case,
            &detect_all,
            "width, guest type and xl header detected",
        );
        let detect_width = ConvertOptions {
            width: None,
            ..case.opts
        };
        check_exact(&case, &detect_width, "width detected");
        let detect_guest = ConvertOptions {
            guest_type: None,
            ..case.opts
        };
        check_exact(&case, &detect_guest, "guest type detected");
        let detect_xl = ConvertOptions {
            xl_header: None,
            ..case.opts
        };
        check_exact(&case, &detect_xl, "xl header detected");
    }
}

#[test]
fn vectors_byte_exact_through_short_reads() {
    for case in convert_cases() {
        let detect_all = ConvertOptions {
            width: None,
            guest_type: None,
            xl_header: None,
            ..case.opts
        };
        // Unbuffered, so the converter itself sees the short reads.
        let mut sink = CodecSink::new(Vec::new());
        let input = Trickle {
            data: &case.input,
            pos: 0,
            step: 0,
        };
        convert(input, &mut sink, &detect_all).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(
            sink.into_inner() == case.expected,
            "{}: short reads changed the output",
            case.name
        );
    }
}

#[test]
fn vectors_truncated_anywhere_report_the_offset() {
    for case in convert_cases() {
        let (_, summary) = run(&case.input, &case.opts).expect("full conversion");
        let consumed = summary.input_bytes as usize;
        let mut cuts: Vec<usize> = (0..consumed.min(256)).collect();
        cuts.extend((256..consumed).step_by(509));
        cuts.extend(consumed.saturating_sub(64)..consumed);
        for cut in cuts {
            let err = run_err(&case.input[..cut], &case.opts);
            match &err {
                ConvertError::Legacy(LegacyError::Truncated {
                    offset,
                    got,
                    needed,
                    ..
                }) => {
                    assert_eq!(
                        offset + got,
                        cut as u64,
                        "{} cut at {cut:#x}: {err}",
                        case.name
                    );
                    assert!(got < needed, "{} cut at {cut:#x}: {err}", case.name);
                    assert!(err.to_string().contains(&format!("offset {offset:#x}")));
                }
                other => panic!(
                    "{} cut at {cut:#x}: expected truncation, got {other}",
                    case.name
                ),
            }
            assert_eq!(err.exit_code(), 1);
            // With everything detected, a cut still fails, at or before the cut.
            let detect = ConvertOptions {
                width: None,
                guest_type: None,
                xl_header: None,
                ..case.opts
            };
            let err = run_err(&case.input[..cut], &detect);
            assert!(
                err.offset() <= cut as u64,
                "{} cut at {cut:#x} (detected): {err}",
                case.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Synthetic legacy streams.

/// Builds a legacy stream and remembers the offsets of interesting fields.
struct Builder {
    width: Width,
    bytes: Vec<u8>,
}

impl Builder {
    fn new(width: Width) -> Self {
        Builder {
            width,
            bytes: Vec::new(),
        }
    }
    fn at(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn ulong(&mut self, v: u64) -> &mut Self {
        match self.width {
            Width::Bits32 => self.u32(v as u32),
            Width::Bits64 => self.u64(v),
        }
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }
    fn fill(&mut self, byte: u8, n: usize) -> &mut Self {
        self.bytes.resize(self.bytes.len() + n, byte);
        self
    }
    fn batch(&mut self, entries: &[u64]) -> &mut Self {
        self.i32(entries.len() as i32);
        for &e in entries {
            self.ulong(e);
        }
        for (i, &e) in entries.iter().enumerate() {
            if legacy::legacy_entry_has_data(e) {
                self.fill(i as u8 + 1, PAGE_SIZE);
            }
        }
        self
    }
    /// The end of an HVM stream after its page batches: the end of the chunks, the magic
    /// pfns, an 8-octet HVM context and a 4-octet device model record.
    fn hvm_tail(&mut self) -> &mut Self {
        self.i32(0)
            .u64(5)
            .u64(6)
            .u64(7)
            .u32(8)
            .fill(0x44, 8)
            .raw(b"DeviceModelRecord0002")
            .u32(4)
            .raw(b"QEVM")
    }

    fn vcpu_info(&mut self, max: i32, words: &[u64]) -> &mut Self {
        self.i32(-2).i32(max);
        for &w in words {
            self.u64(w);
        }
        self
    }
    fn pv_ext_info(&mut self, blocks: &[(&[u8; 4], Vec<u8>)]) -> &mut Self {
        let total: usize = blocks.iter().map(|(_, d)| 8 + d.len()).sum();
        self.ulong(u64::MAX).u32(total as u32);
        for (id, data) in blocks {
            self.raw(&id[..]).u32(data.len() as u32).raw(data);
        }
        self
    }
}

fn vcpu_block(size: u32) -> (&'static [u8; 4], Vec<u8>) {
    (b"vcpu", vec![0xAB; size as usize])
}

const P2M_SIZE: u64 = 0x20;

/// A PV stream up to (not including) the chunk loop.
fn pv_prefix(width: Width) -> Builder {
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[
            vcpu_block(legacy::VCPU_CONTEXT_SIZE_X86_64),
            (b"extv", vec![]),
        ])
        .ulong(0x1234);
    b
}

/// The PV tail for one vcpu (64-bit guest with extended context).
fn pv_tail(b: &mut Builder) -> &mut Builder {
    b.u32(0)
        .fill(0x11, legacy::VCPU_CONTEXT_SIZE_X86_64 as usize)
        .fill(0x22, legacy::EXTENDED_VCPU_CONTEXT_SIZE)
        .fill(0x33, PAGE_SIZE)
}

fn pv_stream(width: Width) -> Vec<u8> {
    let mut b = pv_prefix(width);
    b.vcpu_info(0, &[1])
        .batch(&[1, 0x1000_0002, 0xF000_0000, 0xF000_0003])
        .i32(0);
    pv_tail(&mut b);
    b.bytes
}

/// An HVM stream up to and including the HVM context.
fn hvm_body(width: Width) -> Builder {
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .i32(-3)
        .u32(0)
        .u64(0xFEFF_D000)
        .batch(&[1, 2])
        .i32(0)
        .u64(5)
        .u64(6)
        .u64(7)
        .u32(8)
        .fill(0x44, 8);
    b
}

fn hvm_stream(width: Width) -> Vec<u8> {
    let mut b = hvm_body(width);
    b.raw(b"DeviceModelRecord0002").u32(4).raw(b"QEVM");
    b.bytes
}

fn opts(width: Width, guest: GuestType, format: OutputFormat) -> ConvertOptions {
    ConvertOptions {
        width: Some(width),
        guest_type: Some(guest),
        xl_header: Some(false),
        format,
        skip_qemu: false,
    }
}

#[test]
fn synthetic_streams_convert_and_detect() {
    for width in [Width::Bits32, Width::Bits64] {
        for format in [OutputFormat::Libxc, OutputFormat::Libxl] {
            let pv = pv_stream(width);
            let (given, summary) = run(&pv, &opts(width, GuestType::Pv, format)).expect("pv");
            assert_eq!(summary.vcpus, 1);
            assert_eq!(summary.pages, 2);
            assert_eq!(summary.dropped_bare_xtab_entries, 1);
            assert_eq!(summary.input_bytes, pv.len() as u64);
            let (detected, summary) = run(
                &pv,
                &ConvertOptions {
                    format,
                    ..Default::default()
                },
            )
            .expect("pv detected");
            assert_eq!(given, detected);
            assert_eq!(
                (summary.width, summary.guest_type, summary.xl_header),
                (width, GuestType::Pv, false)
            );

            let hvm = hvm_stream(width);
            let (given, summary) = run(&hvm, &opts(width, GuestType::Hvm, format)).expect("hvm");
            assert_eq!(
                summary.qemu_record,
                Some(QemuRecordKind::DeviceModelRecord0002)
            );
            let (detected, summary) = run(
                &hvm,
                &ConvertOptions {
                    format,
                    ..Default::default()
                },
            )
            .expect("hvm detected");
            assert_eq!(given, detected);
            assert_eq!((summary.width, summary.guest_type), (width, GuestType::Hvm));
        }
    }
}

#[test]
fn p2m_size_above_the_cap_is_rejected() {
    let mut b = Builder::new(Width::Bits64);
    b.u64(0x1000_0000).i32(0);
    let err = run_err(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Hvm, OutputFormat::Libxc),
    );
    assert_malformed(&err, 0, "exceeds the legacy maximum");
}

#[test]
fn batch_over_1024_is_rejected() {
    for width in [Width::Bits32, Width::Bits64] {
        let mut b = pv_prefix(width);
        let at = b.at();
        b.i32(1025).fill(0, 1025 * width.bytes());
        let err = run_err(&b.bytes, &opts(width, GuestType::Pv, OutputFormat::Libxc));
        assert_malformed(&err, at, "MAX_BATCH_SIZE 1024");

        let mut b = hvm_body(width);
        b.bytes.truncate(width.bytes());
        let at = b.at();
        b.i32(i32::MAX);
        let err = run_err(&b.bytes, &opts(width, GuestType::Hvm, OutputFormat::Libxc));
        assert_malformed(&err, at, "MAX_BATCH_SIZE");
    }
}

#[test]
fn batch_of_exactly_1024_is_accepted() {
    let mut b = Builder::new(Width::Bits64);
    b.u64(P2M_SIZE).i32(1024);
    for pfn in 0..1024u64 {
        b.u64(0xF000_0000 | pfn); // XTAB entries carry no data
    }
    b.i32(0).u64(0).u64(0).u64(0).u32(8).fill(1, 8);
    let o = ConvertOptions {
        skip_qemu: true,
        ..opts(Width::Bits64, GuestType::Hvm, OutputFormat::Libxc)
    };
    let (_, summary) = run(&b.bytes, &o).expect("1024 entries");
    assert_eq!(summary.page_data_records, 1);
}

#[test]
fn bad_extended_info_sizes_are_rejected() {
    let width = Width::Bits64;
    let o = opts(width, GuestType::Pv, OutputFormat::Libxc);
    let sig_at = 8u64; // after p2m_size
    let blocks_at = sig_at + 8 + 4;

    // "vcpu" block of a size that names no guest width.
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[vcpu_block(0x1000)])
        .ulong(1);
    assert_malformed(&run_err(&b.bytes, &o), blocks_at, "gives no guest width");

    // A block that overruns the total size.
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .ulong(u64::MAX)
        .u32(8 + 0x1430 - 1)
        .raw(b"vcpu")
        .u32(0x1430)
        .fill(0, 0x1430)
        .ulong(1);
    assert_malformed(&run_err(&b.bytes, &o), blocks_at, "overruns the total size");

    // A total that leaves too few bytes for another block header.
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .ulong(u64::MAX)
        .u32(8 + 0x1430 + 3)
        .raw(b"vcpu")
        .u32(0x1430)
        .fill(0, 0x1430)
        .fill(0, 3);
    assert_malformed(
        &run_err(&b.bytes, &o),
        blocks_at + 8 + 0x1430,
        "too few for a block header",
    );

    // An unknown block id.
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[vcpu_block(0x1430), (b"junk", vec![0; 4])]);
    assert_malformed(
        &run_err(&b.bytes, &o),
        blocks_at + 8 + 0x1430,
        "unrecognised PV extended-info block",
    );

    // No "vcpu" block at all.
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE).pv_ext_info(&[(b"extv", vec![])]).ulong(1);
    assert_malformed(&run_err(&b.bytes, &o), sig_at, "no \"vcpu\" block");

    // A second "vcpu" block.
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[vcpu_block(0xAF0), vcpu_block(0xAF0)]);
    assert_malformed(
        &run_err(&b.bytes, &o),
        blocks_at + 8 + 0xAF0,
        "second \"vcpu\" block",
    );

    // "xcnt" too small for its u32, and an out-of-range xsave size.
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[vcpu_block(0xAF0), (b"xcnt", vec![1, 0])]);
    assert_malformed(&run_err(&b.bytes, &o), blocks_at + 8 + 0xAF0, "too small");
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[vcpu_block(0xAF0), (b"xcnt", 8u32.to_le_bytes().to_vec())]);
    assert_malformed(
        &run_err(&b.bytes, &o),
        blocks_at + 8 + 0xAF0 + 8,
        "out of range",
    );

    // Wrong signature: an HVM stream read as PV.
    let hvm = hvm_stream(width);
    assert_malformed(&run_err(&hvm, &o), sig_at, "extended-info signature");
}

#[test]
fn xsave_size_must_match_xcnt() {
    let width = Width::Bits32;
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[
            vcpu_block(0xAF0),
            (b"xcnt", (16u32 + 64).to_le_bytes().to_vec()),
        ])
        .ulong(7)
        .vcpu_info(0, &[1])
        .i32(0)
        .u32(0)
        .fill(0, 0xAF0)
        .u64(3);
    let at = b.at();
    b.u64(32).fill(0, 32).fill(0, PAGE_SIZE);
    let err = run_err(&b.bytes, &opts(width, GuestType::Pv, OutputFormat::Libxc));
    assert_malformed(&err, at, "xsave size 0x20, expected 0x40");
}

#[test]
fn xsave_state_converts_without_mask_and_size() {
    let width = Width::Bits32;
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[
            vcpu_block(0xAF0),
            (b"xcnt", (16u32 + 64).to_le_bytes().to_vec()),
        ])
        .ulong(7)
        .vcpu_info(70, &[0b101, 1 << 6])
        .i32(0)
        .u32(2)
        .ulong(1)
        .ulong(2);
    for _ in 0..3 {
        b.fill(0x55, 0xAF0).u64(3).u64(64).fill(0x66, 64);
    }
    b.fill(0x77, PAGE_SIZE);
    let (out, summary) =
        run(&b.bytes, &opts(width, GuestType::Pv, OutputFormat::Libxc)).expect("xsave");
    assert_eq!(summary.vcpus, 3);
    // Each XSAVE record is the 8-byte vcpu header and the 64-byte buffer.
    let xsave_records = out
        .windows(8)
        .filter(|w| *w == [6, 0, 0, 0, 72, 0, 0, 0])
        .count();
    assert_eq!(xsave_records, 3);
    // vcpus 0, 2 and 70 in order.
    let record = encoded(|s| s.x86_pv_vcpu_xsave(70, &[0x66; 64]));
    assert!(out.windows(record.len()).any(|w| w == record));
}

#[test]
fn duplicate_pfns_are_rejected_after_dropping_bare_xtab() {
    for width in [Width::Bits32, Width::Bits64] {
        let mut b = pv_prefix(width);
        b.vcpu_info(0, &[1]);
        let at = b.at();
        b.batch(&[5, 6, 5]).i32(0);
        pv_tail(&mut b);
        let err = run_err(&b.bytes, &opts(width, GuestType::Pv, OutputFormat::Libxc));
        assert_malformed(&err, at, "pfn 0x5 (type 0x0) twice");

        // Several bare XTAB entries are dropped, not duplicates.
        let mut b = pv_prefix(width);
        b.vcpu_info(0, &[1])
            .batch(&[0xF000_0000, 5, 0xF000_0000, 0xF000_0000])
            .i32(0);
        pv_tail(&mut b);
        let (_, summary) =
            run(&b.bytes, &opts(width, GuestType::Pv, OutputFormat::Libxc)).expect("bare xtab");
        assert_eq!(summary.dropped_bare_xtab_entries, 3);

        // A batch of only bare XTAB entries writes no PAGE_DATA.
        let mut b = pv_prefix(width);
        b.vcpu_info(0, &[1])
            .batch(&[0xF000_0000, 0xF000_0000])
            .i32(0);
        pv_tail(&mut b);
        let (out, summary) =
            run(&b.bytes, &opts(width, GuestType::Pv, OutputFormat::Libxc)).expect("empty batch");
        assert_eq!(summary.dropped_empty_batches, 1);
        assert_eq!(summary.page_data_records, 0);
        assert!(!out.windows(8).any(|w| w == [1, 0, 0, 0, 8, 0, 0, 0]));
    }
}

#[test]
fn unknown_chunk_ids_are_rejected() {
    for id in [-21, -100, i32::MIN] {
        let mut b = pv_prefix(Width::Bits64);
        let at = b.at();
        b.i32(id);
        let err = run_err(
            &b.bytes,
            &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxc),
        );
        assert_malformed(&err, at, &format!("unrecognised chunk id {id}"));
    }
}

#[test]
fn tmem_and_compression_are_unsupported() {
    for id in [-5, -6, -12, -13] {
        let mut b = pv_prefix(Width::Bits32);
        let at = b.at();
        b.i32(id).u32(0);
        let err = run_err(
            &b.bytes,
            &opts(Width::Bits32, GuestType::Pv, OutputFormat::Libxc),
        );
        assert_unsupported(&err, at);
    }
}

#[test]
fn vcpu_ids_above_4095_are_rejected() {
    for max in [4096, 0x7FFF_FFFF, -1] {
        let mut b = pv_prefix(Width::Bits64);
        let at = b.at() + 4;
        b.vcpu_info(max, &[1]);
        let err = run_err(
            &b.bytes,
            &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxc),
        );
        assert_malformed(&err, at, "out of range 0..=4095");
    }
    // 4095 itself is fine: 64 words of map.
    let mut b = pv_prefix(Width::Bits64);
    let mut words = [0u64; 64];
    words[63] = 1 << 63;
    words[0] = 1;
    b.vcpu_info(4095, &words).i32(0).u32(0);
    for _ in 0..2 {
        b.fill(0x11, legacy::VCPU_CONTEXT_SIZE_X86_64 as usize)
            .fill(0x22, legacy::EXTENDED_VCPU_CONTEXT_SIZE);
    }
    b.fill(0x33, PAGE_SIZE);
    let (_, summary) = run(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxc),
    )
    .expect("4095");
    assert_eq!(summary.vcpus, 2);
}

#[test]
fn vcpu_info_rules() {
    // Twice.
    let mut b = pv_prefix(Width::Bits64);
    b.vcpu_info(0, &[1]);
    let at = b.at();
    b.vcpu_info(0, &[1]);
    let err = run_err(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxc),
    );
    assert_malformed(&err, at, "second VCPU_INFO");
    // Missing in a PV stream.
    let mut b = pv_prefix(Width::Bits64);
    let at = b.at();
    b.i32(0);
    let err = run_err(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxc),
    );
    assert_malformed(&err, at, "without a VCPU_INFO");
}

#[test]
fn hvm_param_chunk_in_pv_stream_is_rejected() {
    let mut b = pv_prefix(Width::Bits64);
    b.vcpu_info(0, &[1]);
    let at = b.at();
    b.i32(-11).u32(0).u64(1);
    let err = run_err(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxc),
    );
    assert_malformed(&err, at, "HVM_VIRIDIAN in a PV stream");
}

#[test]
fn hvm_params_merge_in_chunk_order() {
    let mut b = Builder::new(Width::Bits64);
    b.u64(P2M_SIZE);
    for (id, v) in [(-11, 1u64), (-4, 2), (-19, 3), (-20, 4), (-14, 5)] {
        b.i32(id).u32(0).u64(v);
    }
    b.i32(-7)
        .u32(1)
        .u64(2)
        .u32(3)
        .u32(4)
        .i32(0)
        .u64(0)
        .u64(0)
        .u64(0)
        .u32(1)
        .fill(0x5A, 1);
    let o = ConvertOptions {
        skip_qemu: true,
        ..opts(Width::Bits64, GuestType::Hvm, OutputFormat::Libxc)
    };
    let (out, _) = run(&b.bytes, &o).expect("params");
    let expected = encoded(|s| {
        s.x86_tsc_info(1, 3, 2, 4)?;
        s.hvm_params(&[(9, 1), (15, 2), (32, 3), (33, 4), (34, 5)])?;
        s.hvm_params(&[(5, 0), (6, 0), (1, 0)])
    });
    let start = 24 + 16 + 8; // ihdr, dhdr, STATIC_DATA_END
    assert_eq!(&out[start..start + expected.len()], &expected[..]);
}

#[test]
fn empty_or_oversized_hvm_context_is_rejected() {
    let o = ConvertOptions {
        skip_qemu: true,
        ..opts(Width::Bits32, GuestType::Hvm, OutputFormat::Libxc)
    };
    let mut b = Builder::new(Width::Bits32);
    b.u32(P2M_SIZE as u32).i32(0).u64(0).u64(0).u64(0);
    let at = b.at();
    let mut empty = Builder {
        width: b.width,
        bytes: b.bytes.clone(),
    };
    empty.u32(0);
    assert_malformed(&run_err(&empty.bytes, &o), at, "HVM context is empty");
    let mut big = Builder {
        width: b.width,
        bytes: b.bytes.clone(),
    };
    big.u32(LEGACY_MAX_HVM_CONTEXT_LENGTH + 1);
    assert_malformed(&run_err(&big.bytes, &o), at, "exceeds the cap");
    // At the cap but truncated: a truncation error, without a 128 MiB allocation up front.
    let mut cut = Builder {
        width: b.width,
        bytes: b.bytes.clone(),
    };
    cut.u32(LEGACY_MAX_HVM_CONTEXT_LENGTH).fill(1, 10);
    match run_err(&cut.bytes, &o) {
        ConvertError::Legacy(LegacyError::Truncated { offset, got, .. }) => {
            assert_eq!((offset, got), (at + 4, 10));
        }
        other => panic!("expected truncation, got {other}"),
    }
}

#[test]
fn oversized_lengths_are_rejected_before_reading() {
    // Unmapped pfn count above 2^28.
    let mut b = pv_prefix(Width::Bits64);
    b.vcpu_info(0, &[1]).i32(0);
    let at = b.at();
    b.u32((1 << 28) + 1);
    let err = run_err(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxc),
    );
    assert_malformed(&err, at, "unmapped pfn count");

    // TOOLSTACK above 16 MiB.
    let mut b = pv_prefix(Width::Bits64);
    b.i32(-18);
    let at = b.at();
    b.u32(LEGACY_MAX_TOOLSTACK_LENGTH + 1);
    let err = run_err(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxl),
    );
    assert_malformed(&err, at, "TOOLSTACK length");

    // Qemu record above 128 MiB - 8.
    let mut b = hvm_body(Width::Bits64);
    b.raw(b"DeviceModelRecord0002");
    let at = b.at();
    b.u32(128 << 20);
    let err = run_err(
        &b.bytes,
        &opts(Width::Bits64, GuestType::Hvm, OutputFormat::Libxl),
    );
    assert_malformed(&err, at, "qemu record length");

    // Unmapped pfns are read and discarded.
    let mut b = pv_prefix(Width::Bits32);
    b.vcpu_info(0, &[1]).i32(0).u32(3).u32(1).u32(2).u32(3);
    b.fill(0x11, legacy::VCPU_CONTEXT_SIZE_X86_64 as usize)
        .fill(0x22, legacy::EXTENDED_VCPU_CONTEXT_SIZE)
        .fill(0x33, PAGE_SIZE);
    run(
        &b.bytes,
        &opts(Width::Bits32, GuestType::Pv, OutputFormat::Libxc),
    )
    .expect("unmapped pfns");
}

fn toolstack_blob(width: Width, entries: &[(u64, u64, u64, &[u8])]) -> Vec<u8> {
    let mut blob = Vec::new();
    blob.extend_from_slice(&1u32.to_le_bytes());
    blob.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (phys, start, size, name) in entries {
        for v in [phys, start, size] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&(name.len() as u32).to_le_bytes());
        blob.extend_from_slice(name);
        if width == Width::Bits64 {
            blob.extend_from_slice(&[0xEE; 4]);
        }
    }
    blob
}

/// An HVM stream with a TOOLSTACK chunk; returns it and the blob's offset.
fn hvm_with_toolstack(width: Width, blob: &[u8]) -> (Vec<u8>, u64) {
    let mut b = Builder::new(width);
    b.ulong(P2M_SIZE).i32(-18).u32(blob.len() as u32);
    let at = b.at();
    b.raw(blob).i32(0).u64(0).u64(0).u64(0).u32(8).fill(0x44, 8);
    b.raw(b"DeviceModelRecord0002").u32(0);
    (b.bytes, at)
}

#[test]
fn physmap_toolstack_becomes_xenstore_keys() {
    for width in [Width::Bits32, Width::Bits64] {
        let blob = toolstack_blob(
            width,
            &[
                (0xF000_0000, 0xF000_0000, 0x80_0000, b"vga\0"),
                (0x1, 0x2, 0x3, b"\0"),
            ],
        );
        let (stream, _) = hvm_with_toolstack(width, &blob);
        let (out, summary) =
            run(&stream, &opts(width, GuestType::Hvm, OutputFormat::Libxl)).expect("physmap");
        assert_eq!(summary.physmap_entries, 2);
        let keys: &[u8] = b"physmap/f0000000/start_addr\0f0000000\0physmap/f0000000/size\0800000\0\
physmap/f0000000/name\0vga\0physmap/1/start_addr\x002\0physmap/1/size\x003\0physmap/1/name\0\0";
        let expected = encoded(|s| {
            s.end()?;
            s.libxl_emulator_xenstore_data(0, 0, keys)?;
            s.libxl_emulator_context(0, 0, &[])?;
            s.libxl_end()
        });
        assert!(out.ends_with(&expected), "{width}: xenstore data differs");
        // libxc format discards the blob.
        let (out, _) =
            run(&stream, &opts(width, GuestType::Hvm, OutputFormat::Libxc)).expect("libxc");
        assert!(!out.windows(7).any(|w| w == b"physmap"));
    }
}

#[test]
fn bad_physmap_names_are_rejected() {
    for width in [Width::Bits32, Width::Bits64] {
        let o = opts(width, GuestType::Hvm, OutputFormat::Libxl);
        let pad = if width == Width::Bits64 { 4 } else { 0 };

        let blob = toolstack_blob(width, &[(1, 2, 3, b"")]);
        let (stream, at) = hvm_with_toolstack(width, &blob);
        assert_malformed(&run_err(&stream, &o), at + 8 + 24, "empty name");

        let blob = toolstack_blob(width, &[(1, 2, 3, b"vga")]);
        let (stream, at) = hvm_with_toolstack(width, &blob);
        assert_malformed(&run_err(&stream, &o), at + 8 + 28 + 2, "not NUL-terminated");

        let blob = toolstack_blob(width, &[(1, 2, 3, b"v\0a\0")]);
        let (stream, at) = hvm_with_toolstack(width, &blob);
        assert_malformed(&run_err(&stream, &o), at + 8 + 28 + 1, "NUL inside");

        // The name (plus padding) runs past the end of the blob.
        let mut blob = toolstack_blob(width, &[(1, 2, 3, b"vga\0")]);
        blob.truncate(blob.len() - pad - 1);
        let (stream, at) = hvm_with_toolstack(width, &blob);
        assert_malformed(&run_err(&stream, &o), at + 8 + 28, "overruns the blob");

        // More entries announced than present.
        let mut blob = toolstack_blob(width, &[(1, 2, 3, b"vga\0")]);
        blob[4] = 2;
        let (stream, at) = hvm_with_toolstack(width, &blob);
        assert_malformed(
            &run_err(&stream, &o),
            at + 8 + 28 + 4 + pad as u64,
            "too short for the entry header",
        );

        // Wrong version, and a blob too short for its header.
        let mut blob = toolstack_blob(width, &[]);
        blob[0] = 2;
        let (stream, at) = hvm_with_toolstack(width, &blob);
        assert_malformed(&run_err(&stream, &o), at, "version 2");
        let (stream, at) = hvm_with_toolstack(width, &[1, 0, 0]);
        assert_malformed(&run_err(&stream, &o), at, "too short");
    }
}

#[test]
fn qemu_trailers() {
    let width = Width::Bits64;
    let body = hvm_body(width).bytes;

    // Remus: like 0002.
    let mut stream = body.clone();
    stream.extend_from_slice(b"RemusDeviceModelState");
    stream.extend_from_slice(&3u32.to_le_bytes());
    stream.extend_from_slice(b"abc");
    let (out, summary) =
        run(&stream, &opts(width, GuestType::Hvm, OutputFormat::Libxc)).expect("remus libxc");
    assert_eq!(
        summary.qemu_record,
        Some(QemuRecordKind::RemusDeviceModelState)
    );
    assert!(out.ends_with(b"RemusDeviceModelState\x03\0\0\0abc"));
    let (out, _) =
        run(&stream, &opts(width, GuestType::Hvm, OutputFormat::Libxl)).expect("remus libxl");
    let tail = encoded(|s| {
        s.libxl_emulator_context(0, 0, b"abc")?;
        s.libxl_end()
    });
    assert!(out.ends_with(&tail));

    // xend: data to the end of the input, more than one read chunk.
    let data: Vec<u8> = b"QEVM"
        .iter()
        .copied()
        .chain((0..(3 << 20)).map(|i| i as u8))
        .collect();
    let mut stream = body.clone();
    stream.extend_from_slice(b"QemuDeviceModelRecord");
    stream.extend_from_slice(&data);
    let (out, summary) =
        run(&stream, &opts(width, GuestType::Hvm, OutputFormat::Libxc)).expect("xend libxc");
    assert_eq!(
        summary.qemu_record,
        Some(QemuRecordKind::QemuDeviceModelRecord)
    );
    assert_eq!(summary.input_bytes, stream.len() as u64);
    assert!(out.ends_with(&stream[body.len()..]));
    let (out, _) =
        run(&stream, &opts(width, GuestType::Hvm, OutputFormat::Libxl)).expect("xend libxl");
    let tail = encoded(|s| {
        s.libxl_emulator_context(0, 0, &data)?;
        s.libxl_end()
    });
    assert!(out.ends_with(&tail));

    // Unknown signature: unsupported, like the reference's "script error".
    let mut stream = body.clone();
    let at = stream.len() as u64;
    stream.extend_from_slice(b"SomethingElseEntirely");
    assert_unsupported(
        &run_err(&stream, &opts(width, GuestType::Hvm, OutputFormat::Libxc)),
        at,
    );

    // Missing trailer: libxc with --skip-qemu is fine, otherwise truncated.
    let skip = ConvertOptions {
        skip_qemu: true,
        ..opts(width, GuestType::Hvm, OutputFormat::Libxc)
    };
    let (_, summary) = run(&body, &skip).expect("skip qemu");
    assert_eq!(summary.qemu_record, None);
    let err = run_err(&body, &opts(width, GuestType::Hvm, OutputFormat::Libxl));
    assert!(
        matches!(err, ConvertError::Legacy(LegacyError::Truncated { offset, .. }) if offset == body.len() as u64)
    );
}

#[test]
fn xl_header_rules() {
    let width = Width::Bits64;
    let legacy = pv_stream(width);
    let header = |mandatory: u32, byteorder: u32| {
        let mut h = XL_MAGIC.to_vec();
        for v in [byteorder, mandatory, 0, 5] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(b"{}\0\0\0");
        h.extend_from_slice(&legacy);
        h
    };
    let good = header(0, legacy::XL_BYTEORDER);
    for format in [OutputFormat::Libxc, OutputFormat::Libxl] {
        let (out, summary) = run(
            &good,
            &ConvertOptions {
                format,
                ..Default::default()
            },
        )
        .expect("xl");
        assert!(summary.xl_header);
        let streamv2 = if format == OutputFormat::Libxl {
            2u8
        } else {
            0
        };
        assert_eq!(&out[..36], &good[..36]);
        assert_eq!(out[36], streamv2);
        assert_eq!(&out[37..53], &good[37..53]);
    }
    let o = ConvertOptions {
        xl_header: Some(true),
        ..Default::default()
    };
    assert_malformed(
        &run_err(&header(2, legacy::XL_BYTEORDER), &o),
        36,
        "STREAMv2",
    );
    assert_malformed(
        &run_err(&header(4, legacy::XL_BYTEORDER), &o),
        36,
        "unknown mandatory flags",
    );
    assert_malformed(&run_err(&header(0, 0x04030201), &o), 32, "byteorder");
    assert_malformed(&run_err(&legacy, &o), 0, "no xl header");
}

#[test]
fn write_errors_carry_the_input_offset() {
    let stream = pv_stream(Width::Bits64);
    for calls in 0..8 {
        let mut sink = FailingSink {
            inner: CodecSink::new(Vec::new()),
            calls_left: calls,
        };
        let err = convert(
            &stream[..],
            &mut sink,
            &opts(Width::Bits64, GuestType::Pv, OutputFormat::Libxl),
        )
        .expect_err("the sink fails");
        assert!(matches!(err, ConvertError::Write { .. }), "{err}");
        assert_eq!(err.exit_code(), 1);
        assert!(err.offset() <= stream.len() as u64);
        assert!(err.to_string().contains("sink closed"));
    }
}

#[test]
fn reader_reports_items_in_stream_order() {
    let stream = pv_stream(Width::Bits32);
    let mut reader = legacy::LegacyReader::new(&stream[..], legacy::ReaderOptions::default());
    let mut seen = Vec::new();
    while let Some((offset, record)) = reader.next_record().expect("read") {
        let name = format!("{record:?}");
        seen.push((
            offset,
            name.split([' ', '(', '{']).next().unwrap_or("").to_string(),
        ));
    }
    let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Header",
            "PvExtendedInfo",
            "PvP2mFrameList",
            "VcpuInfo",
            "PageBatch",
            "EndOfChunks",
            "PvVcpu",
            "SharedInfo"
        ]
    );
    assert_eq!(seen[0].0, 0);
    assert_eq!(seen[1].0, 4);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(reader.offset(), stream.len() as u64);
}

/// Each item [`legacy::LegacyReader::next_item`] hands out, as `offset name fields`, the
/// fields from the item's generated walk; the items must follow each other with no gap.
fn items(stream: &[u8], options: legacy::ReaderOptions) -> Vec<String> {
    let mut reader = legacy::LegacyReader::new(stream, options);
    let mut seen = Vec::new();
    let mut next = 0;
    while let Some(item) = reader.next_item().expect("read") {
        assert_eq!(item.offset, next, "{seen:#?}\n{}", item.name());
        next = item.offset + item.length;
        let fields = xenmig_core::render::text(item.value.as_walk());
        seen.push(format!("{} {} {fields}", item.offset, item.name()));
    }
    assert_eq!(next, stream.len() as u64, "{seen:#?}");
    seen
}

#[test]
fn reader_items_are_the_spec_items_and_cover_the_stream() {
    let pv = items(&pv_stream(Width::Bits32), legacy::ReaderOptions::default());
    // The sizes the specs give: a vCPU context, its extension, a page. The other lengths are
    // the 32-bit words and headers pv_stream writes.
    let ctx = legacy::VCPU_CONTEXT_SIZE_X86_64 as usize;
    let ext = legacy::EXTENDED_VCPU_CONTEXT_SIZE;
    let after_ext = 12 + 8 + ctx + 8;
    let batch = after_ext + 4 + 16;
    let end = batch + 4 + 16 + 2 * PAGE_SIZE;
    assert_eq!(
        pv,
        [
            "0 HEADER p2m_size=32".to_string(),
            format!("4 PV_EXT_INFO marker=0xffffffff total_size={}", 8 + ctx + 8),
            format!("12 ext_info_block id=\"vcpu\" size={ctx}"),
            format!("{} ext_info_block id=\"extv\" size=0", 12 + 8 + ctx),
            format!("{after_ext} P2M_FRAME_LIST frames=[0x1234]"),
            format!("{} VCPU_INFO max_vcpu_id=0 vcpu_map=[0x1]", after_ext + 4),
            format!("{batch} PAGE_BATCH pfn_types=[0x1, 0x10000002, 0xf0000000, 0xf0000003]"),
            format!("{end} END "),
            format!("{} PV_UNMAPPED count=0 pfns=[]", end + 4),
            format!(
                "{} PV_VCPU context=<{ctx} octets> extended=<{ext} octets>",
                end + 8
            ),
            format!(
                "{} SHARED_INFO page=<{PAGE_SIZE} octets>",
                end + 8 + ctx + ext
            ),
        ]
    );
    let hvm = items(
        &hvm_stream(Width::Bits64),
        legacy::ReaderOptions {
            qemu_trailer: true,
            ..Default::default()
        },
    );
    assert_eq!(
        hvm,
        [
            "0 HEADER p2m_size=32",
            "8 HVM_IDENT_PT pad=0 value=0xfeffd000",
            "24 PAGE_BATCH pfn_types=[0x1-0x2]",
            "8236 END ",
            "8240 hvm_magic_pfns ioreq_pfn=0x5 bufioreq_pfn=0x6 store_pfn=0x7",
            "8264 HVM_CONTEXT length=8 context=<8 octets>",
            "8276 QEMU_SIGNATURE signature=\"DeviceModelRecord0002\"",
            "8297 QEMU_RECORD data=\"4 octets, not held\"",
            "8301 QEMU_RECORD.data data=<4 octets>",
        ]
    );
}

#[test]
fn reader_items_show_xsave_state_and_lend_batch_pages() {
    // A 64-bit toolstack and guest with xsave state (xcnt), two vCPUs.
    let mut b = Builder::new(Width::Bits64);
    let xcnt = 0x40u32 + 16;
    b.ulong(P2M_SIZE)
        .pv_ext_info(&[
            vcpu_block(legacy::VCPU_CONTEXT_SIZE_X86_64),
            (b"xcnt", xcnt.to_le_bytes().to_vec()),
        ])
        .ulong(0x1234)
        .vcpu_info(1, &[0b11])
        .batch(&[5, 0xF000_0006])
        .i32(0)
        .u32(0);
    for v in 0..2u8 {
        b.fill(0x11 + v, legacy::VCPU_CONTEXT_SIZE_X86_64 as usize)
            .u64(7)
            .u64(0x40)
            .fill(0x55, 0x40);
    }
    b.fill(0x33, PAGE_SIZE);
    let seen = items(&b.bytes, legacy::ReaderOptions::default());
    let names: Vec<&str> = seen.iter().filter_map(|s| s.split(' ').nth(1)).collect();
    assert_eq!(
        names,
        [
            "HEADER",
            "PV_EXT_INFO",
            "ext_info_block",
            "ext_info_block",
            "xcnt_data",
            "P2M_FRAME_LIST",
            "VCPU_INFO",
            "PAGE_BATCH",
            "END",
            "PV_UNMAPPED",
            "PV_VCPU",
            "PV_XSAVE",
            "PV_VCPU",
            "PV_XSAVE",
            "SHARED_INFO",
        ]
    );
    let ctx = legacy::VCPU_CONTEXT_SIZE_X86_64;
    assert!(seen.contains(&format!(
        "{} xcnt_data xsave_size={xcnt}",
        8 + 8 + 4 + 8 + ctx + 8
    )));
    assert!(seen
        .iter()
        .any(|s| s.ends_with("PV_XSAVE mask=0x7 size=64 area=<64 octets>")));
    assert!(seen.iter().any(|s| s.ends_with(&format!(
        "PV_VCPU context=<{ctx} octets> extended=<0 octets>"
    ))));

    // The page of a batch comes with its entry, as a v2 page entry.
    let mut reader = legacy::LegacyReader::new(&b.bytes[..], legacy::ReaderOptions::default());
    let mut pages = Vec::new();
    while let Some(item) = reader.next_item().expect("read") {
        for (entry, page) in item.pages() {
            pages.push((entry.pfn(), entry.page_type(), page.len(), page[0]));
        }
    }
    assert_eq!(pages, [(5, libxc::PageType::NOTAB, PAGE_SIZE, 1)]);
}

#[test]
fn hvm_streams_starting_with_verify_mode_are_not_mistaken_for_pv() {
    for width in [Width::Bits32, Width::Bits64] {
        for prefix in [&[-1][..], &[-1, -1][..], &[-1, -9][..]] {
            let mut b = Builder::new(width);
            b.ulong(P2M_SIZE);
            for &id in prefix {
                b.i32(id);
            }
            b.batch(&[1])
                .i32(0)
                .u64(0)
                .u64(0)
                .u64(0)
                .u32(8)
                .fill(0x44, 8);
            b.raw(b"DeviceModelRecord0002").u32(0);
            let (given, _) =
                run(&b.bytes, &opts(width, GuestType::Hvm, OutputFormat::Libxl)).expect("given");
            let (detected, summary) = run(
                &b.bytes,
                &ConvertOptions {
                    format: OutputFormat::Libxl,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{width} {prefix:?}: {e}"));
            assert_eq!(
                (summary.width, summary.guest_type),
                (width, GuestType::Hvm),
                "{prefix:?}"
            );
            assert!(summary.verify_mode);
            assert_eq!(given, detected);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mapped files.

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("xenmig-convert-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write temporary file");
        TempFile(path)
    }

    fn open_at(&self, offset: u64) -> std::fs::File {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.0).expect("open temporary file");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn mapped_files_convert_vectors_byte_exact_from_their_position() {
    use std::io::Seek;
    for case in convert_cases() {
        // Something before the stream, as when a caller has read an xl header already.
        let mut bytes = vec![0xA5; 100];
        bytes.extend_from_slice(&case.input);
        let file = TempFile::new(&case.name, &bytes);
        for source in Source::BOTH {
            let f = file.open_at(100);
            let mut shared = f.try_clone().expect("clone");
            let mut out = Vec::new();
            let summary = source
                .convert(f, &mut out, &case.opts)
                .unwrap_or_else(|e| panic!("{} ({source:?}): {e}", case.name));
            assert!(
                out == case.expected,
                "{} ({source:?}): output differs",
                case.name
            );
            assert_eq!(summary.output_bytes, out.len() as u64);
            // The descriptor is left after what was consumed.
            assert_eq!(
                shared.stream_position().expect("position"),
                100 + summary.input_bytes,
                "{} ({source:?})",
                case.name
            );
        }
    }
}

/// The two ways a file is read: in windows whose page data is gathered into the output
/// ([`convert_file_to`]), or with page data lent from a sliding map.
#[derive(Debug, Clone, Copy)]
enum Source {
    Buffered,
    Mapped,
}

impl Source {
    const BOTH: [Source; 2] = [Source::Buffered, Source::Mapped];

    fn convert<W: std::io::Write>(
        self,
        f: std::fs::File,
        out: W,
        opts: &ConvertOptions,
    ) -> Result<ConvertSummary, ConvertError> {
        match self {
            Source::Buffered => convert_file_to(f, out, opts),
            Source::Mapped => {
                let m = MappedFile::new(f).expect("mapped file");
                convert_source_to(m, out, opts)
            }
        }
    }
}

#[test]
fn mapped_files_report_truncation_like_streams() {
    for case in convert_cases() {
        let len = case.input.len();
        for cut in [0, 9, len / 3, len / 2, len - 4097, len - 1] {
            let file = TempFile::new(&format!("{}-{cut}", case.name), &case.input[..cut]);
            let streamed = run_err(&case.input[..cut], &case.opts);
            for source in Source::BOTH {
                let got = source
                    .convert(file.open_at(0), Vec::new(), &case.opts)
                    .expect_err("truncated input");
                assert_eq!(
                    got.to_string(),
                    streamed.to_string(),
                    "{} ({source:?}) cut at {cut:#x}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn mapped_windows_slide_over_large_inputs() {
    // Nine full batches (36 MiB of pages) cross three windows; a batch straddles each window
    // boundary.
    let width = Width::Bits64;
    let mut b = Builder::new(width);
    b.ulong(9 * 1024);
    for batch in 0..9u64 {
        b.i32(1024);
        for i in 0..1024 {
            b.ulong(batch * 1024 + i);
        }
        for i in 0..1024u64 {
            b.u64(batch * 1024 + i).fill((i % 251) as u8, PAGE_SIZE - 8);
        }
    }
    b.hvm_tail();
    let o = opts(width, GuestType::Hvm, OutputFormat::Libxl);
    let (streamed, summary) = run(&b.bytes, &o).expect("streamed");
    assert_eq!(summary.page_data_records, 9);
    let file = TempFile::new("windows", &b.bytes);
    let mut mapped = Vec::new();
    let summary = Source::Mapped
        .convert(file.open_at(0), &mut mapped, &o)
        .expect("mapped");
    assert_eq!(summary.pages, 9 * 1024);
    assert!(mapped == streamed, "mapped and streamed outputs differ");
    let mut buffered = Vec::new();
    Source::Buffered
        .convert(file.open_at(0), &mut buffered, &o)
        .expect("buffered");
    assert!(buffered == streamed, "buffered and streamed outputs differ");
    assert!(b.bytes.len() > 2 * mapped::WINDOW);
}

/// An HVM stream of small batches of odd sizes over three of [`FileSource`]'s windows: the
/// stream, its batches and its pages.
fn small_batches() -> (Vec<u8>, u64, u64) {
    let mut b = Builder::new(Width::Bits64);
    let mut pfn = 0u64;
    let mut batches = 0;
    b.ulong(1 << 20);
    while b.bytes.len() < 3 * file_source::WINDOW {
        let n = 1 + batches % 13;
        b.i32(n as i32);
        for i in 0..n {
            b.ulong(pfn + i);
        }
        for i in 0..n {
            b.u64(pfn + i).fill(((pfn + i) % 251) as u8, PAGE_SIZE - 8);
        }
        pfn += n;
        batches += 1;
    }
    b.hvm_tail();
    (b.bytes, batches, pfn)
}

#[test]
fn gathered_page_data_outlives_the_window_it_was_read_into() {
    // The writer still refers to the last batches of a window when the source reads on into
    // the next, and records straddle every window's end.
    let (stream, batches, pages) = small_batches();
    let o = opts(Width::Bits64, GuestType::Hvm, OutputFormat::Libxl);
    let (streamed, summary) = run(&stream, &o).expect("streamed");
    assert_eq!(summary.page_data_records, batches);
    let file = TempFile::new("gathered", &stream);
    let mut buffered = Vec::new();
    let summary = Source::Buffered
        .convert(file.open_at(0), &mut buffered, &o)
        .expect("buffered");
    assert_eq!(summary.pages, pages);
    assert!(buffered == streamed, "gathered and streamed outputs differ");
}

/// Takes `left` octets, then fails as a full disk does.
struct FullAfter {
    left: usize,
}

impl std::io::Write for FullAfter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_output_fails_gathered_conversion_as_a_write_error() {
    let (stream, _, _) = small_batches();
    let o = opts(Width::Bits64, GuestType::Hvm, OutputFormat::Libxl);
    let total = run(&stream, &o).expect("streamed").0.len();
    let file = TempFile::new("full", &stream);
    for left in [0, 100, 40_000, 1 << 20, (2 << 20) + 5, total - 1] {
        let err = convert_file_to(file.open_at(0), FullAfter { left }, &o)
            .expect_err("the output fills up");
        assert!(matches!(err, ConvertError::Write { .. }), "{left}: {err}");
        assert_eq!(err.exit_code(), 1, "{left}");
        assert!(err.to_string().contains("disk full"), "{left}: {err}");
    }
    convert_file_to(file.open_at(0), FullAfter { left: total }, &o).expect("room enough");
}
