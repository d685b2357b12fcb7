//! The v2 save algorithm (format-reference §3) as a generic driver: headers, static data,
//! memory passes (plain, live precopy, stop-and-copy, checkpoints), end-of-checkpoint state,
//! END. What differs between guest types lives in [`crate::hooks`]; what a hypervisor does
//! lives behind [`Domain`]; what the toolstack answers behind [`SaveCallbacks`].

use crate::domain::{
    errno, BResult, BackendError, Bitmap, Domain, PrecopyDecision, PrecopyStats, SaveCallbacks,
    PAGE_SIZE,
};
use crate::hooks::{self, SaveHooks};
use crate::wire::{Array, DecodeCtx};
use crate::writer::{StreamWriter, WriteError};
use crate::{libxc, Reader, ReaderOptions};
use std::io::{Read, Write};
use std::time::Duration;

/// Xen's `xc_stream_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum StreamType {
    /// One image, then END.
    #[default]
    Plain,
    /// Remus: checkpoints until the toolstack stops.
    Remus,
    /// COLO: checkpoints on the secondary's demand, with a back channel.
    Colo,
}

/// How to save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Precopy passes while the guest runs.
    pub live: bool,
    /// After the final pass, send every page again after a VERIFY record.
    pub debug: bool,
    /// Plain, Remus or COLO.
    pub stream_type: StreamType,
    /// Written in the domain header.
    pub xen_major: u32,
    /// Written in the domain header.
    pub xen_minor: u32,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            live: false,
            debug: false,
            stream_type: StreamType::Plain,
            xen_major: 4,
            xen_minor: 17,
        }
    }
}

/// Figures for one memory pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassStats {
    /// 0 for the first (full) pass.
    pub pass: u32,
    /// The guest was suspended (stop-and-copy or a checkpoint).
    pub suspended: bool,
    /// Pfns sent (entries written, with or without data).
    pub pages_sent: u64,
    /// Pages dirtied while the pass ran (what the next pass must send).
    pub pages_dirtied: u64,
    /// Stream octets written by the pass.
    pub bytes: u64,
    /// Duration of the pass on the domain's clock.
    #[serde(serialize_with = "ser_secs")]
    pub time: Duration,
    /// The stop-and-copy time the pass's figures predict for the remaining dirty pages.
    #[serde(serialize_with = "ser_opt_secs")]
    pub predicted_downtime: Option<Duration>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Figures for a whole save.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SaveStats {
    /// Every memory pass, in order.
    pub passes: Vec<PassStats>,
    /// Stream octets written.
    pub bytes: u64,
    /// CHECKPOINT records written.
    pub checkpoints: u32,
    /// Time from the suspend to the end of the final pass (domain clock).
    #[serde(serialize_with = "ser_opt_secs")]
    pub downtime: Option<Duration>,
    /// Why precopy stopped.
    pub stop_reason: String,
}

/// Why a save failed (defined with the hooks, which return it too).
pub use crate::hooks::SaveError;

/// Pfns per PAGE_DATA record.
pub const BATCH: usize = libxc::MAX_BATCH_SIZE as usize;

/// Xen's default precopy policy: stop below 50 dirty pages or after 5 iterations.
pub fn default_policy(s: PrecopyStats) -> PrecopyDecision {
    if (0..50).contains(&s.dirty_count) || s.iteration >= 5 {
        PrecopyDecision::StopAndCopy
    } else {
        PrecopyDecision::Continue
    }
}

struct Saver<'a, D: Domain, C: SaveCallbacks<D>, W: Write> {
    dom: &'a mut D,
    cb: &'a mut C,
    w: StreamWriter<W>,
    hooks: Box<dyn SaveHooks<D>>,
    opts: SaveOptions,
    p2m_size: u64,
    dirty: Bitmap,
    deferred: Bitmap,
    // Batch buffers, reused.
    pfns: Vec<u64>,
    gfns: Vec<Option<u64>>,
    types: Vec<libxc::PageType>,
    data_gfns: Vec<u64>,
    pages: Vec<u8>,
    /// The piece of a streamed batch being read and written.
    chunk: Vec<u8>,
    entries: Vec<libxc::PageEntry>,
    stats: SaveStats,
    suspended_at: Option<Duration>,
    /// The precopy policy's iteration when precopy stopped (names the final pass, as Xen).
    precopy_iteration: u32,
    /// PAGE_DATA records written so far.
    batches: u64,
    /// The first and last pfn of the batch being sent.
    batch_range: (u64, u64),
    /// The domain's highest pfn, as it reported at the start.
    max_pfn: u64,
}

