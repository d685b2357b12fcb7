//! Writes the seed corpora of the fuzz targets (`cargo xtask fuzz` runs it):
//!
//!     cargo run --release -p xenmig-tests --example fuzz_seeds -- OUT [STREAM_DIR...]
//!
//! `OUT/TARGET/seed-HASH` for each target of `xenmig_tests::fuzz::TARGETS`, made from the
//! repository's vectors (`tests/vectors`: the v2 streams, the converter's expected outputs,
//! the first MiB of each real capture and of the evidence in `tests/data`, the legacy
//! streams, the save helper's captured restores) and from every file in each STREAM_DIR
//! (the streams `xenmig sim save` wrote). Each seed carries the option octets its target
//! reads first (see `tests/src/fuzz.rs`); no seed is longer than [`MAX_SEED`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::wire::Strictness;
use xenmig::{libxc, Layer};
use xenmig_tests::fuzz::{ctx_selector, record_type_selector, TARGETS};
use xenmig_tests::vectors_dir;

/// libFuzzer's `-max_len` in `cargo xtask fuzz`.
const MAX_SEED: usize = 1 << 20;
/// Seeds of one record type, per layer (the first ones found, at most this long).
const RECORDS_PER_TYPE: usize = 6;
const MAX_RECORD_SEED: usize = 64 << 10;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((out, extra)) = args.split_first() else {
        eprintln!("usage: fuzz_seeds OUT [STREAM_DIR...]");
        std::process::exit(2);
    };
    let mut seeds = Seeds::default();
    let v = vectors_dir();
    let mut streams: Vec<(String, Vec<u8>)> = Vec::new();
    for dir in [v.join("streams"), v.join("expected")] {
        for p in files(&dir) {
            streams.push((name(&p), read_capped(&p)));
        }
    }
    let data = v.parent().expect("tests/").join("data");
    for p in files(&v.join("real")).into_iter().chain(files(&data)) {
        if p.extension().is_some_and(|e| e == "zst") {
            streams.push((name(&p), zstd_prefix(&p)));
        }
    }
    for dir in extra {
        for p in files(dir) {
            streams.push((name(&p), read_capped(&p)));
        }
    }
    for (n, s) in &streams {
        seeds.stream(n, s);
    }
    for p in files(&v.join("legacy")) {
        seeds.legacy(&read_capped(&p));
    }
    seeds.records();
    let mut written = 0;
    for t in TARGETS {
        let dir = out.join(t.name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        for s in seeds.by_target.get(t.name).into_iter().flatten() {
            let path = dir.join(format!("seed-{:016x}", fnv(s)));
            if !path.exists() {
                std::fs::write(&path, s)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                written += 1;
            }
        }
        println!(
            "{:<20} {} seeds",
            t.name,
            seeds.by_target.get(t.name).map_or(0, Vec::len)
        );
    }
    println!("{written} new seed files under {}", out.display());
}

#[derive(Default)]
struct Seeds {
    by_target: BTreeMap<&'static str, Vec<Vec<u8>>>,
    /// Record seeds per (layer is libxl, type): option octets, type octet, body.
    records: BTreeMap<(bool, u32), Vec<Vec<u8>>>,
    /// Captured libxl replies to a plain and to a Remus restore.
    replies: Option<(Vec<u8>, Vec<u8>)>,
}

impl Seeds {
    fn add(&mut self, target: &'static str, sel: &[u8], body: &[u8]) {
        let mut s = sel.to_vec();
        let room = MAX_SEED.saturating_sub(s.len());
        s.extend_from_slice(&body[..body.len().min(room)]);
        self.by_target.entry(target).or_default().push(s);
    }

    fn replies(&mut self) -> (Vec<u8>, Vec<u8>) {
        self.replies
            .get_or_insert_with(|| {
                let sh = vectors_dir().join("save-helper");
                let read = |p: PathBuf| std::fs::read(&p).unwrap_or_default();
                (
                    read(sh.join("pv/03-restore/stdin.bin")),
                    read(sh.join("remus-pvh/12-remus-recv/stdin.bin")),
                )
            })
            .clone()
    }

