//! The libxl stream layer (format-reference §5) around the save and restore drivers.
//!
//! **Save** ([`save_libxl`], [`save_xl`]): the libxl header (options 0), LIBXC_CONTEXT, the
//! libxc image written by [`crate::save::save`] into the same output, then for HVM guests
//! EMULATOR_XENSTORE_DATA (only when the device model has keys) and EMULATOR_CONTEXT
//! (QEMU upstream, index 0), then END; PV guests get END only. In a checkpointed (Remus or
//! COLO) save, every libxc CHECKPOINT is followed by the emulator records of that checkpoint
//! and CHECKPOINT_END, written from the driver's checkpoint callback. The device model's state
//! is saved at each suspend and resumed with the guest, as libxl does.
//!
//! **Restore** ([`restore_stream`], [`restore_from_read`]): the xl header (if any), the libxl
//! header, LIBXC_CONTEXT's image handed to [`crate::restore::restore_new`], the libxl records
//! applied in the NORMAL / BUFFERING / UNBUFFERING phases (a checkpoint's emulator records
//! apply only when the checkpoint commits; an incomplete one's are dropped on failover), then
//! after the libxc END the remaining libxl records up to END. A checkpointed stream that
//! breaks fails over to its last complete checkpoint and the restore succeeds. A bare libxc
//! image (what libxc's save writes on its own fd, libxl's records being libxl's business)
//! restores too: there each CHECKPOINT closes its checkpoint by itself, with no
//! CHECKPOINT_END to wait for. Every item is checked by the verifier as it is read
//! ([`crate::verify::check_as_read`]): what `verify` refuses is refused here, by its rule.
//!
//! **COLO** (HVM guests only, as in libxl): the primary's save answers the secondary's
//! messages on the back channel and announces each next checkpoint with CHECKPOINT_STATE NEW
//! on the forward stream. The secondary's restore ([`restore_stream`] with a back channel)
//! reads the forward stream as COLO, and after each checkpoint sends READY, resumes the guest
//! and its device model, sends RESUMED, takes the primary's NEW, suspends both, sends
//! SUSPENDED, and the driver sends the dirty pfn list. The building blocks:
//! [`write_checkpoint_state`], [`read_checkpoint_state`] and the primary's and secondary's
//! sequences ([`ColoPrimary`], [`ColoSecondary`], [`colo_primary_round`],
//! [`colo_secondary_round`]).
//!
//! Everything works over any `Read`/`Write` (files, pipes, sockets).

use crate::dm::{DmState, HasDeviceModel, XenstorePairs};
use crate::domain::{BackendError, CheckpointAnswer, GuestType, RestoreCallbacks, SaveCallbacks};
use crate::domain::{PrecopyDecision, PrecopyStats, ToolstackError};
use crate::error::{ErrorKind, Layer, StreamError};
use crate::reader::{Framing, Item, RawRecord, Reader, ReaderOptions};
use crate::restore::{restore_new_with_back_channel, RestoreError, RestoreOptions, RestoreResult};
use crate::save::{save, SaveError, SaveOptions, SaveStats, StreamType};
use crate::source::{ReadSource, Source};
use crate::wire::{CStrings, DecodeCtx, Strictness};
use crate::writer::{StreamWriter, WriteError};
use crate::xlfile::{self, XlError, XlFileInfo};
use crate::{libxc, libxl, limits};
use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};

// ---------------------------------------------------------------------------------------------
// Save

/// Figures for a libxl-framed save.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LibxlSaveStats {
    /// The libxc driver's figures (its `bytes` are the libxc image's).
    pub libxc: SaveStats,
    /// Octets of the whole output (xl header, libxl framing and the libxc image).
    pub bytes: u64,
    /// libxl records written (LIBXC_CONTEXT and END included).
    pub libxl_records: u64,
    /// CHECKPOINT_END records written.
    pub checkpoints: u32,
    /// EMULATOR_XENSTORE_DATA and EMULATOR_CONTEXT records written.
    pub emulator_records: u64,
}

/// Why a libxl-framed save failed.
#[derive(Debug, thiserror::Error)]
pub enum LibxlSaveError {
    /// The libxc save failed.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// Writing a libxl record failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The device model failed: saving its state, resuming it, or state it gave that cannot be
    /// sent.
    #[error("device model: {0}")]
    DeviceModel(BackendError),
    /// The domain refused an operation.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The COLO exchange failed.
    #[error("COLO: {0}")]
    Colo(#[from] ColoError),
    /// Writing the xl header failed.
    #[error(transparent)]
    Xl(#[from] XlError),
    /// The save was asked for something it cannot do.
    #[error("{0}")]
    Invalid(String),
}

/// One output shared by the libxc driver and the libxl layer: the driver writes its records
/// through one handle, the layer its own through another, in stream order.
struct SharedOut<'c, W>(&'c RefCell<W>);

impl<W: Write> SharedOut<'_, W> {
    fn with<T>(&mut self, f: impl FnOnce(&mut W) -> io::Result<T>) -> io::Result<T> {
        let mut w = self
            .0
            .try_borrow_mut()
            .map_err(|_| io::Error::other("the shared stream output is already in use"))?;
        f(&mut w)
    }
}

impl<W: Write> Write for SharedOut<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|w| w.write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.with(|w| w.write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.with(|w| w.flush())
    }
}

/// The COLO back channel, shared by the libxc driver (DIRTY_PFN_LIST) and the libxl layer
/// (CHECKPOINT_STATE).
struct SharedIn<'c, 'b>(&'c RefCell<&'b mut dyn Read>);

impl Read for SharedIn<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut r = self
            .0
            .try_borrow_mut()
            .map_err(|_| io::Error::other("the back channel is already in use"))?;
        r.read(buf)
    }
}

/// The save callbacks libxl puts between the toolstack's and the driver's.
struct SaveLayer<'a, 'c, 'b, C, W> {
    inner: &'a mut C,
    lw: StreamWriter<SharedOut<'c, W>>,
    back: Option<&'c RefCell<&'b mut dyn Read>>,
    stream_type: StreamType,
    /// HVM with a device model: emulator records are written.
    emulated: bool,
    emulator_id: libxl::EmulatorId,
    /// The device model's state at the latest suspend.
    pending: Option<DmState>,
    colo: ColoPrimary,
    error: Option<LibxlSaveError>,
    checkpoints: u32,
    emulator_records: u64,
}

