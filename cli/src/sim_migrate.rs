//! `xenmig sim migrate` and `xenmig sim migrate-receive`: live migration of a simulated
//! domain between two processes over loopback TCP, speaking xl's protocol
//! ([`xenmig::migrate`]). Each side prints `state-digest: HEX` and `guest: STATE` lines
//! (`running`, `suspended`, `paused`, `resumed`, `destroyed`), so which copy runs is
//! observable; the sender prints the time, the bytes and the downtime.
//!
//! Remus and COLO print `epoch K state-digest: HEX` for every checkpoint K (the sender at
//! its suspend; a COLO receiver right after applying it, before its copy runs) and, on the
//! receiver, `state-digest: HEX` of the last complete checkpoint once the link broke.
//!
//! A link that dies without a reset (a cable cut, a host that lost power) is noticed by
//! silence: once the connection is up, a read or write that moves no octet for `--timeout`
//! seconds fails, and each side ends as it does when the connection breaks.

use crate::sim::{build_guest, destination, Built, DomainArgs, Policy, SaveCb};
use anyhow::{anyhow, bail, Context, Result};
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};
use xenmig::dm::{SimGuest, SimGuestExt};
use xenmig::domain::{RestoreCallbacks, ToolstackError};
use xenmig::libxl_stream::Destination;
use xenmig::migrate::{
    self, Channel, GuestControl, MigrateOptions, Phase, ReceiveOutcome, SendOutcome,
};
use xenmig::sim::Workload;

#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    domain: DomainArgs,
    /// Precopy passes while the guest runs.
    #[arg(long)]
    live: bool,
    /// Remus: checkpoint N epochs, then close the connection (the receiver fails over); 0
    /// checkpoints every 100 ms until the link breaks (the sender killed, the receiver gone).
    #[arg(long, value_name = "EPOCHS", conflicts_with = "colo")]
    remus: Option<u32>,
    /// COLO (HVM guests): checkpoint N epochs with the receiver running its copy in between,
    /// then close the connection (the receiver's copy goes on); 0 until the link breaks.
    #[arg(long, value_name = "EPOCHS")]
    colo: Option<u32>,
    /// zstd-compress the whole connection (the receiver must be started with --compress).
    #[arg(long)]
    compress: bool,
    /// Testing: die at a protocol point (`before-image`, `mid-image:BYTES`,
    /// `after-received`, `after-go`, `checkpoint:K`).
    #[arg(long, hide = true)]
    fault: Option<String>,
    #[command(flatten)]
    silence: Silence,
    /// The receiver, ADDR:PORT (loopback only).
    target: String,
}

/// How long a silent peer is waited for.
#[derive(clap::Args)]
struct Silence {
    /// Give up on the link when a read or a write moves no octet for SECS seconds (a dead
    /// link or host sends no reset; xl would wait forever); 0 waits forever.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
}

impl Silence {
    fn limit(&self) -> Result<Option<Duration>> {
        if !(self.timeout >= 0.0 && self.timeout.is_finite()) {
            bail!("--timeout needs seconds >= 0, got {}", self.timeout);
        }
        Ok((self.timeout > 0.0).then(|| Duration::from_secs_f64(self.timeout)))
    }
}

#[derive(clap::Args)]
pub(crate) struct ReceiveArgs {
    /// Where to wait for the sender, ADDR:PORT (loopback only); port 0 picks one, printed as
    /// `listening: ADDR:PORT`.
    #[arg(long)]
    listen: String,
    /// The connection is zstd-compressed (the sender must use --compress).
    #[arg(long)]
    compress: bool,
    /// Remus: apply checkpoints until the stream breaks, then fail over to the last one.
    #[arg(long, conflicts_with = "colo")]
    remus: bool,
    /// COLO: apply checkpoints, running the guest between them and telling the sender which
    /// pages it dirtied; when the stream breaks the guest keeps running.
    #[arg(long)]
    colo: bool,
    /// COLO: pages the receiver's copy dirties per second (simulated time) while it runs.
    #[arg(long, default_value_t = 0, requires = "colo")]
    dirty_rate: u64,
    /// Seed of the destination's machine frame numbers.
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Testing: die at a protocol point (`before-image`, `mid-image:BYTES`,
    /// `after-received`, `after-go`), or fail to unpause (`unpause-fails`).
    #[arg(long, hide = true)]
    fault: Option<String>,
    #[command(flatten)]
    silence: Silence,
}

/// A test fault: the process dies (as if killed) at a protocol point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    BeforeImage,
    MidImage(u64),
    AfterReceived,
    AfterGo,
    Checkpoint(u32),
    /// Receiver: unpausing the guest fails (the sender rolls back on the status).
    UnpauseFails,
}

