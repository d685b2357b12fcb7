//! The spec as written in YAML: plain serde types, one per schema construct.
//! `spec/README.md` documents every key.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub format: String,
    pub title: String,
    pub doc: String,
    pub revision: u32,
    pub byte_order: ByteOrder,
    #[serde(default)]
    pub versions: Option<Versions>,
    #[serde(default)]
    pub constants: Vec<Constant>,
    #[serde(default)]
    pub enums: Vec<Enum>,
    #[serde(default)]
    pub flags: Vec<Flags>,
    #[serde(default)]
    pub bitfields: Vec<Bitfield>,
    #[serde(default)]
    pub structs: Vec<Struct>,
    #[serde(default)]
    pub records: Vec<Record>,
    #[serde(default)]
    pub layouts: Vec<Layout>,
    /// How records are framed when they are not framed by the stream machinery: a format
    /// whose records sit one after another inside a blob of another format.
    #[serde(default)]
    pub framing: Option<Framing>,
    /// Integer types whose width a context value gives (a toolstack's `unsigned long`).
    #[serde(default)]
    pub words: Vec<Word>,
    /// Items told apart by a leading signed 32-bit id and not framed by any length.
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    /// Items of an unframed stream that no id announces: the reader knows from where it is
    /// which one comes next (a header, a tail, a trailer).
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// A piece of an unframed stream read at a place the reader knows, laid out like a chunk
/// body; its counts may name values the reader passes in (`params`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub name: String,
    pub doc: String,
    /// Integers the reader knows from earlier in the stream, named by counts.
    #[serde(default)]
    pub params: Vec<Param>,
    pub fields: Vec<Field>,
}

/// An integer a part's reader passes to its decoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    pub doc: String,
}

/// An integer type whose width (4 or 8 octets) a context value gives; decoded as u64.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Word {
    pub name: String,
    /// `ctx.word_size` or `ctx.guest_width`.
    pub width: String,
    pub doc: String,
}

/// Which ids a chunk answers to: one id (any sign), or every positive id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ChunkIdSpec {
    Id(i64),
    /// `positive`: every id above zero; the id is a count the fields may name as `id`.
    Range(String),
}

/// One kind of chunk: its id, and the layout of the body after the id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    pub name: String,
    pub id: ChunkIdSpec,
    pub doc: String,
    /// The body, field after field (no `blob`, `rest` or `pages`: a chunk has no length).
    #[serde(default)]
    pub fields: Vec<Field>,
    /// Instead of `fields`: the body is this fixed-size struct (shared by several chunks).
    #[serde(default)]
    pub body: Option<String>,
    /// For `id: positive`: the largest id (a number or a constant).
    #[serde(default)]
    pub max_id: Option<IntOrName>,
    /// The body's layout is not described: a reader cannot step over the chunk.
    #[serde(default)]
    pub opaque: bool,
}

/// The header in front of every record of a format whose records fill a blob.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framing {
    /// A struct of this format, read in front of every record body.
    pub header: String,
    /// The header's field that holds the record type.
    #[serde(rename = "type")]
    pub type_field: String,
    /// The header's field that holds the body's length in octets (no padding follows).
    pub length: String,
    pub doc: String,
}