impl<C, W: Write> SaveLayer<'_, '_, '_, C, W> {
    /// EMULATOR_XENSTORE_DATA (when there are keys) and EMULATOR_CONTEXT of the state saved
    /// at the latest suspend.
    fn write_emulator_records(&mut self) -> Result<(), LibxlSaveError> {
        if !self.emulated {
            return Ok(());
        }
        let state = self.pending.as_ref().ok_or_else(|| {
            LibxlSaveError::Invalid("the device model's state was not saved at the suspend".into())
        })?;
        if !state.xenstore.is_empty() {
            for (k, v) in &state.xenstore {
                if k.is_empty() || k.first() == Some(&b'/') || k.contains(&0) || v.contains(&0) {
                    return Err(LibxlSaveError::DeviceModel(BackendError::new(
                        "read device-model xenstore keys",
                        format!(
                            "key \"{}\" (value \"{}\") is not a relative NUL-free key with a NUL-free value",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        ),
                    )));
                }
            }
            let entries = CStrings::encode_pairs(
                state
                    .xenstore
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice())),
            );
            self.lw.libxl(&libxl::Record::EmulatorXenstoreData(
                libxl::EmulatorXenstoreData {
                    emulator_id: self.emulator_id,
                    index: 0,
                    entries: CStrings::from_bytes(&entries),
                },
            ))?;
            self.emulator_records += 1;
        }
        self.lw
            .libxl(&libxl::Record::EmulatorContext(libxl::EmulatorContext {
                emulator_id: self.emulator_id,
                index: 0,
                context: &state.context,
            }))?;
        self.emulator_records += 1;
        Ok(())
    }

    /// The libxl part of a checkpoint: emulator records, CHECKPOINT_END.
    fn write_checkpoint(&mut self) -> Result<(), LibxlSaveError> {
        self.write_emulator_records()?;
        self.lw
            .libxl(&libxl::Record::CheckpointEnd(libxl::CheckpointEnd {}))?;
        self.lw.flush()?;
        self.checkpoints += 1;
        Ok(())
    }

    /// Runs one step of the COLO exchange on the back channel.
    fn colo_step(
        &mut self,
        f: impl FnOnce(&mut ColoPrimary, &mut dyn Read) -> Result<(), ColoError>,
    ) -> Result<(), LibxlSaveError> {
        let cell = self.back.ok_or_else(|| {
            LibxlSaveError::Invalid("a COLO save needs the secondary's back channel".into())
        })?;
        let mut b = SharedIn(cell);
        f(&mut self.colo, &mut b)?;
        Ok(())
    }

    fn fail<T>(&mut self, e: LibxlSaveError, v: T) -> T {
        if self.error.is_none() {
            self.error = Some(e);
        }
        v
    }
}

impl<D, C, W> SaveCallbacks<D> for SaveLayer<'_, '_, '_, C, W>
where
    D: HasDeviceModel,
    C: SaveCallbacks<D>,
    W: Write,
{
    fn suspend(&mut self, dom: &mut D) -> bool {
        if !self.inner.suspend(dom) {
            return false;
        }
        if self.emulated {
            if let Some(dm) = dom.device_model() {
                match dm.save() {
                    Ok(s) => self.pending = Some(s),
                    Err(e) => return self.fail(LibxlSaveError::DeviceModel(e), false),
                }
            }
        }
        if self.stream_type == StreamType::Colo {
            let r = self.colo_step(|c, b| c.suspended(b));
            if let Err(e) = r {
                return self.fail(e, false);
            }
        }
        true
    }

    fn postcopy(&mut self, dom: &mut D) -> i32 {
        let r = self.inner.postcopy(dom);
        if r <= 0 {
            return r;
        }
        if self.emulated {
            if let Some(dm) = dom.device_model() {
                if let Err(e) = dm.resume() {
                    return self.fail(LibxlSaveError::DeviceModel(e), 0);
                }
            }
        }
        if self.stream_type == StreamType::Colo {
            let r = self.colo_step(|c, b| c.resumed(b));
            if let Err(e) = r {
                return self.fail(e, 0);
            }
        }
        r
    }

    fn checkpoint(&mut self, dom: &mut D) -> i32 {
        if let Err(e) = self.write_checkpoint() {
            return self.fail(e, 0);
        }
        if self.stream_type == StreamType::Colo {
            let r = self.colo_step(|c, b| c.checkpoint_sent(b));
            return match r {
                Ok(()) => 1,
                Err(e) => self.fail(e, 0),
            };
        }
        self.inner.checkpoint(dom)
    }

    fn wait_checkpoint(&mut self, dom: &mut D) -> i32 {
        let r = self.inner.wait_checkpoint(dom);
        if r > 0 && self.stream_type == StreamType::Colo {
            let sent = self.colo.new_step().and_then(|()| {
                self.lw
                    .libxl(&libxl::Record::CheckpointState(libxl::CheckpointState {
                        control_id: libxl::CheckpointStateId::NEW,
                        padding: 0,
                    }))?;
                self.lw.flush()?;
                Ok(())
            });
            if let Err(e) = sent {
                return self.fail(e.into(), 0);
            }
        }
        r
    }

    fn precopy_policy(&mut self, stats: PrecopyStats) -> Option<PrecopyDecision> {
        self.inner.precopy_policy(stats)
    }

    fn switch_qemu_logdirty(&mut self, enable: bool) -> i32 {
        self.inner.switch_qemu_logdirty(enable)
    }

    fn progress(&mut self, what: &str, done: u64, total: u64) {
        self.inner.progress(what, done, total)
    }
}

/// Saves `dom` as a libxl stream into `out` (format-reference §5 "Writer"). `back_channel`
/// is the COLO secondary's stream (CHECKPOINT_STATE messages and dirty pfn lists).
///
/// A checkpointed save ends without END when the callbacks stop checkpointing: the
/// secondary then fails over. Remus: the toolstack's `postcopy` resumes the guest (the layer
/// then resumes the device model) and its `checkpoint` says whether to go on, after the layer
/// wrote the checkpoint's libxl records. COLO: the layer answers `checkpoint` itself (libxl
/// records, then the secondary's READY); `postcopy` is followed by RESUMED, and the
/// toolstack's `wait_checkpoint` decides on the next checkpoint, announced with NEW.
pub fn save_libxl<D, C, W>(
    dom: &mut D,
    cb: &mut C,
    out: W,
    opts: SaveOptions,
    back_channel: Option<&mut dyn Read>,
) -> Result<(LibxlSaveStats, W), LibxlSaveError>
where
    D: HasDeviceModel + 'static,
    C: SaveCallbacks<D>,
    W: Write,
{
    let info = dom.info()?;
    let hvm = info.guest == GuestType::X86Hvm;
    if opts.stream_type == StreamType::Colo && !hvm {
        return Err(LibxlSaveError::Invalid(COLO_HVM_ONLY.into()));
    }
    let emulator_id = match dom.device_model() {
        Some(dm) if hvm => Some(dm.emulator_id()),
        _ => None,
    };
    let cell = RefCell::new(out);
    let back = back_channel.map(RefCell::new);
    let stats = {
        let mut lw = StreamWriter::new(SharedOut(&cell));
        lw.libxl_header(&libxl::LibxlHeader {
            ident: libxl::LIBXL_IDENT,
            version: libxl::VERSION_WRITTEN,
            options: libxl::LibxlOptions(0),
        })?;
        lw.libxl(&libxl::Record::LibxcContext(libxl::LibxcContext {}))?;
        lw.flush()?;
        let mut layer = SaveLayer {
            inner: cb,
            lw,
            back: back.as_ref(),
            stream_type: opts.stream_type,
            emulated: emulator_id.is_some(),
            emulator_id: emulator_id.unwrap_or(libxl::EmulatorId::QEMU_UPSTREAM),
            pending: None,
            colo: ColoPrimary::new(),
            error: None,
            checkpoints: 0,
            emulator_records: 0,
        };
        let mut bc = back.as_ref().map(SharedIn);
        let r = save(
            dom,
            &mut layer,
            SharedOut(&cell),
            opts,
            bc.as_mut().map(|b| b as &mut dyn Read),
        );
        let libxc = match r {
            Ok((s, _)) => s,
            Err(e) => return Err(layer.error.take().unwrap_or(e.into())),
        };
        if let Some(e) = layer.error.take() {
            return Err(e);
        }
        if opts.stream_type == StreamType::Plain {
            layer.write_emulator_records()?;
            layer.lw.libxl(&libxl::Record::End(libxl::End {}))?;
        }
        layer.lw.flush()?;
        LibxlSaveStats {
            bytes: layer.lw.offset() + libxc.bytes,
            libxc,
            libxl_records: layer.lw.records(),
            checkpoints: layer.checkpoints,
            emulator_records: layer.emulator_records,
        }
    };
    Ok((stats, cell.into_inner()))
}

