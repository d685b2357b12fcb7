//! Generated values as named fields, rendered as `name=value` text or as JSON.
//!
//! [`fields_of`] walks any generated record body, struct or bitfield ([`Walk`]) and turns what
//! the walk reports into one list of [`Fields`]; [`write_fields`] and [`fields_json`] print that
//! list, so the text and JSON outputs never disagree. Nothing here names a record: a field
//! added to a spec is shown as soon as the code is regenerated.
//!
//! How each kind of field is shown:
//!
//! - integers in decimal, or in hex when the spec says `display: hex` (reserved values default
//!   to hex); enums by their name (`enum(0x..)` for a value the spec does not define); flags
//!   as the list of their set bits' names, reserved bits in hex; fixed-size byte strings as
//!   quoted text when they are ASCII, in hex otherwise;
//! - nested structs and bitfields as `{..}` objects;
//! - arrays as lists (text shows the first [`TEXT_LIST_MAX`]; a count field is shown where the
//!   wire has it, as the array's length); arrays marked `display: summary` as counts of each enum value and
//!   runs of consecutive integers (`0x10-0x1f`), per member of their elements (reserved members
//!   are left out of summaries);
//! - blobs by their length (`<N octets>`), page blobs by their number of pages, with the
//!   contents of a blob's declared layout when it has one;
//! - NUL-terminated strings as quoted text, key/value pairs as `{key, value}` objects.

use crate::wire::{ArrayInfo, ArrayShow, BlobKind, CStrings, Value, Visitor, Walk};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Elements of a list shown in text before it is cut short (JSON always has them all).
pub const TEXT_LIST_MAX: usize = 16;

/// Octets of a byte string shown in text before it is cut short (JSON has them all).
pub const TEXT_OCTETS_MAX: usize = 32;

/// Octets as lower-case hex.
fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, c| {
            let _ = write!(s, "{c:02x}");
            s
        })
}

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A number shown in decimal.
    Int(u64),
    /// A number shown in hex in text (frame numbers, addresses, register values).
    Hex(u64),
    /// A name from the spec (an enum value or flag set): bare in text.
    Name(String),
    /// Text from the stream: quoted in text.
    Str(String),
    /// Octets shown by their length.
    Len(usize),
    /// A fixed-size byte string that is not text: hex (in text, only the first
    /// [`TEXT_OCTETS_MAX`] octets of a long one).
    Octets(Vec<u8>),
    /// Whole pages: `octets` in `pages` pages.
    Pages {
        /// The octets.
        octets: usize,
        /// The pages they fill.
        pages: usize,
    },
    /// Values in order.
    List(Vec<Val>),
    /// Named fields: a nested struct.
    Obj(Fields),
    /// Counts or values keyed by names found in the stream.
    Map(Vec<(String, Val)>),
}

/// Named fields, in the order they are shown.
pub type Fields = Vec<(&'static str, Val)>;

impl Val {
    /// The value as JSON: integers as numbers, names and text as strings, octets as hex.
    pub fn to_json(&self) -> Json {
        match self {
            Val::Int(v) | Val::Hex(v) => json!(v),
            Val::Name(s) | Val::Str(s) => json!(s),
            Val::Len(n) => json!({ "length": n }),
            Val::Octets(b) => json!(hex(b)),
            Val::Pages { octets, pages } => json!({ "length": octets, "pages": pages }),
            Val::List(l) => Json::Array(l.iter().map(Val::to_json).collect()),
            Val::Obj(f) => fields_json(f),
            Val::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// Appends the value as `xenmig dump` shows it.
    pub fn write_text(&self, out: &mut String) {
        match self {
            Val::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Val::Hex(v) => {
                let _ = write!(out, "{v:#x}");
            }
            Val::Name(s) => out.push_str(s),
            Val::Str(s) => {
                let _ = write!(out, "{s:?}");
            }
            Val::Len(n) => {
                let _ = write!(out, "<{n} octets>");
            }
            Val::Octets(b) if b.len() <= TEXT_OCTETS_MAX => out.push_str(&hex(b)),
            Val::Octets(b) if b.iter().all(|&c| c == 0) => {
                let _ = write!(out, "<{} zero octets>", b.len());
            }
            Val::Octets(b) => {
                let _ = write!(out, "<{} octets: {}…>", b.len(), hex(&b[..TEXT_OCTETS_MAX]));
            }
            Val::Pages { pages, .. } => {
                let _ = write!(out, "<{pages} pages>");
            }
            Val::List(l) => {
                out.push('[');
                for (i, v) in l.iter().take(TEXT_LIST_MAX).enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write_text(out);
                }
                if l.len() > TEXT_LIST_MAX {
                    let _ = write!(out, ", … {} more", l.len() - TEXT_LIST_MAX);
                }
                out.push(']');
            }
            Val::Obj(f) => {
                out.push('{');
                write_fields(f, ", ", out);
                out.push('}');
            }
            Val::Map(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push(':');
                    v.write_text(out);
                }
                out.push('}');
            }
        }
    }
}

/// Fields as a JSON object.
pub fn fields_json(fields: &Fields) -> Json {
    let mut m = Map::new();
    for (k, v) in fields {
        m.insert((*k).to_string(), v.to_json());
    }
    Json::Object(m)
}

/// Fields as `name=value` separated by `sep`.
pub fn write_fields(fields: &Fields, sep: &str, out: &mut String) {
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(k);
        out.push('=');
        v.write_text(out);
    }
}

