//! Live migration between two toolstacks the way `xl migrate` does it (format-reference §2),
//! over any pair of byte channels (a TCP socket's two halves, pipes).
//!
//! **Sender** ([`send`]): checks the receiver's 54-octet banner exactly, sends the xl header
//! with the JSON domain config and the libxl stream ([`save_xl`]), waits for "domain
//! received", then passes the point of no return by sending "cleared to unpause" and reads
//! the report and its status octet. The sender keeps its (suspended) guest until then: when
//! the receiver fails before "domain received", or reports a non-zero status, the guest is
//! resumed; on status 0 it is destroyed. A failure after the point of no return leaves the
//! outcome undefined, as in xl.
//!
//! **Receiver** ([`receive`]): sends the banner, restores the guest paused, sends "domain
//! received", waits for "cleared to unpause", unpauses and sends the report with its status.
//! A failed restore is never unpaused; a sender that goes away before clearing it gets its
//! incoming copy destroyed.
//!
//! **Remus**: the same preamble, no ready/go exchange; the receiver applies checkpoints until
//! the stream breaks, then fails over to the last complete one and unpauses it.
//!
//! **COLO**: as Remus, and the receiver (the secondary) runs its copy between checkpoints,
//! answering on the reverse direction of the same connection (CHECKPOINT_STATE messages and
//! dirty pfn lists, as `xl remus --colo` does over ssh). When the link breaks the secondary's
//! guest keeps running.
//!
//! **Compression** ([`Channel::compressed`]): the whole connection, both directions, through
//! streaming zstd, flushed at every protocol point. Off by default, so the default wire is
//! exactly what xl sends; both ends must agree.

use crate::dm::HasDeviceModel;
use crate::domain::{RestoreCallbacks, SaveCallbacks, ToolstackError};
use crate::libxl_stream::{
    restore_from_read, save_xl, Destination, LibxlRestoreError, LibxlRestoreResult, LibxlSaveError,
    LibxlSaveStats,
};
use crate::restore::{RestoreError, RestoreOptions};
use crate::save::{SaveOptions, StreamType};
use crate::xl;
use std::io::{self, Read, Write};

/// The receiver's banner (54 octets, no NUL).
pub const BANNER: &[u8] = &xl::XL_MIGRATE_RECEIVER_BANNER;
/// "domain received, ready to unpause" with its NUL (34 octets).
pub const READY: &[u8] = &xl::XL_MIGRATE_RECEIVER_READY;
/// "domain is yours, you are cleared to unpause" with its NUL (44 octets).
pub const GO: &[u8] = &xl::XL_MIGRATE_PERMISSION_TO_GO;
/// "my copy unpause results are as follows" with its NUL (39 octets), then a status octet.
pub const REPORT: &[u8] = &xl::XL_MIGRATE_REPORT;

/// Where a migration is, for the toolstack's hooks (messages, fault injection in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Receiver: the banner is out. Sender: the banner checked out.
    Banner,
    /// Sender: the whole stream is out. Receiver: the guest is restored (paused).
    Image,
    /// Receiver: "domain received" is out. Sender: it arrived.
    Received,
    /// Sender: "cleared to unpause" is out (the point of no return). Receiver: it arrived.
    Go,
}

/// The toolstack's control over its copy of the guest.
pub trait GuestControl<D> {
    /// Sender: the migration failed before the point of no return; run the guest again.
    fn resume(&mut self, dom: &mut D) -> Result<(), ToolstackError>;
    /// Receiver: the guest is ours; let it run.
    fn unpause(&mut self, dom: &mut D) -> Result<(), ToolstackError>;
    /// This copy is not wanted any more.
    fn destroy(&mut self, dom: &mut D);
    /// A protocol point was reached.
    fn phase(&mut self, _phase: Phase) {}
}

/// Both directions of a connection, optionally zstd-compressed as a whole.
pub struct Channel<'a> {
    /// What the other side sends.
    pub rx: Box<dyn Read + 'a>,
    /// What goes to the other side.
    pub tx: Box<dyn Write + 'a>,
}