/// Saves `dom` as an xl save file: the xl header with `config_json` (written with its NUL,
/// flags JSON and STREAMv2), then the libxl stream of [`save_libxl`].
pub fn save_xl<D, C, W>(
    dom: &mut D,
    cb: &mut C,
    mut out: W,
    opts: SaveOptions,
    config_json: Option<&[u8]>,
    back_channel: Option<&mut dyn Read>,
) -> Result<(LibxlSaveStats, W), LibxlSaveError>
where
    D: HasDeviceModel + 'static,
    C: SaveCallbacks<D>,
    W: Write,
{
    let n = xlfile::write_header(&mut out, config_json)?;
    let (mut stats, out) = save_libxl(dom, cb, out, opts, back_channel)?;
    stats.bytes += n;
    Ok((stats, out))
}

// ---------------------------------------------------------------------------------------------
// Restore

/// What the destination is created from: the libxc domain header, and the xl config when the
/// stream came in an xl save file.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// PV or HVM, from the domain header.
    pub guest: GuestType,
    /// The libxc domain header.
    pub header: &'a libxc::DomainHeader,
    /// The stream's outermost framing.
    pub framing: Framing,
    /// The xl file's domain config (JSON without its NUL), if any.
    pub config: Option<&'a [u8]>,
}

/// What a libxl-level restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LibxlRestoreResult {
    /// The framing read.
    pub framing: Option<Framing>,
    /// The xl header, for xl save files.
    pub xl: Option<XlFileInfo>,
    /// The libxl header's LEGACY option (the stream came from the legacy converter).
    pub legacy: bool,
    /// The libxc driver's result.
    pub libxc: RestoreResult,
    /// libxl records read (LIBXC_CONTEXT and END included).
    pub libxl_records: u64,
    /// Checkpoints committed at the libxl level (their emulator records applied).
    pub checkpoints: u32,
    /// Emulator records applied to the device model.
    pub emulator_records: u64,
    /// The stream broke inside a checkpoint: the last complete one was restored.
    pub failed_over: bool,
    /// The libxl END was read.
    pub end: bool,
}

/// Why a libxl-level restore failed (the large parts boxed, to keep results small).
#[derive(Debug, thiserror::Error)]
pub enum LibxlRestoreError {
    /// The libxc image was refused (or its restore failed), or a record the reader refused
    /// while the libxc driver was reading (a checkpoint's libxl records).
    /// [`LibxlRestoreError::stream_error`] gives the rule and offset either way.
    #[error(transparent)]
    Restore(Box<RestoreError>),
    /// A libxl-level rule was broken: where, which record, which rule.
    #[error("{0}")]
    Stream(Box<StreamError>),
    /// The xl header was refused, or the body needs legacy conversion.
    #[error(transparent)]
    Xl(Box<XlError>),
    /// The device model refused an emulator record.
    #[error("device model: {context}: {source}")]
    DeviceModel {
        /// What was being applied.
        context: String,
        /// The device model's error.
        source: BackendError,
    },
    /// A COLO secondary's exchange with the primary went wrong (not a broken link, which
    /// fails over).
    #[error("COLO: {0}")]
    Colo(Box<ColoError>),
}

impl LibxlRestoreError {
    /// The rule broken at an offset behind this error, whichever layer refused the stream
    /// (a checkpoint's libxl records are read, and refused, while the libxc driver reads).
    pub fn stream_error(&self) -> Option<&StreamError> {
        match self {
            LibxlRestoreError::Stream(e) => Some(e),
            LibxlRestoreError::Restore(r) => match r.as_ref() {
                RestoreError::Stream(e) => Some(e),
                RestoreError::Backend { .. } => None,
            },
            LibxlRestoreError::Xl(x) => match x.as_ref() {
                XlError::Stream(e) => Some(e),
                _ => None,
            },
            LibxlRestoreError::DeviceModel { .. } | LibxlRestoreError::Colo(_) => None,
        }
    }
}

impl From<ColoError> for LibxlRestoreError {
    fn from(e: ColoError) -> Self {
        LibxlRestoreError::Colo(Box::new(e))
    }
}

impl From<RestoreError> for LibxlRestoreError {
    fn from(e: RestoreError) -> Self {
        LibxlRestoreError::Restore(Box::new(e))
    }
}

impl From<StreamError> for LibxlRestoreError {
    fn from(e: StreamError) -> Self {
        LibxlRestoreError::Stream(Box::new(e))
    }
}

impl From<XlError> for LibxlRestoreError {
    fn from(e: XlError) -> Self {
        LibxlRestoreError::Xl(Box::new(e))
    }
}

/// An emulator record, owned (kept until its checkpoint commits).
#[derive(Debug, Clone)]
enum EmulatorRecord {
    Xenstore(XenstorePairs),
    Context(Vec<u8>),
}

/// A libxl record checked against the reader rules of §5.
enum Checked {
    Emulator(EmulatorRecord),
    LibxcContext,
    End,
    CheckpointEnd,
    CheckpointState(libxl::CheckpointStateId),
}

