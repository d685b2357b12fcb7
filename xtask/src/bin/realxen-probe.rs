//! `realxen-probe tlb SECONDS`: does memory read what was last written to it, in this machine's
//! dom0? Staged into the real-Xen harness's dom0 (scenario `tlb-probe`, see
//! `realxen/dom0-init.sh`), it separates a defect of the emulated platform from one of the
//! save helpers: the helpers' stale-looking buffers (freed heap words in a pfn array, page data
//! where a record header was read, AddressSanitizer's shadow reading two values in a row) would
//! all follow from translations that outlive `munmap` or `madvise(MADV_DONTNEED)`.
//!
//! Each round maps anonymous pages, fills them with a tag, has a second thread on the other
//! CPU read them (so that CPU caches the translations), then either unmaps them and maps fresh
//! pages (usually at the same address) or discards them with `MADV_DONTNEED`. Fresh pages must
//! read as zeros, and after a new tag is written both threads must read the new tag. Any other
//! value, in particular the old tag, is counted as a stale read and printed.
//!
//! The third check has one thread alternate between the CPUs: write on one, unmap and map on
//! the other, read back on the first. The fourth forks while a second thread has the pages
//! cached writable on the other CPU: after the fork the parent writes a new tag and the child
//! must still read the old one (copy on write needs the parent's writable translations gone).
//! The fifth starts new processes two at a time, one per CPU: this probe re-executed, whose
//! fresh brk and mmap memory must read zero, and the static busybox; a child killed by a
//! signal counts as a stale read too (dom0's busybox has been seen to die at its first
//! thread-local access, reading another process's strings as a pointer). The sixth has a
//! thread on each CPU yield over and over and check its thread-local word and its FS base.
//! The seventh has threads hold known values in the sixteen vector registers across
//! hundreds of context switches and check they come back unchanged.
//!
//! Prints one line per check and `REALXEN-PROBE tlb PASS|FAIL ...`; exits 1 on any stale read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
/// Pages per round: enough to span several page-table leaves' worth of TLB entries, few
/// enough that a round is quick under emulation.
const PAGES: usize = 64;
const LEN: usize = PAGE * PAGES;

fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn map() -> *mut u64 {
    // SAFETY: an anonymous private mapping with no address hint; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

fn unmap(p: *mut u64) {
    // SAFETY: p is a mapping of LEN octets made by map() and no longer used by anyone.
    let r = unsafe { libc::munmap(p.cast(), LEN) };
    assert_eq!(r, 0, "munmap: {}", std::io::Error::last_os_error());
}

fn discard(p: *mut u64) {
    // SAFETY: p is a live private anonymous mapping of LEN octets; DONTNEED zero-fills it.
    let r = unsafe { libc::madvise(p.cast(), LEN, libc::MADV_DONTNEED) };
    assert_eq!(r, 0, "madvise: {}", std::io::Error::last_os_error());
}

/// The first word of each page, read through a volatile load (the point is to see what the
/// memory system returns, not what the compiler remembers).
fn word(p: *mut u64, page: usize) -> u64 {
    // SAFETY: page < PAGES, so the word lies inside the live mapping p.
    unsafe { std::ptr::read_volatile(p.add(page * PAGE / 8)) }
}

fn set(p: *mut u64, page: usize, v: u64) {
    // SAFETY: as in word().
    unsafe { std::ptr::write_volatile(p.add(page * PAGE / 8), v) }
}

fn tag(round: u64, page: usize, gen: u64) -> u64 {
    0x5afe_0000_0000_0000 | (gen << 44) | (round << 12) | page as u64
}

#[derive(Default)]
struct Stats {
    rounds: AtomicU64,
    checks: AtomicU64,
    stale: AtomicU64,
    same_address: AtomicU64,
}

struct Shared {
    addr: AtomicUsize,
    expect_gen: AtomicU64,
    round: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            addr: AtomicUsize::new(0),
            expect_gen: AtomicU64::new(0),
            round: AtomicU64::new(0),
            stop: false.into(),
        })
    }
}