impl<'a> Channel<'a> {
    /// The connection as is: what xl sends.
    pub fn plain(rx: impl Read + 'a, tx: impl Write + 'a) -> Self {
        Channel {
            rx: Box::new(rx),
            tx: Box::new(tx),
        }
    }

    /// The whole connection through streaming zstd (level 1); every flush ends a zstd block,
    /// so the peer can decode everything sent so far.
    pub fn compressed(rx: impl Read + 'a, tx: impl Write + 'a) -> io::Result<Self> {
        let dec = zstd::stream::read::Decoder::new(rx)?;
        let enc = zstd::stream::write::Encoder::new(tx, 1)?;
        Ok(Channel {
            rx: Box::new(dec),
            tx: Box::new(enc),
        })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.write_all(msg)?;
        self.tx.flush()
    }

    /// Reads exactly `expected.len()` octets and checks them.
    fn expect(&mut self, expected: &[u8], what: &'static str) -> Result<(), MigrateError> {
        let mut got = vec![0u8; expected.len()];
        self.rx
            .read_exact(&mut got)
            .map_err(|source| MigrateError::Io { what, source })?;
        if got != expected {
            return Err(MigrateError::Unexpected {
                what,
                expected: String::from_utf8_lossy(expected).into_owned(),
                got: String::from_utf8_lossy(&got).into_owned(),
            });
        }
        Ok(())
    }
}

/// Why a migration step failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The connection failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: &'static str,
        /// The failure.
        source: io::Error,
    },
    /// The other side sent something the protocol does not allow here.
    #[error("{what}: expected {expected:?}, got {got:?}")]
    Unexpected {
        /// What was being read.
        what: &'static str,
        /// What the protocol allows.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// The sender's save failed.
    #[error("save failed: {0}")]
    Save(Box<LibxlSaveError>),
    /// The receiver's restore failed.
    #[error("restore failed: {0}")]
    Restore(Box<LibxlRestoreError>),
    /// The receiver reported a failure to unpause the guest.
    #[error("the receiver could not unpause the guest (status {0})")]
    Status(u8),
    /// The toolstack could not act on the guest.
    #[error("{0}")]
    Guest(ToolstackError),
}

impl From<LibxlSaveError> for MigrateError {
    fn from(e: LibxlSaveError) -> Self {
        MigrateError::Save(Box::new(e))
    }
}

impl From<LibxlRestoreError> for MigrateError {
    fn from(e: LibxlRestoreError) -> Self {
        MigrateError::Restore(Box::new(e))
    }
}

/// How a migration ended for the sender.
#[derive(Debug)]
pub enum SendOutcome {
    /// The receiver runs the guest (status 0); the sender's copy was destroyed.
    Migrated,
    /// The migration failed before the point of no return, or the receiver reported a
    /// non-zero status: the sender's guest was resumed (`resumed` false if that failed too).
    RolledBack {
        /// Why the migration failed.
        error: MigrateError,
        /// Whether the sender's guest runs again.
        resumed: bool,
    },
    /// A failure after the point of no return: which copy is authoritative is undefined.
    /// The sender's copy stays suspended.
    Undefined {
        /// Why the migration failed.
        error: MigrateError,
    },
    /// Remus or COLO: the checkpoints are out and the connection is closed; the sender's
    /// guest runs.
    Checkpointed,
}

/// What the sender did.
#[derive(Debug)]
pub struct SendReport {
    /// How the migration ended.
    pub outcome: SendOutcome,
    /// The stream's figures, once the save completed.
    pub stats: Option<LibxlSaveStats>,
}

/// Options of a migration, agreed by both ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    /// Precopy while the guest runs (`xl migrate` always does).
    pub live: bool,
    /// Remus: checkpointed stream, no ready/go exchange.
    pub remus: bool,
    /// COLO: checkpointed as Remus, the receiver runs the guest between checkpoints and
    /// answers on the reverse direction.
    pub colo: bool,
}