fn parse_fault(s: Option<&str>) -> Result<Option<Fault>> {
    let Some(s) = s else { return Ok(None) };
    let f = match s.split_once(':') {
        None if s == "before-image" => Fault::BeforeImage,
        None if s == "after-received" => Fault::AfterReceived,
        None if s == "after-go" => Fault::AfterGo,
        None if s == "unpause-fails" => Fault::UnpauseFails,
        Some(("mid-image", n)) => Fault::MidImage(n.parse().context("--fault mid-image:BYTES")?),
        Some(("checkpoint", k)) => Fault::Checkpoint(k.parse().context("--fault checkpoint:K")?),
        _ => bail!("unknown --fault `{s}`"),
    };
    Ok(Some(f))
}

/// Dies the way a killed toolstack does: no cleanup, the peer sees the connection drop.
fn die(at: &str) -> ! {
    eprintln!("fault: killed {at}");
    // What this side printed before it was "killed" includes a digest still being computed.
    crate::sim::wait_for_background_digests();
    let _ = io::stdout().flush();
    std::process::exit(137)
}

fn loopback(s: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = s.parse().map_err(|_| anyhow!("`{s}` is not ADDR:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("{addr}: simulated migration is for loopback addresses only");
    }
    Ok(addr)
}

/// One end of the connection whose reads and writes give up after `limit` without progress,
/// with an error that says so: reads and writes time out, and the kernel drops the
/// connection when what it sent stays unacknowledged that long (`TCP_USER_TIMEOUT`; a write
/// timeout alone is reset by the trickle of buffer space a stalled socket still frees). The
/// first timeout shuts the connection down, so what is still buffered (flushed on the way
/// out) fails at once instead of waiting out the timeout again.
struct Link<'a> {
    stream: &'a TcpStream,
    limit: Option<Duration>,
}

impl<'a> Link<'a> {
    fn new(stream: &'a TcpStream, limit: Option<Duration>) -> io::Result<Self> {
        stream.set_read_timeout(limit)?;
        stream.set_write_timeout(limit)?;
        if let Some(l) = limit {
            unacknowledged_limit(stream, l)?;
        }
        Ok(Link { stream, limit })
    }

    fn silent(&self, e: io::Error) -> io::Error {
        match (e.kind(), self.limit) {
            (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(l)) => {
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no octet moved for {:.1} s: the link or the peer is dead",
                        l.as_secs_f64()
                    ),
                )
            }
            _ => e,
        }
    }
}

/// `TCP_USER_TIMEOUT`: the connection is dropped when sent data stays unacknowledged for
/// `limit`.
fn unacknowledged_limit(stream: &TcpStream, limit: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = libc::c_uint::try_from(limit.as_millis().max(1)).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the option's value is a c_uint, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&ms as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Read for Link<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).map_err(|e| self.silent(e))
    }
}

impl Write for Link<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf).map_err(|e| self.silent(e))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Counts the octets that cross the wire, and dies after `limit` of them (mid-image fault).
struct Wire<S> {
    inner: S,
    count: Rc<Cell<u64>>,
    limit: Option<u64>,
}

impl<S> Wire<S> {
    fn account(&self, n: usize) {
        let c = self.count.get() + n as u64;
        self.count.set(c);
        if self.limit.is_some_and(|l| c >= l) {
            die(&format!("mid-image after {c} octets"));
        }
    }
}

impl<S: Write> Write for Wire<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.account(n);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Read> Read for Wire<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.account(n);
        Ok(n)
    }
}

/// The receiver's restore callbacks. COLO: right after each checkpoint is applied its digest
/// is printed as `epoch K state-digest:`; the guest then runs for one checkpoint interval
/// (its workload dirtying pages) until the sender's next checkpoint.
struct ReceiveCb {
    colo: bool,
    epoch: u32,
    interval: Duration,
    /// The digest of the last checkpoint applied.
    last_digest: Rc<RefCell<Option<String>>>,
}

impl ReceiveCb {
    fn new(colo: bool) -> Self {
        ReceiveCb {
            colo,
            epoch: 0,
            interval: Duration::from_millis(100),
            last_digest: Rc::new(RefCell::new(None)),
        }
    }
}

impl RestoreCallbacks<SimGuest> for ReceiveCb {
    fn restore_results(&mut self, g: &mut SimGuest, _store_gfn: u64, _console_gfn: u64) {
        if !self.colo {
            return;
        }
        g.dom.checkpoint_applied();
        self.epoch += 1;
        let d = g.state_digest_hex();
        crate::out::say(&format!("epoch {} state-digest: {d}\n", self.epoch));
        *self.last_digest.borrow_mut() = Some(d);
    }

