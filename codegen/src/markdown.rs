//! Markdown documentation of a spec.
//!
//! [`emit`] renders one spec as a self-contained document: the format's introduction, a
//! summary of its record types, its constants, an octet diagram and a field table for every
//! header, record and structure, its enums, flags and bitfields, and the per-guest layout
//! rules. Every fact comes from the spec, so the document changes exactly when the spec
//! does; the output is deterministic (spec order, no hash iteration) and carries no
//! trailing whitespace.
//!
//! Octet diagrams follow the style of Xen's `docs/specs/*.pandoc`: eight octets per row,
//! six columns per octet, one box per field. A field longer than a row spans several rows;
//! variable parts (arrays, blobs, pages, strings) are drawn as full-width boxes.

use crate::model::*;
use crate::{parse_bits, Count, Elem, FieldKind, Scalar, Spec};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The whole document for one spec.
pub fn emit(spec: &Spec) -> String {
    let mut d = Doc {
        spec,
        out: String::new(),
    };
    d.document();
    finish(&d.out)
}

/// Strips trailing whitespace from every line and ends the text with exactly one newline.
fn finish(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    if out.is_empty() {
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Small text helpers
// ---------------------------------------------------------------------------------------

/// Text for a Markdown table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A code span holding `s` exactly.
fn code(s: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    if longest == 0 {
        format!("`{s}`")
    } else {
        let fence = "`".repeat(longest + 1);
        format!("{fence} {s} {fence}")
    }
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `` `0x1F` (31) ``: hex, with the decimal value when that helps. Long values are padded
/// to the width of their type so that masks read clearly.
fn hex_dec_code(v: u64, ty: Option<Scalar>) -> String {
    let hex = match ty {
        Some(s) if v > 0xFFFF => hex_width(v, s),
        _ => format!("{v:#X}"),
    };
    if (10..=0x0FFF_FFFF).contains(&v) {
        format!("`{hex}` ({v})")
    } else {
        format!("`{hex}`")
    }
}

/// A number in constraints: decimal when small, hex otherwise.
fn num(v: u64) -> String {
    if v < 0x1_0000 {
        v.to_string()
    } else {
        format!("{v:#X}")
    }
}

/// Hex padded to the width of an integer type.
fn hex_width(v: u64, s: Scalar) -> String {
    let w = 2 + 2 * s.size() as usize;
    format!("{v:#0w$X}")
}

/// A record type number as Xen writes it.
fn type_hex(t: u64) -> String {
    format!("{t:#010X}")
}

/// `text` with C-style escapes for everything that is not printable ASCII.
fn escape_bytes(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0 => out.push_str("\\0"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7E => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
    out
}

/// The big-endian octets of an integer constant as ASCII text, if they all are letters,
/// digits or punctuation.
fn ascii_of(v: u64, s: Scalar) -> Option<String> {
    if s.size() < 4 {
        return None;
    }
    let bytes = v.to_be_bytes();
    let bytes = &bytes[8 - s.size() as usize..];
    bytes
        .iter()
        .all(|b| b.is_ascii_graphic())
        .then(|| bytes.iter().map(|&b| b as char).collect())
}

fn level_name(l: LevelName) -> &'static str {
    match l {
        LevelName::Warn => "warn",
        LevelName::Required => "required",
        LevelName::Strict => "strict",
    }
}

fn octets(n: u64) -> String {
    if n == 1 {
        "1 octet".to_string()
    } else {
        format!("{n} octets")
    }
}

/// Joins names as `A`, `B` or `C`.
fn list_or(items: &[String]) -> String {
    join_words(items, "or")
}

fn list_and(items: &[String]) -> String {
    join_words(items, "and")
}

fn join_words(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {word} {last}", init.join(", ")),
    }
}

/// Splits text into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

// ---------------------------------------------------------------------------------------
// Octet diagrams
// ---------------------------------------------------------------------------------------

/// Octets per diagram row.
const ROW_OCTETS: usize = 8;
/// Characters per octet column (the border and five characters of interior).
const OCTET_COLS: usize = 6;
/// Indentation of a diagram inside its code block.
const MARGIN: &str = "    ";
/// Characters of text per line in a full-width box (after `| `, keeping a space before
/// the right border).
const FULL_TEXT: usize = ROW_OCTETS * OCTET_COLS - 3;

/// One row of eight octets: which box owns each octet, and the text of each box that has
/// some in this row (keyed by the octet the box starts at in this row).
#[derive(Clone, Default)]
struct Row {
    owner: [Option<usize>; ROW_OCTETS],
    text: Vec<(usize, String)>,
}

impl Row {
    /// Whether a vertical line stands at octet boundary `o` (0..=8).
    fn boundary(&self, o: usize) -> bool {
        let left = if o > 0 { self.owner[o - 1] } else { None };
        let right = if o < ROW_OCTETS { self.owner[o] } else { None };
        left != right
    }

    /// Octets in the run of equal owners starting at `o`.
    fn run(&self, o: usize) -> usize {
        let id = self.owner[o];
        (o..ROW_OCTETS).take_while(|&p| self.owner[p] == id).count()
    }
}

/// An octet diagram under construction.
#[derive(Default)]
struct Grid {
    rows: Vec<Row>,
    legend: Vec<String>,
    next_id: usize,
}

impl Grid {
    fn new_id(&mut self) -> usize {
        self.next_id += 1;
        self.next_id
    }

    /// The label itself when it fits a box `width` octets wide, else a numbered marker
    /// explained in the legend under the diagram.
    fn fit(&mut self, label: &str, width: usize) -> String {
        let room = width * OCTET_COLS - 2;
        if label.len() <= room {
            label.to_string()
        } else {
            let marker = format!("[{}]", self.legend.len() + 1);
            self.legend.push(format!("{marker} {label}"));
            marker
        }
    }

    /// The horizontal border between two rows (either may be absent); `None` between two
    /// rows of the same boxes, which are drawn as one taller box.
    fn border(upper: Option<&Row>, lower: Option<&Row>) -> Option<String> {
        let own = |r: Option<&Row>, o: usize| r.and_then(|r| r.owner[o]);
        let dash: Vec<bool> = (0..ROW_OCTETS)
            .map(|o| own(upper, o) != own(lower, o))
            .collect();
        if !dash.contains(&true) {
            return None;
        }
        let mut s = String::from(MARGIN);
        for x in 0..=ROW_OCTETS {
            let up = upper.is_some_and(|r| r.boundary(x));
            let down = lower.is_some_and(|r| r.boundary(x));
            let left = x > 0 && dash[x - 1];
            let right = x < ROW_OCTETS && dash[x];
            s.push(if left || right {
                if up || down || left != right {
                    '+'
                } else {
                    '-'
                }
            } else if up || down {
                '|'
            } else {
                ' '
            });
            if x < ROW_OCTETS {
                let fill = if dash[x] { "-" } else { " " };
                s.push_str(&fill.repeat(OCTET_COLS - 1));
            }
        }
        Some(s.trim_end().to_string())
    }

    /// One row of content.
    fn content(row: &Row) -> String {
        let width = ROW_OCTETS * OCTET_COLS + 1;
        let mut chars = vec![' '; width];
        for x in 0..=ROW_OCTETS {
            if row.boundary(x) {
                chars[x * OCTET_COLS] = '|';
            }
        }
        for (o, text) in &row.text {
            let room = row.run(*o) * OCTET_COLS - 2;
            for (i, c) in text.chars().take(room).enumerate() {
                chars[o * OCTET_COLS + 2 + i] = c;
            }
        }
        let line: String = chars.into_iter().collect();
        format!("{MARGIN}{}", line.trim_end())
    }

    /// The diagram as the lines of a code block.
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(MARGIN);
        for o in 0..ROW_OCTETS {
            let _ = write!(
                out,
                "{o:>width$}",
                width = if o == 0 { 2 } else { OCTET_COLS }
            );
        }
        out.push_str(" octet\n");
        for (i, row) in self.rows.iter().enumerate() {
            let upper = i.checked_sub(1).map(|j| &self.rows[j]);
            if let Some(b) = Self::border(upper, Some(row)) {
                out.push_str(&b);
                out.push('\n');
            }
            out.push_str(&Self::content(row));
            out.push('\n');
        }
        if let Some(b) = Self::border(self.rows.last(), None) {
            out.push_str(&b);
            out.push('\n');
        }
        if !self.legend.is_empty() {
            out.push('\n');
            for l in &self.legend {
                let _ = writeln!(out, "{MARGIN}{l}");
            }
        }
        out
    }
}

/// Whether `n` octets fill whole rows, so that what follows starts a row.
fn whole_rows(n: u64) -> bool {
    n.checked_rem(ROW_OCTETS as u64) == Some(0)
}

/// Places fields into a [`Grid`] one after the other.
/// Fixed fields longer than this are drawn as one box with their length.
const LONG_FIELD_OCTETS: u64 = 4 * ROW_OCTETS as u64;

struct Placer {
    grid: Grid,
    /// Octets used in the last row (8: start a new row), or `None` once a variable part
    /// has made the position within a row unknown.
    col: Option<usize>,
}

impl Placer {
    fn new() -> Placer {
        Placer {
            grid: Grid::default(),
            col: Some(ROW_OCTETS),
        }
    }

    /// A fixed-size field.
    fn fixed(&mut self, label: &str, size: u64) {
        if size > LONG_FIELD_OCTETS {
            // A register file or a table: one box that says how long it is, not a row per 8.
            self.block(&[format!("{label} ({})", octets(size))], size);
            return;
        }
        let id = self.grid.new_id();
        let Some(mut c) = self.col else {
            // Unknown alignment: a full-width box that says how long the field is.
            self.full_rows(id, &[format!("{label} ({})", octets(size))]);
            return;
        };
        let mut remaining = size;
        let mut prev_start: Option<usize> = None;
        while remaining > 0 {
            if c == ROW_OCTETS {
                self.grid.rows.push(Row::default());
                c = 0;
            }
            let take = (ROW_OCTETS - c).min(usize::try_from(remaining).unwrap_or(ROW_OCTETS));
            let text = match prev_start {
                None => Some(label.to_string()),
                // The previous part shares a column with this one: one open box.
                Some(ps) if ps < take => None,
                Some(_) => Some(format!("{label} (cont.)")),
            };
            let text = text.map(|t| self.grid.fit(&t, take));
            let row = self.grid.rows.last_mut().expect("a row was pushed");
            for o in c..c + take {
                row.owner[o] = Some(id);
            }
            if let Some(t) = text {
                row.text.push((c, t));
            }
            prev_start = Some(c);
            c += take;
            remaining -= take as u64;
        }
        self.col = Some(c);
    }

    /// A part of known size drawn as full-width rows of text (`lines`); the position after it
    /// is known when it starts a row and is a multiple of one.
    fn block(&mut self, lines: &[String], size: u64) {
        let aligned = matches!(self.col, Some(0) | Some(ROW_OCTETS));
        if !aligned {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            self.variable(&lines, false);
            return;
        }
        let id = self.grid.new_id();
        let lines: Vec<String> = lines.iter().flat_map(|l| wrap(l, FULL_TEXT)).collect();
        self.full_rows(id, &lines);
        self.col = size.is_multiple_of(ROW_OCTETS as u64).then_some(ROW_OCTETS);
    }

    /// A variable part described by `lines` (the first one names it); `keeps_alignment`
    /// when its length is a multiple of a row.
    fn variable(&mut self, lines: &[String], keeps_alignment: bool) {
        let id = self.grid.new_id();
        let start = self.col;
        let mut lines: Vec<String> = lines.iter().flat_map(|l| wrap(l, FULL_TEXT)).collect();
        lines.push("...".to_string());
        let mut rest: &[String] = &lines;
        if let Some(c) = start.filter(|&c| c > 0 && c < ROW_OCTETS) {
            let row = self.grid.rows.last_mut().expect("a partial row exists");
            for o in c..ROW_OCTETS {
                row.owner[o] = Some(id);
            }
            if lines[0].len() <= (ROW_OCTETS - c) * OCTET_COLS - 2 {
                row.text.push((c, lines[0].clone()));
                rest = &lines[1..];
            }
        }
        self.full_rows(id, rest);
        self.col = match start {
            Some(0) | Some(ROW_OCTETS) if keeps_alignment => Some(ROW_OCTETS),
            _ => None,
        };
    }

    /// Full-width rows owned by `id`, one per line of text.
    fn full_rows(&mut self, id: usize, lines: &[String]) {
        for l in lines {
            let mut row = Row {
                owner: [Some(id); ROW_OCTETS],
                text: Vec::new(),
            };
            row.text.push((0, l.clone()));
            self.grid.rows.push(row);
        }
        if self.col.is_some() {
            self.col = Some(ROW_OCTETS);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bit diagrams
// ---------------------------------------------------------------------------------------

/// One box of a bit diagram: bits `hi..=lo` (high first) and a label.
struct BitBox {
    hi: u32,
    lo: u32,
    label: String,
}

/// A bit diagram, most significant bit on the left; box widths grow with the bits they
/// hold but always fit their label and bit numbers.
fn bit_diagram(boxes: &[BitBox], base_bits: u32) -> String {
    let widths: Vec<usize> = boxes
        .iter()
        .map(|b| {
            let bits = (b.hi - b.lo + 1) as usize;
            let prop = bits * 48 / base_bits as usize;
            let numbers = if b.hi == b.lo {
                b.hi.to_string().len()
            } else {
                b.hi.to_string().len() + 1 + b.lo.to_string().len()
            };
            prop.max(b.label.len() + 2).max(numbers + 2)
        })
        .collect();
    let mut numbers = String::from(MARGIN);
    let mut border = String::from(MARGIN);
    let mut content = String::from(MARGIN);
    border.push('+');
    content.push('|');
    numbers.push(' ');
    for (b, w) in boxes.iter().zip(&widths) {
        let hi = b.hi.to_string();
        let lo = b.lo.to_string();
        if b.hi == b.lo {
            let _ = write!(numbers, "{hi:<w$}", w = *w);
        } else {
            let gap = w - hi.len() - lo.len();
            let _ = write!(numbers, "{hi}{}{lo}", " ".repeat(gap));
        }
        numbers.push(' ');
        border.push_str(&"-".repeat(*w));
        border.push('+');
        let _ = write!(content, " {:<w$}|", b.label, w = w - 1);
    }
    numbers.push_str("bit");
    format!("{numbers}\n{border}\n{content}\n{border}\n")
}

// ---------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------

struct Doc<'s> {
    spec: &'s Spec,
    out: String,
}

/// Where a list of fields lives, for wording.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder {
    Record,
    Struct,
}

impl Holder {
    fn whole(self) -> &'static str {
        match self {
            Holder::Record => "body",
            Holder::Struct => "structure",
        }
    }
}

impl<'s> Doc<'s> {
    /// A paragraph or block followed by a blank line.
    fn block(&mut self, s: &str) {
        let s = s.trim_end_matches('\n');
        if s.trim().is_empty() {
            return;
        }
        self.out.push_str(s);
        self.out.push_str("\n\n");
    }

    fn heading(&mut self, level: usize, text: &str) {
        self.block(&format!("{} {text}", "#".repeat(level)));
    }

    fn table(&mut self, head: &[&str], rows: &[Vec<String>]) {
        let mut t = String::new();
        let _ = writeln!(t, "| {} |", head.join(" | "));
        let _ = writeln!(
            t,
            "|{}|",
            head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        );
        for r in rows {
            let _ = writeln!(t, "| {} |", r.join(" | "));
        }
        self.block(&t);
    }

    fn bullets(&mut self, items: &[String]) {
        let mut t = String::new();
        for i in items {
            let _ = writeln!(t, "- {i}");
        }
        self.block(&t);
    }

    // -- names and links ------------------------------------------------------------------

    fn record_heading(r: &Record) -> String {
        format!("{} ({})", r.name, type_hex(r.record_type))
    }

    fn record_link(&self, name: &str) -> String {
        match self.spec.record(name) {
            Some(r) => format!("[`{name}`](#{})", slug(&Self::record_heading(r))),
            None => code(name),
        }
    }

    fn struct_heading(name: &str) -> String {
        format!("struct `{name}`")
    }

    fn enum_heading(name: &str) -> String {
        format!("enum `{name}`")
    }

    fn flags_heading(name: &str) -> String {
        format!("flags `{name}`")
    }

    fn bitfield_heading(name: &str) -> String {
        format!("bitfield `{name}`")
    }

    fn link(name: &str, heading: &str) -> String {
        format!("[`{name}`](#{})", slug(heading))
    }

    fn enum_link(name: &str) -> String {
        Self::link(name, &Self::enum_heading(name))
    }

    fn flags_link(name: &str) -> String {
        Self::link(name, &Self::flags_heading(name))
    }

    /// A link to an element type (struct or bitfield), or the integer type's name.
    fn elem_name(&self, e: Elem<'_>) -> String {
        match e {
            Elem::Int(s) => s.name().to_string(),
            Elem::Bytes(n) => format!("{}-octet string", n),
            Elem::Bitfield(b) => Self::link(&b.name, &Self::bitfield_heading(&b.name)),
            Elem::Struct(s) => Self::link(&s.name, &Self::struct_heading(&s.name)),
        }
    }

    /// The element type's name as plain text, for diagrams.
    fn elem_plain(e: Elem<'_>) -> String {
        match e {
            Elem::Int(s) => s.name().to_string(),
            Elem::Bytes(n) => format!("{n}-octet string"),
            Elem::Bitfield(b) => b.name.clone(),
            Elem::Struct(s) => s.name.clone(),
        }
    }

    /// Structs that are no field's type: the headers of the format.
    fn is_header(&self, s: &Struct) -> bool {
        self.uses_of_type(&s.name).is_empty() && !self.is_chunk_body(s)
    }

    /// `HOLDER.field` for every field whose type is `ty`.
    fn uses_of_type(&self, ty: &str) -> Vec<String> {
        let f = &self.spec.file;
        let mut out = Vec::new();
        for s in &f.structs {
            for fd in s.fields.iter().filter(|fd| fd.ty == ty) {
                out.push(format!("`{}.{}`", s.name, fd.name));
            }
        }
        for r in &f.records {
            for fd in r.fields.iter().filter(|fd| fd.ty == ty) {
                out.push(format!("`{}.{}`", r.name, fd.name));
            }
        }
        out
    }

    /// Every field list of the spec with its holder's name.
    fn all_fields(&self) -> Vec<(&'s str, &'s Field)> {
        let f = &self.spec.file;
        let mut out = Vec::new();
        for s in &f.structs {
            out.extend(s.fields.iter().map(|fd| (s.name.as_str(), fd)));
        }
        for r in &f.records {
            out.extend(r.fields.iter().map(|fd| (r.name.as_str(), fd)));
        }
        out
    }

    // -- the document ---------------------------------------------------------------------

    fn document(&mut self) {
        let spec = self.spec;
        let f = &spec.file;
        self.heading(1, &f.title);
        let source = spec
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.block(&format!(
            "*Generated from `spec/{source}` by `cargo xtask docs`: edit the spec, not this file.*"
        ));
        self.block(f.doc.trim());
        self.facts();
        let headers: Vec<&Struct> = f.structs.iter().filter(|s| self.is_header(s)).collect();
        let elements: Vec<&Struct> = f.structs.iter().filter(|s| !self.is_header(s)).collect();
        if !f.records.is_empty() {
            self.record_summary();
        }
        if !f.constants.is_empty() {
            self.constants();
        }
        if !f.words.is_empty() {
            self.words();
        }
        if !f.chunks.is_empty() {
            self.chunks();
        }
        if !f.parts.is_empty() {
            self.parts();
        }
        if !headers.is_empty() {
            self.heading(2, "Headers");
            for s in headers {
                self.struct_(s);
            }
        }
        if !f.records.is_empty() {
            self.framing();
            self.heading(2, "Records");
            for r in &f.records {
                self.record(r);
            }
        }
        if !elements.is_empty() {
            self.heading(2, "Structures");
            if f.chunks.iter().any(|c| c.body.is_some()) {
                self.block(
                    "Fixed-size structures used as record fields, array elements and chunk bodies.",
                );
            } else {
                self.block("Fixed-size structures used as record fields and array elements.");
            }
            for s in elements {
                self.struct_(s);
            }
        }
        if !f.enums.is_empty() {
            self.heading(2, "Enumerations");
            for e in &f.enums {
                self.enum_(e);
            }
        }
        if !f.flags.is_empty() {
            self.heading(2, "Flags");
            for fl in &f.flags {
                self.flags(fl);
            }
        }
        if !f.bitfields.is_empty() {
            self.heading(2, "Bitfields");
            for b in &f.bitfields {
                self.bitfield(b);
            }
        }
        if !f.layouts.is_empty() {
            self.layouts();
        }
    }

    fn byte_order_text(&self, o: ByteOrder) -> &'static str {
        match o {
            ByteOrder::Big => "big-endian",
            ByteOrder::Little => "little-endian",
            ByteOrder::Host => {
                "the byte order of the host that wrote the data (readers detect it from the data)"
            }
            ByteOrder::Stream => "the byte order the stream's header declares",
        }
    }

    fn facts(&mut self) {
        let f = &self.spec.file;
        let mut items = vec![
            format!("**Format:** `{}`", f.format),
            format!("**Revision:** {}", f.revision),
        ];
        match &f.versions {
            Some(v) => {
                let acc: Vec<String> = v.accepted.iter().map(u32::to_string).collect();
                items.push(format!("**Versions accepted:** {}", list_and(&acc)));
                items.push(format!("**Version written:** {}", v.written));
            }
            None => items.push("**Versions:** the format carries no version number".into()),
        }
        let order = match f.byte_order {
            ByteOrder::Stream => {
                let fixed: Vec<String> = f
                    .structs
                    .iter()
                    .filter(|s| s.byte_order.is_some_and(|o| o != ByteOrder::Stream))
                    .map(|s| {
                        format!(
                            "[`{}`](#{}) ({})",
                            s.name,
                            slug(&Self::struct_heading(&s.name)),
                            self.byte_order_text(self.spec.struct_order(s))
                        )
                    })
                    .collect();
                let mut t = "`stream`: integers are in the byte order the stream's header \
                             declares"
                    .to_string();
                if !fixed.is_empty() {
                    let _ = write!(t, "; fixed for {}", list_and(&fixed));
                }
                t
            }
            ByteOrder::Big => "`big`: all integers are big-endian".to_string(),
            ByteOrder::Little => "`little`: all integers are little-endian".to_string(),
            ByteOrder::Host => "`host`: integers are in the byte order of the host that wrote \
                                the data"
                .to_string(),
        };
        items.push(format!("**Default byte order:** {order}"));
        self.bullets(&items);
    }

    fn mandatory(r: &Record) -> bool {
        r.record_type & 0x8000_0000 == 0
    }

    fn status_name(s: Status) -> &'static str {
        match s {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Forbidden => "forbidden",
        }
    }

    fn record_summary(&mut self) {
        self.heading(2, "Record types");
        let mut rows = Vec::new();
        for r in &self.spec.file.records {
            let status = match r.status.unwrap_or(Status::Active) {
                Status::Active => "active".to_string(),
                s => format!("**{}**", Self::status_name(s)),
            };
            rows.push(vec![
                format!("`{}`", type_hex(r.record_type)),
                self.record_link(&r.name),
                if Self::mandatory(r) { "yes" } else { "no" }.to_string(),
                cell(&self.body_summary(&r.fields)),
                r.since_version
                    .map_or_else(|| "—".to_string(), |v| v.to_string()),
                status,
            ]);
        }
        self.table(
            &[
                "type",
                "name",
                "mandatory",
                "body",
                "since version",
                "status",
            ],
            &rows,
        );
    }

    /// `≥ 8 octets: count, entries[count], pages`.
    fn body_summary(&self, fields: &[Field]) -> String {
        if fields.is_empty() {
            return "empty".to_string();
        }
        let size = match self.spec.fixed_size(fields) {
            Some(n) => octets(n),
            None => match self.spec.min_size(fields) {
                0 => "any length".to_string(),
                min => format!("≥ {}", octets(min)),
            },
        };
        let names: Vec<String> = fields
            .iter()
            .filter(|f| !f.reserved)
            .map(|f| match self.spec.kind(f) {
                Some(FieldKind::Array {
                    count: Count::Field(c),
                    ..
                }) => format!("`{}[{c}]`", f.name),
                Some(FieldKind::Array {
                    count: Count::Fixed { n, constant },
                    ..
                }) => format!(
                    "`{}[{}]`",
                    f.name,
                    constant.clone().unwrap_or(n.to_string())
                ),
                Some(FieldKind::Array {
                    count: Count::Rest, ..
                }) => format!("`{}[]`", f.name),
                _ => format!("`{}`", f.name),
            })
            .collect();
        if names.is_empty() {
            size
        } else {
            format!("{size}: {}", names.join(", "))
        }
    }

    fn constants(&mut self) {
        self.heading(2, "Constants");
        let mut rows = Vec::new();
        for c in &self.spec.file.constants {
            let (ty, value) = match (Scalar::parse(&c.ty), c.value, &c.text) {
                (Some(s), Some(v), _) => {
                    let value = match ascii_of(v, s) {
                        Some(a) => format!("`{v:#X}` (ASCII {})", code(&format!("\"{a}\""))),
                        None => hex_dec_code(v, Some(s)),
                    };
                    (s.name().to_string(), value)
                }
                (_, _, Some(t)) => (
                    format!("{} octets", t.len()),
                    code(&format!("\"{}\"", escape_bytes(t))),
                ),
                _ => (c.ty.clone(), "—".to_string()),
            };
            rows.push(vec![
                format!("`{}`", c.name),
                ty,
                cell(&value),
                cell(&c.doc),
            ]);
        }
        self.table(&["name", "type", "value", "meaning"], &rows);
    }

    fn framing(&mut self) {
        self.heading(2, "Record framing");
        if let Some(fr) = &self.spec.file.framing {
            let spec = self.spec;
            self.block(fr.doc.trim());
            self.block(&format!(
                "Every record is a `{h}` header (below), then as many octets of body as its \
                 `{l}` says, with no padding; the next record's header follows at once. \
                 `{t}` holds the record type. A reader of these records stops after the record \
                 whose type ends the sequence{end}; a type it does not know is shown as octets, \
                 never refused.",
                h = fr.header,
                l = fr.length,
                t = fr.type_field,
                end = spec
                    .file
                    .records
                    .iter()
                    .find(|r| r.role == Some(Role::End))
                    .map(|r| format!(" ({})", r.name))
                    .unwrap_or_default(),
            ));
            let mut p = Placer::new();
            if let Some(h) = spec.struct_(&fr.header) {
                for f in &h.fields {
                    if let Some(n) = spec.field_size(f) {
                        p.fixed(&f.name, n);
                    }
                }
            }
            p.variable(&[format!("body ({} octets)", fr.length)], false);
            self.diagram(&p.grid);
            return;
        }
        let order = match self.spec.file.byte_order {
            ByteOrder::Stream => "in the byte order the stream's header declares".to_string(),
            o => self.byte_order_text(o).to_string(),
        };
        self.block(&format!(
            "Every record is a u32 type and a u32 body length, {order}, then the body, then \
             zero octets up to the next multiple of 8. The length counts the body only, never \
             the padding. Types with bit 31 set (`0x80000000`) are marked optional in the \
             summary above; the introduction says how readers treat them."
        ));
        let mut p = Placer::new();
        p.fixed("type", 4);
        p.fixed("body_length", 4);
        p.variable(&["body (body_length octets)".to_string()], false);
        // Close the body with a partial row and the padding, as Xen's specs draw it.
        let body = p.grid.rows.last().and_then(|r| r.owner[0]);
        let pad = p.grid.new_id();
        let mut row = Row::default();
        for o in 0..ROW_OCTETS {
            row.owner[o] = if o < 3 { body } else { Some(pad) };
        }
        row.text.push((3, "padding (0 to 7 octets)".to_string()));
        p.grid.rows.push(row);
        self.diagram(&p.grid);
    }

    fn diagram(&mut self, g: &Grid) {
        self.block(&format!("```text\n{}```", g.render()));
    }

    /// The octet diagram of a field list.
    fn field_diagram(&self, fields: &[Field], trailing_allowed: bool, holder: Holder) -> Grid {
        let spec = self.spec;
        let mut p = Placer::new();
        for f in fields {
            let label = if f.reserved {
                "(reserved)".to_string()
            } else {
                f.name.clone()
            };
            let Some(kind) = spec.kind(f) else { continue };
            match kind {
                FieldKind::One(e) => p.fixed(&label, spec.elem_size(e)),
                FieldKind::Array { elem, count } => {
                    let esize = spec.elem_size(elem);
                    let bytes = matches!(elem, Elem::Int(Scalar::U8));
                    let lines = match (&count, bytes) {
                        (Count::Field(c), true) => {
                            vec![format!("{}[{c}]", f.name), format!("{c} octets")]
                        }
                        (Count::Field(c), false) => vec![
                            format!("{}[{c}]", f.name),
                            format!("{}, {} each", Self::elem_plain(elem), octets(esize)),
                        ],
                        (Count::Fixed { n, constant }, true) => vec![
                            format!(
                                "{}[{}]",
                                f.name,
                                constant.as_deref().unwrap_or(&n.to_string())
                            ),
                            octets(*n),
                        ],
                        (Count::Fixed { n, constant }, false) => vec![
                            format!(
                                "{}[{}]",
                                f.name,
                                constant.as_deref().unwrap_or(&n.to_string())
                            ),
                            format!("{n} × {}, {} each", Self::elem_plain(elem), octets(esize)),
                        ],
                        (Count::Rest, true) => vec![
                            format!("{}[]", f.name),
                            format!("octets to the end of the {}", holder.whole()),
                        ],
                        (Count::Rest, false) => vec![
                            format!("{}[]", f.name),
                            format!(
                                "{}, {} each, to the end of the {}",
                                Self::elem_plain(elem),
                                octets(esize),
                                holder.whole()
                            ),
                        ],
                    };
                    match count {
                        Count::Fixed { n, .. } => p.block(&lines, n.saturating_mul(esize)),
                        _ => p.variable(&lines, whole_rows(esize)),
                    }
                }
                FieldKind::Blob => p.variable(
                    &[
                        f.name.clone(),
                        format!("octets to the end of the {}", holder.whole()),
                    ],
                    false,
                ),
                FieldKind::Pages {
                    field,
                    attr,
                    page_size,
                } => {
                    let (member, _) = self.attr_member(fields, &field);
                    p.variable(
                        &[
                            format!("{} ({page_size} octets each)", f.name),
                            format!("one for each {field}[] element whose {member} has {attr}"),
                        ],
                        whole_rows(page_size),
                    );
                }
                FieldKind::CStrings { pairs } => {
                    let what = if pairs {
                        "NUL-terminated strings, key and value alternating"
                    } else {
                        "NUL-terminated strings"
                    };
                    p.variable(
                        &[
                            f.name.clone(),
                            format!("{what}, to the end of the {}", holder.whole()),
                        ],
                        false,
                    );
                }
            }
        }
        if trailing_allowed {
            let id = p.grid.new_id();
            p.col = None;
            p.full_rows(id, &["(further octets, ignored)".to_string()]);
        }
        p.grid
    }

    /// For `count_where`: the enum member of the bitfield array `field`, and its enum.
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

    /// The field table of a field list.
    fn field_table(&mut self, fields: &[Field], holder: Holder) {
        let spec = self.spec;
        let mut fixed = 0u64;
        let mut terms: Vec<String> = Vec::new();
        let mut open = false;
        let mut rows = Vec::new();
        for f in fields {
            let offset = if open {
                "—".to_string()
            } else if terms.is_empty() {
                fixed.to_string()
            } else {
                format!("{fixed} + {}", terms.join(" + "))
            };
            let Some(kind) = spec.kind(f) else { continue };
            let ty = self.type_text(f, &kind, holder);
            let constraints = self.constraints(f, &kind, fields);
            match &kind {
                FieldKind::One(e) => fixed += spec.elem_size(*e),
                FieldKind::Array {
                    elem,
                    count: Count::Field(c),
                } => {
                    let esize = spec.elem_size(*elem);
                    terms.push(if esize == 1 {
                        format!("`{c}`")
                    } else {
                        format!("{esize} × `{c}`")
                    });
                }
                FieldKind::Array {
                    elem,
                    count: Count::Fixed { n, .. },
                } => fixed += n.saturating_mul(spec.elem_size(*elem)),
                FieldKind::Pages { page_size, .. } => terms.push(format!("{page_size} × pages")),
                _ => open = true,
            }
            let name = if f.reserved {
                format!("`{}` (reserved)", f.name)
            } else {
                format!("`{}`", f.name)
            };
            rows.push(vec![
                offset,
                name,
                ty,
                cell(&f.doc),
                if constraints.is_empty() {
                    "—".to_string()
                } else {
                    cell(&constraints.join("; "))
                },
            ]);
        }
        self.table(
            &["offset", "field", "width/type", "meaning", "constraints"],
            &rows,
        );
    }

    fn type_text(&self, f: &Field, kind: &FieldKind<'_>, holder: Holder) -> String {
        let spec = self.spec;
        match kind {
            FieldKind::One(Elem::Int(s)) => {
                if let Some(e) = &f.enum_name {
                    format!("{}, enum {}", s.name(), Self::enum_link(e))
                } else if let Some(fl) = &f.flags {
                    format!("{}, flags {}", s.name(), Self::flags_link(fl))
                } else {
                    s.name().to_string()
                }
            }
            FieldKind::One(Elem::Bytes(n)) => octets(*n),
            FieldKind::One(e) => {
                format!("{} ({})", self.elem_name(*e), octets(spec.elem_size(*e)))
            }
            FieldKind::Array { elem, count } => {
                let esize = spec.elem_size(*elem);
                let bytes = matches!(elem, Elem::Int(Scalar::U8));
                match (count, bytes) {
                    (Count::Field(c), true) => format!("`{c}` octets"),
                    (Count::Field(c), false) => {
                        format!("`{c}` × {} ({} each)", self.elem_name(*elem), octets(esize))
                    }
                    (Count::Fixed { n, .. }, true) => octets(*n),
                    (Count::Fixed { n, .. }, false) => {
                        format!("{n} × {} ({} each)", self.elem_name(*elem), octets(esize))
                    }
                    (Count::Rest, true) => format!("octets to the end of the {}", holder.whole()),
                    (Count::Rest, false) => format!(
                        "{} × n to the end of the {} ({} each)",
                        self.elem_name(*elem),
                        holder.whole(),
                        octets(esize)
                    ),
                }
            }
            FieldKind::Blob => {
                let rest = format!("octets to the end of the {}", holder.whole());
                match &f.layout {
                    Some(BlobLayout {
                        records: Some(fmt), ..
                    }) => format!("{rest}: the records of format `{fmt}`"),
                    Some(l) if !l.structs.is_empty() => format!(
                        "{rest}: {}, whichever has the blob's length",
                        l.structs
                            .iter()
                            .map(|q| format!("`{q}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                    _ => rest,
                }
            }
            FieldKind::Pages { page_size, .. } => format!("{page_size}-octet pages"),
            FieldKind::CStrings { pairs: true } => {
                format!(
                    "NUL-terminated strings to the end of the {} (key, value pairs)",
                    holder.whole()
                )
            }
            FieldKind::CStrings { pairs: false } => {
                format!(
                    "NUL-terminated strings to the end of the {}",
                    holder.whole()
                )
            }
        }
    }

    /// What the spec requires of one field, each with the level that enforces it.
    fn constraints(&self, f: &Field, kind: &FieldKind<'_>, fields: &[Field]) -> Vec<String> {
        let spec = self.spec;
        let level = level_name(f.level.unwrap_or(LevelName::Required));
        let mut out = Vec::new();
        if let Some(v) = &f.value {
            let text = match (v, kind) {
                (IntOrName::Int(n), _) => format!("must be {}", num(*n)),
                (IntOrName::Name(c), FieldKind::One(Elem::Bytes(_))) => {
                    format!("must equal `{c}` octet for octet")
                }
                (IntOrName::Name(c), _) => match spec.constant(c) {
                    Some(Constant {
                        value: Some(n), ty, ..
                    }) => format!("must be `{c}`, {}", hex_dec_code(*n, Scalar::parse(ty))),
                    _ => format!("must be `{c}`"),
                },
            };
            out.push(format!("{text} ({level})"));
        }
        if let Some(vals) = &f.one_of {
            let v: Vec<String> = vals.iter().map(|v| num(*v)).collect();
            out.push(format!("one of {} ({level})", list_or(&v)));
        }
        match (f.min, f.max) {
            (Some(a), Some(b)) => out.push(format!("{} to {} ({level})", num(a), num(b))),
            (Some(a), None) => out.push(format!("at least {} ({level})", num(a))),
            (None, Some(b)) => out.push(format!("at most {} ({level})", num(b))),
            (None, None) => {}
        }
        if let Some(e) = &f.enum_name {
            if f.known == Some(false) {
                out.push(format!(
                    "any value; values {} does not name are accepted",
                    Self::enum_link(e)
                ));
            } else {
                out.push(format!("a value {} names ({level})", Self::enum_link(e)));
            }
        }
        if let (Some(fl), FieldKind::One(Elem::Int(s))) = (&f.flags, kind) {
            if let Some(x) = spec.flags_(fl) {
                let mask = Self::flags_reserved_mask(x, *s);
                if mask == 0 {
                    out.push(format!("every bit is defined by {}", Self::flags_link(fl)));
                } else {
                    out.push(format!(
                        "bits {} does not define (`{}`) must be clear ({level})",
                        Self::flags_link(fl),
                        hex_width(mask, *s)
                    ));
                }
            }
        }
        if f.reserved {
            let rl = level_name(f.level.unwrap_or(LevelName::Strict));
            match kind {
                FieldKind::One(Elem::Bytes(_)) => out.push(format!("every octet must be 0 ({rl})")),
                _ => out.push(format!("must be 0 ({rl})")),
            }
        }
        // Fields that size or select later ones.
        for g in fields {
            if g.count.as_deref() == Some(f.name.as_str()) {
                out.push(format!("number of elements of `{}`", g.name));
            }
            if let Some(cw) = &g.count_where {
                if cw.field == f.name {
                    let (member, _) = self.attr_member(fields, &cw.field);
                    out.push(format!(
                        "elements whose `{member}` has `{}` each have a page in `{}`",
                        cw.attr, g.name
                    ));
                }
            }
        }
        match kind {
            FieldKind::One(Elem::Bitfield(b))
            | FieldKind::Array {
                elem: Elem::Bitfield(b),
                ..
            } => {
                let checks = self.bitfield_checks(b);
                if !checks.is_empty() {
                    out.push(format!(
                        "{}: {}",
                        if matches!(kind, FieldKind::One(_)) {
                            "the value"
                        } else {
                            "each element"
                        },
                        checks.join(", ")
                    ));
                }
            }
            _ => {}
        }
        match kind {
            FieldKind::Array {
                count: Count::Field(c),
                ..
            } => out.push(format!("`{c}` elements must fit in the body (required)")),
            FieldKind::Array {
                elem,
                count: Count::Rest,
            } => {
                let esize = spec.elem_size(*elem);
                if esize > 1 {
                    out.push(format!(
                        "the octets left must be a multiple of {esize} (required)"
                    ));
                }
            }
            FieldKind::Pages { field, attr, .. } => {
                let (member, _) = self.attr_member(fields, field);
                out.push(format!(
                    "one page for each element of `{field}` whose `{member}` has `{attr}`; \
                     the pages fill the rest of the body exactly (required)"
                ));
            }
            FieldKind::CStrings { pairs } => {
                out.push("the last string must be NUL-terminated (required)".to_string());
                if *pairs {
                    out.push("an even number of strings (required)".to_string());
                }
            }
            _ => {}
        }
        out
    }

    /// The checks a bitfield applies to each value, e.g. `reserved` 0 (strict).
    fn bitfield_checks(&self, b: &Bitfield) -> Vec<String> {
        let mut out = Vec::new();
        for m in &b.fields {
            if m.reserved {
                let l = level_name(m.level.unwrap_or(LevelName::Strict));
                out.push(format!("`{}` must be 0 ({l})", m.name));
            } else if let Some(e) = &m.enum_name {
                if m.known != Some(false) {
                    let l = level_name(m.level.unwrap_or(LevelName::Required));
                    out.push(format!(
                        "`{}` must be a value {} names ({l})",
                        m.name,
                        Self::enum_link(e)
                    ));
                }
            }
        }
        out
    }

    fn flags_reserved_mask(x: &Flags, s: Scalar) -> u64 {
        let known = x.bits.iter().fold(0u64, |m, b| m | (1u64 << b.bit));
        s.max() & !known
    }

    /// The rules table of a record or struct.
    fn rules(&mut self, rules: &[Rule], conditional: bool) {
        if rules.is_empty() {
            return;
        }
        let mut ctx: BTreeSet<String> = BTreeSet::new();
        let mut rows = Vec::new();
        for r in rules {
            if let Some(e) = self.spec.expr(&r.check) {
                ctx.extend(e.ctx_names());
            }
            rows.push(vec![
                format!("`{}`", r.name),
                cell(&code(r.check.trim())),
                level_name(r.level.unwrap_or(LevelName::Required)).to_string(),
                cell(&r.doc),
            ]);
        }
        self.block("Rules:");
        self.table(&["rule", "check", "level", "meaning"], &rows);
        let mut notes = Vec::new();
        if !ctx.is_empty() {
            let names: Vec<String> = ctx.iter().map(|n| format!("`ctx.{n}`")).collect();
            notes.push(format!(
                "A rule naming {} is skipped while that value is unknown.",
                list_or(&names)
            ));
        }
        if conditional {
            notes.push(
                "The rules apply only when the payload after the fixed fields is present.".into(),
            );
        }
        if !notes.is_empty() {
            self.block(&notes.join(" "));
        }
    }

    /// How long the body (or structure) must be, derived from its fields.
    fn length_rule(&self, fields: &[Field], trailing: Trailing, holder: Holder) -> String {
        let spec = self.spec;
        let whole = holder.whole();
        let the = format!("The {whole}");
        if fields.is_empty() {
            return match trailing {
                Trailing::Reject => {
                    format!("{the} is empty; any octet in it is an error (required).")
                }
                Trailing::Strict => {
                    format!("{the} is empty; octets in it are an error at level strict only.")
                }
                Trailing::Allow => format!("{the} is empty; any octets in it are ignored."),
            };
        }
        if let Some(n) = spec.fixed_size(fields) {
            return match trailing {
                Trailing::Reject => format!("{the} is exactly {} (required).", octets(n)),
                Trailing::Strict => format!(
                    "{the} is {}: fewer is an error (required), more an error at level strict only.",
                    octets(n)
                ),
                Trailing::Allow => format!(
                    "{the} is at least {} (required); octets after the fields are ignored.",
                    octets(n)
                ),
            };
        }
        let min = spec.min_size(fields);
        let mut terms = vec![min.to_string()];
        let mut open: Vec<String> = Vec::new();
        let mut pages_last = false;
        for f in fields {
            match spec.kind(f) {
                Some(FieldKind::Array {
                    elem,
                    count: Count::Field(c),
                }) => {
                    let esize = spec.elem_size(elem);
                    terms.push(if esize == 1 {
                        format!("`{c}`")
                    } else {
                        format!("{esize} × `{c}`")
                    });
                }
                Some(FieldKind::Pages {
                    field,
                    attr,
                    page_size,
                }) => {
                    let (member, _) = self.attr_member(fields, &field);
                    terms.push(format!(
                        "{page_size} × (elements of `{field}` whose `{member}` has `{attr}`)"
                    ));
                    pages_last = true;
                    continue;
                }
                Some(FieldKind::Array {
                    elem,
                    count: Count::Rest,
                }) => {
                    let esize = spec.elem_size(elem);
                    open.push(if esize == 1 {
                        format!("`{}`, any number of octets", f.name)
                    } else {
                        format!("`{}`, a multiple of {}", f.name, octets(esize))
                    });
                }
                Some(FieldKind::Blob) => open.push(format!("`{}`, any number of octets", f.name)),
                Some(FieldKind::CStrings { .. }) => {
                    open.push(format!("`{}`, NUL-terminated strings", f.name))
                }
                _ => {}
            }
            pages_last = false;
        }
        let sum = terms.join(" + ");
        if !open.is_empty() {
            return match (terms.len(), min) {
                (1, 0) => format!("{the} is {}.", list_and(&open)),
                (1, _) => format!(
                    "{the} is at least {} (required); the rest is {}.",
                    octets(min),
                    list_and(&open)
                ),
                _ => format!(
                    "{the} is at least {sum} octets (required); the rest is {}.",
                    list_and(&open)
                ),
            };
        }
        if pages_last {
            return format!("{the} is exactly {sum} octets (required).");
        }
        match trailing {
            Trailing::Reject => format!("{the} is exactly {sum} octets (required)."),
            Trailing::Strict => format!(
                "{the} is {sum} octets: fewer is an error (required), more an error at level strict only."
            ),
            Trailing::Allow => format!(
                "{the} is at least {sum} octets (required); octets after the fields are ignored."
            ),
        }
    }

    fn struct_(&mut self, s: &Struct) {
        let spec = self.spec;
        self.heading(3, &Self::struct_heading(&s.name));
        self.block(s.doc.trim());
        let trailing = s.trailing.unwrap_or(Trailing::Reject);
        let mut items = vec![
            format!(
                "**Length:** {}",
                self.length_rule(&s.fields, trailing, Holder::Struct)
            ),
            format!(
                "**Byte order:** {}",
                match s.byte_order {
                    Some(o) if o != ByteOrder::Stream =>
                        format!("{}, whatever the format's default", self.byte_order_text(o)),
                    _ => self.byte_order_text(spec.struct_order(s)).to_string(),
                }
            ),
        ];
        let uses = self.uses_of_type(&s.name);
        if !uses.is_empty() {
            items.push(format!("**Used by:** {}", uses.join(", ")));
        }
        self.bullets(&items);
        let grid = self.field_diagram(&s.fields, trailing == Trailing::Allow, Holder::Struct);
        self.diagram(&grid);
        self.field_table(&s.fields, Holder::Struct);
        self.rules(&s.rules, false);
    }

    fn role_text(role: Role) -> &'static str {
        match role {
            Role::End => "`end`: the last record of the stream",
            Role::PageData => "`page_data`: carries guest memory",
            Role::Checkpoint => "`checkpoint`: ends one checkpoint of a checkpointed stream",
            Role::CheckpointEnd => "`checkpoint_end`: ends this layer's part of a checkpoint",
            Role::CheckpointState => "`checkpoint_state`: carries a checkpoint control message",
            Role::StaticDataEnd => {
                "`static_data_end`: ends the data that cannot change while the guest runs"
            }
            Role::Verify => "`verify`: starts the verification pass",
            Role::LibxcContext => "`libxc_context`: a complete libxc image follows the record",
            Role::BackChannel => "`back_channel`: travels on the back channel only",
        }
    }

    fn record(&mut self, r: &Record) {
        let spec = self.spec;
        self.heading(3, &Self::record_heading(r));
        self.block(r.doc.trim());
        let mut items = Vec::new();
        items.push(format!(
            "**Type:** `{}`, {}",
            type_hex(r.record_type),
            if Self::mandatory(r) {
                "mandatory (bit 31 clear)"
            } else {
                "optional (bit 31 set)"
            }
        ));
        match r.status.unwrap_or(Status::Active) {
            Status::Active => {}
            Status::Deprecated => items.push("**Status:** deprecated".into()),
            Status::Forbidden => {
                items.push("**Status:** forbidden: never valid in a forward stream".into())
            }
        }
        if let Some(v) = r.since_version {
            items.push(format!("**Since version:** {v}; an error in older streams"));
        }
        let guests: Vec<String> = r.guests.iter().map(|g| format!("`{g}`")).collect();
        items.push(format!(
            "**Guests:** {}",
            if guests.is_empty() {
                "all".to_string()
            } else {
                format!("{} only", list_and(&guests))
            }
        ));
        if r.once {
            items.push("**Occurrence:** at most once per stream".into());
        }
        if r.checkpointed_only {
            items.push("**Streams:** checkpointed (Remus or COLO) streams only".into());
        }
        if let Some(role) = r.role {
            items.push(format!("**Role:** {}", Self::role_text(role)));
        }
        if !r.implied_at.is_empty() {
            let names: Vec<String> = r.implied_at.iter().map(|n| self.record_link(n)).collect();
            items.push(format!(
                "**Implied:** in streams older than version {}, the first {} record stands in for it",
                r.since_version.unwrap_or_default(),
                list_or(&names)
            ));
        }
        let trailing = r.trailing.unwrap_or(Trailing::Reject);
        items.push(format!(
            "**Length:** {}",
            self.length_rule(&r.fields, trailing, Holder::Record)
        ));
        if let Some(e) = r.empty {
            let min = spec.min_size(&r.fields);
            items.push(format!(
                "**Empty payload:** a body of only the first {} is skipped{} and its rules do not apply",
                octets(min),
                match e {
                    EmptyBody::Allow => " silently",
                    EmptyBody::Warn => " with a warning",
                }
            ));
        }
        self.bullets(&items);
        if r.fields.is_empty() {
            self.rules(&r.rules, false);
            return;
        }
        let grid = self.field_diagram(&r.fields, trailing == Trailing::Allow, Holder::Record);
        self.diagram(&grid);
        self.field_table(&r.fields, Holder::Record);
        self.rules(&r.rules, r.empty.is_some());
    }

    fn enum_(&mut self, e: &Enum) {
        self.heading(3, &Self::enum_heading(&e.name));
        self.block(e.doc.trim());
        let mut items = vec![format!("**Type:** {}", e.ty)];
        let mut uses = Vec::new();
        for (holder, f) in self.all_fields() {
            if f.enum_name.as_deref() == Some(e.name.as_str()) {
                let how = if f.known == Some(false) {
                    "any value".to_string()
                } else {
                    format!(
                        "listed values only, {}",
                        level_name(f.level.unwrap_or(LevelName::Required))
                    )
                };
                uses.push(format!("`{holder}.{}` ({how})", f.name));
            }
        }
        for b in &self.spec.file.bitfields {
            for m in b
                .fields
                .iter()
                .filter(|m| m.enum_name.as_deref() == Some(e.name.as_str()))
            {
                let how = if m.known == Some(false) {
                    "any value".to_string()
                } else {
                    format!(
                        "listed values only, {}",
                        level_name(m.level.unwrap_or(LevelName::Required))
                    )
                };
                uses.push(format!("`{}.{}` ({how})", b.name, m.name));
            }
        }
        if self
            .spec
            .domain_type_enum()
            .is_some_and(|d| d.name == e.name)
        {
            uses.push("`guests:` of records and the layouts".to_string());
        }
        if !uses.is_empty() {
            items.push(format!("**Used by:** {}", uses.join(", ")));
        }
        for a in &e.attributes {
            let kind = match &a.ty {
                Some(t) => format!(" ({t})"),
                None => String::new(),
            };
            items.push(format!(
                "**Attribute `{}`{kind}:** {}",
                a.name,
                cell(&a.doc)
            ));
        }
        self.bullets(&items);
        let with_attrs = !e.attributes.is_empty();
        let mut rows = Vec::new();
        for v in &e.values {
            let mut row = vec![hex_dec_code(v.value, None), format!("`{}`", v.name)];
            if with_attrs {
                let set: Vec<String> = e
                    .attributes
                    .iter()
                    .filter_map(|a| {
                        let val = v.attrs.get(&a.name)?;
                        match (&a.ty, val.as_bool(), val.as_u64()) {
                            (None, Some(true), _) => Some(format!("`{}`", a.name)),
                            (Some(_), _, Some(n)) => Some(format!("`{}` = {n}", a.name)),
                            _ => None,
                        }
                    })
                    .collect();
                row.push(if set.is_empty() {
                    "—".to_string()
                } else {
                    set.join(", ")
                });
            }
            row.push(cell(&v.doc));
            rows.push(row);
        }
        if with_attrs {
            self.table(&["value", "name", "attributes", "meaning"], &rows);
        } else {
            self.table(&["value", "name", "meaning"], &rows);
        }
    }

    fn flags(&mut self, fl: &Flags) {
        self.heading(3, &Self::flags_heading(&fl.name));
        self.block(fl.doc.trim());
        let s = Scalar::parse(&fl.ty).unwrap_or(Scalar::U64);
        let mask = Self::flags_reserved_mask(fl, s);
        let mut items = vec![format!("**Type:** {}", fl.ty)];
        items.push(if mask == 0 {
            "**Reserved bits:** none".to_string()
        } else {
            format!(
                "**Reserved bits:** `{}` (every bit not listed); a field of these flags must keep them clear",
                hex_width(mask, s)
            )
        });
        let mut uses = Vec::new();
        for (holder, f) in self.all_fields() {
            if f.flags.as_deref() == Some(fl.name.as_str()) {
                uses.push(format!(
                    "`{holder}.{}` (reserved bits checked at level {})",
                    f.name,
                    level_name(f.level.unwrap_or(LevelName::Required))
                ));
            }
        }
        if !uses.is_empty() {
            items.push(format!("**Used by:** {}", uses.join(", ")));
        }
        self.bullets(&items);
        let mut bits: Vec<&FlagBit> = fl.bits.iter().collect();
        bits.sort_by_key(|b| b.bit);
        let rows: Vec<Vec<String>> = bits
            .iter()
            .map(|b| {
                vec![
                    format!("{} (`{}`)", b.bit, hex_width(1u64 << b.bit, s)),
                    format!("`{}`", b.name),
                    cell(&b.doc),
                ]
            })
            .collect();
        self.table(&["bit", "name", "meaning"], &rows);
    }

    fn bitfield(&mut self, b: &Bitfield) {
        self.heading(3, &Self::bitfield_heading(&b.name));
        self.block(b.doc.trim());
        let base = Scalar::parse(&b.base).unwrap_or(Scalar::U64);
        let mut items = vec![format!(
            "**Base:** {} ({}), in the byte order of the record or structure holding it",
            base.name(),
            octets(base.size())
        )];
        let uses = self.uses_of_type(&b.name);
        if !uses.is_empty() {
            items.push(format!("**Used by:** {}", uses.join(", ")));
        }
        self.bullets(&items);
        // Members and the unassigned gaps between them, low bits first.
        let mut parts: Vec<(u32, u32, Option<&BitfieldMember>)> = b
            .fields
            .iter()
            .filter_map(|m| parse_bits(&m.bits).map(|(lo, hi)| (lo, hi, Some(m))))
            .collect();
        parts.sort_by_key(|p| p.0);
        let mut all = Vec::new();
        let mut next = 0u32;
        for (lo, hi, m) in parts {
            if lo > next {
                all.push((next, lo - 1, None));
            }
            all.push((lo, hi, m));
            next = hi + 1;
        }
        if next < base.bits() {
            all.push((next, base.bits() - 1, None));
        }
        let boxes: Vec<BitBox> = all
            .iter()
            .rev()
            .map(|(lo, hi, m)| BitBox {
                hi: *hi,
                lo: *lo,
                label: match m {
                    Some(m) if m.reserved => "(reserved)".to_string(),
                    Some(m) => m.name.clone(),
                    None => "(unassigned)".to_string(),
                },
            })
            .collect();
        self.block(&format!("```text\n{}```", bit_diagram(&boxes, base.bits())));
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|(lo, hi, m)| {
                let width = hi - lo + 1;
                let ones = if width >= 64 {
                    u64::MAX
                } else {
                    (1u64 << width) - 1
                };
                let bits = if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}–{hi}")
                };
                let bits = format!("{bits} (`{}`)", hex_width(ones << lo, base));
                match m {
                    None => vec![
                        bits,
                        "(unassigned)".to_string(),
                        "Not described by the spec.".to_string(),
                        "not checked".to_string(),
                    ],
                    Some(m) => {
                        let constraint = if m.reserved {
                            format!(
                                "must be 0 ({})",
                                level_name(m.level.unwrap_or(LevelName::Strict))
                            )
                        } else if let Some(e) = &m.enum_name {
                            if m.known == Some(false) {
                                format!("enum {}, any value", Self::enum_link(e))
                            } else {
                                format!(
                                    "enum {}, listed values only ({})",
                                    Self::enum_link(e),
                                    level_name(m.level.unwrap_or(LevelName::Required))
                                )
                            }
                        } else {
                            "—".to_string()
                        };
                        vec![
                            bits,
                            format!("`{}`", m.name),
                            cell(&m.doc),
                            cell(&constraint),
                        ]
                    }
                }
            })
            .collect();
        self.table(&["bits", "member", "meaning", "constraint"], &rows);
    }

    fn layouts(&mut self) {
        self.heading(2, "Layouts");
        self.block(
            "Which records a stream must contain and in what order, per guest type. \
             `required` order rules are what Xen's restore code enforces, `strict` ones what \
             the reference verifier adds, and `warn` ones are reported without failing.",
        );
        for l in &self.spec.file.layouts {
            let title = if l.guest == "all" {
                "Layout: all guests".to_string()
            } else {
                format!("Layout: {}", l.guest)
            };
            self.heading(3, &title);
            self.block(l.doc.trim());
            if l.guest != "all" {
                let only: Vec<String> = self
                    .spec
                    .file
                    .records
                    .iter()
                    .filter(|r| r.guests.iter().any(|g| g == &l.guest))
                    .map(|r| self.record_link(&r.name))
                    .collect();
                if !only.is_empty() {
                    self.block(&format!(
                        "Records valid only for {} guests, besides the records valid for all: {}.",
                        code(&l.guest),
                        only.join(", ")
                    ));
                }
            }
            if !l.required.is_empty() {
                self.block("Required before the stream ends:");
                let rows: Vec<Vec<String>> = l
                    .required
                    .iter()
                    .map(|q| {
                        vec![
                            self.record_link(&q.record),
                            q.condition
                                .as_deref()
                                .map_or_else(|| "any".to_string(), |c| cell(&code(c.trim()))),
                            match q.level.unwrap_or(LevelName::Required) {
                                LevelName::Warn => "warn".to_string(),
                                LevelName::Required => "required".to_string(),
                                LevelName::Strict => "strict".to_string(),
                            },
                            cell(&q.doc),
                        ]
                    })
                    .collect();
                self.table(&["record", "where", "level", "meaning"], &rows);
            }
            if !l.order.is_empty() {
                self.block("Order:");
                let rows: Vec<Vec<String>> = l
                    .order
                    .iter()
                    .map(|o| {
                        let mut rule = Vec::new();
                        if !o.after.is_empty() {
                            let names: Vec<String> =
                                o.after.iter().map(|n| self.record_link(n)).collect();
                            rule.push(if names.len() == 1 {
                                format!("its first occurrence follows {}", names[0])
                            } else {
                                format!(
                                    "its first occurrence follows one of each of {}",
                                    list_and(&names)
                                )
                            });
                        }
                        if !o.before.is_empty() {
                            let names: Vec<String> =
                                o.before.iter().map(|n| self.record_link(n)).collect();
                            rule.push(if names.len() == 1 {
                                format!("none comes after the first {}", names[0])
                            } else {
                                format!("none comes after the first of any of {}", list_and(&names))
                            });
                        }
                        vec![
                            self.record_link(&o.record),
                            rule.join("; "),
                            level_name(o.level.unwrap_or(LevelName::Required)).to_string(),
                            cell(&o.doc),
                        ]
                    })
                    .collect();
                self.table(&["record", "rule", "level", "meaning"], &rows);
            }
        }
    }
}

