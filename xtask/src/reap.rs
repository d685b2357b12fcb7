//! Reaping a child with its resource usage: shared by `cargo xtask bench` and its launcher
//! `rss-launch` (xtask/src/bin/rss-launch.rs, which includes this file).

/// Reaps child `pid` (blocking unless `nohang`): `None` if it is still running, else its exit
/// status (128 + the signal if one killed it) and its peak resident set in octets.
pub fn reap(pid: libc::pid_t, nohang: bool) -> std::io::Result<Option<(i32, u64)>> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zero is a valid value for every field.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let flags = if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: a child of this process; the pointers are to locals.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == 0 {
            return Ok(None);
        }
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // ru_maxrss is in KiB on Linux.
    Ok(Some((code, usage.ru_maxrss.max(0) as u64 * 1024)))
}