/// Saves a domain as a libxc image written to `out`. `back_channel` is the COLO secondary's
/// dirty pfn list stream.
pub fn save<D, C, W>(
    dom: &mut D,
    cb: &mut C,
    out: W,
    opts: SaveOptions,
    back_channel: Option<&mut dyn Read>,
) -> Result<(SaveStats, W), SaveError>
where
    D: Domain + 'static,
    C: SaveCallbacks<D>,
    W: Write,
{
    let info = dom.info()?;
    let hooks = hooks::save_hooks::<D>(info.guest);
    let mut s = Saver {
        dom,
        cb,
        w: StreamWriter::new(out),
        hooks,
        opts,
        p2m_size: 0,
        dirty: Bitmap::default(),
        deferred: Bitmap::default(),
        pfns: Vec::with_capacity(BATCH),
        gfns: Vec::with_capacity(BATCH),
        types: Vec::with_capacity(BATCH),
        data_gfns: Vec::with_capacity(BATCH),
        pages: Vec::with_capacity(BATCH * PAGE_SIZE),
        chunk: Vec::new(),
        entries: Vec::with_capacity(BATCH),
        stats: SaveStats::default(),
        suspended_at: None,
        precopy_iteration: 0,
        batches: 0,
        batch_range: (0, 0),
        max_pfn: u64::MAX,
    };
    let r = s.run(back_channel);
    let cleanup = s.hooks.cleanup(s.dom, s.cb);
    r?;
    cleanup?;
    s.stats.bytes = s.w.offset();
    Ok((s.stats, s.w.into_inner()))
}

