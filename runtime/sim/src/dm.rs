//! The simulated device model: a deterministic stand-in for QEMU ([`SimDeviceModel`]), and
//! [`SimGuest`], a simulated domain with one, whose state digest covers both.

use crate::SimDomain;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use xenmig_core::GuestType;
use xenmig_drivers::dm::{DeviceModel, DmState, Guest, HasDeviceModel};
use xenmig_drivers::domain::{BResult, BackendError};
use xenmig_drivers::libxl_stream::Destination;
use xenmig_stream::reader::Framing;

impl HasDeviceModel for SimDomain {
    fn device_model(&mut self) -> Option<&mut dyn DeviceModel> {
        None
    }
}

/// A simulated domain with (HVM) or without (PV, or a bare libxc stream) a device model.
pub type SimGuest = Guest<SimDomain, SimDeviceModel>;

/// What a [`SimGuest`] adds to a [`Guest`]: its making for a restore and its state digest.
/// (`Guest` is the drivers' type, so these are a trait's methods; bring it into scope.)
pub trait SimGuestExt: Sized {
    /// The empty destination a restore of `d` fills: a simulated domain of the stream's guest
    /// type with `vcpus` vcpus, with a device model when the stream is an HVM guest's in libxl
    /// or xl framing (a bare libxc image carries no emulator records).
    fn for_destination(d: &Destination<'_>, vcpus: u32, seed: u64) -> Self;

    /// The state digest: [`SimDomain::state_digest`] alone without a device model, otherwise
    /// a digest over it and [`SimDeviceModel::state_digest`].
    fn state_digest(&self) -> [u8; 32];

    /// Starts computing [`SimGuestExt::state_digest`] of the guest as it is now on another
    /// thread, and returns at once: the guest may be changed or dropped meanwhile. The copy
    /// it works on shares the page buffers (a reference count per page), so starting it
    /// costs little; pages written afterwards get new buffers.
    fn state_digest_in_background(&self) -> std::thread::JoinHandle<[u8; 32]>;

    /// [`SimGuestExt::state_digest`] in hex.
    fn state_digest_hex(&self) -> String {
        crate::hex(&self.state_digest())
    }
}

impl SimGuestExt for SimGuest {
    fn for_destination(d: &Destination<'_>, vcpus: u32, seed: u64) -> Self {
        let dom = SimDomain::empty_for_restore(d.guest, 0, vcpus, seed);
        let dm = (d.guest == GuestType::X86Hvm && d.framing != Framing::Libxc)
            .then(SimDeviceModel::empty);
        Guest::new(dom, dm)
    }

    fn state_digest(&self) -> [u8; 32] {
        let dom = self.dom.state_digest();
        match &self.dm {
            None => dom,
            Some(dm) => {
                let mut h = Sha256::new();
                h.update(b"xenmig-sim-guest-v1\0");
                h.update(dom);
                h.update(dm.state_digest());
                h.finalize().into()
            }
        }
    }

