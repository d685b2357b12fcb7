//! Rust code for a spec: constants, enums, flags, bitfields, structs (headers), one type per
//! record body with its decoder and encoder, the `RecordType` and `Record` enums, and the
//! metadata tables (`RECORDS`, `LAYOUTS`) that the verifier reads.
//!
//! The generated code depends only on `::xenmig::wire`. It contains no `unsafe`, no indexing
//! and no `unwrap`: every read goes through a bounds-checked cursor, every length is checked
//! before use, and arithmetic in rules is checked.

use crate::expr::{ident, Expr};
use crate::model::*;
use crate::validate::{Count, Elem, FieldKind, Scalar, Spec, PAGE_SIZE_CONSTANT};
use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};
use std::path::Path;

/// `UPPER_SNAKE` or `lower_snake` to `CamelCase`.
pub fn camel(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

fn type_ident(s: &str) -> Ident {
    format_ident!("{}", camel(s))
}

fn doc_attr(doc: &str) -> TokenStream {
    let lines: Vec<TokenStream> = doc
        .trim()
        .lines()
        .map(|l| {
            let l = format!(" {}", l.trim_end());
            quote!(#[doc = #l])
        })
        .collect();
    quote!(#(#lines)*)
}

fn scalar_ty(s: Scalar) -> TokenStream {
    match s {
        Scalar::U8 => quote!(u8),
        Scalar::U16 => quote!(u16),
        Scalar::U32 => quote!(u32),
        Scalar::U64 => quote!(u64),
    }
}

fn int_lit(s: Scalar, v: u64) -> Literal {
    match s {
        Scalar::U8 => Literal::u8_suffixed(v as u8),
        Scalar::U16 => Literal::u16_suffixed(v as u16),
        Scalar::U32 => Literal::u32_suffixed(v as u32),
        Scalar::U64 => Literal::u64_suffixed(v),
    }
}

fn hex_lit(s: Scalar, v: u64) -> TokenStream {
    let text = match s {
        Scalar::U8 => format!("{v:#04x}u8"),
        Scalar::U16 => format!("{v:#06x}u16"),
        Scalar::U32 => format!("{v:#010x}u32"),
        Scalar::U64 => format!("{v:#018x}u64"),
    };
    text.parse()
        .unwrap_or_else(|_| int_lit(s, v).into_token_stream_compat())
}

trait IntoTs {
    fn into_token_stream_compat(self) -> TokenStream;
}

impl IntoTs for Literal {
    fn into_token_stream_compat(self) -> TokenStream {
        quote!(#self)
    }
}

fn level_ts(l: Option<LevelName>, default: LevelName) -> TokenStream {
    match l.unwrap_or(default) {
        LevelName::Warn => quote!(__w::Level::Warn),
        LevelName::Required => quote!(__w::Level::Required),
        LevelName::Strict => quote!(__w::Level::Strict),
    }
}

/// The byte-order expression for a struct or record.
fn endian_expr(order: ByteOrder) -> TokenStream {
    match order {
        ByteOrder::Big => quote!(__w::Endian::Big),
        ByteOrder::Little => quote!(__w::Endian::Little),
        ByteOrder::Host => quote!(__w::Endian::HOST),
        ByteOrder::Stream => quote!(__endian),
    }
}

/// Whether generated checks sit in a decoder or an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Decode,
    Encode,
}

struct Gen<'s> {
    spec: &'s Spec,
}

/// Emits the module for a spec. `path` (absolute) makes cargo rebuild when the YAML changes.
pub fn emit(spec: &Spec, path: Option<&Path>) -> TokenStream {
    let g = Gen { spec };
    let f = &spec.file;
    let module = format_ident!("{}", f.format);
    let doc = doc_attr(&format!("{}\n\n{}", f.title, f.doc));
    let track = path.map(|p| {
        let p = p.display().to_string();
        quote!(
            const _: &str = include_str!(#p);
        )
    });
    let revision = f.revision;
    let versions = f.versions.as_ref().map(|v| {
        let acc = &v.accepted;
        let w = v.written;
        quote! {
            /// Format versions a reader accepts.
            pub const VERSIONS_ACCEPTED: &[u32] = &[#(#acc),*];
            /// The format version a writer produces.
            pub const VERSION_WRITTEN: u32 = #w;
        }
    });
    let constants = f.constants.iter().map(|c| g.constant(c));
    let enums = f.enums.iter().map(|e| g.enum_(e));
    let flags = f.flags.iter().map(|e| g.flags(e));
    let bitfields = f.bitfields.iter().map(|e| g.bitfield(e));
    let structs = f.structs.iter().map(|s| g.struct_(s));
    let records = f.records.iter().map(|r| g.record(r));
    let record_enums = if f.records.is_empty() {
        quote!()
    } else {
        g.record_enums()
    };
    let framing = f.framing.as_ref().map(|fr| g.framing(fr));
    let unframed = (!f.chunks.is_empty() || !f.parts.is_empty()).then(|| g.unframed_helpers());
    let chunks = (!f.chunks.is_empty()).then(|| g.chunks());
    let parts = f.parts.iter().map(|p| g.part_type(p));
    let format_name = &f.format;
    quote! {
        #doc
        pub mod #module {
            #![allow(unused_parens, unused_labels, clippy::manual_range_contains, clippy::identity_op, clippy::unnecessary_cast)]
            use ::xenmig::wire as __w;
            #track
            /// The spec's name for this format.
            pub const FORMAT: &str = #format_name;
            /// The format revision the spec describes.
            pub const REVISION: u32 = #revision;
            #versions
            #(#constants)*
            #(#enums)*
            #(#flags)*
            #(#bitfields)*
            #(#structs)*
            #(#records)*
            #record_enums
            #framing
            #unframed
            #chunks
            #(#parts)*
        }
    }
}

impl<'s> Gen<'s> {
    /// `Frame`, `Frames` and their walk, for a format whose records fill a blob.
    fn framing(&self, fr: &Framing) -> TokenStream {
        let spec = self.spec;
        let header = type_ident(&fr.header);
        let header_name = &fr.header;
        let tf = ident(&fr.type_field);
        let lf = ident(&fr.length);
        let end = spec
            .file
            .records
            .iter()
            .find(|r| r.role == Some(Role::End))
            .map(|r| r.record_type as u32);
        let is_end = match end {
            Some(t) => quote!(t == #t),
            None => quote!({
                let _ = t;
                false
            }),
        };
        let doc = doc_attr(&format!(
            "The records of this format, one after another: each is a `{}` header, then as many \
             octets of body as its `{}` says, with no padding. {}",
            fr.header,
            fr.length,
            fr.doc.trim()
        ));
        quote! {
            /// One record inside a blob of records: where its header starts, the header, and its body.
            #[derive(Debug, Clone, Copy)]
            pub struct Frame<'a> {
                /// Where the record's header starts, in octets from the start of the blob.
                pub offset: usize,
                /// The record's header.
                pub header: #header,
                /// The record's body: as many octets as the header's length says.
                pub body: &'a [u8],
            }

            impl<'a> Frame<'a> {
                /// The record type its header names.
                pub fn record_type(&self) -> RecordType {
                    RecordType::from(self.header.#tf as u32)
                }
                /// The record, decoded from its body (an unknown type is `Record::Unknown`).
                pub fn decode(&self, ctx: &__w::DecodeCtx) -> Result<Record<'a>, __w::DecodeError> {
                    Record::decode(self.header.#tf as u32, self.body, ctx)
                }
            }

            #doc
            #[derive(Debug, Clone, Copy)]
            pub struct Frames<'a> {
                bytes: &'a [u8],
            }

            impl<'a> Frames<'a> {
                /// The records in `bytes`, the first header at offset 0; nothing is read yet.
                pub fn new(bytes: &'a [u8]) -> Self {
                    Frames { bytes }
                }
                /// Every record up to and including the end record, or up to the first that does
                /// not fit (reported as an error, after which the iteration stops).
                pub fn iter(&self) -> FrameIter<'a> {
                    FrameIter { bytes: self.bytes, pos: 0, done: false }
                }
            }

            /// Iterates over [`Frames`].
            #[derive(Debug, Clone)]
            pub struct FrameIter<'a> {
                bytes: &'a [u8],
                pos: usize,
                done: bool,
            }

            impl<'a> FrameIter<'a> {
                /// The octets after the end record (or after the record that did not fit).
                pub fn rest(&self) -> &'a [u8] {
                    self.bytes.get(self.pos..).unwrap_or(&[])
                }
            }

            impl<'a> Iterator for FrameIter<'a> {
                type Item = Result<Frame<'a>, __w::DecodeError>;
                fn next(&mut self) -> Option<Self::Item> {
                    if self.done || self.pos >= self.bytes.len() {
                        return None;
                    }
                    let at = self.pos;
                    let left = self.bytes.len() - at;
                    let hsize = <#header as __w::Element>::SIZE;
                    if left < hsize {
                        self.done = true;
                        return Some(Err(__w::DecodeError {
                            item: #header_name, rule: "truncated", level: __w::Level::Required, offset: at,
                            detail: format!("{} octets remain, a record header takes {}", left, hsize),
                        }));
                    }
                    let header = <#header as __w::Element>::read(&self.bytes[at..at + hsize], __w::Endian::Little);
                    let len = usize::try_from(header.#lf).unwrap_or(usize::MAX);
                    let start = at + hsize;
                    if len > self.bytes.len() - start {
                        self.done = true;
                        return Some(Err(__w::DecodeError {
                            item: #header_name, rule: "length", level: __w::Level::Required, offset: at,
                            detail: format!("the record's body is {} octets, {} remain", len, self.bytes.len() - start),
                        }));
                    }
                    self.pos = start + len;
                    let t = header.#tf as u32;
                    if #is_end {
                        self.done = true;
                    }
                    Some(Ok(Frame { offset: at, header, body: &self.bytes[start..start + len] }))
                }
            }

            impl __w::Walk for Frames<'_> {
                fn item_name(&self) -> &'static str {
                    FORMAT
                }
                fn walk(&self, v: &mut dyn __w::Visitor) {
                    let ctx = __w::DecodeCtx::new(REVISION).with_strictness(__w::Strictness::Lenient);
                    let count = self.iter().count();
                    v.array_begin("records", __w::ArrayInfo { count, count_field: None, show: __w::ArrayShow::List });
                    let mut it = self.iter();
                    for item in &mut it {
                        v.struct_begin("records", "record");
                        match item {
                            Ok(fr) => {
                                let rt = fr.record_type();
                                let name = match rt { RecordType::Unknown(_) => None, known => Some(known.name()) };
                                v.scalar("record", __w::Value::Enum { value: u32::from(rt) as u64, name, enum_name: "record_type" }, false);
                                v.scalar("offset", __w::Value::Int { value: fr.offset as u64, hex: true }, false);
                                __w::Walk::walk(&fr.header, v);
                                match fr.decode(&ctx) {
                                    Ok(Record::Unknown { body, .. }) => v.blob("body", body, __w::BlobKind::Opaque, None),
                                    Ok(r) => {
                                        v.struct_begin("body", rt.name());
                                        __w::Walk::walk(&r, v);
                                        v.struct_end();
                                    }
                                    Err(e) => {
                                        v.blob("body", fr.body, __w::BlobKind::Opaque, None);
                                        v.scalar("error", __w::Value::Text(&e.to_string()), false);
                                    }
                                }
                            }
                            Err(e) => {
                                v.scalar("offset", __w::Value::Int { value: e.offset as u64, hex: true }, false);
                                v.scalar("error", __w::Value::Text(&e.to_string()), false);
                            }
                        }
                        v.struct_end();
                    }
                    v.array_end();
                    let rest = it.rest();
                    if !rest.is_empty() {
                        v.blob("trailing", rest, __w::BlobKind::Opaque, None);
                    }
                }
            }
        }
    }

    fn constant(&self, c: &Constant) -> TokenStream {
        let name = format_ident!("{}", c.name);
        let doc = doc_attr(&c.doc);
        match (Scalar::parse(&c.ty), c.value, &c.text) {
            (Some(s), Some(v), _) => {
                let ty = scalar_ty(s);
                let v = hex_lit(s, v);
                quote!(#doc pub const #name: #ty = #v;)
            }
            (_, _, Some(t)) => {
                let n = t.len();
                let b = proc_macro2::Literal::byte_string(t.as_bytes());
                quote!(#doc pub const #name: [u8; #n] = *#b;)
            }
            _ => quote!(),
        }
    }

    fn enum_(&self, e: &Enum) -> TokenStream {
        let name = type_ident(&e.name);
        let s = Scalar::parse(&e.ty).unwrap_or(Scalar::U32);
        let ty = scalar_ty(s);
        let doc = doc_attr(&e.doc);
        let consts = e.values.iter().map(|v| {
            let n = format_ident!("{}", v.name);
            let d = doc_attr(&v.doc);
            let val = hex_lit(s, v.value);
            quote!(#d pub const #n: Self = Self(#val);)
        });
        let all = e.values.iter().map(|v| format_ident!("{}", v.name));
        let names = e.values.iter().map(|v| {
            let val = int_lit(s, v.value);
            let n = &v.name;
            quote!(#val => Some(#n),)
        });
        let docs = e.values.iter().map(|v| {
            let val = int_lit(s, v.value);
            let d = v.doc.trim();
            quote!(#val => Some(#d),)
        });
        let attrs = e.attributes.iter().map(|a| {
            let an = ident(&a.name);
            let d = doc_attr(&a.doc);
            if let Some(t) = a.ty.as_deref().and_then(Scalar::parse) {
                // An integer attribute: the value each variant gives, `None` for the others.
                let rt = scalar_ty(t);
                let arms = e.values.iter().filter_map(|v| {
                    let n = v.attrs.get(&a.name)?.as_u64()?;
                    let val = int_lit(s, v.value);
                    let n = int_lit(t, n);
                    Some(quote!(#val => Some(#n),))
                });
                return quote!(#d pub fn #an(self) -> Option<#rt> { match self.0 { #(#arms)* _ => None } });
            }
            let vals: Vec<Literal> = e
                .values
                .iter()
                .filter(|v| v.attrs.get(&a.name).and_then(|x| x.as_bool()) == Some(true))
                .map(|v| int_lit(s, v.value))
                .collect();
            if vals.is_empty() {
                quote!(#d pub fn #an(self) -> bool { false })
            } else {
                quote!(#d pub fn #an(self) -> bool { matches!(self.0, #(#vals)|*) })
            }
        });
        let unknown = format!("{}(", e.name);
        quote! {
            #doc
            #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
            pub struct #name(pub #ty);
            impl #name {
                #(#consts)*
                /// Every value the spec defines.
                pub const KNOWN: &'static [Self] = &[#(Self::#all),*];
                /// The spec's name for this value, if it defines one.
                pub fn name(self) -> Option<&'static str> {
                    match self.0 { #(#names)* _ => None }
                }
                /// What the spec says about this value.
                pub fn doc(self) -> Option<&'static str> {
                    match self.0 { #(#docs)* _ => None }
                }
                /// Whether the spec defines this value.
                pub fn is_known(self) -> bool {
                    self.name().is_some()
                }
                #(#attrs)*
            }
            impl ::core::fmt::Debug for #name {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    match self.name() {
                        Some(n) => f.write_str(n),
                        None => write!(f, "{}{:#x})", #unknown, self.0),
                    }
                }
            }
            impl ::core::fmt::Display for #name {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    ::core::fmt::Debug::fmt(self, f)
                }
            }
            impl From<#ty> for #name {
                fn from(v: #ty) -> Self { Self(v) }
            }
            impl From<#name> for #ty {
                fn from(v: #name) -> #ty { v.0 }
            }
        }
    }

    fn flags(&self, fl: &Flags) -> TokenStream {
        let name = type_ident(&fl.name);
        let s = Scalar::parse(&fl.ty).unwrap_or(Scalar::U32);
        let ty = scalar_ty(s);
        let doc = doc_attr(&fl.doc);
        let mask: u64 = fl.bits.iter().fold(0, |m, b| m | (1u64 << b.bit));
        let mask = hex_lit(s, mask);
        let consts = fl.bits.iter().map(|b| {
            let n = format_ident!("{}", b.name);
            let d = doc_attr(&b.doc);
            let v = hex_lit(s, 1u64 << b.bit);
            quote!(#d pub const #n: Self = Self(#v);)
        });
        let named = fl.bits.iter().map(|b| {
            let n = format_ident!("{}", b.name);
            let ns = &b.name;
            quote!((Self::#n, #ns))
        });
        quote! {
            #doc
            #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct #name(pub #ty);
            impl #name {
                #(#consts)*
                /// The bits the spec defines; every other bit is reserved.
                pub const KNOWN_MASK: #ty = #mask;
                /// Each defined bit with its name.
                pub const NAMED: &'static [(Self, &'static str)] = &[#(#named),*];
                /// Whether every bit of `other` is set.
                pub fn contains(self, other: Self) -> bool { self.0 & other.0 == other.0 }
                /// The reserved bits that are set.
                pub fn reserved_bits(self) -> #ty { self.0 & !Self::KNOWN_MASK }
                /// The same flags with the bits of `other` set.
                pub fn with(self, other: Self) -> Self { Self(self.0 | other.0) }
            }
            impl ::core::fmt::Debug for #name {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    let mut first = true;
                    for (bit, n) in Self::NAMED {
                        if self.contains(*bit) {
                            if !first { f.write_str(" | ")?; }
                            f.write_str(n)?;
                            first = false;
                        }
                    }
                    let r = self.reserved_bits();
                    if r != 0 {
                        if !first { f.write_str(" | ")?; }
                        write!(f, "{:#x}", r)?;
                        first = false;
                    }
                    if first { f.write_str("0")?; }
                    Ok(())
                }
            }
            impl From<#ty> for #name {
                fn from(v: #ty) -> Self { Self(v) }
            }
            impl From<#name> for #ty {
                fn from(v: #name) -> #ty { v.0 }
            }
        }
    }

    fn bitfield(&self, b: &Bitfield) -> TokenStream {
        let name = type_ident(&b.name);
        let base = Scalar::parse(&b.base).unwrap_or(Scalar::U64);
        let ty = scalar_ty(base);
        let size = base.size() as usize;
        let doc = doc_attr(&b.doc);
        let mut accessors = Vec::new();
        let mut checks = Vec::new();
        let mut debug_fields = Vec::new();
        let mut walks = Vec::new();
        for m in &b.fields {
            let Some((lo, hi)) = crate::parse_bits(&m.bits) else {
                continue;
            };
            let width = hi - lo + 1;
            let mask_v = if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            let mask = hex_lit(base, mask_v);
            let mname = ident(&m.name);
            let setter = format_ident!("with_{}", m.name);
            let mask_c = format_ident!("{}_MASK", m.name.to_ascii_uppercase());
            let shift_c = format_ident!("{}_SHIFT", m.name.to_ascii_uppercase());
            let d = doc_attr(&format!("{} (bits {}..={})", m.doc.trim(), lo, hi));
            let lo_l = Literal::u32_unsuffixed(lo);
            let mn = &m.name;
            accessors.push(quote! {
                #[doc = concat!(" Mask of `", #mn, "` after shifting.")]
                pub const #mask_c: #ty = #mask;
                #[doc = concat!(" Position of `", #mn, "`.")]
                pub const #shift_c: u32 = #lo_l;
            });
            if let Some(en) = m.enum_name.as_ref().and_then(|n| self.spec.enum_(n)) {
                let et = type_ident(&en.name);
                let es = scalar_ty(Scalar::parse(&en.ty).unwrap_or(Scalar::U32));
                accessors.push(quote! {
                    #d
                    pub fn #mname(self) -> #et { #et(((self.0 >> Self::#shift_c) & Self::#mask_c) as #es) }
                    #[doc = concat!(" The same value with another `", #mn, "`.")]
                    pub fn #setter(self, v: #et) -> Self {
                        Self((self.0 & !(Self::#mask_c << Self::#shift_c)) | (((v.0 as #ty) & Self::#mask_c) << Self::#shift_c))
                    }
                });
                if m.known != Some(false) {
                    let level = level_ts(m.level, LevelName::Required);
                    let rule = format!("{}.{}.known", b.name, m.name);
                    checks.push(quote! {
                        if !self.#mname().is_known() && strictness.enforces(#level) {
                            return Err(__w::DecodeError {
                                item, rule: #rule, level: #level, offset,
                                detail: format!("element {} ({:#x}): `{}` {:#x} is not a known {}", index, self.0, #mn, self.#mname().0, stringify!(#et)),
                            });
                        }
                    });
                }
            } else {
                accessors.push(quote! {
                    #d
                    pub fn #mname(self) -> #ty { (self.0 >> Self::#shift_c) & Self::#mask_c }
                    #[doc = concat!(" The same value with another `", #mn, "`.")]
                    pub fn #setter(self, v: #ty) -> Self {
                        Self((self.0 & !(Self::#mask_c << Self::#shift_c)) | ((v & Self::#mask_c) << Self::#shift_c))
                    }
                });
                if m.reserved {
                    let level = level_ts(m.level, LevelName::Strict);
                    let rule = format!("{}.{}.reserved", b.name, m.name);
                    let bits = format!("{lo}..={hi}");
                    checks.push(quote! {
                        if self.#mname() != 0 && strictness.enforces(#level) {
                            return Err(__w::DecodeError {
                                item, rule: #rule, level: #level, offset,
                                detail: format!("element {} ({:#x}): reserved bits {} are {:#x}, must be 0", index, self.0, #bits, self.#mname()),
                            });
                        }
                    });
                }
            }
            if !m.reserved {
                debug_fields.push(quote!(.field(#mn, &self.#mname())));
            }
            match m.enum_name.as_ref().and_then(|n| self.spec.enum_(n)) {
                Some(en) => {
                    let en_name = &en.name;
                    walks.push(quote! {
                        v.scalar(#mn, __w::Value::Enum { value: self.#mname().0 as u64, name: self.#mname().name(), enum_name: #en_name }, false);
                    });
                }
                None => {
                    let hex = Self::hex(m.display, m.reserved);
                    let reserved = m.reserved;
                    walks.push(quote! {
                        v.scalar(#mn, __w::Value::Int { value: self.#mname() as u64, hex: #hex }, #reserved);
                    });
                }
            }
        }
        let has_checks = !checks.is_empty();
        let nm = &b.name;
        let read = match base {
            Scalar::U8 => quote!(Self(bytes.first().copied().unwrap_or(0))),
            _ => quote!(Self(<#ty as __w::Element>::read(bytes, __endian))),
        };
        let write = match base {
            Scalar::U8 => quote!(put.u8(self.0)),
            _ => quote!(<#ty as __w::Element>::write(&self.0, put)),
        };
        quote! {
            #doc
            #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct #name(pub #ty);
            impl #name {
                #(#accessors)*
                /// Whether element checks exist for this bitfield.
                pub const HAS_CHECKS: bool = #has_checks;
                /// Checks reserved members and enum members of one element.
                pub fn check(self, strictness: __w::Strictness, item: &'static str, index: usize, offset: usize) -> Result<(), __w::DecodeError> {
                    let _ = (strictness, item, index, offset);
                    #(#checks)*
                    Ok(())
                }
            }
            impl ::core::fmt::Debug for #name {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.debug_struct(#nm) #(#debug_fields)* .finish()
                }
            }
            impl __w::Element for #name {
                const SIZE: usize = #size;
                fn read(bytes: &[u8], __endian: __w::Endian) -> Self { #read }
                fn write(&self, put: &mut __w::Put<'_>) { #write }
            }
            impl __w::Walk for #name {
                fn item_name(&self) -> &'static str { #nm }
                fn walk(&self, v: &mut dyn __w::Visitor) { #(#walks)* }
            }
        }
    }

    /// Whether a field list needs a lifetime (it borrows from the input).
    fn borrows(&self, fields: &[Field]) -> bool {
        fields
            .iter()
            .any(|f| !matches!(self.spec.kind(f), Some(FieldKind::One(_))))
    }

    /// Fields that only count another field and are not stored.
    fn count_fields<'f>(&self, fields: &'f [Field]) -> Vec<(&'f str, &'f str)> {
        fields
            .iter()
            .filter_map(|f| Some((self.spec.count_field(f)?, f.name.as_str())))
            .collect()
    }

    /// The Rust type of a stored field.
    fn field_type(&self, f: &Field) -> TokenStream {
        let elem_ty = |e: Elem<'_>| -> TokenStream {
            match e {
                Elem::Int(s) => {
                    if let Some(en) = &f.enum_name {
                        let t = type_ident(en);
                        quote!(#t)
                    } else if let Some(fl) = &f.flags {
                        let t = type_ident(fl);
                        quote!(#t)
                    } else {
                        scalar_ty(s)
                    }
                }
                Elem::Bytes(n) => {
                    let n = n as usize;
                    quote!([u8; #n])
                }
                Elem::Bitfield(b) => {
                    let t = type_ident(&b.name);
                    quote!(#t)
                }
                Elem::Struct(s) => {
                    let t = type_ident(&s.name);
                    quote!(#t)
                }
            }
        };
        match self.spec.kind(f) {
            Some(FieldKind::One(e)) => elem_ty(e),
            Some(FieldKind::Array {
                elem: Elem::Int(Scalar::U8),
                ..
            }) => quote!(&'a [u8]),
            Some(FieldKind::Array {
                elem: Elem::Bytes(_),
                ..
            }) => quote!(&'a [u8]),
            Some(FieldKind::Array { elem, .. }) => {
                let t = match elem {
                    Elem::Int(s) => scalar_ty(s),
                    other => elem_ty(other),
                };
                quote!(__w::Array<'a, #t>)
            }
            Some(FieldKind::Blob) | Some(FieldKind::Pages { .. }) => quote!(&'a [u8]),
            Some(FieldKind::CStrings { .. }) => quote!(__w::CStrings<'a>),
            None => quote!(()),
        }
    }

    /// The u64 value of an integer field held in local `v`.
    fn int_value(&self, f: &Field, v: &TokenStream) -> TokenStream {
        if f.enum_name.is_some() || f.flags.is_some() {
            quote!((#v.0 as u64))
        } else {
            quote!((#v as u64))
        }
    }

    /// Decoding statements for a field list: binds each field to a local of its name.
    /// `item` is the name used in errors; `ctx` and `endian` are in scope.
    fn decode_fields(&self, fields: &[Field]) -> TokenStream {
        let spec = self.spec;
        let mut out = Vec::new();
        for f in fields {
            let name = ident(&f.name);
            let fname = &f.name;
            let at = format_ident!("__at_{}", f.name);
            out.push(quote!(let #at = __c.pos(); let _ = #at;));
            let Some(kind) = spec.kind(f) else { continue };
            match kind {
                FieldKind::One(e) => {
                    let read = match e {
                        Elem::Int(Scalar::U8) => quote!(__c.u8(#fname)?),
                        Elem::Int(Scalar::U16) => quote!(__c.u16(#fname)?),
                        Elem::Int(Scalar::U32) => quote!(__c.u32(#fname)?),
                        Elem::Int(Scalar::U64) => quote!(__c.u64(#fname)?),
                        Elem::Bytes(n) => {
                            let n = n as usize;
                            quote!(__c.array::<#n>(#fname)?)
                        }
                        Elem::Bitfield(b) => {
                            let t = type_ident(&b.name);
                            let sz = Scalar::parse(&b.base).map_or(8, Scalar::size) as usize;
                            quote!(<#t as __w::Element>::read(__c.take(#fname, #sz)?, __endian))
                        }
                        Elem::Struct(s) => {
                            let t = type_ident(&s.name);
                            let sz = spec.elem_size(Elem::Struct(s)) as usize;
                            quote!(<#t as __w::Element>::read(__c.take(#fname, #sz)?, __endian))
                        }
                    };
                    let wrap = if let Some(en) = &f.enum_name {
                        let t = type_ident(en);
                        quote!(#t(#read))
                    } else if let Some(fl) = &f.flags {
                        let t = type_ident(fl);
                        quote!(#t(#read))
                    } else {
                        read
                    };
                    out.push(quote!(let #name = #wrap;));
                    out.push(self.constraints(Mode::Decode, f, e));
                }
                FieldKind::Array { elem, count } => {
                    let esize = spec.elem_size(elem) as usize;
                    let take = match &count {
                        Count::Field(cf) => {
                            let cf_id = ident(cf);
                            let rule = format!("{}.length", f.name);
                            quote! {
                                let __n = usize::try_from(#cf_id).unwrap_or(usize::MAX);
                                let __len = __n.checked_mul(#esize).unwrap_or(usize::MAX);
                                if __len > __c.remaining() {
                                    return Err(__c.fail(#rule, __w::Level::Required, #at, format!(
                                        "`{}` = {} elements of {} octets need {} octets, {} remain",
                                        #cf, __n, #esize, __len, __c.remaining())));
                                }
                                let __bytes = __c.take(#fname, __len)?;
                            }
                        }
                        Count::Fixed { n, .. } => {
                            let rule = format!("{}.length", f.name);
                            let len = (*n as usize).saturating_mul(esize);
                            quote! {
                                if #len > __c.remaining() {
                                    return Err(__c.fail(#rule, __w::Level::Required, #at, format!(
                                        "{} elements of {} octets need {} octets, {} remain",
                                        #n, #esize, #len, __c.remaining())));
                                }
                                let __bytes = __c.take(#fname, #len)?;
                            }
                        }
                        Count::Rest => {
                            let rule = format!("{}.length", f.name);
                            quote! {
                                if __c.remaining() % #esize != 0 {
                                    return Err(__c.fail(#rule, __w::Level::Required, #at, format!(
                                        "{} octets remain for `{}`, not a multiple of its {}-octet elements",
                                        __c.remaining(), #fname, #esize)));
                                }
                                let __bytes = __c.rest();
                            }
                        }
                    };
                    let value = match elem {
                        Elem::Int(Scalar::U8) | Elem::Bytes(_) => quote!(__bytes),
                        _ => quote!(__w::Array::Encoded {
                            bytes: __bytes,
                            endian: __endian
                        }),
                    };
                    let check = match elem {
                        Elem::Bitfield(b) => {
                            let t = type_ident(&b.name);
                            quote! {
                                if #t::HAS_CHECKS {
                                    for (__i, __e) in #name.iter().enumerate() {
                                        __e.check(ctx.strictness, Self::NAME, __i, #at + __i * #esize)?;
                                    }
                                }
                            }
                        }
                        _ => quote!(),
                    };
                    let len_name = format_ident!("len_{}", f.name);
                    let fty = self.field_type(f);
                    out.push(quote! {
                        #take
                        let #name: #fty = #value;
                        #check
                        let #len_name = (__bytes.len() / #esize) as u64;
                        let _ = #len_name;
                    });
                }
                FieldKind::Blob => {
                    out.push(quote!(let #name = __c.rest();));
                }
                FieldKind::CStrings { pairs } => {
                    let term_rule = format!("{}.terminated", f.name);
                    let pairs_check = if pairs {
                        let rule = format!("{}.pairs", f.name);
                        quote! {
                            if #name.count() % 2 != 0 {
                                return Err(__c.fail(#rule, __w::Level::Required, #at, format!(
                                    "{} strings: keys and values must pair up", #name.count())));
                            }
                        }
                    } else {
                        quote!()
                    };
                    out.push(quote! {
                        let #name = __w::CStrings::from_bytes(__c.rest());
                        if !#name.terminated() {
                            return Err(__c.fail(#term_rule, __w::Level::Required, #at,
                                "the last string is not NUL-terminated".to_string()));
                        }
                        #pairs_check
                    });
                }
                FieldKind::Pages { field, attr, .. } => {
                    let src = ident(&field);
                    let (member, _) = self.attr_member(fields, &field);
                    let member = ident(&member);
                    let attr_id = ident(&attr);
                    let rule = format!("{}.length", f.name);
                    // The format's own constant, so the generated code names where it comes from.
                    let page_size = format_ident!("{}", PAGE_SIZE_CONSTANT);
                    let ps = quote!((#page_size as usize));
                    // The body's last `ctx.deferred` octets may be held back by the reader
                    // (page octets handed out apart): they count toward the length, and the
                    // field holds only the page octets present.
                    out.push(quote! {
                        let __pages = #src.iter().filter(|e| e.#member().#attr_id()).count();
                        let __len = __pages.checked_mul(#ps).unwrap_or(usize::MAX);
                        let __there = __c.remaining().saturating_add(ctx.deferred);
                        if __len != __there {
                            return Err(__c.fail(#rule, __w::Level::Required, #at, format!(
                                "{} entries carry data and need {} octets of pages, {} octets remain",
                                __pages, __len, __there)));
                        }
                        let #name = __c.take(#fname, __len - ctx.deferred)?;
                    });
                }
            }
        }
        quote!(#(#out)*)
    }

    /// For `count_where`: the bitfield member (with an enum) of the array field `field`.
    fn attr_member(&self, fields: &[Field], field: &str) -> (String, String) {
        let b = fields
            .iter()
            .find(|g| g.name == field)
            .and_then(|g| self.spec.bitfield(&g.ty));
        let m = b.and_then(|b| b.fields.iter().find(|m| m.enum_name.is_some()));
        (
            m.map(|m| m.name.clone()).unwrap_or_default(),
            m.and_then(|m| m.enum_name.clone()).unwrap_or_default(),
        )
    }

    /// A failed check as code: a decoder returns a [`DecodeError`] at the field's offset when
    /// the strictness enforces `level`; an encoder returns an `EncodeError` naming the rule,
    /// and only checks `required` rules (the level Xen's restore code enforces), so it never
    /// writes what a lenient decoder refuses. `None` for a check the mode leaves out.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        mode: Mode,
        field: &str,
        rule: &str,
        level: LevelName,
        at: TokenStream,
        cond: TokenStream,
        detail: TokenStream,
    ) -> Option<TokenStream> {
        match mode {
            Mode::Decode => {
                let level = level_ts(Some(level), level);
                Some(quote! {
                    if #cond && ctx.strictness.enforces(#level) {
                        return Err(__c.fail(#rule, #level, #at, #detail));
                    }
                })
            }
            Mode::Encode if level == LevelName::Required => Some(quote! {
                if #cond {
                    return Err(__w::EncodeError {
                        item: Self::NAME, field: #field, rule: Some(#rule), detail: #detail,
                    });
                }
            }),
            Mode::Encode => None,
        }
    }

    /// Checks on a single field held in the local of its name.
    fn constraints(&self, mode: Mode, f: &Field, e: Elem<'_>) -> TokenStream {
        let name = ident(&f.name);
        let fname = &f.name;
        let at_id = format_ident!("__at_{}", f.name);
        let at = quote!(#at_id);
        let mut out = Vec::new();
        let level = f.level.unwrap_or(LevelName::Required);
        let reserved_level = f.level.unwrap_or(LevelName::Strict);
        let v = self.int_value(f, &quote!(#name));
        if let Elem::Int(s) = e {
            if let Some(val) = &f.value {
                let (expect, shown) = match val {
                    IntOrName::Int(n) => (hex_lit(s, *n), format!("{n:#x}")),
                    IntOrName::Name(c) => {
                        let k = format_ident!("{}", c);
                        (quote!(#k), c.clone())
                    }
                };
                let rule = format!("{fname}.value");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    level,
                    at.clone(),
                    quote!(#v != (#expect as u64)),
                    quote!(
                        format!("`{}` is {:#x}, must be {} ({:#x})", #fname, #v, #shown, #expect)
                    ),
                ));
            }
            if let Some(vals) = &f.one_of {
                let lits = vals.iter().map(|x| Literal::u64_suffixed(*x));
                let shown = vals
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let rule = format!("{fname}.one_of");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    level,
                    at.clone(),
                    quote!(!matches!(#v, #(#lits)|*)),
                    quote!(format!("`{}` is {}, must be one of {}", #fname, #v, #shown)),
                ));
            }
            if let Some(m) = f.min {
                let rule = format!("{fname}.min");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    level,
                    at.clone(),
                    quote!(#v < #m),
                    quote!(format!("`{}` is {}, must be at least {}", #fname, #v, #m)),
                ));
            }
            if let Some(m) = f.max {
                let rule = format!("{fname}.max");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    level,
                    at.clone(),
                    quote!(#v > #m),
                    quote!(format!("`{}` is {}, must be at most {}", #fname, #v, #m)),
                ));
            }
            if f.enum_name.is_some() && f.known != Some(false) {
                let rule = format!("{fname}.known");
                let en = f.enum_name.clone().unwrap_or_default();
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    level,
                    at.clone(),
                    quote!(!#name.is_known()),
                    quote!(format!("`{}` is {:#x}, not a known {}", #fname, #v, #en)),
                ));
            }
            if f.flags.is_some() {
                let rule = format!("{fname}.reserved_bits");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    level,
                    at.clone(),
                    quote!(#name.reserved_bits() != 0),
                    quote!(format!("`{}` is {:#x}: reserved bits {:#x} are set", #fname, #v, #name.reserved_bits())),
                ));
            }
            if f.reserved {
                let rule = format!("{fname}.reserved");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    reserved_level,
                    at.clone(),
                    quote!(#v != 0),
                    quote!(format!("reserved `{}` is {:#x}, must be 0", #fname, #v)),
                ));
            }
        }
        if let Elem::Bytes(_) = e {
            if let Some(IntOrName::Name(k)) = &f.value {
                let kid = format_ident!("{}", k);
                let rule = format!("{fname}.value");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    level,
                    at.clone(),
                    quote!(#name != #kid),
                    quote!(format!("`{}` is {:02x?}, must be {}", #fname, &#name[..], #k)),
                ));
            }
            if f.reserved {
                let rule = format!("{fname}.reserved");
                out.push(self.check(
                    mode,
                    fname,
                    &rule,
                    reserved_level,
                    at.clone(),
                    quote!(#name.iter().any(|b| *b != 0)),
                    quote!(
                        format!("reserved `{}` is {:02x?}, must be all zero", #fname, &#name[..])
                    ),
                ));
            }
        }
        let out = out.into_iter().flatten();
        quote!(#(#out)*)
    }

    /// Rule checks over locals; integer fields are converted to u64 first. When encoding,
    /// rules that name a context value (unknown to an encoder) are left to the decoder.
    fn rules(&self, mode: Mode, fields: &[Field], rules: &[Rule]) -> TokenStream {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let Some(e) = self.spec.expr(&r.check) else {
                continue;
            };
            let mut names = Vec::new();
            e.names(&mut names);
            if mode == Mode::Encode && names.iter().any(|n| matches!(n, Expr::Ctx(_))) {
                continue;
            }
            let params: Vec<Ident> = names.iter().map(|n| ident(&n.local_name())).collect();
            let mut binds = Vec::new();
            let mut args = Vec::new();
            let mut ctx_opts = Vec::new();
            for n in &names {
                let local = ident(&n.local_name());
                match n {
                    Expr::Name(f) if f == "body_length" => match mode {
                        Mode::Decode => args.push(quote!((__c.total() as u64))),
                        Mode::Encode => args.push(quote!((self.encoded_len() as u64))),
                    },
                    Expr::Name(f) => {
                        let field = fields.iter().find(|x| &x.name == f);
                        let id = ident(f);
                        args.push(match field {
                            Some(fd) => self.int_value(fd, &quote!(#id)),
                            None => quote!((#id as u64)),
                        });
                    }
                    Expr::Len(_) => args.push(quote!(#local)),
                    Expr::Ctx(c) if c == "version" => args.push(quote!((ctx.version as u64))),
                    Expr::Ctx(c) => {
                        let cid = ident(c);
                        ctx_opts.push(quote!(let Some(#local) = ctx.#cid else { break 'rule; };));
                        args.push(quote!(#local));
                    }
                    _ => {}
                }
                binds.push(local);
            }
            let body = e.to_rust();
            let fn_name = format_ident!("__rule_{}", i);
            let rule_name = &r.name;
            let check_text = &r.check;
            let shown: Vec<String> = names
                .iter()
                .map(|n| format!("{} = {{:#x}}", n.spelling()))
                .collect();
            let fmt = format!("`{}` does not hold: {}", check_text, shown.join(", "));
            let Some(fail) = self.check(
                mode,
                rule_name,
                rule_name,
                r.level.unwrap_or(LevelName::Required),
                quote!(0),
                quote!(#fn_name(#(#binds),*) != Some(true)),
                quote!(format!(#fmt, #(#binds),*)),
            ) else {
                continue;
            };
            out.push(quote! {
                'rule: {
                    #(#ctx_opts)*
                    #[allow(clippy::too_many_arguments)]
                    fn #fn_name(#(#params: u64),*) -> Option<bool> { Some(#body) }
                    let __args = (#(#args,)*);
                    let (#(#binds,)*) = __args;
                    #fail
                }
            });
        }
        quote!(#(#out)*)
    }

    /// Encoding statements for a field list held in `self`, writing to `sink`.
    fn encode_fields(
        &self,
        item: &str,
        fields: &[Field],
        rules: &[Rule],
        empty_payload: bool,
        order: TokenStream,
    ) -> TokenStream {
        let spec = self.spec;
        let counts = self.count_fields(fields);
        let mut pre = Vec::new();
        let mut out = Vec::new();
        let checks = self.encode_checks(fields, rules, empty_payload);
        for f in fields {
            let name = ident(&f.name);
            let Some(kind) = spec.kind(f) else { continue };
            if let Some((_, arr)) = counts.iter().find(|(c, _)| *c == f.name) {
                // A count field: derived from the array's length.
                let arr_id = ident(arr);
                let s = Scalar::parse(&f.ty).unwrap_or(Scalar::U32);
                let ty = scalar_ty(s);
                let fname = &f.name;
                pre.push(quote! {
                    let #name: #ty = <#ty>::try_from(self.#arr_id.len()).map_err(|_| __w::EncodeError {
                        item: #item, field: #fname, rule: None,
                        detail: format!("{} elements do not fit in {}", self.#arr_id.len(), stringify!(#ty)),
                    })?;
                });
                out.push(self.put_scalar(s, quote!(#name)));
                continue;
            }
            match kind {
                FieldKind::One(e) => {
                    let v = if f.enum_name.is_some() || f.flags.is_some() {
                        quote!(self.#name.0)
                    } else {
                        quote!(self.#name)
                    };
                    match e {
                        Elem::Int(s) => out.push(self.put_scalar(s, v)),
                        Elem::Bytes(_) => out.push(quote!(__w::Put { out: &mut *scratch, endian: #order }.bytes(&self.#name);)),
                        Elem::Bitfield(_) | Elem::Struct(_) => out.push(quote! {
                            __w::Element::write(&self.#name, &mut __w::Put { out: &mut *scratch, endian: #order });
                        }),
                    }
                }
                FieldKind::Array { elem, .. } => match elem {
                    Elem::Int(Scalar::U8) | Elem::Bytes(_) => out.push(quote! {
                        sink.copy(scratch); scratch.clear();
                        sink.borrow(self.#name);
                    }),
                    _ => out.push(quote! {
                        sink.copy(scratch); scratch.clear();
                        self.#name.encode_to(sink, #order, scratch);
                        scratch.clear();
                    }),
                },
                FieldKind::Blob => out.push(quote! {
                    sink.copy(scratch); scratch.clear();
                    sink.borrow(self.#name);
                }),
                FieldKind::CStrings { .. } => out.push(quote! {
                    sink.copy(scratch); scratch.clear();
                    sink.borrow(self.#name.as_bytes());
                }),
                FieldKind::Pages { field, attr, .. } => {
                    let src = ident(&field);
                    let (member, _) = self.attr_member(fields, &field);
                    let member = ident(&member);
                    let attr_id = ident(&attr);
                    let fname = &f.name;
                    let rule = format!("{}.length", f.name);
                    // The format's own constant, so the generated code names where it comes from.
                    let page_size = format_ident!("{}", PAGE_SIZE_CONSTANT);
                    let ps = quote!((#page_size as usize));
                    pre.push(quote! {
                        let __pages = self.#src.iter().filter(|e| e.#member().#attr_id()).count();
                        if Some(self.#name.len()) != __pages.checked_mul(#ps) {
                            return Err(__w::EncodeError {
                                item: #item, field: #fname, rule: Some(#rule),
                                detail: format!("{} entries carry data, so {} octets of pages are needed, {} given",
                                    __pages, __pages.saturating_mul(#ps), self.#name.len()),
                            });
                        }
                    });
                    out.push(quote! {
                        sink.copy(scratch); scratch.clear();
                        sink.borrow(self.#name);
                    });
                }
            }
        }
        quote! {
            #(#pre)*
            #checks
            scratch.clear();
            #(#out)*
            sink.copy(scratch);
            scratch.clear();
        }
    }

    /// Whether an integer field or member is shown in hex: `display: hex`, or a reserved value
    /// without a `display`.
    fn hex(display: Option<Display>, reserved: bool) -> bool {
        display == Some(Display::Hex) || (display.is_none() && reserved)
    }

    /// The walk value of an integer held in `v` (typed as the field's enum or flags, if any).
    fn walk_value(&self, f: &Field, v: TokenStream) -> TokenStream {
        if let Some(en) = f.enum_name.as_ref().and_then(|n| self.spec.enum_(n)) {
            let en_name = &en.name;
            quote!(__w::Value::Enum { value: #v.0 as u64, name: #v.name(), enum_name: #en_name })
        } else if let Some(fl) = f.flags.as_ref().and_then(|n| self.spec.flags_(n)) {
            let bits = fl.bits.iter().map(|b| {
                let m = Literal::u64_suffixed(1u64 << b.bit);
                let n = &b.name;
                quote!((#m, #n))
            });
            quote!(__w::Value::Flags { value: #v.0 as u64, bits: &[#(#bits),*] })
        } else {
            let hex = Self::hex(f.display, f.reserved);
            quote!(__w::Value::Int { value: #v as u64, hex: #hex })
        }
    }

    /// `Walk::walk` body for a field list held in `self`: every stored field in spec order
    /// (count fields are reported with their array).
    fn walk_fields(&self, fields: &[Field]) -> TokenStream {
        let spec = self.spec;
        let counts = self.count_fields(fields);
        let mut out = Vec::new();
        for f in fields {
            let fname = &f.name;
            if let Some((_, arr)) = counts.iter().find(|(c, _)| *c == f.name) {
                // Not stored: on the wire it is the array's length.
                let arr = ident(arr);
                out.push(quote! {
                    v.scalar(#fname, __w::Value::Int { value: self.#arr.len() as u64, hex: false }, false);
                });
                continue;
            }
            let name = ident(&f.name);
            let reserved = f.reserved;
            let Some(kind) = spec.kind(f) else { continue };
            let count_field = match spec.count_field(f) {
                Some(c) => quote!(Some(#c)),
                None => quote!(None),
            };
            let show = if f.display == Some(Display::Summary) {
                quote!(__w::ArrayShow::Summary)
            } else {
                quote!(__w::ArrayShow::List)
            };
            match kind {
                FieldKind::One(Elem::Int(_)) => {
                    let value = self.walk_value(f, quote!(self.#name));
                    out.push(quote!(v.scalar(#fname, #value, #reserved);));
                }
                FieldKind::One(Elem::Bytes(_)) => {
                    out.push(
                        quote!(v.scalar(#fname, __w::Value::Bytes(&self.#name[..]), #reserved);),
                    );
                }
                FieldKind::One(Elem::Bitfield(b)) => {
                    let tn = &b.name;
                    out.push(quote! {
                        v.struct_begin(#fname, #tn);
                        __w::Walk::walk(&self.#name, v);
                        v.struct_end();
                    });
                }
                FieldKind::One(Elem::Struct(st)) => {
                    let tn = &st.name;
                    out.push(quote! {
                        v.struct_begin(#fname, #tn);
                        __w::Walk::walk(&self.#name, v);
                        v.struct_end();
                    });
                }
                FieldKind::Array {
                    elem: Elem::Int(Scalar::U8) | Elem::Bytes(_),
                    ..
                } => {
                    out.push(quote!(v.blob(#fname, self.#name, __w::BlobKind::Opaque, None);));
                }
                FieldKind::Array { elem, .. } => {
                    let info = quote!(__w::ArrayInfo { count: self.#name.len(), count_field: #count_field, show: #show });
                    match elem {
                        Elem::Int(_) => {
                            let hex = Self::hex(f.display, f.reserved);
                            out.push(
                                quote!(__w::walk_int_array(#fname, &self.#name, #hex, #info, v);),
                            );
                        }
                        Elem::Bitfield(b) => {
                            let tn = &b.name;
                            out.push(quote!(__w::walk_array(#fname, #tn, &self.#name, #info, v);));
                        }
                        Elem::Struct(st) => {
                            let tn = &st.name;
                            out.push(quote!(__w::walk_array(#fname, #tn, &self.#name, #info, v);));
                        }
                        Elem::Bytes(_) => {}
                    }
                }
                FieldKind::Blob => out.push(self.walk_blob(f)),
                FieldKind::Pages { .. } => {
                    let page_size = format_ident!("{}", PAGE_SIZE_CONSTANT);
                    out.push(quote! {
                        v.blob(#fname, self.#name, __w::BlobKind::Pages { page_size: #page_size as usize }, None);
                    });
                }
                FieldKind::CStrings { pairs } => {
                    out.push(quote!(v.strings(#fname, self.#name, #pairs);));
                }
            }
        }
        quote!(let _ = &v; #(#out)*)
    }

    /// The walk of a `blob` field: with its declared layout when the spec gives one.
    fn walk_blob(&self, f: &Field) -> TokenStream {
        let spec = self.spec;
        let fname = &f.name;
        let name = ident(&f.name);
        let opaque = quote!(v.blob(#fname, self.#name, __w::BlobKind::Opaque, None););
        let Some(l) = &f.layout else { return opaque };
        let module = |fmt: &str| {
            if fmt == spec.file.format {
                quote!(self)
            } else {
                let m = format_ident!("{}", fmt);
                quote!(super::#m)
            }
        };
        if let Some(fmt) = &l.records {
            let m = module(fmt);
            return quote! {
                v.blob(#fname, self.#name, __w::BlobKind::Opaque, Some(&#m::Frames::new(self.#name)));
            };
        }
        let arms = l.structs.iter().filter_map(|q| {
            let (other, st) = spec.layout_struct(q)?;
            let m = module(&other.file.format);
            let t = type_ident(&st.name);
            let order = endian_expr(other.struct_order(st));
            Some(quote! {
                n if n == <#m::#t as __w::Element>::SIZE => {
                    let s = <#m::#t as __w::Element>::read(self.#name, #order);
                    v.blob(#fname, self.#name, __w::BlobKind::Opaque, Some(&s));
                }
            })
        });
        quote! {
            match self.#name.len() {
                #(#arms)*
                _ => { #opaque }
            }
        }
    }

    /// The encoder's copy of the decoder's `required` checks, over locals bound from `self`
    /// (count fields are bound by the caller, from their array's length).
    fn encode_checks(&self, fields: &[Field], rules: &[Rule], empty_payload: bool) -> TokenStream {
        let spec = self.spec;
        let counts = self.count_fields(fields);
        let mut out = Vec::new();
        for f in fields {
            let name = ident(&f.name);
            let fname = &f.name;
            let Some(kind) = spec.kind(f) else { continue };
            let is_count = counts.iter().any(|(c, _)| *c == f.name);
            match kind {
                FieldKind::One(e @ (Elem::Int(_) | Elem::Bytes(_))) => {
                    if !is_count {
                        out.push(quote!(let #name = self.#name; let _ = &#name;));
                    }
                    out.push(self.constraints(Mode::Encode, f, e));
                }
                FieldKind::Array { elem, count } => {
                    let len_name = format_ident!("len_{}", f.name);
                    let esize = spec.elem_size(elem) as usize;
                    if let Count::Fixed { n, .. } = count {
                        let rule = format!("{}.length", f.name);
                        let len = (n as usize).saturating_mul(esize);
                        let have = match elem {
                            Elem::Int(Scalar::U8) | Elem::Bytes(_) => quote!(self.#name.len()),
                            _ => quote!(self.#name.encoded_len()),
                        };
                        out.push(quote! {
                            if #have != #len {
                                return Err(__w::EncodeError {
                                    item: Self::NAME, field: #fname, rule: Some(#rule),
                                    detail: format!("{} elements of {} octets make {} octets, {} given",
                                        #n, #esize, #len, #have),
                                });
                            }
                        });
                    }
                    let len = match elem {
                        Elem::Int(Scalar::U8) | Elem::Bytes(_) => {
                            quote!((self.#name.len() / #esize) as u64)
                        }
                        _ => quote!(self.#name.len() as u64),
                    };
                    out.push(quote!(let #len_name = #len; let _ = #len_name;));
                    if let Elem::Bitfield(b) = elem {
                        let t = type_ident(&b.name);
                        out.push(quote! {
                            if #t::HAS_CHECKS {
                                for (__i, __e) in self.#name.iter().enumerate() {
                                    __e.check(__w::Strictness::Lenient, Self::NAME, __i, 0).map_err(|e| __w::EncodeError {
                                        item: Self::NAME, field: #fname, rule: Some(e.rule), detail: e.detail,
                                    })?;
                                }
                            }
                        });
                    }
                }
                FieldKind::CStrings { pairs } => {
                    let term_rule = format!("{}.terminated", f.name);
                    out.push(quote! {
                        if !self.#name.terminated() {
                            return Err(__w::EncodeError {
                                item: Self::NAME, field: #fname, rule: Some(#term_rule),
                                detail: "the last string is not NUL-terminated".to_string(),
                            });
                        }
                    });
                    if pairs {
                        let rule = format!("{}.pairs", f.name);
                        out.push(quote! {
                            if self.#name.count() % 2 != 0 {
                                return Err(__w::EncodeError {
                                    item: Self::NAME, field: #fname, rule: Some(#rule),
                                    detail: format!("{} strings: keys and values must pair up", self.#name.count()),
                                });
                            }
                        });
                    }
                }
                _ => {}
            }
        }
        let rules = self.rules(Mode::Encode, fields, rules);
        let rules = if empty_payload {
            quote! {
                if self.encoded_len() > Self::MIN_SIZE {
                    #rules
                }
            }
        } else {
            rules
        };
        quote!(#(#out)* #rules)
    }

    fn put_scalar(&self, s: Scalar, v: TokenStream) -> TokenStream {
        let m = format_ident!("{}", s.name());
        quote!(__w::Put { out: &mut *scratch, endian: __order }.#m(#v);)
    }

    /// `encoded_len` body.
    fn len_expr(&self, fields: &[Field]) -> TokenStream {
        let spec = self.spec;
        let mut parts = Vec::new();
        for f in fields {
            let name = ident(&f.name);
            match spec.kind(f) {
                Some(FieldKind::One(e)) => {
                    let n = spec.elem_size(e) as usize;
                    parts.push(quote!(#n));
                }
                Some(FieldKind::Array {
                    elem: Elem::Int(Scalar::U8) | Elem::Bytes(_),
                    ..
                })
                | Some(FieldKind::Blob)
                | Some(FieldKind::Pages { .. }) => parts.push(quote!(self.#name.len())),
                Some(FieldKind::Array { .. }) => parts.push(quote!(self.#name.encoded_len())),
                Some(FieldKind::CStrings { .. }) => parts.push(quote!(self.#name.as_bytes().len())),
                None => {}
            }
        }
        if parts.is_empty() {
            quote!(0)
        } else {
            quote!(0usize #(.saturating_add(#parts))*)
        }
    }

    /// The type definition, `Default`, decoder and encoder shared by structs and records.
    #[allow(clippy::too_many_arguments)]
    fn body_type(
        &self,
        name: &Ident,
        item: &str,
        doc: &TokenStream,
        fields: &[Field],
        rules: &[Rule],
        trailing: Trailing,
        order: ByteOrder,
        extra_consts: TokenStream,
        empty_payload: bool,
    ) -> TokenStream {
        let spec = self.spec;
        let borrows = self.borrows(fields);
        let (lt, lt_use) = if borrows {
            (quote!(<'a>), quote!(<'a>))
        } else {
            (quote!(), quote!())
        };
        let counts = self.count_fields(fields);
        let stored: Vec<&Field> = fields
            .iter()
            .filter(|f| !counts.iter().any(|(c, _)| *c == f.name))
            .collect();
        let field_defs = stored.iter().map(|f| {
            let n = ident(&f.name);
            let t = self.field_type(f);
            let d = doc_attr(&f.doc);
            quote!(#d pub #n: #t,)
        });
        let field_names: Vec<Ident> = stored.iter().map(|f| ident(&f.name)).collect();
        let defaults = stored.iter().map(|f| {
            let n = ident(&f.name);
            let t = self.field_type(f);
            let v = match (&f.value, Scalar::parse(&f.ty), &f.one_of) {
                (None, Some(s), _) if f.default.is_some() => {
                    let lit = hex_lit(s, f.default.unwrap_or(0));
                    if f.enum_name.is_some() || f.flags.is_some() {
                        quote!(#t(#lit))
                    } else {
                        quote!(#lit)
                    }
                }
                (Some(IntOrName::Int(v)), Some(s), _) => {
                    let lit = hex_lit(s, *v);
                    if f.enum_name.is_some() || f.flags.is_some() {
                        quote!(#t(#lit))
                    } else {
                        quote!(#lit)
                    }
                }
                (Some(IntOrName::Name(k)), _, _) => {
                    let k = format_ident!("{}", k);
                    if f.enum_name.is_some() || f.flags.is_some() {
                        quote!(#t(#k))
                    } else {
                        quote!(#k)
                    }
                }
                (None, Some(s), Some(vals)) if !vals.is_empty() => {
                    let lit = int_lit(s, vals[0]);
                    if f.enum_name.is_some() || f.flags.is_some() {
                        quote!(#t(#lit))
                    } else {
                        quote!(#lit)
                    }
                }
                _ => match self.spec.kind(f) {
                    // `Default` stops at 32 elements; byte strings may be longer.
                    Some(FieldKind::One(Elem::Bytes(k))) => {
                        let k = k as usize;
                        quote!([0u8; #k])
                    }
                    _ => quote!(::core::default::Default::default()),
                },
            };
            quote!(#n: #v,)
        });
        let endian_setup = match order {
            ByteOrder::Stream => quote!(let __endian = ctx.endian;),
            other => {
                let e = endian_expr(other);
                quote!(let __endian = #e;)
            }
        };
        let decode = self.decode_fields(fields);
        let rules_spec = rules;
        let rules = self.rules(Mode::Decode, fields, rules);
        let trailing_kind = trailing;
        let min = spec.min_size(fields) as usize;
        let trailing = match trailing {
            Trailing::Reject => quote!(__c.finish(__w::Level::Required, ctx.strictness)?;),
            Trailing::Strict => quote!(__c.finish(__w::Level::Strict, ctx.strictness)?;),
            Trailing::Allow => quote!(),
        };
        let trailing = if fields.is_empty() {
            let level = match trailing_kind {
                Trailing::Strict => quote!(__w::Level::Strict),
                _ => quote!(__w::Level::Required),
            };
            if trailing_kind == Trailing::Allow {
                quote!()
            } else {
                quote! {
                    if !__body.is_empty() && ctx.strictness.enforces(#level) {
                        return Err(__c.fail("empty", #level, 0, format!(
                            "{} has no body, but its length is {}", Self::NAME, __body.len())));
                    }
                }
            }
        } else {
            trailing
        };
        // A record whose payload may be absent: its rules apply only when it is present.
        let rules = if empty_payload {
            quote! {
                if __c.total() > Self::MIN_SIZE {
                    #rules
                }
            }
        } else {
            rules
        };
        // The body's length against the fixed part, checked first so the error names it.
        let length_check = match (spec.fixed_size(fields), trailing_kind) {
            (Some(n), Trailing::Reject) if n > 0 => {
                let n = n as usize;
                quote! {
                    if __body.len() != #n {
                        return Err(__c.fail("length", __w::Level::Required, 0, format!(
                            "{} is exactly {} octets, this one has {}", Self::NAME, #n, __body.len())));
                    }
                }
            }
            _ if min > 0 => quote! {
                if __body.len() < #min {
                    return Err(__c.fail("length", __w::Level::Required, 0, format!(
                        "{} needs at least {} octets, this one has {}", Self::NAME, #min, __body.len())));
                }
            },
            _ => quote!(),
        };
        let enc_order = match order {
            ByteOrder::Stream => quote!(__endian),
            other => endian_expr(other),
        };
        let encode = self.encode_fields(item, fields, rules_spec, empty_payload, quote!(__order));
        let len = self.len_expr(fields);
        let walk = self.walk_fields(fields);
        let fixed = spec.fixed_size(fields).map(|n| {
            let n = n as usize;
            quote! {
                /// Octets the encoded value always takes.
                pub const SIZE: usize = #n;
            }
        });
        let offsets = spec.fixed_offsets(fields).into_iter().map(|(f, at)| {
            let n = format_ident!("{}_OFFSET", f.name.to_uppercase());
            let at = at as usize;
            let d = doc_attr(&format!(
                "Where `{}` starts, in octets from the start of the encoding.",
                f.name
            ));
            quote!(#d pub const #n: usize = #at;)
        });
        let sink_lt = if borrows { quote!('a) } else { quote!('s) };
        let encode_generics = if borrows {
            quote!(<S: __w::Sink<'a>>)
        } else {
            quote!(<'s, S: __w::Sink<'s>>)
        };
        let body_lt = if borrows {
            quote!(&'a [u8])
        } else {
            quote!(&[u8])
        };
        let copy = if fields
            .iter()
            .all(|f| matches!(spec.kind(f), Some(FieldKind::One(_))) || borrows)
        {
            quote!(Copy,)
        } else {
            quote!()
        };
        let _ = sink_lt;
        quote! {
            #doc
            #[derive(Debug, Clone, #copy PartialEq, Eq)]
            pub struct #name #lt { #(#field_defs)* }
            impl #lt #name #lt_use {
                /// The spec's name for this item.
                pub const NAME: &'static str = #item;
                #extra_consts
                #fixed
                /// Octets before the first variable-size field.
                pub const MIN_SIZE: usize = #min;
                #(#offsets)*
                /// Decodes and checks every rule the spec states for this item.
                pub fn decode(__body: #body_lt, ctx: &__w::DecodeCtx) -> Result<Self, __w::DecodeError> {
                    #endian_setup
                    let _ = __endian;
                    let mut __c = __w::Cursor::new(__body, __endian, Self::NAME);
                    #length_check
                    #decode
                    #trailing
                    #rules
                    Ok(Self { #(#field_names),* })
                }
                /// Octets the encoded value takes.
                pub fn encoded_len(&self) -> usize { #len }
                /// Encodes into `sink`, borrowing large parts; `scratch` is reused for small ones.
                pub fn encode_to #encode_generics (&self, __endian: __w::Endian, sink: &mut S, scratch: &mut Vec<u8>) -> Result<(), __w::EncodeError> {
                    let _ = __endian;
                    let __order = #enc_order;
                    let _ = __order;
                    #encode
                    Ok(())
                }
                /// Encodes into a new buffer.
                pub fn encode(&self, __endian: __w::Endian) -> Result<Vec<u8>, __w::EncodeError> {
                    let mut out = Vec::with_capacity(self.encoded_len());
                    let mut scratch = Vec::new();
                    self.encode_to(__endian, &mut out, &mut scratch)?;
                    Ok(out)
                }
            }
            impl #lt ::core::default::Default for #name #lt_use {
                fn default() -> Self {
                    Self { #(#defaults)* }
                }
            }
            impl #lt __w::Walk for #name #lt_use {
                fn item_name(&self) -> &'static str { #item }
                fn walk(&self, v: &mut dyn __w::Visitor) { #walk }
            }
        }
    }

    fn struct_(&self, s: &Struct) -> TokenStream {
        let name = type_ident(&s.name);
        let doc = doc_attr(&s.doc);
        let order = self.spec.struct_order(s);
        let body = self.body_type(
            &name,
            &s.name,
            &doc,
            &s.fields,
            &s.rules,
            s.trailing.unwrap_or(Trailing::Reject),
            order,
            quote!(),
            false,
        );
        // Fixed-size structs double as array elements.
        let element = self.spec.fixed_size(&s.fields).filter(|_| !self.borrows(&s.fields)).map(|size| {
            let size = size as usize;
            let reads = s.fields.iter().map(|f| {
                let n = ident(&f.name);
                let fname = &f.name;
                let read = match self.spec.kind(f) {
                    Some(FieldKind::One(Elem::Int(sc))) => {
                        let m = format_ident!("{}", sc.name());
                        let r = quote!(__c.#m(#fname).unwrap_or_default());
                        if let Some(en) = f.enum_name.as_ref().or(f.flags.as_ref()) {
                            let t = type_ident(en);
                            quote!(#t(#r))
                        } else {
                            r
                        }
                    }
                    Some(FieldKind::One(Elem::Bytes(k))) => {
                        let k = k as usize;
                        quote!(__c.array::<#k>(#fname).unwrap_or([0u8; #k]))
                    }
                    Some(FieldKind::One(Elem::Bitfield(b))) => {
                        let t = type_ident(&b.name);
                        let sz = Scalar::parse(&b.base).map_or(8, Scalar::size) as usize;
                        quote!(__c.take(#fname, #sz).map(|b| <#t as __w::Element>::read(b, __endian)).unwrap_or_default())
                    }
                    Some(FieldKind::One(Elem::Struct(st))) => {
                        let t = type_ident(&st.name);
                        let sz = self.spec.elem_size(Elem::Struct(st)) as usize;
                        quote!(__c.take(#fname, #sz).map(|b| <#t as __w::Element>::read(b, __endian)).unwrap_or_default())
                    }
                    _ => quote!(::core::default::Default::default()),
                };
                quote!(#n: #read,)
            });
            let endian = match order {
                ByteOrder::Stream => quote!(__endian),
                other => endian_expr(other),
            };
            let writes = s.fields.iter().map(|f| {
                let n = ident(&f.name);
                match self.spec.kind(f) {
                    Some(FieldKind::One(Elem::Int(sc))) => {
                        let m = format_ident!("{}", sc.name());
                        if f.enum_name.is_some() || f.flags.is_some() {
                            quote!(p.#m(self.#n.0);)
                        } else {
                            quote!(p.#m(self.#n);)
                        }
                    }
                    Some(FieldKind::One(Elem::Bytes(_))) => quote!(p.bytes(&self.#n);),
                    _ => quote!(__w::Element::write(&self.#n, &mut p);),
                }
            });
            quote! {
                impl __w::Element for #name {
                    const SIZE: usize = #size;
                    fn read(bytes: &[u8], __endian: __w::Endian) -> Self {
                        let __endian = #endian;
                        let mut __c = __w::Cursor::new(bytes, __endian, Self::NAME);
                        Self { #(#reads)* }
                    }
                    fn write(&self, put: &mut __w::Put<'_>) {
                        let __endian = put.endian;
                        let mut p = __w::Put { out: &mut *put.out, endian: #endian };
                        #(#writes)*
                    }
                }
            }
        });
        quote!(#body #element)
    }

    fn record(&self, r: &Record) -> TokenStream {
        let name = type_ident(&r.name);
        let mut doc_text = r.doc.trim().to_string();
        doc_text.push_str(&format!(
            "\n\nRecord type `{:#010x}` (`{}`).",
            r.record_type, r.name
        ));
        let doc = doc_attr(&doc_text);
        let t = r.record_type as u32;
        let extra = quote! {
            /// The record type number.
            pub const TYPE: u32 = #t;
        };
        self.body_type(
            &name,
            &r.name,
            &doc,
            &r.fields,
            &r.rules,
            r.trailing.unwrap_or(Trailing::Reject),
            self.spec.file.byte_order,
            extra,
            r.empty.is_some(),
        )
    }

    fn record_enums(&self) -> TokenStream {
        let spec = self.spec;
        let recs = &spec.file.records;
        let variants: Vec<Ident> = recs.iter().map(|r| type_ident(&r.name)).collect();
        let numbers: Vec<Literal> = recs
            .iter()
            .map(|r| Literal::u32_suffixed(r.record_type as u32))
            .collect();
        let names: Vec<&str> = recs.iter().map(|r| r.name.as_str()).collect();
        let docs: Vec<TokenStream> = recs.iter().map(|r| doc_attr(&r.doc)).collect();
        let indices: Vec<usize> = (0..recs.len()).collect();
        let rec_types: Vec<TokenStream> = recs
            .iter()
            .map(|r| {
                let n = type_ident(&r.name);
                if self.borrows(&r.fields) {
                    quote!(#n<'a>)
                } else {
                    quote!(#n)
                }
            })
            .collect();
        let decode_arms = recs.iter().map(|r| {
            let n = type_ident(&r.name);
            let num = Literal::u32_suffixed(r.record_type as u32);
            quote!(#num => #n::decode(body, ctx).map(Record::#n),)
        });
        let type_of = variants
            .iter()
            .map(|v| quote!(Record::#v(_) => RecordType::#v,));
        let lens = variants
            .iter()
            .map(|v| quote!(Record::#v(r) => r.encoded_len(),));
        let encs = variants
            .iter()
            .map(|v| quote!(Record::#v(r) => r.encode_to(__endian, sink, scratch),));
        let walks = variants
            .iter()
            .map(|v| quote!(Record::#v(r) => __w::Walk::walk(r, v),));
        let domain_names: Vec<String> = spec
            .domain_type_enum()
            .map(|e| e.values.iter().map(|v| v.name.clone()).collect())
            .unwrap_or_default();
        let _ = domain_names;
        let infos = recs.iter().map(|r| {
            let name = &r.name;
            let t = r.record_type as u32;
            let doc = r.doc.trim();
            let status = match r.status.unwrap_or(Status::Active) {
                Status::Active => quote!(__w::Status::Active),
                Status::Deprecated => quote!(__w::Status::Deprecated),
                Status::Forbidden => quote!(__w::Status::Forbidden),
            };
            let role = match r.role {
                None => quote!(None),
                Some(role) => {
                    let v = format_ident!("{}", format!("{role:?}"));
                    quote!(Some(__w::Role::#v))
                }
            };
            let since = match r.since_version {
                Some(v) => quote!(Some(#v)),
                None => quote!(None),
            };
            let once = r.once;
            let guests = &r.guests;
            let cp = r.checkpointed_only;
            let implied: Vec<u32> = r
                .implied_at
                .iter()
                .filter_map(|n| spec.record(n).map(|x| x.record_type as u32))
                .collect();
            let empty_body = r.fields.is_empty();
            let min_size = spec.min_size(&r.fields) as usize;
            let empty_payload = match r.empty {
                None => quote!(None),
                Some(EmptyBody::Allow) => quote!(Some(__w::Level::Required)),
                Some(EmptyBody::Warn) => quote!(Some(__w::Level::Warn)),
            };
            quote! {
                __w::RecordInfo {
                    name: #name, record_type: #t, doc: #doc, status: #status, role: #role,
                    since_version: #since, once: #once, guests: &[#(#guests),*],
                    checkpointed_only: #cp, implied_at: &[#(#implied),*], empty_body: #empty_body, empty_payload: #empty_payload,
                    min_size: #min_size,
                }
            }
        });
        let mut req_fns = Vec::new();
        let layouts = spec.file.layouts.iter().enumerate().map(|(li, l)| {
            let guest = &l.guest;
            let doc = l.doc.trim();
            let reqs = l.required.iter().enumerate().map(|(ri, q)| {
                let rec = spec.record(&q.record);
                let t = rec.map_or(0, |x| x.record_type as u32);
                let d = q.doc.trim();
                let (cond, matches) = match (&q.condition, rec) {
                    (Some(c), Some(rec)) => {
                        let f = format_ident!("__requirement_{}_{}", li, ri);
                        req_fns.push(self.requirement_fn(&f, rec, c));
                        (quote!(Some(#c)), quote!(Some(#f)))
                    }
                    _ => (quote!(None), quote!(None)),
                };
                let level = level_ts(q.level, LevelName::Required);
                quote!(__w::Requirement { record: #t, condition: #cond, matches: #matches, level: #level, doc: #d })
            }).collect::<Vec<_>>();
            let orders = l.order.iter().map(|o| {
                let t = spec.record(&o.record).map_or(0, |x| x.record_type as u32);
                let after: Vec<u32> = o.after.iter().filter_map(|n| spec.record(n).map(|x| x.record_type as u32)).collect();
                let before: Vec<u32> = o.before.iter().filter_map(|n| spec.record(n).map(|x| x.record_type as u32)).collect();
                let level = level_ts(o.level, LevelName::Required);
                let d = o.doc.trim();
                quote!(__w::OrderRule { record: #t, after: &[#(#after),*], before: &[#(#before),*], level: #level, doc: #d })
            });
            quote! {
                __w::Layout { guest: #guest, doc: #doc, required: &[#(#reqs),*], order: &[#(#orders),*] }
            }
        }).collect::<Vec<_>>();
        quote! {
            /// Every record type the spec defines, and `Unknown` for the rest.
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub enum RecordType {
                #(#docs #variants,)*
                /// A type number the spec does not define.
                Unknown(u32),
            }
            impl RecordType {
                /// Every defined record type, in spec order.
                pub const ALL: &'static [RecordType] = &[#(RecordType::#variants),*];
                /// The type for a wire number.
                pub fn from_u32(v: u32) -> Self {
                    match v { #(#numbers => RecordType::#variants,)* other => RecordType::Unknown(other) }
                }
                /// The wire number.
                pub fn to_u32(self) -> u32 {
                    match self { #(RecordType::#variants => #numbers,)* RecordType::Unknown(v) => v }
                }
                /// The spec's name, or `UNKNOWN`.
                pub fn name(self) -> &'static str {
                    match self { #(RecordType::#variants => #names,)* RecordType::Unknown(_) => "UNKNOWN" }
                }
                /// Bit 31 clear: a reader that does not know the type must fail.
                pub fn is_mandatory(self) -> bool {
                    self.to_u32() & 0x8000_0000 == 0
                }
                /// What the spec says about this type.
                pub fn info(self) -> Option<&'static __w::RecordInfo> {
                    match self { #(RecordType::#variants => RECORDS.get(#indices),)* RecordType::Unknown(_) => None }
                }
            }
            impl From<u32> for RecordType {
                fn from(v: u32) -> Self { Self::from_u32(v) }
            }
            impl From<RecordType> for u32 {
                fn from(v: RecordType) -> u32 { v.to_u32() }
            }
            impl ::core::fmt::Display for RecordType {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    match self {
                        RecordType::Unknown(v) => write!(f, "UNKNOWN({:#x})", v),
                        other => f.write_str(other.name()),
                    }
                }
            }

            /// A decoded record body.
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub enum Record<'a> {
                #(#docs #variants(#rec_types),)*
                /// A type the spec does not define, with its raw body.
                Unknown {
                    /// The type in the record's header.
                    record_type: u32,
                    /// The body, undecoded.
                    body: &'a [u8],
                },
            }
            impl<'a> Record<'a> {
                /// Decodes a body of the given type, checking every rule of the spec.
                pub fn decode(record_type: u32, body: &'a [u8], ctx: &__w::DecodeCtx) -> Result<Self, __w::DecodeError> {
                    match record_type {
                        #(#decode_arms)*
                        _ => Ok(Record::Unknown { record_type, body }),
                    }
                }
                /// The record's type.
                pub fn record_type(&self) -> RecordType {
                    match self {
                        #(#type_of)*
                        Record::Unknown { record_type, .. } => RecordType::Unknown(*record_type),
                    }
                }
                /// Length of the encoded body (without framing or padding).
                pub fn encoded_len(&self) -> usize {
                    match self {
                        #(#lens)*
                        Record::Unknown { body, .. } => body.len(),
                    }
                }
                /// Encodes the body (without framing) into `sink`.
                pub fn encode_to<S: __w::Sink<'a>>(&self, __endian: __w::Endian, sink: &mut S, scratch: &mut Vec<u8>) -> Result<(), __w::EncodeError> {
                    match self {
                        #(#encs)*
                        Record::Unknown { body, .. } => { sink.borrow(body); Ok(()) }
                    }
                }
            }

            impl<'a> __w::Walk for Record<'a> {
                fn item_name(&self) -> &'static str {
                    self.record_type().name()
                }
                fn walk(&self, v: &mut dyn __w::Visitor) {
                    match self {
                        #(#walks)*
                        Record::Unknown { body, .. } => v.blob("body", body, __w::BlobKind::Opaque, None),
                    }
                }
            }

            /// What the spec says about each record type, in spec order.
            pub static RECORDS: &[__w::RecordInfo] = &[#(#infos),*];

            /// Per-guest layout rules, in spec order.
            pub static LAYOUTS: &[__w::Layout] = &[#(#layouts),*];

            #(#req_fns)*
        }
    }

    /// A function deciding whether a record body meets a layout requirement's condition.
    fn requirement_fn(&self, f: &Ident, rec: &Record, cond: &str) -> TokenStream {
        let t = type_ident(&rec.name);
        let Some(e) = self.spec.expr(cond) else {
            return quote!();
        };
        let mut names = Vec::new();
        e.names(&mut names);
        let counts = self.count_fields(&rec.fields);
        let binds = names.iter().map(|n| {
            let local = ident(&n.local_name());
            match n {
                Expr::Name(x) if x == "body_length" => quote!(let #local = body.len() as u64;),
                Expr::Name(x) => {
                    if let Some((_, arr)) = counts.iter().find(|(c, _)| c == x) {
                        let a = ident(arr);
                        quote!(let #local = r.#a.len() as u64;)
                    } else {
                        let fd = rec.fields.iter().find(|g| &g.name == x);
                        let id = ident(x);
                        let v = match fd {
                            Some(fd) => self.int_value(fd, &quote!(r.#id)),
                            None => quote!((r.#id as u64)),
                        };
                        quote!(let #local = #v;)
                    }
                }
                Expr::Len(a) => {
                    let a = ident(a);
                    quote!(let #local = r.#a.len() as u64;)
                }
                Expr::Ctx(c) if c == "version" => quote!(let #local = ctx.version as u64;),
                Expr::Ctx(c) => {
                    let cid = ident(c);
                    quote!(let Some(#local) = ctx.#cid else { return false; };)
                }
                _ => quote!(),
            }
        });
        let body_expr = e.to_rust();
        quote! {
            fn #f(body: &[u8], ctx: &__w::DecodeCtx) -> bool {
                let Ok(r) = #t::decode(body, ctx) else { return false; };
                let _ = &r;
                #(#binds)*
                let check = || -> Option<bool> { Some(#body_expr) };
                check() == Some(true)
            }
        }
    }
}

// -- chunks: items chosen by a signed id, with no length --------------------------------------

use crate::validate::{ChunkCount, ChunkElem, CHUNK_ID_NAME};

impl<'s> Gen<'s> {
    /// Whether a chunk's own type borrows the body (it has an array field).
    fn chunk_borrows(&self, c: &Chunk) -> bool {
        c.fields.iter().any(|f| f.count.is_some())
    }

    /// `ChunkId`, `ChunkRead`, `Counted`, `Words`, one type per chunk with fields and the
    /// `ChunkBody` union with its decoder.
    fn chunks(&self) -> TokenStream {
        let spec = self.spec;
        let chunks = &spec.file.chunks;
        let variants: Vec<Ident> = chunks.iter().map(|c| type_ident(&c.name)).collect();
        let docs: Vec<TokenStream> = chunks.iter().map(|c| doc_attr(&c.doc)).collect();
        let names: Vec<&str> = chunks.iter().map(|c| c.name.as_str()).collect();
        let mut from_arms = Vec::new();
        let mut id_arms = Vec::new();
        let mut max_consts = Vec::new();
        for (c, v) in chunks.iter().zip(&variants) {
            match &c.id {
                ChunkIdSpec::Id(n) => {
                    let n = Literal::i32_unsuffixed(*n as i32);
                    from_arms.push(quote!(#n => Some(ChunkId::#v),));
                    id_arms.push(quote!(ChunkId::#v => Some(#n),));
                }
                ChunkIdSpec::Range(_) => {
                    let max = spec.chunk_max_id(c).map_or(i32::MAX, |m| m as i32);
                    let max_lit = Literal::i32_unsuffixed(max);
                    if c.max_id.is_some() {
                        let cname = format_ident!("{}_MAX_ID", c.name);
                        let d = format!(
                            " The largest id that announces a `{}` chunk (ids above it are no chunk).",
                            c.name
                        );
                        max_consts.push(quote!(#[doc = #d] pub const #cname: i32 = #max_lit;));
                    }
                    from_arms.push(quote!(1..=#max_lit => Some(ChunkId::#v),));
                    id_arms.push(quote!(ChunkId::#v => None,));
                }
            }
        }
        let opaque: Vec<&Ident> = chunks
            .iter()
            .zip(&variants)
            .filter(|(c, _)| c.opaque)
            .map(|(_, v)| v)
            .collect();
        let opaque_body = if opaque.is_empty() {
            quote!(false)
        } else {
            quote!(matches!(self, #(ChunkId::#opaque)|*))
        };
        let fixed_size: Vec<TokenStream> = chunks
            .iter()
            .zip(&variants)
            .map(|(c, v)| {
                let size = if let Some(s) = spec.chunk_body(c) {
                    spec.fixed_size(&s.fields)
                } else if c.opaque {
                    None
                } else {
                    c.fields.iter().try_fold(0u64, |acc, f| {
                        let cf = spec.chunk_field(f)?;
                        if cf.count.is_some() {
                            return None;
                        }
                        Some(acc + spec.chunk_elem_size(cf.elem)?)
                    })
                };
                match size {
                    Some(n) => {
                        let n = n as usize;
                        quote!(ChunkId::#v => Some(#n),)
                    }
                    None => quote!(ChunkId::#v => None,),
                }
            })
            .collect();

        let body_struct_arms: Vec<TokenStream> = chunks
            .iter()
            .zip(&variants)
            .map(|(c, v)| match &c.body {
                Some(b) => quote!(ChunkId::#v => Some(#b),),
                None => quote!(ChunkId::#v => None,),
            })
            .collect();
        let any_lt = chunks.iter().any(|c| self.chunk_borrows(c));
        let (lt, lt_impl) = if any_lt {
            (quote!(<'a>), quote!(<'a>))
        } else {
            (quote!(), quote!(<'a>))
        };
        let mut union_variants = Vec::new();
        let mut decode_arms = Vec::new();
        let mut id_of = Vec::new();
        let mut walk_arms = Vec::new();
        let mut types = Vec::new();
        let mut bodies: Vec<&str> = Vec::new();
        for (c, v) in chunks.iter().zip(&variants) {
            let doc = doc_attr(&c.doc);
            let name = &c.name;
            if let Some(b) = &c.body {
                let t = type_ident(b);
                union_variants.push(quote!(#doc #v(#t),));
                let size = spec
                    .struct_(b)
                    .and_then(|s| spec.fixed_size(&s.fields))
                    .unwrap_or(0) as usize;
                // One field at a time, so that a reader reads (and reports) field by field.
                let needs = spec
                    .struct_(b)
                    .map(|s| spec.fixed_offsets(&s.fields))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(f, at)| {
                        let end = (at + spec.field_size(f).unwrap_or(0)) as usize;
                        let what = format!("{}.{}", c.name, f.name);
                        quote!(if body.len() < #end {
                            return Ok(ChunkRead::Need { len: #end, field: #what, counted: None });
                        })
                    });
                decode_arms.push(quote!(ChunkId::#v => {
                    #(#needs)*
                    match body.get(..#size) {
                        None => ChunkRead::Need { len: #size, field: #name, counted: None },
                        Some(b) => ChunkRead::Done {
                            value: ChunkBody::#v(#t::decode(b, ctx)?),
                            len: #size,
                        },
                    }
                },));
                id_of.push(quote!(ChunkBody::#v(_) => ChunkId::#v,));
                walk_arms.push(quote!(ChunkBody::#v(x) => __w::Walk::walk(x, v),));
                if !bodies.contains(&b.as_str()) {
                    bodies.push(b);
                }
            } else if c.fields.is_empty() {
                union_variants.push(quote!(#doc #v,));
                if c.opaque {
                    decode_arms.push(quote!(ChunkId::#v => {
                        return Err(__w::DecodeError {
                            item: #name,
                            rule: "opaque",
                            level: __w::Level::Required,
                            offset: 0,
                            detail: format!("the body of a {} chunk is not described: it cannot be read", #name),
                        })
                    }));
                } else {
                    decode_arms.push(
                        quote!(ChunkId::#v => ChunkRead::Done { value: ChunkBody::#v, len: 0 },),
                    );
                }
                id_of.push(quote!(ChunkBody::#v => ChunkId::#v,));
                walk_arms.push(quote!(ChunkBody::#v => {}));
            } else {
                let t_lt = if self.chunk_borrows(c) {
                    quote!(<'a>)
                } else {
                    quote!()
                };
                union_variants.push(quote!(#doc #v(#v #t_lt),));
                decode_arms.push(
                    quote!(ChunkId::#v => #v::decode(body, id, word_size, ctx)?.map(ChunkBody::#v),),
                );
                id_of.push(quote!(ChunkBody::#v(_) => ChunkId::#v,));
                walk_arms.push(quote!(ChunkBody::#v(x) => __w::Walk::walk(x, v),));
                types.push(self.chunk_type(c));
            }
        }
        let accessors = bodies.iter().map(|b| {
            let t = type_ident(b);
            let f = format_ident!("as_{}", b);
            let arms = chunks
                .iter()
                .zip(&variants)
                .filter(|(c, _)| c.body.as_deref() == Some(*b))
                .map(|(_, v)| quote!(ChunkBody::#v(x)));
            let d = format!(" The `{b}` body, for each chunk whose body is one.");
            quote! {
                #[doc = #d]
                pub fn #f(&self) -> Option<&#t> {
                    match self {
                        #(#arms)|* => Some(x),
                        _ => None,
                    }
                }
            }
        });
        let body_fn_lt = if any_lt { quote!() } else { quote!(<'a>) };
        quote! {
            /// Octets of the signed id in front of every chunk.
            pub const CHUNK_ID_SIZE: usize = 4usize;

            /// Which chunk an id announces.
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
            pub enum ChunkId {
                #(#docs #variants,)*
            }

            impl ChunkId {
                /// Every chunk, in spec order.
                pub const ALL: &'static [ChunkId] = &[#(ChunkId::#variants),*];
                #(#max_consts)*
                /// The chunk an id announces, if the spec knows it.
                pub fn from_i32(id: i32) -> Option<Self> {
                    match id {
                        #(#from_arms)*
                        _ => None,
                    }
                }
                /// The one id of the chunk; `None` for the chunk every positive id announces.
                pub fn id(self) -> Option<i32> {
                    match self {
                        #(#id_arms)*
                    }
                }
                /// The spec's name for the chunk.
                pub fn name(self) -> &'static str {
                    match self {
                        #(ChunkId::#variants => #names,)*
                    }
                }
                /// Whether the spec leaves the body undescribed (a reader cannot step over it).
                pub fn is_opaque(self) -> bool {
                    #opaque_body
                }
                /// The struct (its spec name) that is the whole body, for chunks declared with `body:`.
                pub fn body_struct(self) -> Option<&'static str> {
                    match self {
                        #(#body_struct_arms)*
                    }
                }
                /// Octets of the body after the id, when they do not depend on the data.
                pub fn fixed_size(self) -> Option<usize> {
                    match self {
                        #(#fixed_size)*
                    }
                }
            }

            impl ::core::fmt::Display for ChunkId {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(self.name())
                }
            }

            #(#types)*

            /// A chunk's body, decoded.
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub enum ChunkBody #lt {
                #(#union_variants)*
            }

            impl #lt_impl ChunkBody #lt {
                /// Decodes the body of the chunk `id` announces from the octets read so far
                /// (`word_size`: octets of the format's `ctx.word_size` words).
                pub fn decode #body_fn_lt (
                    id: i32,
                    body: &'a [u8],
                    word_size: usize,
                    ctx: &__w::DecodeCtx,
                ) -> Result<ChunkRead<Self>, __w::DecodeError> {
                    let _ = (word_size, ctx);
                    let Some(chunk) = ChunkId::from_i32(id) else {
                        return Err(__w::DecodeError {
                            item: "chunk",
                            rule: "id",
                            level: __w::Level::Required,
                            offset: 0,
                            detail: format!("no chunk has id {}", id),
                        });
                    };
                    Ok(match chunk {
                        #(#decode_arms)*
                    })
                }
                /// Which chunk this is.
                pub fn id(&self) -> ChunkId {
                    match self {
                        #(#id_of)*
                    }
                }
                #(#accessors)*
            }

            /// A chunk body walks as its fields (none for a chunk without a body).
            impl #lt_impl __w::Walk for ChunkBody #lt {
                fn item_name(&self) -> &'static str {
                    self.id().name()
                }
                fn walk(&self, v: &mut dyn __w::Visitor) {
                    let _ = &v;
                    match self {
                        #(#walk_arms)*
                    }
                }
            }
        }
    }

    /// What chunks and parts share: `ChunkRead`, `Counted`, `Words` and the word-width check.
    fn unframed_helpers(&self) -> TokenStream {
        quote! {
            /// What decoding a chunk body from the octets read so far gives.
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub enum ChunkRead<T> {
                /// The body is longer than the octets given: read until there are `len`, then
                /// decode again. `counted` tells which array the last read count sized.
                Need {
                    /// How many octets the body needs at least, counted from its start.
                    len: usize,
                    /// The field the missing octets belong to, as `CHUNK.field`.
                    field: &'static str,
                    /// The array whose count the last field read gave, if any.
                    counted: Option<Counted>,
                },
                /// The body, and the octets it took.
                Done {
                    /// The decoded body.
                    value: T,
                    /// The octets it took.
                    len: usize,
                },
            }

            impl<T> ChunkRead<T> {
                /// The same outcome with the decoded value mapped.
                pub fn map<U>(self, f: impl FnOnce(T) -> U) -> ChunkRead<U> {
                    match self {
                        ChunkRead::Need { len, field, counted } => ChunkRead::Need { len, field, counted },
                        ChunkRead::Done { value, len } => ChunkRead::Done { value: f(value), len },
                    }
                }
            }

            /// An array whose count a decoder has just read, before its elements arrive.
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct Counted {
                /// The array field.
                pub array: &'static str,
                /// Its number of elements.
                pub count: u64,
                /// Octets per element.
                pub size: usize,
                /// Where the field its count comes from starts (the array's own start when the
                /// count names no field), in octets from the start of the body.
                pub at: usize,
            }

            /// An array of integers or words, each read as u64.
            #[derive(Clone, Copy, PartialEq, Eq)]
            pub struct Words<'w> {
                bytes: &'w [u8],
                size: usize,
                endian: __w::Endian,
            }

            impl<'w> Words<'w> {
                /// Elements of `size` octets (1, 2, 4 or 8) in `bytes`.
                pub fn new(bytes: &'w [u8], size: usize, endian: __w::Endian) -> Self {
                    Words { bytes, size, endian }
                }
                /// Octets per element.
                pub fn word_size(&self) -> usize {
                    self.size
                }
                /// The encoded elements.
                pub fn as_bytes(&self) -> &'w [u8] {
                    self.bytes
                }
                /// Number of elements.
                pub fn len(&self) -> usize {
                    self.bytes.len().checked_div(self.size).unwrap_or(0)
                }
                /// Whether there are no elements.
                pub fn is_empty(&self) -> bool {
                    self.len() == 0
                }
                /// Element `i`.
                pub fn get(&self, i: usize) -> Option<u64> {
                    let at = i.checked_mul(self.size)?;
                    self.bytes
                        .get(at..at.checked_add(self.size)?)
                        .map(|b| __uint(b, self.endian))
                }
                /// The elements in order.
                pub fn iter(&self) -> impl Iterator<Item = u64> + 'w {
                    let endian = self.endian;
                    self.bytes
                        .chunks_exact(self.size.max(1))
                        .map(move |b| __uint(b, endian))
                }
            }

            impl ::core::fmt::Debug for Words<'_> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.debug_list().entries(self.iter()).finish()
                }
            }

            /// An unsigned integer of up to 8 octets.
            fn __uint(b: &[u8], endian: __w::Endian) -> u64 {
                let mut v = 0u64;
                match endian {
                    __w::Endian::Little => {
                        for x in b.iter().rev() {
                            v = (v << 8) | (*x as u64);
                        }
                    }
                    __w::Endian::Big => {
                        for x in b {
                            v = (v << 8) | (*x as u64);
                        }
                    }
                }
                v
            }

            /// A word type's width: 4 or 8 octets.
            fn __word_width(
                item: &'static str,
                source: &'static str,
                width: Option<u64>,
            ) -> Result<usize, __w::DecodeError> {
                match width {
                    Some(4) => Ok(4),
                    Some(8) => Ok(8),
                    other => Err(__w::DecodeError {
                        item,
                        rule: "word_width",
                        level: __w::Level::Required,
                        offset: 0,
                        detail: format!("`{}` is {:?}, not 4 or 8", source, other),
                    }),
                }
            }

        }
    }

    /// The type of one chunk with fields, and its streaming decoder.
    fn chunk_type(&self, c: &Chunk) -> TokenStream {
        self.unframed_type(&c.name, &c.doc, &c.fields, Unframed::Chunk(&c.id))
    }

    /// The type of one part, and its streaming decoder.
    fn part_type(&self, p: &Part) -> TokenStream {
        self.unframed_type(&p.name, &p.doc, &p.fields, Unframed::Part(&p.params))
    }

    /// The type of a chunk with fields or of a part: its fields, offsets, streaming decoder and
    /// walk.
    fn unframed_type(
        &self,
        name: &str,
        doc: &str,
        fields: &[Field],
        kind: Unframed<'_>,
    ) -> TokenStream {
        let spec = self.spec;
        let t = type_ident(name);
        let doc = doc_attr(doc);
        let borrows = fields.iter().any(|f| f.count.is_some());
        let (lt, fn_lt) = if borrows {
            (quote!(<'a>), quote!())
        } else {
            (quote!(), quote!(<'a>))
        };
        let endian = match spec.file.byte_order {
            ByteOrder::Stream => quote!(ctx.endian),
            o => endian_expr(o),
        };
        let id_const = match kind {
            Unframed::Chunk(ChunkIdSpec::Id(n)) => {
                let n = Literal::i32_unsuffixed(*n as i32);
                quote!(
                    /// The chunk's id.
                    pub const ID: i32 = #n;
                )
            }
            _ => quote!(),
        };
        let positive = matches!(kind, Unframed::Chunk(ChunkIdSpec::Range(_)));
        let params: Vec<Ident> = match kind {
            Unframed::Part(ps) => ps.iter().map(|p| ident(&p.name)).collect(),
            Unframed::Chunk(_) => Vec::new(),
        };
        let mut decl = Vec::new();
        let mut reads = Vec::new();
        let mut inits = Vec::new();
        let mut offsets = Vec::new();
        let mut walks = Vec::new();
        let mut fixed_at: Option<u64> = Some(0);
        let mut widths = Vec::new();
        let positive_check = positive.then(|| {
            quote! {
                if id < 1 {
                    return Err(__w::DecodeError {
                        item: Self::NAME,
                        rule: "id",
                        level: __w::Level::Required,
                        offset: 0,
                        detail: format!("id {} announces no {} chunk", id, Self::NAME),
                    });
                }
                let __id: u64 = id as u64;
            }
        });
        for f in fields {
            let Some(cf) = spec.chunk_field(f) else {
                continue;
            };
            let fid = ident(&f.name);
            let fname = &f.name;
            let fdoc = doc_attr(&f.doc);
            let at = format_ident!("__at_{}", f.name);
            if let Some(o) = fixed_at {
                let cname = format_ident!("{}_OFFSET", f.name.to_uppercase());
                let o = o as usize;
                let d = format!(
                    " Where `{}` starts, in octets from the start of the body.",
                    f.name
                );
                offsets.push(quote!(#[doc = #d] pub const #cname: usize = #o;));
            }
            let size_expr = |e: ChunkElem<'_>, widths: &mut Vec<TokenStream>| -> TokenStream {
                match e {
                    ChunkElem::Word(w) => {
                        let wid = format_ident!("__ws_{}", w.name);
                        let src = spec.word_width(w).unwrap_or_default();
                        let wname = format!("ctx.{src}");
                        let value = if src == "guest_width" {
                            quote!(ctx.guest_width)
                        } else {
                            quote!(Some(word_size as u64))
                        };
                        let decl =
                            quote!(let #wid: usize = __word_width(Self::NAME, #wname, #value)?;);
                        if !widths
                            .iter()
                            .any(|d: &TokenStream| d.to_string() == decl.to_string())
                        {
                            widths.push(decl);
                        }
                        quote!(#wid)
                    }
                    e => {
                        let n = spec.chunk_elem_size(e).unwrap_or(0) as usize;
                        quote!(#n)
                    }
                }
            };
            let size = size_expr(cf.elem, &mut widths);
            match (&cf.count, cf.elem) {
                (None, elem) => {
                    let (ty, conv) = match elem {
                        ChunkElem::Int(s) => {
                            let ty = scalar_ty(s);
                            (ty.clone(), quote!(__uint(__b, __endian) as #ty))
                        }
                        ChunkElem::Word(_) => (quote!(u64), quote!(__uint(__b, __endian))),
                        ChunkElem::Bytes(n) => {
                            let n = n as usize;
                            (
                                quote!([u8; #n]),
                                quote!({
                                    let mut __a = [0u8; #n];
                                    __a.copy_from_slice(__b);
                                    __a
                                }),
                            )
                        }
                        ChunkElem::Struct(s) => {
                            let st = type_ident(&s.name);
                            (
                                quote!(#st),
                                quote!(#st::decode(__b, ctx).map_err(|mut e| {
                                    e.offset += #at;
                                    e
                                })?),
                            )
                        }
                    };
                    decl.push(quote!(#fdoc pub #fid: #ty,));
                    let mut checks = Vec::new();
                    let bound = |v: &IntOrName| match v {
                        IntOrName::Int(n) => Some((*n, None)),
                        IntOrName::Name(k) => spec
                            .constant(k)
                            .and_then(|c| c.value)
                            .map(|n| (n, Some(k.clone()))),
                    };
                    if matches!(elem, ChunkElem::Int(_) | ChunkElem::Word(_)) {
                        for (key, b, op) in [("max", f.max, quote!(>)), ("min", f.min, quote!(<))] {
                            if let Some(b) = b {
                                let rule = format!("{fname}.{key}");
                                let word = if key == "max" {
                                    "above the maximum"
                                } else {
                                    "below the minimum"
                                };
                                checks.push(quote! {
                                    if (#fid as u64) #op #b {
                                        return Err(__w::DecodeError {
                                            item: Self::NAME,
                                            rule: #rule,
                                            level: __w::Level::Required,
                                            offset: #at,
                                            detail: format!("`{}` is {:#x}, {} {:#x}", #fname, #fid as u64, #word, #b),
                                        });
                                    }
                                });
                            }
                        }
                        if let Some((v, _)) = f.value.as_ref().and_then(bound) {
                            let rule = format!("{fname}.value");
                            checks.push(quote! {
                                if (#fid as u64) != #v {
                                    return Err(__w::DecodeError {
                                        item: Self::NAME,
                                        rule: #rule,
                                        level: __w::Level::Required,
                                        offset: #at,
                                        detail: format!("`{}` is {:#x}, must be {:#x}", #fname, #fid as u64, #v),
                                    });
                                }
                            });
                        }
                    }
                    let what = format!("{}.{}", name, f.name);
                    reads.push(quote! {
                        let #at = __pos;
                        let __end = __pos.checked_add(#size).unwrap_or(usize::MAX);
                        let Some(__b) = __body.get(__pos..__end) else {
                            return Ok(ChunkRead::Need { len: __end, field: #what, counted: None });
                        };
                        let #fid: #ty = #conv;
                        __pos = __end;
                        #(#checks)*
                    });
                    inits.push(quote!(#fid,));
                    walks.push(match elem {
                        ChunkElem::Int(_) | ChunkElem::Word(_) => {
                            let hex = Self::hex(f.display, false);
                            quote!(v.scalar(#fname, __w::Value::Int { value: self.#fid as u64, hex: #hex }, false);)
                        }
                        ChunkElem::Bytes(_) => {
                            quote!(v.scalar(#fname, __w::Value::Bytes(&self.#fid[..]), false);)
                        }
                        ChunkElem::Struct(st) => {
                            let tn = &st.name;
                            quote! {
                                v.struct_begin(#fname, #tn);
                                __w::Walk::walk(&self.#fid, v);
                                v.struct_end();
                            }
                        }
                    });
                    fixed_at = match (fixed_at, elem) {
                        (Some(o), ChunkElem::Word(_)) => {
                            let _ = o;
                            None
                        }
                        (Some(o), e) => spec.chunk_elem_size(e).map(|n| o + n),
                        (None, _) => None,
                    };
                }
                (Some(count), elem) => {
                    let (n_expr, count_at) = match count {
                        ChunkCount::Fixed { n, .. } => (quote!(Some(#n)), quote!(#at)),
                        ChunkCount::Expr(e) => {
                            let mut named = Vec::new();
                            e.names(&mut named);
                            let lets = named.iter().filter_map(|n| match n {
                                Expr::Name(x) if x == CHUNK_ID_NAME && positive => {
                                    let id = ident(x);
                                    Some(quote!(let #id: u64 = __id;))
                                }
                                Expr::Name(x) => {
                                    let id = ident(x);
                                    Some(quote!(let #id: u64 = #id as u64;))
                                }
                                _ => None,
                            });
                            let body = e.to_rust();
                            let first = named.iter().find_map(|n| match n {
                                Expr::Name(x) if fields.iter().any(|g| &g.name == x) => {
                                    Some(format_ident!("__at_{}", x))
                                }
                                _ => None,
                            });
                            let count_at = match first {
                                Some(a) => quote!(#a),
                                None => quote!(#at),
                            };
                            (
                                quote!((|| -> Option<u64> {
                                    #(#lets)*
                                    Some(#body)
                                })()),
                                count_at,
                            )
                        }
                    };
                    let rule = format!("{fname}.count");
                    let what = format!("{}.{}", name, f.name);
                    let (ty, conv) = match elem {
                        ChunkElem::Int(Scalar::U8) => (quote!(&'a [u8]), quote!(__b)),
                        _ => (quote!(Words<'a>), quote!(Words::new(__b, #size, __endian))),
                    };
                    decl.push(quote!(#fdoc pub #fid: #ty,));
                    reads.push(quote! {
                        let #at = __pos;
                        let Some(__n) = #n_expr else {
                            return Err(__w::DecodeError {
                                item: Self::NAME,
                                rule: #rule,
                                level: __w::Level::Required,
                                offset: #at,
                                detail: format!("the count of `{}` overflows", #fname),
                            });
                        };
                        let __end = usize::try_from(__n)
                            .ok()
                            .and_then(|n| n.checked_mul(#size))
                            .and_then(|l| __pos.checked_add(l))
                            .unwrap_or(usize::MAX);
                        let Some(__b) = __body.get(__pos..__end) else {
                            return Ok(ChunkRead::Need {
                                len: __end,
                                field: #what,
                                counted: Some(Counted { array: #fname, count: __n, size: #size, at: #count_at }),
                            });
                        };
                        let #fid: #ty = #conv;
                        __pos = __end;
                    });
                    inits.push(quote!(#fid,));
                    walks.push(match elem {
                        ChunkElem::Int(Scalar::U8) => {
                            quote!(v.blob(#fname, self.#fid, __w::BlobKind::Opaque, None);)
                        }
                        _ => {
                            let hex = Self::hex(f.display, false);
                            let show = if f.display == Some(Display::Summary) {
                                quote!(__w::ArrayShow::Summary)
                            } else {
                                quote!(__w::ArrayShow::List)
                            };
                            // A count that is one earlier field: the walk has shown it there.
                            let count_field = match count {
                                ChunkCount::Expr(Expr::Name(x))
                                    if fields.iter().any(|g| &g.name == x) =>
                                {
                                    let x = x.as_str();
                                    quote!(Some(#x))
                                }
                                _ => quote!(None),
                            };
                            quote! {
                                v.array_begin(#fname, __w::ArrayInfo {
                                    count: self.#fid.len(),
                                    count_field: #count_field,
                                    show: #show,
                                });
                                for __e in self.#fid.iter() {
                                    v.scalar(#fname, __w::Value::Int { value: __e, hex: #hex }, false);
                                }
                                v.array_end();
                            }
                        }
                    });
                    fixed_at = None;
                }
            }
        }
        let (name_doc, decode_doc, id_arg, id_use) = match kind {
            Unframed::Chunk(_) => (
                " The spec's name for the chunk.".to_string(),
                quote! {
                    /// Decodes the body (the octets after the id) from the octets read so far;
                    /// `word_size` gives the width of `ctx.word_size` words.
                },
                quote!(id: i32,),
                quote!(id,),
            ),
            Unframed::Part(ps) => {
                let d = if ps.is_empty() {
                    " Decodes the part from the octets read so far; `word_size` gives the width of\n `ctx.word_size` words.".to_string()
                } else {
                    format!(
                        " Decodes the part from the octets read so far; `word_size` gives the width of\n `ctx.word_size` words, {} the values its counts name.",
                        ps.iter().map(|p| format!("`{}`", p.name)).collect::<Vec<_>>().join(", ")
                    )
                };
                (
                    " The spec's name for the part.".to_string(),
                    quote!(#[doc = #d]),
                    quote!(),
                    quote!(),
                )
            }
        };
        quote! {
            #doc
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct #t #lt {
                #(#decl)*
            }

            impl #lt #t #lt {
                #[doc = #name_doc]
                pub const NAME: &'static str = #name;
                #id_const
                #(#offsets)*
                #decode_doc
                #[allow(clippy::needless_question_mark)]
                pub fn decode #fn_lt (
                    __body: &'a [u8],
                    #id_arg
                    word_size: usize,
                    #(#params: u64,)*
                    ctx: &__w::DecodeCtx,
                ) -> Result<ChunkRead<Self>, __w::DecodeError> {
                    let _ = (#id_use word_size, ctx #(, #params)*);
                    let __endian: __w::Endian = #endian;
                    let mut __pos = 0usize;
                    #positive_check
                    #(#widths)*
                    #(#reads)*
                    Ok(ChunkRead::Done { value: Self { #(#inits)* }, len: __pos })
                }
            }

            impl #lt __w::Walk for #t #lt {
                fn item_name(&self) -> &'static str { #name }
                fn walk(&self, v: &mut dyn __w::Visitor) {
                    let _ = &v;
                    #(#walks)*
                }
            }
        }
    }
}

/// Which kind of unframed item a type is generated for.
#[derive(Clone, Copy)]
enum Unframed<'s> {
    /// A chunk with fields, and its id.
    Chunk(&'s ChunkIdSpec),
    /// A part, and the parameters its decoder takes.
    Part(&'s [Param]),
}
