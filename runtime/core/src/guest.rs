//! The kind of guest, as the libxc domain header names it.

/// The kind of guest, as the libxc domain header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum GuestType {
    X86Pv,
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

    pub fn from_domain_type(t: crate::libxc::DomainType) -> Option<GuestType> {
        match t {
            crate::libxc::DomainType::X86_PV => Some(GuestType::X86Pv),
            crate::libxc::DomainType::X86_HVM => Some(GuestType::X86Hvm),
            _ => None,
        }
    }
}
