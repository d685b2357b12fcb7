//! `xenmig convert-legacy` and `convert-legacy-stream` run as their callers run them, against
//! the shared vectors: every `convert` row byte for byte through paths, detection, inherited
//! descriptors, stdin/stdout and the reference's own name and spelling; every output accepted
//! by `xenmig verify`; malformed inputs (made by editing the vectors) rejected with exit 1, the
//! offset and the problem, and no output file left behind; unsupported chunks exit 2.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

fn xenmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenmig"))
}

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {:?}", out.status))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One `convert` row of the manifest.
struct Row {
    name: String,
    input: PathBuf,
    flags: Vec<String>,
    expected: Vec<u8>,
}

impl Row {
    fn flag(&self, f: &str) -> Option<&str> {
        let at = self.flags.iter().position(|x| x == f)?;
        self.flags.get(at + 1).map(String::as_str)
    }

    fn width(&self) -> usize {
        match self.flag("-w") {
            Some("32") => 4,
            _ => 8,
        }
    }

    fn pv(&self) -> bool {
        self.flag("-g") == Some("pv")
    }

    fn xl(&self) -> bool {
        self.flags.iter().any(|f| f == "-x")
    }

    fn libxl(&self) -> bool {
        self.flag("-f") == Some("libxl")
    }

    /// The framing `xenmig verify -f` reads the output with.
    fn framing(&self) -> &'static str {
        match (self.xl(), self.libxl()) {
            (true, _) => "xl",
            (false, true) => "libxl",
            (false, false) => "libxc",
        }
    }

    /// The row's flags without `-w` and `-g` (and optionally `-x`): left to detection.
    fn detected_flags(&self, keep_xl: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut it = self.flags.iter();
        while let Some(f) = it.next() {
            match f.as_str() {
                "-w" | "-g" => {
                    it.next();
                }
                "-x" if !keep_xl => {}
                _ => out.push(f.clone()),
            }
        }
        out
    }

    /// The row's flags in the long spelling libxl uses (`--width 64 --guest hvm ...`).
    fn long_flags(&self) -> Vec<String> {
        self.flags
            .iter()
            .map(|f| {
                match f.as_str() {
                    "-w" => "--width",
                    "-g" => "--guest",
                    "-f" => "--format",
                    "-x" => "--xl",
                    other => other,
                }
                .to_string()
            })
            .collect()
    }
}

fn rows() -> Vec<Row> {
    let dir = vectors();
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
    let rows: Vec<Row> = manifest
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c.first() == Some(&"convert"))
        .map(|c| Row {
            name: c[1].to_string(),
            input: dir.join(c[2]),
            flags: c[3].split_whitespace().map(str::to_string).collect(),
            expected: std::fs::read(dir.join(c[4])).expect("expected output"),
        })
        .collect();
    assert_eq!(rows.len(), 16, "convert rows in the manifest");
    rows
}

/// The files in `dir`, by name.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `xenmig convert-legacy FLAGS -i IN -o OUT`.
fn convert(flags: &[String], input: &Path, output: &Path) -> Output {
    xenmig()
        .arg("convert-legacy")
        .args(flags)
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(output)
        .output()
        .expect("run xenmig")
}

fn assert_converted(row: &Row, out: &Output, produced: &[u8], how: &str) {
    assert_eq!(code(out), 0, "{} ({how}): {}", row.name, text(&out.stderr));
    assert!(
        produced == row.expected,
        "{} ({how}): {} bytes written, {} expected; first difference at {:#x}",
        row.name,
        produced.len(),
        row.expected.len(),
        produced
            .iter()
            .zip(&row.expected)
            .position(|(a, b)| a != b)
            .unwrap_or(produced.len().min(row.expected.len()))
    );
}