impl<D: Domain, C: SaveCallbacks<D>, W: Write> Saver<'_, D, C, W> {
    fn run(&mut self, mut back_channel: Option<&mut dyn Read>) -> Result<(), SaveError> {
        self.hooks.setup(self.dom, self.cb)?;
        self.p2m_size = self.hooks.p2m_size(self.dom)?;
        self.dirty = Bitmap::new(self.p2m_size);
        self.deferred = Bitmap::new(self.p2m_size);
        let info = self.dom.info()?;
        self.max_pfn = info.max_pfn;
        self.w.image_header(&libxc::ImageHeader {
            version: libxc::VERSION_WRITTEN,
            ..Default::default()
        })?;
        self.w.domain_header(&libxc::DomainHeader {
            r#type: info.guest.domain_type(),
            page_shift: libxc::PAGE_SHIFT,
            reserved: 0,
            xen_major: self.opts.xen_major,
            xen_minor: self.opts.xen_minor,
        })?;
        self.hooks.static_data(self.dom, &mut self.w)?;
        self.w
            .libxc(&libxc::Record::StaticDataEnd(libxc::StaticDataEnd {}))?;
        self.hooks.start_of_stream(self.dom, &mut self.w)?;
        self.cb.progress("Start of stream", 0, 0);

        let checkpointed = self.opts.stream_type != StreamType::Plain;
        let mut live = self.opts.live;
        if live || checkpointed {
            self.enable_logdirty()?;
        }
        loop {
            self.hooks.start_of_checkpoint(self.dom, &mut self.w)?;
            self.hooks.check_vm_state(self.dom)?;
            if live {
                self.precopy()?;
                self.stop_and_copy(&mut back_channel)?;
            } else if checkpointed && self.stats.checkpoints > 0 {
                self.stop_and_copy(&mut back_channel)?;
            } else {
                self.suspend()?;
                if checkpointed {
                    // Later checkpoints send what the guest dirties in between.
                    let mut scratch = Bitmap::new(self.p2m_size);
                    self.dom.clean_dirty(&mut scratch, true)?;
                }
                self.dirty.set_all();
                self.send_dirty(true, "Frames")?;
                if let Some(t) = self.suspended_at {
                    self.stats.downtime = Some(self.dom.now().saturating_sub(t));
                }
            }
            if !self.dom.info()?.suspended {
                return Err(SaveError::Suspend(
                    "the domain is not suspended after the final pass".into(),
                ));
            }
            if self.opts.debug && self.opts.live && !checkpointed {
                self.w.libxc(&libxc::Record::Verify(libxc::Verify {}))?;
                self.dirty.set_all();
                self.send_dirty(true, "Verify")?;
                let _ = self.dom.peek_dirty()?;
            }
            self.hooks.end_of_checkpoint(self.dom, &mut self.w)?;
            if !checkpointed {
                break;
            }
            live = false;
            self.w
                .libxc(&libxc::Record::Checkpoint(libxc::Checkpoint {}))?;
            self.w.flush()?;
            self.stats.checkpoints += 1;
            let go_on = match self.opts.stream_type {
                StreamType::Colo => {
                    if self.cb.checkpoint(self.dom) == 0 {
                        return Err(SaveError::Invalid(
                            "the COLO checkpoint callback failed".into(),
                        ));
                    }
                    if self.cb.postcopy(self.dom) <= 0 {
                        return Err(SaveError::Invalid("the postcopy callback failed".into()));
                    }
                    self.cb.wait_checkpoint(self.dom) > 0
                }
                _ => {
                    if self.cb.postcopy(self.dom) <= 0 {
                        return Err(SaveError::Invalid("the postcopy callback failed".into()));
                    }
                    self.cb.checkpoint(self.dom) > 0
                }
            };
            if !go_on {
                // Checkpointed streams end without END: the secondary fails over.
                self.w.flush()?;
                return Ok(());
            }
        }
        self.w.libxc(&libxc::Record::End(libxc::End {}))?;
        self.w.flush()?;
        self.cb.progress("End of stream", 0, 0);
        Ok(())
    }

    /// Starts log-dirty like Xen's `enable_logdirty`: when something else (VRAM tracking) may
    /// own it, off and on again. The error names the three errnos, as Xen logs them
    /// (`Failed to enable logdirty: 95,22,0` where there is no shadow paging).
    fn enable_logdirty(&mut self) -> Result<(), SaveError> {
        let Err(on1) = self.dom.enable_logdirty() else {
            return Ok(());
        };
        let code = |e: &BackendError| e.errno.unwrap_or(0);
        let (off, on2) = match self.dom.disable_logdirty() {
            Err(off) => (code(&off), None),
            Ok(()) => match self.dom.enable_logdirty() {
                Err(on2) => (0, Some(code(&on2))),
                Ok(()) => return Ok(()),
            },
        };
        let last = on2.unwrap_or(off);
        let mut e = BackendError::new(
            "enable logdirty",
            format!(
                "Failed to enable logdirty: {},{off},{} ({})",
                code(&on1),
                on2.unwrap_or(0),
                on1.detail
            ),
        );
        if last != 0 {
            e = e.errno(last);
        }
        Err(e.into())
    }

    fn policy(&mut self, s: PrecopyStats) -> PrecopyDecision {
        self.cb
            .precopy_policy(s)
            .unwrap_or_else(|| default_policy(s))
    }

    /// Live passes while the guest runs (format-reference §3 "Live precopy").
    fn precopy(&mut self) -> Result<(), SaveError> {
        let mut stats = PrecopyStats {
            iteration: 0,
            total_written: 0,
            dirty_count: self.p2m_size as i64,
            ..Default::default()
        };
        self.dirty.set_all();
        loop {
            let d = self.policy(stats);
            if self.dirty.count() > 0 && d != PrecopyDecision::Abort {
                let label = if stats.iteration == 0 {
                    "Frames iteration 0".to_string()
                } else {
                    format!("Frames iteration {}", stats.iteration)
                };
                let t0 = self.dom.now();
                let b0 = self.w.offset();
                let sent = self.send_dirty(false, &label)?;
                let dt = self.dom.now().saturating_sub(t0);
                stats.last_pass_pages = sent;
                stats.last_pass_bytes = self.w.offset() - b0;
                stats.last_pass_time = dt;
                self.hooks.check_vm_state(self.dom)?;
            }
            match d {
                PrecopyDecision::Abort => return Err(SaveError::Aborted),
                PrecopyDecision::StopAndCopy => {
                    self.stats.stop_reason =
                        format!("policy stopped at iteration {}", stats.iteration);
                    self.precopy_iteration = stats.iteration;
                    return Ok(());
                }
                PrecopyDecision::Continue => {}
            }
            stats.iteration += 1;
            stats.total_written += stats.dirty_count.max(0) as u64;
            stats.dirty_count = -1;
            let d = self.policy(stats);
            if d != PrecopyDecision::Continue {
                if d == PrecopyDecision::Abort {
                    return Err(SaveError::Aborted);
                }
                self.stats.stop_reason = format!("policy stopped at iteration {}", stats.iteration);
                self.precopy_iteration = stats.iteration;
                return Ok(());
            }
            self.dirty.clear_all();
            let n = self.dom.clean_dirty(&mut self.dirty, false)?;
            stats.dirty_count = n as i64;
            if let Some(p) = self.stats.passes.last_mut() {
                p.pages_dirtied = n;
                p.predicted_downtime = predict(n, stats.last_pass_pages, stats.last_pass_time);
            }
        }
    }

    fn suspend(&mut self) -> Result<(), SaveError> {
        if !self.cb.suspend(self.dom) {
            return Err(SaveError::Suspend("the suspend callback failed".into()));
        }
        if !self.dom.info()?.suspended {
            return Err(SaveError::Suspend(
                "the domain did not shut down with reason suspend".into(),
            ));
        }
        self.suspended_at = Some(self.dom.now());
        self.cb.progress("Domain now suspended", 0, 0);
        Ok(())
    }

    /// Suspend, collect the final dirty set, send it (also each checkpoint).
    fn stop_and_copy(&mut self, back_channel: &mut Option<&mut dyn Read>) -> Result<(), SaveError> {
        self.suspend()?;
        self.dirty.clear_all();
        let n = self.dom.clean_dirty(&mut self.dirty, true)?;
        if let Some(p) = self.stats.passes.last_mut() {
            if !p.suspended {
                p.pages_dirtied = n;
            }
        }
        self.dirty.or(&self.deferred.clone());
        // Xen merges the secondary's dirty pfns once the live round is over (`save.live` is
        // cleared at the first CHECKPOINT).
        if self.opts.stream_type == StreamType::Colo && self.stats.checkpoints > 0 {
            if let Some(bc) = back_channel.as_mut() {
                self.read_dirty_pfn_list(&mut **bc)?;
            }
        }
        let label = if self.stats.checkpoints > 0 {
            "Checkpointed save".to_string()
        } else {
            format!("Frames iteration {}", self.precopy_iteration)
        };
        self.send_dirty(true, &label)?;
        self.deferred.clear_all();
        if let Some(t) = self.suspended_at {
            self.stats.downtime = Some(self.dom.now().saturating_sub(t));
        }
        Ok(())
    }

    /// COLO: the secondary's dirty pfns, as one CHECKPOINT_DIRTY_PFN_LIST record.
    fn read_dirty_pfn_list(&mut self, bc: &mut dyn Read) -> Result<(), SaveError> {
        let mut r = Reader::new(
            crate::source::ReadSource::new(bc).exact(),
            ReaderOptions::default(),
        )
        .libxc_records_only();
        let rec = match r
            .next_item()
            .map_err(|e| SaveError::BackChannel(e.to_string()))?
        {
            crate::Item::Record(rec) => rec,
            other => {
                return Err(SaveError::BackChannel(format!(
                    "expected a record, got {other:?}"
                )))
            }
        };
        if rec.record_type != libxc::CheckpointDirtyPfnList::TYPE {
            return Err(SaveError::BackChannel(format!(
                "expected CHECKPOINT_DIRTY_PFN_LIST, got {}",
                rec.type_name()
            )));
        }
        let list = libxc::CheckpointDirtyPfnList::decode(rec.body, &DecodeCtx::new(3))
            .map_err(|e| SaveError::BackChannel(e.to_string()))?;
        for pfn in list.pfns.iter() {
            if pfn >= self.p2m_size {
                return Err(SaveError::BackChannel(format!(
                    "pfn {pfn:#x} is beyond p2m_size {:#x}",
                    self.p2m_size
                )));
            }
            self.dirty.set(pfn);
        }
        Ok(())
    }

    /// Sends every pfn set in the dirty bitmap, in batches; returns how many.
    fn send_dirty(&mut self, suspended: bool, label: &str) -> Result<u64, SaveError> {
        let t0 = self.dom.now();
        let b0 = self.w.offset();
        let total = self.dirty.count();
        let mut sent = 0u64;
        let dirty = std::mem::take(&mut self.dirty);
        let mut batch = Vec::with_capacity(BATCH);
        // The first and last pfn of the batch, as the bitmap handed them out (kept apart
        // from the batch's array, for `check_batch`).
        let mut range = (0u64, 0u64);
        self.cb.progress(label, 0, total);
        for pfn in dirty.iter() {
            if batch.is_empty() {
                range.0 = pfn;
            }
            range.1 = pfn;
            batch.push(pfn);
            if batch.len() == BATCH {
                self.batch_range = range;
                self.send_batch(&batch, suspended)?;
                sent += batch.len() as u64;
                batch.clear();
                self.cb.progress(label, sent, total);
            }
        }
        if !batch.is_empty() {
            self.batch_range = range;
            self.send_batch(&batch, suspended)?;
            sent += batch.len() as u64;
        }
        self.cb.progress(label, sent, total);
        self.dirty = dirty;
        self.dirty.clear_all();
        self.stats.passes.push(PassStats {
            pass: self.stats.passes.len() as u32,
            suspended,
            pages_sent: sent,
            pages_dirtied: 0,
            bytes: self.w.offset() - b0,
            time: self.dom.now().saturating_sub(t0),
            predicted_downtime: None,
        });
        Ok(sent)
    }

    /// The PAGE_DATA record of a batch whose pages need no normalising (`self.types`,
    /// `self.data_gfns` and `self.pfns` set up by [`Saver::send_batch`]): written with its
    /// page data read [`STREAM_CHUNK_PAGES`] at a time into a small buffer, each piece
    /// written before the next is read. `len` is the page data's length.
    fn send_batch_streamed(&mut self, len: usize) -> Result<(), SaveError> {
        let mut slots = vec![Slot::Lent; self.data_gfns.len()];
        self.build_entries(false, &mut slots)?;
        self.check_batch()?;
        let Saver {
            dom,
            w,
            pages,
            chunk,
            entries,
            data_gfns,
            ..
        } = self;
        // The record's page data as the codec sees it: its length, its place in the record;
        // the octets themselves come from read_pages below.
        let placeholder = pages.get(..len).unwrap_or_default();
        let record = page_data(entries, placeholder);
        w.libxc_streamed(
            &record,
            placeholder,
            chunk,
            STREAM_CHUNK_PAGES * PAGE_SIZE,
            |range, buf| -> Result<(), SaveError> {
                let first = range.start / PAGE_SIZE;
                let gfns = data_gfns
                    .get(first..first + buf.len() / PAGE_SIZE)
                    .unwrap_or_default();
                dom.read_pages(gfns, buf)?;
                Ok(())
            },
        )?;
        self.batches += 1;
        Ok(())
    }

    /// The PAGE_DATA record of a batch whose pages the domain lends (`self.types`,
    /// `self.data_gfns` and `self.pfns` set up by [`Saver::send_batch`]). Pages that need
    /// normalising (page tables) are copied and normalised first, into `self.pages`; one
    /// turned into a hole leaves the record. Then every page is written straight from where
    /// the domain lends it, the normalised ones from their copies, in one vectored write.
    fn send_batch_lent(&mut self, suspended: bool) -> Result<(), SaveError> {
        // Pages that need normalising are copied first, each into its slot of `self.pages`.
        let mut slots = Vec::with_capacity(self.data_gfns.len());
        let mut copied_gfns: Vec<u64> = Vec::new();
        let data_types = self.types.iter().filter(|t| t.has_data());
        for (&t, &g) in data_types.zip(&self.data_gfns) {
            if self.hooks.normalises(t) {
                slots.push(Slot::Copy(copied_gfns.len()));
                copied_gfns.push(g);
            } else {
                slots.push(Slot::Lent);
            }
        }
        if !copied_gfns.is_empty() {
            let n = copied_gfns.len() * PAGE_SIZE;
            if self.pages.len() < n {
                self.pages.resize(n, 0);
            }
            let buf = self.pages.get_mut(..n).unwrap_or_default();
            self.dom.read_pages(&copied_gfns, buf)?;
        }
        self.build_entries(suspended, &mut slots)?;
        self.check_batch()?;
        let sent = self
            .entries
            .iter()
            .filter(|e| e.page_type().has_data())
            .count();
        if sent == 0 {
            self.w.libxc(&page_data(&self.entries, &[]))?;
            self.batches += 1;
            return Ok(());
        }
        let len = sent * PAGE_SIZE;
        if self.chunk.len() < len {
            self.chunk.resize(len, 0);
        }
        let Saver {
            dom,
            w,
            pages,
            chunk,
            entries,
            data_gfns,
            ..
        } = self;
        // The record as the codec sees it: `placeholder` stands for the page data, which is
        // written from `parts`.
        let placeholder = chunk.get(..len).unwrap_or_default();
        let record = page_data(entries, placeholder);
        let mut failed: Option<WriteError> = None;
        let mut write = |lent: &[&[u8]]| -> BResult<()> {
            let parts = gather_pages(lent, &slots, pages)
                .map_err(|e| BackendError::new("lend pages", e))?;
            w.libxc_gathered(&record, placeholder, &parts).map_err(|e| {
                let b = BackendError::new("write", e.to_string());
                failed = Some(e);
                b
            })
        };
        let r = dom.lend_pages(data_gfns, &mut write);
        if let Some(e) = failed {
            return Err(e.into());
        }
        r?;
        self.batches += 1;
        Ok(())
    }

    /// Fills `self.entries` from the batch's pfns and types. `slots` says, for each data page
    /// in order, where its octets come from; each one copied into `self.pages` is normalised
    /// there (page tables), and one that cannot be normalised while the guest runs becomes a
    /// hole ([`Slot::Hole`], its entry XTAB), sent again at stop-and-copy.
    fn build_entries(&mut self, suspended: bool, slots: &mut [Slot]) -> Result<(), SaveError> {
        self.entries.clear();
        let mut slots = slots.iter_mut();
        for (i, &t) in self.types.iter().enumerate() {
            let pfn = self.pfns.get(i).copied().unwrap_or(0);
            let mut t = t;
            if t.has_data() {
                if let Some(slot) = slots.next() {
                    if let Slot::Copy(c) = *slot {
                        let range = c * PAGE_SIZE..(c + 1) * PAGE_SIZE;
                        if let Some(page) = self.pages.get_mut(range) {
                            match self.hooks.normalise_page(self.dom, t, page) {
                                Ok(()) => {}
                                Err(e) if e.errno == Some(errno::EAGAIN) && !suspended => {
                                    self.deferred.set(pfn);
                                    *slot = Slot::Hole;
                                    t = libxc::PageType::XTAB;
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                }
            }
            self.entries
                .push(libxc::PageEntry::default().with_pfn(pfn).with_page_type(t));
        }
        Ok(())
    }

    /// [`check_batch`] on the batch about to be written.
    fn check_batch(&self) -> Result<(), SaveError> {
        check_batch(&BatchCheck {
            batch: self.batches,
            offset: self.w.offset(),
            range: self.batch_range,
            limit: self.p2m_size.min(self.max_pfn.saturating_add(1)),
            pfns: &self.pfns,
            types: &self.types,
            entries: &self.entries,
        })
    }

    /// One PAGE_DATA record (format-reference §3 "Batching").
    fn send_batch(&mut self, batch: &[u64], suspended: bool) -> Result<(), SaveError> {
        self.pfns.clear();
        self.pfns.extend_from_slice(batch);
        self.gfns.clear();
        self.gfns.resize(batch.len(), None);
        self.hooks
            .pfn_to_gfn(self.dom, &self.pfns, &mut self.gfns)?;
        // Types of the mapped frames; unmapped ones (ballooned) are holes, resent later.
        self.data_gfns.clear();
        let mapped: Vec<u64> = self.gfns.iter().flatten().copied().collect();
        let mut mapped_types = vec![libxc::PageType::XTAB; mapped.len()];
        if !mapped.is_empty() {
            self.dom.page_types(&mapped, &mut mapped_types)?;
        }
        self.types.clear();
        let mut mt = mapped_types.into_iter();
        for (i, g) in self.gfns.iter().enumerate() {
            let t = match g {
                Some(_) => mt.next().unwrap_or(libxc::PageType::XTAB),
                None => {
                    if let Some(&pfn) = self.pfns.get(i) {
                        self.deferred.set(pfn);
                    }
                    libxc::PageType::XTAB
                }
            };
            if !t.is_known() {
                return Err(SaveError::Invalid(format!(
                    "pfn {:#x}: the hypervisor reports unknown page type {t}",
                    self.pfns.get(i).copied().unwrap_or(0)
                )));
            }
            if t.has_data() {
                if let Some(g) = g {
                    self.data_gfns.push(*g);
                }
            }
            self.types.push(t);
        }
        if self.dom.lends_pages() {
            return self.send_batch_lent(suspended);
        }
        // The batch buffer keeps its size between batches: growing it zeroes once, not per
        // batch (read_pages overwrites what it hands out).
        let mut len = self.data_gfns.len() * PAGE_SIZE;
        if self.pages.len() < len {
            self.pages.resize(len, 0);
        }
        let streamable = self.data_gfns.len() > STREAM_CHUNK_PAGES
            && !self.dom.reads_whole_batches()
            && !self.types.iter().any(|&t| self.hooks.normalises(t));
        if streamable {
            return self.send_batch_streamed(len);
        }
        if !self.data_gfns.is_empty() {
            let buf = self.pages.get_mut(..len).unwrap_or_default();
            self.dom.read_pages(&self.data_gfns, buf)?;
        }
        let mut slots: Vec<Slot> = (0..self.data_gfns.len()).map(Slot::Copy).collect();
        self.build_entries(suspended, &mut slots)?;
        // Remove the pages of entries turned into holes.
        for (k, _) in slots
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, s)| **s == Slot::Hole)
        {
            let start = k * PAGE_SIZE;
            self.pages.copy_within(start + PAGE_SIZE..len, start);
            len -= PAGE_SIZE;
        }
        self.check_batch()?;
        self.w.libxc(&page_data(
            &self.entries,
            self.pages.get(..len).unwrap_or_default(),
        ))?;
        self.batches += 1;
        Ok(())
    }
}

/// A PAGE_DATA record of these entries and page octets.
fn page_data<'a>(entries: &'a [libxc::PageEntry], pages: &'a [u8]) -> libxc::Record<'a> {
    libxc::Record::PageData(libxc::PageData {
        reserved: 0,
        entries: Array::Values(entries),
        pages,
    })
}

/// Where a batch's data page is written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Where the domain lends it.
    Lent,
    /// Its (normalised) copy: slot `n` of the batch buffer.
    Copy(usize),
    /// Nowhere: the page became a hole.
    Hole,
}

