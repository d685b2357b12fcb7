//! The v2 restore algorithm (format-reference §4) as a generic driver over [`Domain`]:
//! header checks, the record loop with checkpoint buffering, PAGE_DATA (populate, types,
//! localise, write or compare), per-guest records, and the completion steps.
//!
//! A checkpointed stream applies the records of an epoch only when its CHECKPOINT arrives;
//! when the stream breaks, the last complete epoch is committed (failover). Any other error
//! is returned as an error: a rejected stream is never reported as a restored domain.
//!
//! A COLO secondary ([`restore_new_with_back_channel`]) also runs its copy of the guest
//! between checkpoints (format-reference §4 "Checkpoints"): after each one it completes the
//! domain, resumes it, waits for the primary's next checkpoint (in a libxl stream: reads its
//! CHECKPOINT_STATE NEW), suspends it, and sends the pages the guest dirtied meanwhile as a
//! CHECKPOINT_DIRTY_PFN_LIST on the back channel, so the primary sends them again. When the
//! link breaks the guest keeps what it has: no checkpoint is re-applied.

use crate::domain::{
    errno, BResult, BackendError, Bitmap, CheckpointAnswer, Domain, GuestType, MemoryLimits,
    RestoreCallbacks, TscInfo, VcpuState, PAGE_SIZE,
};
use crate::error::{ErrorKind, Layer, StreamError};
use crate::hooks::{rewrite_page_table, rewrite_vcpu_context};
use crate::limits::{table_level, EPOCH_SLACK, PAGE_ENTRY_SIZE, PIN_BATCH, RECORD_HEADER_SIZE};
use crate::reader::{Item, RawRecord, Reader};
use crate::save::StreamType;
use crate::source::Source;
use crate::wire::Array;
use crate::wire::{DecodeCtx, Role};
use crate::writer::StreamWriter;
use crate::x86::PvLayout;
use crate::{libxc, x86};
use std::collections::BTreeMap;
use std::io::Write;

/// How to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreOptions {
    /// Plain, Remus or COLO.
    pub stream_type: StreamType,
    /// Event channels the toolstack allocated for xenstore and the console.
    pub store_evtchn: u32,
    /// The console's event channel.
    pub console_evtchn: u32,
}

/// What a restore produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreResult {
    /// Frames of the xenstore and console rings, for the toolstack.
    pub store_gfn: u64,
    /// The console ring's frame.
    pub console_gfn: u64,
    /// Checkpoints applied (CHECKPOINT records answered with success).
    pub checkpoints: u32,
    /// The stream broke inside a checkpoint and the last complete one was committed (COLO:
    /// the link broke and the secondary's guest goes on as it is).
    pub failed_over: bool,
    /// Pages that differed in verify mode.
    pub verify_mismatches: u64,
    /// libxc records read.
    pub libxc_records: u64,
    /// Data pages written.
    pub pages: u64,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The stream was refused.
    #[error("{0}")]
    Stream(#[from] StreamError),
    /// The destination domain refused an operation.
    #[error("{context}: {source}")]
    Backend {
        /// What the restore was doing.
        context: String,
        /// The domain's error.
        source: BackendError,
    },
}

type R<T> = Result<T, RestoreError>;

/// The operation named by errors of [`MemoryLimits`] checks.
const LIMITS_OP: &str = "memory limits";
/// What a buffered record costs beyond its body (its header and bookkeeping).
const RECORD_OVERHEAD: u64 = (RECORD_HEADER_SIZE + std::mem::size_of::<Buffered>()) as u64;

/// A record kept until its checkpoint completes.
struct Buffered {
    record_type: u32,
    offset: u64,
    index: u64,
    body: Vec<u8>,
    /// [`body_sum`] of the body as it was read, checked again when it is applied.
    sum: u64,
}

/// An empty buffer with room for `len` octets, from the spare bodies of the last checkpoint
/// when one is large enough (the smallest such), else new. The bodies kept are those of one
/// applied checkpoint, so a checkpoint costs at most twice the checkpoint buffer's cap.
///
/// On Xen under emulation, a buffered record's copy was seen to change between reading and
/// applying it, always the first large record after a checkpoint: the first new allocation
/// after the pages of the previous checkpoint were written through foreign mappings that had
/// just been unmapped.
fn spare_body(spare: &mut Vec<Vec<u8>>, len: usize) -> Vec<u8> {
    let best = spare
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    match best {
        Some(i) => {
            let mut b = spare.swap_remove(i);
            b.clear();
            b
        }
        None => Vec::with_capacity(len),
    }
}

/// A checksum of a buffered record's body. A buffered record stays in memory for a whole
/// checkpoint interval; on Xen under emulation such copies were seen to change before they
/// were applied (their first octets replaced by heap bookkeeping), so a copy is checked
/// against what was read before it is trusted.
fn body_sum(body: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(body);
    h.finish()
}

/// A PAGE_DATA record's data pages on their way to the domain.
struct Batch {
    /// The record, for errors (its body is not kept).
    rec: RawRecord<'static>,
    /// The frame of each data page, in stream order.
    gfns: Vec<u64>,
    /// PV: the data pages that are page tables (index among the data pages, type), in order.
    tables: Vec<(usize, libxc::PageType)>,
}

/// Where the octets of a batch's pages come from.
trait PageFeed {
    /// Fills `dst`, in order, with the next octets.
    fn fill(&mut self, dst: &mut [&mut [u8]]) -> R<()>;
}

/// Page octets in hand (a whole record, or one buffered for a checkpoint).
struct Bytes<'a>(&'a [u8]);

impl PageFeed for Bytes<'_> {
    fn fill(&mut self, dst: &mut [&mut [u8]]) -> R<()> {
        for d in dst.iter_mut() {
            let (here, rest) = self.0.split_at(d.len().min(self.0.len()));
            if here.len() != d.len() {
                return Err(be(
                    "write pages",
                    BackendError::new("page data", "fewer page octets than pages"),
                ));
            }
            d.copy_from_slice(here);
            self.0 = rest;
        }
        Ok(())
    }
}

/// Page octets still in the stream ([`Reader::defer_page_data`]), read straight into place.
impl<S: Source> PageFeed for Reader<S> {
    fn fill(&mut self, dst: &mut [&mut [u8]]) -> R<()> {
        Ok(self.read_deferred(dst)?)
    }
}

/// Where a batch's `n` data pages go, in stream order and in as few pieces as they allow: the
/// pages that are not page tables into `frames` (which hold them in order, cut anywhere), the
/// page tables (`tables`, by index among the data pages) into `copies`, one page each.
fn interleave<'a>(
    frames: &'a mut [&mut [u8]],
    copies: &'a mut [u8],
    tables: &[(usize, libxc::PageType)],
    n: usize,
) -> Vec<&'a mut [u8]> {
    let mut frames = frames
        .iter_mut()
        .map(|f| &mut **f)
        .filter(|f| !f.is_empty());
    let mut copies = copies.chunks_exact_mut(PAGE_SIZE);
    let mut current: &mut [u8] = &mut [];
    let mut dst = Vec::with_capacity(2 * tables.len() + 1);
    let mut k = 0;
    let mut next_table = tables.iter().map(|&(t, _)| t).peekable();
    while k < n {
        if next_table.next_if_eq(&k).is_some() {
            if let Some(c) = copies.next() {
                dst.push(c);
            }
            k += 1;
            continue;
        }
        // A run of pages up to the next table or the end.
        let end = next_table.peek().copied().unwrap_or(n).min(n);
        let mut need = (end - k) * PAGE_SIZE;
        while need > 0 {
            if current.is_empty() {
                match frames.next() {
                    Some(f) => current = f,
                    None => break,
                }
            }
            let take = need.min(current.len());
            let (part, rest) = std::mem::take(&mut current).split_at_mut(take);
            dst.push(part);
            current = rest;
            need -= take;
        }
        k = end;
    }
    dst
}

