//! Properties of the generated codecs on arbitrary input:
//!
//! * decoding never panics, whatever the record type, the bytes and the context (both
//!   strictness levels, guest width unknown, 4, 8 or nonsense, versions 2 and 3 and others,
//!   either byte order);
//! * whatever decodes encodes again, to exactly the input; the only octets a successful
//!   decode may drop are trailing ones that a strict decode refuses (`trailing: strict`
//!   records in lenient mode) or that the spec says to ignore (`trailing: allow`);
//! * decoding a PAGE_DATA body and walking its entries and pages allocates nothing.
//!
//! Inputs are built from pieces (small and boundary integers, page entries with real and
//! unassigned types, whole zero pages, NUL-terminated strings, random octets) so that a good
//! share of them decode; the test checks that share is not negligible.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use xenmig::wire::{Array, DecodeCtx, DecodeError, EncodeError, Endian, Strictness};
use xenmig::{libxc, libxl, xl};

// ---------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------

/// Counts allocations made by the current thread while counting is switched on.
struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the number of allocations it made on this thread.
fn count_allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// Cases per property; each runs in well under a second in release mode.
const CASES: u32 = 2000;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

/// One piece of a generated body, written in the context's byte order.
#[derive(Debug, Clone)]
enum Piece {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Octets(Vec<u8>),
    /// Whole pages, zero or filled with one octet.
    Pages(usize, u8),
    /// NUL-terminated strings.
    CStr(Vec<u8>),
}

fn small_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..10,
        1 => Just(16u32),
        1 => Just(24u32),
        1 => Just(4096u32),
        1 => Just(5168u32),
        1 => Just(2800u32),
        1 => Just(u32::MAX),
        1 => Just(0x8000_0000u32),
        2 => any::<u32>(),
    ]
}

/// A PAGE_DATA-like entry: a small pfn, maybe reserved bits, a page type nibble.
fn page_entry_u64() -> impl Strategy<Value = u64> {
    (
        0u64..0x1_0000,
        0u64..16,
        prop::bool::weighted(0.1),
        any::<u8>(),
    )
        .prop_map(|(pfn, ty, reserved, r)| {
            let mut v = pfn | (ty << 60);
            if reserved {
                v |= u64::from(r) << 52;
            }
            v
        })
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        1 => any::<u8>().prop_map(Piece::U8),
        1 => prop_oneof![Just(0u16), Just(12u16), any::<u16>()].prop_map(Piece::U16),
        6 => small_u32().prop_map(Piece::U32),
        2 => prop_oneof![Just(0u64), 0u64..0x1000, any::<u64>()].prop_map(Piece::U64),
        3 => page_entry_u64().prop_map(Piece::U64),
        2 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Piece::Octets),
        1 => (0usize..3, prop_oneof![Just(0u8), any::<u8>()])
            .prop_map(|(n, b)| Piece::Pages(n, b)),
        1 => prop::collection::vec(
            prop::sample::select(vec![b'a', b'b', b'/', b'0', b' ', 0u8]),
            0..12
        )
        .prop_map(|mut v| {
            v.push(0);
            Piece::CStr(v)
        }),
    ]
}

fn body_from(pieces: &[Piece], endian: Endian) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match (p, endian) {
            (Piece::U8(v), _) => out.push(*v),
            (Piece::U16(v), Endian::Little) => out.extend_from_slice(&v.to_le_bytes()),
            (Piece::U16(v), Endian::Big) => out.extend_from_slice(&v.to_be_bytes()),
            (Piece::U32(v), Endian::Little) => out.extend_from_slice(&v.to_le_bytes()),
            (Piece::U32(v), Endian::Big) => out.extend_from_slice(&v.to_be_bytes()),
            (Piece::U64(v), Endian::Little) => out.extend_from_slice(&v.to_le_bytes()),
            (Piece::U64(v), Endian::Big) => out.extend_from_slice(&v.to_be_bytes()),
            (Piece::Octets(v) | Piece::CStr(v), _) => out.extend_from_slice(v),
            (Piece::Pages(n, b), _) => out.resize(out.len() + n * 4096, *b),
        }
    }
    out
}