    fn state_digest_in_background(&self) -> std::thread::JoinHandle<[u8; 32]> {
        let snapshot = self.clone();
        std::thread::spawn(move || snapshot.state_digest())
    }
}

/// QEMU's save-file magic ("QEVM").
pub const QEMU_VM_FILE_MAGIC: &[u8; 4] = b"QEVM";
/// The QEMU save-file version the simulated emulator writes.
pub const QEMU_VM_FILE_VERSION: u32 = 3;
const QEMU_VM_SECTION_FULL: u8 = 0x04;
const QEMU_VM_EOF: u8 = 0x1f;
/// The section the simulated emulator saves its registers in.
const SIM_SECTION: &[u8] = b"xenmig-sim-dm";
/// Octets of simulated device registers.
pub const SIM_DM_REGISTERS: usize = 256;

/// A simulated QEMU: physmap keys and a context blob, deterministic from a seed. While it
/// runs (between checkpoints) its registers change, so every checkpoint carries a different
/// context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDeviceModel {
    /// What the emulator keeps in xenstore, relative keys.
    xenstore: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The context as the emulator would save it now.
    context: Vec<u8>,
    /// Seed, generation and registers when the context is the simulator's own; `None` for a
    /// blob restored from elsewhere (a real QEMU's), which is kept as it is.
    sim: Option<SimRegisters>,
    running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SimRegisters {
    seed: u64,
    generation: u64,
    regs: Vec<u8>,
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimRegisters {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.regs.len());
        b.extend_from_slice(QEMU_VM_FILE_MAGIC);
        b.extend_from_slice(&QEMU_VM_FILE_VERSION.to_be_bytes());
        b.push(QEMU_VM_SECTION_FULL);
        b.extend_from_slice(&0u32.to_be_bytes()); // section id
        b.push(SIM_SECTION.len() as u8);
        b.extend_from_slice(SIM_SECTION);
        b.extend_from_slice(&0u32.to_be_bytes()); // instance id
        b.extend_from_slice(&1u32.to_be_bytes()); // version id
        b.extend_from_slice(&self.seed.to_be_bytes());
        b.extend_from_slice(&self.generation.to_be_bytes());
        b.extend_from_slice(&(self.regs.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.regs);
        b.push(QEMU_VM_EOF);
        b
    }

    /// The simulator's own context, or `None` for any other (well-formed QEVM) blob.
    fn decode(blob: &[u8]) -> Option<SimRegisters> {
        let mut head = Vec::new();
        head.extend_from_slice(QEMU_VM_FILE_MAGIC);
        head.extend_from_slice(&QEMU_VM_FILE_VERSION.to_be_bytes());
        head.push(QEMU_VM_SECTION_FULL);
        head.extend_from_slice(&0u32.to_be_bytes());
        head.push(SIM_SECTION.len() as u8);
        head.extend_from_slice(SIM_SECTION);
        head.extend_from_slice(&0u32.to_be_bytes());
        head.extend_from_slice(&1u32.to_be_bytes());
        let rest = blob.strip_prefix(head.as_slice())?;
        let u64_at = |at: usize| -> Option<u64> {
            let b: [u8; 8] = rest.get(at..at + 8)?.try_into().ok()?;
            Some(u64::from_be_bytes(b))
        };
        let seed = u64_at(0)?;
        let generation = u64_at(8)?;
        let n: [u8; 4] = rest.get(16..20)?.try_into().ok()?;
        let n = u32::from_be_bytes(n) as usize;
        let regs = rest.get(20..20usize.checked_add(n)?)?.to_vec();
        if rest.get(20 + n..) != Some(&[QEMU_VM_EOF][..]) {
            return None;
        }
        Some(SimRegisters {
            seed,
            generation,
            regs,
        })
    }

    /// One interval of running: the registers move on.
    fn run(&mut self) {
        self.generation += 1;
        let mut x = self.seed ^ self.generation.wrapping_mul(0xa076_1d64_78bd_642f);
        for chunk in self.regs.chunks_mut(8).step_by(3) {
            let r = splitmix(&mut x).to_le_bytes();
            for (b, k) in chunk.iter_mut().zip(r) {
                *b ^= k;
            }
        }
    }
}

impl SimDeviceModel {
    /// The emulator of a running source guest, from `seed`: `seed % 3` physmap entries (none,
    /// the VGA VRAM, or VRAM and an option ROM) and seeded registers.
    pub fn build(seed: u64) -> SimDeviceModel {
        let mut x = seed ^ 0xd3_5eed;
        let mut xenstore = BTreeMap::new();
        let regions: [(&str, u64); 2] = [("vga.vram", 0x80_0000), ("xen.ram.rom", 0x1_0000)];
        let mut addr = 0xf000_0000u64 + (splitmix(&mut x) % 16) * 0x100_0000;
        for (name, size) in regions.iter().take((seed % 3) as usize) {
            let dir = format!("physmap/{addr:x}");
            xenstore.insert(
                format!("{dir}/start_addr").into_bytes(),
                format!("{addr:x}").into_bytes(),
            );
            xenstore.insert(
                format!("{dir}/size").into_bytes(),
                format!("{size:x}").into_bytes(),
            );
            xenstore.insert(format!("{dir}/name").into_bytes(), name.as_bytes().to_vec());
            addr += size;
        }
        let mut regs = vec![0u8; SIM_DM_REGISTERS];
        for chunk in regs.chunks_mut(8) {
            let r = splitmix(&mut x).to_le_bytes();
            for (b, k) in chunk.iter_mut().zip(r) {
                *b = k;
            }
        }
        let sim = SimRegisters {
            seed,
            generation: 0,
            regs,
        };
        SimDeviceModel {
            xenstore,
            context: sim.encode(),
            sim: Some(sim),
            running: true,
        }
    }

