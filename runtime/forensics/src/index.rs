//! Where each guest page's latest copy is in a stream, and the vCPU state that goes with it.
//!
//! [`PageIndex::build`] reads a stream once through a checked reader (whatever `xenmig verify
//! --lenient` refuses, it refuses with the same rule and offset) and keeps, for every guest
//! frame, the offset of the octets of its latest copy: a page sent again by a later precopy
//! pass or a later checkpoint replaces the earlier one, as a restore would. It keeps no page
//! contents, so its memory grows with the number of frames, never with their size.
//!
//! A checkpointed stream (Remus, COLO) is a sequence of consistent images. The index
//! describes one of them: by default the last complete checkpoint, or the one chosen with
//! [`Which::Checkpoint`]. Changes read after that checkpoint's end are kept apart and dropped
//! when the stream stops before the next one ends, as a secondary that fails over drops them.

use crate::cpu::{PvWidth, VcpuRegs};
use crate::ForensicsError;
use std::collections::{BTreeMap, HashMap};
use xenmig_core::limits::PAGE_SIZE;
use xenmig_core::wire::DecodeCtx;
use xenmig_core::{libxc, libxl, xl, ErrorKind, Layer};
use xenmig_stream::reader::{Item, RawRecord, Reader};
use xenmig_stream::source::Source;
use xenmig_stream::verify::check_as_read;

/// Which consistent image of the stream to index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    /// A plain image as a whole; for a checkpointed stream, its last complete checkpoint.
    #[default]
    Last,
    /// The n-th complete checkpoint of a checkpointed stream, from 1.
    Checkpoint(u64),
}

/// Where a guest frame's octets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAt {
    /// At this offset of the stream (from the first octet the reader read).
    Stream(u64),
    /// Allocated without data (XALLOC): a page of zeros.
    Zero,
}

/// What kind of guest the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// A PV guest of this width (known once X86_PV_INFO was read).
    Pv(Option<PvWidth>),
    /// An HVM (or PVH) guest.
    Hvm,
}

/// A record of guest or device state, kept as it was read (the latest of its kind).
#[derive(Debug, Clone)]
pub struct KeptRecord {
    /// The layer the record belongs to.
    pub layer: Layer,
    /// The record type.
    pub record_type: u32,
    /// What tells records of one type apart: the vCPU id of per-vCPU records, the emulator
    /// id of libxl's emulator records, else 0.
    pub key: u32,
    /// How to decode the body.
    pub ctx: DecodeCtx,
    /// The body, without framing.
    pub body: Vec<u8>,
}

/// The state one consistent image carries besides its pages.
#[derive(Debug, Clone, Default)]
struct State {
    /// PV vCPU contexts by id (X86_PV_VCPU_BASIC's context).
    pv_vcpus: BTreeMap<u32, Vec<u8>>,
    hvm_context: Option<Vec<u8>>,
    shared_info: Option<Vec<u8>>,
    /// Every other state record by (layer, type, key).
    records: BTreeMap<(Layer, u32, u32), KeptRecord>,
}

impl State {
    /// Keeps `rec` as the latest record of its kind.
    fn keep(&mut self, rec: &RawRecord<'_>, key: u32) {
        self.records.insert(
            (rec.layer, rec.record_type, key),
            KeptRecord {
                layer: rec.layer,
                record_type: rec.record_type,
                key,
                ctx: rec.ctx,
                body: rec.body.to_vec(),
            },
        );
    }

    /// Lays `newer` over `self`.
    fn apply(&mut self, newer: State) {
        self.records.extend(newer.records);
        self.pv_vcpus.extend(newer.pv_vcpus);
        if newer.hvm_context.is_some() {
            self.hvm_context = newer.hvm_context;
        }
        if newer.shared_info.is_some() {
            self.shared_info = newer.shared_info;
        }
    }
}

/// The pages of one consistent image, by frame, and its vCPUs.
#[derive(Debug, Clone)]
pub struct PageIndex {
    guest: Guest,
    /// (pfn, where), ascending by pfn.
    pages: Vec<(u64, PageAt)>,
    vcpus: Vec<VcpuRegs>,
    shared_info: Option<Vec<u8>>,
    hvm_context: Option<Vec<u8>>,
    records: Vec<KeptRecord>,
    /// The xl header and its optional data (the domain config), for an xl save file.
    xl: Option<(xl::XlHeader, Vec<u8>)>,
    /// PV vCPU contexts as the stream has them, by vCPU id.
    pv_contexts: Vec<(u32, Vec<u8>)>,
    checkpointed: bool,
    /// Complete checkpoints read.
    checkpoints: u64,
}

