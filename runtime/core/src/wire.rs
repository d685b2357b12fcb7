//! Support types shared by the code that `include_spec!` generates: byte order, strictness
//! levels, decode context and errors, a bounds-checked cursor, borrowed arrays and the
//! metadata tables that describe records and layouts.
//!
//! Nothing here knows about a particular record: every record body is generated from `spec/`.

use std::fmt;

/// Byte order of a multi-octet integer on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    /// Least significant octet first.
    Little,
    /// Most significant octet first.
    Big,
}

impl Endian {
    /// The byte order of the machine running this code.
    pub const HOST: Endian = if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    };
}

/// Who enforces a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Reported, never an error.
    Warn,
    /// Enforced by Xen's restore code: always an error.
    Required,
    /// Enforced by the reference verifier: an error in strict mode only.
    Strict,
}

impl Level {
    /// The spelling used in `spec/` and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warn => "warn",
            Level::Required => "required",
            Level::Strict => "strict",
        }
    }
}

/// How strictly a stream is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strictness {
    /// Everything the reference verifier rejects is rejected.
    #[default]
    Strict,
    /// Only what Xen's restore code rejects is rejected.
    Lenient,
}

impl Strictness {
    /// Whether a rule of this level makes decoding fail.
    pub fn enforces(self, level: Level) -> bool {
        match level {
            Level::Warn => false,
            Level::Required => true,
            Level::Strict => self == Strictness::Strict,
        }
    }
}

/// What a decoder knows about the stream around the bytes it decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeCtx {
    /// Byte order of the domain header and records.
    pub endian: Endian,
    /// The image's format version (libxc 2 or 3; libxl 2).
    pub version: u32,
    /// Strict or lenient checking.
    pub strictness: Strictness,
    /// Guest width in octets (4 or 8) once X86_PV_INFO has been seen.
    pub guest_width: Option<u64>,
    /// Octets at the end of the body that the decoder is not given: a reader that hands a
    /// PAGE_DATA's page octets out apart (to read them straight into guest frames) decodes
    /// the record from what precedes them. They count toward the length of the trailing
    /// `pages` field, which then holds only the page octets present. 0 for a whole body.
    pub deferred: usize,
}

impl DecodeCtx {
    /// A context for little-endian streams of the given version, checked strictly.
    pub fn new(version: u32) -> Self {
        DecodeCtx {
            endian: Endian::Little,
            version,
            strictness: Strictness::Strict,
            guest_width: None,
            deferred: 0,
        }
    }

    /// The same context with another strictness.
    pub fn with_strictness(mut self, strictness: Strictness) -> Self {
        self.strictness = strictness;
        self
    }

    /// The same context with a known guest width.
    pub fn with_guest_width(mut self, guest_width: Option<u64>) -> Self {
        self.guest_width = guest_width;
        self
    }
}

/// A rule that a record body or header broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The record or struct being decoded, as the spec names it.
    pub item: &'static str,
    /// The rule that failed, as the spec names it (`truncated`, `trailing`, a field constraint
    /// such as `count.min`, or a rule name).
    pub rule: &'static str,
    /// The level of the rule.
    pub level: Level,
    /// Offset within the decoded bytes where the problem is.
    pub offset: usize,
    /// The condition and the values seen.
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: rule `{}` ({}) failed at body offset {:#x}: {}",
            self.item,
            self.rule,
            self.level.as_str(),
            self.offset,
            self.detail
        )
    }
}

impl std::error::Error for DecodeError {}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    /// The record or struct being encoded.
    pub item: &'static str,
    /// The field at fault (for a rule over several fields, the rule's name).
    pub field: &'static str,
    /// The spec rule the value breaks, named as a decoder names it in [`DecodeError::rule`]
    /// (`count.min`, a rule name, ...), when the value breaks one.
    pub rule: Option<&'static str>,
    /// What is inconsistent.
    pub detail: String,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode {}.{}: ", self.item, self.field)?;
        if let Some(rule) = self.rule {
            write!(f, "rule `{rule}` fails: ")?;
        }
        f.write_str(&self.detail)
    }
}

impl std::error::Error for EncodeError {}

