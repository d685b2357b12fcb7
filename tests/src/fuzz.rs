//! The bodies of the fuzz targets in `fuzz/`: each takes the fuzzer's octets and drives one
//! part of the library the way the `xenmig` command does. They live here, in a workspace
//! member built on stable Rust, so that `tests/tests/fuzz_regressions.rs` replays the
//! regression corpus (`fuzz/regressions/TARGET/*`) through exactly the code the fuzzer ran.
//!
//! A body panics only when the library misbehaves: a panic inside the library, a reader that
//! stops making progress, or a broken property (noted at each body). Errors the library
//! reports for bad input are the expected outcome and are ignored.
//!
//! Most bodies read their options from the first octet of the input (`sel`), so one corpus
//! covers every mode; the rest of the input is the stream.

use std::io::{self, Read};
use xenmig::convert::legacy::{GuestType as LegacyGuest, Width};
use xenmig::convert::{convert_to, ConvertOptions, OutputFormat};
use xenmig::dm::{Guest, SimDeviceModel, SimGuest, SimGuestExt};
use xenmig::domain::{BResult, CheckpointAnswer, Domain, MemoryLimits, RestoreCallbacks};
use xenmig::libxl_stream::{restore_stream, Destination};
use xenmig::reader::{Framing, Item, Reader, ReaderOptions};
use xenmig::restore::{RestoreError, RestoreOptions};
use xenmig::save::StreamType;
use xenmig::savehelper::{
    run_restore, CbFlags, HelperDomain, Pipe, RestoreArgs, SimBackend, SimSpec,
};
use xenmig::sim::{SimDomain, MAX_VCPUS};
use xenmig::source::{ReadSource, SliceSource, Source};
use xenmig::verify::{verify_reader, VerifyOptions};
use xenmig::wire::{DecodeCtx, Endian, Strictness};
use xenmig::xlfile::SimDomainConfig;
use xenmig::{libxc, libxl, xl, StreamError};

/// A fuzz target: its name (the file `fuzz/fuzz_targets/NAME.rs`) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every fuzz target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "decode_libxc",
        run: decode_libxc,
    },
    Target {
        name: "decode_libxl",
        run: decode_libxl,
    },
    Target {
        name: "decode_xl",
        run: decode_xl,
    },
    Target {
        name: "reader",
        run: reader,
    },
    Target {
        name: "verify",
        run: verify,
    },
    Target {
        name: "convert_legacy",
        run: convert_legacy,
    },
    Target {
        name: "restore_sim",
        run: restore_sim,
    },
    Target {
        name: "save_helper_restore",
        run: save_helper_restore,
    },
];

/// The body of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|t| t.name == name).map(|t| t.run)
}

/// The first octet (the options) and the rest (the stream).
fn split_sel(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, &[]),
    }
}

fn strictness(lenient: bool) -> Strictness {
    if lenient {
        Strictness::Lenient
    } else {
        Strictness::Strict
    }
}

/// A decoding context from one octet: byte order (bit 0), strictness (bit 1), version
/// (bits 2-3: 2, 3, 1 or 4) and guest width (bits 4-5: unknown, 4, 8, or bits 6-7).
fn decode_ctx(b: u8) -> DecodeCtx {
    DecodeCtx {
        endian: if b & 1 == 0 {
            Endian::Little
        } else {
            Endian::Big
        },
        strictness: strictness(b & 2 != 0),
        version: [2, 3, 1, 4][usize::from((b >> 2) & 3)],
        guest_width: match (b >> 4) & 3 {
            0 => None,
            1 => Some(4),
            2 => Some(8),
            _ => Some(u64::from(b >> 6)),
        },
        deferred: 0,
    }
}

/// A record type from one octet: 0-127 as is, 128-255 as the optional types 0x80000000 + n.
fn record_type(b: u8) -> u32 {
    if b & 0x80 == 0 {
        u32::from(b)
    } else {
        0x8000_0000 | u32::from(b & 0x7f)
    }
}

