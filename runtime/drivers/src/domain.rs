//! What the save and restore drivers ask of a hypervisor, as traits.
//!
//! A backend implements [`Domain`] for one domain: facts, memory (pfn→gfn, page types, read,
//! write, populate), vcpu state, HVM state, TSC, shared info, CPU policies, log-dirty and
//! suspend state. The toolstack side (what libxl answers in xenguest's callbacks) is
//! [`SaveCallbacks`] and [`RestoreCallbacks`]. The drivers in [`crate::save`] and
//! [`crate::restore`] use nothing else, so a backend over libxenctrl plugs in unchanged.

use std::fmt;
use std::time::Duration;

pub use crate::limits::PAGE_SIZE;
pub use xenmig_core::GuestType;

/// Facts about a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// PV or HVM.
    pub guest: GuestType,
    /// Octets in a guest word: 4 or 8 (PV); 8 for HVM.
    pub guest_width: u8,
    /// Page-table levels: 3 or 4 (PV).
    pub pt_levels: u8,
    /// Highest pfn the guest may use.
    pub max_pfn: u64,
    /// Highest vcpu id.
    pub max_vcpu_id: u32,
    /// Whether the domain has shut down with reason suspend.
    pub suspended: bool,
}

/// Pfns below 4 GiB: an HVM guest's RAM, MMIO hole and special pages all lie under this
/// boundary except its RAM above 4 GiB.
pub const LOW_MEMORY_PFNS: u64 = (1 << 32) >> crate::limits::PAGE_SHIFT;

/// What a restore's destination can hold, asked of the backend before the stream is read:
/// every structure the restore driver keeps per pfn grows only inside these bounds, so a
/// hostile or corrupt stream cannot make it allocate more than the domain justifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// The highest pfn a stream may name.
    pub max_pfn: u64,
    /// The most pages the domain may have populated (Xen's `max_pages`).
    pub max_pages: u64,
}

impl MemoryLimits {
    /// The limits of a domain allowed `max_pages` pages whose pfns so far reach `max_pfn`:
    /// pfns below 4 GiB (RAM, the MMIO hole's special pages), and above that no further
    /// than all of its pages would reach if they were placed past 4 GiB.
    pub fn for_pages(max_pfn: u64, max_pages: u64) -> Self {
        MemoryLimits {
            max_pfn: max_pfn.max((LOW_MEMORY_PFNS - 1).saturating_add(max_pages)),
            max_pages,
        }
    }
}

/// Which vcpu state blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VcpuState {
    /// vcpu_guest_context (PV: 2800 or 5168 octets).
    Basic,
    /// Extended context (at most 128 octets).
    Extended,
    /// xsave area: u64 xfeature mask, then the buffer.
    Xsave,
    /// MSR entries, 16 octets each.
    Msrs,
}

/// TSC state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TscInfo {
    /// The TSC mode, as Xen numbers it.
    pub mode: u32,
    /// The guest's TSC frequency in kHz.
    pub khz: u32,
    /// The elapsed time Xen adds to the TSC, in nanoseconds.
    pub nsec: u64,
    /// The TSC incarnation: how many times the domain has been restored or migrated.
    pub incarnation: u32,
}

/// A page type as Xen reports it (the PFINFO nibble, in the libxc spec's enum).
pub type PageType = crate::libxc::PageType;

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// The operation, e.g. `map pages` or `populate`.
    pub op: &'static str,
    /// errno-style code when there is one (EAGAIN, ERANGE, ...).
    pub errno: Option<i32>,
    /// What went wrong, in words.
    pub detail: String,
}

impl BackendError {
    /// A failure of operation `op`, without an errno.
    pub fn new(op: &'static str, detail: impl Into<String>) -> Self {
        BackendError {
            op,
            errno: None,
            detail: detail.into(),
        }
    }

    /// Adds an errno-style code.
    pub fn errno(mut self, e: i32) -> Self {
        self.errno = Some(e);
        self
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.op, self.detail)?;
        if let Some(e) = self.errno {
            write!(f, " (errno {e})")?;
        }
        Ok(())
    }
}

impl std::error::Error for BackendError {}

/// errno values the drivers look at.
pub mod errno {
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Result out of range.
    pub const ERANGE: i32 = 34;
    /// Argument list too long.
    pub const E2BIG: i32 = 7;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
}