fn assert_verifies(row: &Row, path: &Path) {
    let out = xenmig()
        .args(["verify", "-f", row.framing()])
        .arg(path)
        .output()
        .expect("run xenmig verify");
    let bytes = std::fs::read(path).expect("the output");
    if support::xl_config_length_missing(&bytes) {
        // The xl header copied from the input holds its config without the length xl
        // reads: refused as xl refuses it; the stream after it verifies.
        assert_eq!(code(&out), 1, "{}: {}", row.name, text(&out.stdout));
        assert!(
            text(&out.stdout).contains("rule `config.length`"),
            "{}",
            row.name
        );
        let repaired = path.with_extension("repaired");
        std::fs::write(&repaired, support::with_xl_config_length(&bytes)).unwrap();
        assert_verifies(row, &repaired);
        std::fs::remove_file(&repaired).unwrap();
        return;
    }
    assert_eq!(
        code(&out),
        0,
        "{}: xenmig verify: {}",
        row.name,
        text(&out.stdout)
    );
}

#[test]
fn every_row_converts_byte_exact_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    for row in rows() {
        let out_path = dir.path().join(format!("{}.v2", row.name));
        let before = std::fs::read(&row.input).unwrap();
        let out = convert(&row.flags, &row.input, &out_path);
        assert_converted(&row, &out, &std::fs::read(&out_path).unwrap(), "row flags");
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
        assert_verifies(&row, &out_path);
        assert_eq!(std::fs::read(&row.input).unwrap(), before, "input modified");

        // -w and -g detected; then -x detected as well.
        for keep_xl in [true, false] {
            let out = convert(&row.detected_flags(keep_xl), &row.input, &out_path);
            let how = if keep_xl {
                "-w, -g detected"
            } else {
                "-w, -g, -x detected"
            };
            assert_converted(&row, &out, &std::fs::read(&out_path).unwrap(), how);
        }
    }
    // Nothing but the outputs: no temporary files left.
    assert!(listing(dir.path()).iter().all(|n| n.ends_with(".v2")));
}

/// Descriptor numbers the child sees its inherited input and output as.
const CHILD_IN: i32 = 7;
const CHILD_OUT: i32 = 8;

/// Runs `cmd` with `input` and `output` inherited as [`CHILD_IN`] and [`CHILD_OUT`].
fn with_fds(mut cmd: Command, input: &std::fs::File, output: &std::fs::File) -> Output {
    use std::os::fd::AsRawFd;
    let (i, o) = (input.as_raw_fd(), output.as_raw_fd());
    // Safety: only async-signal-safe calls between fork and exec. Both are first moved out of
    // the way (the parent's descriptors may well be 7 or 8 themselves); dup2 then gives the
    // child copies without FD_CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            let i = libc::fcntl(i, libc::F_DUPFD, 100);
            let o = libc::fcntl(o, libc::F_DUPFD, 100);
            if i < 0 || o < 0 || libc::dup2(i, CHILD_IN) < 0 || libc::dup2(o, CHILD_OUT) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(i);
            libc::close(o);
            Ok(())
        });
    }
    cmd.output().expect("run xenmig")
}

#[test]
fn every_row_converts_through_descriptors_and_stdio() {
    let dir = tempfile::tempdir().unwrap();
    for row in rows() {
        // --in 7 --out 8, as libxl calls it.
        let out_path = dir.path().join("fd.v2");
        let input = std::fs::File::open(&row.input).unwrap();
        let output = std::fs::File::create(&out_path).unwrap();
        let mut cmd = xenmig();
        cmd.arg("convert-legacy").args(&row.flags).args([
            "--in",
            &CHILD_IN.to_string(),
            "--out",
            &CHILD_OUT.to_string(),
        ]);
        let out = with_fds(cmd, &input, &output);
        drop(output);
        assert_converted(
            &row,
            &out,
            &std::fs::read(&out_path).unwrap(),
            "descriptors",
        );

        // - and -: stdin and stdout, nothing detected.
        let out = xenmig()
            .arg("convert-legacy")
            .args(row.detected_flags(false))
            .args(["-i", "-", "-o", "-"])
            .stdin(Stdio::from(std::fs::File::open(&row.input).unwrap()))
            .output()
            .expect("run xenmig");
        assert_converted(&row, &out, &out.stdout, "stdin to stdout");

        // Into a pipe: stdout is not a file.
        let out = xenmig()
            .arg("convert-legacy")
            .args(&row.flags)
            .args(["-o", "-", "-i"])
            .arg(&row.input)
            .stdout(Stdio::piped())
            .output()
            .expect("run xenmig");
        assert_converted(&row, &out, &out.stdout, "stdout pipe");
    }
}

