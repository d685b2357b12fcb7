//! Safe wrappers over [`super::ffi`]: an open `xc_interface` and what lives as long as it
//! (hypercall buffers, foreign mappings). Every call reports failure as a [`BackendError`]
//! carrying the operation and errno; guest memory is copied in and out, or lent as a slice
//! for as long as its mapping lives ([`Mapping::lend`], [`Mapping::lend_mut`]).

use super::ffi;
use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use xenmig_drivers::domain::{BResult, BackendError, PAGE_SIZE};

/// errno of the last failed call.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A failure of `op`, with errno and its text.
pub fn os_error(op: &'static str, what: impl std::fmt::Display) -> BackendError {
    let e = last_errno();
    BackendError::new(
        op,
        format!("{what}: {}", std::io::Error::from_raw_os_error(e)),
    )
    .errno(e)
}

/// `off..off + len` lies within `total` octets.
fn in_range(off: usize, len: usize, total: usize) -> bool {
    matches!(off.checked_add(len), Some(end) if end <= total)
}

/// The open interface; closed when the last user (buffer, mapping) is gone.
struct Handle {
    xch: NonNull<ffi::XcInterface>,
    fmem: NonNull<ffi::ForeignMemory>,
    /// Address space kept for mappings of guest frames, see [`Window`].
    window: Option<Window>,
    /// Unmaps what [`Mapping::release_in_background`] hands it, started on first use.
    releaser: std::cell::RefCell<Option<Releaser>>,
}

/// A thread that takes guest frames out of the address space: unmapping a batch of foreign
/// frames costs several times what mapping it does (every entry cleared through Xen, and the
/// TLBs of every vCPU flushed), and the unmapping of one batch can run while the next is
/// written out, which needs no lock the unmapping holds.
struct Releaser {
    jobs: std::sync::mpsc::Sender<Release>,
    thread: std::thread::JoinHandle<()>,
}

/// One mapping to take out: `pages` frames at `at`, in window slot `slot` if it has one.
struct Release {
    at: usize,
    pages: usize,
    slot: Option<usize>,
}

