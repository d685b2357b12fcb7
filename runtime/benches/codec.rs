//! Codec and verifier throughput, each group with a memcpy of the same octets measured in the
//! same run as the machine's own limit (`cargo xtask bench` prints the ratios):
//!
//! - `page_data_decode`: decoding PAGE_DATA bodies of 1024 and 8 entries (entries checked,
//!   page octets never touched);
//! - `page_data_encode`: framing the same records through the writer into a `Vec` and into
//!   `io::sink()` (the cost of encoding alone);
//! - `stream_64MiB`: verifying an in-memory 64 MiB stream as a slice (zero-copy, what a
//!   memory-mapped file gets) and through `Read` (copied through the reader's buffer, what a
//!   pipe gets).
//!
//! `cargo bench -p xenmig --bench codec`

#[path = "../examples/gen_stream/synth.rs"]
mod synth;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use synth::{Guest, Synth};
use xenmig::reader::{Framing, Reader, ReaderOptions};
use xenmig::wire::{Array, DecodeCtx, Endian};
use xenmig::writer::StreamWriter;
use xenmig::{libxc, verify_reader, verify_slice, VerifyOptions};

const BATCHES: [usize; 2] = [1024, 8];
const PAGE: usize = 4096;

/// A batch's entries and page contents (non-zero, distinct per page).
fn batch(n: usize) -> (Vec<libxc::PageEntry>, Vec<u8>) {
    let entries = (0..n as u64)
        .map(|pfn| libxc::PageEntry::default().with_pfn(pfn + 0x1000))
        .collect();
    let pages = (0..n * PAGE)
        .map(|i| (i / PAGE) as u8 ^ (i as u8) | 1)
        .collect();
    (entries, pages)
}

/// Copies `src` into `dst`: the baseline of each group.
fn memcpy(dst: &mut [u8], src: &[u8]) {
    dst.copy_from_slice(black_box(src));
    black_box(dst);
}

fn page_data_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("page_data_decode");
    let ctx = DecodeCtx::new(libxc::VERSION_WRITTEN);
    for n in BATCHES {
        let (entries, pages) = batch(n);
        let body = libxc::PageData {
            reserved: 0,
            entries: Array::Values(&entries),
            pages: &pages,
        }
        .encode(Endian::Little)
        .expect("a valid batch encodes");
        g.throughput(Throughput::Bytes(body.len() as u64));
        let mut dst = vec![0u8; body.len()];
        g.bench_with_input(BenchmarkId::new("memcpy", n), &body, |b, body| {
            b.iter(|| memcpy(&mut dst, body))
        });
        g.bench_with_input(BenchmarkId::new("decode", n), &body, |b, body| {
            b.iter(|| {
                let p = libxc::PageData::decode(black_box(body), &ctx).expect("valid");
                black_box(p.entries.len());
            })
        });
    }
    g.finish();
}

fn page_data_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("page_data_encode");
    for n in BATCHES {
        let (entries, pages) = batch(n);
        let record = libxc::Record::PageData(libxc::PageData {
            reserved: 0,
            entries: Array::Values(&entries),
            pages: &pages,
        });
        let mut framed = StreamWriter::new(Vec::new());
        framed.libxc(&record).expect("a valid batch encodes");
        let framed = framed.into_inner();
        g.throughput(Throughput::Bytes(framed.len() as u64));
        let mut dst = vec![0u8; framed.len()];
        g.bench_function(BenchmarkId::new("memcpy", n), |b| {
            b.iter(|| memcpy(&mut dst, &framed))
        });
        let mut to_vec = StreamWriter::new(Vec::with_capacity(framed.len()));
        g.bench_function(BenchmarkId::new("writer_vec", n), |b| {
            b.iter(|| {
                to_vec.get_mut().clear();
                to_vec.libxc(black_box(&record)).expect("encodes");
                black_box(to_vec.get_ref().len());
            })
        });
        let mut to_sink = StreamWriter::new(std::io::sink());
        g.bench_function(BenchmarkId::new("writer_sink", n), |b| {
            b.iter(|| to_sink.libxc(black_box(&record)).expect("encodes"))
        });
    }
    g.finish();
}

fn stream_64mib(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream_64MiB");
    g.sample_size(20);
    for n in BATCHES {
        let s = Synth {
            size: 64 << 20,
            batch: n,
            guest: Guest::Hvm,
            framing: Framing::Libxl,
        };
        let mut stream = Vec::with_capacity(s.size as usize);
        synth::write_stream(&mut stream, &s).expect("the generator writes");
        g.throughput(Throughput::Bytes(stream.len() as u64));
        let mut dst = vec![0u8; stream.len()];
        g.bench_function(BenchmarkId::new("memcpy", n), |b| {
            b.iter(|| memcpy(&mut dst, &stream))
        });
        g.bench_function(BenchmarkId::new("verify_slice", n), |b| {
            b.iter(|| {
                let r = verify_slice(black_box(&stream), VerifyOptions::default(), &mut |_| {});
                assert!(r.valid);
            })
        });
        g.bench_function(BenchmarkId::new("verify_read", n), |b| {
            b.iter(|| {
                let mut reader =
                    Reader::from_read(black_box(&stream[..]), ReaderOptions::default());
                let r = verify_reader(&mut reader, VerifyOptions::default(), &mut |_| {});
                assert!(r.valid);
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = page_data_decode, page_data_encode, stream_64mib
}
criterion_main!(benches);