/// How far the image being read has got.
#[derive(Default)]
struct Builder {
    guest: Option<Guest>,
    /// Frames of the images completed so far.
    committed: HashMap<u64, PageAt>,
    /// Frames changed since the last boundary.
    pending: HashMap<u64, PageAt>,
    committed_state: State,
    pending_state: State,
    xl: Option<(xl::XlHeader, Vec<u8>)>,
    /// A boundary was reached at least once (the image, or a first checkpoint, is whole).
    whole: bool,
    checkpointed: bool,
    checkpoints: u64,
}

impl Builder {
    fn page(&mut self, pfn: u64, at: PageAt) {
        if at == PageAt::Zero
            && (self.pending.contains_key(&pfn) || self.committed.contains_key(&pfn))
        {
            // XALLOC populates a frame that has no contents yet; it never clears one.
            return;
        }
        self.pending.insert(pfn, at);
    }

    /// The end of a consistent image: what was read since the last one becomes part of it.
    fn commit(&mut self) {
        self.committed.extend(self.pending.drain());
        let newer = std::mem::take(&mut self.pending_state);
        self.committed_state.apply(newer);
        self.whole = true;
    }
}

/// Follows a stream item by item and keeps what [`PageIndex`] needs: feed it every item a
/// checked reader yields (from the stream's start), then [`Tracker::finish`]. Reading can
/// stop once [`Tracker::item`] returns false: the chosen checkpoint is complete.
#[derive(Default)]
pub struct Tracker {
    b: Builder,
    which: Which,
    /// Keep the page map (false: registers and guest state only).
    pages: bool,
    /// A libxl header was seen: the libxc image is nested in libxl framing.
    nested: bool,
}

impl Tracker {
    /// A tracker of the image `which` selects, pages included.
    pub fn new(which: Which) -> Tracker {
        Tracker {
            which,
            pages: true,
            ..Tracker::default()
        }
    }

    /// A tracker of the vCPU state only (no page map): what `xenmig info` shows.
    pub fn registers_only(which: Which) -> Tracker {
        Tracker {
            which,
            ..Tracker::default()
        }
    }

    /// Complete checkpoints seen so far.
    pub fn checkpoints(&self) -> u64 {
        self.b.checkpoints
    }