/// Decodes a libxl record and applies libxl's reader rules: no unknown types (whatever bit
/// 31 says), emulator records only for HVM guests (when the guest is known), at least 8
/// octets, xenstore keys non-empty and relative.
fn check_record(rec: &RawRecord<'_>, guest: Option<GuestType>) -> Result<Checked, StreamError> {
    let lenient = RawRecord {
        ctx: rec.ctx.with_strictness(Strictness::Lenient),
        ..*rec
    };
    let decoded = lenient.libxl()?;
    let hvm_only = |name: &str| -> Result<(), StreamError> {
        match guest {
            Some(GuestType::X86Hvm) | None => Ok(()),
            Some(g) => Err(rec.error(StreamError::invalid(
                rec.offset,
                "guests",
                format!("{name} is only valid for HVM guests, this stream's guest is {g:?}"),
            ))),
        }
    };
    Ok(match decoded {
        libxl::Record::End(_) => Checked::End,
        libxl::Record::LibxcContext(_) => Checked::LibxcContext,
        libxl::Record::CheckpointEnd(_) => Checked::CheckpointEnd,
        libxl::Record::CheckpointState(s) => Checked::CheckpointState(s.control_id),
        libxl::Record::EmulatorXenstoreData(x) => {
            hvm_only("EMULATOR_XENSTORE_DATA")?;
            let mut pairs = Vec::new();
            for (i, (k, v)) in x.entries.pairs().enumerate() {
                if k.is_empty() || k.first() == Some(&b'/') {
                    return Err(rec.error(StreamError::invalid(
                        rec.offset,
                        "entries.key",
                        format!(
                            "key {i} (\"{}\") must be non-empty and relative to the device model's directory (not start with '/')",
                            String::from_utf8_lossy(k)
                        ),
                    )));
                }
                let Some(v) = v else {
                    return Err(rec.error(StreamError::invalid(
                        rec.offset,
                        "entries.pairs",
                        format!("key \"{}\" has no value", String::from_utf8_lossy(k)),
                    )));
                };
                pairs.push((k.to_vec(), v.to_vec()));
            }
            Checked::Emulator(EmulatorRecord::Xenstore(pairs))
        }
        libxl::Record::EmulatorContext(c) => {
            hvm_only("EMULATOR_CONTEXT")?;
            Checked::Emulator(EmulatorRecord::Context(c.context.to_vec()))
        }
        libxl::Record::Unknown { record_type, .. } => {
            return Err(rec.error(StreamError::invalid(
                rec.offset,
                "unknown_record",
                format!(
                    "libxl record type {record_type:#x} is unknown (libxl has no optional records)"
                ),
            )))
        }
    })
}

/// Hands an emulator record to the destination's device model.
fn apply<D: HasDeviceModel>(dom: &mut D, rec: &EmulatorRecord) -> Result<(), LibxlRestoreError> {
    let what = match rec {
        EmulatorRecord::Xenstore(_) => "EMULATOR_XENSTORE_DATA",
        EmulatorRecord::Context(_) => "EMULATOR_CONTEXT",
    };
    let Some(dm) = dom.device_model() else {
        return Err(LibxlRestoreError::DeviceModel {
            context: format!("apply {what}"),
            source: BackendError::new(
                "device model",
                "the stream carries emulator state but the destination has no device model",
            ),
        });
    };
    let r = match rec {
        EmulatorRecord::Xenstore(pairs) => dm.restore_xenstore(pairs),
        EmulatorRecord::Context(blob) => dm.restore_context(blob),
    };
    r.map_err(|source| LibxlRestoreError::DeviceModel {
        context: format!("apply {what}"),
        source,
    })
}

/// libxl's reader phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Records are processed as they come.
    Normal,
    /// Inside a checkpoint: records are queued until CHECKPOINT_END.
    Buffering,
    /// The checkpoint committed: the queue is processed.
    Unbuffering,
}

/// The COLO back channel on the restore side, shared by the libxl layer (CHECKPOINT_STATE)
/// and the libxc driver (CHECKPOINT_DIRTY_PFN_LIST).
type BackChannel<'c, 'b> = &'c RefCell<&'b mut dyn Write>;

/// The restore callbacks libxl puts between the toolstack's and the driver's.
struct RestoreLayer<'a, 'c, 'b, C> {
    inner: &'a mut C,
    /// The libxc image sits in libxl framing, whose CHECKPOINT_END closes each checkpoint.
    /// A bare libxc image (what libxc's save writes on its own fd) has none: each CHECKPOINT
    /// is the epoch boundary by itself.
    libxl_framed: bool,
    phase: Phase,
    queue: Vec<EmulatorRecord>,
    checkpoint_end: bool,
    error: Option<LibxlRestoreError>,
    libxl_records: u64,
    checkpoints: u32,
    emulator_records: u64,
    stream_type: StreamType,
    /// COLO: the secondary's side of the exchange, and where its messages go.
    colo: ColoSecondary,
    back: Option<BackChannel<'c, 'b>>,
}

impl<'a, 'c, 'b, C> RestoreLayer<'a, 'c, 'b, C> {
    fn new(
        inner: &'a mut C,
        stream_type: StreamType,
        back: Option<BackChannel<'c, 'b>>,
        libxl_framed: bool,
    ) -> Self {
        RestoreLayer {
            inner,
            libxl_framed,
            phase: Phase::Normal,
            queue: Vec::new(),
            checkpoint_end: false,
            error: None,
            libxl_records: 0,
            checkpoints: 0,
            emulator_records: 0,
            stream_type,
            colo: ColoSecondary::new(),
            back,
        }
    }

    /// Keeps the first error with its detail; the driver only carries a message.
    fn fail(&mut self, e: LibxlRestoreError) -> ToolstackError {
        let msg = ToolstackError::Other(e.to_string());
        if self.error.is_none() {
            self.error = Some(e);
        }
        msg
    }

    /// Sends one of the secondary's messages: 1 sent, 2 the link broke (failover), 0 a
    /// failure kept in `error`.
    fn colo_send(
        &mut self,
        f: impl FnOnce(&mut ColoSecondary, &mut dyn Write) -> Result<(), ColoError>,
    ) -> i32 {
        let Some(cell) = self.back else {
            self.fail(
                ColoError::Sequence(
                    "a COLO secondary needs the back channel to the primary".into(),
                )
                .into(),
            );
            return 0;
        };
        let mut out = SharedOut(cell);
        match f(&mut self.colo, &mut out) {
            Ok(()) => 1,
            Err(e) if e.broken_link() => 2,
            Err(e) => {
                self.fail(e.into());
                0
            }
        }
    }
}