    fn postcopy(&mut self, g: &mut SimGuest) -> i32 {
        g.dom.resume();
        1
    }

    fn wait_checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        g.dom.run_for(self.interval);
        1
    }

    fn suspend(&mut self, g: &mut SimGuest) -> i32 {
        g.dom.suspend();
        1
    }
}

/// The simulated toolstack's control of its copy: prints every change as `guest: STATE`.
struct Control {
    fault: Option<Fault>,
}

impl Control {
    fn say(&self, state: &str) {
        crate::out::say(&format!("guest: {state}\n"));
    }
}

impl GuestControl<SimGuest> for Control {
    fn resume(&mut self, g: &mut SimGuest) -> Result<(), ToolstackError> {
        g.dom.resume();
        if let Some(dm) = g.dm.as_mut() {
            xenmig::dm::DeviceModel::resume(dm)?;
        }
        self.say("resumed");
        Ok(())
    }

    fn unpause(&mut self, g: &mut SimGuest) -> Result<(), ToolstackError> {
        if self.fault == Some(Fault::UnpauseFails) {
            return Err("unpausing failed (injected fault)".into());
        }
        if g.dom.is_suspended() {
            // A COLO secondary whose link broke while it was suspended: its device model
            // stopped with it.
            if let Some(dm) = g.dm.as_mut() {
                xenmig::dm::DeviceModel::resume(dm)?;
            }
        }
        g.dom.resume();
        self.say("running");
        Ok(())
    }

    fn destroy(&mut self, _g: &mut SimGuest) {
        self.say("destroyed");
    }

    fn phase(&mut self, phase: Phase) {
        match (phase, self.fault) {
            (Phase::Banner, Some(Fault::BeforeImage)) => die("before the image"),
            (Phase::Received, Some(Fault::AfterReceived)) => die("after \"domain received\""),
            (Phase::Go, Some(Fault::AfterGo)) => die("after \"cleared to unpause\""),
            _ => {}
        }
    }
}

fn channel<'a>(rx: Link<'a>, compress: bool, wire: Wire<Link<'a>>) -> Result<Channel<'a>> {
    let rx = io::BufReader::with_capacity(1 << 20, rx);
    let tx = io::BufWriter::with_capacity(1 << 20, wire);
    Ok(if compress {
        Channel::compressed(rx, tx)?
    } else {
        Channel::plain(rx, tx)
    })
}

pub(crate) fn sim_migrate(a: MigrateArgs) -> Result<ExitCode> {
    let addr = loopback(&a.target)?;
    let fault = parse_fault(a.fault.as_deref())?;
    let silence = a.silence.limit()?;
    if a.colo.is_some() && a.domain.guest != "hvm" {
        bail!("--colo needs --guest hvm: COLO only supports HVM guests, as in libxl");
    }
    let Built {
        guest: mut dom,
        policy,
        config,
    } = build_guest(&a.domain, true)?;
    let checkpoints = a.remus.or(a.colo);
    let mut cb = SaveCb::new(policy, checkpoints, Box::new(crate::out::Stdout));
    cb.announce = true;
    if let Some(Fault::Checkpoint(k)) = fault {
        cb.after_checkpoint = Some(Box::new(move |epoch| {
            if epoch >= k {
                die(&format!("after checkpoint {epoch}"));
            }
        }));
    }
    crate::out::say("guest: running\n");
    let start = Instant::now();
    let stream = match silence {
        Some(t) => TcpStream::connect_timeout(&addr, t),
        None => TcpStream::connect(addr),
    }
    .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let count = Rc::new(Cell::new(0));
    let limit = match fault {
        Some(Fault::MidImage(n)) => Some(n),
        _ => None,
    };
    let wire = Wire {
        inner: Link::new(&stream, silence)?,
        count: count.clone(),
        limit,
    };
    let mut ctl = Control { fault };
    let opts = MigrateOptions {
        live: a.live,
        remus: a.remus.is_some(),
        colo: a.colo.is_some(),
    };
    let report = {
        let mut chan = channel(Link::new(&stream, silence)?, a.compress, wire)?;
        migrate::send(
            &mut dom,
            &mut cb,
            &mut ctl,
            &mut chan,
            config.as_bytes(),
            opts,
        )
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let elapsed = start.elapsed();
    // The guest was suspended until the receiver reported it running (or until now).
    let downtime = cb.suspended_at.map(|t| t.elapsed());
    crate::sim::wait_for_background_digests();
    if let Some(s) = &report.stats {
        let verdict = match &cb.policy {
            Policy::Downtime(p) => p.verdict.clone(),
            Policy::Xen => None,
        };
        crate::sim::print_stats(&s.libxc, Some(s), verdict.as_ref(), false);
    }
    let stream_bytes = report.stats.as_ref().map_or(0, |s| s.bytes);
    match report.outcome {
        SendOutcome::Migrated | SendOutcome::Checkpointed => {
            crate::out::say(&format!(
                "migrated: {:.3} s, {} octets on the wire ({} in the stream, {:.1} MiB/s), downtime {}\n",
                elapsed.as_secs_f64(),
                count.get(),
                stream_bytes,
                stream_bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9),
                match (checkpoints, downtime) {
                    (None, Some(d)) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
                    _ => "-".into(),
                }
            ));
            Ok(ExitCode::SUCCESS)
        }
        SendOutcome::RolledBack { error, resumed } => {
            eprintln!(
                "xenmig sim migrate: migration failed: {error}; {}",
                if resumed {
                    "the guest was resumed here"
                } else {
                    "resuming the guest failed too"
                }
            );
            Ok(ExitCode::from(1))
        }
        SendOutcome::Undefined { error } => {
            crate::out::say("migration: undefined\n");
            eprintln!(
                "xenmig sim migrate: failed after the point of no return: {error}; \
                 the guest is left suspended here and its state on the receiver is unknown"
            );
            Ok(ExitCode::from(2))
        }
    }
}

