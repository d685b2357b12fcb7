//! `rss-launch FILE PROGRAM [ARGS...]`: runs PROGRAM and writes its peak resident set (KiB,
//! `ru_maxrss` from `wait4`) to FILE; exits with PROGRAM's status (128 + the signal if one
//! killed it).
//!
//! `cargo xtask bench` starts the last command of each pipeline through this launcher. Linux
//! keeps, in a process's `ru_maxrss`, the high-water mark of the memory an exec replaces, so a
//! command started straight from the bench (tens of MiB resident) would report at least the
//! bench's own size; started from this small program, the floor is this program's size.

use std::process::Command;

#[path = "../reap.rs"]
mod reap;

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
    let (code, max_rss) = match reap::reap(child.id() as libc::pid_t, false) {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!("rss-launch: wait4 returned before {program} ended");
            std::process::exit(125);
        }
        Err(e) => {
            eprintln!("rss-launch: wait4: {e}");
            std::process::exit(125);
        }
    };
    if let Err(e) = std::fs::write(file, format!("{}\n", max_rss / 1024)) {
        eprintln!("rss-launch: cannot write {file}: {e}");
        std::process::exit(125);
    }
    std::process::exit(code);
}
