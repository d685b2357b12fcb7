//! The generated codecs against every stream in the shared vectors: a minimal framing loop
//! walks the records, each body is decoded by the generated code and encoded again, and the
//! bytes must be identical. Malformed `bad-*` cases that break a per-record or header rule must
//! be rejected by the generated decoder, naming the rule.

use std::path::Path;
use xenmig::wire::{DecodeCtx, DecodeError, Endian, Strictness};
use xenmig::{libxc, libxl, xl};
use xenmig_tests::{manifest, read_vector, vectors_dir};

/// What the walk saw.
#[derive(Debug, Default)]
struct Walk {
    libxc_records: usize,
    libxl_records: usize,
    page_data_records: usize,
    pfn_entries: usize,
    data_pages: usize,
    checkpoints: usize,
    trailing: usize,
    end: bool,
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    walk: Walk,
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Walker<'a> {
    /// One framed record: (type, body); advances past the padding.
    fn frame(&mut self) -> Result<(u32, &'a [u8]), String> {
        let t = u32_le(self.bytes, self.pos).ok_or("truncated record header")?;
        let len = u32_le(self.bytes, self.pos + 4).ok_or("truncated record header")? as usize;
        let start = self.pos + 8;
        let body = self
            .bytes
            .get(start..start + len)
            .ok_or_else(|| format!("record type {t:#x} at {:#x}: body truncated", self.pos))?;
        let padded = len.div_ceil(8) * 8;
        let pad = self
            .bytes
            .get(start + len..start + padded)
            .ok_or("truncated padding")?;
        assert!(
            pad.iter().all(|b| *b == 0),
            "non-zero padding at {:#x}",
            start + len
        );
        self.pos = start + padded;
        Ok((t, body))
    }

    /// Decodes and re-encodes one header struct.
    fn roundtrip<T, D, E>(&self, bytes: &[u8], decode: D, encode: E) -> Result<T, DecodeError>
    where
        D: Fn(&[u8]) -> Result<T, DecodeError>,
        E: Fn(&T) -> Vec<u8>,
    {
        let v = decode(bytes)?;
        assert_eq!(encode(&v), bytes, "header re-encodes differently");
        Ok(v)
    }

    /// The libxc image headers; returns the decode context for the records.
    fn libxc_headers(&mut self) -> Result<DecodeCtx, String> {
        let ctx0 = DecodeCtx::new(3);
        let ih = self
            .bytes
            .get(self.pos..self.pos + libxc::ImageHeader::SIZE)
            .ok_or("truncated image header")?;
        let ihdr = self
            .roundtrip(
                ih,
                |b| libxc::ImageHeader::decode(b, &ctx0),
                |h| h.encode(Endian::Big).unwrap(),
            )
            .map_err(|e| e.to_string())?;
        self.pos += libxc::ImageHeader::SIZE;
        let ctx = DecodeCtx::new(ihdr.version);
        let dh = self
            .bytes
            .get(self.pos..self.pos + libxc::DomainHeader::SIZE)
            .ok_or("truncated domain header")?;
        self.roundtrip(
            dh,
            |b| libxc::DomainHeader::decode(b, &ctx),
            |h| h.encode(Endian::Little).unwrap(),
        )
        .map_err(|e| e.to_string())?;
        self.pos += libxc::DomainHeader::SIZE;
        Ok(ctx)
    }

    /// libxc records up to END (true) or CHECKPOINT (false). A checkpointed stream may stop
    /// at a record boundary (the primary died): that also returns false.
    fn libxc_records(&mut self, ctx: &mut DecodeCtx, checkpointed: bool) -> Result<bool, String> {
        loop {
            if self.pos >= self.bytes.len() {
                if checkpointed {
                    return Ok(false);
                }
                return Err("stream ends inside the libxc image".into());
            }
            let at = self.pos;
            let (t, body) = self.frame()?;
            self.walk.libxc_records += 1;
            let rec = libxc::Record::decode(t, body, ctx)
                .map_err(|e| format!("libxc record {t:#x} at {at:#x}: {e}"))?;
            if let libxc::Record::Unknown { record_type, .. } = rec {
                if record_type & 0x8000_0000 == 0 {
                    return Err(format!(
                        "unknown mandatory record type {record_type:#x} at {at:#x}"
                    ));
                }
            }
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            rec.encode_to(Endian::Little, &mut out, &mut scratch)
                .map_err(|e| e.to_string())?;
            assert_eq!(
                out, body,
                "libxc record {t:#x} at {at:#x} re-encodes differently"
            );
            assert_eq!(rec.encoded_len(), body.len());
            match rec {
                libxc::Record::X86PvInfo(i) => ctx.guest_width = Some(i.guest_width as u64),
                libxc::Record::PageData(p) => {
                    self.walk.page_data_records += 1;
                    self.walk.pfn_entries += p.entries.len();
                    self.walk.data_pages += p.pages.len() / 4096;
                }
                libxc::Record::End(_) => return Ok(true),
                libxc::Record::Checkpoint(_) => return Ok(false),
                _ => {}
            }
        }
    }

