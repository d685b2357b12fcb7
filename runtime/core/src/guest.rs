//! The kind of guest, as the libxc domain header names it.

/// The kind of guest, as the libxc domain header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum GuestType {
    /// An x86 paravirtualised guest.
    X86Pv,
    /// An x86 HVM (or PVH) guest.
    X86Hvm,
}

impl GuestType {
    /// The domain header's type number.
    pub fn domain_type(self) -> crate::libxc::DomainType {
        match self {
            GuestType::X86Pv => crate::libxc::DomainType::X86_PV,
            GuestType::X86Hvm => crate::libxc::DomainType::X86_HVM,
        }
    }

    /// The guest type a domain header's type number names, if it is one xenmig handles.
    pub fn from_domain_type(t: crate::libxc::DomainType) -> Option<GuestType> {
        match t {
            crate::libxc::DomainType::X86_PV => Some(GuestType::X86Pv),
            crate::libxc::DomainType::X86_HVM => Some(GuestType::X86Hvm),
            _ => None,
        }
    }
}