#[derive(Default)]
struct Vcpu {
    basic: Option<Vec<u8>>,
    extended: Option<Vec<u8>>,
    xsave: Option<Vec<u8>>,
    msrs: Option<Vec<u8>>,
}

struct Restorer<'a, 'b, D: Domain, C: RestoreCallbacks<D>> {
    dom: &'a mut D,
    cb: &'a mut C,
    /// COLO: the stream to the primary (dirty pfn lists).
    back: Option<&'a mut (dyn Write + 'b)>,
    /// COLO: log-dirty runs on this side (from the first resume on).
    colo_logdirty: bool,
    opts: RestoreOptions,
    guest: GuestType,
    version: u32,
    ctx: DecodeCtx,
    layout: Option<&'static PvLayout>,
    max_pfn: u64,
    /// What the destination can hold; every per-pfn structure stays inside it.
    limits: MemoryLimits,
    /// Pfns populated so far (the set bits of `populated`).
    populated_count: u64,
    /// Octets of records buffered for the current checkpoint.
    buffered_bytes: u64,
    max_vcpu_id: u32,
    populated: Bitmap,
    types: Vec<libxc::PageType>,
    static_data_done: bool,
    cpuid: Option<Vec<u8>>,
    msr_policy: Option<Vec<u8>>,
    p2m_frames: Option<Vec<u64>>,
    vcpus: BTreeMap<u32, Vcpu>,
    hvm_context: Option<Vec<u8>>,
    store_pfn: Option<u64>,
    console_pfn: Option<u64>,
    verify: bool,
    buffering: bool,
    buffer: Vec<Buffered>,
    /// Bodies of applied checkpoints, kept for the next one's records: a checkpoint's copies
    /// reuse the memory of the last instead of new allocations, which on Xen would be placed
    /// where the foreign mappings of the pages just applied were (see `spare_body`).
    spare: Vec<Vec<u8>>,
    result: RestoreResult,
    scratch: Vec<u8>,
    /// The last PAGE_DATA's pages, whose octets are still in the stream.
    incoming: Option<Batch>,
    pv_info_seen: bool,
    /// Where the END (or the failover point) is, for errors found when completing.
    end_offset: u64,
}

/// Restores the libxc image that `reader` yields into `dom`. libxl records around it are
/// skipped (the libxl layer handles them); the reader should check leniently, as Xen does.
/// A reader that has not started yet is made to check every item as the verifier does
/// ([`crate::verify::check_as_read`]), so whatever `verify` refuses is refused here too.
pub fn restore<D, C, S>(
    dom: &mut D,
    cb: &mut C,
    reader: &mut Reader<S>,
    opts: RestoreOptions,
) -> R<RestoreResult>
where
    D: Domain,
    C: RestoreCallbacks<D>,
    S: Source,
{
    // One verdict: the reader refuses what the verifier refuses, before the driver sees it.
    crate::verify::check_as_read(reader);
    let mut r = Restorer::new(dom, cb, opts, None)?;
    r.run(reader)?;
    Ok(r.result)
}

/// Reads the headers, then lets `make` create the domain for the guest type they name (as a
/// toolstack creates an empty domain of the right kind), and restores into it.
pub fn restore_new<D, C, S, F>(
    make: F,
    cb: &mut C,
    reader: &mut Reader<S>,
    opts: RestoreOptions,
) -> R<(D, RestoreResult)>
where
    D: Domain,
    C: RestoreCallbacks<D>,
    S: Source,
    F: FnOnce(GuestType, &libxc::DomainHeader) -> R<D>,
{
    restore_new_with_back_channel(make, cb, reader, opts, None)
}

/// [`restore_new`] with the stream back to the primary, which a COLO secondary
/// (`opts.stream_type` COLO) sends its dirty pfn lists on; other restores ignore it.
pub fn restore_new_with_back_channel<D, C, S, F>(
    make: F,
    cb: &mut C,
    reader: &mut Reader<S>,
    opts: RestoreOptions,
    back_channel: Option<&mut dyn Write>,
) -> R<(D, RestoreResult)>
where
    D: Domain,
    C: RestoreCallbacks<D>,
    S: Source,
    F: FnOnce(GuestType, &libxc::DomainHeader) -> R<D>,
{
    crate::verify::check_as_read(reader);
    if opts.stream_type == StreamType::Colo && back_channel.is_none() {
        return Err(be(
            "COLO restore",
            BackendError::new(
                "back channel",
                "a COLO secondary needs the back channel to the primary",
            )
            .errno(errno::EINVAL),
        ));
    }
    let mut version = 0;
    let header = loop {
        match reader.next_item()? {
            Item::ImageHeader { offset, header } => {
                check_image_header(offset, &header)?;
                version = header.version;
            }
            Item::DomainHeader { header, .. } => break header,
            Item::Eof { .. } => {
                return Err(StreamError::new(
                    ErrorKind::Truncated,
                    reader.offset(),
                    "truncated",
                    "the stream ends before the libxc domain header",
                )
                .into())
            }
            _ => {}
        }
    };
    let guest = GuestType::from_domain_type(header.r#type).ok_or_else(|| {
        RestoreError::Stream(StreamError::invalid(
            0,
            "domain_type",
            format!("domain type {} cannot be restored", header.r#type),
        ))
    })?;
    let mut dom = make(guest, &header)?;
    let result = {
        let mut r = Restorer::new(&mut dom, cb, opts, back_channel)?;
        r.version = version;
        r.ctx = reader.libxc_ctx();
        r.run(reader)?;
        r.result
    };
    Ok((dom, result))
}

fn check_image_header(offset: u64, header: &libxc::ImageHeader) -> R<()> {
    if header.options.contains(libxc::ImageOptions::BIG_ENDIAN) {
        return Err(StreamError::invalid(
            offset,
            "big_endian",
            "big-endian images are not supported by Xen's restore",
        )
        .into());
    }
    Ok(())
}

impl<'a, 'b, D: Domain, C: RestoreCallbacks<D>> Restorer<'a, 'b, D, C> {
    fn new(
        dom: &'a mut D,
        cb: &'a mut C,
        opts: RestoreOptions,
        back: Option<&'a mut (dyn Write + 'b)>,
    ) -> R<Self> {
        let info = dom.info().map_err(|e| be("domain info", e))?;
        let limits = dom
            .memory_limits()
            .map_err(|e| be("the destination's memory limits", e))?;
        Ok(Restorer {
            limits,
            populated_count: 0,
            buffered_bytes: 0,
            guest: info.guest,
            max_pfn: info.max_pfn,
            max_vcpu_id: info.max_vcpu_id,
            dom,
            cb,
            back,
            colo_logdirty: false,
            opts,
            version: 0,
            ctx: DecodeCtx::new(3),
            layout: None,
            populated: Bitmap::new(8192.min(limits.max_pfn.saturating_add(1))),
            types: Vec::new(),
            static_data_done: false,
            cpuid: None,
            msr_policy: None,
            p2m_frames: None,
            vcpus: BTreeMap::new(),
            hvm_context: None,
            store_pfn: None,
            console_pfn: None,
            verify: false,
            buffering: false,
            buffer: Vec::new(),
            spare: Vec::new(),
            result: RestoreResult::default(),
            scratch: Vec::new(),
            incoming: None,
            pv_info_seen: false,
            end_offset: 0,
        })
    }
}

fn be(context: &str, source: BackendError) -> RestoreError {
    RestoreError::Backend {
        context: context.to_string(),
        source,
    }
}

