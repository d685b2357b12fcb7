//! Standard output that cannot be written (a full device, a reader that went away, a
//! descriptor closed when xenmig started) is an error every command reports on stderr with
//! exit status 2: never a panic, never success with the output lost.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn xenmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenmig"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A small valid stream (PV, libxl framing).
fn stream(dir: &Path) -> String {
    let path = dir.join("pv.libxl");
    let out = xenmig()
        .args(["sim", "save", "--memory", "1M", "--frame", "libxl", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    path.to_str().unwrap().to_string()
}

/// The commands that print to standard output, over `file`.
fn printing_commands(file: &str) -> Vec<Vec<String>> {
    let cmds: Vec<Vec<&str>> = vec![
        vec!["verify", file],
        vec!["verify", "-v", file],
        vec!["verify", "--json", file],
        vec!["info", file],
        vec!["info", "--json", file],
        vec!["dump", file],
        vec!["dump", "--json", file],
        vec!["sim", "restore", file],
        vec!["sim", "save", "--memory", "1M", "-o", "/dev/null"],
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
    ];
    cmds.into_iter()
        .map(|c| c.into_iter().map(str::to_string).collect())
        .collect()
}

fn assert_output_error(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(err.contains("cannot write"), "{what}: {err}");
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = stream(dir.path());
    for args in printing_commands(&file) {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = xenmig()
            .args(&args)
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_output_error(&out, &format!("{args:?} > /dev/full"));
    }
}

#[test]
fn a_closed_pipe_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = stream(dir.path());
    for args in printing_commands(&file) {
        let mut fds = [0i32; 2];
        // SAFETY: a valid array of two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both ends are ours; the read end is closed at once, so every write to the
        // other fails with EPIPE.
        let (read_end, write_end) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        drop(read_end);
        let out = xenmig()
            .args(&args)
            .stdout(write_end)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_output_error(&out, &format!("{args:?} | (closed)"));
    }
}

/// Runs `cmd` with descriptor 1 closed.
fn with_stdout_closed(mut cmd: Command) -> Output {
    // SAFETY: only close(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    cmd.stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn a_closed_stdout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = stream(dir.path());
    for args in printing_commands(&file) {
        let mut cmd = xenmig();
        cmd.args(&args);
        let out = with_stdout_closed(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} 1>&-: {err}");
        assert!(err.contains("not open"), "{args:?} 1>&-: {err}");
    }
}

#[test]
fn convert_legacy_refuses_an_output_descriptor_it_cannot_write() {
    let legacy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/legacy/legacy-pv64-s105.legacy"
    );
    // Descriptor 1 closed, named by number or as `-`: nothing is converted into the void.
    for out_arg in ["1", "-"] {
        let mut cmd = xenmig();
        cmd.args(["convert-legacy", "-i", legacy, "-o", out_arg]);
        let out = with_stdout_closed(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-o {out_arg}: {err}");
        assert!(err.contains("file descriptor 1 is not open"), "{err}");
    }
    // A descriptor open for reading only.
    let input = std::fs::File::open(legacy).unwrap();
    let mut cmd = xenmig();
    cmd.args(["convert-legacy", "-i", legacy, "-o", "7"]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&input);
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Already 7 (another test thread closed a lower one): dup2 would keep CLOEXEC.
            let ok = if fd == 7 {
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 7) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not open for writing"), "{err}");
    // Writing that fails midway is reported too.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = xenmig()
        .args(["convert-legacy", "-i", legacy, "-o", "-"])
        .stdout(full)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
}
