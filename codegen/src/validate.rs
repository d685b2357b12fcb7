//! Loading and checking a spec: syntax and unknown keys (serde), then every cross-reference
//! and size. Each problem becomes a [`SpecError`] pointing at file:line:col.

use crate::expr::{self, Expr, Kind, Scope};
use crate::locate::Locations;
use crate::model::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// Where in the document, e.g. `records[3].fields[1]`.
    pub path: String,
    /// The offending key, if the problem is one key's value.
    pub key: Option<String>,
    pub message: String,
    /// The text of line `line`, shown under the message with a caret at `col`.
    pub source: Option<String>,
    /// A second place that explains the first (where a duplicated name or number was first
    /// defined).
    pub note: Option<Box<SpecNote>>,
}

/// A second location attached to an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecNote {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub source: Option<String>,
}

/// The source line and a caret under column `col`, as compilers show them.
fn excerpt(f: &mut fmt::Formatter<'_>, line: usize, col: usize, source: &str) -> fmt::Result {
    let num = line.to_string();
    let pad = " ".repeat(num.len());
    write!(
        f,
        "\n{pad} |\n{num} | {source}\n{pad} | {}^",
        " ".repeat(col.saturating_sub(1))
    )
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )?;
        match (&self.path, &self.key) {
            (p, Some(k)) if !p.is_empty() => write!(f, " (key `{k}` of `{p}`)"),
            (_, Some(k)) => write!(f, " (key `{k}`)"),
            (p, None) if !p.is_empty() => write!(f, " (at `{p}`)"),
            _ => Ok(()),
        }?;
        if let Some(src) = &self.source {
            excerpt(f, self.line, self.col, src)?;
        }
        if let Some(n) = &self.note {
            write!(
                f,
                "\n{}:{}:{}: note: {}",
                self.file.display(),
                n.line,
                n.col,
                n.message
            )?;
            if let Some(src) = &n.source {
                excerpt(f, n.line, n.col, src)?;
            }
        }
        Ok(())
    }
}

/// All problems found in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// A spec that passed every check.
#[derive(Debug, Clone)]
pub struct Spec {
    pub file: SpecFile,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The formats this one's blob layouts name, read from the spec files beside it (each is
    /// checked when it is loaded on its own).
    pub others: BTreeMap<String, Spec>,
    /// Every rule check and layout condition, parsed once at load (by its text); the checker
    /// and both emitters read them from here.
    pub exprs: BTreeMap<String, Result<Expr, String>>,
}

/// Integer widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    U8,
    U16,
    U32,
    U64,
}

impl Scalar {
    pub fn parse(s: &str) -> Option<Scalar> {
        Some(match s {
            "u8" => Scalar::U8,
            "u16" => Scalar::U16,
            "u32" => Scalar::U32,
            "u64" => Scalar::U64,
            _ => return None,
        })
    }
    pub fn size(self) -> u64 {
        match self {
            Scalar::U8 => 1,
            Scalar::U16 => 2,
            Scalar::U32 => 4,
            Scalar::U64 => 8,
        }
    }
    pub fn bits(self) -> u32 {
        (self.size() * 8) as u32
    }
    pub fn max(self) -> u64 {
        match self {
            Scalar::U64 => u64::MAX,
            s => (1u64 << s.bits()) - 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Scalar::U8 => "u8",
            Scalar::U16 => "u16",
            Scalar::U32 => "u32",
            Scalar::U64 => "u64",
        }
    }
}

/// What one element of a field is.
#[derive(Debug, Clone, Copy)]
pub enum Elem<'s> {
    Int(Scalar),
    Bytes(u64),
    Bitfield(&'s Bitfield),
    Struct(&'s Struct),
}

/// How many elements an array has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    Field(String),
    Rest,
    /// A fixed number of elements: `count: 3` or `count: CONSTANT` (records only).
    Fixed {
        n: u64,
        constant: Option<String>,
    },
}

/// The resolved shape of a field.
#[derive(Debug, Clone)]
pub enum FieldKind<'s> {
    One(Elem<'s>),
    Array {
        elem: Elem<'s>,
        count: Count,
    },
    Blob,
    /// `page_size` is the format's `PAGE_SIZE` constant.
    Pages {
        field: String,
        attr: String,
        page_size: u64,
    },
    CStrings {
        pairs: bool,
    },
}

/// The constant a format with `pages` fields must define: octets per page.
pub const PAGE_SIZE_CONSTANT: &str = "PAGE_SIZE";

/// Parses `A..=B` (inclusive) or `A..B`.
pub fn parse_bits(s: &str) -> Option<(u32, u32)> {
    let (a, b, incl) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else {
        let (a, b) = s.split_once("..")?;
        (a, b, false)
    };
    let lo: u32 = a.trim().parse().ok()?;
    let hi: u32 = b.trim().parse().ok()?;
    let hi = if incl { hi } else { hi.checked_sub(1)? };
    (lo <= hi).then_some((lo, hi))
}

impl Spec {
    /// A rule check or layout condition, as parsed at load (`None` only for text the spec
    /// does not hold, or that did not parse, which a loaded spec cannot contain).
    pub fn expr(&self, text: &str) -> Option<&Expr> {
        self.exprs.get(text)?.as_ref().ok()
    }

    pub fn enum_(&self, name: &str) -> Option<&Enum> {
        self.file.enums.iter().find(|e| e.name == name)
    }
    pub fn flags_(&self, name: &str) -> Option<&Flags> {
        self.file.flags.iter().find(|e| e.name == name)
    }
    pub fn bitfield(&self, name: &str) -> Option<&Bitfield> {
        self.file.bitfields.iter().find(|e| e.name == name)
    }
    pub fn struct_(&self, name: &str) -> Option<&Struct> {
        self.file.structs.iter().find(|e| e.name == name)
    }
    pub fn record(&self, name: &str) -> Option<&Record> {
        self.file.records.iter().find(|e| e.name == name)
    }
    pub fn constant(&self, name: &str) -> Option<&Constant> {
        self.file.constants.iter().find(|e| e.name == name)
    }