#[test]
fn started_as_convert_legacy_stream_it_is_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("convert-legacy-stream");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_xenmig"), &helper).unwrap();
    for row in rows() {
        // libxl's spelling through descriptors: --in FD --out FD --width W --guest G --format F.
        let out_path = dir.path().join("ref.v2");
        let input = std::fs::File::open(&row.input).unwrap();
        let output = std::fs::File::create(&out_path).unwrap();
        let mut cmd = Command::new(&helper);
        cmd.args([
            "--in",
            &CHILD_IN.to_string(),
            "--out",
            &CHILD_OUT.to_string(),
        ])
        .args(row.long_flags());
        let out = with_fds(cmd, &input, &output);
        drop(output);
        assert_converted(
            &row,
            &out,
            &std::fs::read(&out_path).unwrap(),
            "as reference",
        );

        // Short options with paths, and optparse's prefixes of long options.
        let mut cmd = Command::new(&helper);
        cmd.args(&row.flags)
            .arg("-i")
            .arg(&row.input)
            .arg("-o")
            .arg(&out_path);
        let out = cmd.output().unwrap();
        assert_converted(&row, &out, &std::fs::read(&out_path).unwrap(), "short");
        let out = Command::new(&helper)
            .arg(format!("--wid={}", row.width() * 8))
            .arg(format!("--guest-t={}", if row.pv() { "pv" } else { "hvm" }))
            .arg(format!(
                "--form={}",
                if row.libxl() { "libxl" } else { "libxc" }
            ))
            .args(if row.xl() { &["--xl"][..] } else { &[][..] })
            .arg(format!("--in={}", row.input.display()))
            .arg(format!("--out={}", out_path.display()))
            .output()
            .unwrap();
        assert_converted(&row, &out, &std::fs::read(&out_path).unwrap(), "prefixes");
    }

    // Usage as the reference: --in or --out missing is 1, a bad choice is 2, --help is 0.
    let out = Command::new(&helper).args(["--in", "x"]).output().unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let out = Command::new(&helper)
        .args(["-i", "x", "-o", "y", "-g", "windows"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    let out = Command::new(&helper).arg("--help").output().unwrap();
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("--skip-qemu"));
    assert_eq!(listing(dir.path()), ["convert-legacy-stream", "ref.v2"]);
}