/// What a backend call returns.
pub type BResult<T> = Result<T, BackendError>;

/// One domain as the drivers see it.
pub trait Domain {
    /// Facts about the domain now.
    fn info(&mut self) -> BResult<DomainInfo>;

    /// Number of pfns the save walks (PV: max_pfn + 1; HVM: the highest gpfn + 1).
    fn p2m_size(&mut self) -> BResult<u64>;

    /// The machine frame (gfn) behind each pfn, `None` where the guest has none (ballooned).
    /// PV: the guest's p2m; HVM: identity for populated pfns.
    fn pfn_to_gfn(&mut self, pfns: &[u64], out: &mut [Option<u64>]) -> BResult<()>;

    /// Page types of gfns, as getpageframeinfo3 reports them.
    fn page_types(&mut self, gfns: &[u64], out: &mut [PageType]) -> BResult<()>;

    /// Copies the pages of `gfns` into `out` (4096 octets each, in order).
    fn read_pages(&mut self, gfns: &[u64], out: &mut [u8]) -> BResult<()>;

    /// Writes pages into the guest (4096 octets each); restore only.
    fn write_pages(&mut self, gfns: &[u64], data: &[u8]) -> BResult<()>;

    /// Gives the guest memory at these pfns (restore). Already populated pfns are skipped by
    /// the caller.
    fn populate(&mut self, pfns: &[u64]) -> BResult<()>;

    /// Records the page types a restore learnt from the stream (Xen keeps them in the
    /// restorer; a simulated domain keeps them to report them back).
    fn set_page_types(&mut self, _pfns: &[u64], _types: &[PageType]) -> BResult<()> {
        Ok(())
    }

    /// A vcpu's state blob; empty when the vcpu has none of that kind.
    fn vcpu_state(&mut self, vcpu: u32, which: VcpuState) -> BResult<Vec<u8>>;
    /// Sets a vcpu's state blob (restore).
    fn set_vcpu_state(&mut self, vcpu: u32, which: VcpuState, data: &[u8]) -> BResult<()>;
    /// Online vcpu ids.
    fn online_vcpus(&mut self) -> BResult<Vec<u32>>;

    /// The HVM context blob (all HVM save records).
    fn hvm_context(&mut self) -> BResult<Vec<u8>>;
    /// Loads the HVM context blob (restore).
    fn set_hvm_context(&mut self, data: &[u8]) -> BResult<()>;
    /// The value of an HVM parameter.
    fn hvm_param(&mut self, index: u64) -> BResult<u64>;
    /// Sets an HVM parameter (restore).
    fn set_hvm_param(&mut self, index: u64, value: u64) -> BResult<()>;

    /// The domain's TSC state.
    fn tsc_info(&mut self) -> BResult<TscInfo>;
    /// Sets the domain's TSC state (restore).
    fn set_tsc_info(&mut self, tsc: TscInfo) -> BResult<()>;

    /// The shared info page.
    fn shared_info(&mut self) -> BResult<Vec<u8>>;
    /// Writes the shared info page (restore, PV).
    fn set_shared_info(&mut self, page: &[u8]) -> BResult<()>;

    /// The CPUID policy as 24-octet leaves and the MSR policy as 16-octet entries (both in
    /// wire form, little-endian). Empty when the backend has none.
    fn cpu_policy(&mut self) -> BResult<(Vec<u8>, Vec<u8>)>;
    /// Applies CPUID and MSR policies in the same wire form (restore); either may be empty.
    fn set_cpu_policy(&mut self, cpuid: &[u8], msrs: &[u8]) -> BResult<()>;

    /// Starts dirty tracking.
    fn enable_logdirty(&mut self) -> BResult<()>;
    /// Stops dirty tracking.
    fn disable_logdirty(&mut self) -> BResult<()>;
    /// Sets in `bitmap` (one bit per pfn) every page dirtied since the last clean, clears the
    /// log, and returns the number of dirty pages. `final_pass`: the guest is suspended.
    fn clean_dirty(&mut self, bitmap: &mut Bitmap, final_pass: bool) -> BResult<u64>;
    /// The number of dirty pages without clearing the log.
    fn peek_dirty(&mut self) -> BResult<u64>;

