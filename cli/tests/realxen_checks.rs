//! How `cargo xtask realxen` judges an attempt (realxen/checks.sh, sourced by dom0's init):
//! the same shell functions run here on captured and generated streams, so a harness that
//! would call a garbage stream or a killed helper a pass fails this test instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `script` after sourcing realxen/checks.sh; returns its standard output.
fn checks(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            // dom0's `say` prints on stdout; none of it may reach a verdict.
            "say() {{ echo \"REALXEN $*\"; }}; . '{}'; {script}",
            root().join("realxen/checks.sh").display()
        ))
        .env("XENMIG", env!("CARGO_BIN_EXE_xenmig"))
        .env("OUT", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "xenmig-realxen-checks-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn unzstd(src: &Path, dst: &Path) {
    let bytes = zstd::decode_all(std::fs::File::open(src).unwrap()).unwrap();
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn the_captured_garbage_stream_fails_even_when_the_primary_was_killed() {
    let d = temp("garbage");
    let s = d.join("garbage.stream");
    unzstd(
        &root().join("tests/data/pvh-remus-sender-garbage.prefix.stream.zst"),
        &s,
    );
    // Cut on purpose or not, a pfn no 128 MiB guest has makes the attempt fail.
    for cut in [1, 0] {
        let why = checks(&d, &format!("check_stream '{}' g {cut}", s.display()));
        assert!(
            why.contains("names pfn 0x5e2343, beyond any the guest has"),
            "cut {cut}: {why:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_valid_stream_passes_and_a_cut_one_only_when_cut_on_purpose() {
    let d = temp("valid");
    let sample = root().join("samples/pv64-demo.xl");
    assert_eq!(
        checks(&d, &format!("check_stream '{}' s 0", sample.display())),
        ""
    );
    // The same stream ending inside a record: expected of a killed Remus primary only.
    let bytes = std::fs::read(&sample).unwrap();
    let cut = d.join("cut.xl");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    assert_eq!(
        checks(&d, &format!("check_stream '{}' c 1", cut.display())),
        ""
    );
    let why = checks(&d, &format!("check_stream '{}' c 0", cut.display()));
    assert!(
        why.starts_with("xenmig verify: ") && why.contains("truncated"),
        "{why:?}"
    );
    // Any other broken rule fails even when cut: the first PAGE_DATA header (type 1, a
    // non-zero length) made an unknown mandatory record type.
    let mut bad = bytes.clone();
    let i = (100..bad.len() - 200)
        .find(|&i| bad[i..i + 4] == 1u32.to_le_bytes() && bad[i + 4..i + 8] != [0; 4])
        .unwrap();
    bad[i + 3] = 0x7f;
    let badp = d.join("bad.xl");
    std::fs::write(&badp, &bad[..bad.len() - 100]).unwrap();
    let why = checks(&d, &format!("check_stream '{}' b 1", badp.display()));
    assert!(why.starts_with("xenmig verify: "), "{why:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn killed_helpers_and_heap_reports_are_trouble() {
    let d = temp("trouble");
    let cases = [
        ("libxl: error: libxl_exec.c:127:libxl_report_child_exitstatus: domain 1 save/restore helper [313] died due to fatal signal Broken pipe", true),
        ("memory allocation of 560399234973764 bytes failed", true),
        ("malloc(): unsorted double linked list corrupted", true),
        ("free(): corrupted unsorted chunks", true),
        ("xc: error: batch 213 (the PAGE_DATA record at stream offset 0x81a26a9), entry 0: pfn 0x5e2343 lies outside the batch's range 0x34400-0x347ff; the record was not written", true),
        ("xc: progress: Checkpointed save: 686/686  100%", false),
        ("libxl: debug: libxl_exec.c:127:libxl_report_child_exitstatus: domain 2 device model (dying as expected) [906] died due to fatal signal Killed", false),
        ("libxl: debug: libxl_event.c:2067:libxl__ao_complete: ao 0x55e0bf5559a0: complete, rc=0", false),
    ];
    for (line, bad) in cases {
        let log = d.join("log");
        std::fs::write(&log, format!("some output\n{line}\nmore\n")).unwrap();
        let got = checks(&d, &format!("trouble '{}' || true", log.display()));
        assert_eq!(!got.is_empty(), bad, "{line}: {got:?}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
