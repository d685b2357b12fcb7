//! What the helper drives: a [`Domain`] plus what libxl does to the domain between messages,
//! and how the backend is chosen (`XENMIG_SAVE_HELPER_BACKEND`).
//!
//! Over real Xen, libxl itself suspends and resumes the guest when it answers `suspend` and
//! `postcopy`, so a Xen backend leaves the [`HelperDomain`] methods at their defaults (it sees
//! the suspension through getdomaininfo). A simulated domain has no libxl acting on it, so
//! the simulator's backend (xenmig-sim's `SimBackend`) plays that part.

use crate::domain::{Domain, GuestType, PAGE_SIZE};

/// The environment variable that selects the backend.
pub const BACKEND_ENV: &str = "XENMIG_SAVE_HELPER_BACKEND";

/// A domain the helper can save or restore.
pub trait HelperDomain: Domain {
    /// libxl answered `suspend` with success: it has suspended the domain.
    fn toolstack_suspended(&mut self) {}
    /// libxl answered `postcopy` with success: it has resumed the guest.
    fn toolstack_resumed(&mut self) {}
    /// libxl answered a Remus `checkpoint` with "again": one checkpoint interval passed.
    fn checkpoint_interval(&mut self) {}
    /// The hypervisor's version for the image's domain header; `None` writes 4.17.
    fn xen_version(&mut self) -> Option<(u32, u32)> {
        None
    }
    /// libxc's name of the guest type, for logs: `"x86 PV"` or `"x86 HVM"`.
    fn type_name(&mut self) -> &'static str {
        match self.info().map(|i| i.guest) {
            Ok(GuestType::X86Pv) => "x86 PV",
            _ => "x86 HVM",
        }
    }
}

/// What a restore backend needs to know besides the domain id (a Xen backend seeds the grant
/// table with the store and console domains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreTarget {
    /// The domain restored into.
    pub domid: u32,
    /// The domain that serves xenstore.
    pub store_domid: u16,
    /// The domain that serves the console.
    pub console_domid: u16,
}

/// Which backend to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// A simulated domain (`sim[:SPEC]`).
    Sim(SimSpec),
    /// The real hypervisor (`xen`): needs a build with the Xen backend.
    Xen,
}

impl BackendSpec {
    /// Parses the value of [`BACKEND_ENV`]; unset means `xen`.
    pub fn parse(value: Option<&str>) -> Result<BackendSpec, String> {
        match value {
            None | Some("") | Some("xen") => Ok(BackendSpec::Xen),
            Some("sim") => Ok(BackendSpec::Sim(SimSpec::default())),
            Some(v) => match v.strip_prefix("sim:") {
                Some(spec) => SimSpec::parse(spec).map(BackendSpec::Sim),
                None => Err(format!(
                    "{BACKEND_ENV}={v}: expected `xen` or `sim[:SPEC]` (e.g. sim:pv,64,128M,2,seed=1)"
                )),
            },
        }
    }
}

/// A simulated domain: `GUEST[,WIDTH][,MEMORY][,VCPUS][,key=value...][,nologdirty]`.
///
/// GUEST is `pv`, `hvm` or `pvh` (an HVM domain to libxc); WIDTH `32` or `64` (PV); MEMORY a
/// size like `128M`; VCPUS a count. Keys: `seed`, `dirty` (pages the guest dirties per
/// simulated second while it runs), `bandwidth` (octets per simulated second), `memory`,
/// `vcpus`, `width`. `nologdirty` makes log-dirty unavailable, as on a Xen without shadow
/// paging (enabling fails with EOPNOTSUPP, switching off with EINVAL): a live PV save fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimSpec {
    /// PV or HVM.
    pub guest: GuestType,
    /// PV guest width in octets.
    pub width: u8,
    /// Guest memory in octets.
    pub memory: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Seed of the guest's memory contents.
    pub seed: u64,
    /// Pages the guest dirties per simulated second while it runs.
    pub dirty_rate: u64,
    /// The link's octets per simulated second, if limited.
    pub bandwidth: Option<u64>,
    /// Log-dirty is unavailable.
    pub no_logdirty: bool,
}