/// A body: either pieces in the context's byte order, or plain random octets.
#[derive(Debug, Clone)]
enum Body {
    Pieces(Vec<Piece>),
    Raw(Vec<u8>),
}

impl Body {
    fn bytes(&self, endian: Endian) -> Vec<u8> {
        match self {
            Body::Pieces(p) => body_from(p, endian),
            Body::Raw(b) => b.clone(),
        }
    }
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => prop::collection::vec(piece(), 0..7).prop_map(Body::Pieces),
        1 => prop::collection::vec(any::<u8>(), 0..96).prop_map(Body::Raw),
    ]
}

fn ctx() -> impl Strategy<Value = DecodeCtx> {
    (
        prop_oneof![Just(Endian::Little), Just(Endian::Big)],
        prop_oneof![4 => Just(2u32), 4 => Just(3u32), 1 => any::<u32>()],
        prop_oneof![Just(Strictness::Strict), Just(Strictness::Lenient)],
        prop_oneof![
            3 => Just(None),
            3 => Just(Some(4u64)),
            3 => Just(Some(8u64)),
            1 => Just(Some(0u64)),
            1 => any::<u64>().prop_map(Some),
        ],
        // Page octets a reader may hold back: none, a few pages, or hostile sizes.
        prop_oneof![
            6 => Just(0usize),
            2 => 0usize..(1 << 16),
            1 => any::<usize>(),
        ],
    )
        .prop_map(
            |(endian, version, strictness, guest_width, deferred)| DecodeCtx {
                endian,
                version,
                strictness,
                guest_width,
                deferred,
            },
        )
}

fn record_type(max_defined: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 0..=max_defined + 2,
        1 => (0u32..0x20).prop_map(|t| t | 0x8000_0000),
        1 => any::<u32>(),
    ]
}

/// Random values a record template draws on.
#[derive(Debug, Clone)]
struct Knobs {
    a: u32,
    b: u32,
    c: u64,
    n: usize,
    pick: usize,
    fill: u8,
    octets: Vec<u8>,
}

fn knobs() -> impl Strategy<Value = Knobs> {
    (
        0u32..8,
        prop_oneof![3 => 0u32..0x2000, 1 => any::<u32>()],
        any::<u64>(),
        0usize..5,
        any::<usize>(),
        prop_oneof![Just(0u8), any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(|(a, b, c, n, pick, fill, octets)| Knobs {
            a,
            b,
            c,
            n,
            pick,
            fill,
            octets,
        })
}

/// A change to a well-formed body.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Xor(usize, u8),
    Cut(usize),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => Just(Mutation::None),
        1 => (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Xor(i, x)),
        1 => (1usize..16).prop_map(Mutation::Cut),
        1 => prop::collection::vec(any::<u8>(), 1..12).prop_map(Mutation::Append),
    ]
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Mutation::None => {}
            Mutation::Xor(i, x) => {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes[i] ^= x;
                }
            }
            Mutation::Cut(n) => bytes.truncate(bytes.len().saturating_sub(*n)),
            Mutation::Append(e) => bytes.extend_from_slice(e),
        }
    }
}

fn pick<T: Copy>(k: &Knobs, from: &[T]) -> T {
    from[k.pick % from.len()]
}