fn invalid(rec: &RawRecord<'_>, rule: &str, detail: String) -> RestoreError {
    RestoreError::Stream(rec.error(StreamError::invalid(rec.offset, rule, detail)))
}

impl<D: Domain, C: RestoreCallbacks<D>> Restorer<'_, '_, D, C> {
    fn run<S: Source>(&mut self, reader: &mut Reader<S>) -> R<()> {
        loop {
            // PAGE_DATA octets go straight to the frames, except while a checkpoint's records
            // are buffered (their bodies are kept whole).
            reader.defer_page_data(!self.buffering);
            let nested = reader.nested();
            let item = match reader.next_item() {
                Ok(i) => i,
                Err(e)
                    if self.buffering && matches!(e.kind, ErrorKind::Truncated | ErrorKind::Io) =>
                {
                    // The primary died mid-checkpoint: commit the last complete one.
                    return self.failover();
                }
                Err(e) => return Err(e.into()),
            };
            match item {
                Item::ImageHeader { offset, header } => {
                    if header.options.contains(libxc::ImageOptions::BIG_ENDIAN) {
                        return Err(StreamError::invalid(
                            offset,
                            "big_endian",
                            "big-endian images are not supported by Xen's restore",
                        )
                        .into());
                    }
                    self.version = header.version;
                }
                Item::DomainHeader { offset, header } => {
                    let guest = GuestType::from_domain_type(header.r#type);
                    if guest != Some(self.guest) {
                        return Err(StreamError::invalid(
                            offset,
                            "domain_type",
                            format!(
                                "the image is of a {} domain, the target is {:?}",
                                header.r#type, self.guest
                            ),
                        )
                        .into());
                    }
                    self.ctx = reader.libxc_ctx();
                }
                Item::Record(rec) if rec.layer == Layer::Libxc => {
                    self.result.libxc_records += 1;
                    let role = rec.info().and_then(|i| i.role);
                    if role == Some(Role::Checkpoint) && nested {
                        // libxl writes its records of the checkpoint next; they are read up
                        // to CHECKPOINT_END before the checkpoint is answered.
                        let (record_type, offset, index, ctx) =
                            (rec.record_type, rec.offset, rec.index, rec.ctx);
                        if let Some(broke) = self.libxl_checkpoint_records(reader)? {
                            if self.buffering {
                                return self.failover();
                            }
                            return Err(broke.into());
                        }
                        let cp = RawRecord {
                            layer: Layer::Libxc,
                            index,
                            offset,
                            record_type,
                            body: &[],
                            ctx,
                        };
                        if self.process(&cp)? || self.colo_round(reader)? {
                            return Ok(());
                        }
                        continue;
                    }
                    if self.buffering && !matches!(role, Some(Role::End) | Some(Role::Checkpoint)) {
                        if rec.ctx.deferred > 0 {
                            // Never kept: a buffered body must be whole (deferral is off while
                            // buffering, so this is a bug, refused rather than applied later).
                            return Err(be(
                                "buffer a checkpoint's record",
                                BackendError::new(
                                    "restore",
                                    "a record's page octets were left in the stream",
                                ),
                            ));
                        }
                        self.buffered_bytes = self
                            .buffered_bytes
                            .saturating_add(rec.body.len() as u64 + RECORD_OVERHEAD);
                        let cap = self.epoch_cap();
                        if self.buffered_bytes > cap {
                            return Err(invalid(
                                &rec,
                                "checkpoint.buffer.max",
                                format!(
                                    "the records of one checkpoint exceed {cap} octets, more than \
                                     a domain of {} pages can need",
                                    self.limits.max_pages
                                ),
                            ));
                        }
                        let mut body = spare_body(&mut self.spare, rec.body.len());
                        body.extend_from_slice(rec.body);
                        self.buffer.push(Buffered {
                            record_type: rec.record_type,
                            offset: rec.offset,
                            index: rec.index,
                            sum: body_sum(&body),
                            body,
                        });
                        continue;
                    }
                    let processed = self.process(&rec);
                    if self.finish_record(reader, processed)? {
                        return Ok(());
                    }
                    if role == Some(Role::Checkpoint) && self.colo_round(reader)? {
                        return Ok(());
                    }
                }
                Item::Record(rec) => {
                    if let Err(e) = self.cb.libxl_record(self.dom, &rec) {
                        return Err(rec
                            .error(StreamError::invalid(rec.offset, "libxl", e.to_string()))
                            .into());
                    }
                }
                Item::XlHeader { .. } | Item::LibxlHeader { .. } | Item::Trailing { .. } => {}
                Item::Eof { complete } => {
                    if !complete && self.buffering {
                        return self.failover();
                    }
                    return Err(StreamError::new(
                        ErrorKind::Truncated,
                        reader.offset(),
                        "truncated",
                        "the stream ends before the libxc END",
                    )
                    .into());
                }
            }
        }
    }

    /// Feeds the page octets of the record just processed that are still in the stream to
    /// its batch. When processing the record or putting its pages failed, reads past what is
    /// left of them first: a stream that also ends inside them is reported as truncated, as
    /// reading the record whole would have reported it.
    fn finish_record<S: Source>(&mut self, reader: &mut Reader<S>, processed: R<bool>) -> R<bool> {
        let batch = self.incoming.take();
        let r = match (processed, batch) {
            (Ok(done), Some(b)) => self.put_pages(&b, reader).map(|()| done),
            (r, _) => r,
        };
        if r.is_err() && reader.deferred() > 0 {
            reader.skip_deferred()?;
        }
        r
    }

    /// Reads and hands over the libxl records of a checkpoint; how the stream broke when it
    /// breaks before its CHECKPOINT_END (the checkpoint is then incomplete).
    fn libxl_checkpoint_records<S: Source>(
        &mut self,
        reader: &mut Reader<S>,
    ) -> R<Option<StreamError>> {
        loop {
            let item = match reader.next_item() {
                Ok(i) => i,
                Err(e) if matches!(e.kind, ErrorKind::Truncated | ErrorKind::Io) => {
                    return Ok(Some(e))
                }
                Err(e) => return Err(e.into()),
            };
            match item {
                Item::Record(rec) if rec.layer == Layer::Libxl => {
                    if let Err(e) = self.cb.libxl_record(self.dom, &rec) {
                        return Err(rec
                            .error(StreamError::invalid(rec.offset, "libxl", e.to_string()))
                            .into());
                    }
                    if rec.info().and_then(|i| i.role) == Some(Role::CheckpointEnd) {
                        return Ok(None);
                    }
                }
                Item::Eof { .. } => {
                    return Ok(Some(StreamError::new(
                        ErrorKind::Truncated,
                        reader.offset(),
                        "truncated",
                        "the stream breaks inside the first checkpoint",
                    )))
                }
                Item::Record(rec) => {
                    return Err(rec
                        .error(StreamError::invalid(
                            rec.offset,
                            "checkpoint_end.missing",
                            "libxc records resume before the libxl CHECKPOINT_END",
                        ))
                        .into())
                }
                _ => {}
            }
        }
    }

    /// The most one checkpoint's buffered records may take: every page of the domain once,
    /// its entries, and room for the records that are not pages.
    fn epoch_cap(&self) -> u64 {
        self.limits
            .max_pages
            .saturating_mul((PAGE_SIZE + PAGE_ENTRY_SIZE) as u64)
            .saturating_add(EPOCH_SLACK)
    }

    fn failover(&mut self) -> R<()> {
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.result.failed_over = true;
        if self.opts.stream_type == StreamType::Colo {
            // The domain was completed at the last checkpoint and has run since.
            return Ok(());
        }
        self.stream_complete()
    }

    /// COLO, after a checkpoint was applied (format-reference §4 "Checkpoints"): complete
    /// the domain, report it, resume it, wait for the next checkpoint, suspend, and send the
    /// pfns the guest dirtied on the back channel. True when the link broke (failover).
    fn colo_round<S: Source>(&mut self, reader: &mut Reader<S>) -> R<bool> {
        if self.opts.stream_type != StreamType::Colo {
            return Ok(false);
        }
        self.end_offset = reader.offset();
        self.stream_complete()?;
        self.cb
            .restore_results(self.dom, self.result.store_gfn, self.result.console_gfn);
        if !self.colo_logdirty {
            // From the first resume on, what the guest writes is tracked.
            self.dom
                .enable_logdirty()
                .map_err(|e| be("enable logdirty", e))?;
            self.colo_logdirty = true;
        }
        let r = self.cb.postcopy(self.dom);
        if self.colo_answer("postcopy", r)? {
            return self.colo_failover();
        }
        let r = self.cb.wait_checkpoint(self.dom);
        if self.colo_answer("wait_checkpoint", r)? {
            return self.colo_failover();
        }
        if reader.nested() {
            // The primary's CHECKPOINT_STATE NEW, read here for the libxl layer.
            let at = reader.offset();
            match reader.next_item() {
                Ok(Item::Record(rec)) if rec.layer == Layer::Libxl => {
                    if let Err(e) = self.cb.libxl_record(self.dom, &rec) {
                        return Err(rec
                            .error(StreamError::invalid(rec.offset, "libxl", e.to_string()))
                            .into());
                    }
                }
                Ok(Item::Eof { .. }) => return self.colo_failover(),
                Err(e) if matches!(e.kind, ErrorKind::Truncated | ErrorKind::Io) => {
                    return self.colo_failover()
                }
                Err(e) => return Err(e.into()),
                Ok(other) => {
                    return Err(StreamError::invalid(
                        at,
                        "colo.checkpoint_state",
                        format!("expected the primary's CHECKPOINT_STATE NEW, got {other:?}"),
                    )
                    .into())
                }
            }
        }
        let r = self.cb.suspend(self.dom);
        if self.colo_answer("suspend", r)? {
            return self.colo_failover();
        }
        if self.send_dirty_pfn_list()? {
            return self.colo_failover();
        }
        Ok(false)
    }

    /// A COLO callback's answer: 1 go on, 2 the link broke (true), anything else fails.
    fn colo_answer(&mut self, what: &str, r: i32) -> R<bool> {
        match r {
            1 => Ok(false),
            2 => Ok(true),
            other => Err(be(
                "COLO checkpoint",
                BackendError::new(
                    "callback",
                    format!("the toolstack's {what} returned {other}"),
                ),
            )),
        }
    }

    fn colo_failover(&mut self) -> R<bool> {
        self.failover()?;
        Ok(true)
    }

    /// COLO: the pfns the guest dirtied since the last clean, as one
    /// CHECKPOINT_DIRTY_PFN_LIST on the back channel. True when the link broke.
    fn send_dirty_pfn_list(&mut self) -> R<bool> {
        let size = self
            .dom
            .p2m_size()
            .map_err(|e| be("p2m size", e))?
            .max(self.populated.len());
        let mut dirty = Bitmap::new(size);
        self.dom
            .clean_dirty(&mut dirty, true)
            .map_err(|e| be("clean the dirty log", e))?;
        let pfns: Vec<u64> = dirty.iter().collect();
        let Some(back) = self.back.as_mut() else {
            return Err(be(
                "COLO checkpoint",
                BackendError::new(
                    "back channel",
                    "a COLO secondary needs the back channel to the primary",
                ),
            ));
        };
        let mut w = StreamWriter::new(&mut **back);
        let sent = w
            .libxc(&libxc::Record::CheckpointDirtyPfnList(
                libxc::CheckpointDirtyPfnList {
                    pfns: Array::Values(&pfns),
                },
            ))
            .and_then(|()| w.flush());
        match sent {
            Ok(()) => Ok(false),
            Err(e) if e.io_kind().is_some() => Ok(true),
            Err(e) => Err(be(
                "COLO checkpoint",
                BackendError::new("send the dirty pfn list", e.to_string()),
            )),
        }
    }

    /// Processes one record; true at END.
    fn process(&mut self, rec: &RawRecord<'_>) -> R<bool> {
        let mut ctx = self.ctx;
        ctx.guest_width = self.layout.map(|l| l.width as u64);
        ctx.deferred = rec.ctx.deferred;
        let rec = RawRecord { ctx, ..*rec };
        let decoded = rec.libxc()?;
        let Some(info) = rec.info() else {
            if rec.record_type & libxc::RECORD_TYPE_OPTIONAL != 0 {
                return Ok(false);
            }
            return Err(invalid(
                &rec,
                "unknown_mandatory",
                format!(
                    "record type {:#x} is unknown and mandatory",
                    rec.record_type
                ),
            ));
        };
        if info.status == crate::wire::Status::Forbidden {
            return Err(invalid(
                &rec,
                "forbidden",
                format!("{} is not valid in a stream", info.name),
            ));
        }
        let guest_name = self.guest.domain_type().name().unwrap_or("");
        if !info.guests.is_empty() && !info.guests.contains(&guest_name) {
            return Err(invalid(
                &rec,
                "guests",
                format!("{} is not valid for {guest_name} guests", info.name),
            ));
        }
        // The static-data boundary: version 3 states it before the first PAGE_DATA or
        // P2M_FRAMES, version 2 implies it there.
        if !self.static_data_done
            && matches!(
                decoded,
                libxc::Record::PageData(_) | libxc::Record::X86PvP2mFrames(_)
            )
        {
            if self.version >= 3 {
                return Err(invalid(
                    &rec,
                    "static_data_end.missing",
                    format!(
                        "{} before STATIC_DATA_END in a version {} stream",
                        info.name, self.version
                    ),
                ));
            }
            self.static_data_end()?;
        }
        match decoded {
            libxc::Record::End(_) => {
                self.end_offset = rec.offset;
                if self.opts.stream_type != StreamType::Colo {
                    // COLO completed the domain at its checkpoints already.
                    self.stream_complete()?;
                }
                return Ok(true);
            }
            libxc::Record::PageData(p) => self.page_data(&rec, &p)?,
            libxc::Record::Verify(_) => self.verify = true,
            libxc::Record::StaticDataEnd(_) => {
                if self.static_data_done {
                    return Err(invalid(
                        &rec,
                        "static_data_end.once",
                        "a second STATIC_DATA_END".into(),
                    ));
                }
                self.static_data_end()?;
            }
            libxc::Record::Checkpoint(_) => return self.checkpoint(&rec),
            libxc::Record::X86CpuidPolicy(_) => self.cpuid = Some(rec.body.to_vec()),
            libxc::Record::X86MsrPolicy(_) => self.msr_policy = Some(rec.body.to_vec()),
            libxc::Record::X86TscInfo(t) => self
                .dom
                .set_tsc_info(TscInfo {
                    mode: t.mode,
                    khz: t.khz,
                    nsec: t.nsec,
                    incarnation: t.incarnation,
                })
                .map_err(|e| be("set TSC info", e))?,
            libxc::Record::X86PvInfo(i) => {
                if self.pv_info_seen {
                    return Err(invalid(&rec, "once", "a second X86_PV_INFO".into()));
                }
                self.pv_info_seen = true;
                let info = self.dom.info().map_err(|e| be("domain info", e))?;
                if info.guest_width != i.guest_width {
                    self.dom
                        .set_address_size(i.guest_width)
                        .map_err(|e| be("set address size", e))?;
                    let after = self.dom.info().map_err(|e| be("domain info", e))?;
                    if after.guest_width != i.guest_width {
                        return Err(invalid(
                            &rec,
                            "guest_width",
                            format!(
                                "the domain kept width {} after set_address_size({})",
                                after.guest_width, i.guest_width
                            ),
                        ));
                    }
                }
                self.layout = PvLayout::for_width(i.guest_width);
            }
            libxc::Record::X86PvP2mFrames(f) => {
                if self.layout.is_none() {
                    return Err(invalid(
                        &rec,
                        "order",
                        "X86_PV_P2M_FRAMES before X86_PV_INFO".into(),
                    ));
                }
                let end = f.p2m_end_pfn as u64;
                if end > self.limits.max_pfn {
                    return Err(invalid(
                        &rec,
                        "pfn.limit",
                        format!(
                            "p2m_end_pfn {end:#x} is beyond the highest pfn {:#x} the \
                             destination can hold",
                            self.limits.max_pfn
                        ),
                    ));
                }
                if end > self.max_pfn {
                    self.dom
                        .expand_p2m(end)
                        .map_err(|e| be("expand the p2m", e))?;
                    self.max_pfn = end;
                }
                self.p2m_frames = Some(f.frame_pfns.iter().collect());
            }
            libxc::Record::X86PvVcpuBasic(v) => {
                self.vcpu(&rec, v.vcpu_id, VcpuState::Basic, v.context)?
            }
            libxc::Record::X86PvVcpuExtended(v) => {
                self.vcpu(&rec, v.vcpu_id, VcpuState::Extended, v.context)?
            }
            libxc::Record::X86PvVcpuXsave(v) => {
                self.vcpu(&rec, v.vcpu_id, VcpuState::Xsave, v.context)?
            }
            libxc::Record::X86PvVcpuMsrs(v) => {
                let body = rec
                    .body
                    .get(libxc::X86PvVcpuMsrs::MSRS_OFFSET..)
                    .unwrap_or_default();
                self.vcpu(&rec, v.vcpu_id, VcpuState::Msrs, body)?
            }
            libxc::Record::SharedInfo(s) => self.shared_info(&rec, s.shared_info)?,
            libxc::Record::HvmContext(c) => self.hvm_context = Some(c.context.to_vec()),
            libxc::Record::HvmParams(p) => {
                for param in p.params.iter() {
                    self.hvm_param(param.index.0, param.value)?;
                }
            }
            _ => {}
        }
        Ok(false)
    }

    fn static_data_end(&mut self) -> R<()> {
        self.static_data_done = true;
        let mut missing = 0;
        if self.cpuid.is_none() {
            missing |= 1;
        }
        if self.msr_policy.is_none() {
            missing |= 2;
        }
        if self.cpuid.is_some() || self.msr_policy.is_some() {
            let c = self.cpuid.clone().unwrap_or_default();
            let m = self.msr_policy.clone().unwrap_or_default();
            self.dom
                .set_cpu_policy(&c, &m)
                .map_err(|e| be("apply CPU policy", e))?;
        }
        if self.cb.static_data_done(self.dom, missing) != 0 {
            return Err(be(
                "static_data_done",
                BackendError::new("static_data_done", "the toolstack refused"),
            ));
        }
        Ok(())
    }

    fn checkpoint(&mut self, rec: &RawRecord<'_>) -> R<bool> {
        if self.opts.stream_type == StreamType::Plain {
            return Err(invalid(
                rec,
                "checkpoint.plain",
                "CHECKPOINT in a plain (not checkpointed) stream".into(),
            ));
        }
        match self.cb.checkpoint(self.dom) {
            CheckpointAnswer::Success => {}
            CheckpointAnswer::Failover if self.buffering => {
                self.failover()?;
                return Ok(true);
            }
            CheckpointAnswer::Failover | CheckpointAnswer::Error => {
                return Err(invalid(
                    rec,
                    "checkpoint.callback",
                    "the toolstack failed the checkpoint".into(),
                ));
            }
        }
        if self.buffering {
            let buffered = std::mem::take(&mut self.buffer);
            for b in &buffered {
                if body_sum(&b.body) != b.sum {
                    return Err(be(
                        "checkpoint buffer",
                        BackendError::new(
                            "memory",
                            format!(
                                "record #{} ({}) read at offset {:#x} changed in this process's \
                                 memory between reading and applying it; the stream is not at \
                                 fault, the host's memory is",
                                b.index,
                                libxc::RecordType::from_u32(b.record_type),
                                b.offset
                            ),
                        )
                        .errno(errno::EIO),
                    ));
                }
                let raw = RawRecord {
                    layer: Layer::Libxc,
                    index: b.index,
                    offset: b.offset,
                    record_type: b.record_type,
                    body: &b.body,
                    ctx: self.ctx,
                };
                self.process(&raw)?;
            }
            self.buffer = buffered;
            self.spare.extend(
                self.buffer
                    .drain(..)
                    .map(|b| b.body)
                    .filter(|b| b.capacity() > 0),
            );
            self.buffered_bytes = 0;
        } else {
            self.buffering = true;
        }
        self.result.checkpoints += 1;
        Ok(false)
    }

    fn vcpu(&mut self, rec: &RawRecord<'_>, id: u32, which: VcpuState, data: &[u8]) -> R<()> {
        if data.is_empty() {
            return Ok(()); // errata: an empty payload is skipped
        }
        if id > self.max_vcpu_id {
            return Err(invalid(
                rec,
                "vcpu_id",
                format!(
                    "vcpu {id} is beyond the domain's max vcpu id {}",
                    self.max_vcpu_id
                ),
            ));
        }
        let v = self.vcpus.entry(id).or_default();
        let slot = match which {
            VcpuState::Basic => &mut v.basic,
            VcpuState::Extended => &mut v.extended,
            VcpuState::Xsave => &mut v.xsave,
            VcpuState::Msrs => &mut v.msrs,
        };
        *slot = Some(data.to_vec());
        Ok(())
    }

    fn shared_info(&mut self, rec: &RawRecord<'_>, page: &[u8]) -> R<()> {
        let Some(l) = self.layout else {
            return Err(invalid(
                rec,
                "order",
                "SHARED_INFO before X86_PV_INFO".into(),
            ));
        };
        let mut new = self
            .dom
            .shared_info()
            .map_err(|e| be("read shared info", e))?;
        new.resize(PAGE_SIZE, 0);
        merge_shared_info(l, &mut new, page);
        self.dom
            .set_shared_info(&new)
            .map_err(|e| be("write shared info", e))
    }

    fn hvm_param(&mut self, index: u64, value: u64) -> R<()> {
        use libxc::HvmParamIndex as P;
        let idx = P(index);
        if idx == P::CONSOLE_PFN
            || idx == P::STORE_PFN
            || idx == P::IOREQ_PFN
            || idx == P::BUFIOREQ_PFN
        {
            if idx == P::CONSOLE_PFN {
                self.console_pfn = Some(value);
            }
            if idx == P::STORE_PFN {
                self.store_pfn = Some(value);
            }
            // The ring pages start clean.
            self.ensure_populated(&[value])?;
            let zero = vec![0u8; PAGE_SIZE];
            let mut g = [None];
            self.dom
                .pfn_to_gfn(&[value], &mut g)
                .map_err(|e| be("pfn to gfn", e))?;
            if let Some(gfn) = g[0] {
                self.dom
                    .write_pages(&[gfn], &zero)
                    .map_err(|e| be("clear a ring page", e))?;
            }
        }
        if idx == P::PAE_ENABLED {
            return Ok(()); // dropped: the domain builder decides
        }
        self.dom
            .set_hvm_param(index, value)
            .map_err(|e| be("set HVM param", e))
    }

    fn ensure_populated(&mut self, pfns: &[u64]) -> R<()> {
        let need: Vec<u64> = pfns
            .iter()
            .copied()
            .filter(|p| !self.populated.get(*p))
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        self.admit_population(&need)
            .map_err(|e| be("the destination's memory limits", e))?;
        self.dom.populate(&need).map_err(|e| be("populate", e))?;
        for p in need {
            self.populated.set(p);
        }
        Ok(())
    }

    /// Checks that populating `need` (pfns not populated yet, no repeats) stays inside the
    /// destination's limits, and grows the populated bitmap to cover them (to a power of
    /// two like Xen's, never past the highest pfn allowed).
    fn admit_population(&mut self, need: &[u64]) -> BResult<()> {
        let Some(&max) = need.iter().max() else {
            return Ok(());
        };
        if max > self.limits.max_pfn {
            return Err(BackendError::new(
                LIMITS_OP,
                format!(
                    "pfn {max:#x} is beyond the highest pfn {:#x} the destination can hold",
                    self.limits.max_pfn
                ),
            )
            .errno(errno::ERANGE));
        }
        let total = self.populated_count.saturating_add(need.len() as u64);
        if total > self.limits.max_pages {
            return Err(BackendError::new(
                LIMITS_OP,
                format!(
                    "{total} pages populated would exceed the destination's {} pages",
                    self.limits.max_pages
                ),
            )
            .errno(errno::ENOMEM));
        }
        if max >= self.populated.len() {
            let bits = (max + 1)
                .next_power_of_two()
                .max(8192)
                .min(self.limits.max_pfn.saturating_add(1));
            self.populated.grow(bits);
        }
        self.populated_count = total;
        Ok(())
    }

    fn page_data(&mut self, rec: &RawRecord<'_>, p: &libxc::PageData<'_>) -> R<()> {
        let mut pfns = Vec::with_capacity(p.entries.len());
        let mut to_populate = Vec::new();
        let mut data_pfns = Vec::new();
        let mut types = Vec::with_capacity(p.entries.len());
        let mut has_tables = false;
        for e in p.entries.iter() {
            let (pfn, t) = (e.pfn(), e.page_type());
            if pfn > self.limits.max_pfn {
                return Err(invalid(
                    rec,
                    "pfn.limit",
                    format!(
                        "pfn {pfn:#x} is beyond the highest pfn {:#x} the destination can hold \
                         ({} pages)",
                        self.limits.max_pfn, self.limits.max_pages
                    ),
                ));
            }
            if self.guest == GuestType::X86Pv && pfn > self.max_pfn {
                return Err(invalid(
                    rec,
                    "pfn.max_pfn",
                    format!(
                        "pfn {pfn:#x} is beyond the domain's max_pfn {:#x}",
                        self.max_pfn
                    ),
                ));
            }
            if t.has_data() || t == libxc::PageType::XALLOC {
                to_populate.push(pfn);
            }
            if t.has_data() {
                data_pfns.push(pfn);
                if table_level(t).is_some() {
                    has_tables = true;
                }
            }
            pfns.push(pfn);
            types.push(t);
        }
        self.ensure_populated(&to_populate).map_err(|e| match e {
            RestoreError::Backend { source, .. } if source.op == LIMITS_OP => {
                invalid(rec, "pages.limit", source.to_string())
            }
            e => e,
        })?;
        for (&pfn, &t) in pfns.iter().zip(&types) {
            let i = pfn as usize;
            // Unknown pfns read as XTAB: only other types need room (pfns already checked
            // against the limits, so the vector stays inside them).
            if i >= self.types.len() && t != libxc::PageType::XTAB {
                self.types.resize(i + 1, libxc::PageType::XTAB);
            }
            if let Some(slot) = self.types.get_mut(i) {
                *slot = t;
            }
        }
        self.dom
            .set_page_types(&pfns, &types)
            .map_err(|e| be("set page types", e))?;
        if data_pfns.is_empty() {
            return Ok(());
        }
        let mut gfns = vec![None; data_pfns.len()];
        self.dom
            .pfn_to_gfn(&data_pfns, &mut gfns)
            .map_err(|e| be("pfn to gfn", e))?;
        let gfns: Vec<u64> = gfns
            .iter()
            .zip(&data_pfns)
            .map(|(g, p)| {
                g.ok_or_else(|| {
                    be(
                        "map pages",
                        BackendError::new("map", format!("pfn {p:#x} has no frame after populate")),
                    )
                })
            })
            .collect::<R<_>>()?;
        // PV page tables hold pfns on the wire: they are localised in a copy before they
        // reach their frames. Every other page goes straight to its frame.
        let tables = if has_tables && self.guest == GuestType::X86Pv {
            types
                .iter()
                .filter(|t| t.has_data())
                .enumerate()
                .filter(|(_, t)| table_level(**t).is_some())
                .map(|(k, t)| (k, *t))
                .collect()
        } else {
            Vec::new()
        };
        let batch = Batch {
            rec: RawRecord { body: &[], ..*rec },
            gfns,
            tables,
        };
        if rec.ctx.deferred > 0 {
            // The page octets are still in the stream: `run` feeds them in once the record
            // is done with.
            self.incoming = Some(batch);
            return Ok(());
        }
        self.put_pages(&batch, &mut Bytes(p.pages))
    }

    /// Puts the pages of `batch` where they belong, in verify mode compares them instead,
    /// reading their octets from `feed`: the pages that are not page tables straight into
    /// their frames, the page tables into a copy that is localised first.
    fn put_pages(&mut self, batch: &Batch, feed: &mut dyn PageFeed) -> R<()> {
        let n = batch.gfns.len();
        let localise_err = |e: BackendError| {
            RestoreError::Stream(batch.rec.error(StreamError::invalid(
                batch.rec.offset,
                "localise",
                e.to_string(),
            )))
        };
        let layout = || {
            self.layout.ok_or_else(|| {
                invalid(&batch.rec, "order", "page tables before X86_PV_INFO".into())
            })
        };
        if self.verify {
            let mut data = std::mem::take(&mut self.scratch);
            data.clear();
            data.resize(n * PAGE_SIZE, 0);
            feed.fill(&mut [&mut data])?;
            if !batch.tables.is_empty() {
                let l = layout()?;
                for &(k, t) in &batch.tables {
                    if let Some(page) = data.get_mut(k * PAGE_SIZE..(k + 1) * PAGE_SIZE) {
                        self.localise(l, t, page).map_err(localise_err)?;
                    }
                }
            }
            let mut current = vec![0u8; data.len()];
            self.dom
                .read_pages(&batch.gfns, &mut current)
                .map_err(|e| be("read pages", e))?;
            for (a, b) in current.chunks(PAGE_SIZE).zip(data.chunks(PAGE_SIZE)) {
                if a != b {
                    self.result.verify_mismatches += 1;
                }
            }
            self.scratch = data;
            return Ok(());
        }
        let l = if batch.tables.is_empty() {
            None
        } else {
            Some(layout()?)
        };
        // The frames of the pages that are not tables, in order; the tables' copies.
        let not_tables: Vec<u64>;
        let frame_gfns: &[u64] = if batch.tables.is_empty() {
            &batch.gfns
        } else {
            let mut is_table = batch.tables.iter().map(|&(k, _)| k).peekable();
            not_tables = batch
                .gfns
                .iter()
                .enumerate()
                .filter(|(k, _)| is_table.next_if_eq(k).is_none())
                .map(|(_, g)| *g)
                .collect();
            &not_tables
        };
        let mut copies = std::mem::take(&mut self.scratch);
        copies.clear();
        copies.resize(batch.tables.len() * PAGE_SIZE, 0);
        let mut broke = None;
        let filled = self.dom.fill_pages(frame_gfns, &mut |frames| {
            let mut dst = interleave(frames, &mut copies, &batch.tables, n);
            feed.fill(&mut dst).map_err(|e| {
                broke = Some(e);
                BackendError::new("fill pages", "reading the page data failed")
            })
        });
        if let Err(e) = filled {
            self.scratch = copies;
            return Err(broke.unwrap_or_else(|| be("write pages", e)));
        }
        if let Some(l) = l {
            for (&(_, t), page) in batch.tables.iter().zip(copies.chunks_exact_mut(PAGE_SIZE)) {
                self.localise(l, t, page).map_err(localise_err)?;
            }
            let table_gfns: Vec<u64> = batch
                .tables
                .iter()
                .filter_map(|&(k, _)| batch.gfns.get(k).copied())
                .collect();
            self.dom
                .write_pages(&table_gfns, &copies)
                .map_err(|e| be("write pages", e))?;
        }
        self.scratch = copies;
        self.result.pages += n as u64;
        Ok(())
    }

    /// pfn → mfn in a page table, populating frames it references that are not there yet.
    fn localise(
        &mut self,
        l: &PvLayout,
        t: libxc::PageType,
        page: &mut [u8],
    ) -> Result<(), BackendError> {
        let mut refs = Vec::new();
        for chunk in page.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            let pte = u64::from_le_bytes(b);
            if pte & x86::PTE_PRESENT != 0 {
                refs.push(x86::pte_frame(pte));
            }
        }
        let missing: Vec<u64> = refs
            .iter()
            .copied()
            .filter(|p| !self.populated.get(*p))
            .collect();
        if !missing.is_empty() {
            if let Some(&m) = missing.iter().max() {
                if m > self.max_pfn {
                    return Err(BackendError::new(
                        "localise",
                        format!("a page table references pfn {m:#x}, beyond max_pfn"),
                    )
                    .errno(errno::ERANGE));
                }
            }
            let mut missing = missing;
            missing.sort_unstable();
            missing.dedup();
            self.admit_population(&missing)?;
            self.dom.populate(&missing)?;
            for p in &missing {
                self.populated.set(*p);
            }
        }
        let mut map: BTreeMap<u64, u64> = BTreeMap::new();
        if !refs.is_empty() {
            let mut out = vec![None; refs.len()];
            self.dom.pfn_to_gfn(&refs, &mut out)?;
            for (p, g) in refs.iter().zip(out) {
                if let Some(g) = g {
                    map.insert(*p, g);
                }
            }
        }
        rewrite_page_table(l, t, page, |pfn| {
            map.get(&pfn).copied().ok_or_else(|| {
                BackendError::new("localise", format!("pfn {pfn:#x} has no frame"))
                    .errno(errno::ERANGE)
            })
        })
    }

