//! Checks a whole stream and describes it.
//!
//! Record bodies are checked by the generated decoders (every field and rule of `spec/`); the
//! stream-level rules come from the spec's tables: which records are forbidden, optional,
//! version-bound, guest-bound, once-only or checkpoint-only (`RECORDS`), and per-guest
//! requirements and ordering (`LAYOUTS`). What is left here is the machinery that applies
//! those tables, the checkpoint structure, and a few rules the spec language cannot state
//! (xenstore key shapes, the static-data boundary being implied in version 2).
//!
//! The same checks run inside every consumer of a stream: [`check_as_read`] puts them on a
//! [`Reader`], so a restore or a listing refuses what `verify` refuses, with the same rule at
//! the same offset ("one verdict"; `verify --lenient` is the floor of what anything accepts).
//!
//! A report keeps counts, never one entry per record: its lists (record types, warnings,
//! vcpu ids) stop growing at the caps below and count what they leave out, so memory stays
//! bounded on an endless stream.

use crate::error::{ErrorKind, Layer, StreamError};
use crate::reader::{Framing, Item, ItemCheck, RawRecord, Reader, ReaderOptions};
use crate::source::Source;
use crate::wire::{Layout, Level, RecordInfo, Role, Status, Strictness};
use crate::{libxc, libxl, xl};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

// A report's caps: warnings beyond MAX_WARNINGS are only counted
// ([`Report::warnings_dropped`]), record types beyond MAX_RECORD_TYPES together
// ([`Report::records_of_other_types`]), vcpu ids beyond MAX_VCPU_IDS too
// ([`Report::vcpus_unlisted`]).
use crate::limits::{MAX_RECORD_TYPES, MAX_VCPU_IDS, MAX_WARNINGS};

/// Something worth telling that does not make the stream invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// Where in the input.
    pub offset: u64,
    /// Index of the record (all layers counted together), if inside one.
    pub record_index: Option<u64>,
    /// Layer and name of the record or header, if inside one.
    pub item: Option<String>,
    /// The rule, as the spec or the verifier names it.
    pub rule: String,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at offset {:#x}", self.offset)?;
        if let Some(i) = self.record_index {
            write!(f, ", record #{i}")?;
        }
        if let Some(item) = &self.item {
            write!(f, " ({item})")?;
        }
        write!(f, ": {}: {}", self.rule, self.detail)
    }
}

/// Records of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordCount {
    /// The layer the type belongs to.
    pub layer: Layer,
    /// The type number.
    pub record_type: u32,
    /// The type's name in its layer.
    pub name: String,
    /// How many records of the type.
    pub count: u64,
    /// Body octets (without framing).
    pub bytes: u64,
    /// The fields of the first record of this type that decoded, rendered from its generated
    /// walk ([`crate::render`]): whatever fields the spec gives the record, and nothing
    /// written per record here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<serde_json::Value>,
}

/// Guest memory seen in PAGE_DATA records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageStats {
    /// PAGE_DATA records.
    pub page_data_records: u64,
    /// Sum of the records' entry counts.
    pub pfn_entries: u64,
    /// Entries that carry a page.
    pub data_pages: u64,
    /// Entries by page type name.
    pub by_type: BTreeMap<String, u64>,
    /// Lowest pfn of any entry.
    pub pfn_min: Option<u64>,
    /// Highest pfn of any entry.
    pub pfn_max: Option<u64>,
}

/// What the xl header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XlInfo {
    /// Names of the mandatory flags set.
    pub mandatory_flags: Vec<String>,
    /// Length of the optional data.
    pub optional_data_len: u32,
    /// Length of the domain config carried in the optional data (JSON, NUL included).
    pub config_len: Option<u32>,
}