    /// Takes one item. False once the chosen checkpoint is complete (later items would not
    /// change the image).
    pub fn item(&mut self, item: &Item<'_>) -> Result<bool, ForensicsError> {
        let b = &mut self.b;
        match item {
            Item::LibxlHeader { .. } => self.nested = true,
            Item::XlHeader {
                header,
                optional_data,
                ..
            } => {
                b.xl = Some((*header, optional_data.to_vec()));
            }
            Item::DomainHeader { header, .. } => {
                b.guest = Some(if header.r#type == libxc::DomainType::X86_PV {
                    Guest::Pv(None)
                } else {
                    Guest::Hvm
                });
            }
            Item::Record(rec)
                if rec.layer == Layer::Libxl && rec.record_type == libxl::CheckpointEnd::TYPE =>
            {
                b.checkpointed = true;
                b.checkpoints += 1;
                b.commit();
            }
            Item::Record(rec) if rec.layer == Layer::Libxl => match rec.libxl()? {
                libxl::Record::EmulatorXenstoreData(d) => {
                    b.pending_state.keep(rec, d.emulator_id.0)
                }
                libxl::Record::EmulatorContext(c) => b.pending_state.keep(rec, c.emulator_id.0),
                // A plain libxl stream's device model records follow the libxc END.
                libxl::Record::End(_) => b.commit(),
                _ => {}
            },
            // Without a page map a PAGE_DATA record holds nothing to keep: it is not decoded
            // (the reader's checks have already looked at it).
            Item::Record(rec) if !self.pages && rec.record_type == libxc::PageData::TYPE => {}
            Item::Record(rec) => match rec.libxc()? {
                libxc::Record::PageData(p) if self.pages => {
                    // The page octets end the body.
                    let first =
                        rec.body_offset() + rec.body.len().saturating_sub(p.pages.len()) as u64;
                    let mut next = first;
                    for e in p.entries.iter() {
                        let t = e.page_type();
                        if t.has_data() {
                            b.page(e.pfn(), PageAt::Stream(next));
                            next += PAGE_SIZE as u64;
                        } else if t == libxc::PageType::XALLOC {
                            b.page(e.pfn(), PageAt::Zero);
                        }
                    }
                }
                libxc::Record::X86PvInfo(i) => {
                    b.guest = Some(Guest::Pv(PvWidth::from_octets(i.guest_width)));
                }
                libxc::Record::X86PvVcpuBasic(v) => {
                    b.pending_state
                        .pv_vcpus
                        .insert(v.vcpu_id, v.context.to_vec());
                }
                libxc::Record::SharedInfo(s) => {
                    b.pending_state.shared_info = Some(s.shared_info.to_vec());
                }
                libxc::Record::HvmContext(h) => {
                    b.pending_state.hvm_context = Some(h.context.to_vec());
                }
                libxc::Record::Checkpoint(_) => {
                    b.checkpointed = true;
                    // Inside libxl framing the checkpoint ends with libxl's CHECKPOINT_END,
                    // after the device model's records.
                    if !self.nested {
                        b.checkpoints += 1;
                        b.commit();
                    }
                }
                libxc::Record::End(_) => b.commit(),
                libxc::Record::PageData(_)
                | libxc::Record::Verify(_)
                | libxc::Record::StaticDataEnd(_)
                | libxc::Record::CheckpointDirtyPfnList(_) => {}
                // An unknown (optional) record carries nothing Xen's restore uses, and a
                // stream may hold any number of distinct ones: counted by the verifier, not
                // kept.
                libxc::Record::Unknown { .. } => {}
                r => {
                    let key = match r {
                        libxc::Record::X86PvVcpuExtended(v) => v.vcpu_id,
                        libxc::Record::X86PvVcpuXsave(v) => v.vcpu_id,
                        libxc::Record::X86PvVcpuMsrs(v) => v.vcpu_id,
                        _ => 0,
                    };
                    b.pending_state.keep(rec, key);
                }
            },
            _ => {}
        }
        Ok(match self.which {
            Which::Checkpoint(n) => b.checkpoints < n,
            Which::Last => true,
        })
    }

    /// The image: the chosen checkpoint, the last complete one, or the whole plain image.
    pub fn finish(self) -> Result<PageIndex, ForensicsError> {
        let b = self.b;
        if let Which::Checkpoint(n) = self.which {
            if !b.checkpointed {
                return Err(ForensicsError::Usage(format!(
                    "checkpoint {n} was asked for, but the stream is not checkpointed"
                )));
            }
            if b.checkpoints < n {
                return Err(ForensicsError::Usage(format!(
                    "checkpoint {n} was asked for, but the stream has {} complete checkpoint{}",
                    b.checkpoints,
                    if b.checkpoints == 1 { "" } else { "s" }
                )));
            }
        }
        if !b.whole {
            // A checked reader refuses a plain image without END, so this is a checkpointed
            // stream that stopped inside its first checkpoint.
            return Err(ForensicsError::Usage(
                "the stream holds no complete checkpoint: there is no consistent image to extract"
                    .into(),
            ));
        }
        let guest = b
            .guest
            .ok_or_else(|| ForensicsError::Usage("the stream has no domain header".into()))?;
        let state = b.committed_state;
        let vcpus = match guest {
            Guest::Hvm => match &state.hvm_context {
                Some(c) => VcpuRegs::from_hvm_context(c)?,
                None => Vec::new(),
            },
            Guest::Pv(width) => {
                let mut out = Vec::new();
                for (&id, ctx) in &state.pv_vcpus {
                    let w = width.ok_or_else(|| ForensicsError::State {
                        what: format!("vCPU {id}'s PV context"),
                        detail: "the stream gives no guest width (X86_PV_INFO)".into(),
                    })?;
                    out.push(VcpuRegs::from_pv(id, ctx, w)?);
                }
                out
            }
        };
        let mut pages: Vec<(u64, PageAt)> = b.committed.into_iter().collect();
        pages.sort_unstable_by_key(|&(pfn, _)| pfn);
        Ok(PageIndex {
            guest,
            pages,
            vcpus,
            shared_info: state.shared_info,
            hvm_context: state.hvm_context,
            records: state.records.into_values().collect(),
            xl: b.xl,
            pv_contexts: state.pv_vcpus.into_iter().collect(),
            checkpointed: b.checkpointed,
            checkpoints: b.checkpoints,
        })
    }
}