    fn pfn_to_mfn(&mut self, pfn: u64, want: &[libxc::PageType], what: &str) -> R<u64> {
        let t = self
            .types
            .get(pfn as usize)
            .copied()
            .unwrap_or(libxc::PageType::XTAB);
        if !want.is_empty() && !want.contains(&t) {
            return Err(be(
                "complete the restore",
                BackendError::new(
                    "vcpu context",
                    format!("{what} pfn {pfn:#x} has type {t}, expected one of {want:?}"),
                ),
            ));
        }
        let mut g = [None];
        self.dom
            .pfn_to_gfn(&[pfn], &mut g)
            .map_err(|e| be("pfn to gfn", e))?;
        g[0].ok_or_else(|| {
            be(
                "complete the restore",
                BackendError::new("pfn to mfn", format!("{what} pfn {pfn:#x} has no frame")),
            )
        })
    }

    /// After END (or at failover): apply what was held back.
    fn stream_complete(&mut self) -> R<()> {
        match self.guest {
            GuestType::X86Hvm => {
                self.dom
                    .set_hvm_param(2, self.opts.store_evtchn as u64)
                    .map_err(|e| be("set STORE_EVTCHN", e))?;
                self.dom
                    .set_hvm_param(18, self.opts.console_evtchn as u64)
                    .map_err(|e| be("set CONSOLE_EVTCHN", e))?;
                let ctx = self.hvm_context.clone().ok_or_else(|| {
                    RestoreError::Stream(StreamError::invalid(
                        self.end_offset,
                        "hvm_context.missing",
                        "the stream carried no HVM_CONTEXT",
                    ))
                })?;
                self.dom
                    .set_hvm_context(&ctx)
                    .map_err(|e| be("set HVM context", e))?;
                self.result.store_gfn = self.store_pfn.unwrap_or(0);
                self.result.console_gfn = self.console_pfn.unwrap_or(0);
            }
            GuestType::X86Pv => self.pv_complete()?,
        }
        Ok(())
    }