/// A body shaped like the libxc record `ty` describes, from the knobs.
fn libxc_template(ty: u32, k: &Knobs) -> Vec<Piece> {
    use Piece::*;
    let blob = |len: usize| Octets(k.octets.iter().copied().cycle().take(len).collect());
    match ty {
        // PAGE_DATA: entries of mostly known types, then the pages of those that carry data.
        1 => {
            let n = k.n.max(1);
            let mut types: Vec<libxc::PageType> = libxc::PageType::KNOWN.to_vec();
            types.push(libxc::PageType(5));
            let mut pieces = vec![U32(n as u32), U32(0)];
            let mut with_data = 0;
            for i in 0..n {
                let t = types[(k.pick / (i + 1)) % types.len()];
                if t.has_data() {
                    with_data += 1;
                }
                let e = libxc::PageEntry::default()
                    .with_pfn(u64::from(k.b) + i as u64)
                    .with_page_type(t);
                pieces.push(U64(e.0));
            }
            pieces.push(Pages(with_data, k.fill));
            pieces
        }
        2 => {
            let (w, l) = pick(k, &[(4u8, 3u8), (8, 4), (8, 3)]);
            vec![U8(w), U8(l), Octets(vec![0; 6])]
        }
        // X86_PV_P2M_FRAMES: as many frames as the range needs for one of the widths.
        3 => {
            let width = pick(k, &[4u32, 8]);
            let per = 4096 / width;
            let start = k.a * 100;
            let end = start + k.b;
            let frames = end / per + 1 - start / per;
            let mut pieces = vec![U32(start), U32(end)];
            pieces.extend((0..frames.min(64)).map(|i| U64(k.c.wrapping_add(u64::from(i)))));
            pieces
        }
        4 => vec![U32(k.a), U32(0), blob(pick(k, &[5168usize, 2800, 0]))],
        5 => vec![U32(k.a), U32(0), blob(k.octets.len() * 3 % 140)],
        6 => vec![U32(k.a), U32(0), blob(pick(k, &[0usize, 16, 24, 40]))],
        7 => vec![Pages(1, k.fill)],
        8 => vec![U32(k.a), U32(k.b), U64(k.c), U32(k.a), U32(0)],
        9 | 11 => vec![blob(k.octets.len())],
        10 => {
            let mut pieces = vec![U32(k.n as u32), U32(0)];
            for i in 0..k.n {
                pieces.push(U64(u64::from(k.a) + i as u64));
                pieces.push(U64(k.c));
            }
            pieces
        }
        12 | 18 => {
            let mut pieces = if ty == 12 {
                vec![U32(k.a), U32(0)]
            } else {
                vec![]
            };
            pieces.push(blob(16 * k.n));
            pieces
        }
        15 => (0..k.n).map(|i| U64(u64::from(k.b) + i as u64)).collect(),
        17 => vec![blob(24 * k.n)],
        _ => vec![],
    }
}

/// A body shaped like the libxl record `ty` describes, from the knobs.
fn libxl_template(ty: u32, k: &Knobs) -> Vec<Piece> {
    use Piece::*;
    match ty {
        2 => {
            let mut strings = Vec::new();
            for i in 0..k.n {
                strings.extend_from_slice(format!("physmap/{i}/size\0{:x}\0", k.c).as_bytes());
            }
            vec![U32(k.a % 4), U32(0), CStr(strings)]
        }
        3 => vec![U32(k.a % 4), U32(0), Octets(k.octets.clone())],
        5 => vec![U32(k.a), U32(0)],
        _ => vec![],
    }
}

/// A record input: a type and its body, either from a template (then maybe damaged) or
/// from random pieces.
#[derive(Debug, Clone)]
enum RecordInput {
    Template(u32, Knobs, Mutation),
    Random(u32, Body),
}

impl RecordInput {
    fn build(&self, endian: Endian, template: fn(u32, &Knobs) -> Vec<Piece>) -> (u32, Vec<u8>) {
        match self {
            RecordInput::Template(ty, k, m) => {
                let mut bytes = body_from(&template(*ty, k), endian);
                m.apply(&mut bytes);
                (*ty, bytes)
            }
            RecordInput::Random(ty, b) => (*ty, b.bytes(endian)),
        }
    }
}

fn record_input(max_defined: u32) -> impl Strategy<Value = RecordInput> {
    prop_oneof![
        3 => (0..=max_defined, knobs(), mutation())
            .prop_map(|(t, k, m)| RecordInput::Template(t, k, m)),
        1 => (record_type(max_defined), body()).prop_map(|(t, b)| RecordInput::Random(t, b)),
    ]
}

// ---------------------------------------------------------------------------------------
// The round-trip property
// ---------------------------------------------------------------------------------------

/// Successful decodes per item name, to show the properties were exercised.
type Tally = BTreeMap<String, usize>;

fn tally(t: &std::cell::RefCell<Tally>, what: impl Into<String>) {
    *t.borrow_mut().entry(what.into()).or_default() += 1;
}

