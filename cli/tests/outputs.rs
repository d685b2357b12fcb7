//! Writing to a device or a pipe named by path writes in place: it is never replaced by a
//! regular file through the temporary-file-and-rename path meant for regular files.

use std::os::unix::fs::FileTypeExt;
use std::process::Command;

#[test]
fn dev_null_stays_a_device() {
    let exe = env!("CARGO_BIN_EXE_xenmig");
    let out = Command::new(exe)
        .args([
            "sim",
            "save",
            "--guest",
            "pv",
            "--memory",
            "1M",
            "-o",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let legacy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/legacy/legacy-pv64-s105.legacy"
    );
    let out = Command::new(exe)
        .args(["convert-legacy", "-i", legacy, "-o", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = std::fs::metadata("/dev/null").unwrap();
    assert!(m.file_type().is_char_device(), "/dev/null was replaced");
}

#[test]
fn a_fifo_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a plain mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let f = fifo.clone();
        std::thread::spawn(move || std::fs::read(f).unwrap().len())
    };
    let out = Command::new(env!("CARGO_BIN_EXE_xenmig"))
        .args(["sim", "save", "--guest", "hvm", "--memory", "1M", "-o"])
        .arg(&fifo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reader.join().unwrap() > 4096);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}