impl Releaser {
    /// Starts the thread. `fmem` is the interface's foreign-memory handle and `window` the
    /// window's shared state, both alive until the thread is joined ([`Handle`]'s drop).
    fn start(fmem: NonNull<ffi::ForeignMemory>, window: Option<Arc<Slots>>) -> Option<Releaser> {
        let (jobs, rx) = std::sync::mpsc::channel::<Release>();
        let fmem = fmem.as_ptr() as usize;
        let thread = std::thread::Builder::new()
            .name("xenmig-unmap".into())
            .spawn(move || {
                for job in rx {
                    let at = job.at as *mut c_void;
                    match (job.slot, window.as_deref()) {
                        (Some(i), Some(w)) => w.give_back(i, at, fmem as *mut _, job.pages),
                        _ => {
                            // SAFETY: `at` holds `pages` frames mapped by xenforeignmemory_map,
                            // handed over by the Mapping that owned them, which will not touch
                            // them again; `fmem` lives until this thread is joined.
                            unsafe { ffi::xenforeignmemory_unmap(fmem as *mut _, at, job.pages) };
                        }
                    }
                    if let Some(w) = window.as_deref() {
                        w.releasing.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })
            .ok()?;
        Some(Releaser { jobs, thread })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Every mapping handed to the releaser is gone before the interface closes.
        if let Some(r) = self.releaser.get_mut().take() {
            drop(r.jobs);
            let _ = r.thread.join();
        }
        // SAFETY: `xch` came from xc_interface_open and is closed exactly once, here; the
        // fmem handle belongs to it and every mapping holding this Handle is gone.
        unsafe {
            ffi::xc_interface_close(self.xch.as_ptr());
        }
    }
}

/// Guest frames are mapped into a range of addresses reserved for them alone, never into
/// addresses the allocator may hand out later.
///
/// Seen in the real-Xen harness (see `realxen/README.md`): the helper's own heap read values
/// that are the guest's page contents (a pfn array starting with a pair of words that the
/// guest's memory holds, and a pointer loaded from the heap that was such a word). Guest
/// frames are mapped and unmapped once per batch; when the translations of an unmapped
/// foreign mapping outlive the unmap, memory the allocator maps later at the same addresses
/// reads the guest's frames. Here a mapping is made over a slot of the reservation
/// (`MAP_FIXED`), and dropping it puts a fresh inaccessible reservation over the slot
/// instead of unmapping, so those addresses are only ever guest frames or nothing, and the
/// kernel flushes translations when it maps guest frames again.
struct Window {
    base: NonNull<u8>,
    /// Pages per slot: the largest batch, [`MAX_BATCH_SIZE`](crate::libxc::MAX_BATCH_SIZE).
    slot_pages: usize,
    /// Which slots are in use, shared with the [`Releaser`], which frees them.
    slots: Arc<Slots>,
}

/// The window's slots in use (bit `i` set: slot `i`), and how many of them the releaser has
/// still to give back.
struct Slots {
    used: AtomicU32,
    releasing: AtomicUsize,
    slot_len: usize,
}

/// Slots in the window: mappings of guest pages alive at the same time (the saver and the
/// restorer hold one or two, and one more may be on its way out).
const WINDOW_SLOTS: usize = 8;

impl Slots {
    /// Puts an inaccessible reservation back over slot `i`, at `at` (replacing the guest
    /// frames mapped there), and frees it. If that fails, the slot stays marked used and the
    /// frames are unmapped instead, leaving a hole (the old behaviour).
    fn give_back(&self, i: usize, at: *mut c_void, fmem: *mut ffi::ForeignMemory, pages: usize) {
        if Window::reserve(self.slot_len, at, true) == libc::MAP_FAILED {
            // SAFETY: `at` holds `pages` frames mapped by xenforeignmemory_map2; unmapped
            // once, and the slot is never handed out again.
            unsafe { ffi::xenforeignmemory_unmap(fmem, at, pages) };
            return;
        }
        self.used.fetch_and(!(1 << i), Ordering::AcqRel);
    }
}

impl Window {
    fn slot_len(&self) -> usize {
        self.slot_pages * PAGE_SIZE
    }

    fn reserve(len: usize, at: *mut libc::c_void, fixed: bool) -> *mut libc::c_void {
        let flags = libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | libc::MAP_NORESERVE
            | if fixed { libc::MAP_FIXED } else { 0 };
        // SAFETY: an anonymous inaccessible mapping; with MAP_FIXED, `at..at+len` is a slot
        // of our own reservation, whose previous mapping nobody uses any more.
        unsafe { libc::mmap(at, len, libc::PROT_NONE, flags, -1, 0) }
    }

    fn new() -> Option<Window> {
        let slot_pages = crate::libxc::MAX_BATCH_SIZE as usize;
        let len = slot_pages * PAGE_SIZE * WINDOW_SLOTS;
        let p = Self::reserve(len, ptr::null_mut(), false);
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Window {
            base: NonNull::new(p.cast())?,
            slot_pages,
            slots: Arc::new(Slots {
                used: AtomicU32::new(0),
                releasing: AtomicUsize::new(0),
                slot_len: slot_pages * PAGE_SIZE,
            }),
        })
    }

    /// A free slot for `pages` pages, marked used. When every slot is taken and some are on
    /// their way out through the releaser, waits for one rather than mapping guest frames
    /// outside the window.
    fn take(&self, pages: usize) -> Option<(usize, *mut libc::c_void)> {
        if pages > self.slot_pages {
            return None;
        }
        loop {
            let used = self.slots.used.load(Ordering::Acquire);
            match (0..WINDOW_SLOTS).find(|&i| used & (1 << i) == 0) {
                Some(i) => {
                    let bit = 1 << i;
                    if self.slots.used.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
                        continue;
                    }
                    // The slot lies inside the reservation: i < WINDOW_SLOTS.
                    let at = self.base.as_ptr().wrapping_add(i * self.slot_len()).cast();
                    return Some((i, at));
                }
                None if self.slots.releasing.load(Ordering::Acquire) > 0 => {
                    std::thread::yield_now()
                }
                None => return None,
            }
        }
    }

    /// [`Slots::give_back`] for slot `i`, here and now.
    fn give_back(&self, i: usize, fmem: *mut ffi::ForeignMemory, pages: usize) {
        let at = self.base.as_ptr().wrapping_add(i * self.slot_len()).cast();
        self.slots.give_back(i, at, fmem, pages);
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the whole reservation is ours; no mapping in it is alive (each holds the
        // Handle that owns this window, whose drop joined the releaser first).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.slot_len() * WINDOW_SLOTS) };
    }
}

/// libxenctrl's `xc_interface`, with its foreign-memory handle.
#[derive(Clone)]
pub struct Xc {
    h: Rc<Handle>,
}

impl Xc {
    /// `xc_interface_open` with libxc's default (stderr) logger.
    pub fn open() -> BResult<Xc> {
        // SAFETY: null loggers are allowed (libxc then logs to stderr); flags 0.
        let xch = unsafe { ffi::xc_interface_open(ptr::null_mut(), ptr::null_mut(), 0) };
        let xch =
            NonNull::new(xch).ok_or_else(|| os_error("xc_interface_open", "cannot open Xen"))?;
        // SAFETY: xch is a live interface; the returned handle lives as long as it.
        let fmem = unsafe { ffi::xc_interface_fmem_handle(xch.as_ptr()) };
        let Some(fmem) = NonNull::new(fmem) else {
            // SAFETY: xch is live and not used afterwards.
            unsafe { ffi::xc_interface_close(xch.as_ptr()) };
            return Err(BackendError::new(
                "xc_interface_open",
                "the interface has no foreign-memory handle",
            ));
        };
        Ok(Xc {
            h: Rc::new(Handle {
                xch,
                fmem,
                window: Window::new(),
                releaser: std::cell::RefCell::new(None),
            }),
        })
    }