/// What a successful decode encodes to must be the input, or a prefix of it that drops
/// trailing octets the decoder was allowed to ignore. Returns whether octets were dropped.
///
/// `decode_strict` decodes the same octets in strict mode; `trailing_allowed` is set for
/// items whose spec ignores trailing octets in every mode.
fn check_roundtrip(
    what: &str,
    input: &[u8],
    ctx: &DecodeCtx,
    encoded: Result<Vec<u8>, EncodeError>,
    encoded_len: usize,
    decode_strict: &dyn Fn(&[u8]) -> Result<(), DecodeError>,
    trailing_allowed: bool,
) -> Result<bool, TestCaseError> {
    let out = encoded.map_err(|e| {
        TestCaseError::fail(format!(
            "{what}: a decoded value does not encode: {e} (input {input:02x?})"
        ))
    })?;
    prop_assert_eq!(
        out.len(),
        encoded_len,
        "{}: encoded_len disagrees with encode",
        what
    );
    if out == input {
        return Ok(false);
    }
    prop_assert!(
        input.starts_with(&out),
        "{what}: decode/encode changed the octets\n input {input:02x?}\noutput {out:02x?}\nctx {ctx:?}"
    );
    if trailing_allowed {
        return Ok(true);
    }
    // Octets were dropped: only a lenient decode may do so, and a strict decode of the whole
    // input must refuse them (or refuse the input for a reason the prefix shares).
    prop_assert_eq!(
        ctx.strictness,
        Strictness::Lenient,
        "{}: a strict decode ignored {} trailing octets of {:02x?}",
        what,
        input.len() - out.len(),
        input
    );
    match decode_strict(input) {
        Ok(()) => prop_assert!(
            false,
            "{what}: strict decode accepts trailing octets it then drops: {input:02x?}"
        ),
        Err(e) if e.rule == "trailing" || e.rule == "empty" => {}
        Err(e) => {
            let prefix = decode_strict(&out);
            prop_assert!(
                prefix.as_ref().err().map(|p| p.rule) == Some(e.rule),
                "{what}: lenient decode dropped trailing octets, strict decode failed with \
                 `{}` but the re-encoded prefix gives {prefix:?}",
                e.rule
            );
        }
    }
    Ok(true)
}

fn strict(ctx: &DecodeCtx) -> DecodeCtx {
    ctx.with_strictness(Strictness::Strict)
}

/// Runs one property over `CASES` inputs and returns the tally.
fn run<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value, &std::cell::RefCell<Tally>) -> Result<(), TestCaseError>,
) -> Tally {
    let t = std::cell::RefCell::new(Tally::new());
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, |v| test(v, &t)) {
        panic!("{name}: {e}");
    }
    t.into_inner()
}

/// At least `min` successful decodes in total, so the round trip was really tested.
fn assert_exercised(name: &str, t: &Tally, min: usize) {
    let total: usize = t
        .iter()
        .filter(|(k, _)| !k.starts_with('~'))
        .map(|(_, n)| n)
        .sum();
    eprintln!("{name}: {total} successful decodes of {CASES}: {t:?}");
    assert!(
        total >= min,
        "{name}: only {total} of {CASES} inputs decoded ({t:?}); the generator needs work"
    );
}

/// The tally key for a record: its name, or `UNKNOWN` for every undefined type.
fn record_key(name: String) -> String {
    if name.starts_with("UNKNOWN") {
        "UNKNOWN".to_string()
    } else {
        name
    }
}

/// Every record type the spec defines decoded at least once.
fn assert_every_record_decoded(name: &str, t: &Tally, records: &[xenmig::wire::RecordInfo]) {
    let missing: Vec<&str> = records
        .iter()
        .map(|r| r.name)
        .filter(|n| !t.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: these record types never decoded, so their round trip went untested: {missing:?}"
    );
}

#[test]
fn libxc_records_never_panic_and_roundtrip() {
    let max = libxc::RECORDS
        .iter()
        .map(|r| r.record_type)
        .filter(|t| t & 0x8000_0000 == 0)
        .max()
        .unwrap();
    let t = run(
        "libxc records",
        (record_input(max), ctx()),
        |(input, ctx), t| {
            let (ty, bytes) = input.build(ctx.endian, libxc_template);
            let Ok(rec) = libxc::Record::decode(ty, &bytes, &ctx) else {
                return Ok(());
            };
            prop_assert_eq!(u32::from(rec.record_type()), ty);
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            let enc = rec
                .encode_to(ctx.endian, &mut out, &mut scratch)
                .map(|()| out);
            let name = rec.record_type().to_string();
            let dropped = check_roundtrip(
                &name,
                &bytes,
                &ctx,
                enc,
                rec.encoded_len(),
                &|b| libxc::Record::decode(ty, b, &strict(&ctx)).map(|_| ()),
                false,
            )?;
            if dropped {
                tally(t, "~ trailing octets dropped");
            }
            tally(t, record_key(name));
            Ok(())
        },
    );
    assert_exercised("libxc records", &t, (CASES / 4) as usize);
    assert_every_record_decoded("libxc records", &t, libxc::RECORDS);
}