fn report(stats: &Stats, what: &str, round: u64, page: usize, got: u64, want: u64, old: u64) {
    let n = stats.stale.fetch_add(1, Ordering::Relaxed);
    if n < 20 {
        let kind = if got == old {
            "the previous tag"
        } else if got == 0 {
            "zero"
        } else {
            "another value"
        };
        println!(
            "stale: {what}: round {round} page {page}: read {got:#x} ({kind}), want {want:#x}"
        );
    }
}

/// Two threads on two CPUs; `fresh` maps new pages (munmap + mmap) or discards (DONTNEED).
fn cross_cpu(seconds: u64, fresh: bool, stats: &Stats) {
    let shared = Shared::new();
    let barrier = Arc::new(Barrier::new(2));
    let what = if fresh {
        "munmap+mmap, other CPU"
    } else {
        "MADV_DONTNEED, other CPU"
    };
    let reader_checks = Arc::new(AtomicU64::new(0));
    let reader_stale = Arc::new(AtomicU64::new(0));
    let reader = {
        let (shared, barrier) = (shared.clone(), barrier.clone());
        let (rc, rs) = (reader_checks.clone(), reader_stale.clone());
        std::thread::spawn(move || {
            pin(1);
            loop {
                // Phase 1: read the first tag (caching the translations here).
                barrier.wait();
                if shared.stop.load(Ordering::Acquire) {
                    break;
                }
                let round = shared.round.load(Ordering::Acquire);
                let p = shared.addr.load(Ordering::Acquire) as *mut u64;
                for page in 0..PAGES {
                    let _ = word(p, page);
                }
                barrier.wait();
                // Phase 2: after the main thread replaced the pages, read what it wrote.
                barrier.wait();
                let p = shared.addr.load(Ordering::Acquire) as *mut u64;
                let gen = shared.expect_gen.load(Ordering::Acquire);
                for page in 0..PAGES {
                    let want = tag(round, page, gen);
                    let got = word(p, page);
                    rc.fetch_add(1, Ordering::Relaxed);
                    if got != want {
                        let n = rs.fetch_add(1, Ordering::Relaxed);
                        if n < 20 {
                            println!(
                                "stale: {what} (reader): round {round} page {page}: read {got:#x}, want {want:#x}"
                            );
                        }
                    }
                }
                barrier.wait();
            }
        })
    };
    pin(0);
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        round += 1;
        let p = map();
        for page in 0..PAGES {
            set(p, page, tag(round, page, 1));
        }
        shared.round.store(round, Ordering::Release);
        shared.addr.store(p as usize, Ordering::Release);
        barrier.wait();
        barrier.wait();
        let q = if fresh {
            unmap(p);
            let q = map();
            if q == p {
                stats.same_address.fetch_add(1, Ordering::Relaxed);
            }
            q
        } else {
            discard(p);
            p
        };
        for page in 0..PAGES {
            let got = word(q, page);
            stats.checks.fetch_add(1, Ordering::Relaxed);
            if got != 0 {
                report(stats, what, round, page, got, 0, tag(round, page, 1));
            }
            set(q, page, tag(round, page, 2));
        }
        shared.expect_gen.store(2, Ordering::Release);
        shared.addr.store(q as usize, Ordering::Release);
        barrier.wait();
        barrier.wait();
        unmap(q);
        stats.rounds.fetch_add(1, Ordering::Relaxed);
    }
    shared.stop.store(true, Ordering::Release);
    barrier.wait();
    let _ = reader.join();
    stats
        .checks
        .fetch_add(reader_checks.load(Ordering::Relaxed), Ordering::Relaxed);
    stats
        .stale
        .fetch_add(reader_stale.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// One thread moving between the CPUs.
fn migrating(seconds: u64, stats: &Stats) {
    let what = "munmap+mmap, one thread moving between CPUs";
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        round += 1;
        pin(0);
        let p = map();
        for page in 0..PAGES {
            set(p, page, tag(round, page, 1));
        }
        pin(1);
        for page in 0..PAGES {
            let _ = word(p, page);
        }
        unmap(p);
        let q = map();
        if q == p {
            stats.same_address.fetch_add(1, Ordering::Relaxed);
        }
        pin(0);
        for page in 0..PAGES {
            let got = word(q, page);
            stats.checks.fetch_add(1, Ordering::Relaxed);
            if got != 0 {
                report(stats, what, round, page, got, 0, tag(round, page, 1));
            }
        }
        unmap(q);
        stats.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// fork() while a second thread on the other CPU has the pages cached writable: after the fork
/// both parent threads write a new tag (copy on write must give the parent new pages), and the
/// child must still read the tag from before the fork.
fn fork_cow(seconds: u64, stats: &Stats) {
    let what = "fork copy-on-write, the child's view";
    let barrier = Arc::new(Barrier::new(2));
    let shared = Shared::new();
    let writer = {
        let (shared, barrier) = (shared.clone(), barrier.clone());
        std::thread::spawn(move || {
            pin(1);
            loop {
                barrier.wait();
                if shared.stop.load(Ordering::Acquire) {
                    break;
                }
                let round = shared.round.load(Ordering::Acquire);
                let p = shared.addr.load(Ordering::Acquire) as *mut u64;
                // Cache the pages writable on this CPU before the fork...
                for page in 0..PAGES {
                    set(p, page, tag(round, page, 1));
                }
                barrier.wait();
                // ...and write the new tag after it.
                barrier.wait();
                for page in 0..PAGES {
                    set(p, page, tag(round, page, 2));
                }
                barrier.wait();
            }
        })
    };
    pin(0);
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        round += 1;
        let p = map();
        shared.round.store(round, Ordering::Release);
        shared.addr.store(p as usize, Ordering::Release);
        barrier.wait();
        barrier.wait();
        for page in 0..PAGES {
            set(p, page, tag(round, page, 1));
        }
        // SAFETY: the child only reads memory and calls async-signal-safe functions
        // (usleep, _exit) before exiting.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe { libc::usleep(2000) };
            let mut bad = 0i32;
            for page in 0..PAGES {
                if word(p, page) != tag(round, page, 1) {
                    bad += 1;
                }
            }
            // SAFETY: _exit ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(bad.min(120)) };
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        barrier.wait();
        for page in 0..PAGES {
            set(p, page, tag(round, page, 2));
        }
        barrier.wait();
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        stats.checks.fetch_add(PAGES as u64, Ordering::Relaxed);
        let bad = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status) as u64
        } else {
            println!("stale: {what}: round {round}: the child ended with status {status:#x}");
            1
        };
        if bad > 0 {
            let n = stats.stale.fetch_add(bad, Ordering::Relaxed);
            if n < 20 {
                println!("stale: {what}: round {round}: {bad} of {PAGES} pages read the parent's later tag or other data");
            }
        }
        for page in 0..PAGES {
            let got = word(p, page);
            if got != tag(round, page, 2) {
                report(
                    stats,
                    "fork copy-on-write, the parent's view",
                    round,
                    page,
                    got,
                    tag(round, page, 2),
                    tag(round, page, 1),
                );
            }
        }
        unmap(p);
        stats.rounds.fetch_add(1, Ordering::Relaxed);
    }
    shared.stop.store(true, Ordering::Release);
    barrier.wait();
    let _ = writer.join();
}

