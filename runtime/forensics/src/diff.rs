//! What changed between two images of a guest (two saves, or two checkpoints of one stream):
//! frames added, removed and changed, and for each state record whether it is new, gone,
//! the same or changed, with the changed fields named from the generated walk.

use crate::index::PageIndex;
use crate::memory::GuestMemory;
use crate::ForensicsError;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use xenmig_core::limits::PAGE_SIZE;
use xenmig_core::wire::{DecodeCtx, Strictness};
use xenmig_core::{libxc, libxl, render, x86_state, Layer};

/// Changed fields listed per record at most; the rest are counted.
pub const MAX_FIELD_CHANGES: usize = 32;

/// How a record compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Equal in both images.
    Same,
    /// In both images, with different fields.
    Changed,
    /// Only in the second image.
    Added,
    /// Only in the first image.
    Removed,
}

/// One field that differs: its path in the record's walk and both values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// The field's dotted path in the record's walk.
    pub path: String,
    /// The value in the first image.
    pub a: Value,
    /// The value in the second image.
    pub b: Value,
}

/// One state record of either image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordDiff {
    /// The record's name, with its vCPU or emulator id where it has one.
    pub record: String,
    /// How the record compares.
    pub status: Status,
    /// For a changed record, the fields that differ (at most [`MAX_FIELD_CHANGES`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Changed fields beyond those listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_changes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Frames compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageDiff {
    /// Frames in the first image.
    pub pages_a: u64,
    /// Frames in the second image.
    pub pages_b: u64,
    /// Frames in both with equal octets.
    pub same: u64,
    /// Runs of frames (first, last) only in the second image.
    pub added: Vec<(u64, u64)>,
    /// Runs of frames only in the first image.
    pub removed: Vec<(u64, u64)>,
    /// Runs of frames in both whose octets differ.
    pub changed: Vec<(u64, u64)>,
    /// Frames only in the second image.
    pub added_count: u64,
    /// Frames only in the first image.
    pub removed_count: u64,
    /// Frames in both whose octets differ.
    pub changed_count: u64,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageDiff {
    /// How the frames compare.
    pub pages: PageDiff,
    /// How the state records compare, one entry per record of either image.
    pub records: Vec<RecordDiff>,
}

impl ImageDiff {
    /// Whether the images are the same, pages and records.
    pub fn identical(&self) -> bool {
        let p = &self.pages;
        p.added_count == 0
            && p.removed_count == 0
            && p.changed_count == 0
            && self.records.iter().all(|r| r.status == Status::Same)
    }
}

/// A state record as compared: its raw octets and its decoded form.
struct Side {
    bytes: Vec<u8>,
    json: Value,
}

fn lenient(ctx: &DecodeCtx) -> DecodeCtx {
    ctx.with_strictness(Strictness::Lenient)
}

/// Every state record of an image by name, decoded through the generated walk (octets as a
/// hex string where it does not decode).
fn sides(index: &PageIndex) -> BTreeMap<String, Side> {
    let mut out = BTreeMap::new();
    let hex = |b: &[u8]| Value::String(render::hex_string(b));
    for r in index.records() {
        let (name, json) = match r.layer {
            Layer::Libxl => {
                let t = libxl::RecordType::from_u32(r.record_type);
                let j = libxl::Record::decode(r.record_type, &r.body, &lenient(&r.ctx))
                    .map_or_else(|_| hex(&r.body), |d| render::json(&d));
                (format!("libxl {t} (emulator {})", r.key), j)
            }
            _ => {
                let t = libxc::RecordType::from_u32(r.record_type);
                let j = libxc::Record::decode(r.record_type, &r.body, &lenient(&r.ctx))
                    .map_or_else(|_| hex(&r.body), |d| render::json(&d));
                let per_vcpu = matches!(
                    t,
                    libxc::RecordType::X86PvVcpuExtended
                        | libxc::RecordType::X86PvVcpuXsave
                        | libxc::RecordType::X86PvVcpuMsrs
                );
                let name = if per_vcpu {
                    format!("{t} (vcpu {})", r.key)
                } else {
                    t.to_string()
                };
                (name, j)
            }
        };
        out.insert(
            name,
            Side {
                bytes: r.body.clone(),
                json,
            },
        );
    }
    if let Some(c) = index.hvm_context() {
        out.insert(
            "HVM_CONTEXT".into(),
            Side {
                bytes: c.to_vec(),
                json: render::json(&x86_state::Frames::new(c)),
            },
        );
    }
    if let Some(s) = index.shared_info() {
        out.insert(
            "SHARED_INFO".into(),
            Side {
                bytes: s.to_vec(),
                json: hex(s),
            },
        );
    }
    let regs: BTreeMap<u32, &crate::VcpuRegs> = index.vcpus().iter().map(|v| (v.vcpu, v)).collect();
    for (id, ctx) in index.pv_contexts() {
        let json = regs
            .get(id)
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or_else(|| hex(ctx));
        out.insert(
            format!("X86_PV_VCPU_BASIC (vcpu {id})"),
            Side {
                bytes: ctx.clone(),
                json,
            },
        );
    }
    out
}

