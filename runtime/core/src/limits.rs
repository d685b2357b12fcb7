//! Every limit xenmig enforces, in one place, each with the Xen figure it follows.
//!
//! Two kinds of number live here. Format facts come from the specs in `spec/` (through the
//! generated [`libxc`], [`libxl`] and [`xl`](crate::xl) modules) and are only given the integer type
//! the code indexes with; their value is never written again. Caps are xenmig's own: where
//! Xen enforces the same bound, the figure is Xen's and its doc says where Xen keeps it;
//! where Xen has none (it allocates whatever a length field says), the doc says so and why
//! the figure was chosen.
//!
//! `cargo xtask check` refuses framing, page-size, alignment and cap literals in the rest of
//! the runtime crates' `src` and `cli/src`, so a new limit is added here or not at all.

use crate::{libxc, libxl};

// ---------------------------------------------------------------------------------------
// Format facts, from the specs.
// ---------------------------------------------------------------------------------------

/// Octets in a guest page ([`libxc::PAGE_SIZE`]), as an index type.
pub const PAGE_SIZE: usize = libxc::PAGE_SIZE as usize;

/// log2 of [`PAGE_SIZE`] ([`libxc::PAGE_SHIFT`]): shifts a frame number to an address and
/// back.
pub const PAGE_SHIFT: u32 = libxc::PAGE_SHIFT as u32;

const _: () = assert!(1usize << PAGE_SHIFT == PAGE_SIZE);

/// The bits of an address (or of a cr1/cr3-style value) below the page frame.
pub const PAGE_OFFSET_MASK: u64 = PAGE_SIZE as u64 - 1;

/// Octets of the header in front of every record body, libxc and libxl alike
/// ([`libxc::RecordHeader`]).
pub const RECORD_HEADER_SIZE: usize = libxc::RecordHeader::SIZE;

/// Where the body length sits in a record header.
pub const RECORD_LENGTH_OFFSET: usize = libxc::RecordHeader::LENGTH_OFFSET;

/// Record bodies are padded with zeros to a multiple of this ([`libxc::RECORD_ALIGNMENT`]).
pub const RECORD_ALIGNMENT: usize = libxc::RECORD_ALIGNMENT as usize;

/// Largest record body a reader accepts and a writer produces, padding included for the
/// writer ([`libxc::MAX_RECORD_LENGTH`], Xen's `REC_LENGTH_MAX`, 128 MiB).
pub const MAX_RECORD_LENGTH: u32 = libxc::MAX_RECORD_LENGTH;

/// A body's length with its padding: the octets that follow the record header.
pub const fn padded_body_len(len: usize) -> usize {
    len.div_ceil(RECORD_ALIGNMENT) * RECORD_ALIGNMENT
}

/// Octets of one PAGE_DATA entry (a typed pfn, [`libxc::PageEntry`]).
pub const PAGE_ENTRY_SIZE: usize = <libxc::PageEntry as crate::wire::Element>::SIZE;

/// The page-table level (1 to 4) of a page type, pinned or not; `None` for every type that
/// is not a page table (the spec's `level` attribute of `page_type`).
pub fn table_level(t: libxc::PageType) -> Option<u32> {
    t.level().map(u32::from)
}

// ---------------------------------------------------------------------------------------
// Stream caps.
// ---------------------------------------------------------------------------------------

/// Largest xl optional data (the saved domain configuration) xenmig reads, by the reader,
/// `xlfile` and the legacy converter alike. Xen has no figure: xl allocates and reads
/// whatever `optional_data_len` says, up to 4 GiB. Ours: libxl's JSON config of a guest is a
/// few KiB, and 64 MiB leaves room for any real one while refusing a corrupt length before
/// allocating it.
pub const XL_OPTIONAL_DATA_MAX: u32 = 64 << 20;

/// Largest CHECKPOINT_STATE body read from the COLO back channel. libxl writes 8 octets
/// ([`libxl::CheckpointState::SIZE`]); ours: a page's worth, so a larger length is refused
/// before it is allocated.
pub const CHECKPOINT_STATE_BODY_MAX: u32 = 4096;

const _: () = assert!(libxl::CheckpointState::SIZE as u32 <= CHECKPOINT_STATE_BODY_MAX);

/// Largest body of a libxl save-helper message: the body length travels as a `u16`, and
/// the code `libxl_save_msgs_gen.pl` generates asserts `len < 65536`.
pub const SAVE_HELPER_MAX_BODY: usize = u16::MAX as usize;

// ---------------------------------------------------------------------------------------
// Verification report caps (ours: a report stays small whatever the stream holds).
// ---------------------------------------------------------------------------------------

/// Warnings a report lists; further ones are only counted. Ours.
pub const MAX_WARNINGS: usize = 100;

/// Record types a report counts one by one; records of further (unknown) types are counted
/// together. The formats define 25 types; ours.
pub const MAX_RECORD_TYPES: usize = 64;

/// Distinct vcpu ids a report lists: Xen's vcpu ids stay below [`libxc::MAX_VCPUS`].
pub const MAX_VCPU_IDS: usize = libxc::MAX_VCPUS as usize;

// ---------------------------------------------------------------------------------------
// Restore driver.
// ---------------------------------------------------------------------------------------