// -- chunks and word types --------------------------------------------------------------------

use crate::validate::{ChunkCount, ChunkElem};

impl<'s> Doc<'s> {
    fn chunk_heading(c: &Chunk) -> String {
        match &c.id {
            ChunkIdSpec::Id(n) => format!("{} ({n})", c.name),
            ChunkIdSpec::Range(_) => format!("{} (positive ids)", c.name),
        }
    }

    fn chunk_id_text(&self, c: &Chunk) -> String {
        match (&c.id, self.spec.chunk_max_id(c)) {
            (ChunkIdSpec::Id(n), _) => format!("`{n}`"),
            (ChunkIdSpec::Range(_), Some(m)) => format!("`1`..=`{m}`"),
            (ChunkIdSpec::Range(_), None) => "any id above `0`".to_string(),
        }
    }

    /// Whether a struct is the `body:` of some chunk.
    fn is_chunk_body(&self, s: &Struct) -> bool {
        self.spec
            .file
            .chunks
            .iter()
            .any(|c| c.body.as_deref() == Some(s.name.as_str()))
    }

    fn words(&mut self) {
        self.heading(2, "Word types");
        self.block(
            "Integer types whose width is not fixed by the format but by a context value the \
             reader is given; each is read as an unsigned 64-bit value.",
        );
        let rows: Vec<Vec<String>> = self
            .spec
            .file
            .words
            .iter()
            .map(|w| {
                vec![
                    format!("`{}`", w.name),
                    format!("4 or 8 octets, from `{}`", w.width),
                    cell(&w.doc),
                ]
            })
            .collect();
        self.table(&["name", "width", "meaning"], &rows);
    }