    /// libxl records until END or the end of the input.
    fn libxl(&mut self) -> Result<(), String> {
        let ctx0 = DecodeCtx::new(2);
        let h = self
            .bytes
            .get(self.pos..self.pos + libxl::LibxlHeader::SIZE)
            .ok_or("truncated libxl header")?;
        self.roundtrip(
            h,
            |b| libxl::LibxlHeader::decode(b, &ctx0),
            |h| h.encode(Endian::Big).unwrap(),
        )
        .map_err(|e| e.to_string())?;
        self.pos += libxl::LibxlHeader::SIZE;
        let mut libxc_ctx: Option<DecodeCtx> = None;
        let ctx = DecodeCtx::new(2);
        while self.pos < self.bytes.len() {
            let at = self.pos;
            let (t, body) = self.frame()?;
            self.walk.libxl_records += 1;
            let rec = libxl::Record::decode(t, body, &ctx)
                .map_err(|e| format!("libxl record {t:#x} at {at:#x}: {e}"))?;
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            rec.encode_to(Endian::Little, &mut out, &mut scratch)
                .map_err(|e| e.to_string())?;
            assert_eq!(
                out, body,
                "libxl record {t:#x} at {at:#x} re-encodes differently"
            );
            match rec {
                libxl::Record::End(_) => {
                    self.walk.end = true;
                    self.walk.trailing = self.bytes.len() - self.pos;
                    return Ok(());
                }
                libxl::Record::LibxcContext(_) | libxl::Record::CheckpointEnd(_) => {
                    if matches!(rec, libxl::Record::CheckpointEnd(_)) {
                        self.walk.checkpoints += 1;
                    }
                    let mut c = match libxc_ctx {
                        Some(c) => c,
                        None => self.libxc_headers()?,
                    };
                    if self.pos >= self.bytes.len() {
                        return Ok(()); // a checkpointed stream cut at a record boundary
                    }
                    let ended = self.libxc_records(&mut c, self.walk.checkpoints > 0)?;
                    libxc_ctx = (!ended).then_some(c);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn run(mut self, framing: &str) -> Result<Walk, String> {
        match framing {
            "libxc" => {
                let mut c = self.libxc_headers()?;
                while !self.libxc_records(&mut c, false)? {}
                self.walk.trailing = self.bytes.len() - self.pos;
            }
            "libxl" => self.libxl()?,
            "xl" => {
                let ctx = DecodeCtx::new(0);
                let h = self
                    .bytes
                    .get(..xl::XlHeader::SIZE)
                    .ok_or("truncated xl header")?;
                let hdr = self
                    .roundtrip(
                        h,
                        |b| xl::XlHeader::decode(b, &ctx),
                        |h| h.encode(Endian::HOST).unwrap(),
                    )
                    .map_err(|e| e.to_string())?;
                self.pos = xl::XlHeader::SIZE + hdr.optional_data_len as usize;
                // Only a JSON config is framed with its length; older files carry text.
                if hdr.mandatory_flags.contains(xl::XlMandatoryFlags::JSON) {
                    let od = self
                        .bytes
                        .get(xl::XlHeader::SIZE..self.pos)
                        .ok_or("truncated optional data")?;
                    xl::XlOptionalData::decode(od, &ctx).map_err(|e| e.to_string())?;
                }
                if hdr.mandatory_flags.contains(xl::XlMandatoryFlags::STREAMV2) {
                    self.libxl()?;
                } else {
                    let mut c = self.libxc_headers()?;
                    while !self.libxc_records(&mut c, false)? {}
                }
            }
            other => return Err(format!("unknown framing {other}")),
        }
        Ok(self.walk)
    }
}

fn walk(bytes: &[u8], framing: &str) -> Result<Walk, String> {
    Walker {
        bytes,
        pos: 0,
        walk: Walk::default(),
    }
    .run(framing)
}

fn framing_of_flags(flags: &str) -> &'static str {
    let libxl = flags.contains("-f libxl");
    match (flags.contains("-x"), libxl) {
        (true, _) => "xl",
        (false, true) => "libxl",
        (false, false) => "libxc",
    }
}

#[test]
fn valid_streams_and_converter_outputs_round_trip() {
    let dir = vectors_dir();
    let mut checked = 0;
    for row in manifest(&dir.join("manifest.tsv")) {
        match row[0].as_str() {
            "verify" if row[4] == "pass" => {
                let bytes = read_vector(&dir.join(&row[2]));
                walk(&bytes, &row[3]).unwrap_or_else(|e| panic!("{}: {e}", row[1]));
                checked += 1;
            }
            "convert" => {
                let bytes = read_vector(&dir.join(&row[4]));
                let framing = framing_of_flags(&row[3]);
                let w = walk(&bytes, framing).unwrap_or_else(|e| panic!("{}: {e}", row[1]));
                assert!(w.libxc_records > 0);
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(
        checked, 28,
        "every valid stream and converter output was walked"
    );
}

#[test]
fn real_xen_images_round_trip_with_manifest_counts() {
    let dir = vectors_dir().join("real");
    let rows = manifest(&dir.join("manifest.tsv"));
    assert_eq!(rows.len(), 3);
    for row in rows {
        let bytes = read_vector(&dir.join(&row[1]));
        let w = walk(&bytes, &row[2]).unwrap_or_else(|e| panic!("{}: {e}", row[0]));
        let n = |i: usize| row[i].parse::<usize>().unwrap();
        assert_eq!(w.libxc_records, n(4), "{} libxc records", row[0]);
        assert_eq!(w.libxl_records, n(5), "{} libxl records", row[0]);
        assert_eq!(w.page_data_records, n(6), "{} PAGE_DATA records", row[0]);
        assert_eq!(w.pfn_entries, n(7), "{} pfn entries", row[0]);
        assert_eq!(w.data_pages, n(8), "{} data pages", row[0]);
        assert_eq!(w.checkpoints, n(9), "{} checkpoints", row[0]);
        assert_eq!(w.trailing, n(10), "{} trailing bytes", row[0]);
        assert_eq!(w.end as usize, n(11), "{} end", row[0]);
    }
}

/// The rule each malformed case must be rejected with, when it is a per-record or header rule.
const BAD_RULES: &[(&str, &str)] = &[
    ("bad-bad-marker-pv-s129", "marker.value"),
    ("bad-bad-ident-hvm-s130", "id.value"),
    ("bad-version-1-pv-s131", "version.one_of"),
    ("bad-version-4-hvm-s132", "version.one_of"),
    ("bad-options-reserved-bit-pv-s133", "options.reserved_bits"),
    ("bad-big-endian-option-hvm-s134", "little_endian_only"),
    ("bad-ihdr-reserved-nonzero-pv-s135", ".reserved"),
    ("bad-dhdr-unknown-type-hvm-s136", "type.known"),
    ("bad-dhdr-page-shift-13-pv-s137", "page_shift.value"),
    ("bad-dhdr-reserved-nonzero-hvm-s138", ".reserved"),
    ("bad-page-data-count-too-big-hvm-s142", "entries.length"),
    (
        "bad-page-data-reserved-type-pv-s143",
        "page_entry.page_type.known",
    ),
    (
        "bad-page-data-reserved-bits-hvm-s144",
        "page_entry.reserved.reserved",
    ),
    ("bad-tsc-reserved-nonzero-pv-s145", "reserved.reserved"),
    ("bad-end-with-body-hvm-s146", "empty"),
    ("bad-tsc-wrong-length-pv-s147", "length"),
];

#[test]
fn malformed_cases_are_rejected_by_the_generated_decoder() {
    let dir = vectors_dir();
    for row in manifest(&dir.join("manifest.tsv")) {
        if row[0] != "verify" || row[4] != "fail" {
            continue;
        }
        let bytes = read_vector(&dir.join(&row[2]));
        let result = walk(&bytes, &row[3]);
        let err = match result {
            Ok(_) => panic!("{}: accepted", row[1]),
            Err(e) => e,
        };
        if let Some((_, rule)) = BAD_RULES.iter().find(|(n, _)| *n == row[1]) {
            assert!(
                err.contains(&format!("rule `{}", rule.trim_start_matches('.')))
                    || err.contains(rule),
                "{}: expected rule {rule}, got: {err}",
                row[1]
            );
        } else {
            // Truncation and an unknown mandatory type are framing and verifier matters.
            assert!(
                row[1].contains("truncated") || row[1].contains("unknown-mandatory"),
                "{}: no expected rule listed ({err})",
                row[1]
            );
        }
    }
}

#[test]
fn decoding_is_lenient_when_asked() {
    // A non-zero reserved field is a strict-only rule.
    let body = [
        8u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    ];
    let strict = DecodeCtx::new(3);
    let lenient = strict.with_strictness(Strictness::Lenient);
    let e = libxc::X86TscInfo::decode(&body, &strict).unwrap_err();
    assert_eq!(e.rule, "reserved.reserved");
    assert!(libxc::X86TscInfo::decode(&body, &lenient).is_ok());
    let _ = Path::new("");
}