/// What a blob field holds, when a spec knows: the records of another format (with its
/// `framing`), or one of a list of structs chosen by the blob's length.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobLayout {
    /// A format (a spec file beside this one, `FORMAT.yaml`) whose framed records fill the blob.
    #[serde(default)]
    pub records: Option<String>,
    /// `FORMAT.struct` names; the first whose size equals the blob's length is its layout.
    #[serde(default)]
    pub structs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    Big,
    Little,
    Host,
    Stream,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Versions {
    pub accepted: Vec<u32>,
    pub written: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constant {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub value: Option<u64>,
    #[serde(default)]
    pub text: Option<String>,
    pub doc: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enum {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub doc: String,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    pub values: Vec<Variant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribute {
    pub name: String,
    pub doc: String,
    /// `u8`..`u64` for an integer attribute (a variant may give it a value); absent for a
    /// boolean one (a variant may set it to true).
    #[serde(default, rename = "type")]
    pub ty: Option<String>,
}

/// An enum variant; keys other than name/value/doc are the variant's attributes (booleans, or
/// integers for attributes declared with a `type`).
#[derive(Debug, Clone, Deserialize)]
pub struct Variant {
    pub name: String,
    pub value: u64,
    pub doc: String,
    #[serde(flatten)]
    pub attrs: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub doc: String,
    #[serde(default)]
    pub bits: Vec<FlagBit>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagBit {
    pub name: String,
    pub bit: u32,
    pub doc: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bitfield {
    pub name: String,
    pub base: String,
    pub doc: String,
    pub fields: Vec<BitfieldMember>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitfieldMember {
    pub name: String,
    pub bits: String,
    pub doc: String,
    #[serde(default)]
    pub reserved: bool,
    #[serde(default, rename = "enum")]
    pub enum_name: Option<String>,
    #[serde(default)]
    pub known: Option<bool>,
    #[serde(default)]
    pub level: Option<LevelName>,
    /// How the member is shown (`hex` or `decimal`, the default).
    #[serde(default)]
    pub display: Option<Display>,
}

/// How a field is shown by renderers of the walk (`dump`, JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Display {
    /// Integers (and the integer elements of an array) in hex.
    Hex,
    /// Integers in decimal (the default).
    Decimal,
    /// An array as a summary: counts of each enum value, runs of consecutive integers.
    Summary,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Struct {
    pub name: String,
    pub doc: String,
    #[serde(default)]
    pub byte_order: Option<ByteOrder>,
    /// Declared size in octets; must equal the sum of the fields.
    #[serde(default)]
    pub size: Option<u64>,
    pub fields: Vec<Field>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub trailing: Option<Trailing>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: u64,
    pub doc: String,
    #[serde(default)]
    pub fields: Vec<Field>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub trailing: Option<Trailing>,
    #[serde(default)]
    pub empty: Option<EmptyBody>,
    #[serde(default)]
    pub since_version: Option<u32>,
    #[serde(default)]
    pub status: Option<Status>,
    #[serde(default)]
    pub once: bool,
    #[serde(default)]
    pub guests: Vec<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub implied_at: Vec<String>,
    #[serde(default)]
    pub checkpointed_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trailing {
    Reject,
    Strict,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyBody {
    Allow,
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Deprecated,
    Forbidden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    End,
    PageData,
    Checkpoint,
    CheckpointEnd,
    CheckpointState,
    StaticDataEnd,
    Verify,
    LibxcContext,
    BackChannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelName {
    Warn,
    Required,
    Strict,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub doc: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// `FIELD` (an earlier integer field), `rest`, or a fixed number (an integer or a
    /// constant's name). Integers are kept as their decimal text.
    #[serde(default, deserialize_with = "int_or_text")]
    pub count: Option<String>,
    #[serde(default)]
    pub count_where: Option<CountWhere>,
    #[serde(default)]
    pub pairs: bool,
    #[serde(default)]
    pub value: Option<IntOrName>,
    #[serde(default)]
    pub one_of: Option<Vec<u64>>,
    /// The value `Default` gives (otherwise `value`, the first of `one_of`, or zero).
    #[serde(default)]
    pub default: Option<u64>,
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
    #[serde(default, rename = "enum")]
    pub enum_name: Option<String>,
    #[serde(default)]
    pub known: Option<bool>,
    #[serde(default)]
    pub flags: Option<String>,
    #[serde(default)]
    pub reserved: bool,
    #[serde(default)]
    pub level: Option<LevelName>,
    /// How the field is shown: `hex` or `decimal` for integers, `summary` for arrays.
    #[serde(default)]
    pub display: Option<Display>,
    /// For `blob`: what its octets hold.
    #[serde(default)]
    pub layout: Option<BlobLayout>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountWhere {
    pub field: String,
    pub attr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrName {
    Int(u64),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub check: String,
    #[serde(default)]
    pub level: Option<LevelName>,
    pub doc: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub guest: String,
    pub doc: String,
    #[serde(default)]
    pub required: Vec<Requirement>,
    #[serde(default)]
    pub order: Vec<OrderRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub record: String,
    #[serde(default, rename = "where")]
    pub condition: Option<String>,
    #[serde(default)]
    pub level: Option<LevelName>,
    pub doc: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRule {
    pub record: String,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub before: Vec<String>,
    #[serde(default)]
    pub level: Option<LevelName>,
    pub doc: String,
}

/// An optional key that may be written as an integer or as a name; kept as text.
fn int_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrText {
        Int(u64),
        Text(String),
    }
    Ok(Option::<IntOrText>::deserialize(d)?.map(|v| match v {
        IntOrText::Int(n) => n.to_string(),
        IntOrText::Text(t) => t,
    }))
}
