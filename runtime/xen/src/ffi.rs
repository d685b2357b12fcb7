//! Hand-written bindings to the parts of libxenctrl and libxenforeignmemory (Debian's
//! libxen-dev 4.17) that [`super::XenDomain`] uses, and the `xen/domctl.h` structures of the
//! raw domctls it issues. Only public API is declared; each structure's size and field offsets
//! are checked by the tests below against the C headers' values.

use std::ffi::{c_int, c_longlong, c_uint, c_ulong, c_void};

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17: Xen rejects a domctl carrying another value
/// with EACCES. `xc_domctl` fills it in; [`XenDomctl::new`] sets it too.
pub const DOMCTL_INTERFACE_VERSION: u32 = 0x15;

/// `xen_pfn_t` on x86-64.
pub type XenPfn = c_ulong;

/// `DOMID_XEN`: the hypervisor's own pages (the m2p is mapped from it).
pub const DOMID_XEN: u32 = 0x7ff2;
/// `INVALID_MFN` as a 64-bit value.
pub const INVALID_MFN: u64 = u64::MAX;

pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;

/// `XENVER_version`.
pub const XENVER_VERSION: c_int = 0;

/// domctl command numbers (`xen/domctl.h`).
pub mod cmd {
    // Only the layout test names it: libxenctrl's xc_shadow_control issues the domctl.
    #[cfg(test)]
    pub const SHADOW_OP: u32 = 10;
    pub const SET_ADDRESS_SIZE: u32 = 35;
    pub const SET_EXT_VCPUCONTEXT: u32 = 42;
    pub const GET_EXT_VCPUCONTEXT: u32 = 43;
    pub const GETPAGEFRAMEINFO3: u32 = 61;
    pub const SETVCPUEXTSTATE: u32 = 62;
    pub const GETVCPUEXTSTATE: u32 = 63;
    pub const GET_VCPU_MSRS: u32 = 72;
    pub const SET_VCPU_MSRS: u32 = 73;
    pub const GET_CPU_POLICY: u32 = 82;
    pub const SET_CPU_POLICY: u32 = 83;
}

/// `XEN_DOMCTL_SHADOW_OP_*`.
pub mod shadow_op {
    pub const OFF: u32 = 0;
    pub const ENABLE_LOGDIRTY: u32 = 2;
    pub const CLEAN: u32 = 11;
    pub const PEEK: u32 = 12;
    /// `XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL`.
    pub const LOGDIRTY_FINAL: u32 = 1;
}

/// `XEN_DOMINF_*` flags of getdomaininfo.
pub mod dominf {
    pub const HVM_GUEST: u32 = 1 << 1;
    pub const SHUTDOWN: u32 = 1 << 2;
    pub const SHUTDOWN_SHIFT: u32 = 16;
    pub const SHUTDOWN_MASK: u32 = 0xff;
}

/// `SHUTDOWN_suspend`.
pub const SHUTDOWN_SUSPEND: u32 = 2;

/// `MMUEXT_PIN_L1_TABLE`; L2, L3 and L4 follow.
pub const MMUEXT_PIN_L1_TABLE: c_uint = 0;

/// `VGCF_online` in `vcpu_guest_context.flags`.
pub const VGCF_ONLINE: u64 = 1 << 5;
/// Offset of `flags` in `vcpu_guest_context` (after the 512-octet FPU area), both widths.
pub const VCPU_CONTEXT_FLAGS: usize = 512;
/// Size of `vcpu_guest_context_any_t` (the 64-bit context is the larger).
pub const VCPU_CONTEXT_ANY_SIZE: usize = 5168;

/// `XENMEM_resource_grant_table` and its `_id_shared` frame set.
pub const XENMEM_RESOURCE_GRANT_TABLE: c_uint = 1;
pub const XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED: c_uint = 0;
/// `GTF_permit_access`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GNTTAB_RESERVED_CONSOLE` and `GNTTAB_RESERVED_XENSTORE`.
pub const GNTTAB_RESERVED_CONSOLE: usize = 0;
pub const GNTTAB_RESERVED_XENSTORE: usize = 1;

/// Opaque `xc_interface`.
#[repr(C)]
pub struct XcInterface {
    _opaque: [u8; 0],
}

/// Opaque `xenforeignmemory_handle`.
#[repr(C)]
pub struct ForeignMemory {
    _opaque: [u8; 0],
}