    /// Waits until every mapping handed to the releaser ([`Mapping::release_in_background`])
    /// is unmapped.
    pub fn wait_for_releases(&self) {
        if let Some(w) = self.h.window.as_ref() {
            while w.slots.releasing.load(Ordering::Acquire) > 0 {
                std::thread::yield_now();
            }
        }
    }

    fn xch(&self) -> *mut ffi::XcInterface {
        self.h.xch.as_ptr()
    }

    /// The hypervisor's version as (major, minor).
    pub fn version(&self) -> BResult<(u32, u32)> {
        // SAFETY: XENVER_version takes no argument.
        let v = unsafe { ffi::xc_version(self.xch(), ffi::XENVER_VERSION, ptr::null_mut()) };
        if v < 0 {
            return Err(os_error("xc_version", "XENVER_version"));
        }
        Ok(((v as u32) >> 16, (v as u32) & 0xffff))
    }

    /// Issues a domctl through `xc_domctl` (which bounces the structure and sets the
    /// interface version). Guest handles in it must point into hypercall buffers.
    pub fn domctl(&self, op: &'static str, d: &mut ffi::XenDomctl) -> BResult<()> {
        d.interface_version = ffi::DOMCTL_INTERFACE_VERSION;
        // SAFETY: d is a valid, exclusively borrowed xen_domctl; its guest handles are either
        // null or addresses of live hypercall buffers (the callers' contract).
        let rc = unsafe { ffi::xc_domctl(self.xch(), d) };
        if rc < 0 {
            return Err(os_error(op, format!("domctl {} on d{}", d.cmd, d.domain)));
        }
        Ok(())
    }

    /// A hypercall-safe buffer of `len` octets (at least one), zeroed.
    pub fn buffer(&self, len: usize) -> BResult<HypercallBuffer> {
        let len = len.max(1);
        let mut raw = Box::new(ffi::XcHypercallBuffer::empty());
        // SAFETY: raw is a freshly initialised xc_hypercall_buffer_t.
        let p = unsafe { ffi::xc__hypercall_buffer_alloc(self.xch(), &mut *raw, len) };
        let Some(p) = NonNull::new(p.cast::<u8>()) else {
            return Err(os_error("hypercall buffer", format!("{len} octets")));
        };
        // SAFETY: the allocation is `len` octets long and exclusively ours.
        unsafe { ptr::write_bytes(p.as_ptr(), 0, len) };
        Ok(HypercallBuffer {
            h: self.h.clone(),
            raw,
            ptr: p,
            len,
        })
    }

    /// Maps `frames` of domain `dom` (gfns; mfns for a PV domain or DOMID_XEN).
    pub fn map(&self, op: &'static str, dom: u32, prot: c_int, frames: &[u64]) -> BResult<Mapping> {
        if frames.is_empty() {
            return Err(BackendError::new(op, "no frames to map"));
        }
        let arr: Vec<ffi::XenPfn> = frames.iter().map(|&f| f as ffi::XenPfn).collect();
        let mut err = vec![0 as c_int; frames.len()];
        let slot = self.h.window.as_ref().and_then(|w| w.take(frames.len()));
        // SAFETY: arr and err hold frames.len() entries each, as the call requires; with a
        // slot, `at` is the start of a slot of our reservation large enough for the frames,
        // which MAP_FIXED replaces (nothing else lives there).
        let p = unsafe {
            match slot {
                Some((_, at)) => ffi::xenforeignmemory_map2(
                    self.h.fmem.as_ptr(),
                    dom,
                    at,
                    prot,
                    libc::MAP_FIXED,
                    arr.len(),
                    arr.as_ptr(),
                    err.as_mut_ptr(),
                ),
                None => ffi::xenforeignmemory_map(
                    self.h.fmem.as_ptr(),
                    dom,
                    prot,
                    arr.len(),
                    arr.as_ptr(),
                    err.as_mut_ptr(),
                ),
            }
        };
        let Some(p) = NonNull::new(p.cast::<u8>()) else {
            if let (Some((i, _)), Some(w)) = (slot, self.h.window.as_ref()) {
                // The failed map may have left the slot unmapped: reserve it again.
                w.give_back(i, self.h.fmem.as_ptr(), 0);
            }
            return Err(os_error(
                op,
                format!("mapping {} frames of d{dom}", frames.len()),
            ));
        };
        let m = Mapping {
            h: self.h.clone(),
            ptr: p,
            pages: frames.len(),
            slot: slot.map(|(i, _)| i),
            writable: prot & ffi::PROT_WRITE != 0,
            released: false,
        };
        if let Some((i, e)) = err.iter().enumerate().find(|(_, &e)| e != 0) {
            let e = e.abs();
            return Err(BackendError::new(
                op,
                format!(
                    "mapping of frame {:#x} of d{dom} failed: {}",
                    frames.get(i).copied().unwrap_or(0),
                    std::io::Error::from_raw_os_error(e)
                ),
            )
            .errno(e));
        }
        Ok(m)
    }