#[test]
fn verbose_summarises_and_syslog_keeps_stderr_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let row = rows().into_iter().find(|r| r.libxl() && !r.pv()).unwrap();
    let out_path = dir.path().join("v.v2");
    let mut flags = row.flags.clone();
    flags.push("-v".into());
    let out = convert(&flags, &row.input, &out_path);
    assert_converted(&row, &out, &std::fs::read(&out_path).unwrap(), "verbose");
    let err = text(&out.stderr);
    assert!(
        err.contains("PAGE_DATA records") && err.contains("hvm guest"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{} bytes out", row.expected.len())),
        "{err}"
    );

    // With --syslog, messages (the error here) go to syslog, not to stderr.
    let bad = dir.path().join("bad.legacy");
    std::fs::write(&bad, &std::fs::read(&row.input).unwrap()[..100]).unwrap();
    let out = convert(
        &["--syslog".to_string()],
        &bad,
        &out_path.with_extension("x"),
    );
    assert_eq!(code(&out), 1);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------------------------
// Malformed and unsupported input, made by editing the vectors.

/// Where things are in a legacy stream: enough of a walk to find the chunks.
struct Layout {
    /// Offset of the "vcpu" ext-info block (PV).
    vcpu_block: Option<usize>,
    /// Offset of the ext-info total size (PV).
    ext_info_total: Option<usize>,
    /// (offset, id) of every chunk, the terminating 0 included.
    chunks: Vec<(usize, i32)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    u32_at(b, at) as i32
}

fn ulong_at(b: &[u8], at: usize, width: usize) -> u64 {
    if width == 4 {
        u64::from(u32_at(b, at))
    } else {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
}

fn layout(row: &Row, b: &[u8]) -> Layout {
    let w = row.width();
    let mut pos = if row.xl() {
        48 + u32_at(b, 44) as usize
    } else {
        0
    };
    let p2m_size = ulong_at(b, pos, w);
    pos += w;
    let mut vcpu_block = None;
    let mut ext_info_total = None;
    if row.pv() {
        pos += w;
        ext_info_total = Some(pos);
        let total = u32_at(b, pos) as usize;
        pos += 4;
        let end = pos + total;
        let mut guest_width = 8;
        while pos < end {
            let size = u32_at(b, pos + 4) as usize;
            if &b[pos..pos + 4] == b"vcpu" {
                vcpu_block = Some(pos);
                guest_width = if size == 0x1430 { 8 } else { 4 };
            }
            pos += 8 + size;
        }
        let per_page = 4096 / guest_width;
        pos += (p2m_size as usize).div_ceil(per_page) * w;
    }
    let mut chunks = Vec::new();
    loop {
        let id = i32_at(b, pos);
        chunks.push((pos, id));
        pos += 4;
        match id {
            0 => break,
            n if n > 0 => {
                let entries: Vec<u64> = (0..n as usize)
                    .map(|i| ulong_at(b, pos + i * w, w))
                    .collect();
                let pages = entries
                    .iter()
                    .filter(|&&e| (e & 0xF000_0000) < 0xD000_0000)
                    .count();
                pos += n as usize * w + pages * 4096;
            }
            -2 => pos += 4 + (i32_at(b, pos) as usize / 64 + 1) * 8,
            -7 => pos += 20,
            -18 => pos += 4 + u32_at(b, pos) as usize,
            -1 | -9 => {}
            -3 | -4 | -8 | -10 | -11 | -17..=-14 | -19 | -20 => pos += 12,
            other => panic!("{}: chunk {other} at {pos:#x}", row.name),
        }
    }
    Layout {
        vcpu_block,
        ext_info_total,
        chunks,
    }
}

/// Runs the converter with the row's flags on `input` (written into a fresh directory) and
/// checks the failure: exit `want`, the offset and `problem` in the message, no output file,
/// and the input untouched.
fn assert_rejected(row: &Row, input: &[u8], want: i32, offset: usize, problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let in_path = dir.path().join("in.legacy");
    std::fs::write(&in_path, input).unwrap();
    let out = convert(&row.flags, &in_path, &dir.path().join("out.v2"));
    let err = text(&out.stderr);
    let what = format!("{} ({problem} at {offset:#x})", row.name);
    assert_eq!(code(&out), want, "{what}: {err}");
    assert!(
        err.contains(&format!("offset {offset:#x}:")),
        "{what}: {err}"
    );
    assert!(err.contains(problem), "{what}: {err}");
    assert_eq!(
        listing(dir.path()),
        ["in.legacy"],
        "{what}: output left behind"
    );
    assert_eq!(
        std::fs::read(&in_path).unwrap(),
        input,
        "{what}: input modified"
    );
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn first_batch(l: &Layout) -> usize {
    l.chunks.iter().find(|c| c.1 > 0).expect("a page batch").0
}

#[test]
fn truncated_inputs_fail_with_the_offset_and_leave_no_output() {
    for row in rows() {
        let bytes = std::fs::read(&row.input).unwrap();
        let len = bytes.len();
        let mut cuts: Vec<usize> = (0..len).step_by(len / 23).collect();
        cuts.extend([1, 7, 8, 47, 48, len - 300, len - 22, len - 5, len - 1]);
        let dir = tempfile::tempdir().unwrap();
        let in_path = dir.path().join("in.legacy");
        let out_path = dir.path().join("out.v2");
        for cut in cuts {
            std::fs::write(&in_path, &bytes[..cut]).unwrap();
            let out = convert(&row.flags, &in_path, &out_path);
            let err = text(&out.stderr);
            assert_eq!(code(&out), 1, "{} cut at {cut:#x}: {err}", row.name);
            assert!(
                err.contains("truncated") && err.contains(&format!("offset {cut:#x})")),
                "{} cut at {cut:#x}: {err}",
                row.name
            );
            assert_eq!(listing(dir.path()), ["in.legacy"], "{}", row.name);
        }
    }
}

#[test]
fn malformed_chunks_fail_with_the_offset_and_the_problem() {
    let mut duplicates = 0;
    for row in rows() {
        let bytes = std::fs::read(&row.input).unwrap();
        let l = layout(&row, &bytes);
        let w = row.width();

        // A batch over MAX_BATCH_SIZE.
        let batch = first_batch(&l);
        let mut b = bytes.clone();
        put_u32(&mut b, batch, 1025);
        assert_rejected(&row, &b, 1, batch, "exceeds MAX_BATCH_SIZE 1024");

        // The same pfn twice in a batch.
        let (at, n) = *l.chunks.iter().find(|c| c.1 > 1).expect("a batch of two");
        let mut b = bytes.clone();
        let first = at + 4;
        let second = first + w;
        let entry = b[first..first + w].to_vec();
        // Keep the count of data pages: only take the pfn, keep the second entry's type.
        let pfn = ulong_at(&entry, 0, w) & 0x0FFF_FFFF;
        let ty = ulong_at(&b, second, w) & 0xF000_0000;
        let dup = (pfn | ty).to_le_bytes();
        b[second..second + w].copy_from_slice(&dup[..w]);
        let ty0 = ulong_at(&b, first, w) & 0xF000_0000;
        if ty0 == ty {
            assert_rejected(&row, &b, 1, at, "twice");
            duplicates += 1;
        } else {
            // Different types on the same pfn are two entries to the converter, as to the
            // reference: make the types equal too, when both carry data or neither does.
            let has = |t: u64| t < 0xD000_0000;
            if has(ty0) == has(ty) {
                let dup = (pfn | ty0).to_le_bytes();
                b[second..second + w].copy_from_slice(&dup[..w]);
                assert_rejected(&row, &b, 1, at, "twice");
                duplicates += 1;
            }
        }
        assert!(n > 1);

        // An unknown chunk id in place of the first chunk.
        let (first_chunk, _) = l.chunks[0];
        let mut b = bytes.clone();
        put_u32(&mut b, first_chunk, (-42i32) as u32);
        assert_rejected(&row, &b, 1, first_chunk, "unrecognised chunk id -42");

        // A vcpu id over 4095.
        let (vcpu_info, _) = *l.chunks.iter().find(|c| c.1 == -2).expect("VCPU_INFO");
        let mut b = bytes.clone();
        put_u32(&mut b, vcpu_info + 4, 4096);
        assert_rejected(&row, &b, 1, vcpu_info + 4, "max_vcpu_id 4096 out of range");

        // tmem and compression: unsupported, exit 2.
        for (id, name) in [(-5, "TMEM"), (-6, "TMEM_EXTRA"), (-12, "COMPRESSED_DATA")] {
            let mut b = bytes.clone();
            put_u32(&mut b, first_chunk, id as u32);
            assert_rejected(&row, &b, 2, first_chunk, name);
        }
    }
    assert!(duplicates >= 12, "duplicate-pfn cases run: {duplicates}");
}

#[test]
fn bad_extended_info_sizes_fail_with_the_offset() {
    for row in rows().into_iter().filter(Row::pv) {
        let bytes = std::fs::read(&row.input).unwrap();
        let l = layout(&row, &bytes);
        let vcpu = l.vcpu_block.expect("vcpu block");
        let total = l.ext_info_total.expect("total");

        // A vcpu context size that names no guest width.
        let mut b = bytes.clone();
        put_u32(&mut b, vcpu + 4, 0x800);
        assert_rejected(&row, &b, 1, vcpu, "gives no guest width");

        // A total size too small for the vcpu block.
        let mut b = bytes.clone();
        put_u32(&mut b, total, 16);
        assert_rejected(&row, &b, 1, vcpu, "overruns the total size");

        // A total size that leaves a few bytes, too few for a block header.
        let mut b = bytes.clone();
        let size = u32_at(&bytes, total);
        put_u32(&mut b, total, size + 4);
        let end = total + 4 + size as usize;
        assert_rejected(&row, &b, 1, end, "too few for a block header");
    }
}

#[test]
fn bad_physmap_names_fail_with_the_offset() {
    let mut seen = 0;
    for row in rows().into_iter().filter(Row::libxl) {
        let bytes = std::fs::read(&row.input).unwrap();
        let l = layout(&row, &bytes);
        let Some(&(at, _)) = l.chunks.iter().find(|c| c.1 == -18) else {
            continue;
        };
        seen += 1;
        let blob = at + 8;
        assert_eq!(u32_at(&bytes, blob), 1, "{}: physmap version", row.name);
        let entry = blob + 8;
        let namelen = u32_at(&bytes, entry + 24) as usize;
        let name = entry + 28;

        // The name's NUL replaced.
        let mut b = bytes.clone();
        b[name + namelen - 1] = b'x';
        assert_rejected(&row, &b, 1, name + namelen - 1, "not NUL-terminated");

        // An empty name.
        let mut b = bytes.clone();
        put_u32(&mut b, entry + 24, 0);
        assert_rejected(&row, &b, 1, entry + 24, "empty name");

        // A name running past the blob.
        let mut b = bytes.clone();
        put_u32(&mut b, entry + 24, 0x10000);
        assert_rejected(&row, &b, 1, name, "overruns the blob");
    }
    assert!(seen >= 4, "libxl rows with a physmap chunk: {seen}");
}

#[test]
fn a_failed_conversion_keeps_an_existing_output() {
    let row = rows().into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let in_path = dir.path().join("in.legacy");
    let out_path = dir.path().join("out.v2");
    std::fs::write(&in_path, &std::fs::read(&row.input).unwrap()[..1000]).unwrap();
    std::fs::write(&out_path, b"previous").unwrap();
    let out = convert(&row.flags, &in_path, &out_path);
    assert_eq!(code(&out), 1);
    assert_eq!(std::fs::read(&out_path).unwrap(), b"previous");
    assert_eq!(listing(dir.path()), ["in.legacy", "out.v2"]);

    // The input named as the output too: refused, nothing touched.
    let out = convert(&row.flags, &in_path, &in_path);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&in_path).unwrap().len(), 1000);
}

#[test]
fn an_unknown_qemu_signature_is_unsupported() {
    let mut seen = 0;
    for row in rows().into_iter().filter(|r| !r.pv()) {
        let bytes = std::fs::read(&row.input).unwrap();
        let sig = b"DeviceModelRecord0002";
        let at = bytes
            .windows(sig.len())
            .rposition(|w| w == sig)
            .expect("qemu signature");
        let mut b = bytes.clone();
        b[at..at + sig.len()].copy_from_slice(b"DeviceModelRecord0003");
        assert_rejected(&row, &b, 2, at, "unrecognised qemu signature");
        seen += 1;
    }
    assert_eq!(seen, 8);
}

/// Runs `cmd` with `input` on a pipe as its standard input.
fn with_stdin(mut cmd: Command, input: Vec<u8>) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xenmig");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// `xenmig dump --json ARGS FILE` of a legacy input: one object per line, and the exit status.
fn dump_json(args: &[&str], input: &Path) -> (Vec<serde_json::Value>, i32) {
    let out = xenmig()
        .arg("dump")
        .arg("--json")
        .args(args)
        .arg(input)
        .output()
        .unwrap();
    let lines = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (lines, code(&out))
}

#[test]
fn dump_lists_every_chunk_and_part_of_each_legacy_vector() {
    for row in rows() {
        let bytes = std::fs::read(&row.input).unwrap();
        let l = layout(&row, &bytes);
        // Detected: no v2 header opens the input, or the xl header's STREAMv2 flag is clear.
        let (items, status) = dump_json(&[], &row.input);
        assert_eq!(status, 0, "{}: {items:?}", row.name);
        let (eof, items) = items.split_last().unwrap();
        assert_eq!(eof["name"], "eof", "{}", row.name);
        assert_eq!(eof["offset"], bytes.len() as u64, "{}", row.name);
        // The items follow each other with no gap, from the first octet to the last.
        let mut next = 0;
        for item in items {
            assert_eq!(item["offset"], next, "{}: {item}", row.name);
            assert_eq!(item["layer"], "legacy");
            next += item["length"].as_u64().unwrap();
        }
        assert_eq!(next, bytes.len() as u64, "{}", row.name);

        // The chunks are where the converter's test finds them, with their ids.
        let chunks: Vec<(u64, i64)> = items
            .iter()
            .filter_map(|i| Some((i["offset"].as_u64()?, i["id"].as_i64()?)))
            .collect();
        let want: Vec<(u64, i64)> = l
            .chunks
            .iter()
            .map(|&(at, id)| (at as u64, i64::from(id)))
            .collect();
        assert_eq!(chunks, want, "{}", row.name);

        let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
        let header = items.iter().find(|i| i["name"] == "HEADER").unwrap();
        let header_at = if row.xl() {
            assert_eq!(names[0], "xl_header", "{}", row.name);
            48 + u32_at(&bytes, 44) as usize
        } else {
            0
        };
        assert_eq!(header["offset"], header_at as u64, "{}", row.name);
        assert_eq!(
            header["fields"]["p2m_size"],
            ulong_at(&bytes, header_at, row.width()),
            "{}",
            row.name
        );
        let has = |n: &str| names.contains(&n);
        if row.pv() {
            for part in ["PV_EXT_INFO", "P2M_FRAME_LIST", "PV_UNMAPPED", "PV_VCPU"] {
                assert!(has(part), "{}: {names:?}", row.name);
            }
            assert_eq!(names.last(), Some(&"SHARED_INFO"), "{}", row.name);
            let vcpu = items
                .iter()
                .find(|i| i["name"] == "ext_info_block" && i["fields"]["id"] == "vcpu")
                .unwrap();
            assert_eq!(vcpu["offset"], l.vcpu_block.unwrap() as u64, "{}", row.name);
            let ext = items.iter().find(|i| i["name"] == "PV_EXT_INFO").unwrap();
            let total_at = l.ext_info_total.unwrap();
            assert_eq!(ext["fields"]["total_size"], u32_at(&bytes, total_at));
            // One PV_VCPU per vCPU the VCPU_INFO map names.
            let info = items.iter().find(|i| i["name"] == "VCPU_INFO").unwrap();
            let vcpus: u32 = info["fields"]["vcpu_map"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_u64().unwrap().count_ones())
                .sum();
            let listed = names.iter().filter(|n| **n == "PV_VCPU").count();
            assert_eq!(listed as u32, vcpus, "{}", row.name);
        } else {
            for part in ["hvm_magic_pfns", "HVM_CONTEXT", "QEMU_SIGNATURE"] {
                assert!(has(part), "{}: {names:?}", row.name);
            }
            assert!(!has("PV_VCPU"), "{}", row.name);
            let context = items.iter().find(|i| i["name"] == "HVM_CONTEXT").unwrap();
            let at = context["offset"].as_u64().unwrap() as usize;
            assert_eq!(context["fields"]["length"], u32_at(&bytes, at));
        }
        // A page batch lists its entries; page contents only with --pages.
        let batch = items.iter().find(|i| i["name"] == "PAGE_BATCH").unwrap();
        assert!(batch.get("pages").is_none(), "{}", row.name);
        assert!(batch["fields"]["pfn_types"].is_array(), "{}", row.name);

        // Asked for, with the row's width and guest type: the same listing.
        let mut asked = vec!["--legacy"];
        asked.extend(["-w", row.flag("-w").unwrap(), "-g", row.flag("-g").unwrap()]);
        let (again, status) = dump_json(&asked, &row.input);
        assert_eq!(status, 0, "{}", row.name);
        assert_eq!(&again[..again.len() - 1], items, "{}", row.name);
    }
}

#[test]
fn dump_of_a_legacy_stream_as_text_and_with_pages() {
    let dir = vectors().join("legacy");
    let pv = dir.join("legacy-pv32-s101.legacy");
    let out = xenmig().arg("dump").arg(&pv).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let t = text(&out.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("0x00000000  legacy      #0  HEADER"),
        "{t}"
    );
    assert!(lines[0].ends_with("p2m_size=61"), "{t}");
    assert!(
        t.contains("ext_info_block             len 2808     id=\"vcpu\" size=2800"),
        "{t}"
    );
    assert!(
        t.contains("VCPU_INFO                  len 16       id=-2 max_vcpu_id=3 vcpu_map=[0x9]"),
        "{t}"
    );
    assert!(
        t.contains("PV_UNMAPPED                len 12       count=2 pfns=[0x1c, 0x37]"),
        "{t}"
    );
    assert_eq!(t.matches(" PV_VCPU ").count(), 2, "{t}");
    assert!(lines
        .last()
        .unwrap()
        .starts_with("end of the legacy stream at offset 0x1a28c"));

    // Through a pipe, the same listing.
    let mut cmd = xenmig();
    cmd.args(["dump", "-"]);
    let piped = with_stdin(cmd, std::fs::read(&pv).unwrap());
    assert_eq!(code(&piped), 0);
    assert_eq!(text(&piped.stdout), t);

    // --pages: each data-carrying entry of a batch with its page.
    let hvm = dir.join("legacy-hvm64-s113.legacy");
    let (items, status) = dump_json(&["--pages"], &hvm);
    assert_eq!(status, 0);
    let mut pages = 0;
    for batch in items.iter().filter(|i| i["name"] == "PAGE_BATCH") {
        let with_data = batch["length"].as_u64().unwrap() - 4 - 8 * batch["id"].as_u64().unwrap();
        let listed = batch["pages"].as_array().unwrap();
        assert_eq!(listed.len() as u64 * 4096, with_data, "{batch}");
        for p in listed {
            assert_eq!(p["hex"].as_str().unwrap().len(), 2 * 4096);
            assert!(p["pfn"].is_u64() && p["type"].is_string());
        }
        pages += listed.len();
    }
    assert!(pages > 0);
}

#[test]
fn dump_of_a_cut_legacy_stream_ends_with_the_readers_error() {
    for row in rows().into_iter().step_by(3) {
        let bytes = std::fs::read(&row.input).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut_path = dir.path().join("cut.legacy");
        for cut in [bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            let converted = convert(&row.flags, &cut_path, &dir.path().join("out.v2"));
            assert_eq!(code(&converted), 1);
            let (items, status) = dump_json(&[], &cut_path);
            assert_eq!(status, 1, "{}", row.name);
            let error = &items.last().unwrap()["error"];
            assert_eq!(error["kind"], "truncated", "{}: {error}", row.name);
            // The converter stops with the same error.
            let message = error["message"].as_str().unwrap();
            assert!(
                text(&converted.stderr).contains(message),
                "{}: {message} / {}",
                row.name,
                text(&converted.stderr)
            );
            assert!(message.contains(&format!("offset {cut:#x})")), "{message}");
            let text_out = xenmig().arg("dump").arg(&cut_path).output().unwrap();
            assert_eq!(code(&text_out), 1);
            let last = text(&text_out.stdout);
            let last = last.lines().last().unwrap().to_string();
            assert!(last.starts_with(&format!("ERROR: {message}")), "{last}");
        }
    }
}
