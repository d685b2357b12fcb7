//! The JSON domain config of simulated guests ([`SimDomainConfig`]), carried in the optional
//! data of `xl save` files and shaped like libxl's own (`c_info`, `b_info`), so that a restore
//! can build the same kind of destination.

use xenmig_core::GuestType;

/// The JSON domain config of a simulated guest: libxl's shape (`c_info.type`, `c_info.name`,
/// `b_info.max_vcpus`, `b_info.max_memkb`) plus `xenmig_sim` (seed, PV width). Real xl
/// configs parse too (without the simulator's fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDomainConfig {
    /// The domain's name (`c_info.name`).
    pub name: String,
    /// PV or HVM (`c_info.type`).
    pub guest: GuestType,
    /// Guest memory in octets.
    pub memory: u64,
    /// vCPUs (`b_info.max_vcpus`).
    pub vcpus: u32,
    /// The source's seed, when the config came from the simulator.
    pub seed: Option<u64>,
    /// PV guest width in bits (32 or 64), when the config came from the simulator.
    pub width: Option<u32>,
}

impl SimDomainConfig {
    /// The config as libxl-style JSON (without NUL).
    pub fn to_json(&self) -> String {
        let ty = match self.guest {
            GuestType::X86Pv => "pv",
            GuestType::X86Hvm => "hvm",
        };
        let kb = self.memory / 1024;
        let mut sim = serde_json::Map::new();
        if let Some(s) = self.seed {
            sim.insert("seed".into(), s.into());
        }
        if let Some(w) = self.width {
            sim.insert("width".into(), w.into());
        }
        let v = serde_json::json!({
            "c_info": { "type": ty, "name": self.name },
            "b_info": {
                "max_vcpus": self.vcpus,
                "avail_vcpus": (0..self.vcpus).collect::<Vec<u32>>(),
                "max_memkb": kb,
                "target_memkb": kb,
            },
            "xenmig_sim": sim,
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Parses a config (a trailing NUL is allowed).
    pub fn from_json(text: &[u8]) -> Result<SimDomainConfig, String> {
        let text = text.strip_suffix(&[0]).unwrap_or(text);
        let v: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("the config is not JSON: {e}"))?;
        let ty = v
            .pointer("/c_info/type")
            .and_then(|t| t.as_str())
            .ok_or("the config has no c_info.type")?;
        let guest = match ty {
            "pv" => GuestType::X86Pv,
            // PVH guests are x86 HVM domains without a device model.
            "hvm" | "pvh" => GuestType::X86Hvm,
            other => return Err(format!("c_info.type `{other}` is not pv, hvm or pvh")),
        };
        let name = v
            .pointer("/c_info/name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        let vcpus = v
            .pointer("/b_info/max_vcpus")
            .and_then(|n| n.as_u64())
            .unwrap_or(1);
        let vcpus = u32::try_from(vcpus).map_err(|_| format!("max_vcpus {vcpus} is too large"))?;
        let memkb = v
            .pointer("/b_info/max_memkb")
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        let seed = v.pointer("/xenmig_sim/seed").and_then(|n| n.as_u64());
        let width = v
            .pointer("/xenmig_sim/width")
            .and_then(|n| n.as_u64())
            .and_then(|w| u32::try_from(w).ok());
        Ok(SimDomainConfig {
            name,
            guest,
            memory: memkb.saturating_mul(1024),
            vcpus,
            seed,
            width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let cfg = SimDomainConfig {
            name: "g".into(),
            guest: GuestType::X86Hvm,
            memory: 64 << 20,
            vcpus: 2,
            seed: Some(9),
            width: None,
        };
        let mut json = cfg.to_json().into_bytes();
        assert_eq!(SimDomainConfig::from_json(&json).unwrap(), cfg);
        json.push(0);
        assert_eq!(SimDomainConfig::from_json(&json).unwrap(), cfg);
        assert!(SimDomainConfig::from_json(b"{}").is_err());
    }
}