/// The page data of a batch as slices to write: one data page per entry of `slots`, lent in
/// `lent` (cut anywhere) and taken from there, from `copies` or left out as its slot says.
/// Runs of lent pages that follow each other inside one lent slice stay one slice.
fn gather_pages<'a>(
    lent: &[&'a [u8]],
    slots: &[Slot],
    copies: &'a [u8],
) -> Result<Vec<&'a [u8]>, String> {
    let n = slots.len();
    let mut parts: Vec<&'a [u8]> = Vec::new();
    // The lent slice being consumed, and where the run not yet pushed starts in it.
    let mut pieces = lent.iter().copied();
    let mut piece: &'a [u8] = &[];
    let (mut at, mut run) = (0usize, 0usize);
    for &slot in slots {
        let lent_here = slot == Slot::Lent;
        let mut need = PAGE_SIZE;
        while need > 0 {
            if at == piece.len() {
                if run < at {
                    parts.push(piece.get(run..at).unwrap_or_default());
                }
                piece = pieces
                    .next()
                    .ok_or_else(|| format!("the domain lent fewer than {n} pages"))?;
                (at, run) = (0, 0);
                continue;
            }
            let take = need.min(piece.len() - at);
            if !lent_here && run < at {
                // A page written from elsewhere (or not at all) ends the run.
                parts.push(piece.get(run..at).unwrap_or_default());
            }
            at += take;
            if !lent_here {
                run = at;
            }
            need -= take;
        }
        if let Slot::Copy(c) = slot {
            parts.push(
                copies
                    .get(c * PAGE_SIZE..(c + 1) * PAGE_SIZE)
                    .ok_or("a normalised page is missing")?,
            );
        }
    }
    if run < at {
        parts.push(piece.get(run..at).unwrap_or_default());
    }
    if pieces.any(|p| !p.is_empty()) || at < piece.len() {
        return Err(format!("the domain lent more than {n} pages"));
    }
    Ok(parts)
}