#[test]
fn libxl_records_never_panic_and_roundtrip() {
    let max = libxl::RECORDS.iter().map(|r| r.record_type).max().unwrap();
    let t = run(
        "libxl records",
        (record_input(max), ctx()),
        |(input, ctx), t| {
            let (ty, bytes) = input.build(ctx.endian, libxl_template);
            let Ok(rec) = libxl::Record::decode(ty, &bytes, &ctx) else {
                return Ok(());
            };
            prop_assert_eq!(u32::from(rec.record_type()), ty);
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            let enc = rec
                .encode_to(ctx.endian, &mut out, &mut scratch)
                .map(|()| out);
            let name = rec.record_type().to_string();
            let dropped = check_roundtrip(
                &name,
                &bytes,
                &ctx,
                enc,
                rec.encoded_len(),
                &|b| libxl::Record::decode(ty, b, &strict(&ctx)).map(|_| ()),
                false,
            )?;
            if dropped {
                tally(t, "~ trailing octets dropped");
            }
            tally(t, record_key(name));
            Ok(())
        },
    );
    assert_exercised("libxl records", &t, (CASES / 4) as usize);
    assert_every_record_decoded("libxl records", &t, libxl::RECORDS);
}

/// Header octets: a valid header's fields, each either kept or replaced by a random value,
/// then possibly cut short or extended.
#[derive(Debug, Clone)]
struct HeaderInput {
    /// Per field: replace it with random octets.
    mutate: Vec<Option<Vec<u8>>>,
    /// Cut to this length, or extend by these octets.
    resize: Resize,
}

#[derive(Debug, Clone)]
enum Resize {
    Keep,
    Cut(usize),
    Extend(Vec<u8>),
}

fn header_input(fields: usize) -> impl Strategy<Value = HeaderInput> {
    (
        prop::collection::vec(
            prop_oneof![
                3 => Just(None),
                1 => prop::collection::vec(any::<u8>(), 8).prop_map(Some),
            ],
            fields,
        ),
        prop_oneof![
            6 => Just(Resize::Keep),
            1 => (0usize..64).prop_map(Resize::Cut),
            1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Resize::Extend),
        ],
    )
        .prop_map(|(mutate, resize)| HeaderInput { mutate, resize })
}

impl HeaderInput {
    /// Applies the mutations to a valid header whose fields have the given widths.
    fn apply(&self, valid: &[u8], widths: &[usize]) -> Vec<u8> {
        let mut out = valid.to_vec();
        let mut at = 0;
        for (w, m) in widths.iter().zip(&self.mutate) {
            if let Some(m) = m {
                for (i, b) in m.iter().cycle().take(*w).enumerate() {
                    out[at + i] = *b;
                }
            }
            at += w;
        }
        match &self.resize {
            Resize::Keep => {}
            Resize::Cut(n) => out.truncate(*n),
            Resize::Extend(e) => out.extend_from_slice(e),
        }
        out
    }
}