    /// The emulator of a restore's destination, before any emulator record applied.
    pub fn empty() -> SimDeviceModel {
        SimDeviceModel {
            xenstore: BTreeMap::new(),
            context: Vec::new(),
            sim: None,
            running: false,
        }
    }

    /// The xenstore keys it keeps.
    pub fn xenstore(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.xenstore
    }

    /// Its context blob (empty before a restore loaded one).
    pub fn context(&self) -> &[u8] {
        &self.context
    }

    /// Checkpoints it ran through since it was built (`None` for a foreign context).
    pub fn generation(&self) -> Option<u64> {
        self.sim.as_ref().map(|s| s.generation)
    }

    /// Whether the emulator is running (not stopped for a save).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// SHA-256 over the xenstore pairs (sorted) and the context blob.
    pub fn state_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"xenmig-sim-dm-v1\0");
        h.update((self.xenstore.len() as u64).to_le_bytes());
        for (k, v) in &self.xenstore {
            h.update((k.len() as u64).to_le_bytes());
            h.update(k);
            h.update((v.len() as u64).to_le_bytes());
            h.update(v);
        }
        h.update((self.context.len() as u64).to_le_bytes());
        h.update(&self.context);
        h.finalize().into()
    }
}

impl DeviceModel for SimDeviceModel {
    fn save(&mut self) -> BResult<DmState> {
        self.running = false;
        Ok(DmState {
            xenstore: self
                .xenstore
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            context: self.context.clone(),
        })
    }

    fn resume(&mut self) -> BResult<()> {
        if !self.running {
            self.running = true;
            if let Some(sim) = &mut self.sim {
                sim.run();
                self.context = sim.encode();
            }
        }
        Ok(())
    }

    fn restore_xenstore(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> BResult<()> {
        for (k, v) in pairs {
            if k.is_empty() || k.first() == Some(&b'/') {
                return Err(BackendError::new(
                    "write device-model xenstore key",
                    format!(
                        "key \"{}\" is not relative to the device model's directory",
                        String::from_utf8_lossy(k)
                    ),
                ));
            }
            self.xenstore.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn restore_context(&mut self, blob: &[u8]) -> BResult<()> {
        if blob.get(..4) != Some(&QEMU_VM_FILE_MAGIC[..]) {
            return Err(BackendError::new(
                "load emulator context",
                format!(
                    "the blob does not start with QEMU's magic \"QEVM\" (first octets {:02x?})",
                    blob.get(..8).unwrap_or(blob)
                ),
            ));
        }
        let version = blob
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes);
        if version != Some(QEMU_VM_FILE_VERSION) {
            return Err(BackendError::new(
                "load emulator context",
                format!("QEMU save-file version {version:?}, expected {QEMU_VM_FILE_VERSION}"),
            ));
        }
        self.sim = SimRegisters::decode(blob);
        self.context = blob.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_and_moves_on_when_running() {
        let mut a = SimDeviceModel::build(7);
        let s0 = a.save().unwrap();
        assert_eq!(&s0.context[..4], b"QEVM");
        assert_eq!(s0.xenstore.len(), 3); // 7 % 3 = 1 region: three keys
        let mut b = SimDeviceModel::empty();
        b.restore_xenstore(&s0.xenstore).unwrap();
        b.restore_context(&s0.context).unwrap();
        assert_eq!(a.state_digest(), b.state_digest());
        assert_eq!(b.generation(), Some(0));
        a.resume().unwrap();
        assert_ne!(a.state_digest(), b.state_digest());
        assert_eq!(a.generation(), Some(1));
        // A foreign QEVM blob is kept as it is.
        let mut c = SimDeviceModel::empty();
        c.restore_context(b"QEVM\0\0\0\x03\x04whatever").unwrap();
        assert_eq!(c.generation(), None);
        assert!(c.restore_context(b"nope").is_err());
        assert!(c
            .restore_xenstore(&[(b"/abs".to_vec(), b"x".to_vec())])
            .is_err());
    }

    #[test]
    fn key_count_follows_the_seed() {
        assert!(SimDeviceModel::build(3).xenstore().is_empty());
        assert_eq!(SimDeviceModel::build(5).xenstore().len(), 6);
    }
}