/// What [`check_batch`] looks at.
struct BatchCheck<'a> {
    /// The batch's number (PAGE_DATA records written before it).
    batch: u64,
    /// Where its record would start in the stream.
    offset: u64,
    /// Its first and last pfn as the dirty bitmap handed them out.
    range: (u64, u64),
    /// One past the highest pfn the domain has (its max pfn + 1, and the p2m size).
    limit: u64,
    pfns: &'a [u64],
    types: &'a [libxc::PageType],
    entries: &'a [libxc::PageEntry],
}

/// The last look at a batch before its PAGE_DATA record is written: every entry's pfn is
/// below the domain's limit, above the one before it (batches are built from the dirty
/// bitmap, in order) and inside the batch's range, and is the pfn the batch was built from,
/// with the type the hypervisor reported (or XTAB for a page turned into a hole). Anything
/// else means the saver's own memory no longer holds what it wrote (seen on Xen under
/// emulation: heap words in a pfn array), and the save stops before the record leaves.
fn check_batch(c: &BatchCheck<'_>) -> Result<(), SaveError> {
    let fail = |i: usize, pfn: u64, why: String| {
        SaveError::Invalid(format!(
            "batch {} (the PAGE_DATA record at stream offset {:#x}), entry {i}: pfn {pfn:#x} \
             {why}; the record was not written",
            c.batch, c.offset
        ))
    };
    if c.entries.len() != c.pfns.len() || c.entries.len() != c.types.len() {
        return Err(fail(
            0,
            c.pfns.first().copied().unwrap_or(0),
            format!(
                "starts a batch of {} entries built from {} pfns and {} types",
                c.entries.len(),
                c.pfns.len(),
                c.types.len()
            ),
        ));
    }
    let (first, last) = c.range;
    let mut previous: Option<u64> = None;
    for (i, ((e, &pfn), &t)) in c.entries.iter().zip(c.pfns).zip(c.types).enumerate() {
        let got = e.pfn();
        if got >= c.limit {
            return Err(fail(
                i,
                got,
                format!(
                    "is beyond the domain's highest pfn {:#x}",
                    c.limit.saturating_sub(1)
                ),
            ));
        }
        if let Some(p) = previous.filter(|&p| got <= p) {
            return Err(fail(
                i,
                got,
                format!("does not follow pfn {p:#x}: a batch's pfns ascend"),
            ));
        }
        if got < first || got > last {
            return Err(fail(
                i,
                got,
                format!("lies outside the batch's range {first:#x}-{last:#x}"),
            ));
        }
        if got != pfn {
            return Err(fail(
                i,
                got,
                format!("differs from the pfn {pfn:#x} the batch was built from"),
            ));
        }
        let ty = e.page_type();
        if ty != t && ty != libxc::PageType::XTAB {
            return Err(fail(
                i,
                got,
                format!("carries type {ty}, the hypervisor reported {t}"),
            ));
        }
        previous = Some(got);
    }
    Ok(())
}