#[test]
fn headers_never_panic_and_roundtrip() {
    let valid_ih = libxc::ImageHeader {
        version: 3,
        ..Default::default()
    }
    .encode(Endian::Little)
    .unwrap();
    let valid_dh = |e: Endian| {
        libxc::DomainHeader {
            r#type: libxc::DomainType::X86_HVM,
            page_shift: 12,
            reserved: 0,
            xen_major: 4,
            xen_minor: 19,
        }
        .encode(e)
        .unwrap()
    };
    let valid_lh = libxl::LibxlHeader::default().encode(Endian::Big).unwrap();
    let valid_xh = xl::XlHeader {
        magic: xl::XL_MAGIC,
        byteorder: xl::XL_BYTEORDER,
        mandatory_flags: xl::XlMandatoryFlags(0),
        optional_flags: 0,
        optional_data_len: 0,
    }
    .encode(Endian::HOST)
    .unwrap();
    // The valid headers decode.
    let c = DecodeCtx::new(3);
    libxc::ImageHeader::decode(&valid_ih, &c).unwrap();
    libxc::DomainHeader::decode(&valid_dh(Endian::Little), &c).unwrap();
    libxl::LibxlHeader::decode(&valid_lh, &c).unwrap();
    xl::XlHeader::decode(&valid_xh, &c).unwrap();

    let t = run(
        "headers",
        (0usize..4, header_input(6), ctx()),
        |(which, input, ctx), t| {
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            match which {
                0 => {
                    let bytes = input.apply(&valid_ih, &[8, 4, 4, 2, 2, 4]);
                    if let Ok(h) = libxc::ImageHeader::decode(&bytes, &ctx) {
                        let enc = h
                            .encode_to(ctx.endian, &mut out, &mut scratch)
                            .map(|()| out);
                        let dropped = check_roundtrip(
                            "image_header",
                            &bytes,
                            &ctx,
                            enc,
                            h.encoded_len(),
                            &|b| libxc::ImageHeader::decode(b, &strict(&ctx)).map(|_| ()),
                            false,
                        )?;
                        if dropped {
                            tally(t, "~ trailing octets dropped");
                        }
                        tally(t, "image_header");
                    }
                }
                1 => {
                    let bytes = input.apply(&valid_dh(ctx.endian), &[4, 2, 2, 4, 4]);
                    if let Ok(h) = libxc::DomainHeader::decode(&bytes, &ctx) {
                        let enc = h
                            .encode_to(ctx.endian, &mut out, &mut scratch)
                            .map(|()| out);
                        let dropped = check_roundtrip(
                            "domain_header",
                            &bytes,
                            &ctx,
                            enc,
                            h.encoded_len(),
                            &|b| libxc::DomainHeader::decode(b, &strict(&ctx)).map(|_| ()),
                            false,
                        )?;
                        if dropped {
                            tally(t, "~ trailing octets dropped");
                        }
                        tally(t, "domain_header");
                    }
                }
                2 => {
                    let bytes = input.apply(&valid_lh, &[8, 4, 4]);
                    if let Ok(h) = libxl::LibxlHeader::decode(&bytes, &ctx) {
                        let enc = h
                            .encode_to(ctx.endian, &mut out, &mut scratch)
                            .map(|()| out);
                        let dropped = check_roundtrip(
                            "libxl_header",
                            &bytes,
                            &ctx,
                            enc,
                            h.encoded_len(),
                            &|b| libxl::LibxlHeader::decode(b, &strict(&ctx)).map(|_| ()),
                            false,
                        )?;
                        if dropped {
                            tally(t, "~ trailing octets dropped");
                        }
                        tally(t, "libxl_header");
                    }
                }
                _ => {
                    let bytes = input.apply(&valid_xh, &[32, 4, 4, 4, 4]);
                    if let Ok(h) = xl::XlHeader::decode(&bytes, &ctx) {
                        let enc = h
                            .encode_to(ctx.endian, &mut out, &mut scratch)
                            .map(|()| out);
                        let dropped = check_roundtrip(
                            "xl_header",
                            &bytes,
                            &ctx,
                            enc,
                            h.encoded_len(),
                            &|b| xl::XlHeader::decode(b, &strict(&ctx)).map(|_| ()),
                            false,
                        )?;
                        if dropped {
                            tally(t, "~ trailing octets dropped");
                        }
                        tally(t, "xl_header");
                    }
                }
            }
            Ok(())
        },
    );
    assert_exercised("headers", &t, (CASES / 10) as usize);
}

#[test]
fn headers_on_random_octets_never_panic() {
    run(
        "headers on random octets",
        (prop::collection::vec(any::<u8>(), 0..64), ctx()),
        |(bytes, ctx), _| {
            let _ = libxc::ImageHeader::decode(&bytes, &ctx);
            let _ = libxc::DomainHeader::decode(&bytes, &ctx);
            let _ = libxl::LibxlHeader::decode(&bytes, &ctx);
            let _ = xl::XlHeader::decode(&bytes, &ctx);
            Ok(())
        },
    );
}