    fn pv_complete(&mut self) -> R<()> {
        let l = self.layout.ok_or_else(|| {
            RestoreError::Stream(StreamError::invalid(
                self.end_offset,
                "x86_pv_info.missing",
                "the stream carried no X86_PV_INFO",
            ))
        })?;
        if self.vcpus.get(&0).and_then(|v| v.basic.as_ref()).is_none() {
            return Err(StreamError::invalid(
                self.end_offset,
                "vcpu0.missing",
                "the stream carried no X86_PV_VCPU_BASIC for vcpu 0",
            )
            .into());
        }
        let roots: &[libxc::PageType] = if l.levels == 4 {
            &[libxc::PageType::L4TAB, libxc::PageType::L4TAB_PINNED]
        } else {
            &[libxc::PageType::L3TAB, libxc::PageType::L3TAB_PINNED]
        };
        let ids: Vec<u32> = self.vcpus.keys().copied().collect();
        for id in ids {
            let Some(mut basic) = self.vcpus.get(&id).and_then(|v| v.basic.clone()) else {
                continue;
            };
            if id == 0 {
                let start_info = l.get(&basic, l.edx).unwrap_or(0);
                let mfn = self.pfn_to_mfn(start_info, &[libxc::PageType::NOTAB], "start_info")?;
                self.process_start_info(l, start_info, mfn)?;
            }
            // Every frame field goes pfn → mfn; cr3 must be a top-level table.
            let cr3_pfn = l.cr3_to_frame(l.get(&basic, l.cr(3)).unwrap_or(0));
            self.pfn_to_mfn(cr3_pfn, roots, "cr3")?;
            let mut frames = Vec::new();
            rewrite_vcpu_context(l, id, &mut basic, |pfn| {
                frames.push(pfn);
                Ok(pfn)
            })
            .map_err(|e| be("vcpu context", e))?;
            let mut map = BTreeMap::new();
            for pfn in frames {
                let mfn = self.pfn_to_mfn(pfn, &[], "vcpu frame")?;
                map.insert(pfn, mfn);
            }
            rewrite_vcpu_context(l, id, &mut basic, |pfn| {
                map.get(&pfn).copied().ok_or_else(|| {
                    BackendError::new("vcpu context", format!("pfn {pfn:#x} has no frame"))
                })
            })
            .map_err(|e| be("vcpu context", e))?;
            self.dom
                .set_vcpu_state(id, VcpuState::Basic, &basic)
                .map_err(|e| be("set vcpu context", e))?;
        }
        for (id, v) in &self.vcpus {
            for (which, data) in [
                (VcpuState::Extended, &v.extended),
                (VcpuState::Xsave, &v.xsave),
                (VcpuState::Msrs, &v.msrs),
            ] {
                if let Some(d) = data {
                    self.dom
                        .set_vcpu_state(*id, which, d)
                        .map_err(|e| be("set vcpu state", e))?;
                }
            }
        }
        // Pin the page tables the stream marked, PIN_BATCH at a time.
        let pins: Vec<(u64, libxc::PageType)> = self
            .types
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.0 & libxc::PAGE_TYPE_PINNED != 0
                    && (libxc::PageType::L1TAB_PINNED.0..=libxc::PageType::L4TAB_PINNED.0)
                        .contains(&t.0)
            })
            .map(|(p, t)| (p as u64, *t))
            .collect();
        for chunk in pins.chunks(PIN_BATCH) {
            self.dom
                .pin_page_tables(chunk)
                .map_err(|e| be("pin page tables", e))?;
        }
        if let Some(frames) = &self.p2m_frames {
            self.dom
                .write_p2m(frames)
                .map_err(|e| be("write the p2m", e))?;
        }
        Ok(())
    }

    /// Rewrites start_info for the new domain and learns the xenstore and console frames.
    fn process_start_info(&mut self, l: &PvLayout, pfn: u64, mfn: u64) -> R<()> {
        let si = x86::StartInfo::for_width(l.width as u8);
        let mut page = vec![0u8; PAGE_SIZE];
        self.dom
            .read_pages(&[mfn], &mut page)
            .map_err(|e| be("read start_info", e))?;
        let store_pfn = l.get(&page, si.store_mfn).unwrap_or(0);
        let console_pfn = l.get(&page, si.console_mfn).unwrap_or(0);
        for (what, p) in [("xenstore", store_pfn), ("console", console_pfn)] {
            if p > self.max_pfn {
                return Err(be(
                    "start_info",
                    BackendError::new(
                        "start_info",
                        format!(
                            "the {what} pfn {p:#x} is beyond max_pfn (start_info at pfn {pfn:#x})"
                        ),
                    ),
                ));
            }
        }
        let store = self.pfn_to_mfn(store_pfn, &[], "xenstore")?;
        let console = self.pfn_to_mfn(console_pfn, &[], "console")?;
        self.result.store_gfn = store;
        self.result.console_gfn = console;
        l.set(&mut page, si.store_mfn, store);
        write_u32(&mut page, si.store_evtchn, self.opts.store_evtchn);
        l.set(&mut page, si.console_mfn, console);
        write_u32(&mut page, si.console_evtchn, self.opts.console_evtchn);
        l.set(&mut page, si.nr_pages, self.max_pfn + 1);
        write_u32(&mut page, si.flags, 0);
        self.dom
            .write_pages(&[mfn], &page)
            .map_err(|e| be("write start_info", e))
    }
}