/// The fields of a generated value, from its walk.
pub fn fields_of(item: &dyn Walk) -> Fields {
    let mut c = Collector {
        stack: vec![Frame::Obj {
            name: "",
            fields: Vec::new(),
        }],
    };
    item.walk(&mut c);
    c.finish()
}

/// The fields of a generated value as one line of `name=value` text.
pub fn text(item: &dyn Walk) -> String {
    let mut out = String::new();
    write_fields(&fields_of(item), " ", &mut out);
    out
}

/// The fields of a generated value as a JSON object.
pub fn json(item: &dyn Walk) -> Json {
    fields_json(&fields_of(item))
}

/// Octets as one lowercase hex string.
pub fn hex_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Runs of consecutive values, in order of appearance: `[0, 1, 2, 7]` gives `(0, 2), (7, 7)`.
pub fn runs(values: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for v in values {
        push_run(&mut out, v);
    }
    out
}

fn push_run(out: &mut Vec<(u64, u64)>, v: u64) {
    match out.last_mut() {
        Some((_, last)) if last.checked_add(1) == Some(v) => *last = v,
        _ => out.push((v, v)),
    }
}

fn runs_val(runs: &[(u64, u64)]) -> Val {
    Val::List(
        runs.iter()
            .map(|&(a, b)| {
                if a == b {
                    Val::Name(format!("{a:#x}"))
                } else {
                    Val::Name(format!("{a:#x}-{b:#x}"))
                }
            })
            .collect(),
    )
}

/// A scalar as shown.
fn scalar_val(value: Value<'_>) -> Val {
    match value {
        Value::Int { value, hex: true } => Val::Hex(value),
        Value::Int { value, hex: false } => Val::Int(value),
        Value::Enum { name: Some(n), .. } => Val::Name(n.to_string()),
        Value::Enum {
            value,
            name: None,
            enum_name,
        } => Val::Name(format!("{enum_name}({value:#x})")),
        Value::Flags { .. } => {
            let (names, rest) = value.flag_names();
            let mut l: Vec<Val> = names.into_iter().map(|n| Val::Name(n.into())).collect();
            if rest != 0 {
                l.push(Val::Name(format!("{rest:#x}")));
            }
            Val::List(l)
        }
        Value::Text(t) => Val::Str(t.to_string()),
        Value::Bytes(b) => {
            let texty = b.iter().any(u8::is_ascii_graphic)
                && b.iter().all(|&c| {
                    c.is_ascii_graphic() || matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0)
                });
            if texty {
                Val::Str(String::from_utf8_lossy(b).into_owned())
            } else {
                Val::Octets(b.to_vec())
            }
        }
    }
}

