//! Decoded items as named fields, rendered as `name=value` text or as JSON.
//!
//! Each header and record kind is turned into one list of fields here; `dump` prints that list
//! either way, so the text and JSON outputs never disagree. Large byte fields (vCPU contexts,
//! page contents) are given by length; PAGE_DATA is summarised (entry count, page types, runs
//! of consecutive pfns).

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use xenmig::{libxc, libxl, xl};

/// Elements of a list shown in text before it is cut short (JSON always has them all).
const TEXT_LIST_MAX: usize = 16;

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
    List(Vec<Val>),
    Obj(Fields),
    /// Counts or values keyed by names found in the stream.
    Map(Vec<(String, Val)>),
}

/// Named fields, in the order they are shown.
pub type Fields = Vec<(&'static str, Val)>;

impl Val {
    pub fn to_json(&self) -> Value {
        match self {
            Val::Int(v) | Val::Hex(v) => json!(v),
            Val::Name(s) | Val::Str(s) => json!(s),
            Val::Len(n) => json!({ "length": n }),
            Val::List(l) => Value::Array(l.iter().map(Val::to_json).collect()),
            Val::Obj(f) => fields_json(f),
            Val::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

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
pub fn fields_json(fields: &Fields) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        m.insert((*k).to_string(), v.to_json());
    }
    Value::Object(m)
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

/// Names of the set bits of a flags value, reserved bits in hex.
fn flags(value: u64, named: impl Iterator<Item = (u64, &'static str)>) -> Val {
    let mut known = 0u64;
    let mut names = Vec::new();
    for (bit, name) in named {
        known |= bit;
        if bit != 0 && value & bit == bit {
            names.push(Val::Name(name.to_string()));
        }
    }
    let rest = value & !known;
    if rest != 0 {
        names.push(Val::Name(format!("{rest:#x}")));
    }
    Val::List(names)
}

/// Text of a NUL-padded byte string, lossy.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn xl_header(h: &xl::XlHeader, optional_data: &[u8]) -> Fields {
    let mut f: Fields = vec![
        ("magic", Val::Str(text(&h.magic))),
        ("byteorder", Val::Hex(h.byteorder as u64)),
        (
            "mandatory_flags",
            flags(
                h.mandatory_flags.0 as u64,
                xl::XlMandatoryFlags::NAMED
                    .iter()
                    .map(|(b, n)| (b.0 as u64, *n)),
            ),
        ),
        ("optional_flags", Val::Hex(h.optional_flags as u64)),
        ("optional_data_len", Val::Int(h.optional_data_len as u64)),
    ];
    if !optional_data.is_empty() {
        let ctx =
            xenmig::wire::DecodeCtx::new(0).with_strictness(xenmig::wire::Strictness::Lenient);
        if let Ok(d) = xl::XlOptionalData::decode(optional_data, &ctx) {
            f.push(("config", Val::Len(d.config.len())));
        }
    }
    f
}

pub fn libxl_header(h: &libxl::LibxlHeader) -> Fields {
    vec![
        ("ident", Val::Hex(h.ident)),
        ("version", Val::Int(h.version as u64)),
        (
            "options",
            flags(
                h.options.0 as u64,
                libxl::LibxlOptions::NAMED
                    .iter()
                    .map(|(b, n)| (b.0 as u64, *n)),
            ),
        ),
    ]
}

pub fn image_header(h: &libxc::ImageHeader) -> Fields {
    vec![
        ("marker", Val::Hex(h.marker)),
        ("id", Val::Hex(h.id as u64)),
        ("version", Val::Int(h.version as u64)),
        (
            "options",
            flags(
                h.options.0 as u64,
                libxc::ImageOptions::NAMED
                    .iter()
                    .map(|(b, n)| (b.0 as u64, *n)),
            ),
        ),
        ("reserved_1", Val::Hex(h.reserved_1 as u64)),
        ("reserved_2", Val::Hex(h.reserved_2 as u64)),
    ]
}

pub fn domain_header(h: &libxc::DomainHeader) -> Fields {
    vec![
        ("type", Val::Name(h.r#type.to_string())),
        ("page_shift", Val::Int(h.page_shift as u64)),
        ("reserved", Val::Hex(h.reserved as u64)),
        ("xen_major", Val::Int(h.xen_major as u64)),
        ("xen_minor", Val::Int(h.xen_minor as u64)),
    ]
}

/// Runs of consecutive values, in order of appearance: `[0, 1, 2, 7]` gives `(0, 2), (7, 7)`.
pub fn runs(values: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(v) => *last = v,
            _ => out.push((v, v)),
        }
    }
    out
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

fn vcpu(vcpu_id: u32, reserved: u32, context: &[u8]) -> Fields {
    let mut f: Fields = vec![("vcpu_id", Val::Int(vcpu_id as u64))];
    if reserved != 0 {
        f.push(("reserved", Val::Hex(reserved as u64)));
    }
    f.push(("context", Val::Len(context.len())));
    f
}

fn msrs<'a>(entries: impl Iterator<Item = libxc::MsrEntry> + 'a) -> Val {
    Val::List(
        entries
            .map(|m| {
                Val::Obj(vec![
                    ("idx", Val::Hex(m.idx as u64)),
                    ("flags", Val::Hex(m.flags as u64)),
                    ("val", Val::Hex(m.val)),
                ])
            })
            .collect(),
    )
}

/// The fields of a decoded libxc record.
pub fn libxc_record(r: &libxc::Record<'_>) -> Fields {
    use libxc::Record as R;
    match r {
        R::End(_) | R::Verify(_) | R::Checkpoint(_) | R::StaticDataEnd(_) => Vec::new(),
        R::PageData(p) => page_data(p),
        R::X86PvInfo(i) => vec![
            ("guest_width", Val::Int(i.guest_width as u64)),
            ("pt_levels", Val::Int(i.pt_levels as u64)),
        ],
        R::X86PvP2mFrames(p) => vec![
            ("p2m_start_pfn", Val::Hex(p.p2m_start_pfn as u64)),
            ("p2m_end_pfn", Val::Hex(p.p2m_end_pfn as u64)),
            ("frames", Val::Int(p.frame_pfns.len() as u64)),
            (
                "frame_pfns",
                Val::List(p.frame_pfns.iter().map(Val::Hex).collect()),
            ),
        ],
        R::X86PvVcpuBasic(v) => vcpu(v.vcpu_id, v.reserved, v.context),
        R::X86PvVcpuExtended(v) => vcpu(v.vcpu_id, v.reserved, v.context),
        R::X86PvVcpuXsave(v) => vcpu(v.vcpu_id, v.reserved, v.context),
        R::SharedInfo(s) => vec![("shared_info", Val::Len(s.shared_info.len()))],
        R::X86TscInfo(t) => vec![
            ("mode", Val::Int(t.mode as u64)),
            ("khz", Val::Int(t.khz as u64)),
            ("nsec", Val::Int(t.nsec)),
            ("incarnation", Val::Int(t.incarnation as u64)),
        ],
        R::HvmContext(c) => vec![("context", Val::Len(c.context.len()))],
        R::HvmParams(p) => vec![
            ("count", Val::Int(p.params.len() as u64)),
            (
                "params",
                Val::List(
                    p.params
                        .iter()
                        .map(|hp| {
                            Val::Obj(vec![
                                ("index", Val::Name(hp.index.to_string())),
                                ("value", Val::Hex(hp.value)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ],
        R::Toolstack(t) => vec![("data", Val::Len(t.data.len()))],
        R::X86PvVcpuMsrs(m) => vec![
            ("vcpu_id", Val::Int(m.vcpu_id as u64)),
            ("count", Val::Int(m.msrs.len() as u64)),
            ("msrs", msrs(m.msrs.iter())),
        ],
        R::CheckpointDirtyPfnList(d) => vec![
            ("count", Val::Int(d.pfns.len() as u64)),
            ("pfn_runs", runs_val(&runs(d.pfns.iter()))),
        ],
        R::X86CpuidPolicy(c) => vec![
            ("count", Val::Int(c.leaves.len() as u64)),
            (
                "leaves",
                Val::List(
                    c.leaves
                        .iter()
                        .map(|l| {
                            Val::Obj(vec![
                                ("leaf", Val::Hex(l.leaf as u64)),
                                ("subleaf", Val::Hex(l.subleaf as u64)),
                                ("a", Val::Hex(l.a as u64)),
                                ("b", Val::Hex(l.b as u64)),
                                ("c", Val::Hex(l.c as u64)),
                                ("d", Val::Hex(l.d as u64)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ],
        R::X86MsrPolicy(m) => vec![
            ("count", Val::Int(m.entries.len() as u64)),
            ("entries", msrs(m.entries.iter())),
        ],
        R::Unknown { body, .. } => vec![("body", Val::Len(body.len()))],
    }
}

fn page_data(p: &libxc::PageData<'_>) -> Fields {
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for e in p.entries.iter() {
        *by_type.entry(e.page_type().to_string()).or_insert(0) += 1;
    }
    let mut f: Fields = vec![("count", Val::Int(p.entries.len() as u64))];
    if p.reserved != 0 {
        f.push(("reserved", Val::Hex(p.reserved as u64)));
    }
    f.push((
        "data_pages",
        Val::Int((p.pages.len() / xenmig::limits::PAGE_SIZE) as u64),
    ));
    f.push((
        "types",
        Val::Map(by_type.into_iter().map(|(k, n)| (k, Val::Int(n))).collect()),
    ));
    f.push((
        "pfn_runs",
        runs_val(&runs(p.entries.iter().map(|e| e.pfn()))),
    ));
    f
}

/// The fields of a decoded libxl record.
pub fn libxl_record(r: &libxl::Record<'_>) -> Fields {
    use libxl::Record as R;
    match r {
        R::End(_) | R::LibxcContext(_) | R::CheckpointEnd(_) => Vec::new(),
        R::EmulatorXenstoreData(x) => vec![
            ("emulator_id", Val::Name(x.emulator_id.to_string())),
            ("index", Val::Int(x.index as u64)),
            (
                "entries",
                Val::List(
                    x.entries
                        .pairs()
                        .map(|(k, v)| {
                            let mut kv = vec![("key", Val::Str(text(k)))];
                            if let Some(v) = v {
                                kv.push(("value", Val::Str(text(v))));
                            }
                            Val::Obj(kv)
                        })
                        .collect(),
                ),
            ),
        ],
        R::EmulatorContext(c) => vec![
            ("emulator_id", Val::Name(c.emulator_id.to_string())),
            ("index", Val::Int(c.index as u64)),
            ("context", Val::Len(c.context.len())),
        ],
        R::CheckpointState(s) => vec![("control_id", Val::Name(s.control_id.to_string()))],
        R::Unknown { body, .. } => vec![("body", Val::Len(body.len()))],
    }
}

/// Octets as hexdump lines (offset, 16 octets in hex, their ASCII), a run of identical lines
/// collapsed to `*` as hexdump does. Each line starts with `indent`.
pub fn hexdump(bytes: &[u8], indent: &str, out: &mut String) {
    let mut previous: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in bytes.chunks(16).enumerate() {
        if previous == Some(line) && line.len() == 16 {
            if !starred {
                out.push_str(indent);
                out.push_str("*\n");
                starred = true;
            }
            continue;
        }
        previous = Some(line);
        starred = false;
        let _ = write!(out, "{indent}{:08x} ", i * 16);
        for j in 0..16 {
            if j == 8 {
                out.push(' ');
            }
            match line.get(j) {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        for b in line {
            out.push(if b.is_ascii_graphic() || *b == b' ' {
                *b as char
            } else {
                '.'
            });
        }
        out.push_str("|\n");
    }
    if starred {
        let _ = writeln!(out, "{indent}{:08x}", bytes.len());
    }
}

/// Octets as one lowercase hex string.
pub fn hex_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_consecutive_pfns() {
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
    fn hexdump_collapses_repeated_lines() {
        let mut out = String::new();
        hexdump(&[0u8; 64], "", &mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[1], "*");
        assert_eq!(lines[2], "00000040");
    }

    #[test]
    fn text_and_json_agree() {
        let f: Fields = vec![
            ("a", Val::Hex(255)),
            ("b", Val::List(vec![Val::Int(1), Val::Int(2)])),
            ("c", Val::Len(3)),
        ];
        let mut s = String::new();
        write_fields(&f, " ", &mut s);
        assert_eq!(s, "a=0xff b=[1, 2] c=<3 octets>");
        assert_eq!(
            fields_json(&f),
            json!({"a": 255, "b": [1, 2], "c": {"length": 3}})
        );
    }
}