    /// Seeds of every target that reads a v2 stream.
    fn stream(&mut self, name: &str, s: &[u8]) {
        let checkpointed = name.contains("remus");
        self.add("reader", &[0x00], s);
        // Lenient, checked as read, through a Read source fed 4096 octets at a time.
        self.add("reader", &[0xd4], s);
        self.add("verify", &[0x00], s);
        self.add("restore_sim", &[0x01], s);
        if checkpointed {
            self.add("restore_sim", &[0x03], s);
        }
        self.walk(s, checkpointed);
    }

    /// Walks a stream leniently: its xl header, its libxc image for the save helper, and
    /// its records for the decoders.
    fn walk(&mut self, s: &[u8], checkpointed: bool) {
        let mut r = Reader::from_slice(
            s,
            ReaderOptions {
                framing: None,
                strictness: Strictness::Lenient,
            },
        );
        let mut image_at = None;
        let mut hvm = false;
        while let Ok(item) = r.next_item() {
            match item {
                Item::XlHeader {
                    optional_data,
                    offset,
                    ..
                } => {
                    let end = offset as usize + xenmig::xl::XlHeader::SIZE + optional_data.len();
                    self.add("decode_xl", &[0x00], &s[offset as usize..end]);
                }
                Item::LibxlHeader { offset, .. } => {
                    let at = offset as usize;
                    let h = &s[at..at + xenmig::libxl::LibxlHeader::SIZE];
                    self.add("decode_libxl", &[0x00, 0x00], h);
                }
                Item::ImageHeader { offset, .. } => {
                    image_at = Some(offset as usize);
                    let at = offset as usize;
                    self.add("decode_libxc", &[0x05, 0x00], &s[at..at + 24]);
                }
                Item::DomainHeader { offset, header } => {
                    hvm = header.r#type == libxc::DomainType::X86_HVM;
                    let at = offset as usize;
                    self.add("decode_libxc", &[0x04, 0x00], &s[at..at + 16]);
                }
                Item::Record(rec) => {
                    let (Some(c), Some(t)) = (
                        ctx_selector(&rec.ctx),
                        record_type_selector(rec.record_type),
                    ) else {
                        continue;
                    };
                    let key = (rec.layer == Layer::Libxl, rec.record_type);
                    let list = self.records.entry(key).or_default();
                    if list.len() < RECORDS_PER_TYPE && rec.body.len() <= MAX_RECORD_SEED {
                        let mut seed = vec![c, t];
                        seed.extend_from_slice(rec.body);
                        list.push(seed);
                    }
                }
                Item::Trailing { .. } => {}
                Item::Eof { .. } => break,
            }
        }
        if let Some(at) = image_at {
            let (plain, remus) = self.replies();
            let replies = if checkpointed { remus } else { plain };
            let sel = u8::from(hvm) | if checkpointed { 2 } else { 0 };
            let mut head = vec![sel];
            head.extend_from_slice(&(replies.len() as u16).to_le_bytes());
            head.extend_from_slice(&replies);
            self.add("save_helper_restore", &head, &s[at..]);
        }
    }

    fn legacy(&mut self, s: &[u8]) {
        // Everything detected; then libxl output.
        self.add("convert_legacy", &[0x00], s);
        self.add("convert_legacy", &[0x40], s);
    }

    fn records(&mut self) {
        let records = std::mem::take(&mut self.records);
        for ((libxl, _), list) in records {
            let target = if libxl {
                "decode_libxl"
            } else {
                "decode_libxc"
            };
            for seed in list {
                self.add(target, &[], &seed);
            }
        }
    }
}

/// The files of a folder, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| !p.extension().is_some_and(|e| e == "md" || e == "tsv"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn read_capped(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(MAX_SEED as u64).read_to_end(&mut v))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    v
}

/// The first [`MAX_SEED`] octets of a zstd-compressed file.
fn zstd_prefix(p: &Path) -> Vec<u8> {
    let f = std::fs::File::open(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    let mut v = Vec::new();
    zstd::stream::read::Decoder::new(f)
        .and_then(|d| d.take(MAX_SEED as u64).read_to_end(&mut v))
        .unwrap_or_else(|e| panic!("cannot decompress {}: {e}", p.display()));
    v
}

/// FNV-1a, for seed file names.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}
