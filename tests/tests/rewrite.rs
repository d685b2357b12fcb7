//! Reading a stream with the reader and writing every item back with the writer (records
//! decoded by the generated codecs and encoded again) gives the input, byte for byte.

use std::io::Read;
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::source::Source;
use xenmig::writer::StreamWriter;
use xenmig::Layer;
use xenmig_tests::{manifest, read_vector, vectors_dir};

fn rewrite<S: Source>(mut r: Reader<S>) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    loop {
        match r.next_item().unwrap() {
            Item::XlHeader {
                header,
                optional_data,
                ..
            } => w.xl_header(&header, optional_data).unwrap(),
            Item::LibxlHeader { header, .. } => w.libxl_header(&header).unwrap(),
            Item::ImageHeader { header, .. } => w.image_header(&header).unwrap(),
            Item::DomainHeader { header, .. } => w.domain_header(&header).unwrap(),
            Item::Record(rec) => match rec.layer {
                Layer::Libxl => w.libxl(&rec.libxl().unwrap()).unwrap(),
                _ => w.libxc(&rec.libxc().unwrap()).unwrap(),
            },
            Item::Trailing { data, .. } => w.raw(data).unwrap(),
            Item::Eof { .. } => break,
        }
    }
    w.into_inner()
}

fn all_valid_vectors() -> Vec<(String, Vec<u8>)> {
    let dir = vectors_dir();
    let mut out = Vec::new();
    for row in manifest(&dir.join("manifest.tsv")) {
        match row[0].as_str() {
            "verify" if row[4] == "pass" => {
                out.push((row[1].clone(), read_vector(&dir.join(&row[2]))))
            }
            "convert" => out.push((row[1].clone(), read_vector(&dir.join(&row[4])))),
            _ => {}
        }
    }
    for row in manifest(&dir.join("real/manifest.tsv")) {
        out.push((row[0].clone(), read_vector(&dir.join("real").join(&row[1]))));
    }
    out
}

#[test]
fn every_vector_rewrites_to_identical_bytes() {
    let vectors = all_valid_vectors();
    assert_eq!(vectors.len(), 31);
    for (name, bytes) in &vectors {
        let from_slice = rewrite(Reader::from_slice(bytes, ReaderOptions::default()));
        assert!(from_slice == *bytes, "{name}: slice reader rewrite differs");
        if bytes.len() < 4 << 20 {
            // A reader that hands out odd-sized chunks, through the bounded Read path.
            struct Chunky<'a>(&'a [u8], usize);
            impl Read for Chunky<'_> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    self.1 = self.1 % 4093 + 1;
                    let n = buf.len().min(self.1).min(self.0.len());
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let from_read = rewrite(Reader::from_read(
                Chunky(bytes, 0),
                ReaderOptions::default(),
            ));
            assert!(from_read == *bytes, "{name}: Read reader rewrite differs");
        }
    }
}