/// Everything learnt about a stream: the verdict, and a description shared by the CLI and
/// embedders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether the stream passed: no error at the strictness asked for.
    pub valid: bool,
    /// The strictness verified at (`lenient`, `normal` or `strict`).
    pub strictness: &'static str,
    /// The outermost framing, once known.
    pub framing: Option<Framing>,
    /// The xl header, for an `xl save` file.
    pub xl: Option<XlInfo>,
    /// The libxl stream version.
    pub libxl_version: Option<u32>,
    /// Names of the libxl header's option flags set.
    pub libxl_options: Vec<String>,
    /// The libxc image version.
    pub libxc_version: Option<u32>,
    /// Names of the libxc image header's option flags set.
    pub libxc_options: Vec<String>,
    /// Domain type name (X86_PV, X86_HVM).
    pub guest: Option<String>,
    /// Guest word size in octets (PV guests).
    pub guest_width: Option<u8>,
    /// Page-table levels (PV guests).
    pub pt_levels: Option<u8>,
    /// `major.minor` of the saving Xen; `0.x` marks a stream made by the legacy converter.
    pub xen_version: Option<String>,
    /// Whether the legacy converter made the stream.
    pub converted_from_legacy: bool,
    /// Every record type seen, in stream order of first appearance (at most
    /// [`MAX_RECORD_TYPES`]).
    pub records: Vec<RecordCount>,
    /// Records of types beyond the first [`MAX_RECORD_TYPES`], and their body octets.
    pub records_of_other_types: u64,
    /// Body octets of the records counted in `records_of_other_types`.
    pub bytes_of_other_types: u64,
    /// libxc records read.
    pub libxc_records: u64,
    /// libxl records read.
    pub libxl_records: u64,
    /// Guest memory in the PAGE_DATA records.
    pub pages: PageStats,
    /// vcpu ids of the PV vcpu records (at most [`MAX_VCPU_IDS`]).
    pub vcpus: Vec<u32>,
    /// vcpu records whose id was not listed because the list was full.
    pub vcpus_unlisted: u64,
    /// HVM_PARAMS entries.
    pub hvm_params: u64,
    /// Complete checkpoints (libxl CHECKPOINT_END records, or libxc CHECKPOINTs in a bare
    /// libxc image).
    pub checkpoints: u64,
    /// The final END was read.
    pub end: bool,
    /// Octets after the final END.
    pub trailing_bytes: u64,
    /// Octets read (looked at, when the stream was refused at its first octets).
    pub bytes: u64,
    /// The first [`MAX_WARNINGS`] warnings.
    pub warnings: Vec<Note>,
    /// Warnings beyond those listed.
    pub warnings_dropped: u64,
    /// The first error, which ended verification.
    pub error: Option<StreamError>,
}

impl Report {
    /// All warnings, listed or not.
    pub fn warning_count(&self) -> u64 {
        self.warnings.len() as u64 + self.warnings_dropped
    }
}

/// How to verify.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// The framing, or `None` to detect it.
    pub framing: Option<Framing>,
    /// Which rules fail the stream.
    pub strictness: Strictness,
}

/// Progress: called with the offset reached, every few records.
pub type Progress<'p> = &'p mut dyn FnMut(u64);

/// Verifies a byte slice (e.g. a memory-mapped file) without copying.
pub fn verify_slice(bytes: &[u8], opts: VerifyOptions, progress: Progress<'_>) -> Report {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: opts.framing,
            strictness: opts.strictness,
        },
    );
    verify_reader(&mut r, opts, progress)
}

/// Verifies whatever a reader yields.
pub fn verify_reader<S: Source>(
    reader: &mut Reader<S>,
    opts: VerifyOptions,
    progress: Progress<'_>,
) -> Report {
    verify_reader_observed(reader, opts, progress, &mut |_| {})
}

