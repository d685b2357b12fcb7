//! Device models: what the libxl layer ([`crate::libxl_stream`]) saves and restores besides
//! the libxc image of an HVM guest.
//!
//! libxl keeps two things of the emulator (QEMU upstream) in a stream: xenstore keys under
//! `/local/domain/<dm>/device-model/<domid>/` (the physmap entries QEMU writes for memory it
//! has mapped) and the emulator's own context blob. [`DeviceModel`] is that interface;
//! [`HasDeviceModel`] is a domain together with its device model, as libxl manages them;
//! [`Guest`] pairs any [`Domain`] with any [`DeviceModel`]. The simulated emulator and guest
//! (`SimDeviceModel`, `SimGuest`) are the simulator's (xenmig-sim).

use crate::domain::{BResult, Domain};
use crate::libxl::EmulatorId;

/// Xenstore key/value pairs, keys relative to the device model's directory, in the order they
/// are written (NUL-free octets, as libxl transfers them).
pub type XenstorePairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What a device model saves at a suspend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmState {
    /// xenstore pairs (relative keys); libxl sends them only when there are some.
    pub xenstore: XenstorePairs,
    /// The emulator's context blob (QEMU's begins with "QEVM").
    pub context: Vec<u8>,
}

/// An emulator as libxl drives it across a save and a restore.
pub trait DeviceModel {
    /// The emulator id the records carry (libxl writes QEMU_UPSTREAM, index 0).
    fn emulator_id(&self) -> EmulatorId {
        EmulatorId::QEMU_UPSTREAM
    }
    /// Stops the emulator and saves its state: the physmap keys it keeps in xenstore and its
    /// context blob (libxl: QMP `stop` and `xen-save-devices-state` at the guest's suspend).
    fn save(&mut self) -> BResult<DmState>;
    /// Lets the emulator run again (Remus/COLO primary after a checkpoint).
    fn resume(&mut self) -> BResult<()> {
        Ok(())
    }
    /// Restore: writes xenstore pairs under the device model's directory.
    fn restore_xenstore(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> BResult<()>;
    /// Restore: loads a context blob (the last one a stream carries wins).
    fn restore_context(&mut self, blob: &[u8]) -> BResult<()>;
}

/// A domain together with its device model (none for PV and PVH guests).
pub trait HasDeviceModel: Domain {
    /// The device model, if the guest has one.
    fn device_model(&mut self) -> Option<&mut dyn DeviceModel>;
}

/// A domain paired with its device model; implements [`Domain`] by handing every call to
/// `dom`.
#[derive(Debug, Clone)]
pub struct Guest<D, M> {
    /// The domain.
    pub dom: D,
    /// Its device model, if it has one.
    pub dm: Option<M>,
}

impl<D, M> Guest<D, M> {
    /// Pairs `dom` with `dm`.
    pub fn new(dom: D, dm: Option<M>) -> Self {
        Guest { dom, dm }
    }
}

impl<D: Domain, M: DeviceModel> HasDeviceModel for Guest<D, M> {
    fn device_model(&mut self) -> Option<&mut dyn DeviceModel> {
        match &mut self.dm {
            Some(m) => Some(m),
            None => None,
        }
    }
}

impl<D: Domain, M> Domain for Guest<D, M> {
    crate::forward_domain!(
        dom:
        info, p2m_size, pfn_to_gfn, page_types, read_pages, write_pages, populate,
        set_page_types, vcpu_state, set_vcpu_state, online_vcpus, hvm_context,
        set_hvm_context, hvm_param, set_hvm_param, tsc_info, set_tsc_info, shared_info,
        set_shared_info, cpu_policy, set_cpu_policy, enable_logdirty, disable_logdirty,
        clean_dirty, peek_dirty, pv_p2m, mfn_to_pfn, set_address_size, expand_p2m,
        write_p2m, pin_page_tables, p2m_generation, now, reads_whole_batches, memory_limits,
        lend_pages, lends_pages, fill_pages
    );
}