fn write_u32(page: &mut [u8], off: usize, v: u32) {
    if let Some(b) = page.get_mut(off..off + 4) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// Xen's restore of shared info: the guest's vcpu_info and arch are kept, the frame-list
/// pointer cleared, pending events dropped and every event masked.
pub fn merge_shared_info(l: &PvLayout, new: &mut [u8], old: &[u8]) {
    for (off, len) in [l.shinfo_vcpu_info, l.shinfo_arch] {
        if let (Some(dst), Some(src)) = (new.get_mut(off..off + len), old.get(off..off + len)) {
            dst.copy_from_slice(src);
        }
    }
    l.set(new, l.pfn_to_mfn_frame_list_list, 0);
    let (off, len) = l.shinfo_evtchn_pending;
    if let Some(b) = new.get_mut(off..off + len) {
        b.fill(0);
    }
    for i in 0..32 {
        l.set(
            new,
            l.shinfo_vcpu_info.0 + i * l.vcpu_info_size + l.evtchn_pending_sel,
            0,
        );
    }
    let (off, len) = l.shinfo_evtchn_mask;
    if let Some(b) = new.get_mut(off..off + len) {
        b.fill(0xff);
    }
}

#[cfg(test)]
mod tests {
    use super::body_sum;

    /// Pages that are not tables go to the frames in runs, whatever the frames' cuts; each
    /// table to its own copy; in stream order.
    #[test]
    fn interleave_puts_runs_in_frames_and_tables_in_copies() {
        use super::{interleave, libxc, PAGE_SIZE};
        const P: usize = PAGE_SIZE;
        let t = libxc::PageType::L1TAB;
        // 6 data pages; 1 and 4 are tables; frames (4 pages) cut at 1.5 pages.
        let mut a = vec![0u8; 3 * P / 2];
        let mut b = vec![0u8; 5 * P / 2];
        let mut frames: Vec<&mut [u8]> = vec![&mut a, &mut b];
        let mut copies = vec![0u8; 2 * P];
        let tables = [(1, t), (4, t)];
        let dst = interleave(&mut frames, &mut copies, &tables, 6);
        let lens: Vec<usize> = dst.iter().map(|d| d.len()).collect();
        // Page 0 (1 frame page), table 1, pages 2-3 (half of a, half... of b), table 4, page 5.
        assert_eq!(lens, [P, P, P / 2, 3 * P / 2, P, P]);
        // Fill in stream order with each page's index; then check where they landed.
        let mut k = 0u8;
        let mut left = 0;
        for d in dst {
            for byte in d.iter_mut() {
                *byte = k;
                left += 1;
                if left == P {
                    left = 0;
                    k += 1;
                }
            }
        }
        let frames: Vec<u8> = [a, b].concat();
        let page = |v: &[u8], i: usize| v[i * P..(i + 1) * P].iter().all(|&x| x == v[i * P]);
        assert!((0..4).all(|i| page(&frames, i)));
        let firsts: Vec<u8> = (0..4).map(|i| frames[i * P]).collect();
        assert_eq!(firsts, [0, 2, 3, 5]);
        assert_eq!([copies[0], copies[P]], [1, 4]);
        // No tables: one run over every cut.
        let mut a = vec![0u8; P];
        let mut b = vec![0u8; 2 * P];
        let mut frames: Vec<&mut [u8]> = vec![&mut a, &mut [], &mut b];
        let dst = interleave(&mut frames, &mut [], &[], 3);
        assert_eq!(dst.iter().map(|d| d.len()).collect::<Vec<_>>(), [P, 2 * P]);
    }

    #[test]
    fn spare_bodies_are_reused_smallest_first() {
        use super::spare_body;
        let mut spare = vec![
            Vec::with_capacity(100),
            Vec::with_capacity(10_000),
            vec![1u8; 500],
        ];
        let small_cap = spare[2].capacity();
        // The smallest that fits, emptied.
        let b = spare_body(&mut spare, 400);
        assert!(b.is_empty() && b.capacity() == small_cap);
        assert_eq!(spare.len(), 2);
        let b = spare_body(&mut spare, 5_000);
        assert!(b.capacity() >= 10_000);
        // None fits: a new one, the spare left alone.
        let b = spare_body(&mut spare, 1 << 20);
        assert!(b.capacity() >= 1 << 20);
        assert_eq!(spare.len(), 1);
    }

    #[test]
    fn a_changed_buffered_body_is_told_apart() {
        let body: Vec<u8> = (0..5520u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let sum = body_sum(&body);
        assert_eq!(sum, body_sum(&body.clone()));
        // What was seen on Xen: the first octets (the PAGE_DATA count) replaced.
        let mut first = body.clone();
        first[..8].copy_from_slice(&0x5e2343u64.to_le_bytes());
        assert_ne!(sum, body_sum(&first));
        // Two words swapped, one octet flipped at the end, one octet fewer.
        let mut swapped = body.clone();
        swapped.swap(8, 16);
        assert_ne!(sum, body_sum(&swapped));
        let mut last = body.clone();
        *last.last_mut().unwrap() ^= 1;
        assert_ne!(sum, body_sum(&last));
        assert_ne!(sum, body_sum(&body[..body.len() - 1]));
    }
}