impl MigrateOptions {
    fn stream_type(&self) -> StreamType {
        if self.colo {
            StreamType::Colo
        } else if self.remus {
            StreamType::Remus
        } else {
            StreamType::Plain
        }
    }
}

/// The sender's side of `xl migrate` (or `xl remus` with `opts.remus`, `xl remus --colo`
/// with `opts.colo`; the callbacks decide how many checkpoints). `config_json` is the domain
/// config the receiver builds from.
pub fn send<D, C, G>(
    dom: &mut D,
    cb: &mut C,
    ctl: &mut G,
    chan: &mut Channel<'_>,
    config_json: &[u8],
    opts: MigrateOptions,
) -> SendReport
where
    D: HasDeviceModel + 'static,
    C: SaveCallbacks<D>,
    G: GuestControl<D>,
{
    let mut stats = None;
    let before = |dom: &mut D, ctl: &mut G, error: MigrateError, stats| {
        let resumed = match ctl.resume(dom) {
            Ok(()) => true,
            Err(_) => false,
        };
        SendReport {
            outcome: SendOutcome::RolledBack { error, resumed },
            stats,
        }
    };
    if let Err(e) = chan.expect(BANNER, "receiver banner") {
        return before(dom, ctl, e, stats);
    }
    ctl.phase(Phase::Banner);
    let stream_type = opts.stream_type();
    let save_opts = SaveOptions {
        live: opts.live || stream_type != StreamType::Plain,
        stream_type,
        ..SaveOptions::default()
    };
    // COLO: the secondary answers on the reverse direction.
    let back = (stream_type == StreamType::Colo).then_some(&mut chan.rx as &mut dyn Read);
    match save_xl(dom, cb, &mut chan.tx, save_opts, Some(config_json), back) {
        Ok((s, _)) => stats = Some(s),
        Err(e) => return before(dom, ctl, e.into(), stats),
    }
    if let Err(e) = chan.tx.flush() {
        let error = MigrateError::Io {
            what: "sending the stream",
            source: e,
        };
        return before(dom, ctl, error, stats);
    }
    if stream_type != StreamType::Plain {
        // The link is closed by the caller dropping the channel; the guest keeps running.
        return SendReport {
            outcome: SendOutcome::Checkpointed,
            stats,
        };
    }
    ctl.phase(Phase::Image);
    if let Err(e) = chan.expect(READY, "waiting for \"domain received\"") {
        return before(dom, ctl, e, stats);
    }
    ctl.phase(Phase::Received);
    // The point of no return.
    if let Err(source) = chan.send(GO) {
        let error = MigrateError::Io {
            what: "sending \"cleared to unpause\"",
            source,
        };
        return SendReport {
            outcome: SendOutcome::Undefined { error },
            stats,
        };
    }
    ctl.phase(Phase::Go);
    let status = chan
        .expect(REPORT, "waiting for the unpause report")
        .and_then(|()| {
            let mut b = [0u8; 1];
            chan.rx
                .read_exact(&mut b)
                .map_err(|source| MigrateError::Io {
                    what: "reading the unpause status",
                    source,
                })?;
            Ok(b[0])
        });
    let outcome = match status {
        Ok(0) => {
            ctl.destroy(dom);
            SendOutcome::Migrated
        }
        Ok(s) => {
            // The receiver destroyed its copy and echoes the go message; ours runs again.
            let _ = chan.expect(GO, "the receiver's rollback message");
            let resumed = ctl.resume(dom).is_ok();
            SendOutcome::RolledBack {
                error: MigrateError::Status(s),
                resumed,
            }
        }
        Err(error) => SendOutcome::Undefined { error },
    };
    SendReport { outcome, stats }
}

/// How a migration ended for the receiver.
#[derive(Debug)]
pub enum ReceiveOutcome<D> {
    /// The guest runs here.
    Running(D),
    /// The restore failed: nothing was unpaused.
    RestoreFailed(MigrateError),
    /// The sender went away before clearing us: the incoming copy was destroyed.
    Abandoned(MigrateError),
    /// Unpausing failed: the copy was destroyed and the sender told so.
    UnpauseFailed(MigrateError),
}