/// Opaque `xenforeignmemory_resource_handle`.
#[repr(C)]
pub struct ForeignResource {
    _opaque: [u8; 0],
}

/// `xc_hypercall_buffer_t`: what `DECLARE_HYPERCALL_BUFFER` declares. Only `hbuf` is read
/// after allocation; the rest keeps the C layout (`HYPERCALL_BUFFER_INIT_NO_BOUNCE`).
#[repr(C)]
#[derive(Debug)]
pub struct XcHypercallBuffer {
    pub hbuf: *mut c_void,
    pub param_shadow: *mut XcHypercallBuffer,
    pub dir: c_int,
    pub ubuf: *mut c_void,
    pub sz: usize,
}

impl XcHypercallBuffer {
    /// `DECLARE_HYPERCALL_BUFFER`'s initial value.
    pub fn empty() -> Self {
        XcHypercallBuffer {
            hbuf: std::ptr::null_mut(),
            param_shadow: std::ptr::null_mut(),
            dir: 0,
            ubuf: usize::MAX as *mut c_void,
            sz: 0,
        }
    }
}

/// `struct xen_domctl_getdomaininfo` (`xc_domaininfo_t`), as `xc_domain_getinfolist` fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainInfoRaw {
    pub domain: u16,
    pub pad1: u16,
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time: u64,
    pub nr_online_vcpus: u32,
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    /// `struct xen_arch_domainconfig`: emulation_flags, misc_flags.
    pub arch_config: [u32; 2],
}

/// `struct xen_domctl_getvcpuinfo` (`xc_vcpuinfo_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuInfoRaw {
    pub vcpu: u32,
    pub online: u8,
    pub blocked: u8,
    pub running: u8,
    pub cpu_time: u64,
    pub cpu: u32,
}

/// `struct xen_domctl_shadow_op_stats` (`xc_shadow_op_stats_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ShadowOpStats {
    pub fault_count: u32,
    pub dirty_count: u32,
}

/// `struct mmuext_op` for the pin commands (arg1 is the mfn, arg2 unused).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MmuextOp {
    pub cmd: c_uint,
    pub arg1: u64,
    pub arg2: u64,
}

/// `grant_entry_v1_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

/// `struct xen_domctl_getpageframeinfo3`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GetPageFrameInfo3 {
    pub num: u64,
    /// Guest handle of the `xen_pfn_t` array: gfns in, types out.
    pub array: u64,
}

/// `struct xen_domctl_address_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AddressSize {
    /// Bits: 32 or 64.
    pub size: u32,
}

/// `struct xen_domctl_ext_vcpucontext`: `vcpu`, `size`, then up to 120 octets of state that
/// the stream carries as a blob (its first `size` octets, from `vcpu` on).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExtVcpuContext {
    pub vcpu: u32,
    pub size: u32,
    pub rest: [u64; 7],
}

/// `struct xen_domctl_vcpuextstate`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuExtState {
    pub vcpu: u32,
    pub xfeature_mask: u64,
    pub size: u64,
    pub buffer: u64,
}

/// `struct xen_domctl_vcpu_msrs`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuMsrs {
    pub vcpu: u32,
    pub msr_count: u32,
    pub msrs: u64,
}

/// `struct xen_domctl_cpu_policy`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPolicy {
    pub nr_leaves: u32,
    pub nr_msrs: u32,
    pub leaves: u64,
    pub msrs: u64,
    pub err_leaf: u32,
    pub err_subleaf: u32,
    pub err_msr: u32,
}

/// `struct xen_domctl_shadow_op`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ShadowOp {
    pub op: u32,
    pub mode: u32,
    pub mb: u32,
    pub dirty_bitmap: u64,
    pub pages: u64,
    pub stats: ShadowOpStats,
}

/// The union of `struct xen_domctl`, with the members used here (128 octets, 8-aligned).
#[repr(C)]
#[derive(Clone, Copy)]
pub union DomctlPayload {
    pub pad: [u64; 16],
    pub getpageframeinfo3: GetPageFrameInfo3,
    pub address_size: AddressSize,
    pub ext_vcpucontext: ExtVcpuContext,
    pub vcpuextstate: VcpuExtState,
    pub vcpu_msrs: VcpuMsrs,
    pub cpu_policy: CpuPolicy,
    pub shadow_op: ShadowOp,
}