    /// Maps frames `frame..frame+count` of a resource of `dom` (`xenforeignmemory_map_resource`).
    pub fn map_resource(
        &self,
        op: &'static str,
        dom: u32,
        kind: c_uint,
        id: c_uint,
        frame: u64,
        count: usize,
    ) -> BResult<ResourceMapping> {
        let mut addr: *mut c_void = ptr::null_mut();
        // SAFETY: addr is a valid out pointer; null asks the library to choose the address.
        let fres = unsafe {
            ffi::xenforeignmemory_map_resource(
                self.h.fmem.as_ptr(),
                dom as u16,
                kind,
                id,
                frame as c_ulong,
                count as c_ulong,
                &mut addr,
                ffi::PROT_READ | ffi::PROT_WRITE,
                0,
            )
        };
        let (Some(fres), Some(addr)) = (NonNull::new(fres), NonNull::new(addr.cast::<u8>())) else {
            return Err(os_error(op, format!("resource {kind}/{id} of d{dom}")));
        };
        Ok(ResourceMapping {
            h: self.h.clone(),
            fres,
            ptr: addr,
            len: count * PAGE_SIZE,
        })
    }

    pub fn getinfo(&self, domid: u32) -> BResult<ffi::DomainInfoRaw> {
        let mut info = ffi::DomainInfoRaw::default();
        // SAFETY: info is room for exactly the one entry asked for.
        let n = unsafe { ffi::xc_domain_getinfolist(self.xch(), domid, 1, &mut info) };
        if n < 0 {
            return Err(os_error("getdomaininfo", format!("d{domid}")));
        }
        if n != 1 || info.domain as u32 != domid {
            return Err(BackendError::new(
                "getdomaininfo",
                format!("domain {domid} does not exist"),
            )
            .errno(3)); // ESRCH
        }
        Ok(info)
    }

    pub fn guest_width(&self, domid: u32) -> BResult<u8> {
        let mut w: c_uint = 0;
        // SAFETY: w is a valid out pointer.
        if unsafe { ffi::xc_domain_get_guest_width(self.xch(), domid, &mut w) } < 0 {
            return Err(os_error("get_address_size", format!("d{domid}")));
        }
        Ok(w as u8)
    }

    pub fn maximum_gpfn(&self, domid: u32) -> BResult<u64> {
        let mut g: ffi::XenPfn = 0;
        // SAFETY: g is a valid out pointer.
        if unsafe { ffi::xc_domain_maximum_gpfn(self.xch(), domid, &mut g) } < 0 {
            return Err(os_error("XENMEM_maximum_gpfn", format!("d{domid}")));
        }
        Ok(g as u64)
    }

    pub fn nr_gpfns(&self, domid: u32) -> BResult<u64> {
        let mut g: ffi::XenPfn = 0;
        // SAFETY: g is a valid out pointer.
        if unsafe { ffi::xc_domain_nr_gpfns(self.xch(), domid, &mut g) } < 0 {
            return Err(os_error("xc_domain_nr_gpfns", format!("d{domid}")));
        }
        Ok(g as u64)
    }

    pub fn maximum_ram_page(&self) -> BResult<u64> {
        let mut m: c_ulong = 0;
        // SAFETY: m is a valid out pointer.
        if unsafe { ffi::xc_maximum_ram_page(self.xch(), &mut m) } < 0 {
            return Err(os_error("XENMEM_maximum_ram_page", "host"));
        }
        Ok(m as u64)
    }

