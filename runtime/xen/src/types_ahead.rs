//! Page types looked up ahead of an HVM save's walk, on a thread of their own.
//!
//! A save of a suspended HVM guest walks every pfn up to its highest, in order, one
//! getpageframeinfo3 per batch of [`PFINFO_BATCH`]; most of those pfns are holes (the guest's
//! RAM ends far below the special pages near 4 GiB), and each lookup costs a hypercall while
//! the writing of the pages before them waits. With the domain suspended its types cannot
//! change, so a second thread, with its own interface to Xen, looks them up in order while the
//! save writes, and the walk takes them from there.
//!
//! The walk must ask for consecutive pfns from where the lookups started; anything else (a
//! request out of order, a lookup that failed) stops the thread, and the backend looks the
//! types up itself from then on, as it would have without it.

use super::ffi::{self, cmd, XenDomctl};
use super::sys::{HypercallBuffer, Xc};
use crate::legacy;
use crate::libxc::PageType;
use crate::limits::PFINFO_BATCH;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use xenmig_drivers::domain::{BResult, BackendError};

/// Looks up the types of `gfns` (at most [`PFINFO_BATCH`] at a time) into `out`, through
/// `buf`, a hypercall buffer of at least `PFINFO_BATCH` words.
pub(crate) fn lookup(
    xc: &Xc,
    buf: &mut HypercallBuffer,
    domid: u32,
    gfns: &[u64],
    out: &mut [PageType],
) -> BResult<()> {
    for (chunk, types) in gfns.chunks(PFINFO_BATCH).zip(out.chunks_mut(PFINFO_BATCH)) {
        let words: Vec<u8> = chunk.iter().flat_map(|g| g.to_ne_bytes()).collect();
        let mut tries = 0;
        loop {
            buf.write(0, &words)?;
            let mut d = XenDomctl::new(cmd::GETPAGEFRAMEINFO3, domid);
            d.u.getpageframeinfo3 = ffi::GetPageFrameInfo3 {
                num: chunk.len() as u64,
                array: buf.handle(),
            };
            match xc.domctl("getpageframeinfo3", &mut d) {
                Ok(()) => break,
                // libxc retries EFAULT (the buffer raced with the kernel's paging).
                Err(e) if e.errno == Some(14) && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        }
        let mut raw = vec![0u8; chunk.len() * 8];
        buf.read(0, &mut raw)?;
        // Each word comes back as Xen's page info (XEN_DOMCTL_PFINFO_*): the type nibble
        // where a legacy page batch entry, which recorded these words as they were, keeps it.
        let shift = legacy::PFN_TYPE_MASK.trailing_zeros();
        for (t, w) in types.iter_mut().zip(raw.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            *t = PageType((u64::from_ne_bytes(b) as u32 & legacy::PFN_TYPE_MASK) >> shift);
        }
    }
    Ok(())
}

/// The thread and what it has looked up and the walk has not taken yet.
pub(crate) struct TypesAhead {
    /// The pfn the walk must ask for next.
    next: u64,
    /// Types of the pfns from `next` on, received and not taken yet.
    held: VecDeque<PageType>,
    rx: Receiver<BResult<Vec<PageType>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TypesAhead {
    /// Starts looking up the types of pfns `from..end` of HVM domain `domid` (gfn = pfn).
    pub(crate) fn start(domid: u32, from: u64, end: u64) -> BResult<TypesAhead> {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xenmig-types".into())
            .spawn(move || {
                let setup = Xc::open().and_then(|xc| {
                    let buf = xc.buffer(PFINFO_BATCH * 8)?;
                    Ok((xc, buf))
                });
                let (xc, mut buf) = match setup {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut at = from;
                while at < end && !halt.load(Ordering::Relaxed) {
                    let n = (end - at).min(PFINFO_BATCH as u64);
                    let gfns: Vec<u64> = (at..at + n).collect();
                    let mut types = vec![PageType::XTAB; gfns.len()];
                    let r = lookup(&xc, &mut buf, domid, &gfns, &mut types).map(|()| types);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                    at += n;
                }
            })
            .map_err(|e| BackendError::new("page types ahead", e.to_string()))?;
        Ok(TypesAhead {
            next: from,
            held: VecDeque::new(),
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// The types of `gfns` if they are the next consecutive pfns of the walk and were looked
    /// up; `None` when the walk went elsewhere or a lookup failed (the caller then stops this
    /// and looks them up itself).
    pub(crate) fn take(&mut self, gfns: &[u64], out: &mut [PageType]) -> Option<()> {
        let consecutive = gfns.iter().zip(self.next..).all(|(&g, want)| g == want);
        if !consecutive || out.len() != gfns.len() {
            return None;
        }
        while self.held.len() < gfns.len() {
            match self.rx.recv() {
                Ok(Ok(types)) => self.held.extend(types),
                // A failed lookup, or the thread ended before these pfns.
                Ok(Err(_)) | Err(_) => return None,
            }
        }
        for o in out.iter_mut() {
            *o = self.held.pop_front()?;
        }
        self.next += gfns.len() as u64;
        Some(())
    }
}

impl Drop for TypesAhead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock nothing: the thread never waits on us; it sees `stop` after its current
        // lookup, or fails to send, and ends.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `TypesAhead` fed by the test instead of a thread.
    fn fed(next: u64) -> (TypesAhead, std::sync::mpsc::Sender<BResult<Vec<PageType>>>) {
        let (tx, rx) = channel();
        let ahead = TypesAhead {
            next,
            held: VecDeque::new(),
            rx,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        (ahead, tx)
    }

    fn types(n: usize, t: PageType) -> Vec<PageType> {
        vec![t; n]
    }

    #[test]
    fn consecutive_requests_take_what_was_looked_up_across_chunks() {
        let (mut a, tx) = fed(100);
        tx.send(Ok(types(3, PageType::NOTAB))).unwrap();
        tx.send(Ok(types(3, PageType::XTAB))).unwrap();
        let mut out = [PageType::BROKEN; 4];
        assert!(a.take(&[100, 101, 102, 103], &mut out).is_some());
        assert_eq!(out[2..], [PageType::NOTAB, PageType::XTAB]);
        let mut out = [PageType::BROKEN; 2];
        assert!(a.take(&[104, 105], &mut out).is_some());
        assert_eq!(out, [PageType::XTAB; 2]);
        // Nothing more was looked up and the sender is gone: none.
        drop(tx);
        assert!(a.take(&[106], &mut [PageType::XTAB]).is_none());
    }

    #[test]
    fn a_request_elsewhere_or_a_failed_lookup_gives_none() {
        let (mut a, tx) = fed(0);
        tx.send(Ok(types(8, PageType::NOTAB))).unwrap();
        let mut out = [PageType::XTAB; 2];
        // Not from where the walk stands, not consecutive, or of another length.
        assert!(a.take(&[1, 2], &mut out).is_none());
        assert!(a.take(&[0, 2], &mut out).is_none());
        assert!(a.take(&[0, 1], &mut [PageType::XTAB; 3]).is_none());
        assert!(a.take(&[0, 1], &mut out).is_some());
        let (mut a, tx) = fed(0);
        tx.send(Err(BackendError::new("getpageframeinfo3", "refused")))
            .unwrap();
        assert!(a.take(&[0], &mut [PageType::XTAB]).is_none());
    }
}