/// What the receiver did.
#[derive(Debug)]
pub struct ReceiveReport<D> {
    /// How the migration ended.
    pub outcome: ReceiveOutcome<D>,
    /// What the restore did, once it completed.
    pub restore: Option<LibxlRestoreResult>,
}

/// The receiver's side of `xl migrate-receive` (`-r` with `opts.remus` or `opts.colo`).
/// `make` builds the destination from the stream's domain header and xl config. `restored`
/// is called with the paused guest before it is acknowledged (the CLI prints its digest
/// there); for COLO, with the secondary's guest as the link broke.
pub fn receive<D, C, G, F>(
    make: F,
    cb: &mut C,
    ctl: &mut G,
    chan: &mut Channel<'_>,
    opts: MigrateOptions,
    restored: impl FnOnce(&D, &LibxlRestoreResult),
) -> ReceiveReport<D>
where
    D: HasDeviceModel,
    C: RestoreCallbacks<D>,
    G: GuestControl<D>,
    F: FnOnce(&Destination<'_>) -> Result<D, RestoreError>,
{
    let fail = |e: MigrateError| ReceiveReport {
        outcome: ReceiveOutcome::RestoreFailed(e),
        restore: None,
    };
    if let Err(source) = chan.send(BANNER) {
        return fail(MigrateError::Io {
            what: "sending the banner",
            source,
        });
    }
    ctl.phase(Phase::Banner);
    let stream_type = opts.stream_type();
    let ropts = RestoreOptions {
        stream_type,
        store_evtchn: 1,
        console_evtchn: 2,
    };
    let back = (stream_type == StreamType::Colo).then_some(&mut chan.tx as &mut dyn Write);
    let (r, _, rest) = restore_from_read(make, cb, &mut chan.rx, ropts, false, back);
    let (mut dom, lres) = match r {
        Ok(x) => x,
        Err(e) => return fail(e.into()),
    };
    restored(&dom, &lres);
    ctl.phase(Phase::Image);
    let remus = stream_type != StreamType::Plain || lres.libxc.checkpoints > 0;
    if !remus {
        if !rest.is_empty() {
            // Nothing may follow the stream before "domain received" is out.
            let e = MigrateError::Unexpected {
                what: "after the stream",
                expected: String::new(),
                got: String::from_utf8_lossy(&rest).into_owned(),
            };
            ctl.destroy(&mut dom);
            return ReceiveReport {
                outcome: ReceiveOutcome::Abandoned(e),
                restore: Some(lres),
            };
        }
        let acked = chan
            .send(READY)
            .map_err(|source| MigrateError::Io {
                what: "sending \"domain received\"",
                source,
            })
            .and_then(|()| {
                ctl.phase(Phase::Received);
                chan.expect(GO, "waiting for \"cleared to unpause\"")
            });
        if let Err(e) = acked {
            ctl.destroy(&mut dom);
            return ReceiveReport {
                outcome: ReceiveOutcome::Abandoned(e),
                restore: Some(lres),
            };
        }
        ctl.phase(Phase::Go);
    }
    // Remus: the stream broke (or ended); the last complete checkpoint takes over. COLO:
    // the secondary's guest goes on from where it is.
    match ctl.unpause(&mut dom) {
        Ok(()) => {
            if !remus {
                // The guest runs whatever happens to the report.
                let _ = chan.send(REPORT).and_then(|()| chan.send(&[0]));
            }
            ReceiveReport {
                outcome: ReceiveOutcome::Running(dom),
                restore: Some(lres),
            }
        }
        Err(e) => {
            ctl.destroy(&mut dom);
            if !remus {
                // libxl's ERROR_FAIL (-3), negated.
                let _ = chan
                    .send(REPORT)
                    .and_then(|()| chan.send(&[3]))
                    .and_then(|()| chan.send(GO));
            }
            ReceiveReport {
                outcome: ReceiveOutcome::UnpauseFailed(MigrateError::Guest(e)),
                restore: Some(lres),
            }
        }
    }
}
