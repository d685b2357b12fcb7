//! Memory stays bounded whatever the input says (issue 13): an announced record length is
//! not allocated before its octets arrive. Peak memory is the child's own maximum resident
//! size, from `wait4`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The limit every run here must stay under.
const PEAK_LIMIT_KIB: i64 = 64 << 10;

/// A libxc image header (version 3) and an HVM domain header: 40 octets.
fn headers() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u64::MAX.to_be_bytes());
    b.extend_from_slice(&0x5845_4E46u32.to_be_bytes());
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&12u16.to_le_bytes());
    b.extend_from_slice(&[0; 2]);
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&17u32.to_le_bytes());
    assert_eq!(b.len(), 40);
    b
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_kib: i64,
}

/// Runs xenmig with `args`, feeding `input` on a pipe (held open `hold` longer before it is
/// closed), and measures the child's peak resident size.
// The child is reaped by wait4, which also gives its resource usage.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str], input: Vec<u8>, hold: Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xenmig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xenmig");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        std::thread::sleep(hold);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    feeder.join().unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for this child, which std never waits
    // for (the Child is only dropped).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        peak_kib: usage.ru_maxrss,
    }
}

fn assert_bounded(r: &Run, what: &str) {
    assert!(
        r.peak_kib < PEAK_LIMIT_KIB,
        "{what}: peak {} KiB (stdout {:?}, stderr {:?})",
        r.peak_kib,
        r.stdout.get(..r.stdout.len().min(300)),
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
}

#[test]
fn an_announced_length_is_not_allocated_before_its_octets_arrive() {
    // 112 octets: the headers, STATIC_DATA_END, then a PAGE_DATA header announcing 128 MiB
    // and 56 octets of its body; the pipe stays open a while, then closes.
    let mut bytes = headers();
    bytes.extend_from_slice(&0x10u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&(128u32 << 20).to_le_bytes());
    bytes.resize(112, 0);
    for args in [
        &["verify", "-"][..],
        &["info", "-"],
        &["sim", "restore", "-"],
    ] {
        let r = run(args, bytes.clone(), Duration::from_millis(500));
        assert_bounded(&r, &format!("{args:?}"));
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(
            said.contains("at offset 0x38") && said.contains("rule `truncated`"),
            "{args:?}: {said}"
        );
        assert_eq!(r.code, Some(1), "{args:?}: {said}");
    }
}