    /// The first mfn of each 2 MiB chunk of the m2p table.
    pub fn machphys_mfn_list(&self, chunks: usize) -> BResult<Vec<u64>> {
        let mut list = vec![0 as ffi::XenPfn; chunks];
        // SAFETY: list has room for `chunks` extents.
        let rc =
            unsafe { ffi::xc_machphys_mfn_list(self.xch(), chunks as c_ulong, list.as_mut_ptr()) };
        if rc < 0 {
            return Err(os_error(
                "XENMEM_machphys_mfn_list",
                format!("{chunks} chunks"),
            ));
        }
        Ok(list)
    }

    pub fn vcpu_online(&self, domid: u32, vcpu: u32) -> BResult<bool> {
        let mut v = ffi::VcpuInfoRaw::default();
        // SAFETY: v is a valid out structure.
        if unsafe { ffi::xc_vcpu_getinfo(self.xch(), domid, vcpu, &mut v) } < 0 {
            return Err(os_error("getvcpuinfo", format!("d{domid} vcpu{vcpu}")));
        }
        Ok(v.online != 0)
    }

    /// The vcpu_guest_context_any_t of a vcpu (5168 octets; a 32-bit guest's is the first 2800).
    pub fn vcpu_context(&self, domid: u32, vcpu: u32) -> BResult<Vec<u8>> {
        let mut buf = vec![0u64; ffi::VCPU_CONTEXT_ANY_SIZE / 8];
        // SAFETY: buf is an 8-aligned buffer of sizeof(vcpu_guest_context_any_t) octets.
        let rc =
            unsafe { ffi::xc_vcpu_getcontext(self.xch(), domid, vcpu, buf.as_mut_ptr().cast()) };
        if rc < 0 {
            return Err(os_error("getvcpucontext", format!("d{domid} vcpu{vcpu}")));
        }
        Ok(buf.iter().flat_map(|w| w.to_ne_bytes()).collect())
    }

    pub fn set_vcpu_context(&self, domid: u32, vcpu: u32, ctx: &[u8]) -> BResult<()> {
        let mut buf = vec![0u64; ffi::VCPU_CONTEXT_ANY_SIZE / 8];
        for (w, c) in buf.iter_mut().zip(ctx.chunks(8)) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            *w = u64::from_ne_bytes(b);
        }
        // SAFETY: buf is an 8-aligned buffer of sizeof(vcpu_guest_context_any_t) octets.
        let rc =
            unsafe { ffi::xc_vcpu_setcontext(self.xch(), domid, vcpu, buf.as_mut_ptr().cast()) };
        if rc < 0 {
            return Err(os_error("setvcpucontext", format!("d{domid} vcpu{vcpu}")));
        }
        Ok(())
    }