    /// PV only: the guest's p2m (pfn → mfn) and the pfns of the frames that hold it.
    fn pv_p2m(&mut self) -> BResult<(Vec<u64>, Vec<u64>)> {
        Err(BackendError::new("pv_p2m", "not a PV domain"))
    }
    /// PV only: machine frame → pfn, `None` for frames the guest does not own.
    fn mfn_to_pfn(&mut self, _mfn: u64) -> Option<u64> {
        None
    }
    /// PV restore: sets the guest width (4 or 8).
    fn set_address_size(&mut self, _width: u8) -> BResult<()> {
        Err(BackendError::new("set_address_size", "not a PV domain"))
    }
    /// Restore: how far the destination's memory can go ([`MemoryLimits`]). The default
    /// derives it from [`Domain::info`] alone (`max_pfn + 1` pages); backends that know the
    /// domain's memory allowance report it.
    fn memory_limits(&mut self) -> BResult<MemoryLimits> {
        let info = self.info()?;
        Ok(MemoryLimits {
            max_pfn: info.max_pfn,
            max_pages: info.max_pfn.saturating_add(1),
        })
    }
    /// PV restore: grows the p2m so that `max_pfn` is valid.
    fn expand_p2m(&mut self, _max_pfn: u64) -> BResult<()> {
        Err(BackendError::new("expand_p2m", "not a PV domain"))
    }
    /// PV restore: writes the rebuilt p2m into the guest's p2m frames (given as pfns).
    fn write_p2m(&mut self, _frames: &[u64]) -> BResult<()> {
        Err(BackendError::new("write_p2m", "not a PV domain"))
    }
    /// PV restore: pins page tables, `(pfn, type)` with the pinned type.
    fn pin_page_tables(&mut self, _tables: &[(u64, PageType)]) -> BResult<()> {
        Err(BackendError::new("pin_page_tables", "not a PV domain"))
    }
    /// PV: the generation counter of the p2m (a live save fails when it changes).
    fn p2m_generation(&mut self) -> BResult<u64> {
        Ok(0)
    }

    /// The clock the drivers time passes with (a simulated domain has its own).
    fn now(&self) -> Duration {
        monotonic()
    }

    /// Whether a save reads each batch's pages with one [`Domain::read_pages`] call. A
    /// backend whose every call has a fixed cost, such as mapping the guest's frames and
    /// unmapping them again, says yes; otherwise the driver reads a large batch in
    /// cache-sized pieces, each written out before the next is read.
    fn reads_whole_batches(&self) -> bool {
        false
    }

    /// Lends the contents of the frames `gfns` (at most a batch) to `f` for the time of the
    /// call: `pieces` holds them in order, `gfns.len()` pages in all, cut anywhere. A backend
    /// that can hand its frames out as they stand (the guest's frames mapped into this
    /// process, the simulator's memory) does so without copying them, and a save writes them
    /// from there with vectored writes; the default copies them with
    /// [`Domain::read_pages`]. What `f` returns is returned.
    ///
    /// A running guest may change a lent page while `f` holds it, as it may change a page
    /// just after `read_pages` copied it: log-dirty tracking sends such a page again.
    fn lend_pages(
        &mut self,
        gfns: &[u64],
        f: &mut dyn FnMut(&[&[u8]]) -> BResult<()>,
    ) -> BResult<()> {
        let mut buf = vec![0u8; gfns.len() * PAGE_SIZE];
        self.read_pages(gfns, &mut buf)?;
        f(&[&buf])
    }

    /// Whether [`Domain::lend_pages`] lends without copying; if not, a save copies pages
    /// with [`Domain::read_pages`] into a buffer it keeps.
    fn lends_pages(&self) -> bool {
        false
    }

    /// Lends the frames `gfns` (at most a batch) writable to `f`, which fills them: `pieces`
    /// holds them in order, `gfns.len()` pages in all, cut anywhere. A backend that can hand
    /// its frames out (the guest's frames mapped into this process) does so, and a restore
    /// reads page octets from its stream straight into them; the default lends a buffer and
    /// writes it with [`Domain::write_pages`] once `f` succeeded. When `f` fails, what it
    /// wrote may or may not have reached the frames (the restore fails). What `f` returns is
    /// returned.
    fn fill_pages(
        &mut self,
        gfns: &[u64],
        f: &mut dyn FnMut(&mut [&mut [u8]]) -> BResult<()>,
    ) -> BResult<()> {
        let mut buf = vec![0u8; gfns.len() * PAGE_SIZE];
        f(&mut [&mut buf])?;
        self.write_pages(gfns, &buf)
    }
}