impl PageIndex {
    /// Reads `reader` (any framing; a fresh reader, so that every item is checked as
    /// `verify` checks it) and indexes the image `which` selects.
    pub fn build<S: Source>(reader: Reader<S>, which: Which) -> Result<PageIndex, ForensicsError> {
        PageIndex::build_with(reader, Tracker::new(which))
    }

    /// [`PageIndex::build`] with a tracker of one's own (e.g. [`Tracker::registers_only`],
    /// for the guest state without the page map).
    pub fn build_with<S: Source>(
        mut reader: Reader<S>,
        mut t: Tracker,
    ) -> Result<PageIndex, ForensicsError> {
        if !check_as_read(&mut reader) {
            return Err(ForensicsError::Usage(
                "the reader has already handed out items; the index needs the stream from its start".into(),
            ));
        }
        loop {
            let item = match reader.next_item() {
                Ok(item) => item,
                // As `verify` does: a checkpointed stream may stop inside a record; what
                // counts is its last complete checkpoint.
                Err(e) if e.kind == ErrorKind::Truncated && t.checkpoints() > 0 => break,
                Err(e) => return Err(e.into()),
            };
            let eof = matches!(item, Item::Eof { .. });
            if !t.item(&item)? || eof {
                break;
            }
        }
        t.finish()
    }

    /// The kind of guest.
    pub fn guest(&self) -> Guest {
        self.guest
    }

    /// Every present frame and where its octets are, ascending by pfn.
    pub fn pages(&self) -> &[(u64, PageAt)] {
        &self.pages
    }

    /// Where frame `pfn`'s octets are, if the image has it.
    pub fn find(&self, pfn: u64) -> Option<PageAt> {
        self.pages
            .binary_search_by_key(&pfn, |&(p, _)| p)
            .ok()
            .and_then(|i| self.pages.get(i))
            .map(|&(_, at)| at)
    }

    /// Runs of consecutive present frames: (first pfn, number of frames), ascending.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &(pfn, _) in &self.pages {
            match out.last_mut() {
                Some((start, n)) if *start + *n == pfn => *n += 1,
                _ => out.push((pfn, 1)),
            }
        }
        out
    }

    /// The vCPUs' registers, by vCPU id.
    pub fn vcpus(&self) -> &[VcpuRegs] {
        &self.vcpus
    }

    /// The shared info page (PV images carry it).
    pub fn shared_info(&self) -> Option<&[u8]> {
        self.shared_info.as_deref()
    }

    /// The image's other state records (libxc's and libxl's, besides pages, vCPU basic
    /// contexts, HVM_CONTEXT and SHARED_INFO), the latest of each kind, by layer, type and key.
    pub fn records(&self) -> &[KeptRecord] {
        &self.records
    }

    /// The xl header and its optional data (for an `xl save` file).
    pub fn xl_header(&self) -> Option<(&xl::XlHeader, &[u8])> {
        self.xl.as_ref().map(|(h, d)| (h, d.as_slice()))
    }

    /// The PV vCPU contexts (X86_PV_VCPU_BASIC's, in the guest's width) by vCPU id.
    pub fn pv_contexts(&self) -> &[(u32, Vec<u8>)] {
        &self.pv_contexts
    }

    /// The HVM context (HVM images carry it).
    pub fn hvm_context(&self) -> Option<&[u8]> {
        self.hvm_context.as_deref()
    }

    /// Whether the stream is checkpointed, and then how many complete checkpoints were read
    /// (with [`Which::Checkpoint`], reading stops at the one asked for).
    pub fn checkpoints(&self) -> Option<u64> {
        self.checkpointed.then_some(self.checkpoints)
    }
}