    pub fn hvm_context(&self, domid: u32) -> BResult<Vec<u8>> {
        // SAFETY: a null buffer of size 0 asks for the size needed.
        let size = unsafe { ffi::xc_domain_hvm_getcontext(self.xch(), domid, ptr::null_mut(), 0) };
        if size < 0 {
            return Err(os_error("gethvmcontext", format!("d{domid}: size")));
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf holds `size` octets.
        let len = unsafe {
            ffi::xc_domain_hvm_getcontext(self.xch(), domid, buf.as_mut_ptr(), size as u32)
        };
        if len < 0 {
            return Err(os_error("gethvmcontext", format!("d{domid}")));
        }
        buf.truncate(len as usize);
        Ok(buf)
    }

    pub fn set_hvm_context(&self, domid: u32, data: &[u8]) -> BResult<()> {
        let mut buf = data.to_vec();
        // SAFETY: buf holds data.len() octets; libxc only reads them.
        let rc = unsafe {
            ffi::xc_domain_hvm_setcontext(self.xch(), domid, buf.as_mut_ptr(), buf.len() as u32)
        };
        if rc < 0 {
            return Err(os_error("sethvmcontext", format!("d{domid}")));
        }
        Ok(())
    }

    pub fn hvm_param(&self, domid: u32, index: u32) -> BResult<u64> {
        let mut v = 0u64;
        // SAFETY: v is a valid out pointer.
        if unsafe { ffi::xc_hvm_param_get(self.xch(), domid, index, &mut v) } < 0 {
            return Err(os_error(
                "HVMOP_get_param",
                format!("d{domid} param {index}"),
            ));
        }
        Ok(v)
    }

    pub fn set_hvm_param(&self, domid: u32, index: u32, value: u64) -> BResult<()> {
        // SAFETY: plain values.
        if unsafe { ffi::xc_hvm_param_set(self.xch(), domid, index, value) } < 0 {
            return Err(os_error(
                "HVMOP_set_param",
                format!("d{domid} param {index} = {value:#x}"),
            ));
        }
        Ok(())
    }

    /// (mode, elapsed nsec, kHz, incarnation).
    pub fn tsc_info(&self, domid: u32) -> BResult<(u32, u64, u32, u32)> {
        let (mut mode, mut nsec, mut khz, mut inc) = (0u32, 0u64, 0u32, 0u32);
        // SAFETY: four valid out pointers.
        let rc = unsafe {
            ffi::xc_domain_get_tsc_info(self.xch(), domid, &mut mode, &mut nsec, &mut khz, &mut inc)
        };
        if rc < 0 {
            return Err(os_error("gettscinfo", format!("d{domid}")));
        }
        Ok((mode, nsec, khz, inc))
    }

    pub fn set_tsc_info(
        &self,
        domid: u32,
        mode: u32,
        nsec: u64,
        khz: u32,
        inc: u32,
    ) -> BResult<()> {
        // SAFETY: plain values.
        if unsafe { ffi::xc_domain_set_tsc_info(self.xch(), domid, mode, nsec, khz, inc) } < 0 {
            return Err(os_error("settscinfo", format!("d{domid}")));
        }
        Ok(())
    }

    pub fn shadow_control(&self, domid: u32, sop: u32) -> BResult<()> {
        // SAFETY: a null mb pointer is allowed for the enable/off operations.
        if unsafe { ffi::xc_shadow_control(self.xch(), domid, sop, ptr::null_mut(), 0) } < 0 {
            return Err(os_error("shadow_op", format!("d{domid} op {sop}")));
        }
        Ok(())
    }

    /// CLEAN or PEEK into `bitmap` (one bit per pfn, `pages` bits).
    pub fn logdirty(
        &self,
        domid: u32,
        sop: u32,
        bitmap: &mut HypercallBuffer,
        pages: u64,
        mode: u32,
    ) -> BResult<ffi::ShadowOpStats> {
        if bitmap.len() * 8 < pages as usize {
            return Err(BackendError::new("logdirty", "the bitmap is too small"));
        }
        let mut stats = ffi::ShadowOpStats::default();
        // SAFETY: bitmap.raw is the xc_hypercall_buffer_t of a live allocation large enough
        // for `pages` bits; stats is a valid out structure.
        let rc = unsafe {
            ffi::xc_logdirty_control(
                self.xch(),
                domid,
                sop,
                &mut *bitmap.raw,
                pages as c_ulong,
                mode,
                &mut stats,
            )
        };
        if rc < 0 {
            return Err(os_error(
                "shadow_op",
                format!("d{domid} log-dirty op {sop}"),
            ));
        }
        Ok(stats)
    }

    /// Populates one page at each of `pfns`, all or it is an error (as libxc's
    /// `xc_domain_populate_physmap_exact`: EBUSY when Xen gave fewer); the frame of each
    /// (the mfn for a PV domain; the pfn for a translated one).
    pub fn populate_physmap_exact(&self, domid: u32, pfns: &[u64]) -> BResult<Vec<u64>> {
        let (done, frames) = self.populate_physmap_order(domid, pfns, 0)?;
        if done != pfns.len() {
            return Err(BackendError::new(
                "populate_physmap",
                format!(
                    "d{domid}: Xen gave {done} of {} pages from {:#x}",
                    pfns.len(),
                    pfns.first().unwrap_or(&0)
                ),
            )
            .errno(libc::EBUSY));
        }
        Ok(frames)
    }

    /// Populates extents of `1 << order` pages, each starting at a pfn of `bases` (aligned to
    /// the order), as many as Xen can give in order: how many it gave, and the first frame of
    /// each (the mfn for a PV domain; the pfn for a translated one).
    pub fn populate_physmap_order(
        &self,
        domid: u32,
        bases: &[u64],
        order: u32,
    ) -> BResult<(usize, Vec<u64>)> {
        let mut arr: Vec<ffi::XenPfn> = bases.iter().map(|&p| p as ffi::XenPfn).collect();
        // SAFETY: arr holds nr_extents entries, which Xen reads and writes back in place.
        let rc = unsafe {
            ffi::xc_domain_populate_physmap(
                self.xch(),
                domid,
                arr.len() as c_ulong,
                order,
                0,
                arr.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(os_error(
                "populate_physmap",
                format!(
                    "d{domid}: {} extents of order {order} from {:#x}",
                    bases.len(),
                    bases.first().unwrap_or(&0)
                ),
            ));
        }
        Ok(((rc as usize).min(arr.len()), arr))
    }

    pub fn mmuext(&self, domid: u32, ops: &mut [ffi::MmuextOp]) -> BResult<()> {
        // SAFETY: ops is a valid array of nr_ops mmuext_op structures.
        let rc =
            unsafe { ffi::xc_mmuext_op(self.xch(), ops.as_mut_ptr(), ops.len() as c_uint, domid) };
        if rc < 0 {
            return Err(os_error(
                "mmuext_op",
                format!("d{domid}: {} ops", ops.len()),
            ));
        }
        Ok(())
    }
}

/// Memory from `xc_hypercall_buffer_alloc`, freed on drop.
pub struct HypercallBuffer {
    h: Rc<Handle>,
    raw: Box<ffi::XcHypercallBuffer>,
    ptr: NonNull<u8>,
    len: usize,
}

impl HypercallBuffer {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The address for a guest handle.
    pub fn handle(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn write(&mut self, off: usize, data: &[u8]) -> BResult<()> {
        if !in_range(off, data.len(), self.len) {
            return Err(BackendError::new(
                "hypercall buffer",
                "write beyond the buffer",
            ));
        }
        // SAFETY: the range was checked against the allocation, which only we access.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) };
        Ok(())
    }

    pub fn read(&self, off: usize, out: &mut [u8]) -> BResult<()> {
        if !in_range(off, out.len(), self.len) {
            return Err(BackendError::new(
                "hypercall buffer",
                "read beyond the buffer",
            ));
        }
        // SAFETY: the range was checked against the allocation; Xen wrote it before returning.
        unsafe {
            ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    pub fn to_vec(&self, len: usize) -> BResult<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(0, &mut v)?;
        Ok(v)
    }
}

impl Drop for HypercallBuffer {
    fn drop(&mut self) {
        // SAFETY: raw describes a live allocation of this interface, freed once.
        unsafe { ffi::xc__hypercall_buffer_free(self.h.xch.as_ptr(), &mut *self.raw) };
    }
}

/// Guest (or hypervisor) frames mapped into this process, unmapped on drop.
pub struct Mapping {
    h: Rc<Handle>,
    ptr: NonNull<u8>,
    pages: usize,
    /// The slot of the [`Window`] it occupies, if it was mapped there.
    slot: Option<usize>,
    /// Mapped with PROT_WRITE.
    writable: bool,
    /// Handed to the releaser, which unmaps it: nothing left to do on drop.
    released: bool,
}

impl Mapping {
    pub fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    fn check(&self, off: usize, len: usize) -> BResult<()> {
        if in_range(off, len, self.len()) {
            return Ok(());
        }
        Err(BackendError::new(
            "foreign mapping",
            format!("access {off:#x}+{len:#x} beyond {:#x} octets", self.len()),
        ))
    }

    /// Copies out of the mapping.
    pub fn read(&self, off: usize, out: &mut [u8]) -> BResult<()> {
        self.check(off, out.len())?;
        // SAFETY: the range lies inside the mapping, which stays mapped while self lives.
        unsafe {
            ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    /// The mapped frames as octets, for as long as the mapping lives: what a save writes out
    /// without copying them first. The guest (or Xen) may change them meanwhile, as it may
    /// change them just after [`Mapping::read`] copied them; a reader gets whatever the frames
    /// held at that moment, and a live migration's log-dirty tracking sends a changed page
    /// again.
    pub fn lend(&self) -> &[u8] {
        // SAFETY: `ptr` is the start of `self.len()` octets mapped readable (every mapping is
        // PROT_READ at least) that stay mapped while `self` lives, which the returned slice
        // cannot outlive. Nothing in this process writes to them through another path while
        // the slice is alive: a writable mapping of frames is only made by a restore, which
        // lends it with `lend_mut` alone, never through `lend`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    /// The mapped frames as writable octets, for as long as the borrow lasts: what a restore
    /// reads page data from its stream straight into. Refused for a mapping made without
    /// PROT_WRITE.
    pub fn lend_mut(&mut self) -> BResult<&mut [u8]> {
        if !self.writable {
            return Err(BackendError::new(
                "foreign mapping",
                "the frames were mapped read-only and cannot be lent writable",
            ));
        }
        // SAFETY: `ptr` is the start of `self.len()` octets mapped readable and writable
        // (checked above) that stay mapped while `self` lives; the slice borrows `self`
        // mutably, so it is the only one made from this mapping while it lives, and it cannot
        // outlive the mapping. The frames belong to the domain being restored, which does not
        // run, and this process maps a batch of its frames once at a time, so nothing else
        // here reads or writes them meanwhile.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) })
    }

    /// Copies into the mapping (mapped writable).
    pub fn write(&mut self, off: usize, data: &[u8]) -> BResult<()> {
        self.check(off, data.len())?;
        // SAFETY: the range lies inside the mapping, which was mapped with PROT_WRITE by the
        // caller's choice and stays mapped while self lives.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) };
        Ok(())
    }

    /// A little-endian u64 at `off`, read once.
    pub fn read_u64(&self, off: usize) -> BResult<u64> {
        self.check(off, 8)?;
        if !off.is_multiple_of(8) {
            let mut b = [0u8; 8];
            self.read(off, &mut b)?;
            return Ok(u64::from_le_bytes(b));
        }
        // SAFETY: in range and 8-aligned (the mapping is page-aligned); a volatile read since
        // the guest or Xen may change the word under us.
        Ok(u64::from_le(unsafe {
            ptr::read_volatile(self.ptr.as_ptr().add(off).cast::<u64>())
        }))
    }
}

impl Mapping {
    /// Takes the frames out of the address space on the releaser thread, so that the caller
    /// goes on (writing out the next batch) while they are unmapped; their window slot is
    /// taken again only once an inaccessible reservation is back over it. Unmapped here
    /// instead when the thread cannot be started.
    pub fn release_in_background(mut self) {
        let h = self.h.clone();
        let mut releaser = h.releaser.borrow_mut();
        if releaser.is_none() {
            *releaser = Releaser::start(h.fmem, h.window.as_ref().map(|w| w.slots.clone()));
        }
        // Only a mapping in a window slot goes: the window counts what is on its way out
        // (what `take` and `Xc::wait_for_releases` wait for); any other is unmapped here.
        let (Some(r), Some(w), Some(_)) = (releaser.as_ref(), h.window.as_ref(), self.slot) else {
            return;
        };
        w.slots.releasing.fetch_add(1, Ordering::AcqRel);
        let job = Release {
            at: self.ptr.as_ptr() as usize,
            pages: self.pages,
            slot: self.slot,
        };
        if r.jobs.send(job).is_ok() {
            self.released = true;
        } else {
            w.slots.releasing.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let (Some(i), Some(w)) = (self.slot, self.h.window.as_ref()) {
            w.give_back(i, self.h.fmem.as_ptr(), self.pages);
            return;
        }
        // SAFETY: ptr/pages are what xenforeignmemory_map returned; unmapped once.
        unsafe {
            ffi::xenforeignmemory_unmap(self.h.fmem.as_ptr(), self.ptr.as_ptr().cast(), self.pages)
        };
    }
}

/// A mapped resource (grant table frames), released on drop.
pub struct ResourceMapping {
    h: Rc<Handle>,
    fres: NonNull<ffi::ForeignResource>,
    ptr: NonNull<u8>,
    len: usize,
}

impl ResourceMapping {
    pub fn write(&mut self, off: usize, data: &[u8]) -> BResult<()> {
        if !in_range(off, data.len(), self.len) {
            return Err(BackendError::new(
                "resource mapping",
                "write beyond the mapping",
            ));
        }
        // SAFETY: in range of the writable mapping, alive while self lives.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) };
        Ok(())
    }
}

impl Drop for ResourceMapping {
    fn drop(&mut self) {
        // SAFETY: fres came from xenforeignmemory_map_resource and is released once.
        unsafe { ffi::xenforeignmemory_unmap_resource(self.h.fmem.as_ptr(), self.fres.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every slot taken and one on its way out through the releaser, a mapping waits
    /// for that slot instead of going outside the window; with none on its way out, it gets
    /// none (and is mapped elsewhere, as before).
    #[test]
    fn a_full_window_waits_for_the_slot_being_released() {
        let w = Window::new().expect("window");
        let taken: Vec<usize> = (0..WINDOW_SLOTS)
            .map(|_| w.take(1).expect("slot").0)
            .collect();
        assert_eq!(taken, (0..WINDOW_SLOTS).collect::<Vec<_>>());
        assert!(w.take(1).is_none());
        w.slots.releasing.fetch_add(1, Ordering::AcqRel);
        let slots = w.slots.clone();
        let at = w.base.as_ptr().wrapping_add(3 * w.slot_len()) as usize;
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            slots.give_back(3, at as *mut c_void, ptr::null_mut(), 0);
            slots.releasing.fetch_sub(1, Ordering::AcqRel);
        });
        let (i, p) = w.take(1).expect("the released slot");
        t.join().expect("releaser");
        assert_eq!((i, p as usize), (3, at));
        // Too large for a slot: none.
        assert!(w.take(w.slot_pages + 1).is_none());
    }
}