/// Implements the named methods of [`Domain`] by handing each call to the field `$field`,
/// itself a [`Domain`]: for wrappers that add to a domain without changing most of what it
/// does. List every method the wrapper does not write itself (the compiler reports any it
/// forgets). A wrapper that counts the pages a save reads:
///
/// ```
/// use xenmig_drivers::domain::{BResult, Domain};
///
/// struct Counted<D> {
///     dom: D,
///     pages_read: u64,
/// }
///
/// impl<D: Domain> Domain for Counted<D> {
///     xenmig_drivers::forward_domain!(
///         dom:
///         info, p2m_size, pfn_to_gfn, page_types, write_pages, populate, set_page_types,
///         vcpu_state, set_vcpu_state, online_vcpus, hvm_context, set_hvm_context, hvm_param,
///         set_hvm_param, tsc_info, set_tsc_info, shared_info, set_shared_info, cpu_policy,
///         set_cpu_policy, enable_logdirty, disable_logdirty, clean_dirty, peek_dirty, pv_p2m,
///         mfn_to_pfn, set_address_size, expand_p2m, write_p2m, pin_page_tables,
///         p2m_generation, now, reads_whole_batches, memory_limits
///     );
///     fn read_pages(&mut self, gfns: &[u64], out: &mut [u8]) -> BResult<()> {
///         self.pages_read += gfns.len() as u64;
///         self.dom.read_pages(gfns, out)
///     }
/// }
/// ```
#[macro_export]
macro_rules! forward_domain {
    ($field:ident: $($method:ident),+ $(,)?) => {
        $( $crate::forward_domain!(@one $field $method); )+
    };
    (@one $f:ident info) => {
        fn info(&mut self) -> $crate::domain::BResult<$crate::domain::DomainInfo> {
            self.$f.info()
        }
    };
    (@one $f:ident p2m_size) => {
        fn p2m_size(&mut self) -> $crate::domain::BResult<u64> {
            self.$f.p2m_size()
        }
    };
    (@one $f:ident pfn_to_gfn) => {
        fn pfn_to_gfn(
            &mut self,
            pfns: &[u64],
            out: &mut [Option<u64>],
        ) -> $crate::domain::BResult<()> {
            self.$f.pfn_to_gfn(pfns, out)
        }
    };
    (@one $f:ident page_types) => {
        fn page_types(
            &mut self,
            gfns: &[u64],
            out: &mut [$crate::domain::PageType],
        ) -> $crate::domain::BResult<()> {
            self.$f.page_types(gfns, out)
        }
    };
    (@one $f:ident read_pages) => {
        fn read_pages(&mut self, gfns: &[u64], out: &mut [u8]) -> $crate::domain::BResult<()> {
            self.$f.read_pages(gfns, out)
        }
    };
    (@one $f:ident write_pages) => {
        fn write_pages(&mut self, gfns: &[u64], data: &[u8]) -> $crate::domain::BResult<()> {
            self.$f.write_pages(gfns, data)
        }
    };
    (@one $f:ident populate) => {
        fn populate(&mut self, pfns: &[u64]) -> $crate::domain::BResult<()> {
            self.$f.populate(pfns)
        }
    };
    (@one $f:ident set_page_types) => {
        fn set_page_types(
            &mut self,
            pfns: &[u64],
            types: &[$crate::domain::PageType],
        ) -> $crate::domain::BResult<()> {
            self.$f.set_page_types(pfns, types)
        }
    };
    (@one $f:ident vcpu_state) => {
        fn vcpu_state(
            &mut self,
            vcpu: u32,
            which: $crate::domain::VcpuState,
        ) -> $crate::domain::BResult<Vec<u8>> {
            self.$f.vcpu_state(vcpu, which)
        }
    };
    (@one $f:ident set_vcpu_state) => {
        fn set_vcpu_state(
            &mut self,
            vcpu: u32,
            which: $crate::domain::VcpuState,
            data: &[u8],
        ) -> $crate::domain::BResult<()> {
            self.$f.set_vcpu_state(vcpu, which, data)
        }
    };
    (@one $f:ident online_vcpus) => {
        fn online_vcpus(&mut self) -> $crate::domain::BResult<Vec<u32>> {
            self.$f.online_vcpus()
        }
    };
    (@one $f:ident hvm_context) => {
        fn hvm_context(&mut self) -> $crate::domain::BResult<Vec<u8>> {
            self.$f.hvm_context()
        }
    };
    (@one $f:ident set_hvm_context) => {
        fn set_hvm_context(&mut self, data: &[u8]) -> $crate::domain::BResult<()> {
            self.$f.set_hvm_context(data)
        }
    };
    (@one $f:ident hvm_param) => {
        fn hvm_param(&mut self, index: u64) -> $crate::domain::BResult<u64> {
            self.$f.hvm_param(index)
        }
    };
    (@one $f:ident set_hvm_param) => {
        fn set_hvm_param(&mut self, index: u64, value: u64) -> $crate::domain::BResult<()> {
            self.$f.set_hvm_param(index, value)
        }
    };
    (@one $f:ident tsc_info) => {
        fn tsc_info(&mut self) -> $crate::domain::BResult<$crate::domain::TscInfo> {
            self.$f.tsc_info()
        }
    };
    (@one $f:ident set_tsc_info) => {
        fn set_tsc_info(&mut self, tsc: $crate::domain::TscInfo) -> $crate::domain::BResult<()> {
            self.$f.set_tsc_info(tsc)
        }
    };
    (@one $f:ident shared_info) => {
        fn shared_info(&mut self) -> $crate::domain::BResult<Vec<u8>> {
            self.$f.shared_info()
        }
    };
    (@one $f:ident set_shared_info) => {
        fn set_shared_info(&mut self, page: &[u8]) -> $crate::domain::BResult<()> {
            self.$f.set_shared_info(page)
        }
    };
    (@one $f:ident cpu_policy) => {
        fn cpu_policy(&mut self) -> $crate::domain::BResult<(Vec<u8>, Vec<u8>)> {
            self.$f.cpu_policy()
        }
    };
    (@one $f:ident set_cpu_policy) => {
        fn set_cpu_policy(&mut self, cpuid: &[u8], msrs: &[u8]) -> $crate::domain::BResult<()> {
            self.$f.set_cpu_policy(cpuid, msrs)
        }
    };
    (@one $f:ident enable_logdirty) => {
        fn enable_logdirty(&mut self) -> $crate::domain::BResult<()> {
            self.$f.enable_logdirty()
        }
    };
    (@one $f:ident disable_logdirty) => {
        fn disable_logdirty(&mut self) -> $crate::domain::BResult<()> {
            self.$f.disable_logdirty()
        }
    };
    (@one $f:ident clean_dirty) => {
        fn clean_dirty(
            &mut self,
            bitmap: &mut $crate::domain::Bitmap,
            final_pass: bool,
        ) -> $crate::domain::BResult<u64> {
            self.$f.clean_dirty(bitmap, final_pass)
        }
    };
    (@one $f:ident peek_dirty) => {
        fn peek_dirty(&mut self) -> $crate::domain::BResult<u64> {
            self.$f.peek_dirty()
        }
    };
    (@one $f:ident pv_p2m) => {
        fn pv_p2m(&mut self) -> $crate::domain::BResult<(Vec<u64>, Vec<u64>)> {
            self.$f.pv_p2m()
        }
    };
    (@one $f:ident mfn_to_pfn) => {
        fn mfn_to_pfn(&mut self, mfn: u64) -> Option<u64> {
            self.$f.mfn_to_pfn(mfn)
        }
    };
    (@one $f:ident set_address_size) => {
        fn set_address_size(&mut self, width: u8) -> $crate::domain::BResult<()> {
            self.$f.set_address_size(width)
        }
    };
    (@one $f:ident memory_limits) => {
        fn memory_limits(&mut self) -> $crate::domain::BResult<$crate::domain::MemoryLimits> {
            self.$f.memory_limits()
        }
    };
    (@one $f:ident expand_p2m) => {
        fn expand_p2m(&mut self, max_pfn: u64) -> $crate::domain::BResult<()> {
            self.$f.expand_p2m(max_pfn)
        }
    };
    (@one $f:ident write_p2m) => {
        fn write_p2m(&mut self, frames: &[u64]) -> $crate::domain::BResult<()> {
            self.$f.write_p2m(frames)
        }
    };
    (@one $f:ident pin_page_tables) => {
        fn pin_page_tables(
            &mut self,
            tables: &[(u64, $crate::domain::PageType)],
        ) -> $crate::domain::BResult<()> {
            self.$f.pin_page_tables(tables)
        }
    };
    (@one $f:ident p2m_generation) => {
        fn p2m_generation(&mut self) -> $crate::domain::BResult<u64> {
            self.$f.p2m_generation()
        }
    };
    (@one $f:ident now) => {
        fn now(&self) -> ::std::time::Duration {
            self.$f.now()
        }
    };
    (@one $f:ident reads_whole_batches) => {
        fn reads_whole_batches(&self) -> bool {
            self.$f.reads_whole_batches()
        }
    };
    (@one $f:ident lend_pages) => {
        fn lend_pages(
            &mut self,
            gfns: &[u64],
            f: &mut dyn FnMut(&[&[u8]]) -> $crate::domain::BResult<()>,
        ) -> $crate::domain::BResult<()> {
            self.$f.lend_pages(gfns, f)
        }
    };
    (@one $f:ident lends_pages) => {
        fn lends_pages(&self) -> bool {
            self.$f.lends_pages()
        }
    };
    (@one $f:ident fill_pages) => {
        fn fill_pages(
            &mut self,
            gfns: &[u64],
            f: &mut dyn FnMut(&mut [&mut [u8]]) -> $crate::domain::BResult<()>,
        ) -> $crate::domain::BResult<()> {
            self.$f.fill_pages(gfns, f)
        }
    };
}