/// A bounds-checked reader over the bytes of one record body or header.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    endian: Endian,
    item: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`; `item` names the record or header in errors.
    pub fn new(bytes: &'a [u8], endian: Endian, item: &'static str) -> Self {
        Cursor {
            bytes,
            pos: 0,
            endian,
            item,
        }
    }

    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Octets not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Length of the whole input.
    pub fn total(&self) -> usize {
        self.bytes.len()
    }

    /// An error for a failed rule at the given offset.
    pub fn fail(
        &self,
        rule: &'static str,
        level: Level,
        offset: usize,
        detail: String,
    ) -> DecodeError {
        DecodeError {
            item: self.item,
            rule,
            level,
            offset,
            detail,
        }
    }

    /// Takes `len` octets or fails with `truncated`.
    pub fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(len).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = self.bytes.get(self.pos..end).unwrap_or_default();
                self.pos = end;
                Ok(s)
            }
            None => Err(self.fail(
                "truncated",
                Level::Required,
                self.pos,
                format!(
                    "field `{field}` needs {len} octets, {} remain of {}",
                    self.remaining(),
                    self.bytes.len()
                ),
            )),
        }
    }

    /// Takes the rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.bytes.get(self.pos..).unwrap_or_default();
        self.pos = self.bytes.len();
        s
    }

    /// Takes `N` octets as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Takes one octet.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Takes a 16-bit integer in the cursor's byte order.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.array::<2>(field)?;
        Ok(match self.endian {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        })
    }

    /// Takes a 32-bit integer in the cursor's byte order.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.array::<4>(field)?;
        Ok(match self.endian {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        })
    }

    /// Takes a 64-bit integer in the cursor's byte order.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.array::<8>(field)?;
        Ok(match self.endian {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        })
    }

    /// Fails when octets remain and the level is enforced.
    pub fn finish(&self, level: Level, strictness: Strictness) -> Result<(), DecodeError> {
        if self.remaining() != 0 && strictness.enforces(level) {
            return Err(self.fail(
                "trailing",
                level,
                self.pos,
                format!(
                    "{} octets follow the last field (length {})",
                    self.remaining(),
                    self.bytes.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Appends integers in a byte order.
#[derive(Debug)]
pub struct Put<'o> {
    /// Where the octets go.
    pub out: &'o mut Vec<u8>,
    /// The byte order of the integers.
    pub endian: Endian,
}

impl Put<'_> {
    /// Appends octets as they are.
    pub fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    /// Appends one octet.
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    /// Appends a 16-bit integer.
    pub fn u16(&mut self, v: u16) {
        match self.endian {
            Endian::Little => self.out.extend_from_slice(&v.to_le_bytes()),
            Endian::Big => self.out.extend_from_slice(&v.to_be_bytes()),
        }
    }
    /// Appends a 32-bit integer.
    pub fn u32(&mut self, v: u32) {
        match self.endian {
            Endian::Little => self.out.extend_from_slice(&v.to_le_bytes()),
            Endian::Big => self.out.extend_from_slice(&v.to_be_bytes()),
        }
    }
    /// Appends a 64-bit integer.
    pub fn u64(&mut self, v: u64) {
        match self.endian {
            Endian::Little => self.out.extend_from_slice(&v.to_le_bytes()),
            Endian::Big => self.out.extend_from_slice(&v.to_be_bytes()),
        }
    }
}

/// Receives an encoded body piece by piece, so that large borrowed parts (page data, blobs)
/// can be written without being copied.
pub trait Sink<'a> {
    /// Octets produced by the encoder (headers, scalar fields).
    fn copy(&mut self, bytes: &[u8]);
    /// Octets borrowed from the value being encoded.
    fn borrow(&mut self, bytes: &'a [u8]);
}

impl<'a> Sink<'a> for Vec<u8> {
    fn copy(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn borrow(&mut self, bytes: &'a [u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A fixed-size element of an array: an integer, a bitfield or a struct.
pub trait Element: Sized + Copy {
    /// Octets one element takes.
    const SIZE: usize;
    /// Decodes one element from exactly `SIZE` octets (never fails: element-level rules are
    /// checked by the record that holds the array).
    fn read(bytes: &[u8], endian: Endian) -> Self;
    /// Appends the element.
    fn write(&self, put: &mut Put<'_>);
}

macro_rules! int_element {
    ($t:ty, $n:expr, $put:ident) => {
        impl Element for $t {
            const SIZE: usize = $n;
            fn read(bytes: &[u8], endian: Endian) -> Self {
                let mut b = [0u8; $n];
                if let Some(s) = bytes.get(..$n) {
                    b.copy_from_slice(s);
                }
                match endian {
                    Endian::Little => <$t>::from_le_bytes(b),
                    Endian::Big => <$t>::from_be_bytes(b),
                }
            }
            fn write(&self, put: &mut Put<'_>) {
                put.$put(*self);
            }
        }
    };
}

int_element!(u16, 2, u16);
int_element!(u32, 4, u32);
int_element!(u64, 8, u64);

/// An array of elements, either still encoded (borrowed from the input, decoded on access,
/// never copied) or given as a slice of values (for encoding).
#[derive(Clone, Copy)]
pub enum Array<'a, T> {
    /// Elements as they are on the wire.
    Encoded {
        /// The encoded elements, back to back.
        bytes: &'a [u8],
        /// Their byte order.
        endian: Endian,
    },
    /// Elements as values.
    Values(&'a [T]),
}

impl<'a, T: Element> Array<'a, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::Encoded { bytes, .. } => bytes.len() / T::SIZE,
            Array::Values(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element at `index`, if any.
    pub fn get(&self, index: usize) -> Option<T> {
        match self {
            Array::Encoded { bytes, endian } => {
                let start = index.checked_mul(T::SIZE)?;
                let end = start.checked_add(T::SIZE)?;
                bytes.get(start..end).map(|b| T::read(b, *endian))
            }
            Array::Values(v) => v.get(index).copied(),
        }
    }

    /// Iterates over the elements without allocating.
    pub fn iter(&self) -> ArrayIter<'a, T> {
        ArrayIter {
            array: *self,
            index: 0,
            len: self.len(),
        }
    }

    /// Octets the array takes when encoded.
    pub fn encoded_len(&self) -> usize {
        self.len().saturating_mul(T::SIZE)
    }

    /// Encodes the array, borrowing the input bytes when they are already in the right order.
    pub fn encode_to<S: Sink<'a>>(&self, sink: &mut S, endian: Endian, scratch: &mut Vec<u8>) {
        match self {
            Array::Encoded { bytes, endian: e } if *e == endian || T::SIZE == 1 => {
                sink.borrow(bytes)
            }
            _ => {
                scratch.clear();
                let mut put = Put {
                    out: scratch,
                    endian,
                };
                for v in self.iter() {
                    v.write(&mut put);
                }
                sink.copy(scratch);
            }
        }
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for Array<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 16;
        let mut l = f.debug_list();
        l.entries(self.iter().take(SHOWN));
        if self.len() > SHOWN {
            l.entry(&format_args!("... {} more", self.len() - SHOWN));
        }
        l.finish()
    }
}

impl<T> Default for Array<'_, T> {
    fn default() -> Self {
        Array::Values(&[])
    }
}

impl<T: Element + Eq> Eq for Array<'_, T> {}

impl<T: Element + PartialEq> PartialEq for Array<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

/// Iterator over an [`Array`].
#[derive(Clone)]
pub struct ArrayIter<'a, T> {
    array: Array<'a, T>,
    index: usize,
    len: usize,
}

impl<T: Element> Iterator for ArrayIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.index >= self.len {
            return None;
        }
        let v = self.array.get(self.index);
        self.index += 1;
        v
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len - self.index;
        (n, Some(n))
    }
}

impl<T: Element> ExactSizeIterator for ArrayIter<'_, T> {}

/// NUL-terminated strings filling a body, borrowed.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CStrings<'a> {
    bytes: &'a [u8],
}

impl<'a> CStrings<'a> {
    /// Wraps encoded strings (every string, the last included, ends with NUL).
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        CStrings { bytes }
    }

    /// The encoded form.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Iterates over the strings, without their NULs. A final string without NUL is returned too.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let bytes = self.bytes;
        let body = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        let empty = bytes.is_empty();
        body.split(|&b| b == 0).filter(move |_| !empty)
    }

    /// Number of strings.
    pub fn count(&self) -> usize {
        self.iter().count()
    }

    /// Whether the last string is NUL-terminated (or the list is empty).
    pub fn terminated(&self) -> bool {
        self.bytes.last().is_none_or(|&b| b == 0)
    }

    /// Consecutive pairs (key, value); a key without value is paired with `None`.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut it = self.iter();
        std::iter::from_fn(move || {
            let k = it.next()?;
            Some((k, it.next()))
        })
    }

    /// Encodes `(key, value)` pairs.
    pub fn encode_pairs<'k>(pairs: impl IntoIterator<Item = (&'k [u8], &'k [u8])>) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }
}

impl fmt::Debug for CStrings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

/// Whether a record is still part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Current: writers emit it, readers accept it.
    Active,
    /// Kept for old readers; new writers do not emit it.
    Deprecated,
    /// Never valid in a forward stream.
    Forbidden,
}

/// What the stream machinery uses a record for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Closes its layer's stream.
    End,
    /// Carries guest pages.
    PageData,
    /// Ends one checkpoint of a checkpointed (Remus, COLO) libxc stream.
    Checkpoint,
    /// Ends one checkpoint of a checkpointed libxl stream.
    CheckpointEnd,
    /// A COLO control message between checkpoints.
    CheckpointState,
    /// Ends the static data (what is sent once, before memory).
    StaticDataEnd,
    /// Asks the restorer to compare the pages that follow with its own.
    Verify,
    /// The libxl record the libxc image follows.
    LibxcContext,
    /// Sent on the back channel, from restorer to saver (COLO).
    BackChannel,
}

/// What the spec says about one record type.
#[derive(Debug, Clone, Copy)]
pub struct RecordInfo {
    /// The spec's name, e.g. `PAGE_DATA`.
    pub name: &'static str,
    /// The type number in the record header.
    pub record_type: u32,
    /// The spec's description.
    pub doc: &'static str,
    /// Whether the record is current, deprecated or forbidden.
    pub status: Status,
    /// What the stream machinery uses it for, if anything.
    pub role: Option<Role>,
    /// Oldest format version the record may appear in.
    pub since_version: Option<u32>,
    /// At most one per stream.
    pub once: bool,
    /// Domain type names (from the domain type enum) the record is valid for; empty = all.
    pub guests: &'static [&'static str],
    /// Valid only in a checkpointed stream.
    pub checkpointed_only: bool,
    /// For the static-data boundary: the records that imply it in older streams.
    pub implied_at: &'static [u32],
    /// The body is always empty.
    pub empty_body: bool,
    /// The payload after the fixed fields may be absent (then the record is skipped): `Warn`
    /// when a reader should say so, `Required` when it is silently accepted.
    pub empty_payload: Option<Level>,
    /// Octets of the fixed fields before the first variable one: a body no longer than this
    /// has no payload.
    pub min_size: usize,
}

impl RecordInfo {
    /// Bit 31 clear: a reader that does not know the record must fail.
    pub fn is_mandatory(&self) -> bool {
        self.record_type & 0x8000_0000 == 0
    }
}

/// A record that must appear, optionally one whose fields match a condition.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    /// The record type that must appear.
    pub record: u32,
    /// The condition as written in the spec, if any.
    pub condition: Option<&'static str>,
    /// Decodes a body of `record` and evaluates the condition.
    pub matches: Option<fn(&[u8], &DecodeCtx) -> bool>,
    /// How strictly the requirement is enforced.
    pub level: Level,
    /// The spec's description of the requirement.
    pub doc: &'static str,
}

/// An ordering rule.
#[derive(Debug, Clone, Copy)]
pub struct OrderRule {
    /// The record type the rule constrains.
    pub record: u32,
    /// The first `record` must follow one of each of these.
    pub after: &'static [u32],
    /// `record` must not follow the first of any of these.
    pub before: &'static [u32],
    /// How strictly the rule is enforced.
    pub level: Level,
    /// The spec's description of the rule.
    pub doc: &'static str,
}

/// Per-guest rules about which records appear and in which order.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// A domain type name, or `all`.
    pub guest: &'static str,
    /// The spec's description of the layout.
    pub doc: &'static str,
    /// Records that must appear.
    pub required: &'static [Requirement],
    /// Order rules between records.
    pub order: &'static [OrderRule],
}

/// Formats integer values for error details.
pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

// ---------------------------------------------------------------------------------------------
// Introspection: every generated record body, struct and bitfield implements [`Walk`], which
// hands its fields, in spec order, to a [`Visitor`]. Renderers (the `dump` listing, JSON) are
// written once against the visitor and never name a record.

/// How the value of one scalar field is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'v> {
    /// An integer; `hex` when the spec asks for it to be shown in hex (`display: hex`).
    Int {
        /// The value.
        value: u64,
        /// Whether to show it in hex.
        hex: bool,
    },
    /// A value of an enum: the spec's name for it, if it defines one.
    Enum {
        /// The value.
        value: u64,
        /// The spec's name for the value, if it has one.
        name: Option<&'static str>,
        /// The enum's name in the spec.
        enum_name: &'static str,
    },
    /// A flags value with the spec's named bits (mask, name); other set bits are reserved.
    Flags {
        /// The value.
        value: u64,
        /// The named bits: (mask, name).
        bits: &'static [(u64, &'static str)],
    },
    /// A fixed-size byte string.
    Bytes(&'v [u8]),
    /// Text the walk itself reports (why a nested layout could not be decoded).
    Text(&'v str),
}

impl Value<'_> {
    /// The names of the set named bits of a flags value and the reserved bits left over; for
    /// other values, no names and no rest.
    pub fn flag_names(&self) -> (Vec<&'static str>, u64) {
        match *self {
            Value::Flags { value, bits } => {
                let mut known = 0u64;
                let mut names = Vec::new();
                for &(mask, name) in bits {
                    known |= mask;
                    if mask != 0 && value & mask == mask {
                        names.push(name);
                    }
                }
                (names, value & !known)
            }
            _ => (Vec::new(), 0),
        }
    }
}

/// How the spec asks an array to be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayShow {
    /// Element by element.
    List,
    /// As a summary (`display: summary`): counts of each enum value and runs of consecutive
    /// integers, for arrays too long to list (page frame lists).
    Summary,
}

/// What an array holds, as the visitor is told before its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayInfo {
    /// Number of elements.
    pub count: usize,
    /// The field that holds the count on the wire, when there is one (`count: FIELD`); the
    /// walk reports that field as a scalar at its place, before the array.
    pub count_field: Option<&'static str>,
    /// Whether to list the elements or summarise them.
    pub show: ArrayShow,
}

/// What a run of octets is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// Opaque octets (`blob`, arrays of `u8`).
    Opaque,
    /// Whole pages of `page_size` octets (`pages`).
    Pages {
        /// Octets per page.
        page_size: usize,
    },
}

/// Receives the fields of a walked value, in spec order.
///
/// Elements of an array are reported between [`Visitor::array_begin`] and
/// [`Visitor::array_end`] under the array's name: an integer element as one
/// [`Visitor::scalar`], a struct or bitfield element between [`Visitor::struct_begin`] and
/// [`Visitor::struct_end`].
pub trait Visitor {
    /// One integer, enum, flags or fixed-size byte field. `reserved` fields carry no meaning.
    fn scalar(&mut self, name: &'static str, value: Value<'_>, reserved: bool);
    /// A nested struct or bitfield (`type_name` as the spec names it); its fields follow.
    fn struct_begin(&mut self, name: &'static str, type_name: &'static str);
    /// Closes the struct the last unclosed [`Visitor::struct_begin`] opened.
    fn struct_end(&mut self);
    /// An array of integers, structs or bitfields; its elements follow.
    fn array_begin(&mut self, name: &'static str, info: ArrayInfo);
    /// Closes the array the last unclosed [`Visitor::array_begin`] opened.
    fn array_end(&mut self);
    /// Octets the spec does not break into fields. `layout` walks their contents when the spec
    /// declares a layout for them (`layout:` on a blob field: another format's framed records,
    /// or a struct chosen by the blob's length).
    fn blob(&mut self, name: &'static str, bytes: &[u8], kind: BlobKind, layout: Option<&dyn Walk>);
    /// NUL-terminated strings; `pairs` when they are keys and values.
    fn strings(&mut self, name: &'static str, strings: CStrings<'_>, pairs: bool);
}

/// A value whose fields can be visited, generated for every record body, struct and bitfield.
pub trait Walk {
    /// The spec's name for the walked item.
    fn item_name(&self) -> &'static str;
    /// Hands every field to `v`, in spec order.
    fn walk(&self, v: &mut dyn Visitor);
}

/// Walks every element of an array; used by generated code.
pub fn walk_array<T: Element + Walk>(
    name: &'static str,
    type_name: &'static str,
    array: &Array<'_, T>,
    info: ArrayInfo,
    v: &mut dyn Visitor,
) {
    v.array_begin(name, info);
    for e in array.iter() {
        v.struct_begin(name, type_name);
        e.walk(v);
        v.struct_end();
    }
    v.array_end();
}

/// Walks every element of an integer array; used by generated code.
pub fn walk_int_array<T: Element + Into<u64>>(
    name: &'static str,
    array: &Array<'_, T>,
    hex: bool,
    info: ArrayInfo,
    v: &mut dyn Visitor,
) {
    v.array_begin(name, info);
    for e in array.iter() {
        v.scalar(
            name,
            Value::Int {
                value: e.into(),
                hex,
            },
            false,
        );
    }
    v.array_end();
}