/// Leaves of two JSON values that differ, by path.
fn json_changes(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_changes(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                // Framed records (an HVM context's save records) are named by type and
                // instance rather than by position.
                let label = match (u.get("record"), u.get("instance")) {
                    (Some(Value::String(r)), Some(n)) => format!("{r}/{n}"),
                    (Some(Value::String(r)), None) => r.clone(),
                    _ => i.to_string(),
                };
                json_changes(&format!("{path}[{label}]"), u, v, out);
            }
        }
        _ if a != b => out.push(FieldChange {
            path: path.to_string(),
            a: a.clone(),
            b: b.clone(),
        }),
        _ => {}
    }
}

/// Compares image `a` (its stream in `mem_a`) with image `b`.
pub fn diff_images(
    mem_a: &GuestMemory<'_>,
    mem_b: &GuestMemory<'_>,
) -> Result<ImageDiff, ForensicsError> {
    let (ia, ib) = (mem_a.index(), mem_b.index());
    let mut p = PageDiff {
        pages_a: ia.pages().len() as u64,
        pages_b: ib.pages().len() as u64,
        ..PageDiff::default()
    };
    let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pa, mut pb) = (vec![0u8; PAGE_SIZE], vec![0u8; PAGE_SIZE]);
    let (mut x, mut y) = (ia.pages().iter().peekable(), ib.pages().iter().peekable());
    loop {
        match (x.peek(), y.peek()) {
            (Some(&&(fa, _)), Some(&&(fb, _))) if fa == fb => {
                mem_a.read_page(fa, &mut pa)?;
                mem_b.read_page(fb, &mut pb)?;
                if pa == pb {
                    p.same += 1;
                } else {
                    changed.push(fa);
                }
                x.next();
                y.next();
            }
            (Some(&&(fa, _)), Some(&&(fb, _))) if fa < fb => {
                removed.push(fa);
                x.next();
            }
            (Some(_), Some(&&(fb, _))) => {
                added.push(fb);
                y.next();
            }
            (Some(&&(fa, _)), None) => {
                removed.push(fa);
                x.next();
            }
            (None, Some(&&(fb, _))) => {
                added.push(fb);
                y.next();
            }
            (None, None) => break,
        }
    }
    p.added_count = added.len() as u64;
    p.removed_count = removed.len() as u64;
    p.changed_count = changed.len() as u64;
    p.added = render::runs(added.into_iter());
    p.removed = render::runs(removed.into_iter());
    p.changed = render::runs(changed.into_iter());

    let (sa, mut sb) = (sides(ia), sides(ib));
    let mut records = Vec::new();
    for (name, a) in sa {
        let Some(b) = sb.remove(&name) else {
            records.push(RecordDiff {
                record: name,
                status: Status::Removed,
                changes: Vec::new(),
                more_changes: 0,
            });
            continue;
        };
        if a.bytes == b.bytes {
            records.push(RecordDiff {
                record: name,
                status: Status::Same,
                changes: Vec::new(),
                more_changes: 0,
            });
            continue;
        }
        let mut changes = Vec::new();
        json_changes("", &a.json, &b.json, &mut changes);
        if changes.is_empty() {
            // The decoded forms agree (they show long octet runs shortened): name where the
            // octets first differ.
            let at = a
                .bytes
                .iter()
                .zip(&b.bytes)
                .position(|(x, y)| x != y)
                .unwrap_or(a.bytes.len().min(b.bytes.len()));
            let around = |v: &[u8]| {
                Value::String(render::hex_string(
                    v.get(at..)
                        .unwrap_or_default()
                        .get(..16)
                        .unwrap_or(v.get(at..).unwrap_or_default()),
                ))
            };
            changes.push(FieldChange {
                path: format!(
                    "octets from {at:#x} (of {} and {})",
                    a.bytes.len(),
                    b.bytes.len()
                ),
                a: around(&a.bytes),
                b: around(&b.bytes),
            });
        }
        let more_changes = changes.len().saturating_sub(MAX_FIELD_CHANGES);
        changes.truncate(MAX_FIELD_CHANGES);
        records.push(RecordDiff {
            record: name,
            status: Status::Changed,
            changes,
            more_changes,
        });
    }
    for (name, _) in sb {
        records.push(RecordDiff {
            record: name,
            status: Status::Added,
            changes: Vec::new(),
            more_changes: 0,
        });
    }
    Ok(ImageDiff { pages: p, records })
}