fn monotonic() -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// A bitmap with one bit per pfn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitmap {
    words: Vec<u64>,
    bits: u64,
}

impl Bitmap {
    /// A bitmap of `bits` bits, all clear.
    pub fn new(bits: u64) -> Self {
        Bitmap {
            words: vec![0; bits.div_ceil(64) as usize],
            bits,
        }
    }

    /// The number of bits.
    pub fn len(&self) -> u64 {
        self.bits
    }

    /// Whether it has no bits.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Sets bit `i` (bits past the end are ignored).
    pub fn set(&mut self, i: u64) {
        if i < self.bits {
            if let Some(w) = self.words.get_mut((i / 64) as usize) {
                *w |= 1 << (i % 64);
            }
        }
    }

    /// Clears bit `i`.
    pub fn clear(&mut self, i: u64) {
        if let Some(w) = self.words.get_mut((i / 64) as usize) {
            *w &= !(1 << (i % 64));
        }
    }

    /// Whether bit `i` is set (false past the end).
    pub fn get(&self, i: u64) -> bool {
        i < self.bits
            && self
                .words
                .get((i / 64) as usize)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets every bit.
    pub fn set_all(&mut self) {
        for w in &mut self.words {
            *w = u64::MAX;
        }
        let tail = self.bits % 64;
        if tail != 0 {
            if let Some(w) = self.words.last_mut() {
                *w = (1u64 << tail) - 1;
            }
        }
    }

    /// Clears every bit.
    pub fn clear_all(&mut self) {
        for w in &mut self.words {
            *w = 0;
        }
    }

    /// Sets every bit set in `other`.
    pub fn or(&mut self, other: &Bitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Set bits in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as u64;
                w &= w - 1;
                Some(i as u64 * 64 + b)
            })
        })
    }

    /// Grows to at least `bits` bits.
    pub fn grow(&mut self, bits: u64) {
        if bits > self.bits {
            self.words.resize(bits.div_ceil(64) as usize, 0);
            self.bits = bits;
        }
    }
}