impl<D, C> RestoreCallbacks<D> for RestoreLayer<'_, '_, '_, C>
where
    D: HasDeviceModel,
    C: RestoreCallbacks<D>,
{
    fn restore_results(&mut self, dom: &mut D, store_gfn: u64, console_gfn: u64) {
        self.inner.restore_results(dom, store_gfn, console_gfn)
    }

    /// COLO: READY, the guest and its device model resume, RESUMED.
    fn postcopy(&mut self, dom: &mut D) -> i32 {
        if self.stream_type != StreamType::Colo {
            return self.inner.postcopy(dom);
        }
        let r = self.colo_send(|c, b| c.checkpoint_applied(b));
        if r != 1 {
            return r;
        }
        let r = self.inner.postcopy(dom);
        if r != 1 {
            return r;
        }
        if let Some(dm) = dom.device_model() {
            if let Err(source) = dm.resume() {
                self.fail(LibxlRestoreError::DeviceModel {
                    context: "resume the secondary's device model".into(),
                    source,
                });
                return 0;
            }
        }
        self.colo_send(|c, b| c.resumed(b))
    }

    fn wait_checkpoint(&mut self, dom: &mut D) -> i32 {
        self.inner.wait_checkpoint(dom)
    }

    /// COLO: the guest and its device model stop, SUSPENDED.
    fn suspend(&mut self, dom: &mut D) -> i32 {
        let r = self.inner.suspend(dom);
        if r != 1 || self.stream_type != StreamType::Colo {
            return r;
        }
        if let Some(dm) = dom.device_model() {
            // Its state is not wanted: the next checkpoint brings the primary's.
            if let Err(source) = dm.save() {
                self.fail(LibxlRestoreError::DeviceModel {
                    context: "suspend the secondary's device model".into(),
                    source,
                });
                return 0;
            }
        }
        self.colo_send(|c, b| c.suspended(b))
    }

    fn static_data_done(&mut self, dom: &mut D, missing: u32) -> i32 {
        self.inner.static_data_done(dom, missing)
    }

    fn checkpoint(&mut self, dom: &mut D) -> CheckpointAnswer {
        let answer = self.inner.checkpoint(dom);
        if answer != CheckpointAnswer::Success {
            self.queue.clear();
            return answer;
        }
        if self.libxl_framed && !self.checkpoint_end {
            let e = StreamError::invalid(
                0,
                "checkpoint_end.missing",
                "a libxc CHECKPOINT was answered without its libxl CHECKPOINT_END",
            );
            self.fail(e.into());
            return CheckpointAnswer::Error;
        }
        self.phase = Phase::Unbuffering;
        for rec in std::mem::take(&mut self.queue) {
            if let Err(e) = apply(dom, &rec) {
                self.fail(e);
                return CheckpointAnswer::Error;
            }
            self.emulator_records += 1;
        }
        self.phase = Phase::Normal;
        self.checkpoint_end = false;
        self.checkpoints += 1;
        CheckpointAnswer::Success
    }

    fn libxl_record(&mut self, dom: &mut D, rec: &RawRecord<'_>) -> Result<(), ToolstackError> {
        self.libxl_records += 1;
        let guest = dom.info().ok().map(|i| i.guest);
        let checked = check_record(rec, guest).map_err(|e| self.fail(e.into()))?;
        if let Checked::CheckpointState(id) = checked {
            if self.stream_type == StreamType::Colo && self.phase == Phase::Normal {
                // The primary's NEW, between two checkpoints.
                if let Err(e) = self.colo.new_received(id) {
                    let (rule, detail) = match e {
                        ColoError::Unexpected { .. } => ("checkpoint_state.id", e.to_string()),
                        other => ("checkpoint_state.unexpected", other.to_string()),
                    };
                    let e = rec.error(StreamError::invalid(rec.offset, rule, detail));
                    return Err(self.fail(e.into()));
                }
                return self.inner.libxl_record(dom, rec);
            }
        }
        // Otherwise the driver hands over libxl records only inside a checkpoint.
        if self.phase == Phase::Normal {
            self.phase = Phase::Buffering;
        }
        let misplaced = |what: &str| {
            rec.error(StreamError::invalid(
                rec.offset,
                "checkpoint.libxl",
                format!("{what} inside a checkpoint (between a libxc CHECKPOINT and its CHECKPOINT_END)"),
            ))
        };
        match checked {
            Checked::Emulator(e) => self.queue.push(e),
            Checked::CheckpointEnd => self.checkpoint_end = true,
            Checked::End => return Err(self.fail(misplaced("the libxl END").into())),
            Checked::LibxcContext => return Err(self.fail(misplaced("LIBXC_CONTEXT").into())),
            Checked::CheckpointState(id) => {
                let e = rec.error(StreamError::invalid(
                    rec.offset,
                    "checkpoint_state.unexpected",
                    format!("CHECKPOINT_STATE {id} arrived while none was awaited"),
                ));
                return Err(self.fail(e.into()));
            }
        }
        self.inner.libxl_record(dom, rec)
    }
}