    /// The text for one chunk field's type.
    fn chunk_type_text(&self, f: &Field) -> String {
        let spec = self.spec;
        let Some(cf) = spec.chunk_field(f) else {
            return code(&f.ty);
        };
        let elem = match cf.elem {
            ChunkElem::Int(s) => s.name().to_string(),
            ChunkElem::Word(w) => format!("`{}`", w.name),
            ChunkElem::Bytes(n) => octets(n),
            ChunkElem::Struct(s) => format!(
                "{} ({})",
                Self::link(&s.name, &Self::struct_heading(&s.name)),
                octets(spec.fixed_size(&s.fields).unwrap_or(0))
            ),
        };
        let count = match &cf.count {
            None => return elem,
            Some(ChunkCount::Fixed { n, .. }) => n.to_string(),
            Some(ChunkCount::Expr(_)) => format!("`{}`", f.count.as_deref().unwrap_or("")),
        };
        match cf.elem {
            ChunkElem::Int(Scalar::U8) => format!("{count} octets"),
            _ => format!("{count} × {elem}"),
        }
    }

    fn chunks(&mut self) {
        let spec = self.spec;
        self.heading(2, "Chunks");
        self.block(
            "Each chunk is a signed 32-bit id followed by its body. No chunk carries its \
             length: the id alone says how to read what follows, so a reader must know every \
             chunk it meets.",
        );
        let rows: Vec<Vec<String>> = spec
            .file
            .chunks
            .iter()
            .map(|c| {
                let body = if c.opaque {
                    "not described".to_string()
                } else if let Some(b) = &c.body {
                    Self::link(b, &Self::struct_heading(b))
                } else if c.fields.is_empty() {
                    "none".to_string()
                } else {
                    c.fields
                        .iter()
                        .map(|f| format!("`{}`", f.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![
                    self.chunk_id_text(c),
                    format!("[`{}`](#{})", c.name, slug(&Self::chunk_heading(c))),
                    body,
                ]
            })
            .collect();
        self.table(&["id", "chunk", "body"], &rows);
        for c in &spec.file.chunks {
            self.heading(3, &Self::chunk_heading(c));
            self.block(c.doc.trim());
            if c.opaque {
                self.block("The body is not described: a reader cannot step over this chunk.");
                continue;
            }
            if let Some(b) = &c.body {
                let size = spec
                    .struct_(b)
                    .and_then(|s| spec.fixed_size(&s.fields))
                    .unwrap_or(0);
                self.block(&format!(
                    "Body: one {} ({}).",
                    Self::link(b, &Self::struct_heading(b)),
                    octets(size)
                ));
                continue;
            }
            if c.fields.is_empty() {
                self.block("No body: the next chunk follows the id.");
                continue;
            }
            if matches!(c.id, ChunkIdSpec::Range(_)) {
                self.block("The fields may name the chunk's id as `id`.");
            }
            self.unframed_fields(&c.fields);
        }
    }

    /// The field table of a chunk or a part.
    fn unframed_fields(&mut self, fields: &[Field]) {
        let spec = self.spec;
        let mut at = Some(0u64);
        let mut rows = Vec::new();
        for f in fields {
            let Some(cf) = spec.chunk_field(f) else {
                continue;
            };
            let offset = at.map_or("—".to_string(), |o| o.to_string());
            at = match (at, &cf.count) {
                (Some(o), None) => spec.chunk_elem_size(cf.elem).map(|n| o + n),
                _ => None,
            };
            let mut cons = Vec::new();
            if let Some(m) = f.min {
                cons.push(format!("at least {}", num(m)));
            }
            if let Some(m) = f.max {
                cons.push(format!("at most {}", num(m)));
            }
            if let Some(v) = &f.value {
                cons.push(match v {
                    IntOrName::Int(n) => format!("must be {}", num(*n)),
                    IntOrName::Name(k) => format!("must be `{k}`"),
                });
            }
            rows.push(vec![
                offset,
                format!("`{}`", f.name),
                self.chunk_type_text(f),
                cell(&f.doc),
                if cons.is_empty() {
                    "—".to_string()
                } else {
                    cell(&cons.join("; "))
                },
            ]);
        }
        self.table(
            &["offset", "field", "width/type", "meaning", "constraints"],
            &rows,
        );
    }

    fn parts(&mut self) {
        let spec = self.spec;
        self.heading(2, "Parts");
        self.block(
            "Items that no id announces: where the reader is in the stream says which comes \
             next. Each is read like a chunk body, field after field; a count may name the \
             part's parameters, values the reader knows from earlier in the stream.",
        );
        for p in &spec.file.parts {
            self.heading(3, &p.name);
            self.block(p.doc.trim());
            if !p.params.is_empty() {
                let rows: Vec<Vec<String>> = p
                    .params
                    .iter()
                    .map(|x| vec![format!("`{}`", x.name), cell(&x.doc)])
                    .collect();
                self.table(&["parameter", "meaning"], &rows);
            }
            self.unframed_fields(&p.fields);
        }
    }
}