/// `struct xen_domctl`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: u16,
    pub pad: [u16; 3],
    pub u: DomctlPayload,
}

impl XenDomctl {
    /// A domctl for `domain` with a zeroed payload.
    pub fn new(cmd: u32, domain: u32) -> Self {
        XenDomctl {
            cmd,
            interface_version: DOMCTL_INTERFACE_VERSION,
            domain: domain as u16,
            pad: [0; 3],
            u: DomctlPayload { pad: [0; 16] },
        }
    }

    /// The payload as octets.
    pub fn payload_bytes(&self) -> [u8; 128] {
        let mut out = [0u8; 128];
        // SAFETY: every member of the union is plain data, so its 128 octets are initialised
        // (they start zeroed in `new`) and may be read as words.
        let words = unsafe { self.u.pad };
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        out
    }

    /// Sets the payload from octets (at most 128; the rest is zeroed).
    pub fn set_payload_bytes(&mut self, data: &[u8]) {
        let mut words = [0u64; 16];
        for (w, chunk) in words.iter_mut().zip(data.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        self.u = DomctlPayload { pad: words };
    }
}

#[link(name = "xenctrl")]
extern "C" {
    pub fn xc_interface_open(
        logger: *mut c_void,
        dombuild_logger: *mut c_void,
        open_flags: c_uint,
    ) -> *mut XcInterface;
    pub fn xc_interface_close(xch: *mut XcInterface) -> c_int;
    pub fn xc_interface_fmem_handle(xch: *mut XcInterface) -> *mut ForeignMemory;
    pub fn xc_version(xch: *mut XcInterface, cmd: c_int, arg: *mut c_void) -> c_int;
    pub fn xc_domctl(xch: *mut XcInterface, domctl: *mut XenDomctl) -> c_int;
    pub fn xc__hypercall_buffer_alloc(
        xch: *mut XcInterface,
        b: *mut XcHypercallBuffer,
        size: usize,
    ) -> *mut c_void;
    pub fn xc__hypercall_buffer_free(xch: *mut XcInterface, b: *mut XcHypercallBuffer);
    pub fn xc_domain_getinfolist(
        xch: *mut XcInterface,
        first_domain: u32,
        max_domains: c_uint,
        info: *mut DomainInfoRaw,
    ) -> c_int;
    pub fn xc_domain_get_guest_width(
        xch: *mut XcInterface,
        domid: u32,
        guest_width: *mut c_uint,
    ) -> c_int;
    pub fn xc_domain_maximum_gpfn(xch: *mut XcInterface, domid: u32, gpfns: *mut XenPfn) -> c_int;
    pub fn xc_domain_nr_gpfns(xch: *mut XcInterface, domid: u32, gpfns: *mut XenPfn) -> c_int;
    pub fn xc_maximum_ram_page(xch: *mut XcInterface, max_mfn: *mut c_ulong) -> c_int;
    pub fn xc_machphys_mfn_list(
        xch: *mut XcInterface,
        max_extents: c_ulong,
        extent_start: *mut XenPfn,
    ) -> c_int;
    pub fn xc_vcpu_getinfo(
        xch: *mut XcInterface,
        domid: u32,
        vcpu: u32,
        info: *mut VcpuInfoRaw,
    ) -> c_int;
    pub fn xc_vcpu_getcontext(
        xch: *mut XcInterface,
        domid: u32,
        vcpu: u32,
        ctxt: *mut c_void,
    ) -> c_int;
    pub fn xc_vcpu_setcontext(
        xch: *mut XcInterface,
        domid: u32,
        vcpu: u32,
        ctxt: *mut c_void,
    ) -> c_int;
    pub fn xc_domain_hvm_getcontext(
        xch: *mut XcInterface,
        domid: u32,
        ctxt_buf: *mut u8,
        size: u32,
    ) -> c_int;
    pub fn xc_domain_hvm_setcontext(
        xch: *mut XcInterface,
        domid: u32,
        hvm_ctxt: *mut u8,
        size: u32,
    ) -> c_int;
    pub fn xc_hvm_param_get(xch: *mut XcInterface, dom: u32, param: u32, value: *mut u64) -> c_int;
    pub fn xc_hvm_param_set(xch: *mut XcInterface, dom: u32, param: u32, value: u64) -> c_int;
    pub fn xc_domain_get_tsc_info(
        xch: *mut XcInterface,
        domid: u32,
        tsc_mode: *mut u32,
        elapsed_nsec: *mut u64,
        gtsc_khz: *mut u32,
        incarnation: *mut u32,
    ) -> c_int;
    pub fn xc_domain_set_tsc_info(
        xch: *mut XcInterface,
        domid: u32,
        tsc_mode: u32,
        elapsed_nsec: u64,
        gtsc_khz: u32,
        incarnation: u32,
    ) -> c_int;
    pub fn xc_shadow_control(
        xch: *mut XcInterface,
        domid: u32,
        sop: c_uint,
        mb: *mut c_uint,
        mode: c_uint,
    ) -> c_int;
    pub fn xc_logdirty_control(
        xch: *mut XcInterface,
        domid: u32,
        sop: c_uint,
        dirty_bitmap: *mut XcHypercallBuffer,
        pages: c_ulong,
        mode: c_uint,
        stats: *mut ShadowOpStats,
    ) -> c_longlong;
    pub fn xc_domain_populate_physmap(
        xch: *mut XcInterface,
        domid: u32,
        nr_extents: c_ulong,
        extent_order: c_uint,
        mem_flags: c_uint,
        extent_start: *mut XenPfn,
    ) -> c_int;
    pub fn xc_mmuext_op(
        xch: *mut XcInterface,
        op: *mut MmuextOp,
        nr_ops: c_uint,
        dom: u32,
    ) -> c_int;
}

#[link(name = "xenforeignmemory")]
extern "C" {
    pub fn xenforeignmemory_map(
        fmem: *mut ForeignMemory,
        dom: u32,
        prot: c_int,
        pages: usize,
        arr: *const XenPfn,
        err: *mut c_int,
    ) -> *mut c_void;
    pub fn xenforeignmemory_map2(
        fmem: *mut ForeignMemory,
        dom: u32,
        addr: *mut c_void,
        prot: c_int,
        flags: c_int,
        pages: usize,
        arr: *const XenPfn,
        err: *mut c_int,
    ) -> *mut c_void;
    pub fn xenforeignmemory_unmap(
        fmem: *mut ForeignMemory,
        addr: *mut c_void,
        pages: usize,
    ) -> c_int;
    pub fn xenforeignmemory_map_resource(
        fmem: *mut ForeignMemory,
        domid: u16,
        r#type: c_uint,
        id: c_uint,
        frame: c_ulong,
        nr_frames: c_ulong,
        paddr: *mut *mut c_void,
        prot: c_int,
        flags: c_int,
    ) -> *mut ForeignResource;
    pub fn xenforeignmemory_unmap_resource(
        fmem: *mut ForeignMemory,
        fres: *mut ForeignResource,
    ) -> c_int;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    // Sizes and offsets are compared with the installed headers' C declarations in
    // `layouts_match_the_installed_xen_headers`; the union's size and alignment here.

    #[test]
    fn domctl_layout() {
        assert_eq!(size_of::<XenDomctl>(), 144);
        assert_eq!(offset_of!(XenDomctl, u), 16);
        assert_eq!(offset_of!(XenDomctl, domain), 8);
        assert_eq!(size_of::<DomctlPayload>(), 128);
        assert_eq!(align_of::<DomctlPayload>(), 8);
    }

    /// Every structure mirrored here against the installed Xen headers: a C program built
    /// with the system's compiler prints `sizeof`/`offsetof` of each C declaration, and each
    /// must equal the Rust one (the build with this feature needs libxen-dev, so the headers
    /// are there). This is what guards the buffers handed to libxenctrl and to raw domctls.
    #[test]
    fn layouts_match_the_installed_xen_headers() {
        let rust: Vec<(&str, usize)> = vec![
            (
                "sizeof xc_hypercall_buffer_t",
                size_of::<XcHypercallBuffer>(),
            ),
            (
                "offsetof xc_hypercall_buffer_t.param_shadow",
                offset_of!(XcHypercallBuffer, param_shadow),
            ),
            (
                "offsetof xc_hypercall_buffer_t.dir",
                offset_of!(XcHypercallBuffer, dir),
            ),
            (
                "offsetof xc_hypercall_buffer_t.ubuf",
                offset_of!(XcHypercallBuffer, ubuf),
            ),
            (
                "offsetof xc_hypercall_buffer_t.sz",
                offset_of!(XcHypercallBuffer, sz),
            ),
            ("sizeof xc_domaininfo_t", size_of::<DomainInfoRaw>()),
            (
                "offsetof xc_domaininfo_t.flags",
                offset_of!(DomainInfoRaw, flags),
            ),
            (
                "offsetof xc_domaininfo_t.tot_pages",
                offset_of!(DomainInfoRaw, tot_pages),
            ),
            (
                "offsetof xc_domaininfo_t.max_pages",
                offset_of!(DomainInfoRaw, max_pages),
            ),
            (
                "offsetof xc_domaininfo_t.shared_info_frame",
                offset_of!(DomainInfoRaw, shared_info_frame),
            ),
            (
                "offsetof xc_domaininfo_t.nr_online_vcpus",
                offset_of!(DomainInfoRaw, nr_online_vcpus),
            ),
            (
                "offsetof xc_domaininfo_t.max_vcpu_id",
                offset_of!(DomainInfoRaw, max_vcpu_id),
            ),
            (
                "offsetof xc_domaininfo_t.handle",
                offset_of!(DomainInfoRaw, handle),
            ),
            (
                "offsetof xc_domaininfo_t.cpupool",
                offset_of!(DomainInfoRaw, cpupool),
            ),
            (
                "offsetof xc_domaininfo_t.gpaddr_bits",
                offset_of!(DomainInfoRaw, gpaddr_bits),
            ),
            (
                "offsetof xc_domaininfo_t.arch_config",
                offset_of!(DomainInfoRaw, arch_config),
            ),
            ("sizeof xc_vcpuinfo_t", size_of::<VcpuInfoRaw>()),
            (
                "offsetof xc_vcpuinfo_t.online",
                offset_of!(VcpuInfoRaw, online),
            ),
            (
                "offsetof xc_vcpuinfo_t.cpu_time",
                offset_of!(VcpuInfoRaw, cpu_time),
            ),
            ("offsetof xc_vcpuinfo_t.cpu", offset_of!(VcpuInfoRaw, cpu)),
            ("sizeof vcpu_guest_context_any_t", VCPU_CONTEXT_ANY_SIZE),
            ("sizeof struct mmuext_op", size_of::<MmuextOp>()),
            ("sizeof xc_shadow_op_stats_t", size_of::<ShadowOpStats>()),
            ("sizeof struct xen_domctl", size_of::<XenDomctl>()),
            (
                "offsetof struct xen_domctl.domain",
                offset_of!(XenDomctl, domain),
            ),
            ("offsetof struct xen_domctl.u", offset_of!(XenDomctl, u)),
            (
                "sizeof struct xen_domctl_getpageframeinfo3",
                size_of::<GetPageFrameInfo3>(),
            ),
            (
                "offsetof struct xen_domctl_getpageframeinfo3.array",
                offset_of!(GetPageFrameInfo3, array),
            ),
            (
                "sizeof struct xen_domctl_ext_vcpucontext",
                size_of::<ExtVcpuContext>(),
            ),
            (
                "sizeof struct xen_domctl_vcpuextstate",
                size_of::<VcpuExtState>(),
            ),
            (
                "offsetof struct xen_domctl_vcpuextstate.xfeature_mask",
                offset_of!(VcpuExtState, xfeature_mask),
            ),
            (
                "offsetof struct xen_domctl_vcpuextstate.size",
                offset_of!(VcpuExtState, size),
            ),
            (
                "offsetof struct xen_domctl_vcpuextstate.buffer",
                offset_of!(VcpuExtState, buffer),
            ),
            ("sizeof struct xen_domctl_vcpu_msrs", size_of::<VcpuMsrs>()),
            (
                "offsetof struct xen_domctl_vcpu_msrs.msrs",
                offset_of!(VcpuMsrs, msrs),
            ),
            (
                "sizeof struct xen_domctl_cpu_policy",
                size_of::<CpuPolicy>(),
            ),
            (
                "offsetof struct xen_domctl_cpu_policy.leaves",
                offset_of!(CpuPolicy, leaves),
            ),
            (
                "offsetof struct xen_domctl_cpu_policy.msrs",
                offset_of!(CpuPolicy, msrs),
            ),
            (
                "offsetof struct xen_domctl_cpu_policy.err_leaf",
                offset_of!(CpuPolicy, err_leaf),
            ),
            (
                "offsetof struct xen_domctl_cpu_policy.err_subleaf",
                offset_of!(CpuPolicy, err_subleaf),
            ),
            (
                "offsetof struct xen_domctl_cpu_policy.err_msr",
                offset_of!(CpuPolicy, err_msr),
            ),
            ("sizeof struct xen_domctl_shadow_op", size_of::<ShadowOp>()),
            (
                "offsetof struct xen_domctl_shadow_op.dirty_bitmap",
                offset_of!(ShadowOp, dirty_bitmap),
            ),
            (
                "offsetof struct xen_domctl_shadow_op.pages",
                offset_of!(ShadowOp, pages),
            ),
            (
                "offsetof struct xen_domctl_shadow_op.stats",
                offset_of!(ShadowOp, stats),
            ),
            (
                "sizeof struct xen_domctl_address_size",
                size_of::<AddressSize>(),
            ),
            ("sizeof grant_entry_v1_t", size_of::<GrantEntryV1>()),
            ("sizeof xen_pfn_t", size_of::<XenPfn>()),
            ("sizeof xen_cpuid_leaf_t", 24),
            ("sizeof xen_msr_entry_t", 16),
            (
                "value XEN_DOMCTL_INTERFACE_VERSION",
                DOMCTL_INTERFACE_VERSION as usize,
            ),
            (
                "value XEN_DOMCTL_getpageframeinfo3",
                cmd::GETPAGEFRAMEINFO3 as usize,
            ),
            ("value XEN_DOMCTL_shadow_op", cmd::SHADOW_OP as usize),
            (
                "value XEN_DOMCTL_get_cpu_policy",
                cmd::GET_CPU_POLICY as usize,
            ),
            (
                "value XEN_DOMCTL_set_cpu_policy",
                cmd::SET_CPU_POLICY as usize,
            ),
            (
                "value XEN_DOMCTL_getvcpuextstate",
                cmd::GETVCPUEXTSTATE as usize,
            ),
            (
                "value XEN_DOMCTL_get_vcpu_msrs",
                cmd::GET_VCPU_MSRS as usize,
            ),
        ];
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <xenctrl.h>\n#include <xenforeignmemory.h>\n\
             int main(void) {\n",
        );
        for (name, _) in &rust {
            let (kind, what) = name.split_once(' ').unwrap();
            let expr = match kind {
                "sizeof" => format!("sizeof({what})"),
                "offsetof" => {
                    let (ty, field) = what.rsplit_once('.').unwrap();
                    format!("offsetof({ty}, {field})")
                }
                _ => format!("(size_t)({what})"),
            };
            c.push_str(&format!("  printf(\"%zu\\n\", (size_t){expr});\n"));
        }
        c.push_str("  return 0;\n}\n");
        let dir = std::env::temp_dir().join(format!("xenmig-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("abi.c"), c).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let built = std::process::Command::new(&cc)
            .args(["-D__XEN_TOOLS__", "-o"])
            .arg(dir.join("abi"))
            .arg(dir.join("abi.c"))
            .output()
            .expect("a C compiler");
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let out = std::process::Command::new(dir.join("abi"))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let c_values: Vec<usize> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(c_values.len(), rust.len());
        let differ: Vec<String> = rust
            .iter()
            .zip(&c_values)
            .filter(|((_, r), c)| r != *c)
            .map(|((n, r), c)| format!("{n}: C {c}, Rust {r}"))
            .collect();
        assert!(differ.is_empty(), "layouts differ: {differ:#?}");
    }

    #[test]
    fn payload_bytes_round_trip() {
        let mut d = XenDomctl::new(cmd::GET_EXT_VCPUCONTEXT, 7);
        assert_eq!(d.interface_version, 0x15);
        let blob: Vec<u8> = (0..64).collect();
        d.set_payload_bytes(&blob);
        let out = d.payload_bytes();
        assert_eq!(&out[..64], &blob[..]);
        assert!(out[64..].iter().all(|&b| b == 0));
        // SAFETY: test only: the payload was written as words above.
        let e = unsafe { d.u.ext_vcpucontext };
        assert_eq!(e.vcpu, u32::from_ne_bytes([0, 1, 2, 3]));
        assert_eq!(e.size, u32::from_ne_bytes([4, 5, 6, 7]));
    }
}
