//! The real Xen images of `tests/vectors/real/` restored into simulated domains (issue 5):
//! each restores (the PV image with its page tables localised against the simulated p2m; the
//! Remus capture failing over to its last complete checkpoint), and saving the restored
//! domain again yields a stream with the same pages (per pfn: type and, for data pages, the
//! normalised bytes), the same vcpu, TSC, HVM context and HVM params records.
//!
//! Run in release mode: `cargo test -p xenmig-tests --release --test restore_real`.

mod support;

use std::collections::BTreeMap;
use support::*;
use xenmig::domain::{GuestType, PageType};
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::save::{SaveOptions, StreamType};
use xenmig::wire::Strictness;
use xenmig::x86::{PvLayout, StartInfo};
use xenmig::{libxc, Layer};
use xenmig_tests::{manifest, read_vector, vectors_dir};

/// What an image leaves a restorer with: the latest copy of each pfn and of each record the
/// comparison covers.
#[derive(Default)]
struct Image<'a> {
    guest: Option<GuestType>,
    width: Option<u8>,
    /// pfn → (type, page octets when the type carries data).
    pages: BTreeMap<u64, (PageType, Option<&'a [u8]>)>,
    /// (vcpu, record type) → context (without the vcpu header).
    vcpus: BTreeMap<(u32, u32), &'a [u8]>,
    tsc: Option<&'a [u8]>,
    hvm_context: Option<&'a [u8]>,
    hvm_params: Option<BTreeMap<u64, u64>>,
    p2m_frames: Option<&'a [u8]>,
    pv_info: Option<&'a [u8]>,
    cpuid: Option<&'a [u8]>,
    msr: Option<&'a [u8]>,
    checkpoints: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Reads `bytes` up to the END, or up to the `upto`-th libxc CHECKPOINT.
fn parse(bytes: &[u8], upto: Option<u32>) -> Image<'_> {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let mut img = Image::default();
    loop {
        let item = r.next_item().unwrap_or_else(|e| panic!("cannot read: {e}"));
        let (t, at, len) = match item {
            Item::DomainHeader { header, .. } => {
                img.guest = GuestType::from_domain_type(header.r#type);
                continue;
            }
            Item::Record(rec) if rec.layer == Layer::Libxc => {
                (rec.record_type, rec.body_offset() as usize, rec.body.len())
            }
            Item::Eof { .. } => break,
            _ => continue,
        };
        let body: &[u8] = &bytes[at..at + len];
        match t {
            libxc::End::TYPE => break,
            libxc::Checkpoint::TYPE => {
                img.checkpoints += 1;
                if Some(img.checkpoints) == upto {
                    break;
                }
            }
            libxc::PageData::TYPE => {
                let count = u32_at(body, 0) as usize;
                let mut data = 8 + 8 * count;
                for i in 0..count {
                    let e = libxc::PageEntry(u64_at(body, 8 + 8 * i));
                    let page = if e.page_type().has_data() {
                        data += 4096;
                        Some(&body[data - 4096..data])
                    } else {
                        None
                    };
                    img.pages.insert(e.pfn(), (e.page_type(), page));
                }
            }
            libxc::X86PvInfo::TYPE => {
                img.width = Some(body[0]);
                img.pv_info = Some(body);
            }
            libxc::X86PvP2mFrames::TYPE => img.p2m_frames = Some(body),
            // An empty payload is skipped by the restorer (errata), so it is left out.
            libxc::X86PvVcpuBasic::TYPE
            | libxc::X86PvVcpuExtended::TYPE
            | libxc::X86PvVcpuXsave::TYPE
            | libxc::X86PvVcpuMsrs::TYPE
                if body.len() > 8 =>
            {
                img.vcpus.insert((u32_at(body, 0), t), &body[8..]);
            }
            libxc::X86TscInfo::TYPE => img.tsc = Some(body),
            libxc::HvmContext::TYPE => img.hvm_context = Some(body),
            libxc::HvmParams::TYPE => {
                let count = u32_at(body, 0) as usize;
                img.hvm_params = Some(
                    (0..count)
                        .map(|i| (u64_at(body, 8 + 16 * i), u64_at(body, 16 + 16 * i)))
                        .filter(|&(_, v)| v != 0)
                        .collect(),
                );
            }
            libxc::X86CpuidPolicy::TYPE => img.cpuid = Some(body),
            libxc::X86MsrPolicy::TYPE => img.msr = Some(body),
            _ => {}
        }
    }
    img
}

/// A page as the comparison sees it (both sides alike; page tables are already in pfn form
/// on the wire):
/// - PV p2m frames hold machine frames, which differ between any two hosts: each valid entry
///   becomes the pfn it describes (its index), invalid ones stay all ones;
/// - PV start_info: the fields Xen's restorer sets from the new domain (nr_pages, the
///   shared info address, flags, the store and console event channels) are zeroed;
/// - HVM ring pages (the pfns of STORE_PFN, CONSOLE_PFN, IOREQ_PFN, BUFIOREQ_PFN) are
///   cleared by the restorer, as Xen's does, so they compare as zeros.
fn normalised(img: &Image<'_>, pfn: u64, page: &[u8]) -> Vec<u8> {
    let mut p = page.to_vec();
    if let Some(frames) = img.p2m_frames {
        let width = img.width.unwrap_or(8) as usize;
        let per_frame = 4096 / width;
        let start = u32_at(frames, 0) as usize;
        let mut k = (start / per_frame) * per_frame;
        for f in frames[8..].chunks_exact(8) {
            if u64_at(f, 0) == pfn {
                for (i, e) in p.chunks_exact_mut(width).enumerate() {
                    if e.iter().any(|&b| b != 0xff) {
                        let index = (k + i) as u64;
                        e.copy_from_slice(&index.to_le_bytes()[..width]);
                    }
                }
            }
            k += per_frame;
        }
    }
    if let (Some(width), Some(basic)) =
        (img.width, img.vcpus.get(&(0, libxc::X86PvVcpuBasic::TYPE)))
    {
        let l = PvLayout::for_width(width).expect("a PV width");
        if l.get(basic, l.edx) == Some(pfn) {
            let si = StartInfo::for_width(width);
            for (off, len) in [
                (si.nr_pages, l.width),
                (si.shared_info, l.width),
                (si.flags, 4),
                (si.store_evtchn, 4),
                (si.console_evtchn, 4),
            ] {
                p[off..off + len].fill(0);
            }
        }
    }
    if let Some(params) = &img.hvm_params {
        use libxc::HvmParamIndex as P;
        for ring in [P::STORE_PFN, P::CONSOLE_PFN, P::IOREQ_PFN, P::BUFIOREQ_PFN] {
            if params.get(&ring.0) == Some(&pfn) {
                p.fill(0);
            }
        }
    }
    p
}

struct Diff {
    kind: &'static str,
    detail: String,
}

fn compare(a: &Image<'_>, b: &Image<'_>) -> Vec<Diff> {
    let mut d = Vec::new();
    let mut push = |kind, detail: String| d.push(Diff { kind, detail });
    if a.guest != b.guest {
        push("guest", format!("{:?} vs {:?}", a.guest, b.guest));
    }
    for (pfn, (ta, pa)) in &a.pages {
        match b.pages.get(pfn) {
            None => push(
                "pfn missing",
                format!("pfn {pfn:#x} ({ta}) not in the re-save"),
            ),
            Some((tb, pb)) => {
                if ta != tb {
                    push("page type", format!("pfn {pfn:#x}: {ta} vs {tb}"));
                } else if let (Some(pa), Some(pb)) = (pa, pb) {
                    if normalised(a, *pfn, pa) != normalised(b, *pfn, pb) {
                        push("page data", format!("pfn {pfn:#x} ({ta})"));
                    }
                }
            }
        }
    }
    for (pfn, (tb, _)) in &b.pages {
        if !a.pages.contains_key(pfn) {
            push(
                "pfn extra",
                format!("pfn {pfn:#x} ({tb}) only in the re-save"),
            );
        }
    }
    let keys: std::collections::BTreeSet<_> = a.vcpus.keys().chain(b.vcpus.keys()).collect();
    for k in keys {
        if a.vcpus.get(k) != b.vcpus.get(k) {
            push(
                "vcpu",
                format!(
                    "vcpu {} record {:#x}: {:?} vs {:?} octets",
                    k.0,
                    k.1,
                    a.vcpus.get(k).map(|v| v.len()),
                    b.vcpus.get(k).map(|v| v.len())
                ),
            );
        }
    }
    for (what, x, y) in [
        ("tsc", a.tsc, b.tsc),
        ("hvm context", a.hvm_context, b.hvm_context),
        ("pv info", a.pv_info, b.pv_info),
        ("p2m frames", a.p2m_frames, b.p2m_frames),
        ("cpuid", a.cpuid, b.cpuid),
        ("msr", a.msr, b.msr),
    ] {
        if x != y {
            push(
                "record",
                format!(
                    "{what}: {:?} vs {:?}",
                    x.map(|v| v.len()),
                    y.map(|v| v.len())
                ),
            );
        }
    }
    if a.hvm_params != b.hvm_params {
        push(
            "hvm params",
            format!("{:?} vs {:?}", a.hvm_params, b.hvm_params),
        );
    }
    d
}

fn summary(diffs: &[Diff]) -> String {
    let mut by_kind: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for x in diffs {
        by_kind.entry(x.kind).or_default().push(&x.detail);
    }
    by_kind
        .iter()
        .map(|(k, v)| format!("{k}: {} (e.g. {:?})", v.len(), &v[..v.len().min(4)]))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Restores the manifest's image `name`, saves the result again and compares.
fn restore_and_save_again(name: &str) {
    let dir = vectors_dir().join("real");
    let rows = manifest(&dir.join("manifest.tsv"));
    let row = rows
        .iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("{name} is not in the manifest"));
    let bytes = read_vector(&dir.join(&row[1]));
    let checkpoints: u32 = row[9].parse().unwrap();
    let data_pages: u64 = row[8].parse().unwrap();
    let stream_type = if checkpoints > 0 {
        StreamType::Remus
    } else {
        StreamType::Plain
    };
    let (mut dom, result) =
        restore(&bytes, stream_type).unwrap_or_else(|e| panic!("{name}: restore failed: {e}"));
    assert_eq!(result.verify_mismatches, 0, "{name}");
    if checkpoints > 0 {
        // The capture breaks inside the checkpoint after the last complete one.
        assert!(result.failed_over, "{name}: {result:?}");
        assert_eq!(result.checkpoints, checkpoints, "{name}: {result:?}");
        assert!(
            result.pages < data_pages,
            "{name}: the partial checkpoint was applied"
        );
    } else {
        assert!(!result.failed_over && result.checkpoints == 0, "{name}");
        assert_eq!(result.pages, data_pages, "{name}: every data page written");
    }
    let a = parse(&bytes, (checkpoints > 0).then_some(checkpoints));
    assert_eq!(a.checkpoints, checkpoints, "{name}");
    if a.guest == Some(GuestType::X86Pv) {
        // Page tables were localised: they name the simulated domain's own frames, which
        // are not the pfns the stream carries.
        dom.check_page_tables()
            .unwrap_or_else(|e| panic!("{name}: restored page tables: {e}"));
        // Every table with a present entry was rewritten pfn → mfn.
        let (mut tables, mut localised) = (0, 0);
        for (pfn, (t, page)) in &a.pages {
            let Some(page) = page.filter(|_| (1..=4).contains(&(t.0 & 7))) else {
                continue;
            };
            if page.chunks_exact(8).all(|e| e[0] & 1 == 0) {
                continue;
            }
            tables += 1;
            let here = dom.page(*pfn).expect("a restored table");
            if page != &here[..] {
                localised += 1;
            }
        }
        assert!(
            tables > 0 && localised == tables,
            "{name}: {localised} of {tables} tables localised"
        );
    }

    // Save the restored domain again.
    let mut cb = SaveCb::new();
    let (_, again) = save_to_vec(&mut dom, &mut cb, SaveOptions::default());
    assert_verifies(&again, name);
    let b = parse(&again, None);
    let diffs = compare(&a, &b);
    assert!(
        diffs.is_empty(),
        "{name}: the re-saved stream differs: {}",
        summary(&diffs)
    );
    assert_eq!(a.pages.len(), b.pages.len(), "{name}");
    assert!(
        a.hvm_context.is_some() == (a.guest == Some(GuestType::X86Hvm)),
        "{name}"
    );

    if checkpoints > 0 {
        // The comparison tells the checkpoint apart from the partial one after it.
        let whole = parse(&bytes, None);
        assert!(
            compare(&whole, &b).iter().any(|d| d.kind == "page data"),
            "{name}: the partial checkpoint changes no page"
        );
    }

    // And the re-saved stream restores to the same state.
    let (dom2, _) = restore(&again, StreamType::Plain).unwrap();
    assert_eq!(
        dom2.state_digest_hex(),
        cb.digest_at_suspend.clone().unwrap(),
        "{name}: the re-saved stream restores to another state"
    );
}

#[test]
fn pv64_save_restores_and_saves_again_equal() {
    restore_and_save_again("pv64-save");
}

#[test]
fn hvm64_save_restores_and_saves_again_equal() {
    restore_and_save_again("hvm64-save");
}

#[test]
fn hvm64_remus_fails_over_to_checkpoint_3_and_saves_again_equal() {
    restore_and_save_again("hvm64-remus");
}

#[test]
fn the_manifest_lists_exactly_these_images() {
    let dir = vectors_dir().join("real");
    let names: Vec<String> = manifest(&dir.join("manifest.tsv"))
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(names, ["pv64-save", "hvm64-save", "hvm64-remus"]);
}