/// What the precopy policy decides after each pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PrecopyDecision {
    /// Give up the save.
    Abort,
    /// Do another pass while the guest runs.
    Continue,
    /// Suspend the guest and send what is still dirty.
    StopAndCopy,
}

/// What the policy sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrecopyStats {
    /// Passes done so far (0 after the first).
    pub iteration: u32,
    /// Pages written by all passes so far.
    pub total_written: u64,
    /// Pages dirty for the next pass; -1 while not known.
    pub dirty_count: i64,
    /// Pages the last pass sent, its stream octets and its duration (domain clock): what a
    /// policy estimates bandwidth from.
    pub last_pass_pages: u64,
    /// Stream octets the last pass wrote.
    pub last_pass_bytes: u64,
    /// How long the last pass took.
    pub last_pass_time: Duration,
}

/// The toolstack's side of a save (xenguest's save callbacks).
pub trait SaveCallbacks<D: ?Sized> {
    /// Suspends the guest; true on success.
    fn suspend(&mut self, dom: &mut D) -> bool;
    /// Remus/COLO: the checkpoint is out; resume the guest. > 0 ok.
    fn postcopy(&mut self, _dom: &mut D) -> i32 {
        1
    }
    /// Remus/COLO: take another checkpoint? > 0 yes.
    fn checkpoint(&mut self, _dom: &mut D) -> i32 {
        0
    }
    /// COLO: wait for the next checkpoint. > 0 continue.
    fn wait_checkpoint(&mut self, _dom: &mut D) -> i32 {
        0
    }
    /// Live saves: the precopy policy. `None`: Xen's default.
    fn precopy_policy(&mut self, _stats: PrecopyStats) -> Option<PrecopyDecision> {
        None
    }
    /// HVM: device-model log-dirty on/off. 0 ok.
    fn switch_qemu_logdirty(&mut self, _enable: bool) -> i32 {
        0
    }
    /// Progress of the save, for messages like Xen's.
    fn progress(&mut self, _what: &str, _done: u64, _total: u64) {}
}