/// [`verify_reader`], handing each item the verifier accepted to `observe` as well (a
/// consumer that wants the verdict and something of its own from one pass over a pipe).
pub fn verify_reader_observed<S: Source>(
    reader: &mut Reader<S>,
    opts: VerifyOptions,
    progress: Progress<'_>,
    observe: &mut dyn FnMut(&Item<'_>),
) -> Report {
    let mut v = Verifier::new(opts);
    let result = v.run(reader, progress, observe);
    v.name_page_types();
    v.report.bytes = reader.examined();
    v.report.framing = reader.framing();
    if let Err(e) = result {
        v.report.error = Some(e);
    }
    v.report.valid = v.report.error.is_none();
    v.report
}

/// Makes `reader` refuse, as it reads, whatever the verifier refuses at the reader's
/// strictness: the same rule at the same offset. Consumers of streams (the restore drivers,
/// the libxl layer, `dump`) call it first, so `verify` is the floor of what they accept.
/// False when the reader has already handed out items: the checks need the stream from its
/// start.
pub fn check_as_read<S: Source>(reader: &mut Reader<S>) -> bool {
    if reader.is_checked() {
        return true;
    }
    let opts = reader.options();
    reader.check_items(Box::new(Verifier::new(VerifyOptions {
        framing: opts.framing,
        strictness: opts.strictness,
    })))
}

impl ItemCheck for Verifier {
    fn check(&mut self, item: &Item<'_>, offset: u64, colo: bool) -> Result<(), StreamError> {
        self.item(item, offset, colo)
    }
}

struct Verifier {
    opts: VerifyOptions,
    report: Report,
    /// Count of each (layer, type) seen, for the types the formats define.
    seen: BTreeMap<(Layer, u32), u64>,
    domain_type: Option<libxc::DomainType>,
    static_data_done: bool,
    /// Requirement (layout index, requirement index) met.
    met: BTreeSet<(usize, usize)>,
    /// Order rules already reported as warnings.
    warned: BTreeSet<(usize, usize)>,
    /// A libxc CHECKPOINT was read and its libxl CHECKPOINT_END is awaited.
    awaiting_checkpoint_end: bool,
    /// The stream is read as a COLO forward stream ([`Reader::colo`]).
    colo: bool,
    /// The previous record was a libxl CHECKPOINT_END.
    after_checkpoint_end: bool,
    libxc_checkpoints: u64,
    requirements_checked: bool,
    libxc_end: bool,
    libxc_context: bool,
    vcpus: BTreeSet<u32>,
    /// PAGE_DATA entries by page type (the 4-bit field), named in the report at the end.
    page_types: [u64; 16],
    /// PV: the highest pfn the p2m covers so far (the largest X86_PV_P2M_FRAMES end; 0
    /// before any), against which Xen's restore checks every PAGE_DATA pfn.
    pv_max_pfn: u64,
}

impl Verifier {
    fn new(opts: VerifyOptions) -> Self {
        Verifier {
            opts,
            report: Report {
                strictness: match opts.strictness {
                    Strictness::Strict => "strict",
                    Strictness::Lenient => "lenient",
                },
                ..Report::default()
            },
            seen: BTreeMap::new(),
            domain_type: None,
            static_data_done: false,
            met: BTreeSet::new(),
            warned: BTreeSet::new(),
            awaiting_checkpoint_end: false,
            colo: false,
            after_checkpoint_end: false,
            libxc_checkpoints: 0,
            requirements_checked: false,
            libxc_end: false,
            libxc_context: false,
            vcpus: BTreeSet::new(),
            page_types: [0; 16],
            pv_max_pfn: 0,
        }
    }

    fn enforced(&self, level: Level) -> bool {
        self.opts.strictness.enforces(level)
    }

    fn note(&mut self, rec: Option<&RawRecord<'_>>, offset: u64, rule: &str, detail: String) {
        if self.report.warnings.len() >= MAX_WARNINGS {
            self.report.warnings_dropped += 1;
            return;
        }
        self.report.warnings.push(Note {
            offset,
            record_index: rec.map(|r| r.index),
            item: rec.map(|r| format!("{} {}", r.layer, r.type_name())),
            rule: rule.to_string(),
            detail,
        });
    }

    /// A rule broken by `rec`: an error when enforced, a warning otherwise.
    fn broken(
        &mut self,
        rec: &RawRecord<'_>,
        level: Level,
        rule: &str,
        detail: String,
    ) -> Result<(), StreamError> {
        if self.enforced(level) {
            return Err(rec.error(StreamError::invalid(rec.offset, rule, detail).with_level(level)));
        }
        if level == Level::Warn {
            self.note(Some(rec), rec.offset, rule, detail);
        }
        Ok(())
    }

    fn run<S: Source>(
        &mut self,
        reader: &mut Reader<S>,
        progress: Progress<'_>,
        observe: &mut dyn FnMut(&Item<'_>),
    ) -> Result<(), StreamError> {
        let mut n = 0u64;
        loop {
            n += 1;
            if n.is_multiple_of(256) {
                progress(reader.offset());
            }
            let (offset, colo) = (reader.offset(), reader.is_colo());
            let item = match reader.next_item() {
                Ok(item) => item,
                // A checkpointed stream may stop anywhere, inside a record too: a receiver
                // fails over to the last complete checkpoint, as at a record boundary.
                Err(e) if e.kind == ErrorKind::Truncated && self.report.checkpoints > 0 => {
                    progress(reader.offset());
                    return self.finish(e.offset, false);
                }
                Err(e) => return Err(e),
            };
            let eof = matches!(item, Item::Eof { .. });
            self.item(&item, offset, colo)?;
            observe(&item);
            if eof {
                progress(reader.offset());
                return Ok(());
            }
        }
    }

    /// Checks one item; `offset` is where the reader stood before it (for the end of the
    /// input, where it ended).
    fn item(&mut self, item: &Item<'_>, offset: u64, colo: bool) -> Result<(), StreamError> {
        self.colo = colo;
        match item {
            Item::XlHeader {
                header,
                optional_data,
                ..
            } => self.xl_header(header, optional_data)?,
            Item::LibxlHeader { header, .. } => {
                self.report.libxl_version = Some(header.version);
                self.report.libxl_options = flag_names(
                    header.options.0 as u64,
                    libxl::LibxlOptions::NAMED
                        .iter()
                        .map(|(f, n)| (f.0 as u64, *n)),
                );
            }
            Item::ImageHeader { header, .. } => {
                self.report.libxc_version = Some(header.version);
                self.report.libxc_options = flag_names(
                    header.options.0 as u64,
                    libxc::ImageOptions::NAMED
                        .iter()
                        .map(|(f, n)| (f.0 as u64, *n)),
                );
            }
            Item::DomainHeader { header, .. } => {
                self.domain_type = Some(header.r#type);
                self.report.guest = Some(header.r#type.to_string());
                self.report.converted_from_legacy = header.xen_major == libxc::CONVERTED_XEN_MAJOR;
                self.report.xen_version =
                    Some(format!("{}.{}", header.xen_major, header.xen_minor));
            }
            Item::Record(rec) => {
                self.count(rec);
                let after_checkpoint_end = std::mem::take(&mut self.after_checkpoint_end);
                match rec.layer {
                    Layer::Libxl => self.libxl_record(rec, after_checkpoint_end)?,
                    _ => self.libxc_record(rec)?,
                }
            }
            Item::Trailing { offset, data } => {
                if self.report.trailing_bytes == 0 {
                    let text = printable(data, 48);
                    self.note(
                        None,
                        *offset,
                        "trailing_data",
                        format!("octets follow the final END (not part of the stream, e.g. xl's migration message or a qemu trailer): \"{text}\""),
                    );
                }
                self.report.trailing_bytes += data.len() as u64;
            }
            Item::Eof { complete } => return self.finish(offset, *complete),
        }
        Ok(())
    }

    /// Fills the report's page counts by type name from the counters.
    fn name_page_types(&mut self) {
        for (t, n) in self.page_types.iter().enumerate() {
            if *n > 0 {
                let name = libxc::PageType(t as u32).to_string();
                *self.report.pages.by_type.entry(name).or_insert(0) += n;
            }
        }
    }

    /// The xl header and its optional data, judged as a restore judges them
    /// ([`crate::xlfile::parse`], what xl reads): optional data too short for the config
    /// length it announces is refused, whatever the JSON flag says.
    fn xl_header(
        &mut self,
        header: &xl::XlHeader,
        optional_data: &[u8],
    ) -> Result<(), StreamError> {
        let flags = flag_names(
            header.mandatory_flags.0 as u64,
            xl::XlMandatoryFlags::NAMED
                .iter()
                .map(|(f, n)| (f.0 as u64, *n)),
        );
        self.report.xl = Some(XlInfo {
            mandatory_flags: flags,
            optional_data_len: header.optional_data_len,
            config_len: None,
        });
        crate::xlfile::parse(header, optional_data)?;
        if header.mandatory_flags.contains(xl::XlMandatoryFlags::JSON) {
            let ctx = crate::wire::DecodeCtx::new(0).with_strictness(Strictness::Lenient);
            if let (Ok(d), Some(x)) = (
                xl::XlOptionalData::decode(optional_data, &ctx),
                self.report.xl.as_mut(),
            ) {
                x.config_len = Some(d.config.len() as u32);
            }
        }
        Ok(())
    }

    /// Counts a record: by type for the first [`MAX_RECORD_TYPES`] types, together beyond;
    /// `seen` (what the rules ask about) only for the types the formats define.
    fn count(&mut self, rec: &RawRecord<'_>) {
        if rec.info().is_some() {
            *self.seen.entry((rec.layer, rec.record_type)).or_insert(0) += 1;
        }
        let bytes = rec.body.len() as u64;
        let records = &mut self.report.records;
        if let Some(rc) = records
            .iter_mut()
            .find(|r| r.layer == rec.layer && r.record_type == rec.record_type)
        {
            rc.count += 1;
            rc.bytes += bytes;
        } else if records.len() < MAX_RECORD_TYPES {
            records.push(RecordCount {
                layer: rec.layer,
                record_type: rec.record_type,
                name: rec.type_name(),
                count: 1,
                bytes,
                first: None,
            });
        } else {
            self.report.records_of_other_types += 1;
            self.report.bytes_of_other_types += bytes;
        }
        match rec.layer {
            Layer::Libxl => self.report.libxl_records += 1,
            _ => self.report.libxc_records += 1,
        }
    }

    /// Lists a vcpu id, up to [`MAX_VCPU_IDS`] of them.
    fn vcpu(&mut self, id: u32) {
        if self.vcpus.len() < MAX_VCPU_IDS || self.vcpus.contains(&id) {
            self.vcpus.insert(id);
        } else {
            self.report.vcpus_unlisted += 1;
        }
    }

    fn seen(&self, layer: Layer, t: u32) -> u64 {
        self.seen.get(&(layer, t)).copied().unwrap_or(0)
    }

    /// The layouts that apply to this stream's guest (an iterator that does not borrow the
    /// verifier, so the rules can update it as they go).
    fn layouts(&self) -> impl Iterator<Item = (usize, &'static Layout)> {
        let guest = self.domain_type.and_then(|d| d.name());
        libxc::LAYOUTS
            .iter()
            .enumerate()
            .filter(move |(_, l)| l.guest == "all" || Some(l.guest) == guest)
    }

    /// Checks shared by both layers, driven by the record's spec entry.
    fn table_rules(
        &mut self,
        rec: &RawRecord<'_>,
        info: &'static RecordInfo,
        version: u32,
    ) -> Result<(), StreamError> {
        if info.status == Status::Forbidden {
            self.broken(
                rec,
                Level::Required,
                "forbidden",
                format!("{} never appears in a forward stream", info.name),
            )?;
        }
        if let Some(since) = info.since_version {
            if version < since && info.role != Some(Role::StaticDataEnd) {
                self.broken(
                    rec,
                    Level::Strict,
                    "since_version",
                    format!(
                        "{} exists from version {since}; this stream is version {version}",
                        info.name
                    ),
                )?;
            }
        }
        if !info.guests.is_empty() {
            let guest = self.domain_type.and_then(|d| d.name());
            if !info.guests.iter().any(|g| Some(*g) == guest) {
                self.broken(
                    rec,
                    Level::Required,
                    "guests",
                    format!(
                        "{} is only valid for {} guests; this stream is {}",
                        info.name,
                        info.guests.join(", "),
                        guest.unwrap_or("of an unknown guest type")
                    ),
                )?;
            }
        }
        if info.once && self.seen(rec.layer, rec.record_type) > 1 {
            self.broken(
                rec,
                Level::Required,
                "once",
                format!("{} may appear only once", info.name),
            )?;
        }
        if info.checkpointed_only
            && self.libxc_checkpoints == 0
            && info.role != Some(Role::Checkpoint)
        {
            self.broken(
                rec,
                Level::Required,
                "checkpointed_only",
                format!("{} belongs to checkpointed (Remus/COLO) streams, and no CHECKPOINT came before it", info.name),
            )?;
        }
        if let Some(level) = info.empty_payload {
            if info.empty_body {
                // Nothing to say about a record that is always empty.
            } else if rec.body.len() <= info.min_size && level == Level::Warn {
                self.note(
                    Some(rec),
                    rec.offset,
                    "empty_payload",
                    format!(
                        "{} carries no data after its header and is skipped",
                        info.name
                    ),
                );
            }
        }
        Ok(())
    }

    /// Keeps the rendered fields of the first record of each listed type.
    fn note_first(&mut self, rec: &RawRecord<'_>, decoded: &dyn crate::wire::Walk) {
        if let Some(rc) =
            self.report.records.iter_mut().find(|r| {
                r.first.is_none() && r.layer == rec.layer && r.record_type == rec.record_type
            })
        {
            rc.first = Some(crate::render::json(decoded));
        }
    }

    fn libxc_record(&mut self, rec: &RawRecord<'_>) -> Result<(), StreamError> {
        let decoded = rec.libxc()?;
        self.note_first(rec, &decoded);
        let version = self.report.libxc_version.unwrap_or(0);
        let Some(info) = rec.info() else {
            // Unknown type: bit 31 says whether a reader may skip it.
            if rec.record_type & libxc::RECORD_TYPE_OPTIONAL == 0 {
                return Err(rec.error(StreamError::invalid(
                    rec.offset,
                    "unknown_mandatory",
                    format!(
                        "record type {:#x} is unknown and mandatory (bit 31 clear)",
                        rec.record_type
                    ),
                )));
            }
            self.note(
                Some(rec),
                rec.offset,
                "unknown_optional",
                format!(
                    "optional record type {:#x} is unknown and skipped",
                    rec.record_type
                ),
            );
            return Ok(());
        };
        if self.libxc_end {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "after_end",
                "a libxc record follows the libxc END".to_string(),
            )));
        }
        self.table_rules(rec, info, version)?;
        self.static_data(rec, info, version)?;
        self.order_rules(rec)?;
        self.requirements(rec);
        match decoded {
            libxc::Record::PageData(p) => {
                self.pv_pfns_mapped(rec, &p)?;
                let s = &mut self.report.pages;
                s.page_data_records += 1;
                s.pfn_entries += p.entries.len() as u64;
                for e in p.entries.iter() {
                    // From the entries: a reader may hold the page octets back.
                    s.data_pages += u64::from(e.page_type().has_data());
                    let pfn = e.pfn();
                    s.pfn_min = Some(s.pfn_min.map_or(pfn, |m| m.min(pfn)));
                    s.pfn_max = Some(s.pfn_max.map_or(pfn, |m| m.max(pfn)));
                    let t = e.page_type().0 as usize;
                    if let Some(c) = self.page_types.get_mut(t) {
                        *c += 1;
                    }
                }
            }
            libxc::Record::X86PvP2mFrames(f) => {
                self.pv_max_pfn = self.pv_max_pfn.max(u64::from(f.p2m_end_pfn));
            }
            libxc::Record::X86PvInfo(i) => {
                self.report.guest_width = Some(i.guest_width);
                self.report.pt_levels = Some(i.pt_levels);
            }
            libxc::Record::X86PvVcpuBasic(v) => self.vcpu(v.vcpu_id),
            libxc::Record::X86PvVcpuExtended(v) => self.vcpu(v.vcpu_id),
            libxc::Record::X86PvVcpuXsave(v) => self.vcpu(v.vcpu_id),
            libxc::Record::X86PvVcpuMsrs(v) => self.vcpu(v.vcpu_id),
            libxc::Record::HvmParams(p) => self.report.hvm_params += p.params.len() as u64,
            _ => {}
        }
        match info.role {
            Some(Role::End) => {
                if self.libxc_checkpoints > 0 {
                    self.broken(
                        rec,
                        Level::Strict,
                        "end.checkpointed",
                        "a checkpointed stream never ends with END: the primary keeps sending checkpoints".to_string(),
                    )?;
                }
                self.libxc_end = true;
                self.check_requirements(rec.offset, Some(rec))?;
                // In a checkpointed stream the libxc END is the last one libxl reads.
                if self.report.libxl_version.is_none() || self.libxc_checkpoints > 0 {
                    self.report.end = true;
                }
            }
            Some(Role::Checkpoint) => {
                self.libxc_checkpoints += 1;
                if self.report.libxl_version.is_some() {
                    self.awaiting_checkpoint_end = true;
                } else {
                    self.report.checkpoints += 1;
                }
                if !self.requirements_checked {
                    self.check_requirements(rec.offset, Some(rec))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// PV: every pfn of a PAGE_DATA lies inside the p2m announced so far (Xen's restore grows
    /// its p2m only at X86_PV_P2M_FRAMES, from nothing, and refuses a pfn beyond it).
    fn pv_pfns_mapped(
        &mut self,
        rec: &RawRecord<'_>,
        p: &libxc::PageData<'_>,
    ) -> Result<(), StreamError> {
        if self.domain_type != Some(libxc::DomainType::X86_PV) {
            return Ok(());
        }
        let max_pfn = self.pv_max_pfn;
        match p.entries.iter().map(|e| e.pfn()).find(|&pfn| pfn > max_pfn) {
            Some(pfn) => Err(rec.error(StreamError::invalid(
                rec.offset,
                "pfn.max_pfn",
                format!(
                    "pfn {pfn:#x} is beyond the p2m announced so far (X86_PV_P2M_FRAMES up to pfn {max_pfn:#x})"
                ),
            ))),
            None => Ok(()),
        }
    }

    /// The static-data boundary: explicit from its version on, implied before.
    fn static_data(
        &mut self,
        rec: &RawRecord<'_>,
        info: &'static RecordInfo,
        version: u32,
    ) -> Result<(), StreamError> {
        if info.role == Some(Role::StaticDataEnd) {
            if let Some(since) = info.since_version {
                if version < since {
                    // Old streams imply it; an explicit one is a second boundary.
                    return self.broken(
                        rec,
                        Level::Required,
                        "static_data_end.version",
                        format!(
                            "{} does not exist in version {version}; there it is implied",
                            info.name
                        ),
                    );
                }
            }
            self.static_data_done = true;
            return Ok(());
        }
        if self.static_data_done {
            return Ok(());
        }
        for sde in libxc::RECORDS
            .iter()
            .filter(|i| i.role == Some(Role::StaticDataEnd))
        {
            let implied = sde.since_version.is_some_and(|s| version < s)
                && sde.implied_at.contains(&rec.record_type);
            if implied {
                self.static_data_done = true;
                self.seen
                    .entry((Layer::Libxc, sde.record_type))
                    .or_insert(1);
            }
        }
        Ok(())
    }

    fn order_rules(&mut self, rec: &RawRecord<'_>) -> Result<(), StreamError> {
        let first = self.seen(rec.layer, rec.record_type) == 1;
        for (li, layout) in self.layouts() {
            for (oi, rule) in layout.order.iter().enumerate() {
                if rule.record != rec.record_type {
                    continue;
                }
                if first {
                    for a in rule.after {
                        if self.seen(Layer::Libxc, *a) == 0 {
                            let name = libxc::RecordType::from_u32(*a);
                            let detail = format!(
                                "the first {} must follow a {name} ({})",
                                rec.type_name(),
                                rule.doc
                            );
                            self.ordered(rec, li, oi, rule.level, detail)?;
                        }
                    }
                }
                for b in rule.before {
                    if self.seen(Layer::Libxc, *b) > 0 {
                        let name = libxc::RecordType::from_u32(*b);
                        let detail = format!("{} after {name}: {}", rec.type_name(), rule.doc);
                        self.ordered(rec, li, oi, rule.level, detail)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn ordered(
        &mut self,
        rec: &RawRecord<'_>,
        li: usize,
        oi: usize,
        level: Level,
        detail: String,
    ) -> Result<(), StreamError> {
        if self.enforced(level) {
            return Err(
                rec.error(StreamError::invalid(rec.offset, "order", detail).with_level(level))
            );
        }
        if self.warned.insert((li, oi)) {
            self.note(Some(rec), rec.offset, "order", detail);
        }
        Ok(())
    }

    fn requirements(&mut self, rec: &RawRecord<'_>) {
        for (li, layout) in self.layouts() {
            for (ri, req) in layout.required.iter().enumerate() {
                if req.record != rec.record_type || self.met.contains(&(li, ri)) {
                    continue;
                }
                let ok = match req.matches {
                    Some(f) => f(rec.body, &rec.ctx),
                    None => true,
                };
                if ok {
                    self.met.insert((li, ri));
                }
            }
        }
    }

    /// At END or the first CHECKPOINT: everything required has appeared.
    fn check_requirements(
        &mut self,
        offset: u64,
        rec: Option<&RawRecord<'_>>,
    ) -> Result<(), StreamError> {
        self.requirements_checked = true;
        for (li, layout) in self.layouts() {
            for (ri, req) in layout.required.iter().enumerate() {
                if self.met.contains(&(li, ri)) {
                    continue;
                }
                let name = libxc::RecordType::from_u32(req.record);
                let what = match req.condition {
                    Some(c) => format!("a {name} with {c}"),
                    None => format!("a {name}"),
                };
                let detail = format!(
                    "{} streams need {what} before this point: {}",
                    layout.guest, req.doc
                );
                if !self.enforced(req.level) {
                    if req.level == Level::Warn {
                        self.note(rec, offset, "required", detail);
                    }
                    continue;
                }
                let e = StreamError::invalid(offset, "required", detail).with_level(req.level);
                return Err(match rec {
                    Some(r) => r.error(e),
                    None => e,
                });
            }
        }
        if let Some(sde) = libxc::RECORDS
            .iter()
            .find(|i| i.role == Some(Role::StaticDataEnd))
        {
            let version = self.report.libxc_version.unwrap_or(0);
            let explicit = sde.since_version.is_none_or(|s| version >= s);
            if explicit && self.seen(Layer::Libxc, sde.record_type) == 0 {
                let e = StreamError::invalid(
                    offset,
                    "static_data_end.missing",
                    format!(
                        "a version {version} stream must contain exactly one {}",
                        sde.name
                    ),
                );
                return Err(match rec {
                    Some(r) => r.error(e),
                    None => e,
                });
            }
        }
        Ok(())
    }

    fn libxl_record(
        &mut self,
        rec: &RawRecord<'_>,
        after_checkpoint_end: bool,
    ) -> Result<(), StreamError> {
        let decoded = rec.libxl()?;
        self.note_first(rec, &decoded);
        let Some(info) = rec.info() else {
            // libxl has no optional records: anything unknown is fatal.
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "unknown_record",
                format!("libxl record type {:#x} is unknown", rec.record_type),
            )));
        };
        if self.report.end {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "after_end",
                "a libxl record follows the libxl END".to_string(),
            )));
        }
        let version = self.report.libxl_version.unwrap_or(0);
        self.table_rules(rec, info, version)?;
        self.libxl_place(rec, info)?;
        match decoded {
            libxl::Record::EmulatorXenstoreData(x) => {
                // Keys are relative to the device model's xenstore directory.
                for (i, (k, _)) in x.entries.pairs().enumerate() {
                    if k.is_empty() || k.first() == Some(&b'/') {
                        return Err(rec.error(StreamError::invalid(
                            rec.offset,
                            "entries.key",
                            format!(
                                "key {i} (\"{}\") must be non-empty and relative (not start with '/')",
                                String::from_utf8_lossy(k)
                            ),
                        )));
                    }
                }
            }
            libxl::Record::LibxcContext(_) => self.libxc_context = true,
            libxl::Record::CheckpointState(s) => {
                self.checkpoint_state(rec, s.control_id, after_checkpoint_end)?
            }
            _ => {}
        }
        match info.role {
            Some(Role::CheckpointEnd) => {
                self.after_checkpoint_end = true;
                if !self.awaiting_checkpoint_end {
                    return Err(rec.error(StreamError::invalid(
                        rec.offset,
                        "checkpoint_end",
                        "CHECKPOINT_END outside a checkpoint: no libxc CHECKPOINT precedes it"
                            .to_string(),
                    )));
                }
                self.awaiting_checkpoint_end = false;
                self.report.checkpoints += 1;
            }
            Some(Role::End) => {
                if !self.libxc_context {
                    return Err(rec.error(StreamError::invalid(
                        rec.offset,
                        "libxc_context.missing",
                        "the libxl stream ends without a LIBXC_CONTEXT: it carries no domain image"
                            .to_string(),
                    )));
                }
                self.report.end = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// Where libxl's own framing records may stand: one LIBXC_CONTEXT, and neither it nor
    /// END inside a checkpoint (between a libxc CHECKPOINT and its CHECKPOINT_END), where
    /// libxl only takes the checkpoint's emulator records.
    fn libxl_place(
        &mut self,
        rec: &RawRecord<'_>,
        info: &'static RecordInfo,
    ) -> Result<(), StreamError> {
        let what = match info.role {
            Some(Role::LibxcContext) => "LIBXC_CONTEXT",
            Some(Role::End) => "the libxl END",
            _ => return Ok(()),
        };
        if self.awaiting_checkpoint_end {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "checkpoint.libxl",
                format!("{what} inside a checkpoint (between a libxc CHECKPOINT and its CHECKPOINT_END)"),
            )));
        }
        if info.role == Some(Role::LibxcContext) && self.libxc_context {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "libxc_context.once",
                "a second LIBXC_CONTEXT: the stream carries one domain image",
            )));
        }
        Ok(())
    }

    /// CHECKPOINT_STATE on the forward stream: only in COLO, only the primary's NEW, only
    /// right after a CHECKPOINT_END (the secondary's messages travel on the back channel).
    fn checkpoint_state(
        &mut self,
        rec: &RawRecord<'_>,
        id: libxl::CheckpointStateId,
        after_checkpoint_end: bool,
    ) -> Result<(), StreamError> {
        if !self.colo {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "checkpoint_state.colo",
                format!("CHECKPOINT_STATE {id} in a stream not read as COLO: only a COLO primary sends it on the forward stream"),
            )));
        }
        if !after_checkpoint_end {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "checkpoint_state.place",
                format!("CHECKPOINT_STATE {id} not directly after a CHECKPOINT_END: the primary announces each new checkpoint once the previous one is complete"),
            )));
        }
        if id != libxl::CheckpointStateId::NEW {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "checkpoint_state.id",
                format!("CHECKPOINT_STATE {id} on the forward stream, which carries only NEW (0); the secondary's SUSPENDED, READY and RESUMED go on the back channel"),
            )));
        }
        Ok(())
    }

    fn finish(&mut self, offset: u64, complete: bool) -> Result<(), StreamError> {
        self.report.vcpus = self.vcpus.iter().copied().collect();
        if !complete {
            // A checkpointed stream cut short (at a record boundary or inside a record): a
            // receiver fails over to the last complete checkpoint.
            if self.report.checkpoints == 0 {
                return Err(StreamError::new(
                    ErrorKind::Truncated,
                    offset,
                    "truncated",
                    "the checkpointed stream ends before its first checkpoint is complete"
                        .to_string(),
                ));
            }
            self.note(
                None,
                offset,
                "checkpoint.incomplete",
                format!(
                    "the stream stops without END inside checkpoint {}; a receiver fails over to checkpoint {}",
                    self.report.checkpoints + 1,
                    self.report.checkpoints
                ),
            );
        }
        Ok(())
    }
}

/// Names of the set bits, with reserved bits in hex.
fn flag_names(value: u64, named: impl Iterator<Item = (u64, &'static str)>) -> Vec<String> {
    let mut known = 0u64;
    let mut out = Vec::new();
    for (bit, name) in named {
        known |= bit;
        if value & bit == bit && bit != 0 {
            out.push(name.to_string());
        }
    }
    let rest = value & !known;
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out
}

/// The first `n` octets of `data` as text, for showing trailing data: printable ASCII and
/// spaces as they are, anything else as `.`.
pub fn printable(data: &[u8], n: usize) -> String {
    data.iter()
        .take(n)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}