/// Pages read and written at a time when a batch streams (see
/// [`StreamWriter::libxc_streamed`]): 1 MiB, which stays in cache between the read and the
/// write's copy, where a whole 4 MiB batch does not.
const STREAM_CHUNK_PAGES: usize = 256;

/// The stop-and-copy time for `dirty` pages at the rate the last pass achieved.
fn predict(dirty: u64, pages: u64, time: Duration) -> Option<Duration> {
    if pages == 0 {
        return None;
    }
    Some(time.mul_f64(dirty as f64 / pages as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pfns: &[u64], t: libxc::PageType) -> Vec<libxc::PageEntry> {
        pfns.iter()
            .map(|&p| libxc::PageEntry::default().with_pfn(p).with_page_type(t))
            .collect()
    }

    fn check(pfns: &[u64], built_from: &[u64], range: (u64, u64)) -> Result<(), SaveError> {
        let types = vec![libxc::PageType::XTAB; built_from.len()];
        check_batch(&BatchCheck {
            batch: 213,
            offset: 0x81a26a9,
            range,
            limit: 0xff000,
            pfns: built_from,
            types: &types,
            entries: &entries(pfns, libxc::PageType::XTAB),
        })
    }

    #[test]
    fn lent_pages_are_gathered_around_the_copies() {
        use Slot::{Copy, Hole, Lent};
        let a: Vec<u8> = (0..3 * PAGE_SIZE)
            .map(|i| (i / PAGE_SIZE) as u8 + 1)
            .collect();
        let b: Vec<u8> = vec![9; PAGE_SIZE / 2];
        let c: Vec<u8> = vec![8; PAGE_SIZE / 2];
        let copies: Vec<u8> = (0..2 * PAGE_SIZE)
            .map(|i| 100 + (i / PAGE_SIZE) as u8)
            .collect();
        let lent: [&[u8]; 3] = [&a, &b, &c];
        let flat = |parts: &[&[u8]]| parts.concat();
        // Nothing copied: one slice per lent slice.
        let parts = gather_pages(&lent, &[Lent; 4], &copies).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(flat(&parts), [&a[..], &b, &c].concat());
        // Page 1 from its copy, page 3 (split over two lent slices) left out.
        let parts = gather_pages(&lent, &[Lent, Copy(1), Lent, Hole], &copies).unwrap();
        let want = [&a[..PAGE_SIZE], &copies[PAGE_SIZE..], &a[2 * PAGE_SIZE..]].concat();
        assert_eq!(flat(&parts), want);
        assert_eq!(parts.len(), 3, "runs inside one lent slice stay whole");
        // The first page copied, the last from two slices.
        let parts = gather_pages(&lent, &[Copy(0), Lent, Lent, Lent], &copies).unwrap();
        assert_eq!(
            flat(&parts),
            [&copies[..PAGE_SIZE], &a[PAGE_SIZE..], &b, &c].concat()
        );
        // Too few or too many lent octets.
        assert!(gather_pages(&lent, &[Lent; 5], &copies)
            .unwrap_err()
            .contains("fewer than 5"));
        assert!(gather_pages(&lent, &[Lent; 3], &copies)
            .unwrap_err()
            .contains("more than 3"));
    }

    #[test]
    fn a_batch_as_built_passes() {
        let pfns: Vec<u64> = (0x34400..0x34800).collect();
        check(&pfns, &pfns, (0x34400, 0x347ff)).unwrap();
    }

    #[test]
    fn heap_words_in_a_pfn_array_stop_the_batch() {
        // Record #213 of the captured Remus stream: its first two pfns were heap words.
        let good: Vec<u64> = (0x34400..0x34800).collect();
        let mut seen = good.clone();
        seen[0] = 0x5e2343;
        seen[1] = 0x5e2343;
        // Whether the array the entries came from or only the entries changed.
        for built_from in [&seen, &good] {
            let e = check(&seen, built_from, (0x34400, 0x347ff))
                .unwrap_err()
                .to_string();
            assert!(e.contains("batch 213"), "{e}");
            assert!(e.contains("entry 0: pfn 0x5e2343"), "{e}");
            assert!(e.contains("0x81a26a9"), "{e}");
        }
        // A user-space pointer far beyond the domain (record #396).
        let mut far = good.clone();
        far[1000] = 0x7f6b87555010 & ((1 << 52) - 1);
        let e = check(&far, &far, (0x34400, 0x347ff))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("entry 1000") && e.contains("highest pfn 0xfefff"),
            "{e}"
        );
        // Stale pfns of an earlier batch, valid but outside this one.
        let mut stale = good.clone();
        stale[0x3f0] = 0x34ff0;
        let e = check(&stale, &stale, (0x34400, 0x347ff))
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 1008"), "{e}");
        // Zeros: not ascending.
        let mut zeros = good.clone();
        zeros[2] = 0;
        let e = check(&zeros, &zeros, (0, 0x347ff)).unwrap_err().to_string();
        assert!(e.contains("entry 2: pfn 0x0 does not follow"), "{e}");
    }

    #[test]
    fn entries_must_match_their_types() {
        let pfns = [0x10, 0x11];
        let types = [libxc::PageType::NOTAB, libxc::PageType::NOTAB];
        let mut e = entries(&pfns, libxc::PageType::NOTAB);
        e[1] = e[1].with_page_type(libxc::PageType::L1TAB);
        let err = check_batch(&BatchCheck {
            batch: 0,
            offset: 0,
            range: (0x10, 0x11),
            limit: 0x100,
            pfns: &pfns,
            types: &types,
            entries: &e,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("entry 1") && err.contains("carries type"),
            "{err}"
        );
    }
}
