//! `realxen-downtime DOMID [SECONDS]`: how long a live migration left the guest stopped.
//!
//! Staged into the real-Xen harness's dom0 (scenario `bench`, see `realxen/dom0-init.sh`),
//! started just before `xl migrate` of domain DOMID. It asks the hypervisor for every domain's
//! state every 5 ms (one `getdomaininfo` sysctl through libxenctrl, opened with dlopen
//! so that the harness's build needs no Xen library) and reports
//!
//! - when DOMID last went from running to stopped (paused, or shut down for the suspend that
//!   ends a live migration's memory rounds),
//! - when a domain created after the probe started (the incoming copy) first ran,
//!
//! and the downtime between the two. It stops once DOMID is gone and the new domain runs, or
//! after SECONDS (default 900). Prints `REALXEN-DOWNTIME <seconds> ...`, or
//! `REALXEN-DOWNTIME none <why>` when either moment was not seen; exits 1 then.

use std::ffi::{c_int, c_uint, c_void, CStr};
use std::time::{Duration, Instant};

/// `sizeof(xc_domaininfo_t)` in Xen 4.17 (`struct xen_domctl_getdomaininfo`, as in
/// runtime/xen/src/ffi.rs, whose tests check it against the C header); the probe reads the
/// domain id (offset 0, 16 bits) and the flags (offset 4, 32 bits) of each entry.
const INFO_SIZE: usize = 112;
/// `XEN_DOMINF_*` flags.
const DYING: u32 = 1 << 0;
const SHUTDOWN: u32 = 1 << 2;
const PAUSED: u32 = 1 << 3;
/// Domains listed per call: far more than the harness ever runs.
const MAX_DOMAINS: usize = 64;
const POLL: Duration = Duration::from_millis(5);

type OpenFn = unsafe extern "C" fn(*mut c_void, *mut c_void, c_uint) -> *mut c_void;
type ListFn = unsafe extern "C" fn(*mut c_void, u32, c_uint, *mut c_void) -> c_int;

struct Xc {
    handle: *mut c_void,
    list: ListFn,
    buf: Vec<u64>,
}

impl Xc {
    fn open() -> Result<Xc, String> {
        let sym = |lib: *mut c_void, name: &CStr| -> Result<*mut c_void, String> {
            // SAFETY: `lib` is a handle dlopen returned; `name` is NUL-terminated.
            let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
            if p.is_null() {
                Err(format!("libxenctrl has no {name:?}"))
            } else {
                Ok(p)
            }
        };
        // SAFETY: dlopen of a library name; a null result is handled.
        let lib = unsafe { libc::dlopen(c"libxenctrl.so.4.17".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return Err("cannot dlopen libxenctrl.so.4.17".into());
        }
        // SAFETY: the symbols have these C signatures in Xen 4.17's xenctrl.h
        // (xc_interface_open(logger, dombuild_logger, open_flags) and
        // xc_domain_getinfolist(xch, first_domain, max_domains, info)).
        let (open, list) = unsafe {
            (
                std::mem::transmute::<*mut c_void, OpenFn>(sym(lib, c"xc_interface_open")?),
                std::mem::transmute::<*mut c_void, ListFn>(sym(lib, c"xc_domain_getinfolist")?),
            )
        };
        // SAFETY: null loggers select libxenctrl's default; no flags.
        let handle = unsafe { open(std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if handle.is_null() {
            return Err("xc_interface_open failed".into());
        }
        Ok(Xc {
            handle,
            list,
            buf: vec![0u64; MAX_DOMAINS * INFO_SIZE / 8],
        })
    }

    /// Every domain's id and flags.
    fn domains(&mut self) -> Result<Vec<(u32, u32)>, String> {
        // SAFETY: `buf` holds MAX_DOMAINS entries of INFO_SIZE bytes, 8-byte aligned as the
        // structure wants, and the call writes at most that many.
        let n = unsafe {
            (self.list)(
                self.handle,
                0,
                MAX_DOMAINS as c_uint,
                self.buf.as_mut_ptr().cast(),
            )
        };
        if n < 0 {
            return Err(format!(
                "xc_domain_getinfolist failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        let bytes: &[u8] = bytemuck_bytes(&self.buf);
        Ok((0..(n as usize).min(MAX_DOMAINS))
            .map(|i| {
                let e = &bytes[i * INFO_SIZE..];
                let id = u16::from_ne_bytes([e[0], e[1]]) as u32;
                let flags = u32::from_ne_bytes([e[4], e[5], e[6], e[7]]);
                (id, flags)
            })
            .collect())
    }
}

fn bytemuck_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: any u64 slice is a valid byte slice of eight times its length.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 8) }
}

fn stopped(flags: u32) -> bool {
    flags & (PAUSED | SHUTDOWN | DYING) != 0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(domid), limit) = (
        args.get(1).and_then(|s| s.parse::<u32>().ok()),
        args.get(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(900),
    ) else {
        eprintln!("usage: realxen-downtime DOMID [SECONDS]");
        std::process::exit(2);
    };
    let mut xc = match Xc::open() {
        Ok(x) => x,
        Err(e) => {
            println!("REALXEN-DOWNTIME none {e}");
            std::process::exit(1);
        }
    };
    let t0 = Instant::now();
    let before: Vec<u32> = match xc.domains() {
        Ok(d) => d.iter().map(|&(id, _)| id).collect(),
        Err(e) => {
            println!("REALXEN-DOWNTIME none {e}");
            std::process::exit(1);
        }
    };
    if !before.contains(&domid) {
        println!("REALXEN-DOWNTIME none domain {domid} does not exist");
        std::process::exit(1);
    }
    let mut source_was_stopped = false;
    let mut source_stopped_at: Option<Duration> = None;
    let mut source_gone = false;
    let mut incoming: Option<u32> = None;
    let mut incoming_ran_at: Option<Duration> = None;
    let mut polls = 0u64;
    while t0.elapsed() < Duration::from_secs(limit) {
        let now = t0.elapsed();
        let doms = match xc.domains() {
            Ok(d) => d,
            Err(e) => {
                println!("REALXEN-DOWNTIME none {e}");
                std::process::exit(1);
            }
        };
        polls += 1;
        match doms.iter().find(|&&(id, _)| id == domid) {
            Some(&(_, flags)) => {
                let s = stopped(flags);
                if s && !source_was_stopped {
                    source_stopped_at = Some(now);
                }
                source_was_stopped = s;
            }
            None => source_gone = true,
        }
        for &(id, flags) in &doms {
            if before.contains(&id) {
                continue;
            }
            if incoming.is_none() {
                incoming = Some(id);
            }
            if incoming == Some(id) && incoming_ran_at.is_none() && !stopped(flags) {
                incoming_ran_at = Some(now);
            }
        }
        if source_gone && incoming_ran_at.is_some() {
            break;
        }
        std::thread::sleep(POLL);
    }
    match (source_stopped_at, incoming_ran_at) {
        (Some(a), Some(b)) if b >= a => {
            println!(
                "REALXEN-DOWNTIME {:.3} domain {domid} stopped at +{:.3}s, domain {} ran at +{:.3}s, {polls} polls",
                (b - a).as_secs_f64(),
                a.as_secs_f64(),
                incoming.unwrap_or(0),
                b.as_secs_f64()
            );
        }
        (a, b) => {
            println!(
                "REALXEN-DOWNTIME none domain {domid} stopped at {a:?}, the incoming domain {incoming:?} ran at {b:?} ({polls} polls in {:.1}s)",
                t0.elapsed().as_secs_f64()
            );
            std::process::exit(1);
        }
    }
}