/// Room in one checkpoint's buffer for the records that are not pages (vcpu and HVM
/// context, parameters, policies), on top of one page and entry per domain page. Xen
/// buffers a checkpoint without a cap; ours, well above the few MiB such records take.
pub const EPOCH_SLACK: u64 = 64 << 20;

/// Page tables pinned per call at the end of a restore: Xen's PV restorer pins in batches of
/// `MAX_PIN_BATCH` (1024).
pub const PIN_BATCH: usize = 1024;

/// Entries per `XEN_DOMCTL_getpageframeinfo3` call: Xen 4.17 refuses more than 1024 with
/// E2BIG.
pub const PFINFO_BATCH: usize = 1024;

// ---------------------------------------------------------------------------------------
// Legacy (Xen 4.5 and older) streams.
// ---------------------------------------------------------------------------------------

/// Largest page batch in a legacy stream: the legacy saver's `MAX_BATCH_SIZE`, which its
/// restorer also enforces, the same 1024 as the v2 saver's ([`libxc::MAX_BATCH_SIZE`]).
pub const LEGACY_MAX_BATCH_SIZE: u32 = libxc::MAX_BATCH_SIZE;

/// Largest vcpu id in a VCPU_INFO chunk: ids stay below [`libxc::MAX_VCPUS`].
pub const LEGACY_MAX_VCPU_ID: u32 = libxc::MAX_VCPUS - 1;

/// Largest p2m_size the legacy saver writes: it fails with E2BIG above this (a pfn must fit
/// the 28 bits of a legacy pfn_type entry).
pub const LEGACY_MAX_P2M_SIZE: u64 = 0x0FFF_FFFF;

/// Largest count of "unmapped" pfns in a PV tail: Xen's legacy restorer refuses a count
/// above 2^28 (1 TiB of guest memory).
pub const LEGACY_MAX_UNMAPPED_PFNS: u32 = 1 << 28;

/// Largest TOOLSTACK chunk. Xen's legacy restorer reads whatever length the chunk gives;
/// ours: libxl's physmap blob is a few hundred octets.
pub const LEGACY_MAX_TOOLSTACK_LENGTH: u32 = 16 << 20;

/// Largest HVM context blob: it becomes one HVM_CONTEXT record, so it stays below
/// [`MAX_RECORD_LENGTH`], less one record header as the converter has always allowed.
pub const LEGACY_MAX_HVM_CONTEXT_LENGTH: u32 = MAX_RECORD_LENGTH - RECORD_HEADER_SIZE as u32;

/// Largest qemu trailer: it becomes one libxl EMULATOR_CONTEXT record, whose fixed fields
/// ([`libxl::EmulatorContext::MIN_SIZE`]) precede it within [`MAX_RECORD_LENGTH`].
pub const LEGACY_MAX_QEMU_RECORD_LENGTH: u64 =
    MAX_RECORD_LENGTH as u64 - libxl::EmulatorContext::MIN_SIZE as u64;

/// Largest "xcnt" value (xsave buffer size + 16). Xen's restorer takes any size the
/// hypervisor accepts; ours: real xsave areas are a few KiB.
pub const LEGACY_MAX_XSAVE_SIZE: u32 = 1 << 20;

/// HVM parameter chunks merged into one HVM_PARAMS record. A real stream has at most 11;
/// ours.
pub const MAX_HVM_PARAM_CHUNKS: usize = 1024;

/// Largest EMULATOR_XENSTORE_DATA body the converter builds from physmap keys. libxl reads
/// any length; ours, far above the few keys a guest has.
pub const MAX_EMULATOR_XENSTORE_DATA: usize = 16 << 20;

// ---------------------------------------------------------------------------------------
// Simulator (ours: it stands in for a small test guest).
// ---------------------------------------------------------------------------------------

/// Most vcpus a simulated domain has.
pub const SIM_MAX_VCPUS: u32 = 128;

/// Most pfns a simulated domain addresses (64 GiB of guest physical space).
pub const SIM_MAX_PFNS: u64 = 1 << 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_reaches_the_alignment() {
        assert_eq!(padded_body_len(0), 0);
        assert_eq!(padded_body_len(1), RECORD_ALIGNMENT);
        assert_eq!(padded_body_len(RECORD_ALIGNMENT), RECORD_ALIGNMENT);
        assert_eq!(padded_body_len(RECORD_ALIGNMENT + 1), 2 * RECORD_ALIGNMENT);
    }

    #[test]
    fn table_levels_follow_the_spec_variants() {
        use libxc::PageType as T;
        let tables = [
            (T::L1TAB, 1),
            (T::L2TAB, 2),
            (T::L3TAB, 3),
            (T::L4TAB, 4),
            (T::L1TAB_PINNED, 1),
            (T::L2TAB_PINNED, 2),
            (T::L3TAB_PINNED, 3),
            (T::L4TAB_PINNED, 4),
        ];
        for (t, level) in tables {
            assert_eq!(table_level(t), Some(level), "{t}");
        }
        for t in [
            T::NOTAB,
            T::BROKEN,
            T::XALLOC,
            T::XTAB,
            T(5),
            T(6),
            T(7),
            T(8),
        ] {
            assert_eq!(table_level(t), None, "{t}");
        }
    }
}