#[test]
fn xl_optional_data_never_panics_and_roundtrips() {
    // `trailing: allow`: whatever follows the configuration is ignored in every mode.
    let t = run("xl optional data", (body(), ctx()), |(body, ctx), t| {
        let bytes = body.bytes(Endian::HOST);
        let Ok(d) = xl::XlOptionalData::decode(&bytes, &ctx) else {
            return Ok(());
        };
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let enc = d
            .encode_to(ctx.endian, &mut out, &mut scratch)
            .map(|()| out);
        let dropped = check_roundtrip(
            "xl_optional_data",
            &bytes,
            &ctx,
            enc,
            d.encoded_len(),
            &|b| xl::XlOptionalData::decode(b, &strict(&ctx)).map(|_| ()),
            true,
        )?;
        if dropped {
            tally(t, "~ trailing octets dropped");
        }
        tally(t, "xl_optional_data");
        Ok(())
    });
    assert_exercised("xl optional data", &t, (CASES / 20) as usize);
}

// ---------------------------------------------------------------------------------------
// Zero-copy decoding
// ---------------------------------------------------------------------------------------

#[test]
fn page_data_decode_and_walk_allocate_nothing() {
    const N: usize = 1024;
    let entries: Vec<libxc::PageEntry> = (0..N as u64)
        .map(|n| {
            libxc::PageEntry::default()
                .with_pfn(0x1000 + n)
                .with_page_type(libxc::PageType::NOTAB)
        })
        .collect();
    let mut pages = vec![0u8; N * 4096];
    for (i, page) in pages.chunks_exact_mut(4096).enumerate() {
        page[0] = i as u8;
        page[4095] = (i >> 8) as u8;
    }
    let body = libxc::PageData {
        reserved: 0,
        entries: Array::Values(&entries),
        pages: &pages,
    }
    .encode(Endian::Little)
    .unwrap();
    assert_eq!(body.len(), 8 + N * 8 + N * 4096);
    let ctx = DecodeCtx::new(3);

    // Through the record dispatcher and directly, strict and lenient.
    let (walked, allocations) = count_allocations(|| {
        let mut sum = 0u64;
        for strictness in [Strictness::Strict, Strictness::Lenient] {
            let ctx = ctx.with_strictness(strictness);
            let Ok(libxc::Record::PageData(pd)) =
                libxc::Record::decode(libxc::PageData::TYPE, &body, &ctx)
            else {
                return None;
            };
            let direct = libxc::PageData::decode(&body, &ctx).ok()?;
            if direct != pd || pd.entries.len() != N || pd.pages.len() != N * 4096 {
                return None;
            }
            for (e, page) in pd.entries.iter().zip(pd.pages.chunks_exact(4096)) {
                if !e.page_type().has_data() || e.reserved() != 0 {
                    return None;
                }
                sum += e.pfn() + u64::from(page[0]) + u64::from(page[4095]);
            }
        }
        Some(sum)
    });
    let expected: u64 = 2
        * (0..N as u64)
            .map(|n| 0x1000 + n + (n & 0xff) + (n >> 8))
            .sum::<u64>();
    assert_eq!(
        walked,
        Some(expected),
        "the decoded batch is not the encoded one"
    );
    assert_eq!(allocations, 0, "decoding and walking PAGE_DATA allocated");

    // Encoding back into a buffer with room borrows the pages; the scratch buffer is reused.
    let decoded = libxc::PageData::decode(&body, &ctx).unwrap();
    let mut out = Vec::with_capacity(body.len());
    let mut scratch = Vec::with_capacity(64);
    let (res, allocations) =
        count_allocations(|| decoded.encode_to(Endian::Little, &mut out, &mut scratch));
    res.unwrap();
    assert_eq!(out, body);
    assert_eq!(
        allocations, 0,
        "re-encoding PAGE_DATA into a sized buffer allocated"
    );

    // The counter works: a decode failure formats its detail.
    let (_, allocations) = count_allocations(|| libxc::PageData::decode(&body[..4], &ctx));
    assert!(allocations > 0, "the counting allocator counts nothing");
}