pub(crate) fn sim_migrate_receive(a: ReceiveArgs) -> Result<ExitCode> {
    let addr = loopback(&a.listen)?;
    let fault = parse_fault(a.fault.as_deref())?;
    let silence = a.silence.limit()?;
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    crate::out::say(&format!("listening: {}\n", listener.local_addr()?));
    let (stream, peer) = listener.accept().context("accept")?;
    drop(listener);
    stream.set_nodelay(true)?;
    eprintln!("connection from {peer}");
    let count = Rc::new(Cell::new(0));
    let limit = match fault {
        Some(Fault::MidImage(n)) => Some(n),
        _ => None,
    };
    let mut ctl = Control { fault };
    let opts = MigrateOptions {
        live: true,
        remus: a.remus,
        colo: a.colo,
    };
    let seed = a.seed;
    let dirty_rate = a.dirty_rate;
    let mut cb = ReceiveCb::new(a.colo);
    let last_checkpoint = cb.last_digest.clone();
    let report = {
        let rx = Wire {
            inner: Link::new(&stream, silence)?,
            count,
            limit,
        };
        let rx = io::BufReader::with_capacity(64 << 10, rx);
        let tx = io::BufWriter::new(Link::new(&stream, silence)?);
        let mut chan = if a.compress {
            Channel::compressed(rx, tx)?
        } else {
            Channel::plain(rx, tx)
        };
        migrate::receive(
            move |d: &Destination<'_>| {
                let mut g = destination(d, seed)?;
                if dirty_rate > 0 {
                    g.dom.set_workload(Some(Workload {
                        rate_pages_per_sec: dirty_rate,
                        seed: seed ^ 0x5eed,
                    }));
                }
                Ok(g)
            },
            &mut cb,
            &mut ctl,
            &mut chan,
            opts,
            |g: &SimGuest, r| {
                if r.failed_over || r.libxc.failed_over {
                    eprintln!(
                        "the stream broke after checkpoint {}: failed over to it",
                        r.libxc.checkpoints
                    );
                }
                if let Some(d) = last_checkpoint.borrow().as_deref() {
                    // COLO: the guest has run since; what the primary sent last is the
                    // checkpoint's digest.
                    crate::out::say(&format!("state-digest: {d}\n"));
                    return;
                }
                // Digested from a snapshot on another thread: "domain received" goes out
                // without waiting for it.
                crate::sim::print_digest_in_background(g, "");
                crate::out::say("guest: paused\n");
            },
        )
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    crate::sim::wait_for_background_digests();
    match report.outcome {
        ReceiveOutcome::Running(_) => Ok(ExitCode::SUCCESS),
        ReceiveOutcome::RestoreFailed(e) => {
            eprintln!("xenmig sim migrate-receive: restore failed, nothing unpaused: {e}");
            Ok(ExitCode::from(1))
        }
        ReceiveOutcome::Abandoned(e) => {
            eprintln!(
                "xenmig sim migrate-receive: the sender did not clear us to unpause ({e}); \
                 the incoming copy was destroyed"
            );
            Ok(ExitCode::from(1))
        }
        ReceiveOutcome::UnpauseFailed(e) => {
            eprintln!("xenmig sim migrate-receive: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
