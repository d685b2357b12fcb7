//! `rss-launch FILE PROGRAM [ARGS...]`: runs PROGRAM and writes its peak resident set (KiB,
//! `ru_maxrss` from `wait4`) to FILE; exits with PROGRAM's status (128 + the signal if one
//! killed it).
//!
//! `cargo xtask bench` starts the last command of each pipeline through this launcher. Linux
//! keeps, in a process's `ru_maxrss`, the high-water mark of the memory an exec replaces, so a
//! command started straight from the bench (tens of MiB resident) would report at least the
//! bench's own size; started from this small program, the floor is this program's size.

use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, program, rest @ ..] = args.as_slice() else {
        eprintln!("usage: rss-launch FILE PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rss-launch: cannot run {program}: {e}");
            std::process::exit(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; zero is a valid value for every field.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child; the pointers are to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            eprintln!("rss-launch: wait4: {e}");
            std::process::exit(125);
        }
    }
    if let Err(e) = std::fs::write(file, format!("{}\n", usage.ru_maxrss)) {
        eprintln!("rss-launch: cannot write {file}: {e}");
        std::process::exit(125);
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::process::exit(code);
}