/// Why the toolstack's side of a driver failed: a [`RestoreCallbacks::libxl_record`] that
/// refused a record, or a guest the toolstack could not act on
/// ([`crate::migrate::GuestControl`], [`crate::libxl_stream::ColoOps`]). The driver reports
/// it inside its own error.
#[derive(Debug, thiserror::Error)]
pub enum ToolstackError {
    /// A record broke a rule of the stream, by the toolstack's own checks (the libxl layer's).
    #[error("{0}")]
    Stream(#[from] crate::error::StreamError),
    /// The domain or its device model refused an operation.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// A channel the toolstack uses (to the other side, to the emulator) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Anything else, as the toolstack words it.
    #[error("{0}")]
    Other(String),
}

impl From<String> for ToolstackError {
    fn from(s: String) -> Self {
        ToolstackError::Other(s)
    }
}

impl From<&str> for ToolstackError {
    fn from(s: &str) -> Self {
        ToolstackError::Other(s.to_string())
    }
}

/// What the restore tells the toolstack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointAnswer {
    /// The checkpoint was received; apply it.
    Success,
    /// The link broke: keep the last complete checkpoint and run the guest from it.
    Failover,
    /// Stop the restore with an error.
    Error,
}

/// The toolstack's side of a restore (xenguest's restore callbacks).
pub trait RestoreCallbacks<D: ?Sized> {
    /// Static data is complete; `missing` has bit 0 for CPUID and bit 1 for MSR policies.
    /// 0 ok.
    fn static_data_done(&mut self, _dom: &mut D, _missing: u32) -> i32 {
        0
    }
    /// A CHECKPOINT arrived (Remus/COLO). In a libxl stream, the libxl records of the
    /// checkpoint (up to CHECKPOINT_END) have been passed to `libxl_record` just before.
    /// The records of the checkpoint are applied after a success.
    fn checkpoint(&mut self, _dom: &mut D) -> CheckpointAnswer {
        CheckpointAnswer::Success
    }
    /// COLO: a checkpoint is applied and the domain completed from it; the ring frames, as
    /// a completed restore reports them. The guest has not run since.
    fn restore_results(&mut self, _dom: &mut D, _store_gfn: u64, _console_gfn: u64) {}
    /// COLO: resume the secondary's guest from the checkpoint just applied. 1 ok, 2 the link
    /// to the primary broke (failover), anything else fails the restore.
    fn postcopy(&mut self, _dom: &mut D) -> i32 {
        1
    }
    /// COLO: the guest runs until the primary starts the next checkpoint. In a libxl stream
    /// the driver then reads the primary's CHECKPOINT_STATE and hands it to `libxl_record`.
    /// 1 ok, 2 failover, anything else fails.
    fn wait_checkpoint(&mut self, _dom: &mut D) -> i32 {
        1
    }
    /// COLO: suspend the guest before the next checkpoint is received. 1 ok, 2 failover,
    /// anything else fails.
    fn suspend(&mut self, _dom: &mut D) -> i32 {
        1
    }
    /// A libxl record read while the libxc image was being restored (the records of a
    /// checkpoint). An error fails the restore.
    fn libxl_record(
        &mut self,
        _dom: &mut D,
        _rec: &crate::reader::RawRecord<'_>,
    ) -> Result<(), ToolstackError> {
        Ok(())
    }
}
