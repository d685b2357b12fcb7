//! Memory stays bounded whatever the input says (issue 13): `verify` and `info` keep counts,
//! never an entry per record, however many records a stream has; an announced record length
//! is not allocated before its octets arrive. Peak memory is the child's own maximum
//! resident size, from `wait4`.

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

/// The headers, then `n` empty optional records (of one type, or each of its own type).
fn empty_optional_records(n: u32, distinct: bool) -> Vec<u8> {
    let mut b = headers();
    b.reserve(n as usize * 8);
    for i in 0..n {
        let t = if distinct {
            0x8000_0000 | i
        } else {
            0x8000_0123
        };
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
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
fn many_records_cost_counts_not_memory() {
    let dir = tempfile::tempdir().unwrap();
    for distinct in [false, true] {
        let bytes = empty_optional_records(400_000, distinct);
        let path = dir.path().join(format!("records-{distinct}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        let p = path.to_str().unwrap();
        for args in [
            vec!["verify", "-v", p],
            vec!["info", p],
            vec!["info", "--json", p],
            vec!["verify", "-v", "-"],
            vec!["info", "-"],
        ] {
            let input = if args.contains(&"-") {
                bytes.clone()
            } else {
                Vec::new()
            };
            let what = format!("{args:?} (distinct types: {distinct})");
            let r = run(&args, input, Duration::ZERO);
            assert_bounded(&r, &what);
            // No END: refused, with every record counted.
            assert_eq!(r.code, Some(1), "{what}: {}", r.stderr);
            if args[0] == "info" && !args.contains(&"--json") {
                assert!(r.stdout.contains("records:        400000 libxc"), "{what}");
                assert!(r.stdout.contains("warnings:       400000\n"), "{what}");
                assert!(r.stdout.contains("more, not listed"), "{what}");
            }
            if args.contains(&"--json") {
                let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                assert_eq!(v["libxc_records"], 400_000, "{what}");
                assert!(v["warnings"].as_array().unwrap().len() <= 100, "{what}");
                assert_eq!(
                    v["warnings"].as_array().unwrap().len() as u64
                        + v["warnings_dropped"].as_u64().unwrap(),
                    400_000,
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn a_pipe_of_endless_records_stays_bounded() {
    // Two million empty optional records (16 MB) on a pipe, then the pipe closes.
    let bytes = empty_optional_records(2_000_000, false);
    for cmd in ["verify", "info"] {
        let r = run(&[cmd, "-"], bytes.clone(), Duration::ZERO);
        assert_bounded(&r, cmd);
        assert_eq!(r.code, Some(1), "{cmd}: {}", r.stderr);
    }
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