/// Restores whatever `reader` yields from its start: an xl save file, a libxl stream or a
/// bare libxc image (format-reference §5 "Reader"). `make` creates the destination once the
/// libxc domain header names the guest type. Emulator records reach the destination's
/// device model ([`HasDeviceModel`]).
///
/// The reader is left just after the libxl END (or the libxc END of a bare image), so a
/// migration protocol can continue on the same input. Lenient reader options match Xen.
///
/// A COLO secondary (`opts.stream_type` COLO) needs `back_channel`, the stream to the
/// primary: its CHECKPOINT_STATE messages and dirty pfn lists go there, and the reader is
/// switched to COLO forward streams ([`Reader::colo`]). It runs the guest between
/// checkpoints through the toolstack's callbacks; when the link breaks it fails over and the
/// restore succeeds with the guest as it is.
pub fn restore_stream<D, C, S, F>(
    make: F,
    cb: &mut C,
    reader: &mut Reader<S>,
    opts: RestoreOptions,
    back_channel: Option<&mut dyn Write>,
) -> Result<(D, LibxlRestoreResult), LibxlRestoreError>
where
    D: HasDeviceModel,
    C: RestoreCallbacks<D>,
    S: Source,
    F: FnOnce(&Destination<'_>) -> Result<D, RestoreError>,
{
    // One verdict: the reader refuses what the verifier refuses, before the layers see it.
    crate::verify::check_as_read(reader);
    let framing = reader.detect_framing()?;
    let mut res = LibxlRestoreResult {
        framing: Some(framing),
        ..Default::default()
    };
    if opts.stream_type == StreamType::Colo {
        reader.set_colo(true);
    }
    let back = back_channel.map(RefCell::new);
    let mut driver_back = back.as_ref().map(SharedOut);
    let mut layer = RestoreLayer::new(
        cb,
        opts.stream_type,
        back.as_ref(),
        framing != Framing::Libxc,
    );
    if framing == Framing::Libxc {
        let made = restore_new_with_back_channel(
            |guest, header: &libxc::DomainHeader| {
                colo_guest(opts.stream_type, guest, header)?;
                make(&Destination {
                    guest,
                    header,
                    framing,
                    config: None,
                })
            },
            &mut layer,
            reader,
            opts,
            driver_back.as_mut().map(|b| b as &mut dyn Write),
        );
        let (dom, r) = made.map_err(|e| layer_error(layer.error.take(), e))?;
        res.failed_over = r.failed_over;
        res.libxc = r;
        return Ok((dom, res));
    }

    // Up to LIBXC_CONTEXT: the xl and libxl headers, and emulator records that come first.
    let mut early: Vec<(EmulatorRecord, u64, u64)> = Vec::new();
    loop {
        let at = reader.offset();
        match reader.next_item()? {
            Item::XlHeader {
                header,
                optional_data,
                ..
            } => {
                let info = xlfile::parse(&header, optional_data)?;
                if info.stream_version == 1 {
                    return Err(XlError::LegacyConversionNeeded(info).into());
                }
                res.xl = Some(info);
            }
            Item::LibxlHeader { header, .. } => {
                res.legacy = header.options.contains(libxl::LibxlOptions::LEGACY);
            }
            Item::Record(rec) if rec.layer == Layer::Libxl => {
                res.libxl_records += 1;
                match check_record(&rec, None)? {
                    Checked::LibxcContext => break,
                    Checked::Emulator(e) => early.push((e, rec.offset, rec.index)),
                    Checked::End => {
                        return Err(rec
                            .error(StreamError::invalid(
                                rec.offset,
                                "libxc_context.missing",
                                "the libxl stream ends without a LIBXC_CONTEXT: it carries no domain image",
                            ))
                            .into())
                    }
                    Checked::CheckpointEnd => return Err(outside_checkpoint(&rec).into()),
                    Checked::CheckpointState(id) => return Err(state_not_awaited(&rec, id).into()),
                }
            }
            Item::Eof { .. } => {
                return Err(StreamError::new(
                    ErrorKind::Truncated,
                    reader.offset(),
                    "truncated",
                    "the stream ends before LIBXC_CONTEXT",
                )
                .into())
            }
            other => {
                return Err(StreamError::invalid(
                    at,
                    "libxl.order",
                    format!("unexpected {other:?} before LIBXC_CONTEXT"),
                )
                .into())
            }
        }
    }

    // The libxc image, with the checkpoints' libxl records through the layer.
    let config = res.xl.as_ref().and_then(|x| x.config.clone());
    let mut early_applied = 0u64;
    let made = restore_new_with_back_channel(
        |guest, header: &libxc::DomainHeader| {
            colo_guest(opts.stream_type, guest, header)?;
            let mut dom = make(&Destination {
                guest,
                header,
                framing,
                config: config.as_deref(),
            })?;
            for (e, offset, index) in &early {
                if guest != GuestType::X86Hvm {
                    return Err(StreamError::invalid(
                        *offset,
                        "guests",
                        format!("emulator records are only valid for HVM guests, this stream's guest is {guest:?}"),
                    )
                    .with_record(*index, "libxl emulator record")
                    .into());
                }
                apply(&mut dom, e).map_err(|e| match e {
                    LibxlRestoreError::DeviceModel { context, source } => {
                        RestoreError::Backend { context, source }
                    }
                    other => RestoreError::Stream(StreamError::invalid(
                        *offset,
                        "emulator",
                        other.to_string(),
                    )),
                })?;
                early_applied += 1;
            }
            Ok(dom)
        },
        &mut layer,
        reader,
        opts,
        driver_back.as_mut().map(|b| b as &mut dyn Write),
    );
    let (mut dom, libxc_result) = made.map_err(|e| layer_error(layer.error.take(), e))?;
    res.libxl_records += layer.libxl_records;
    res.checkpoints = layer.checkpoints;
    res.emulator_records = layer.emulator_records + early_applied;
    res.failed_over = libxc_result.failed_over;
    let checkpointed = libxc_result.checkpoints > 0;
    res.libxc = libxc_result;
    if res.failed_over {
        // Remus: the primary is gone; the last complete checkpoint is the guest (rc 0). The
        // incomplete checkpoint's libxl records were never committed.
        return Ok((dom, res));
    }
    if checkpointed && opts.stream_type != StreamType::Plain {
        // The libxc restore of a checkpointed stream completed: failover, rc 0.
        return Ok((dom, res));
    }

    // PLAIN: the libxl records after the libxc END, up to END.
    let guest = dom.info().map_err(|e| RestoreError::Backend {
        context: "domain info".into(),
        source: e,
    })?;
    loop {
        let at = reader.offset();
        let item = reader.next_item()?;
        match item {
            Item::Record(rec) if rec.layer == Layer::Libxl => {
                res.libxl_records += 1;
                match check_record(&rec, Some(guest.guest))? {
                    Checked::Emulator(e) => {
                        apply(&mut dom, &e)?;
                        res.emulator_records += 1;
                    }
                    Checked::End => {
                        res.end = true;
                        return Ok((dom, res));
                    }
                    Checked::LibxcContext => {
                        return Err(rec
                            .error(StreamError::invalid(
                                rec.offset,
                                "libxc_context.once",
                                "a second LIBXC_CONTEXT: the stream carries one domain image",
                            ))
                            .into())
                    }
                    Checked::CheckpointEnd => return Err(outside_checkpoint(&rec).into()),
                    Checked::CheckpointState(id) => return Err(state_not_awaited(&rec, id).into()),
                }
            }
            Item::Eof { .. } => {
                return Err(StreamError::new(
                    ErrorKind::Truncated,
                    reader.offset(),
                    "truncated",
                    "the stream ends before the libxl END",
                )
                .into())
            }
            other => {
                return Err(StreamError::invalid(
                    at,
                    "libxl.order",
                    format!("unexpected {other:?} after the libxc END"),
                )
                .into())
            }
        }
    }
}

/// The layer's error when it kept one (the driver only carries its message), else the
/// driver's. A layer error that names no record is placed at the record the driver was
/// processing when the callback failed (a CHECKPOINT deep in the stream, not offset 0).
fn layer_error(kept: Option<LibxlRestoreError>, driver: RestoreError) -> LibxlRestoreError {
    match (kept, &driver) {
        (Some(LibxlRestoreError::Stream(mut e)), RestoreError::Stream(d))
            if e.record_index.is_none() && d.record_index.is_some() =>
        {
            e.offset = d.offset;
            e.record_index = d.record_index;
            e.item.clone_from(&d.item);
            LibxlRestoreError::Stream(e)
        }
        (Some(kept), _) => kept,
        (None, _) => driver.into(),
    }
}

/// Why a PV guest cannot take part in COLO.
const COLO_HVM_ONLY: &str = "COLO only supports HVM guests (libxl refuses PV guests on both sides)";

/// A COLO secondary refuses a PV guest, as libxl does.
fn colo_guest(
    stream_type: StreamType,
    guest: GuestType,
    header: &libxc::DomainHeader,
) -> Result<(), RestoreError> {
    if stream_type == StreamType::Colo && guest != GuestType::X86Hvm {
        return Err(StreamError::invalid(
            0,
            "colo.guests",
            format!(
                "{COLO_HVM_ONLY}; this stream's domain type is {}",
                header.r#type
            ),
        )
        .with_item("libxc domain_header")
        .into());
    }
    Ok(())
}

fn outside_checkpoint(rec: &RawRecord<'_>) -> StreamError {
    rec.error(StreamError::invalid(
        rec.offset,
        "checkpoint_end",
        "CHECKPOINT_END outside a checkpoint: no libxc CHECKPOINT precedes it",
    ))
}

fn state_not_awaited(rec: &RawRecord<'_>, id: libxl::CheckpointStateId) -> StreamError {
    rec.error(StreamError::invalid(
        rec.offset,
        "checkpoint_state.unexpected",
        format!("CHECKPOINT_STATE {id} arrived while none was awaited"),
    ))
}

/// [`restore_stream`] over any `Read` (a socket): reads with one buffer and gives the input
/// back with the octets it read past the stream's end (to be consumed before reading on;
/// with `exact` set nothing is read past it, at the cost of small reads). `back_channel`
/// as for [`restore_stream`].
#[allow(clippy::type_complexity)]
pub fn restore_from_read<D, C, R, F>(
    make: F,
    cb: &mut C,
    input: R,
    opts: RestoreOptions,
    exact: bool,
    back_channel: Option<&mut dyn Write>,
) -> (
    Result<(D, LibxlRestoreResult), LibxlRestoreError>,
    R,
    Vec<u8>,
)
where
    D: HasDeviceModel,
    C: RestoreCallbacks<D>,
    R: Read,
    F: FnOnce(&Destination<'_>) -> Result<D, RestoreError>,
{
    let mut src = ReadSource::new(input);
    if exact {
        src = src.exact();
    }
    let mut reader = Reader::new(
        src,
        ReaderOptions {
            framing: None,
            strictness: Strictness::Lenient,
        },
    );
    let r = restore_stream(make, cb, &mut reader, opts, back_channel);
    let (input, rest) = reader.into_source().into_parts();
    (r, input, rest)
}

// ---------------------------------------------------------------------------------------------
// COLO

/// A COLO control message exchange went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ColoError {
    /// The control channel failed.
    #[error("COLO channel: {0}")]
    Io(#[from] io::Error),
    /// Writing a message failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A message broke a rule of the stream.
    #[error("{0}")]
    Stream(#[from] StreamError),
    /// A message other than the one the protocol expects now.
    #[error("expected CHECKPOINT_STATE {expected}, got {got}")]
    Unexpected {
        /// The message expected.
        expected: libxl::CheckpointStateId,
        /// The message read.
        got: libxl::CheckpointStateId,
    },
    /// The exchange was driven out of order.
    #[error("COLO sequence: {0}")]
    Sequence(String),
    /// A step on the guest failed.
    #[error("COLO {step}: {source}")]
    Op {
        /// The step.
        step: &'static str,
        /// Why it failed.
        source: Box<ToolstackError>,
    },
}

impl ColoError {
    /// The link to the other side broke (as opposed to a message that breaks the protocol).
    pub fn broken_link(&self) -> bool {
        match self {
            ColoError::Io(_) => true,
            ColoError::Write(e) => e.io_kind().is_some(),
            ColoError::Stream(e) => matches!(e.kind, ErrorKind::Io | ErrorKind::Truncated),
            _ => false,
        }
    }
}

/// Writes one CHECKPOINT_STATE record (16 octets, little-endian, no stream header: the back
/// channel carries bare records).
pub fn write_checkpoint_state<W: Write + ?Sized>(
    w: &mut W,
    id: libxl::CheckpointStateId,
) -> Result<(), ColoError> {
    let mut sw = StreamWriter::new(&mut *w);
    sw.libxl(&libxl::Record::CheckpointState(libxl::CheckpointState {
        control_id: id,
        padding: 0,
    }))?;
    sw.flush()?;
    Ok(())
}

/// Reads exactly one CHECKPOINT_STATE record from `r` (no read-ahead) and returns its id.
pub fn read_checkpoint_state<R: Read + ?Sized>(
    r: &mut R,
) -> Result<libxl::CheckpointStateId, ColoError> {
    let mut h = [0u8; libxc::RecordHeader::SIZE];
    r.read_exact(&mut h)?;
    let ctx = DecodeCtx::new(2).with_strictness(Strictness::Lenient);
    let header = libxc::RecordHeader::decode(&h, &ctx)
        .map_err(|e| StreamError::from_decode(&e, Layer::Libxl, 0))?;
    let (t, len) = (header.r#type, header.length);
    if t != libxl::CheckpointState::TYPE {
        return Err(StreamError::invalid(
            0,
            "checkpoint_state.type",
            format!(
                "expected a CHECKPOINT_STATE record, got libxl {}",
                libxl::RecordType::from_u32(t)
            ),
        )
        .into());
    }
    if len > limits::CHECKPOINT_STATE_BODY_MAX {
        return Err(StreamError::invalid(
            libxc::RecordHeader::LENGTH_OFFSET as u64,
            "checkpoint_state.length",
            format!("CHECKPOINT_STATE of {len} octets"),
        )
        .into());
    }
    let mut body = vec![0u8; limits::padded_body_len(len as usize)];
    r.read_exact(&mut body)?;
    let body = body.get(..len as usize).unwrap_or_default();
    let s = libxl::CheckpointState::decode(body, &ctx).map_err(|e| {
        StreamError::from_decode(&e, Layer::Libxl, libxc::RecordHeader::SIZE as u64)
    })?;
    Ok(s.control_id)
}

fn expect_state<R: Read + ?Sized>(
    r: &mut R,
    expected: libxl::CheckpointStateId,
) -> Result<(), ColoError> {
    let got = read_checkpoint_state(r)?;
    if got != expected {
        return Err(ColoError::Unexpected { expected, got });
    }
    Ok(())
}

/// The primary's side of the COLO exchange, one checkpoint at a time (format-reference §5
/// "COLO"): suspend, read SUSPENDED (not before the first checkpoint: the secondary is not
/// running yet), send the checkpoint, read READY, resume, read RESUMED, send NEW.
#[derive(Debug, Clone, Default)]
pub struct ColoPrimary {
    checkpoints: u32,
    step: PrimaryStep,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum PrimaryStep {
    #[default]
    Suspend,
    CheckpointSent,
    Resumed,
    New,
}

impl ColoPrimary {
    /// The primary before its first checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checkpoints the secondary acknowledged (READY).
    pub fn checkpoints(&self) -> u32 {
        self.checkpoints
    }

    fn step(&mut self, want: PrimaryStep, next: PrimaryStep, what: &str) -> Result<(), ColoError> {
        if self.step != want {
            return Err(ColoError::Sequence(format!(
                "primary: {what} out of order (at {:?})",
                self.step
            )));
        }
        self.step = next;
        Ok(())
    }

    /// The primary suspended: from the second checkpoint on, the secondary reports
    /// SUSPENDED on the back channel.
    pub fn suspended<R: Read + ?Sized>(&mut self, back: &mut R) -> Result<(), ColoError> {
        self.step(PrimaryStep::Suspend, PrimaryStep::CheckpointSent, "suspend")?;
        if self.checkpoints > 0 {
            expect_state(back, libxl::CheckpointStateId::SECONDARY_SUSPENDED)?;
        }
        Ok(())
    }

    /// The checkpoint is out: the secondary applies it and reports READY.
    pub fn checkpoint_sent<R: Read + ?Sized>(&mut self, back: &mut R) -> Result<(), ColoError> {
        self.step(
            PrimaryStep::CheckpointSent,
            PrimaryStep::Resumed,
            "checkpoint",
        )?;
        expect_state(back, libxl::CheckpointStateId::SECONDARY_READY)?;
        self.checkpoints += 1;
        Ok(())
    }

    /// The primary resumed: the secondary reports RESUMED.
    pub fn resumed<R: Read + ?Sized>(&mut self, back: &mut R) -> Result<(), ColoError> {
        self.step(PrimaryStep::Resumed, PrimaryStep::New, "resume")?;
        expect_state(back, libxl::CheckpointStateId::SECONDARY_RESUMED)
    }

    /// Starts the next checkpoint: NEW on the forward stream.
    pub fn new_checkpoint<W: Write + ?Sized>(&mut self, fwd: &mut W) -> Result<(), ColoError> {
        self.new_step()?;
        write_checkpoint_state(fwd, libxl::CheckpointStateId::NEW)
    }

    fn new_step(&mut self) -> Result<(), ColoError> {
        self.step(PrimaryStep::New, PrimaryStep::Suspend, "new checkpoint")
    }
}

/// The secondary's side, once per checkpoint received: send READY, resume, send RESUMED,
/// read NEW, suspend, send SUSPENDED.
#[derive(Debug, Clone, Default)]
pub struct ColoSecondary {
    checkpoints: u32,
    step: SecondaryStep,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum SecondaryStep {
    #[default]
    Ready,
    Resumed,
    New,
    Suspended,
}

impl ColoSecondary {
    /// The secondary before its first checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checkpoints applied.
    pub fn checkpoints(&self) -> u32 {
        self.checkpoints
    }

    fn step(
        &mut self,
        want: SecondaryStep,
        next: SecondaryStep,
        what: &str,
    ) -> Result<(), ColoError> {
        if self.step != want {
            return Err(ColoError::Sequence(format!(
                "secondary: {what} out of order (at {:?})",
                self.step
            )));
        }
        self.step = next;
        Ok(())
    }

    /// A checkpoint was applied: READY.
    pub fn checkpoint_applied<W: Write + ?Sized>(&mut self, back: &mut W) -> Result<(), ColoError> {
        self.step(SecondaryStep::Ready, SecondaryStep::Resumed, "ready")?;
        self.checkpoints += 1;
        write_checkpoint_state(back, libxl::CheckpointStateId::SECONDARY_READY)
    }

    /// The secondary's copy runs again: RESUMED.
    pub fn resumed<W: Write + ?Sized>(&mut self, back: &mut W) -> Result<(), ColoError> {
        self.step(SecondaryStep::Resumed, SecondaryStep::New, "resume")?;
        write_checkpoint_state(back, libxl::CheckpointStateId::SECONDARY_RESUMED)
    }

    /// Waits for the primary's NEW on the forward stream.
    pub fn wait_new<R: Read + ?Sized>(&mut self, fwd: &mut R) -> Result<(), ColoError> {
        self.step(
            SecondaryStep::New,
            SecondaryStep::Suspended,
            "new checkpoint",
        )?;
        expect_state(fwd, libxl::CheckpointStateId::NEW)
    }

    /// The primary's CHECKPOINT_STATE arrived on the forward stream, read by someone else
    /// (the restore driver): it must be NEW, and awaited.
    pub fn new_received(&mut self, id: libxl::CheckpointStateId) -> Result<(), ColoError> {
        self.step(
            SecondaryStep::New,
            SecondaryStep::Suspended,
            "new checkpoint",
        )?;
        if id != libxl::CheckpointStateId::NEW {
            return Err(ColoError::Unexpected {
                expected: libxl::CheckpointStateId::NEW,
                got: id,
            });
        }
        Ok(())
    }

    /// The secondary's copy is suspended: SUSPENDED.
    pub fn suspended<W: Write + ?Sized>(&mut self, back: &mut W) -> Result<(), ColoError> {
        self.step(SecondaryStep::Suspended, SecondaryStep::Ready, "suspend")?;
        write_checkpoint_state(back, libxl::CheckpointStateId::SECONDARY_SUSPENDED)
    }
}

/// What one side does to its guest during a COLO checkpoint.
pub trait ColoOps {
    /// Suspend the guest (and its device model).
    fn suspend(&mut self) -> Result<(), ToolstackError>;
    /// Primary: send the checkpoint on the forward stream. Secondary: receive and apply it.
    fn checkpoint(&mut self) -> Result<(), ToolstackError>;
    /// Resume the guest.
    fn resume(&mut self) -> Result<(), ToolstackError>;
}

fn op(step: &'static str, r: Result<(), ToolstackError>) -> Result<(), ColoError> {
    r.map_err(|e| ColoError::Op {
        step,
        source: Box::new(e),
    })
}

/// One COLO checkpoint on the primary: suspend, [read SUSPENDED], checkpoint, read READY,
/// resume, read RESUMED, send NEW.
pub fn colo_primary_round<O, F, B>(
    p: &mut ColoPrimary,
    ops: &mut O,
    fwd: &mut F,
    back: &mut B,
) -> Result<(), ColoError>
where
    O: ColoOps + ?Sized,
    F: Write + ?Sized,
    B: Read + ?Sized,
{
    op("suspend", ops.suspend())?;
    p.suspended(back)?;
    op("checkpoint", ops.checkpoint())?;
    p.checkpoint_sent(back)?;
    op("resume", ops.resume())?;
    p.resumed(back)?;
    p.new_checkpoint(fwd)
}

/// One COLO checkpoint on the secondary: receive and apply it, send READY, resume, send
/// RESUMED, read NEW, suspend, send SUSPENDED.
pub fn colo_secondary_round<O, F, B>(
    s: &mut ColoSecondary,
    ops: &mut O,
    fwd: &mut F,
    back: &mut B,
) -> Result<(), ColoError>
where
    O: ColoOps + ?Sized,
    F: Read + ?Sized,
    B: Write + ?Sized,
{
    op("checkpoint", ops.checkpoint())?;
    s.checkpoint_applied(back)?;
    op("resume", ops.resume())?;
    s.resumed(back)?;
    s.wait_new(fwd)?;
    op("suspend", ops.suspend())?;
    s.suspended(back)
}