    /// The element type named `ty`, with `size` for `bytes`.
    pub fn elem(&self, ty: &str, size: Option<u64>) -> Option<Elem<'_>> {
        if let Some(s) = Scalar::parse(ty) {
            return Some(Elem::Int(s));
        }
        if ty == "bytes" {
            return size.map(Elem::Bytes);
        }
        if let Some(b) = self.bitfield(ty) {
            return Some(Elem::Bitfield(b));
        }
        self.struct_(ty).map(Elem::Struct)
    }

    /// The resolved shape of a field (the spec has been validated).
    pub fn kind<'s>(&'s self, f: &'s Field) -> Option<FieldKind<'s>> {
        Some(match f.ty.as_str() {
            "blob" => FieldKind::Blob,
            "pages" => {
                let cw = f.count_where.as_ref()?;
                FieldKind::Pages {
                    field: cw.field.clone(),
                    attr: cw.attr.clone(),
                    page_size: self.page_size()?,
                }
            }
            "cstrings" => FieldKind::CStrings { pairs: f.pairs },
            ty => {
                let elem = self.elem(ty, f.size)?;
                match &f.count {
                    None => FieldKind::One(elem),
                    Some(c) if c == "rest" => FieldKind::Array {
                        elem,
                        count: Count::Rest,
                    },
                    Some(c) => FieldKind::Array {
                        elem,
                        count: self.count_of(c),
                    },
                }
            }
        })
    }

    /// A struct named by a blob layout: `FORMAT.struct` (another format's) or `struct` (this
    /// one's), with the spec that defines it.
    pub fn layout_struct(&self, name: &str) -> Option<(&Spec, &Struct)> {
        let (spec, s) = match name.split_once('.') {
            Some((fmt, s)) if fmt == self.file.format => (self, s),
            Some((fmt, s)) => (self.others.get(fmt)?, s),
            None => (self, name),
        };
        Some((spec, spec.struct_(s)?))
    }

    /// The format named by a `records:` layout, when it declares its framing.
    pub fn framed_format(&self, name: &str) -> Option<&Spec> {
        let spec = if name == self.file.format {
            self
        } else {
            self.others.get(name)?
        };
        spec.file.framing.is_some().then_some(spec)
    }

    /// What a `count:` other than `rest` means: a number, a constant's value, or a field.
    pub fn count_of(&self, c: &str) -> Count {
        if let Ok(n) = c.parse::<u64>() {
            return Count::Fixed { n, constant: None };
        }
        match self.constant(c).and_then(|k| k.value) {
            Some(n) => Count::Fixed {
                n,
                constant: Some(c.to_string()),
            },
            None => Count::Field(c.to_string()),
        }
    }

    /// The field that `f` is counted by, when an earlier field counts it.
    pub fn count_field<'f>(&self, f: &'f Field) -> Option<&'f str> {
        match f.count.as_deref() {
            Some("rest") | None => None,
            Some(c) => matches!(self.count_of(c), Count::Field(_)).then_some(c),
        }
    }

    /// Octets a field takes when that does not depend on the data: a single element, or a
    /// fixed number of them.
    pub fn field_size(&self, f: &Field) -> Option<u64> {
        match self.kind(f)? {
            FieldKind::One(e) => Some(self.elem_size(e)),
            FieldKind::Array {
                elem,
                count: Count::Fixed { n, .. },
            } => self.elem_size(elem).checked_mul(n),
            _ => None,
        }
    }

    /// Octets one element takes (structs: the sum of their fields).
    pub fn elem_size(&self, e: Elem<'_>) -> u64 {
        match e {
            Elem::Int(s) => s.size(),
            Elem::Bytes(n) => n,
            Elem::Bitfield(b) => Scalar::parse(&b.base).map_or(0, Scalar::size),
            Elem::Struct(s) => self.fixed_size(&s.fields).unwrap_or(0),
        }
    }

    /// The size of a field list if every field has a fixed size.
    pub fn fixed_size(&self, fields: &[Field]) -> Option<u64> {
        let mut total = 0u64;
        for f in fields {
            total = total.checked_add(self.field_size(f)?)?;
        }
        Some(total)
    }

    /// Each field that starts at a fixed position, with its offset from the start of the item:
    /// every field up to and including the first one of variable size.
    pub fn fixed_offsets<'f>(&self, fields: &'f [Field]) -> Vec<(&'f Field, u64)> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for f in fields {
            out.push((f, at));
            match self.field_size(f) {
                Some(n) => at = at.saturating_add(n),
                None => break,
            }
        }
        out
    }

    /// Octets in a page, for `pages` fields: the format's `PAGE_SIZE` constant (validation
    /// requires it wherever a `pages` field appears).
    pub fn page_size(&self) -> Option<u64> {
        self.constant(PAGE_SIZE_CONSTANT).and_then(|c| c.value)
    }

    /// Octets of the fields before the first variable one (the minimum body).
    pub fn min_size(&self, fields: &[Field]) -> u64 {
        let mut total = 0u64;
        for f in fields {
            match self.field_size(f) {
                Some(n) => total = total.saturating_add(n),
                None => break,
            }
        }
        total
    }

    /// The byte order a struct uses.
    pub fn struct_order(&self, s: &Struct) -> ByteOrder {
        s.byte_order.unwrap_or(self.file.byte_order)
    }

    /// The enum of the domain types, which `guests:` and layouts refer to.
    pub fn domain_type_enum(&self) -> Option<&Enum> {
        self.enum_("domain_type")
    }
}

/// The other formats that blob layouts name (`records: F`, `structs: [F.s]`).
fn layout_formats(file: &SpecFile) -> BTreeSet<String> {
    let fields = file
        .records
        .iter()
        .flat_map(|r| &r.fields)
        .chain(file.structs.iter().flat_map(|s| &s.fields));
    let mut out = BTreeSet::new();
    for f in fields {
        let Some(l) = &f.layout else { continue };
        out.extend(l.records.iter().cloned());
        out.extend(
            l.structs
                .iter()
                .filter_map(|q| q.split_once('.').map(|(fmt, _)| fmt.to_string())),
        );
    }
    out
}

/// The text of every expression in a spec: rule checks of structs and records, and the
/// conditions of layout requirements.
fn expression_texts(file: &SpecFile) -> BTreeSet<String> {
    let rules = file
        .structs
        .iter()
        .flat_map(|s| &s.rules)
        .chain(file.records.iter().flat_map(|r| &r.rules))
        .map(|r| r.check.clone());
    let conditions = file
        .layouts
        .iter()
        .flat_map(|l| &l.required)
        .filter_map(|q| q.condition.clone());
    rules.chain(conditions).collect()
}

/// Loads and checks a spec file.
pub fn load(path: &Path) -> Result<Spec, SpecErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors(vec![SpecError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            path: String::new(),
            key: None,
            message: format!("cannot read the spec: {e}"),
            source: None,
            note: None,
        }])
    })?;
    load_str(&text, path)
}

/// Checks spec text; `path` only names the file in messages.
pub fn load_str(text: &str, path: &Path) -> Result<Spec, SpecErrors> {
    // Syntax first: deserialising into the model stops at the first missing or unknown key,
    // which can come before a syntax error further down (a mis-indented key ends its mapping).
    let parsed = serde_yaml::from_str::<serde::de::IgnoredAny>(text)
        .and_then(|_| serde_yaml::from_str::<SpecFile>(text));
    let file: SpecFile = match parsed {
        Ok(f) => f,
        Err(e) => {
            let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let msg = e.to_string();
            // serde_yaml appends " at line L column C"; the location is in front already.
            let msg = match msg.find(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            return Err(SpecErrors(vec![SpecError {
                file: path.to_path_buf(),
                line,
                col,
                path: String::new(),
                key: None,
                message: msg,
                source: text
                    .lines()
                    .nth(line.saturating_sub(1))
                    .map(|l| l.trim_end().to_string()),
                note: None,
            }]));
        }
    };
    let others = layout_formats(&file)
        .into_iter()
        .filter_map(|name| {
            let other = path.with_file_name(format!("{name}.yaml"));
            let text = std::fs::read_to_string(&other).ok()?;
            let file = serde_yaml::from_str::<SpecFile>(&text).ok()?;
            (file.format == name).then(|| {
                let spec = Spec {
                    file,
                    path: other,
                    others: BTreeMap::new(),
                    exprs: BTreeMap::new(),
                };
                (name, spec)
            })
        })
        .collect();
    let exprs = expression_texts(&file)
        .into_iter()
        .map(|t| {
            let e = expr::parse(&t);
            (t, e)
        })
        .collect();
    let spec = Spec {
        file,
        path: path.to_path_buf(),
        others,
        exprs,
    };
    let locs = Locations::scan(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut v = Checker {
        spec: &spec,
        locs: &locs,
        lines: &lines,
        errors: Vec::new(),
    };
    v.check();
    if v.errors.is_empty() {
        Ok(spec)
    } else {
        Err(SpecErrors(v.errors))
    }
}

struct Checker<'a> {
    spec: &'a Spec,
    locs: &'a Locations,
    /// The spec's text, for the source lines shown under errors.
    lines: &'a [&'a str],
    errors: Vec<SpecError>,
}

fn is_upper(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_lower(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The integers and arrays of a field list that rules can name.
struct FieldScope<'s> {
    ints: HashSet<&'s str>,
    arrays: HashSet<&'s str>,
    /// The format's integer constants.
    consts: HashSet<&'s str>,
}

impl Scope for FieldScope<'_> {
    fn has_int(&self, name: &str) -> bool {
        self.ints.contains(name)
    }
    fn has_array(&self, name: &str) -> bool {
        self.arrays.contains(name)
    }
    fn has_const(&self, name: &str) -> bool {
        self.consts.contains(name)
    }
}

/// The integer constants of a spec, which rules may name.
fn int_constants(spec: &Spec) -> HashSet<&str> {
    spec.file
        .constants
        .iter()
        .filter(|c| c.value.is_some())
        .map(|c| c.name.as_str())
        .collect()
}

impl<'a> Checker<'a> {
    fn err(&mut self, path: &str, key: Option<&str>, message: impl Into<String>) {
        let (line, col) = self.locs.find(path, key);
        self.errors.push(SpecError {
            file: self.spec.path.clone(),
            line,
            col,
            path: path.to_string(),
            key: key.map(str::to_string),
            message: message.into(),
            source: self.source_line(line),
            note: None,
        });
    }

    /// An error with a note pointing at a second place (`note_path`'s `note_key`).
    fn err_noted(
        &mut self,
        path: &str,
        key: Option<&str>,
        message: impl Into<String>,
        note_path: &str,
        note: impl Into<String>,
    ) {
        self.err(path, key, message);
        let (line, col) = self.locs.find(note_path, key);
        let source = self.source_line(line);
        if let Some(e) = self.errors.last_mut() {
            e.note = Some(Box::new(SpecNote {
                line,
                col,
                message: note.into(),
                source,
            }));
        }
    }

    fn source_line(&self, line: usize) -> Option<String> {
        let l = self.lines.get(line.checked_sub(1)?)?;
        Some(l.trim_end().to_string())
    }

    fn doc(&mut self, path: &str, doc: &str) {
        if doc.trim().is_empty() {
            self.err(path, Some("doc"), "`doc` must describe this item");
        }
    }