thread_local! {
    /// A thread-local word with a known initial value: read through the thread pointer (the
    /// FS base), it shows whether the FS base is this thread's.
    static CANARY: std::cell::Cell<u64> = const { std::cell::Cell::new(CANARY_INIT) };
}
const CANARY_INIT: u64 = 0x7c5a_11ed_0ddb_a115;

/// The FS base as the kernel reports it.
fn fs_base() -> u64 {
    let mut v: libc::c_ulong = 0;
    // SAFETY: ARCH_GET_FS writes one unsigned long at the address given.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut v as *mut libc::c_ulong) };
    v
}

/// Four threads, two pinned to each CPU, each set their thread-local word to their own value
/// and, yielding the CPU to each other over and over (context switches between threads with
/// different FS bases), check that they read their own value back and that the FS base stays
/// where it was.
fn tls_check(seconds: u64, stats: &Stats) {
    let what = "thread-local word across context switches";
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4usize {
            s.spawn(move || {
                pin(t % 2);
                let mine = 0x7100_0000_0000_0000 | (t as u64) << 32 | u64::from(std::process::id());
                let base = fs_base();
                CANARY.with(|c| c.set(mine));
                let mut round = 0u64;
                while start.elapsed() < Duration::from_secs(seconds) {
                    round += 1;
                    for _ in 0..100 {
                        // SAFETY: sched_yield has no preconditions.
                        unsafe { libc::sched_yield() };
                        let got = CANARY.with(|c| c.get());
                        stats.checks.fetch_add(1, Ordering::Relaxed);
                        if got != mine {
                            report(stats, what, round, t, got, mine, CANARY_INIT);
                        }
                        let now = fs_base();
                        if now != base {
                            report(
                                stats,
                                "FS base across context switches",
                                round,
                                t,
                                now,
                                base,
                                0,
                            );
                        }
                    }
                    stats.rounds.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
}

/// Loads `pattern` into xmm0..xmm15, yields the CPU `yields` times (each `sched_yield` is a
/// context switch when another thread waits), then stores the registers to `out`. Nothing in
/// between touches the vector registers: the kernel (and the hypervisor under it) must give
/// them back as they were.
#[cfg(target_arch = "x86_64")]
fn xmm_round(pattern: &[u64; 32], out: &mut [u64; 32], yields: u64) {
    // SAFETY: reads 256 octets from `pattern` and writes 256 to `out`, both live arrays of
    // that size; the syscall (sched_yield, 24) clobbers rax, rcx and r11, declared below with
    // every vector register the block writes.
    unsafe {
        std::arch::asm!(
            "movdqu xmm0, [{p}]",
            "movdqu xmm1, [{p} + 16]",
            "movdqu xmm2, [{p} + 32]",
            "movdqu xmm3, [{p} + 48]",
            "movdqu xmm4, [{p} + 64]",
            "movdqu xmm5, [{p} + 80]",
            "movdqu xmm6, [{p} + 96]",
            "movdqu xmm7, [{p} + 112]",
            "movdqu xmm8, [{p} + 128]",
            "movdqu xmm9, [{p} + 144]",
            "movdqu xmm10, [{p} + 160]",
            "movdqu xmm11, [{p} + 176]",
            "movdqu xmm12, [{p} + 192]",
            "movdqu xmm13, [{p} + 208]",
            "movdqu xmm14, [{p} + 224]",
            "movdqu xmm15, [{p} + 240]",
            "2:",
            "mov eax, 24",
            "syscall",
            "dec {n}",
            "jnz 2b",
            "movdqu [{o}], xmm0",
            "movdqu [{o} + 16], xmm1",
            "movdqu [{o} + 32], xmm2",
            "movdqu [{o} + 48], xmm3",
            "movdqu [{o} + 64], xmm4",
            "movdqu [{o} + 80], xmm5",
            "movdqu [{o} + 96], xmm6",
            "movdqu [{o} + 112], xmm7",
            "movdqu [{o} + 128], xmm8",
            "movdqu [{o} + 144], xmm9",
            "movdqu [{o} + 160], xmm10",
            "movdqu [{o} + 176], xmm11",
            "movdqu [{o} + 192], xmm12",
            "movdqu [{o} + 208], xmm13",
            "movdqu [{o} + 224], xmm14",
            "movdqu [{o} + 240], xmm15",
            p = in(reg) pattern.as_ptr(),
            o = in(reg) out.as_mut_ptr(),
            n = inout(reg) yields.max(1) => _,
            out("rax") _, out("rcx") _, out("r11") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        );
    }
}

/// Four threads, two pinned to each CPU, each hold their own values in the sixteen vector
/// registers while yielding to each other (and to whatever else runs, a guest included), and
/// check the registers come back unchanged: a context switch that loses or mixes up register
/// state (the FPU/SSE state Xen switches between vCPUs) shows here directly.
#[cfg(target_arch = "x86_64")]
fn xmm_check(seconds: u64, stats: &Stats) {
    let what = "vector registers across context switches";
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4usize {
            s.spawn(move || {
                pin(t % 2);
                let mut round = 0u64;
                let mut out = [0u64; 32];
                while start.elapsed() < Duration::from_secs(seconds) {
                    round += 1;
                    let mut pattern = [0u64; 32];
                    for (i, w) in pattern.iter_mut().enumerate() {
                        *w = 0x5800_0000_0000_0000
                            | (t as u64) << 48
                            | (round & 0xffff_ffff) << 8
                            | i as u64;
                    }
                    xmm_round(&pattern, &mut out, 20);
                    stats.checks.fetch_add(32, Ordering::Relaxed);
                    for (i, (&got, &want)) in out.iter().zip(&pattern).enumerate() {
                        if got != want {
                            report(stats, what, round, i, got, want, 0);
                        }
                    }
                    stats.rounds.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
}

/// The child of `exec_check`: its thread-local word must hold its initial value, and fresh
/// memory from brk and from mmap must read as zeros. Exits with the number of wrong words
/// seen (at most 100).
fn exec_child() -> ! {
    let mut bad = 0i32;
    if CANARY.with(|c| c.get()) != CANARY_INIT {
        bad += 1;
    }
    // SAFETY: sbrk(0) only reports the break; growing it hands us LEN fresh octets.
    let b = unsafe {
        let cur = libc::sbrk(0);
        if libc::sbrk(LEN as libc::intptr_t) == cur {
            cur.cast::<u64>()
        } else {
            std::ptr::null_mut()
        }
    };
    let m = map();
    for p in [b, m] {
        if p.is_null() {
            continue;
        }
        for page in 0..PAGES {
            if word(p, page) != 0 {
                bad += 1;
            }
            set(p, page, 0xdead_0000_0000 | u64::from(std::process::id()));
        }
    }
    // SAFETY: ends the process at once.
    unsafe { libc::_exit(bad.min(100)) }
}

/// One child by fork() and execv() (as a shell starts one: the child first shares the
/// parent's pages copy-on-write), or by posix_spawn (std's Command: the child borrows the
/// parent's memory until it execs). Returns the wait status, or None if it could not start.
fn run_child(prog: &std::ffi::CStr, argv: &[&std::ffi::CStr], fork: bool) -> Option<i32> {
    if !fork {
        let args: Vec<&str> = argv[1..].iter().filter_map(|a| a.to_str().ok()).collect();
        let path = prog.to_str().ok()?;
        let st = std::process::Command::new(path).args(args).status().ok()?;
        use std::os::unix::process::ExitStatusExt;
        return Some(st.into_raw());
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: the child calls only execv and _exit (async-signal-safe) on memory prepared
    // before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; ptrs is a null-terminated array of C strings.
        unsafe {
            libc::execv(prog.as_ptr(), ptrs.as_ptr());
            libc::_exit(127)
        }
    }
    if pid < 0 {
        return None;
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Some(status)
}

/// New processes, two at a time (one per CPU), started by fork+exec and by posix_spawn: this
/// probe re-executed (fresh brk and mmap memory must read zero) and, where one is installed,
/// the static busybox running `true` through `/proc/self/exe`-style re-execution of itself.
/// A child killed by a signal or reading non-zero fresh memory counts as stale.
fn exec_check(seconds: u64, stats: &Stats) {
    let me = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let me = std::ffi::CString::new(me.into_os_string().into_encoded_bytes()).unwrap_or_default();
    let busybox = std::path::Path::new("/bin/busybox").exists();
    let start = Instant::now();
    std::thread::scope(|s| {
        for cpu in 0..2usize {
            let me = me.clone();
            s.spawn(move || {
                pin(cpu);
                let child = c"tlb-child";
                let bb = c"/bin/busybox";
                let mut k = 0u64;
                while start.elapsed() < Duration::from_secs(seconds) {
                    k += 1;
                    let fork = k % 4 < 2;
                    // argv[0] names busybox's applet; the probe's child takes "tlb-child".
                    let (prog, argv): (&std::ffi::CStr, Vec<&std::ffi::CStr>) =
                        if busybox && k.is_multiple_of(2) {
                            (bb, vec![bb, c"true"])
                        } else {
                            (me.as_c_str(), vec![me.as_c_str(), child])
                        };
                    let how = if fork { "fork+exec" } else { "posix_spawn" };
                    stats.checks.fetch_add(1, Ordering::Relaxed);
                    stats.rounds.fetch_add(1, Ordering::Relaxed);
                    match run_child(prog, &argv, fork) {
                        Some(0) => {}
                        Some(st) => {
                            let n = stats.stale.fetch_add(1, Ordering::Relaxed);
                            if n < 20 {
                                let what = if libc::WIFSIGNALED(st) {
                                    format!("killed by signal {}", libc::WTERMSIG(st))
                                } else {
                                    format!("exit status {}", libc::WEXITSTATUS(st))
                                };
                                println!(
                                    "stale: {how} of {} on CPU {cpu}: {what}",
                                    prog.to_string_lossy()
                                );
                            }
                        }
                        None => {
                            println!("{how} of {}: cannot start it", prog.to_string_lossy());
                            return;
                        }
                    }
                }
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("tlb-child") {
        exec_child();
    }
    let seconds = match args.as_slice() {
        [_, t, s] if t == "tlb" => s.parse::<u64>().ok(),
        _ => None,
    };
    let Some(seconds) = seconds else {
        eprintln!("usage: realxen-probe tlb SECONDS");
        std::process::exit(2);
    };
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus < 2 {
        println!("note: {cpus} CPU online: the cross-CPU checks run both threads on one CPU");
    }
    let share = (seconds / 7).max(1);
    let mut total = (0, 0, 0);
    let mut failed = false;
    for (name, f) in [
        (
            "munmap+mmap, other CPU",
            &(|s: &Stats| cross_cpu(share, true, s)) as &dyn Fn(&Stats),
        ),
        ("MADV_DONTNEED, other CPU", &|s: &Stats| {
            cross_cpu(share, false, s)
        }),
        (
            "munmap+mmap, one thread moving between CPUs",
            &|s: &Stats| migrating(share, s),
        ),
        (
            "fork copy-on-write, a thread on the other CPU",
            &|s: &Stats| fork_cow(share, s),
        ),
        ("new processes, two at a time", &|s: &Stats| {
            exec_check(share, s)
        }),
        (
            "thread-local word and FS base across context switches",
            &|s: &Stats| tls_check(share, s),
        ),
        (
            "vector registers (xmm0-15) across context switches",
            &|s: &Stats| xmm_check(share, s),
        ),
    ] {
        let s = Stats::default();
        f(&s);
        let (rounds, checks, stale, same) = (
            s.rounds.load(Ordering::Relaxed),
            s.checks.load(Ordering::Relaxed),
            s.stale.load(Ordering::Relaxed),
            s.same_address.load(Ordering::Relaxed),
        );
        println!(
            "check {name}: {rounds} rounds, {checks} reads, {stale} stale, fresh mapping at the old address in {same} rounds"
        );
        failed |= stale > 0;
        total = (total.0 + rounds, total.1 + checks, total.2 + stale);
    }
    println!(
        "REALXEN-PROBE tlb {} {} stale reads in {} reads over {} rounds",
        if failed { "FAIL" } else { "PASS" },
        total.2,
        total.1,
        total.0
    );
    std::process::exit(i32::from(failed));
}