/// What an array marked `display: summary` has shown so far, per member of its elements.
#[derive(Default)]
struct Summary {
    /// Enum and flags members: how many elements hold each value.
    counts: Vec<(&'static str, BTreeMap<String, u64>)>,
    /// Integer members: runs of consecutive values.
    runs: Vec<(&'static str, Vec<(u64, u64)>)>,
}

impl Summary {
    fn add(&mut self, name: &'static str, value: Value<'_>) {
        match value {
            Value::Int { value, .. } => {
                let at = match self.runs.iter().position(|(n, _)| *n == name) {
                    Some(at) => at,
                    None => {
                        self.runs.push((name, Vec::new()));
                        self.runs.len() - 1
                    }
                };
                if let Some((_, r)) = self.runs.get_mut(at) {
                    push_run(r, value);
                }
            }
            other => {
                let mut label = String::new();
                scalar_val(other).write_text(&mut label);
                let at = match self.counts.iter().position(|(n, _)| *n == name) {
                    Some(at) => at,
                    None => {
                        self.counts.push((name, BTreeMap::new()));
                        self.counts.len() - 1
                    }
                };
                if let Some((_, m)) = self.counts.get_mut(at) {
                    *m.entry(label).or_insert(0) += 1;
                }
            }
        }
    }

    /// The summary of the array `array`: its own integers as runs, or one entry per member.
    fn into_val(self, array: &'static str) -> Val {
        let mut fields: Fields = Vec::new();
        for (name, m) in self.counts {
            fields.push((
                name,
                Val::Map(m.into_iter().map(|(k, n)| (k, Val::Int(n))).collect()),
            ));
        }
        for (name, r) in self.runs {
            fields.push((name, runs_val(&r)));
        }
        match fields.as_slice() {
            [(name, _)] if *name == array => fields.pop().map_or(Val::List(Vec::new()), |f| f.1),
            [] => Val::List(Vec::new()),
            _ => Val::Obj(fields),
        }
    }
}

enum Frame {
    Obj {
        name: &'static str,
        fields: Fields,
    },
    List {
        name: &'static str,
        items: Vec<Val>,
    },
    Summary {
        name: &'static str,
        /// Structs entered inside the summarised array.
        depth: usize,
        summary: Summary,
    },
}

/// Builds [`Fields`] from a walk.
struct Collector {
    stack: Vec<Frame>,
}

impl Collector {
    /// Adds a value to the innermost struct or list.
    fn push(&mut self, name: &'static str, val: Val) {
        match self.stack.last_mut() {
            Some(Frame::Obj { fields, .. }) => fields.push((name, val)),
            Some(Frame::List { items, .. }) => items.push(val),
            // Blobs and strings inside a summarised array are not summarised.
            Some(Frame::Summary { .. }) | None => {}
        }
    }

    fn summary(&mut self) -> Option<&mut Summary> {
        match self.stack.last_mut() {
            Some(Frame::Summary { summary, .. }) => Some(summary),
            _ => None,
        }
    }

    fn finish(mut self) -> Fields {
        // A well-formed walk closes what it opens; fold anything left open into its parent.
        while self.stack.len() > 1 {
            self.close();
        }
        match self.stack.pop() {
            Some(Frame::Obj { fields, .. }) => fields,
            _ => Vec::new(),
        }
    }

    /// Closes the innermost frame into its parent.
    fn close(&mut self) {
        if self.stack.len() <= 1 {
            return;
        }
        let (name, val) = match self.stack.pop() {
            Some(Frame::Obj { name, fields }) => (name, Val::Obj(fields)),
            Some(Frame::List { name, items }) => (name, Val::List(items)),
            Some(Frame::Summary { name, summary, .. }) => (name, summary.into_val(name)),
            None => return,
        };
        self.push(name, val);
    }
}

impl Visitor for Collector {
    fn scalar(&mut self, name: &'static str, value: Value<'_>, reserved: bool) {
        if let Some(s) = self.summary() {
            if !reserved {
                s.add(name, value);
            }
            return;
        }
        self.push(name, scalar_val(value));
    }

    fn struct_begin(&mut self, name: &'static str, _type_name: &'static str) {
        if let Some(Frame::Summary { depth, .. }) = self.stack.last_mut() {
            *depth += 1;
            return;
        }
        self.stack.push(Frame::Obj {
            name,
            fields: Vec::new(),
        });
    }

    fn struct_end(&mut self) {
        if let Some(Frame::Summary { depth, .. }) = self.stack.last_mut() {
            if *depth > 0 {
                *depth -= 1;
                return;
            }
        }
        self.close();
    }

    fn array_begin(&mut self, name: &'static str, info: ArrayInfo) {
        if let Some(Frame::Summary { depth, .. }) = self.stack.last_mut() {
            // An array inside a summarised element: its elements join the summary.
            *depth += 1;
            return;
        }
        self.stack.push(match info.show {
            ArrayShow::List => Frame::List {
                name,
                items: Vec::with_capacity(info.count.min(TEXT_LIST_MAX * 64)),
            },
            ArrayShow::Summary => Frame::Summary {
                name,
                depth: 0,
                summary: Summary::default(),
            },
        });
    }

    fn array_end(&mut self) {
        self.struct_end();
    }

    fn blob(
        &mut self,
        name: &'static str,
        bytes: &[u8],
        kind: BlobKind,
        layout: Option<&dyn Walk>,
    ) {
        let val = match (layout, kind) {
            (Some(inner), _) => Val::Obj(vec![
                ("length", Val::Int(bytes.len() as u64)),
                ("layout", Val::Name(inner.item_name().to_string())),
                ("contents", Val::Obj(fields_of(inner))),
            ]),
            (None, BlobKind::Opaque) => Val::Len(bytes.len()),
            (None, BlobKind::Pages { page_size }) => Val::Pages {
                octets: bytes.len(),
                pages: bytes.len().checked_div(page_size).unwrap_or(0),
            },
        };
        self.push(name, val);
    }

    fn strings(&mut self, name: &'static str, strings: CStrings<'_>, pairs: bool) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let val = if pairs {
            Val::List(
                strings
                    .pairs()
                    .map(|(k, v)| {
                        let mut kv = vec![("key", Val::Str(text(k)))];
                        if let Some(v) = v {
                            kv.push(("value", Val::Str(text(v))));
                        }
                        Val::Obj(kv)
                    })
                    .collect(),
            )
        } else {
            Val::List(strings.iter().map(|s| Val::Str(text(s))).collect())
        };
        self.push(name, val);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_consecutive_values() {
        assert_eq!(
            runs([0, 1, 2, 3, 7, 9, 10].into_iter()),
            vec![(0, 3), (7, 7), (9, 10)]
        );
        assert_eq!(runs([5, 4].into_iter()), vec![(5, 5), (4, 4)]);
        assert_eq!(
            runs([u64::MAX, 0].into_iter()),
            vec![(u64::MAX, u64::MAX), (0, 0)]
        );
    }

    #[test]
    fn text_and_json_agree() {
        let f: Fields = vec![
            ("a", Val::Hex(255)),
            ("b", Val::List(vec![Val::Int(1), Val::Int(2)])),
            ("c", Val::Len(3)),
            (
                "d",
                Val::Pages {
                    octets: 8192,
                    pages: 2,
                },
            ),
        ];
        let mut s = String::new();
        write_fields(&f, " ", &mut s);
        assert_eq!(s, "a=0xff b=[1, 2] c=<3 octets> d=<2 pages>");
        assert_eq!(
            fields_json(&f),
            json!({"a": 255, "b": [1, 2], "c": {"length": 3}, "d": {"length": 8192, "pages": 2}})
        );
    }

    #[test]
    fn records_render_from_their_walk() {
        use crate::libxc;
        use crate::wire::Array;
        let entries = [
            libxc::PageEntry(0).with_pfn(0x10),
            libxc::PageEntry(0).with_pfn(0x11),
            libxc::PageEntry(0)
                .with_pfn(0x20)
                .with_page_type(libxc::PageType::XTAB),
        ];
        let pages = vec![0u8; 2 * crate::limits::PAGE_SIZE];
        let p = libxc::Record::PageData(libxc::PageData {
            entries: Array::Values(&entries),
            pages: &pages,
            ..Default::default()
        });
        assert_eq!(
            text(&p),
            "count=3 reserved=0x0 entries={page_type={NOTAB:2, XTAB:1}, pfn=[0x10-0x11, 0x20]} \
             pages=<2 pages>"
        );
        assert_eq!(
            json(&p),
            json!({
                "count": 3, "reserved": 0,
                "entries": {"page_type": {"NOTAB": 2, "XTAB": 1}, "pfn": ["0x10-0x11", "0x20"]},
                "pages": {"length": 8192, "pages": 2},
            })
        );

        let info = libxc::X86PvInfo {
            guest_width: 8,
            pt_levels: 4,
            ..Default::default()
        };
        assert_eq!(
            text(&info),
            "guest_width=8 pt_levels=4 reserved=000000000000"
        );

        let unknown = libxc::Record::Unknown {
            record_type: 0x8000_7777,
            body: &[1, 2, 3],
        };
        assert_eq!(text(&unknown), "body=<3 octets>");
    }
}