    fn check(&mut self) {
        let f = &self.spec.file;
        if !is_lower(&f.format) {
            self.err(
                "",
                Some("format"),
                format!("format `{}` must be lower_snake", f.format),
            );
        }
        self.doc("", &f.doc);
        if let Some(v) = &f.versions {
            if v.accepted.is_empty() {
                self.err(
                    "versions",
                    Some("accepted"),
                    "at least one version must be accepted",
                );
            }
            if !v.accepted.contains(&v.written) {
                self.err(
                    "versions",
                    Some("written"),
                    format!(
                        "written version {} is not among the accepted {:?}",
                        v.written, v.accepted
                    ),
                );
            }
        }
        self.names();
        self.constants();
        self.enums();
        self.flags();
        self.bitfields();
        for (i, s) in f.structs.iter().enumerate() {
            self.struct_(i, s);
        }
        self.records();
        self.layouts();
        self.framing();
        self.words();
        self.chunks();
        self.parts();
    }

    /// `framing`: a fixed-size header struct with integer type and length fields wide enough
    /// for every record type.
    fn framing(&mut self) {
        let spec = self.spec;
        let Some(fr) = &spec.file.framing else { return };
        self.doc("framing", &fr.doc);
        let Some(h) = spec.struct_(&fr.header) else {
            self.err(
                "framing",
                Some("header"),
                format!("`{}` is not a struct of this format", fr.header),
            );
            return;
        };
        if spec.fixed_size(&h.fields).is_none() {
            self.err(
                "framing",
                Some("header"),
                format!("struct `{}` must have a fixed size", h.name),
            );
        }
        if matches!(spec.struct_order(h), ByteOrder::Stream) {
            self.err("framing", Some("header"), "a framed format's header needs a fixed byte order (big, little or host), not `stream`");
        }
        let int_field = |name: &str| {
            h.fields
                .iter()
                .find(|g| g.name == name && g.count.is_none())
                .and_then(|g| Scalar::parse(&g.ty))
        };
        match int_field(&fr.type_field) {
            None => self.err(
                "framing",
                Some("type"),
                format!(
                    "`{}` is not an integer field of `{}`",
                    fr.type_field, h.name
                ),
            ),
            Some(sc) => {
                let max = if sc.size() >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * sc.size())) - 1
                };
                for (i, r) in spec.file.records.iter().enumerate() {
                    if r.record_type > max {
                        self.err(
                            &format!("records[{i}]"),
                            Some("type"),
                            format!(
                                "type {:#x} does not fit the framing's {}-octet `{}`",
                                r.record_type,
                                sc.size(),
                                fr.type_field
                            ),
                        );
                    }
                }
            }
        }
        if int_field(&fr.length).is_none() {
            self.err(
                "framing",
                Some("length"),
                format!("`{}` is not an integer field of `{}`", fr.length, h.name),
            );
        }
    }

    /// A blob's `layout`: another format's framed records, or structs told apart by size.
    fn blob_layout(&mut self, fp: &str, f: &Field, l: &BlobLayout) {
        let spec = self.spec;
        if f.ty != "blob" {
            self.err(fp, Some("layout"), "`layout` applies to `blob` fields only");
            return;
        }
        match (&l.records, l.structs.is_empty()) {
            (Some(_), false) | (None, true) => {
                self.err(
                    fp,
                    Some("layout"),
                    "a layout names either `records: FORMAT` or `structs: [FORMAT.struct, ...]`",
                );
            }
            (Some(fmt), true) => {
                if spec.framed_format(fmt).is_none() {
                    let why = if fmt == &spec.file.format || spec.others.contains_key(fmt) {
                        format!("format `{fmt}` declares no `framing`")
                    } else {
                        format!("no spec `{fmt}.yaml` of format `{fmt}` is beside this one")
                    };
                    self.err(fp, Some("layout"), why);
                }
            }
            (None, false) => {
                let mut sizes: HashMap<u64, &str> = HashMap::new();
                for q in &l.structs {
                    match spec.layout_struct(q) {
                        None => self.err(fp, Some("layout"), format!("`{q}` names no struct (write FORMAT.struct, with spec FORMAT.yaml beside this one)")),
                        Some((other, st)) => {
                            if matches!(other.struct_order(st), ByteOrder::Stream) {
                                self.err(fp, Some("layout"), format!("struct `{q}` needs a fixed byte order to lay out a blob"));
                            }
                            match other.fixed_size(&st.fields) {
                                None => self.err(fp, Some("layout"), format!("struct `{q}` has no fixed size")),
                                Some(n) => {
                                    if let Some(prev) = sizes.insert(n, q) {
                                        self.err(fp, Some("layout"), format!("`{q}` and `{prev}` are both {n} octets: the blob's length cannot tell them apart"));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every named item: naming convention and uniqueness across kinds.
    fn names(&mut self) {
        let f = &self.spec.file;
        let mut types: HashMap<&str, String> = HashMap::new();
        let builtin = [
            "u8", "u16", "u32", "u64", "bytes", "blob", "pages", "cstrings",
        ];
        let mut items: Vec<(String, &str, bool)> = Vec::new();
        for (i, e) in f.enums.iter().enumerate() {
            items.push((format!("enums[{i}]"), &e.name, true));
        }
        for (i, e) in f.flags.iter().enumerate() {
            items.push((format!("flags[{i}]"), &e.name, true));
        }
        for (i, e) in f.bitfields.iter().enumerate() {
            items.push((format!("bitfields[{i}]"), &e.name, true));
        }
        for (i, e) in f.structs.iter().enumerate() {
            items.push((format!("structs[{i}]"), &e.name, true));
        }
        for (i, e) in f.constants.iter().enumerate() {
            items.push((format!("constants[{i}]"), &e.name, false));
        }
        for (path, name, lower) in items {
            if lower && !is_lower(name) {
                self.err(&path, Some("name"), format!("`{name}` must be lower_snake"));
            }
            if !lower && !is_upper(name) {
                self.err(&path, Some("name"), format!("`{name}` must be UPPER_SNAKE"));
            }
            if builtin.contains(&name) {
                self.err(
                    &path,
                    Some("name"),
                    format!("`{name}` is a built-in type name"),
                );
            }
            if let Some(first) = types.insert(name, path.clone()) {
                self.err_noted(
                    &path,
                    Some("name"),
                    format!("`{name}` is already defined at `{first}`"),
                    &first,
                    format!("`{name}` is first defined here"),
                );
            }
        }
    }

    fn constants(&mut self) {
        for (i, c) in self.spec.file.constants.iter().enumerate() {
            let p = format!("constants[{i}]");
            self.doc(&p, &c.doc);
            match (Scalar::parse(&c.ty), c.ty.as_str(), c.value, &c.text) {
                (Some(s), _, Some(v), None) => {
                    if v > s.max() {
                        self.err(
                            &p,
                            Some("value"),
                            format!("{v:#x} does not fit in {}", s.name()),
                        );
                    }
                }
                (None, "bytes", None, Some(_)) => {}
                (None, "bytes", ..) => self.err(
                    &p,
                    Some("text"),
                    "a `bytes` constant needs `text` and no `value`",
                ),
                (Some(_), ..) => self.err(
                    &p,
                    Some("value"),
                    "an integer constant needs `value` and no `text`",
                ),
                (None, ty, ..) => self.err(
                    &p,
                    Some("type"),
                    format!("unknown constant type `{ty}` (u8, u16, u32, u64, bytes)"),
                ),
            }
        }
    }

    fn enums(&mut self) {
        for (i, e) in self.spec.file.enums.iter().enumerate() {
            let p = format!("enums[{i}]");
            self.doc(&p, &e.doc);
            let Some(s) = Scalar::parse(&e.ty) else {
                self.err(
                    &p,
                    Some("type"),
                    format!("unknown enum type `{}` (u8, u16, u32, u64)", e.ty),
                );
                continue;
            };
            let attrs: HashMap<&str, Option<Scalar>> = e
                .attributes
                .iter()
                .map(|a| (a.name.as_str(), a.ty.as_deref().and_then(Scalar::parse)))
                .collect();
            for (j, a) in e.attributes.iter().enumerate() {
                let ap = format!("{p}.attributes[{j}]");
                self.doc(&ap, &a.doc);
                if let Some(t) = &a.ty {
                    if Scalar::parse(t).is_none() {
                        self.err(&ap, Some("type"), format!("attribute type `{t}` must be u8, u16, u32 or u64 (leave it out for a boolean)"));
                    }
                }
                if !is_lower(&a.name) || ["name", "value", "doc"].contains(&a.name.as_str()) {
                    self.err(
                        &ap,
                        Some("name"),
                        format!(
                            "attribute `{}` must be lower_snake and not name/value/doc",
                            a.name
                        ),
                    );
                }
            }
            if e.values.is_empty() {
                self.err(&p, Some("values"), "an enum needs at least one value");
            }
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            for (j, v) in e.values.iter().enumerate() {
                let vp = format!("{p}.values[{j}]");
                self.doc(&vp, &v.doc);
                if !is_upper(&v.name) {
                    self.err(
                        &vp,
                        Some("name"),
                        format!("`{}` must be UPPER_SNAKE", v.name),
                    );
                }
                if let Some(first) = names.insert(v.name.as_str(), j) {
                    self.err_noted(
                        &vp,
                        Some("name"),
                        format!("variant `{}` is defined twice", v.name),
                        &format!("{p}.values[{first}]"),
                        "first defined here",
                    );
                }
                if let Some((other, first)) = values.insert(v.value, (v.name.as_str(), j)) {
                    self.err_noted(
                        &vp,
                        Some("value"),
                        format!("value {:#x} is already used by `{other}`", v.value),
                        &format!("{p}.values[{first}]"),
                        format!("`{other}` has it here"),
                    );
                }
                if v.value > s.max() {
                    self.err(
                        &vp,
                        Some("value"),
                        format!("{:#x} does not fit in {}", v.value, s.name()),
                    );
                }
                for (k, val) in &v.attrs {
                    match attrs.get(k.as_str()) {
                        None => self.err(
                            &vp,
                            Some(k),
                            format!(
                                "unknown key `{k}`: not a declared attribute of enum `{}`",
                                e.name
                            ),
                        ),
                        Some(None) if !val.is_bool() => self.err(
                            &vp,
                            Some(k),
                            format!("attribute `{k}` must be true or false"),
                        ),
                        Some(Some(t)) => match val.as_u64() {
                            Some(n) if n <= t.max() => {}
                            _ => self.err(
                                &vp,
                                Some(k),
                                format!(
                                    "attribute `{k}` must be an integer that fits in {}",
                                    t.name()
                                ),
                            ),
                        },
                        Some(None) => {}
                    }
                }
            }
        }
    }

    fn flags(&mut self) {
        for (i, fl) in self.spec.file.flags.iter().enumerate() {
            let p = format!("flags[{i}]");
            self.doc(&p, &fl.doc);
            let Some(s) = Scalar::parse(&fl.ty) else {
                self.err(&p, Some("type"), format!("unknown flags type `{}`", fl.ty));
                continue;
            };
            let mut seen = HashMap::new();
            for (j, b) in fl.bits.iter().enumerate() {
                let bp = format!("{p}.bits[{j}]");
                self.doc(&bp, &b.doc);
                if !is_upper(&b.name) {
                    self.err(
                        &bp,
                        Some("name"),
                        format!("`{}` must be UPPER_SNAKE", b.name),
                    );
                }
                if b.bit >= s.bits() {
                    self.err(
                        &bp,
                        Some("bit"),
                        format!("bit {} does not fit in {}", b.bit, s.name()),
                    );
                }
                if let Some(o) = seen.insert(b.bit, b.name.clone()) {
                    self.err(&bp, Some("bit"), format!("bit {} is already `{o}`", b.bit));
                }
            }
        }
    }

    fn bitfields(&mut self) {
        for (i, b) in self.spec.file.bitfields.iter().enumerate() {
            let p = format!("bitfields[{i}]");
            self.doc(&p, &b.doc);
            let Some(base) = Scalar::parse(&b.base) else {
                self.err(
                    &p,
                    Some("base"),
                    format!("unknown bitfield base `{}` (u8, u16, u32, u64)", b.base),
                );
                continue;
            };
            let mut used: Vec<(u32, u32, &str)> = Vec::new();
            let mut names = HashSet::new();
            for (j, m) in b.fields.iter().enumerate() {
                let mp = format!("{p}.fields[{j}]");
                self.doc(&mp, &m.doc);
                if !is_lower(&m.name) || !names.insert(m.name.as_str()) {
                    self.err(
                        &mp,
                        Some("name"),
                        format!("`{}` must be a unique lower_snake name", m.name),
                    );
                }
                let Some((lo, hi)) = parse_bits(&m.bits) else {
                    self.err(
                        &mp,
                        Some("bits"),
                        format!("`{}` is not a bit range like 0..=51", m.bits),
                    );
                    continue;
                };
                if hi >= base.bits() {
                    self.err(
                        &mp,
                        Some("bits"),
                        format!("bits {lo}..={hi} do not fit in {}", base.name()),
                    );
                }
                for (l2, h2, n2) in &used {
                    if lo <= *h2 && *l2 <= hi {
                        self.err(
                            &mp,
                            Some("bits"),
                            format!("bits {lo}..={hi} overlap `{n2}` ({l2}..={h2})"),
                        );
                    }
                }
                used.push((lo, hi, &m.name));
                if let Some(en) = &m.enum_name {
                    match self.spec.enum_(en) {
                        None => self.err(&mp, Some("enum"), format!("unknown enum `{en}`")),
                        Some(e) => {
                            let width = hi - lo + 1;
                            if let Some(v) = e
                                .values
                                .iter()
                                .find(|v| width < 64 && v.value >> width != 0)
                            {
                                self.err(
                                    &mp,
                                    Some("enum"),
                                    format!(
                                        "variant `{}` ({:#x}) does not fit in {width} bits",
                                        v.name, v.value
                                    ),
                                );
                            }
                        }
                    }
                }
                if m.display == Some(Display::Summary)
                    || (m.display.is_some() && m.enum_name.is_some())
                {
                    self.err(
                        &mp,
                        Some("display"),
                        "`display: hex | decimal` applies to integer members only",
                    );
                }
                if m.reserved && m.enum_name.is_some() {
                    self.err(
                        &mp,
                        Some("reserved"),
                        "a reserved member cannot also be an enum",
                    );
                }
            }
        }
    }

    fn struct_(&mut self, i: usize, s: &'a Struct) {
        let p = format!("structs[{i}]");
        self.doc(&p, &s.doc);
        self.fields(&p, &s.fields, &s.rules);
        if let Some(size) = s.size {
            match self.spec.fixed_size(&s.fields) {
                Some(sum) if sum != size => self.err(
                    &p,
                    Some("size"),
                    format!("declared size {size} but the fields add up to {sum} octets"),
                ),
                None => self.err(
                    &p,
                    Some("size"),
                    "a struct with a declared size must have only fixed-size fields",
                ),
                _ => {}
            }
        }
    }

    /// Checks a field list and its rules.
    fn fields(&mut self, p: &str, fields: &'a [Field], rules: &'a [Rule]) {
        let spec = self.spec;
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut ints: HashSet<&str> = HashSet::new();
        let mut arrays: HashSet<&str> = HashSet::new();
        let n = fields.len();
        for (j, f) in fields.iter().enumerate() {
            let fp = format!("{p}.fields[{j}]");
            self.doc(&fp, &f.doc);
            if !is_lower(&f.name) {
                self.err(
                    &fp,
                    Some("name"),
                    format!("`{}` must be lower_snake", f.name),
                );
            }
            if ["body_length", "ctx", "len"].contains(&f.name.as_str()) {
                self.err(
                    &fp,
                    Some("name"),
                    format!("`{}` is reserved for rules", f.name),
                );
            }
            if let Some(first) = names.insert(f.name.as_str(), j) {
                self.err_noted(
                    &fp,
                    Some("name"),
                    format!("field `{}` is defined twice", f.name),
                    &format!("{p}.fields[{first}]"),
                    "first defined here",
                );
            }
            let is_last = j + 1 == n;
            match f.ty.as_str() {
                "blob" | "cstrings" => {
                    if !is_last {
                        self.err(
                            &fp,
                            Some("type"),
                            format!(
                                "a `{}` fills the rest of the body and must be the last field",
                                f.ty
                            ),
                        );
                    }
                }
                "pages" => match &f.count_where {
                    _ if !matches!(
                        spec.constant(PAGE_SIZE_CONSTANT),
                        Some(c) if c.value.is_some_and(|v| v > 0)
                    ) =>
                    {
                        self.err(
                            &fp,
                            Some("type"),
                            format!(
                                "a `pages` field needs the format to define the constant \
                                 `{PAGE_SIZE_CONSTANT}` (an integer above 0, octets per page)"
                            ),
                        )
                    }
                    None => self.err(
                        &fp,
                        Some("count_where"),
                        "a `pages` field needs `count_where: { field, attr }`",
                    ),
                    Some(cw) => {
                        let target = fields[..j].iter().find(|g| g.name == cw.field);
                        let member_enum = target
                            .and_then(|g| spec.bitfield(&g.ty))
                            .and_then(|b| b.fields.iter().find_map(|m| m.enum_name.as_deref()))
                            .and_then(|e| spec.enum_(e));
                        match (target, member_enum) {
                            (None, _) => self.err(
                                &fp,
                                Some("count_where"),
                                format!("`{}` is not an earlier field", cw.field),
                            ),
                            (Some(_), None) => self.err(
                                &fp,
                                Some("count_where"),
                                format!(
                                    "`{}` must be an array of a bitfield with an enum member",
                                    cw.field
                                ),
                            ),
                            (Some(_), Some(e)) => {
                                if !e
                                    .attributes
                                    .iter()
                                    .any(|a| a.name == cw.attr && a.ty.is_none())
                                {
                                    self.err(
                                        &fp,
                                        Some("count_where"),
                                        format!(
                                            "enum `{}` has no boolean attribute `{}`",
                                            e.name, cw.attr
                                        ),
                                    );
                                }
                            }
                        }
                    }
                },
                ty => {
                    match spec.elem(ty, f.size) {
                        None if ty == "bytes" => {
                            self.err(&fp, Some("size"), "a `bytes` field needs `size: N`")
                        }
                        None if spec.word(ty).is_some() => self.err(
                            &fp,
                            Some("type"),
                            format!("`{ty}` is a word type, whose width the chunk reader's context gives: it is allowed in chunk fields only"),
                        ),
                        None => self.err(&fp, Some("type"), format!("unknown type `{ty}`")),
                        Some(elem) => {
                            if let Elem::Bytes(0) = elem {
                                self.err(&fp, Some("size"), "`size` must be at least 1");
                            }
                            if let Elem::Struct(st) = elem {
                                if spec.fixed_size(&st.fields).is_none() {
                                    self.err(&fp, Some("type"), format!("struct `{}` has variable-size fields and cannot be an element", st.name));
                                }
                            }
                            match f.count.as_deref() {
                                None => {
                                    if let Elem::Int(_) = elem {
                                        ints.insert(&f.name);
                                    }
                                    self.constraints(&fp, f, elem);
                                }
                                Some("rest") => {
                                    arrays.insert(&f.name);
                                    if !is_last {
                                        self.err(&fp, Some("count"), "`count: rest` fills the rest of the body and must be the last field");
                                    }
                                }
                                Some(c) if !matches!(spec.count_of(c), Count::Field(_)) => {
                                    arrays.insert(&f.name);
                                    if p.starts_with("structs") {
                                        self.err(&fp, Some("count"), format!("a fixed count (`count: {c}`) is allowed in records only: a struct's fields are single values"));
                                    }
                                    if matches!(spec.count_of(c), Count::Fixed { n: 0, .. }) {
                                        self.err(
                                            &fp,
                                            Some("count"),
                                            "a fixed count must be at least 1",
                                        );
                                    }
                                }
                                Some(c) => {
                                    arrays.insert(&f.name);
                                    let earlier = fields[..j].iter().find(|g| g.name == c);
                                    match earlier {
                                    None => self.err(&fp, Some("count"), format!("`count: {c}` does not name an earlier field")),
                                    Some(g) if Scalar::parse(&g.ty).is_none() || g.count.is_some() => {
                                        self.err(&fp, Some("count"), format!("`count: {c}` must name an earlier integer field"))
                                    }
                                    _ => {}
                                }
                                }
                            }
                            if f.count.is_some()
                                && (f.value.is_some()
                                    || f.one_of.is_some()
                                    || f.min.is_some()
                                    || f.max.is_some()
                                    || f.enum_name.is_some()
                                    || f.flags.is_some()
                                    || f.reserved)
                            {
                                self.err(
                                    &fp,
                                    Some("count"),
                                    "constraints apply to single values, not to arrays",
                                );
                            }
                        }
                    }
                }
            }
            if f.pairs && f.ty != "cstrings" {
                self.err(&fp, Some("pairs"), "`pairs` applies to `cstrings` only");
            }
            if f.size.is_some() && f.ty != "bytes" {
                self.err(&fp, Some("size"), "`size` applies to `bytes` only");
            }
            if let Some(l) = &f.layout {
                self.blob_layout(&fp, f, l);
            }
            if f.count_where.is_some() && f.ty != "pages" {
                self.err(
                    &fp,
                    Some("count_where"),
                    "`count_where` applies to `pages` only",
                );
            }
            if let Some(d) = f.display {
                let shape = spec.kind(f).map(|k| match k {
                    FieldKind::One(Elem::Int(_)) => (true, false),
                    FieldKind::Array { elem, .. } => (
                        matches!(elem, Elem::Int(_)),
                        !matches!(elem, Elem::Bytes(_)),
                    ),
                    _ => (false, false),
                });
                let (int, array) = shape.unwrap_or((true, true));
                let int = int && f.enum_name.is_none() && f.flags.is_none();
                match d {
                    Display::Hex | Display::Decimal if !int => self.err(
                        &fp,
                        Some("display"),
                        "`display: hex | decimal` applies to integers and arrays of integers",
                    ),
                    Display::Summary if !array => self.err(
                        &fp,
                        Some("display"),
                        "`display: summary` applies to arrays of integers, structs or bitfields",
                    ),
                    _ => {}
                }
            }
        }
        let scope = FieldScope {
            ints,
            arrays,
            consts: int_constants(spec),
        };
        let mut rule_names = HashSet::new();
        for (j, r) in rules.iter().enumerate() {
            let rp = format!("{p}.rules[{j}]");
            self.doc(&rp, &r.doc);
            if !is_lower(&r.name) || !rule_names.insert(r.name.as_str()) {
                self.err(
                    &rp,
                    Some("name"),
                    format!("rule name `{}` must be unique and lower_snake", r.name),
                );
            }
            self.expr(&rp, "check", &r.check, &scope);
        }
    }

    fn expr(&mut self, path: &str, key: &str, text: &str, scope: &dyn Scope) -> Option<Expr> {
        let parsed = match self.spec.exprs.get(text) {
            Some(p) => p.clone(),
            None => expr::parse(text),
        };
        match parsed {
            Err(e) => {
                self.err(path, Some(key), format!("cannot parse `{text}`: {e}"));
                None
            }
            Ok(e) => match e.check(scope) {
                Err(m) => {
                    self.err(path, Some(key), format!("in `{text}`: {m}"));
                    None
                }
                Ok(Kind::Int) => {
                    self.err(
                        path,
                        Some(key),
                        format!("`{text}` is an integer, not a condition"),
                    );
                    None
                }
                Ok(Kind::Bool) => Some(e),
            },
        }
    }

    /// Constraints on a single-valued field.
    fn constraints(&mut self, fp: &str, f: &Field, elem: Elem<'_>) {
        let spec = self.spec;
        let int = match elem {
            Elem::Int(s) => Some(s),
            _ => None,
        };
        if let Some(v) = &f.value {
            match (v, elem) {
                (IntOrName::Int(n), Elem::Int(s)) => {
                    if *n > s.max() {
                        self.err(
                            fp,
                            Some("value"),
                            format!("{n:#x} does not fit in {}", s.name()),
                        );
                    }
                }
                (IntOrName::Name(c), _) => match (spec.constant(c), elem) {
                    (None, _) => self.err(fp, Some("value"), format!("unknown constant `{c}`")),
                    (Some(k), Elem::Int(s)) => match k.value {
                        Some(n) if n <= s.max() => {}
                        _ => self.err(
                            fp,
                            Some("value"),
                            format!("constant `{c}` is not an integer that fits in {}", s.name()),
                        ),
                    },
                    (Some(k), Elem::Bytes(n)) => {
                        if k.text.as_ref().map(|t| t.len() as u64) != Some(n) {
                            self.err(
                                fp,
                                Some("value"),
                                format!("constant `{c}` is not {n} octets of text"),
                            );
                        }
                    }
                    _ => self.err(fp, Some("value"), "`value` applies to integers and bytes"),
                },
                _ => self.err(fp, Some("value"), "`value` applies to integers and bytes"),
            }
        }
        for (key, present) in [
            ("one_of", f.one_of.is_some()),
            ("min", f.min.is_some()),
            ("max", f.max.is_some()),
        ] {
            if present && int.is_none() {
                self.err(fp, Some(key), format!("`{key}` applies to integer fields"));
            }
        }
        if let Some(d) = f.default {
            match int {
                None => self.err(fp, Some("default"), "`default` applies to integer fields"),
                Some(s) if d > s.max() => self.err(
                    fp,
                    Some("default"),
                    format!("{d:#x} does not fit in {}", s.name()),
                ),
                Some(_) => {
                    if f.one_of.as_ref().is_some_and(|v| !v.contains(&d)) {
                        self.err(
                            fp,
                            Some("default"),
                            format!(
                                "default {d} is not one of {:?}",
                                f.one_of.as_deref().unwrap_or(&[])
                            ),
                        );
                    }
                }
            }
        }
        if let (Some(s), Some(vals)) = (int, &f.one_of) {
            if let Some(v) = vals.iter().find(|v| **v > s.max()) {
                self.err(
                    fp,
                    Some("one_of"),
                    format!("{v:#x} does not fit in {}", s.name()),
                );
            }
        }
        for (key, bound) in [("min", f.min), ("max", f.max)] {
            if let (Some(s), Some(m)) = (int, bound) {
                if m > s.max() {
                    self.err(
                        fp,
                        Some(key),
                        format!("bound {m:#x} does not fit in {}", s.name()),
                    );
                }
            }
        }
        if let Some(en) = &f.enum_name {
            match (spec.enum_(en), int) {
                (None, _) => self.err(fp, Some("enum"), format!("unknown enum `{en}`")),
                (Some(_), None) => self.err(fp, Some("enum"), "`enum` applies to integer fields"),
                (Some(e), Some(s)) => {
                    if e.ty != s.name() {
                        self.err(
                            fp,
                            Some("enum"),
                            format!("enum `{en}` is {} but the field is {}", e.ty, s.name()),
                        );
                    }
                }
            }
        }
        if f.known.is_some() && f.enum_name.is_none() {
            self.err(fp, Some("known"), "`known` applies to enum fields");
        }
        if let Some(fl) = &f.flags {
            match (spec.flags_(fl), int) {
                (None, _) => self.err(fp, Some("flags"), format!("unknown flags `{fl}`")),
                (Some(_), None) => self.err(fp, Some("flags"), "`flags` applies to integer fields"),
                (Some(x), Some(s)) => {
                    if x.ty != s.name() {
                        self.err(
                            fp,
                            Some("flags"),
                            format!("flags `{fl}` are {} but the field is {}", x.ty, s.name()),
                        );
                    }
                }
            }
            if f.enum_name.is_some() {
                self.err(fp, Some("flags"), "a field is either an enum or flags");
            }
        }
        if f.reserved && !matches!(elem, Elem::Int(_) | Elem::Bytes(_)) {
            self.err(
                fp,
                Some("reserved"),
                "`reserved` applies to integers and bytes",
            );
        }
    }

    fn records(&mut self) {
        let spec = self.spec;
        let recs = &spec.file.records;
        let mut types: HashMap<u64, (&str, usize)> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut roles = HashMap::new();
        let accepted: Option<&Vec<u32>> = spec.file.versions.as_ref().map(|v| &v.accepted);
        let guests: Option<BTreeSet<&str>> = spec
            .domain_type_enum()
            .map(|e| e.values.iter().map(|v| v.name.as_str()).collect());
        for (i, r) in recs.iter().enumerate() {
            let p = format!("records[{i}]");
            self.doc(&p, &r.doc);
            if !is_upper(&r.name) {
                self.err(
                    &p,
                    Some("name"),
                    format!("record name `{}` must be UPPER_SNAKE", r.name),
                );
            }
            if let Some(first) = names.insert(r.name.as_str(), i) {
                self.err_noted(
                    &p,
                    Some("name"),
                    format!("record `{}` is defined twice", r.name),
                    &format!("records[{first}]"),
                    "first defined here",
                );
            }
            if r.record_type > u32::MAX as u64 {
                self.err(
                    &p,
                    Some("type"),
                    format!("type {:#x} does not fit in u32", r.record_type),
                );
            } else if let Some((other, first)) = types.insert(r.record_type, (&r.name, i)) {
                self.err_noted(
                    &p,
                    Some("type"),
                    format!(
                        "duplicate type number {:#x}: already used by `{other}`",
                        r.record_type
                    ),
                    &format!("records[{first}]"),
                    format!("`{other}` has it here"),
                );
            }
            if let Some(role) = r.role {
                if let Some(other) = roles.insert(role, r.name.as_str()) {
                    self.err(
                        &p,
                        Some("role"),
                        format!("role {role:?} is already taken by `{other}`"),
                    );
                }
            }
            if let (Some(v), Some(acc)) = (r.since_version, accepted) {
                if !acc.contains(&v) {
                    self.err(
                        &p,
                        Some("since_version"),
                        format!("version {v} is not an accepted version {acc:?}"),
                    );
                }
            }
            for g in &r.guests {
                match &guests {
                    Some(set) if !set.contains(g.as_str()) => self.err(
                        &p,
                        Some("guests"),
                        format!("`{g}` is not a domain type variant"),
                    ),
                    None if !is_upper(g) => self.err(
                        &p,
                        Some("guests"),
                        format!("`{g}` must be a domain type name"),
                    ),
                    _ => {}
                }
            }
            for name in &r.implied_at {
                if !recs.iter().any(|x| &x.name == name) {
                    self.err(&p, Some("implied_at"), format!("unknown record `{name}`"));
                }
            }
            if !r.implied_at.is_empty() && r.since_version.is_none() {
                self.err(&p, Some("implied_at"), "`implied_at` needs `since_version`");
            }
            if r.empty.is_some() && r.fields.is_empty() {
                self.err(
                    &p,
                    Some("empty"),
                    "a record without fields always has an empty body",
                );
            }
            self.fields(&p, &r.fields, &r.rules);
        }
    }

    fn layouts(&mut self) {
        let spec = self.spec;
        let guests: BTreeSet<&str> = spec
            .domain_type_enum()
            .map(|e| e.values.iter().map(|v| v.name.as_str()).collect())
            .unwrap_or_default();
        for (i, l) in spec.file.layouts.iter().enumerate() {
            let p = format!("layouts[{i}]");
            self.doc(&p, &l.doc);
            if l.guest != "all" && !guests.contains(l.guest.as_str()) {
                self.err(
                    &p,
                    Some("guest"),
                    format!("`{}` is not `all` or a domain type variant", l.guest),
                );
            }
            for (j, r) in l.required.iter().enumerate() {
                let rp = format!("{p}.required[{j}]");
                self.doc(&rp, &r.doc);
                match spec.record(&r.record) {
                    None => self.err(
                        &rp,
                        Some("record"),
                        format!("unknown record `{}`", r.record),
                    ),
                    Some(rec) => {
                        if let Some(c) = &r.condition {
                            let scope = record_scope(spec, rec);
                            self.expr(&rp, "where", c, &scope);
                        }
                    }
                }
            }
            for (j, o) in l.order.iter().enumerate() {
                let op = format!("{p}.order[{j}]");
                self.doc(&op, &o.doc);
                let named = std::iter::once(("record", &o.record))
                    .chain(o.after.iter().map(|n| ("after", n)))
                    .chain(o.before.iter().map(|n| ("before", n)));
                for (key, name) in named {
                    if spec.record(name).is_none() {
                        self.err(&op, Some(key), format!("unknown record `{name}`"));
                    }
                }
                if o.after.is_empty() && o.before.is_empty() {
                    self.err(
                        &op,
                        Some("after"),
                        "an order rule needs `after` or `before`",
                    );
                }
            }
        }
    }
}

fn record_scope<'s>(spec: &'s Spec, r: &'s Record) -> FieldScope<'s> {
    let mut ints = HashSet::new();
    let mut arrays = HashSet::new();
    for f in &r.fields {
        match spec.kind(f) {
            Some(FieldKind::One(Elem::Int(_))) => {
                ints.insert(f.name.as_str());
            }
            Some(FieldKind::Array { .. }) => {
                arrays.insert(f.name.as_str());
            }
            _ => {}
        }
    }
    FieldScope {
        ints,
        arrays,
        consts: int_constants(spec),
    }
}

// -- chunks and word types --------------------------------------------------------------------

/// The context values a word type may take its width from.
pub const WORD_WIDTHS: &[&str] = &["word_size", "guest_width"];

/// What one element of a chunk field is.
#[derive(Debug, Clone, Copy)]
pub enum ChunkElem<'s> {
    Int(Scalar),
    /// A word type: 4 or 8 octets as the context says, read as u64.
    Word(&'s Word),
    Bytes(u64),
    /// A fixed-size struct of the format (single values only).
    Struct(&'s Struct),
}

/// How many elements a chunk array has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkCount {
    /// A number or a constant.
    Fixed { n: u64, constant: Option<String> },
    /// An expression over earlier integer fields and, in the positive chunk, `id`
    /// (a plain field name is the common case).
    Expr(Expr),
}

/// The resolved shape of a chunk field.
#[derive(Debug, Clone)]
pub struct ChunkField<'s> {
    pub elem: ChunkElem<'s>,
    pub count: Option<ChunkCount>,
}

/// The name the positive chunk's fields use for its id.
pub const CHUNK_ID_NAME: &str = "id";

/// Rust types the chunk code generates whatever the spec says; no part may take their names.
const GENERATED_TYPES: &[&str] = &[
    "ChunkId",
    "ChunkBody",
    "ChunkRead",
    "Counted",
    "Words",
    "Record",
    "Frames",
    "Frame",
];

impl Spec {
    pub fn word(&self, name: &str) -> Option<&Word> {
        self.file.words.iter().find(|w| w.name == name)
    }

    /// The context value a word type's width comes from (`word_size` or `guest_width`).
    pub fn word_width(&self, w: &Word) -> Option<String> {
        match expr::parse(&w.width) {
            Ok(Expr::Ctx(n)) if WORD_WIDTHS.contains(&n.as_str()) => Some(n),
            _ => None,
        }
    }

    /// The struct a chunk's `body:` names.
    pub fn chunk_body(&self, c: &Chunk) -> Option<&Struct> {
        c.body.as_deref().and_then(|b| self.struct_(b))
    }

    /// The largest id of the positive chunk, when it declares one.
    pub fn chunk_max_id(&self, c: &Chunk) -> Option<u64> {
        match c.max_id.as_ref()? {
            IntOrName::Int(n) => Some(*n),
            IntOrName::Name(k) => self.constant(k)?.value,
        }
    }

    /// The resolved shape of a chunk field (the spec has been validated).
    pub fn chunk_field(&self, f: &Field) -> Option<ChunkField<'_>> {
        let elem = if let Some(s) = Scalar::parse(&f.ty) {
            ChunkElem::Int(s)
        } else if let Some(w) = self.word(&f.ty) {
            ChunkElem::Word(w)
        } else if f.ty == "bytes" {
            ChunkElem::Bytes(f.size?)
        } else {
            ChunkElem::Struct(self.struct_(&f.ty)?)
        };
        let count = match f.count.as_deref() {
            None => None,
            Some(c) => Some(match expr::parse(c).ok()? {
                Expr::Int(n) => ChunkCount::Fixed { n, constant: None },
                Expr::Const(k) => ChunkCount::Fixed {
                    n: self.constant(&k)?.value?,
                    constant: Some(k),
                },
                e => ChunkCount::Expr(e),
            }),
        };
        Some(ChunkField { elem, count })
    }

    /// Octets of one chunk element; `None` for a word (its width is known at run time).
    pub fn chunk_elem_size(&self, e: ChunkElem<'_>) -> Option<u64> {
        match e {
            ChunkElem::Int(s) => Some(s.size()),
            ChunkElem::Word(_) => None,
            ChunkElem::Bytes(n) => Some(n),
            ChunkElem::Struct(s) => self.fixed_size(&s.fields),
        }
    }
}

/// The integers of a chunk's field list that counts may name.
struct ChunkScope<'s> {
    ints: HashSet<&'s str>,
    consts: HashSet<&'s str>,
}

impl Scope for ChunkScope<'_> {
    fn has_int(&self, name: &str) -> bool {
        self.ints.contains(name)
    }
    fn has_array(&self, _name: &str) -> bool {
        false
    }
    fn has_const(&self, name: &str) -> bool {
        self.consts.contains(name)
    }
}

impl<'a> Checker<'a> {
    /// `words`: lower_snake names no other type uses, width from a known context value.
    fn words(&mut self) {
        let spec = self.spec;
        let f = &spec.file;
        let builtin = [
            "u8", "u16", "u32", "u64", "bytes", "blob", "pages", "cstrings",
        ];
        let mut seen = HashSet::new();
        for (i, w) in f.words.iter().enumerate() {
            let p = format!("words[{i}]");
            self.doc(&p, &w.doc);
            let taken = builtin.contains(&w.name.as_str())
                || spec.enum_(&w.name).is_some()
                || spec.flags_(&w.name).is_some()
                || spec.bitfield(&w.name).is_some()
                || spec.struct_(&w.name).is_some();
            if !is_lower(&w.name) || taken || !seen.insert(w.name.as_str()) {
                self.err(
                    &p,
                    Some("name"),
                    format!(
                        "word type `{}` must be lower_snake and name no other type",
                        w.name
                    ),
                );
            }
            if spec.word_width(w).is_none() {
                self.err(
                    &p,
                    Some("width"),
                    format!(
                        "`{}` is not a context value a width can come from (known: {})",
                        w.width,
                        WORD_WIDTHS
                            .iter()
                            .map(|n| format!("ctx.{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
    }

    /// `chunks`: unique names and ids, at most one positive chunk, bodies a reader can step
    /// over without a length.
    fn chunks(&mut self) {
        let spec = self.spec;
        let mut names = HashSet::new();
        let mut ids: HashMap<i64, &str> = HashMap::new();
        let mut positive: Option<&str> = None;
        let type_names: HashSet<String> = spec
            .file
            .structs
            .iter()
            .map(|s| s.name.as_str())
            .chain(spec.file.records.iter().map(|r| r.name.as_str()))
            .map(crate::rust::camel)
            .collect();
        for (i, c) in spec.file.chunks.iter().enumerate() {
            let p = format!("chunks[{i}]");
            self.doc(&p, &c.doc);
            if !is_upper(&c.name) || !names.insert(c.name.as_str()) {
                self.err(
                    &p,
                    Some("name"),
                    format!("chunk name `{}` must be unique and UPPER_SNAKE", c.name),
                );
            } else if !c.fields.is_empty() && type_names.contains(&crate::rust::camel(&c.name)) {
                self.err(
                    &p,
                    Some("name"),
                    format!(
                        "chunk `{}` would share its Rust type name with a struct or record",
                        c.name
                    ),
                );
            }
            let is_positive = match &c.id {
                ChunkIdSpec::Id(n) => {
                    if *n < i64::from(i32::MIN) || *n > i64::from(i32::MAX) {
                        self.err(&p, Some("id"), format!("id {n} does not fit in i32"));
                    } else if *n > 0 && positive.is_some() {
                        self.err(
                            &p,
                            Some("id"),
                            format!(
                                "id {n} is positive, and every positive id belongs to `{}`",
                                positive.unwrap_or_default()
                            ),
                        );
                    } else if let Some(other) = ids.insert(*n, &c.name) {
                        self.err(
                            &p,
                            Some("id"),
                            format!("id {n} is already used by `{other}`"),
                        );
                    }
                    false
                }
                ChunkIdSpec::Range(r) if r == "positive" => {
                    if let Some(other) = positive {
                        self.err(
                            &p,
                            Some("id"),
                            format!("`{other}` already takes every positive id"),
                        );
                    } else if let Some((n, other)) = ids.iter().find(|(n, _)| **n > 0) {
                        self.err(
                            &p,
                            Some("id"),
                            format!("positive id {n} is already used by `{other}`"),
                        );
                    }
                    positive = Some(&c.name);
                    true
                }
                ChunkIdSpec::Range(r) => {
                    self.err(
                        &p,
                        Some("id"),
                        format!("`{r}` is not an id: write an integer or `positive`"),
                    );
                    false
                }
            };
            if let Some(m) = &c.max_id {
                let value = spec.chunk_max_id(c);
                if !is_positive {
                    self.err(&p, Some("max_id"), "`max_id` applies to `id: positive`");
                } else if !value.is_some_and(|v| v >= 1 && v <= i32::MAX as u64) {
                    let shown = match m {
                        IntOrName::Int(n) => n.to_string(),
                        IntOrName::Name(k) => k.clone(),
                    };
                    self.err(
                        &p,
                        Some("max_id"),
                        format!("`{shown}` is not a number or integer constant in 1..=i32::MAX"),
                    );
                }
            }
            if c.opaque && (!c.fields.is_empty() || c.body.is_some()) {
                self.err(
                    &p,
                    Some("opaque"),
                    "an opaque chunk has no `fields` or `body`",
                );
            }
            if let Some(b) = &c.body {
                if !c.fields.is_empty() {
                    self.err(&p, Some("body"), "a chunk has `body` or `fields`, not both");
                } else {
                    match spec.struct_(b) {
                        None => self.err(&p, Some("body"), format!("`{b}` is not a struct")),
                        Some(s) if spec.fixed_size(&s.fields).is_none() => {
                            self.err(&p, Some("body"), format!("struct `{b}` has no fixed size"))
                        }
                        Some(_) => {}
                    }
                }
            }
            let id: &[&str] = if is_positive { &[CHUNK_ID_NAME] } else { &[] };
            self.chunk_fields(&p, &c.fields, id);
        }
    }

    /// `parts`: unique names whose Rust types are free, parameters the counts may name, and
    /// fields as a chunk's.
    fn parts(&mut self) {
        let spec = self.spec;
        let mut taken: HashSet<String> = spec
            .file
            .structs
            .iter()
            .map(|s| s.name.as_str())
            .chain(spec.file.records.iter().map(|r| r.name.as_str()))
            .chain(
                spec.file
                    .chunks
                    .iter()
                    .filter(|c| !c.fields.is_empty())
                    .map(|c| c.name.as_str()),
            )
            .map(crate::rust::camel)
            .collect();
        taken.extend(GENERATED_TYPES.iter().map(|t| t.to_string()));
        for (i, part) in spec.file.parts.iter().enumerate() {
            let p = format!("parts[{i}]");
            self.doc(&p, &part.doc);
            if !is_upper(&part.name) {
                self.err(
                    &p,
                    Some("name"),
                    format!("part name `{}` must be UPPER_SNAKE", part.name),
                );
            } else if !taken.insert(crate::rust::camel(&part.name)) {
                self.err(
                    &p,
                    Some("name"),
                    format!(
                        "part `{}` would share its Rust type name with another struct, record, chunk or part",
                        part.name
                    ),
                );
            }
            if part.fields.is_empty() {
                self.err(&p, Some("fields"), "a part has at least one field");
            }
            let mut params = Vec::new();
            for (j, param) in part.params.iter().enumerate() {
                let pp = format!("{p}.params[{j}]");
                self.doc(&pp, &param.doc);
                let clash = [CHUNK_ID_NAME, "ctx", "len", "body_length", "word_size"]
                    .contains(&param.name.as_str())
                    || params.contains(&param.name.as_str())
                    || part.fields.iter().any(|f| f.name == param.name);
                if !is_lower(&param.name) || clash {
                    self.err(
                        &pp,
                        Some("name"),
                        format!(
                            "parameter `{}` must be a unique lower_snake name that no field, \
                             id, ctx, len, body_length or word_size takes",
                            param.name
                        ),
                    );
                }
                params.push(param.name.as_str());
            }
            self.chunk_fields(&p, &part.fields, &params);
        }
    }

    /// The fields of a chunk or a part; `given` are the integers the counts may name besides
    /// the fields (the positive chunk's `id`, a part's parameters).
    fn chunk_fields(&mut self, p: &str, fields: &'a [Field], given: &[&'a str]) {
        let spec = self.spec;
        let mut names = HashSet::new();
        let mut ints: HashSet<&str> = given.iter().copied().collect();
        for (j, f) in fields.iter().enumerate() {
            let fp = format!("{p}.fields[{j}]");
            self.doc(&fp, &f.doc);
            if !is_lower(&f.name)
                || [CHUNK_ID_NAME, "ctx", "len", "body_length"].contains(&f.name.as_str())
                || !names.insert(f.name.as_str())
            {
                self.err(
                    &fp,
                    Some("name"),
                    format!(
                        "`{}` must be a unique lower_snake name other than id, ctx, len and body_length",
                        f.name
                    ),
                );
            }
            let unsupported = [
                ("enum", f.enum_name.is_some()),
                ("flags", f.flags.is_some()),
                ("one_of", f.one_of.is_some()),
                ("default", f.default.is_some()),
                ("known", f.known.is_some()),
                ("reserved", f.reserved),
                ("level", f.level.is_some()),
                ("layout", f.layout.is_some()),
                ("count_where", f.count_where.is_some()),
                ("pairs", f.pairs),
            ];
            if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
                self.err(
                    &fp,
                    Some(key),
                    format!("`{key}` is not supported on chunk fields"),
                );
                continue;
            }
            if ["blob", "pages", "cstrings"].contains(&f.ty.as_str()) {
                self.err(
                    &fp,
                    Some("type"),
                    format!(
                        "a chunk has no length, so a `{}` would not know where it ends",
                        f.ty
                    ),
                );
                continue;
            }
            if f.ty == "bytes" && f.size.is_none() {
                self.err(&fp, Some("size"), "a `bytes` field needs `size: N`");
                continue;
            }
            if f.size.is_some() && f.ty != "bytes" {
                self.err(&fp, Some("size"), "`size` applies to `bytes` only");
                continue;
            }
            let Some(cf) = spec.chunk_field(f).or_else(|| {
                // The count may be what failed to resolve; report the type first.
                let mut g = f.clone();
                g.count = None;
                spec.chunk_field(&g).map(|cf| ChunkField {
                    elem: cf.elem,
                    count: Some(ChunkCount::Fixed {
                        n: 0,
                        constant: None,
                    }),
                })
            }) else {
                self.err(&fp, Some("type"), format!("unknown type `{}`", f.ty));
                continue;
            };
            if let Some(d) = f.display {
                let fits = match (d, cf.elem, &f.count) {
                    (Display::Summary, ChunkElem::Int(s), Some(_)) => s != Scalar::U8,
                    (Display::Summary, ChunkElem::Word(_), Some(_)) => true,
                    (Display::Summary, _, _) => false,
                    (_, ChunkElem::Int(s), Some(_)) => s != Scalar::U8,
                    (_, ChunkElem::Int(_) | ChunkElem::Word(_), _) => true,
                    _ => false,
                };
                if !fits {
                    self.err(
                        &fp,
                        Some("display"),
                        format!(
                            "`display` applies to integers and words ({} to arrays of them)",
                            "`summary` only"
                        ),
                    );
                    continue;
                }
            }
            if let ChunkElem::Struct(s) = cf.elem {
                if spec.fixed_size(&s.fields).is_none() {
                    self.err(
                        &fp,
                        Some("type"),
                        format!("struct `{}` has no fixed size", s.name),
                    );
                    continue;
                }
            }
            match (&f.count, cf.elem) {
                (None, ChunkElem::Int(_) | ChunkElem::Word(_)) => {
                    ints.insert(&f.name);
                }
                (Some(_), ChunkElem::Struct(_) | ChunkElem::Bytes(_)) => {
                    self.err(
                        &fp,
                        Some("count"),
                        "chunk arrays hold integers or words, not structs or strings",
                    );
                    continue;
                }
                _ => {}
            }
            if let Some(c) = &f.count {
                if c == "rest" {
                    self.err(
                        &fp,
                        Some("count"),
                        "a chunk has no length, so `count: rest` would not know where it ends",
                    );
                    continue;
                }
                let scope = ChunkScope {
                    ints: ints.iter().copied().filter(|n| *n != f.name).collect(),
                    consts: int_constants(spec),
                };
                match expr::parse(c) {
                    Err(e) => self.err(&fp, Some("count"), format!("cannot parse `{c}`: {e}")),
                    Ok(e) => {
                        let mut named = Vec::new();
                        e.names(&mut named);
                        if named.iter().any(|n| matches!(n, Expr::Ctx(_))) {
                            self.err(
                                &fp,
                                Some("count"),
                                format!("`{c}`: a count names fields, not context values"),
                            );
                        } else {
                            match e.check(&scope) {
                                Err(m) => self.err(&fp, Some("count"), format!("in `{c}`: {m}")),
                                Ok(Kind::Bool) => self.err(
                                    &fp,
                                    Some("count"),
                                    format!("`{c}` is a condition, not a number"),
                                ),
                                Ok(Kind::Int) => {
                                    if matches!(
                                        spec.chunk_field(f).and_then(|cf| cf.count),
                                        Some(ChunkCount::Fixed { n: 0, .. })
                                    ) {
                                        self.err(
                                            &fp,
                                            Some("count"),
                                            "a fixed count must be at least 1",
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                if f.value.is_some() || f.min.is_some() || f.max.is_some() {
                    self.err(
                        &fp,
                        Some("count"),
                        "constraints apply to single values, not to arrays",
                    );
                }
                continue;
            }
            // Single values: `value`, `min` and `max` on integers and words.
            let max = match cf.elem {
                ChunkElem::Int(s) => Some(s.max()),
                ChunkElem::Word(_) => Some(u64::MAX),
                _ => None,
            };
            for (key, bound) in [("min", f.min), ("max", f.max)] {
                match (bound, max) {
                    (Some(_), None) => {
                        self.err(&fp, Some(key), format!("`{key}` applies to integer fields"))
                    }
                    (Some(b), Some(m)) if b > m => self.err(
                        &fp,
                        Some(key),
                        format!("bound {b:#x} does not fit in {}", f.ty),
                    ),
                    _ => {}
                }
            }
            if let Some(v) = &f.value {
                let n = match v {
                    IntOrName::Int(n) => Some(*n),
                    IntOrName::Name(k) => spec.constant(k).and_then(|c| c.value),
                };
                match (n, max) {
                    (_, None) => self.err(&fp, Some("value"), "`value` applies to integer fields"),
                    (None, _) => self.err(
                        &fp,
                        Some("value"),
                        "`value` must be a number or an integer constant",
                    ),
                    (Some(n), Some(m)) if n > m => self.err(
                        &fp,
                        Some("value"),
                        format!("{n:#x} does not fit in {}", f.ty),
                    ),
                    _ => {}
                }
            }
        }
    }
}