/// What a successful decode encodes to is the input, or a prefix of it (a lenient decode
/// may ignore trailing octets; a spec may ignore them in every mode), and `encoded_len` is
/// its length.
fn check_roundtrip(what: &str, input: &[u8], encoded: Result<Vec<u8>, String>, len: usize) {
    let out = encoded.unwrap_or_else(|e| panic!("{what}: a decoded value does not encode: {e}"));
    assert_eq!(out.len(), len, "{what}: encoded_len disagrees with encode");
    assert!(
        input.starts_with(&out),
        "{what}: decode then encode changed the octets\n input {input:02x?}\noutput {out:02x?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The generated decoders

/// libxc records and headers: octet 0 the context (`decode_ctx`), octet 1 the record type
/// (`record_type`), the rest the body. Property: what decodes encodes back to the body (or
/// a prefix of it).
pub fn decode_libxc(data: &[u8]) {
    let (sel, rest) = split_sel(data);
    let (ty, body) = split_sel(rest);
    let ctx = decode_ctx(sel);
    let ty = record_type(ty);
    if let Ok(rec) = libxc::Record::decode(ty, body, &ctx) {
        assert_eq!(u32::from(rec.record_type()), ty, "decoded as another type");
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let enc = rec
            .encode_to(ctx.endian, &mut out, &mut scratch)
            .map(|()| out)
            .map_err(|e| e.to_string());
        check_roundtrip(&rec.record_type().to_string(), body, enc, rec.encoded_len());
        // What dump and verify do with a decoded PAGE_DATA: walk its entries and pages.
        if let libxc::Record::PageData(p) = &rec {
            let mut pages = p.pages.chunks(4096);
            for e in p.entries.iter().filter(|e| e.page_type().has_data()) {
                let _ = (e.pfn(), pages.next());
            }
        }
    }
    if let Ok(h) = libxc::ImageHeader::decode(body, &ctx) {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let enc = h
            .encode_to(ctx.endian, &mut out, &mut scratch)
            .map(|()| out)
            .map_err(|e| e.to_string());
        check_roundtrip("image header", body, enc, h.encoded_len());
    }
    if let Ok(h) = libxc::DomainHeader::decode(body, &ctx) {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let enc = h
            .encode_to(ctx.endian, &mut out, &mut scratch)
            .map(|()| out)
            .map_err(|e| e.to_string());
        check_roundtrip("domain header", body, enc, h.encoded_len());
    }
}

/// libxl records and the libxl header, laid out as for [`decode_libxc`].
pub fn decode_libxl(data: &[u8]) {
    let (sel, rest) = split_sel(data);
    let (ty, body) = split_sel(rest);
    let ctx = decode_ctx(sel);
    let ty = record_type(ty);
    if let Ok(rec) = libxl::Record::decode(ty, body, &ctx) {
        assert_eq!(u32::from(rec.record_type()), ty, "decoded as another type");
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let enc = rec
            .encode_to(ctx.endian, &mut out, &mut scratch)
            .map(|()| out)
            .map_err(|e| e.to_string());
        check_roundtrip(&rec.record_type().to_string(), body, enc, rec.encoded_len());
    }
    if let Ok(h) = libxl::LibxlHeader::decode(body, &ctx) {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let enc = h
            .encode_to(ctx.endian, &mut out, &mut scratch)
            .map(|()| out)
            .map_err(|e| e.to_string());
        check_roundtrip("libxl header", body, enc, h.encoded_len());
    }
}

/// The xl save-file header and its optional data: octet 0 the context, the rest an xl file's
/// start. The header is decoded from the front; the optional data both from the octets the
/// header announces (as `verify` and restore read it) and from the whole rest.
pub fn decode_xl(data: &[u8]) {
    let (sel, rest) = split_sel(data);
    let ctx = decode_ctx(sel);
    let optional = |bytes: &[u8]| {
        if let Ok(d) = xl::XlOptionalData::decode(bytes, &ctx) {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            let enc = d
                .encode_to(ctx.endian, &mut out, &mut scratch)
                .map(|()| out)
                .map_err(|e| e.to_string());
            check_roundtrip("xl optional data", bytes, enc, d.encoded_len());
            // The config, as `sim restore` reads it.
            let _ = SimDomainConfig::from_json(d.config);
        }
    };
    if let Some(head) = rest.get(..xl::XlHeader::SIZE) {
        if let Ok(h) = xl::XlHeader::decode(head, &ctx) {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            let enc = h
                .encode_to(ctx.endian, &mut out, &mut scratch)
                .map(|()| out)
                .map_err(|e| e.to_string());
            check_roundtrip("xl header", head, enc, h.encoded_len());
            let after = &rest[xl::XlHeader::SIZE..];
            let n = (h.optional_data_len as usize).min(after.len());
            optional(&after[..n]);
        }
    }
    let _ = xl::XlHeader::decode(rest, &ctx);
    optional(rest);
}

// ---------------------------------------------------------------------------------------------
// The stream reader and the verifier

/// The framing of bits 0-1 of `sel`: detected, libxc, libxl, xl.
fn framing(sel: u8) -> Option<Framing> {
    [
        None,
        Some(Framing::Libxc),
        Some(Framing::Libxl),
        Some(Framing::Xl),
    ][usize::from(sel & 3)]
}

/// A `Read` that hands out at most `chunk` octets per call, as a pipe does.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads every item to the end or the first error, decoding each record as `dump` does.
/// Panics when the reader yields more items than the input could hold (it would not end).
fn read_all<S: Source>(mut r: Reader<S>, input_len: usize) -> Result<(), StreamError> {
    // Every item but the last consumes at least one octet (trailing data comes in chunks).
    let limit = input_len + 16;
    for _ in 0..limit {
        match r.next_item()? {
            Item::Record(rec) => {
                let _ = rec.type_name();
                if rec.layer == xenmig::Layer::Libxl {
                    let _ = rec.libxl();
                } else {
                    let _ = rec.libxc();
                }
            }
            Item::Trailing { data, .. } => {
                let _ = xenmig::verify::printable(data, 64);
            }
            Item::Eof { .. } => return Ok(()),
            _ => {}
        }
    }
    panic!("the reader yielded {limit} items from {input_len} octets without ending");
}

/// The stream reader: octet 0 chooses the framing (bits 0-1, `framing`), lenient reading
/// (bit 2), COLO mode (bit 3), the verifier's checks as read (bit 4, what `dump` and restore
/// install), and the source (bits 5-7: 0-3 the zero-copy slice source, 4-7 a `Read` source
/// fed 1, 7, 4096 or 65536 octets at a time).
pub fn reader(data: &[u8]) {
    let (sel, stream) = split_sel(data);
    let opts = ReaderOptions {
        framing: framing(sel),
        strictness: strictness(sel & 4 != 0),
    };
    let colo = sel & 8 != 0;
    let checked = sel & 16 != 0;
    let source = sel >> 5;
    if source < 4 {
        let mut r = Reader::new(SliceSource::new(stream), opts);
        r.set_colo(colo);
        if checked {
            xenmig::verify::check_as_read(&mut r);
        }
        let _ = read_all(r, stream.len());
    } else {
        let chunk = [1, 7, 4096, 65536][usize::from(source - 4)];
        let mut r = Reader::new(
            ReadSource::new(Trickle {
                data: stream,
                chunk,
            }),
            opts,
        );
        r.set_colo(colo);
        if checked {
            xenmig::verify::check_as_read(&mut r);
        }
        let _ = read_all(r, stream.len());
    }
}

/// The verifier, as `verify` runs it: octet 0 chooses the framing (bits 0-1) and COLO mode
/// (bit 2); the stream is verified strictly and leniently. Property: a stream valid under
/// `--strict` is valid under `--lenient` (strict only adds rules).
pub fn verify(data: &[u8]) {
    let (sel, stream) = split_sel(data);
    let colo = sel & 4 != 0;
    let run = |s: Strictness| {
        let mut r = Reader::from_slice(
            stream,
            ReaderOptions {
                framing: framing(sel),
                strictness: s,
            },
        );
        r.set_colo(colo);
        let opts = VerifyOptions {
            framing: framing(sel),
            strictness: s,
        };
        verify_reader(&mut r, opts, &mut |_| {})
    };
    let strict = run(Strictness::Strict);
    let lenient = run(Strictness::Lenient);
    if let (None, Some(e)) = (&strict.error, &lenient.error) {
        panic!("valid under --strict but refused under --lenient: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The legacy converter

/// The legacy converter, as `convert-legacy` runs it over a pipe: octet 0 chooses the width
/// (bits 0-1: detected, 32, 64, detected), the guest type (bits 2-3: detected, PV, HVM,
/// detected), the xl header (bits 4-5: detected, required, none, detected), the output
/// framing (bit 6: libxl) and `--skip-qemu` (bit 7). What converts is then verified as
/// `verify --lenient` would.
pub fn convert_legacy(data: &[u8]) {
    let (sel, stream) = split_sel(data);
    let opts = ConvertOptions {
        width: [None, Some(Width::Bits32), Some(Width::Bits64), None][usize::from(sel & 3)],
        guest_type: [None, Some(LegacyGuest::Pv), Some(LegacyGuest::Hvm), None]
            [usize::from((sel >> 2) & 3)],
        xl_header: [None, Some(true), Some(false), None][usize::from((sel >> 4) & 3)],
        format: if sel & 0x40 != 0 {
            OutputFormat::Libxl
        } else {
            OutputFormat::Libxc
        },
        skip_qemu: sel & 0x80 != 0,
    };
    let mut out = Vec::new();
    if convert_to(stream, &mut out, &opts).is_ok() {
        let _ = xenmig::verify_slice(
            &out,
            VerifyOptions {
                framing: None,
                strictness: Strictness::Lenient,
            },
            &mut |_| {},
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Restore into simulated domains

/// Pages a fuzzed destination may hold: 64 MiB of guest memory.
pub const FUZZ_MAX_PAGES: u64 = 16 * 1024;

/// A simulated domain of at most [`FUZZ_MAX_PAGES`] pages: the limits a real destination's
/// memory allowance gives (the simulator's own would allow 32 GiB).
#[derive(Debug, Clone)]
pub struct Small<D> {
    pub dom: D,
}

impl<D: Domain> Domain for Small<D> {
    xenmig::forward_domain!(
        dom:
        info, p2m_size, pfn_to_gfn, page_types, read_pages, write_pages, populate,
        set_page_types, vcpu_state, set_vcpu_state, online_vcpus, hvm_context,
        set_hvm_context, hvm_param, set_hvm_param, tsc_info, set_tsc_info, shared_info,
        set_shared_info, cpu_policy, set_cpu_policy, enable_logdirty, disable_logdirty,
        clean_dirty, peek_dirty, pv_p2m, mfn_to_pfn, set_address_size, expand_p2m,
        write_p2m, pin_page_tables, p2m_generation, now, reads_whole_batches
    );

    fn memory_limits(&mut self) -> BResult<MemoryLimits> {
        let info = self.dom.info()?;
        Ok(MemoryLimits::for_pages(info.max_pfn, FUZZ_MAX_PAGES))
    }
}

impl<D: HelperDomain> HelperDomain for Small<D> {
    fn toolstack_suspended(&mut self) {
        self.dom.toolstack_suspended();
    }
    fn toolstack_resumed(&mut self) {
        self.dom.toolstack_resumed();
    }
    fn checkpoint_interval(&mut self) {
        self.dom.checkpoint_interval();
    }
}

/// A small simulated guest with (HVM in libxl or xl framing) or without a device model.
pub type SmallGuest = Guest<Small<SimDomain>, SimDeviceModel>;

/// `sim restore`'s callbacks: every checkpoint succeeds.
struct AcceptCheckpoints;

impl<D> RestoreCallbacks<D> for AcceptCheckpoints {
    fn checkpoint(&mut self, _dom: &mut D) -> CheckpointAnswer {
        CheckpointAnswer::Success
    }
}

/// The destination `sim restore` makes for a stream: its guest type, the vcpus of the xl
/// config when there is one (which must name the same guest type), a device model for HVM
/// guests in libxl and xl framing; then made small.
fn destination(d: &Destination<'_>) -> Result<SmallGuest, RestoreError> {
    let mut vcpus = MAX_VCPUS;
    if let Some(c) = d.config {
        let bad = |detail: String| {
            RestoreError::Stream(
                StreamError::invalid(48, "xl.config", detail).with_item("xl config"),
            )
        };
        let cfg = SimDomainConfig::from_json(c).map_err(bad)?;
        if cfg.guest != d.guest {
            return Err(bad("the config describes another guest type".into()));
        }
        vcpus = cfg.vcpus.clamp(1, MAX_VCPUS);
    }
    let g = SimGuest::for_destination(d, vcpus, 2);
    Ok(Guest::new(Small { dom: g.dom }, g.dm))
}

/// Restore into a simulated domain, as `sim restore` runs it (framing detected): octet 0
/// chooses lenient reading (bit 0) and the stream type (bits 1-2: plain, Remus, COLO with a
/// back channel, Remus).
pub fn restore_sim(data: &[u8]) {
    let (sel, stream) = split_sel(data);
    let opts = ReaderOptions {
        framing: None,
        strictness: strictness(sel & 1 != 0),
    };
    let stream_type = [
        StreamType::Plain,
        StreamType::Remus,
        StreamType::Colo,
        StreamType::Remus,
    ][usize::from((sel >> 1) & 3)];
    let ropts = RestoreOptions {
        stream_type,
        store_evtchn: 1,
        console_evtchn: 2,
    };
    let mut back = io::sink();
    let back_channel = (stream_type == StreamType::Colo).then_some(&mut back as &mut dyn io::Write);
    let mut r = Reader::from_slice(stream, opts);
    if let Ok((g, _)) = restore_stream(
        destination,
        &mut AcceptCheckpoints,
        &mut r,
        ropts,
        back_channel,
    ) {
        let _ = g.dom.dom.state_digest();
    }
}

/// libxl's restore callbacks when it restores a plain stream (cbflags 768) and a Remus one
/// (800), as captured from Xen 4.17 (`tests/vectors/save-helper`).
const CBFLAGS_PLAIN: u32 = 768;
const CBFLAGS_REMUS: u32 = 800;

/// The save helper's restore side over a small simulated domain: octet 0 chooses the guest
/// (bit 0: HVM), the stream type (bits 1-2: plain, Remus, COLO, Remus) and, with bit 3, no
/// callbacks at all (the helper then aborts as the C helper asserts); octets 1-2 (little
/// endian) are the length of what libxl replies on the pipe, which follows; the rest is the
/// io_fd's libxc stream.
pub fn save_helper_restore(data: &[u8]) {
    let (sel, rest) = split_sel(data);
    let (pipe_len, rest) = match rest {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, rest),
    };
    let (replies, stream) = rest.split_at(pipe_len.min(rest.len()));
    let stream_type = [
        StreamType::Plain,
        StreamType::Remus,
        StreamType::Colo,
        StreamType::Remus,
    ][usize::from((sel >> 1) & 3)];
    let cbflags = if sel & 8 != 0 {
        0
    } else if stream_type == StreamType::Plain {
        CBFLAGS_PLAIN
    } else {
        CBFLAGS_REMUS
    };
    let args = RestoreArgs {
        io_fd: 12,
        send_back_fd: -1,
        domid: 2,
        store_evtchn: 1,
        store_domid: 0,
        console_evtchn: 2,
        console_domid: 0,
        cbflags: CbFlags(cbflags),
        stream_type,
    };
    let spec = SimSpec {
        guest: if sel & 1 != 0 {
            xenmig::domain::GuestType::X86Hvm
        } else {
            xenmig::domain::GuestType::X86Pv
        },
        ..SimSpec::default()
    };
    let mut dom = Small {
        dom: SimBackend::for_restore(&spec),
    };
    let mut pipe = Pipe::new(replies, io::sink());
    let _ = run_restore(&mut dom, &args, &mut pipe, stream);
}

// ---------------------------------------------------------------------------------------------
// Seeds

/// The octet `decode_ctx` turns into `ctx`, when there is one (versions 1 to 4, guest width
/// unknown, 4 or 8).
pub fn ctx_selector(ctx: &DecodeCtx) -> Option<u8> {
    let endian = u8::from(ctx.endian == Endian::Big);
    let lenient = u8::from(ctx.strictness == Strictness::Lenient) << 1;
    let version = match ctx.version {
        2 => 0,
        3 => 1,
        1 => 2,
        4 => 3,
        _ => return None,
    } << 2;
    let width = match ctx.guest_width {
        None => 0,
        Some(4) => 1,
        Some(8) => 2,
        Some(_) => return None,
    } << 4;
    Some(endian | lenient | version | width)
}

/// The octet `record_type` turns into `ty`, when there is one.
pub fn record_type_selector(ty: u32) -> Option<u8> {
    match ty {
        0..=0x7f => Some(ty as u8),
        0x8000_0000..=0x8000_007f => Some(0x80 | (ty & 0x7f) as u8),
        _ => None,
    }
}