impl Default for SimSpec {
    fn default() -> Self {
        SimSpec {
            guest: GuestType::X86Pv,
            width: 8,
            memory: 128 << 20,
            vcpus: 2,
            seed: 1,
            dirty_rate: 0,
            bandwidth: None,
            no_logdirty: false,
        }
    }
}

impl SimSpec {
    /// Parses the part after `sim:`.
    pub fn parse(spec: &str) -> Result<SimSpec, String> {
        let mut s = SimSpec::default();
        let mut positional = 0;
        for tok in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let bad = |what: &str| format!("sim spec `{spec}`: `{tok}` {what}");
            if let Some((k, v)) = tok.split_once('=') {
                let n = || v.parse::<u64>().map_err(|_| bad("needs a number"));
                match k {
                    "seed" => s.seed = n()?,
                    "dirty" => s.dirty_rate = n()?,
                    "bandwidth" => {
                        s.bandwidth = Some(parse_size(v).ok_or_else(|| bad("needs a size"))?)
                    }
                    "memory" => s.memory = parse_size(v).ok_or_else(|| bad("needs a size"))?,
                    "vcpus" => s.vcpus = u32::try_from(n()?).map_err(|_| bad("is too large"))?,
                    "width" => s.width = width(v).ok_or_else(|| bad("must be 32 or 64"))?,
                    _ => return Err(bad("is not a known key")),
                }
                continue;
            }
            match tok {
                "pv" => s.guest = GuestType::X86Pv,
                "hvm" | "pvh" => s.guest = GuestType::X86Hvm,
                "nologdirty" => s.no_logdirty = true,
                _ => {
                    // Positional: width, memory, vcpus, in that order.
                    loop {
                        positional += 1;
                        match positional {
                            1 => {
                                if let Some(w) = width(tok) {
                                    s.width = w;
                                    break;
                                }
                            }
                            2 => {
                                if let Some(m) = parse_size(tok).filter(|_| has_unit(tok)) {
                                    s.memory = m;
                                    break;
                                }
                            }
                            3 => {
                                s.vcpus = tok.parse().map_err(|_| bad("is not a vcpu count"))?;
                                break;
                            }
                            _ => return Err(bad("is not understood")),
                        }
                    }
                }
            }
        }
        if s.memory < PAGE_SIZE as u64 {
            return Err(format!("sim spec `{spec}`: less than one page of memory"));
        }
        Ok(s)
    }
}

fn width(s: &str) -> Option<u8> {
    match s {
        "32" => Some(4),
        "64" => Some(8),
        _ => None,
    }
}

fn has_unit(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_alphabetic())
}

/// Sizes like `4096`, `128M`, `1G`, `2GiB`.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (t.get(..i)?, 10),
        Some((i, 'M' | 'm')) => (t.get(..i)?, 20),
        Some((i, 'G' | 'g')) => (t.get(..i)?, 30),
        _ => (t, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = SimSpec::parse("pv,64,128M,2,seed=1").unwrap();
        assert_eq!(
            (s.guest, s.width, s.memory, s.vcpus, s.seed),
            (GuestType::X86Pv, 8, 128 << 20, 2, 1)
        );
        let h = SimSpec::parse("pvh,256M,4,dirty=500").unwrap();
        assert_eq!(
            (h.guest, h.memory, h.vcpus, h.dirty_rate),
            (GuestType::X86Hvm, 256 << 20, 4, 500)
        );
        assert!(SimSpec::parse("pv,nologdirty").unwrap().no_logdirty);
        assert!(SimSpec::parse("pv,frobnicate").is_err());
        assert!(SimSpec::parse("pv,colour=red").is_err());
        assert_eq!(BackendSpec::parse(None), Ok(BackendSpec::Xen));
        assert_eq!(
            BackendSpec::parse(Some("sim")),
            Ok(BackendSpec::Sim(SimSpec::default()))
        );
        assert!(BackendSpec::parse(Some("kvm")).is_err());
    }
}
