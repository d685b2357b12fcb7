//! `xenmig sim save` and `xenmig sim restore`: the save and restore drivers over simulated
//! domains, so anyone can make real streams and watch a live migration converge. Streams are
//! written as a bare libxc image, a libxl stream (with the simulated device model of HVM
//! guests) or an xl save file; a restore detects which.

#[path = "sim_migrate.rs"]
mod sim_migrate;

use crate::io::Input;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use xenmig::dm::{SimDeviceModel, SimGuest, SimGuestExt};
use xenmig::domain::{
    CheckpointAnswer, GuestType, PrecopyDecision, PrecopyStats, RestoreCallbacks, SaveCallbacks,
};
use xenmig::libxl_stream::{
    restore_stream, save_libxl, save_xl, Destination, LibxlRestoreError, LibxlRestoreResult,
    LibxlSaveStats,
};
use xenmig::policy::{DowntimeTarget, DowntimeVerdict};
use xenmig::reader::{Framing, Reader, ReaderOptions};
use xenmig::restore::{RestoreError, RestoreOptions};
use xenmig::save::{save, SaveOptions, SaveStats, StreamType};
use xenmig::sim::{SimConfig, SimDomain, Workload, MAX_VCPUS};
use xenmig::wire::Strictness;
use xenmig::xlfile::SimDomainConfig;
use xenmig::StreamError;

#[derive(clap::Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(clap::Subcommand)]
enum SimCommand {
    /// Save a simulated domain; prints `state-digest: HEX` of its state at the final suspend
    /// (for HVM guests in libxl or xl framing, the device model included).
    Save(SaveArgs),
    /// Restore a stream (libxc, libxl or xl framing, detected) into a fresh simulated domain;
    /// prints `state-digest: HEX`.
    Restore(RestoreArgs),
    /// Migrate a simulated domain to `xenmig sim migrate-receive` over loopback TCP with xl's
    /// protocol; prints `state-digest: HEX` at the final suspend, `guest: STATE` lines, the
    /// time, bytes and downtime.
    Migrate(sim_migrate::MigrateArgs),
    /// Receive one migration (xl's `migrate-receive`); prints `state-digest: HEX` after the
    /// restore and `guest: STATE` lines.
    MigrateReceive(sim_migrate::ReceiveArgs),
}

/// The simulated domain a save or a migration starts from.
#[derive(clap::Args)]
pub(crate) struct DomainArgs {
    /// Guest type.
    #[arg(long, default_value = "pv", value_parser = ["pv", "hvm"])]
    guest: String,
    /// PV guest width in bits.
    #[arg(long, default_value_t = 64, value_parser = parse_width)]
    width: u32,
    /// Guest memory, e.g. 128M, 1G (bytes, K, M, G, with or without "iB").
    #[arg(long, default_value = "128M")]
    memory: String,
    #[arg(long, default_value_t = 2)]
    vcpus: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pages the guest dirties per second (simulated time) while it runs.
    #[arg(long, default_value_t = 0)]
    dirty_rate: u64,
    /// Precopy policy: `xen` (stop below 50 dirty pages or after 5 passes) or `downtime:MS`.
    #[arg(long, default_value = "xen")]
    policy: String,
    /// Simulated link bandwidth in bytes per second (drives the simulated clock).
    #[arg(long, default_value = "1G")]
    bandwidth: String,
    /// Domain name written in the xl config.
    #[arg(long, default_value = "xenmig-sim")]
    name: String,
    /// Write TEXT into guest memory at guest-physical address PADDR before the guest runs
    /// (a marker for forensic tests; the frames must be populated data pages). Repeatable.
    #[arg(long, value_name = "PADDR:TEXT", value_parser = parse_plant)]
    plant: Vec<(u64, String)>,
}

fn parse_plant(s: &str) -> Result<(u64, String), String> {
    let (at, text) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not PADDR:TEXT"))?;
    let at = match at.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => at.parse(),
    }
    .map_err(|_| format!("`{at}` is not an address"))?;
    Ok((at, text.to_string()))
}

#[derive(clap::Args)]
struct SaveArgs {
    #[command(flatten)]
    domain: DomainArgs,
    /// Precopy passes while the guest runs.
    #[arg(long)]
    live: bool,
    /// Checkpoint N epochs (Remus), then close the stream without END.
    #[arg(long, value_name = "EPOCHS")]
    remus: Option<u32>,
    /// Debug mode: after the final pass, send every page again for the receiver to compare.
    #[arg(long)]
    verify_mode: bool,
    /// Per-pass statistics as JSON on stderr (its schema: `xenmig schema sim-save`).
    #[arg(long)]
    json: bool,
    /// Framing: a bare libxc image, a libxl stream (HVM guests get a simulated device model,
    /// whose xenstore keys and context the stream carries), or an xl save file (xl header with
    /// the JSON domain config, then the libxl stream).
    #[arg(long, default_value = "libxc", value_parser = ["libxc", "libxl", "xl"])]
    frame: String,
    /// Where the stream goes (`-` for stdout).
    #[arg(short = 'o', long = "out")]
    out: String,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The stream (`-` for stdin); its framing is detected.
    #[arg(default_value = "-")]
    input: String,
    /// Seed of the destination's machine frame numbers.
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Results as JSON on stderr (its schema: `xenmig schema sim-restore`).
    #[arg(long)]
    json: bool,
    /// Check only what Xen's restore checks (the default also rejects what the reference
    /// verifier rejects, such as non-zero reserved fields).
    #[arg(long)]
    lenient: bool,
}

pub fn run(a: SimArgs) -> ExitCode {
    let r = match a.command {
        SimCommand::Save(s) => sim_save(s),
        SimCommand::Restore(r) => sim_restore(r),
        SimCommand::Migrate(m) => sim_migrate::sim_migrate(m),
        SimCommand::MigrateReceive(m) => sim_migrate::sim_migrate_receive(m),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xenmig sim: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_width(s: &str) -> Result<u32, String> {
    match s {
        "32" => Ok(32),
        "64" => Ok(64),
        _ => Err(format!("`{s}` is not 32 or 64")),
    }
}

/// Parses sizes like `128M`, `1G`, `4096`, `2GiB`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('K') | Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') | Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('G') | Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('T') | Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow!("`{s}` is not a size (e.g. 128M, 1G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("`{s}` is too large"))
}

pub(crate) enum Policy {
    Xen,
    Downtime(DowntimeTarget),
}

pub(crate) struct SaveCb {
    pub(crate) policy: Policy,
    pub(crate) remus: Option<u32>,
    pub(crate) epoch: u32,
    pub(crate) digest_at_suspend: Option<String>,
    pub(crate) digests: Vec<String>,
    pub(crate) interval: Duration,
    pub(crate) report: Box<dyn Write>,
    /// When the guest was last suspended.
    pub(crate) suspended_at: Option<std::time::Instant>,
    /// Print `guest: suspended` at each suspend, and `state-digest:` at the final one of a
    /// plain (not Remus) save (migration).
    pub(crate) announce: bool,
    /// Called after each Remus checkpoint is out, with its epoch (fault injection).
    pub(crate) after_checkpoint: Option<Box<dyn FnMut(u32)>>,
}

impl SaveCb {
    pub(crate) fn new(policy: Policy, remus: Option<u32>, report: Box<dyn Write>) -> Self {
        SaveCb {
            policy,
            remus,
            epoch: 0,
            digest_at_suspend: None,
            digests: Vec::new(),
            interval: Duration::from_millis(100),
            report,
            suspended_at: None,
            announce: false,
            after_checkpoint: None,
        }
    }
}

impl SaveCallbacks<SimGuest> for SaveCb {
    fn suspend(&mut self, g: &mut SimGuest) -> bool {
        g.dom.suspend();
        self.suspended_at = Some(std::time::Instant::now());
        if self.announce && self.remus.is_none() {
            // The final suspend of a migration: the digest of this state is printed whatever
            // happens next, computed on a snapshot beside the stop-and-copy rather than
            // inside the guest's downtime.
            let _ = writeln!(self.report, "guest: suspended");
            let _ = self.report.flush();
            print_digest_in_background(g, "");
            return true;
        }
        self.digest_at_suspend = Some(g.state_digest_hex());
        if self.announce {
            let _ = writeln!(self.report, "guest: suspended");
        }
        true
    }

    fn postcopy(&mut self, g: &mut SimGuest) -> i32 {
        self.epoch += 1;
        let d = self.digest_at_suspend.clone().unwrap_or_default();
        let _ = writeln!(self.report, "epoch {} state-digest: {d}", self.epoch);
        self.digests.push(d);
        g.dom.resume();
        1
    }

    fn checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        if let Some(f) = &mut self.after_checkpoint {
            f(self.epoch);
        }
        match self.remus {
            // 0: until the link breaks, one checkpoint per interval of real time, as `xl
            // remus -i` paces them.
            Some(0) => {
                std::thread::sleep(self.interval);
                g.dom.run_for(self.interval);
                1
            }
            Some(n) if self.epoch < n => {
                // The guest runs for one checkpoint interval.
                g.dom.run_for(self.interval);
                1
            }
            _ => 0,
        }
    }

    /// COLO asks here what Remus asks in `checkpoint` (the layer answers that one itself).
    fn wait_checkpoint(&mut self, g: &mut SimGuest) -> i32 {
        self.checkpoint(g)
    }

    fn precopy_policy(&mut self, stats: PrecopyStats) -> Option<PrecopyDecision> {
        match &mut self.policy {
            Policy::Xen => None,
            Policy::Downtime(p) => Some(p.decide(stats)),
        }
    }
}

/// `state-digest:` lines being computed on other threads (see
/// [`print_digest_in_background`]); [`wait_for_background_digests`] joins them.
static PENDING_DIGESTS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Prints `{prefix}state-digest: HEX` of the guest as it is now, on standard output, once
/// a thread has computed it from a snapshot; the caller goes on at once. The process must
/// call [`wait_for_background_digests`] before it exits.
pub(crate) fn print_digest_in_background(g: &SimGuest, prefix: &'static str) {
    let job = g.state_digest_in_background();
    let printer = std::thread::spawn(move || match job.join() {
        Ok(d) => crate::out::say(&format!("{prefix}state-digest: {}\n", xenmig::sim::hex(&d))),
        Err(_) => eprintln!("xenmig: computing the state digest failed"),
    });
    PENDING_DIGESTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(printer);
}

/// Waits until every digest started by [`print_digest_in_background`] is printed.
pub(crate) fn wait_for_background_digests() {
    let pending = std::mem::take(&mut *PENDING_DIGESTS.lock().unwrap_or_else(|e| e.into_inner()));
    for p in pending {
        let _ = p.join();
    }
    let _ = std::io::stdout().flush();
}

/// Standard output without Rust's line buffering, for streams.
fn raw_stdout() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // fd 1 stays open for the life of the process; ManuallyDrop keeps us from closing it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) })
}

/// A simulated domain built from the domain options.
pub(crate) struct Built {
    pub(crate) guest: SimGuest,
    pub(crate) policy: Policy,
    /// The xl domain config (JSON).
    pub(crate) config: String,
}

/// Builds the domain the options describe; `with_dm`: HVM guests get a simulated device
/// model (libxl and xl framing carry it).
pub(crate) fn build_guest(a: &DomainArgs, with_dm: bool) -> Result<Built> {
    let guest = if a.guest == "hvm" {
        GuestType::X86Hvm
    } else {
        GuestType::X86Pv
    };
    let bytes = parse_size(&a.memory)?;
    let pages = bytes / xenmig::limits::PAGE_SIZE as u64;
    if pages == 0 {
        bail!("--memory {} is less than one page", a.memory);
    }
    let policy = match a.policy.as_str() {
        "xen" => Policy::Xen,
        p => match p.strip_prefix("downtime:") {
            Some(ms) => {
                let ms: f64 = ms
                    .parse()
                    .map_err(|_| anyhow!("--policy downtime:MS needs milliseconds, got `{ms}`"))?;
                Policy::Downtime(DowntimeTarget::new(Duration::from_secs_f64(ms / 1000.0)))
            }
            None => bail!("--policy must be `xen` or `downtime:MS`, got `{p}`"),
        },
    };
    let mut dom = SimDomain::build(SimConfig {
        guest,
        width: (a.width / 8) as u8,
        memory_pages: pages,
        vcpus: a.vcpus,
        seed: a.seed,
    })
    .map_err(|e| anyhow!("{e}"))?;
    for (at, text) in &a.plant {
        dom.plant(*at, text.as_bytes())
            .map_err(|e| anyhow!("--plant {at:#x}: {e}"))?;
    }
    dom.set_bandwidth(parse_size(&a.bandwidth)?);
    if a.dirty_rate > 0 {
        dom.set_workload(Some(Workload {
            rate_pages_per_sec: a.dirty_rate,
            seed: a.seed ^ 0x5eed,
        }));
    }
    // libxl saves an HVM guest's device model with it; a bare libxc image has no room for it.
    let dm = (guest == GuestType::X86Hvm && with_dm).then(|| SimDeviceModel::build(a.seed));
    let config = SimDomainConfig {
        name: a.name.clone(),
        guest,
        memory: pages * xenmig::limits::PAGE_SIZE as u64,
        vcpus: a.vcpus,
        seed: Some(a.seed),
        width: (guest == GuestType::X86Pv).then_some(a.width),
    }
    .to_json();
    Ok(Built {
        guest: SimGuest::new(dom, dm),
        policy,
        config,
    })
}

fn sim_save(a: SaveArgs) -> Result<ExitCode> {
    if a.remus == Some(0) {
        bail!("--remus 0 (until the link breaks) is for `sim migrate`; a save needs N >= 1");
    }
    if a.verify_mode && (!a.live || a.remus.is_some()) {
        bail!("--verify-mode needs --live and a plain (not --remus) save, as in Xen");
    }
    let frame: Framing = a.frame.parse().map_err(|e: String| anyhow!(e))?;
    let Built {
        guest: mut dom,
        policy,
        config,
    } = build_guest(&a.domain, frame != Framing::Libxc)?;
    let to_stdout = a.out == "-";
    let report: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(crate::out::Stdout)
    };
    let mut cb = SaveCb::new(policy, a.remus, report);
    let opts = SaveOptions {
        live: a.live,
        debug: a.verify_mode,
        stream_type: if a.remus.is_some() {
            StreamType::Remus
        } else {
            StreamType::Plain
        },
        ..SaveOptions::default()
    };
    let (stats, libxl_stats) = if to_stdout {
        if crate::io::closed_at_start(1) {
            bail!("cannot write the stream: {}", crate::io::closed_error(1));
        }
        let mut out = raw_stdout();
        let (stats, libxl_stats, mut w) = save_framed(
            frame,
            &mut dom,
            &mut cb,
            std::io::BufWriter::with_capacity(1 << 20, &mut *out),
            opts,
            &config,
        )?;
        w.flush().context("cannot write the stream to stdout")?;
        (stats, libxl_stats)
    } else {
        let spec = crate::io::OutputSpec::from_path_arg(&a.out);
        let mut output = spec
            .create()
            .with_context(|| format!("cannot create {}", a.out))?;
        let (stats, libxl_stats, _) =
            save_framed(frame, &mut dom, &mut cb, &mut output, opts, &config)?;
        output
            .commit()
            .with_context(|| format!("cannot write {}", a.out))?;
        (stats, libxl_stats)
    };
    let verdict = match &cb.policy {
        Policy::Downtime(p) => p.verdict.clone(),
        Policy::Xen => None,
    };
    print_stats(&stats, libxl_stats.as_ref(), verdict.as_ref(), a.json);
    if a.remus.is_none() {
        let d = cb
            .digest_at_suspend
            .clone()
            .unwrap_or_else(|| dom.state_digest_hex());
        let _ = writeln!(cb.report, "state-digest: {d}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Saves in the chosen framing; the libxl figures come with libxl and xl framing.
fn save_framed<W: Write>(
    frame: Framing,
    dom: &mut SimGuest,
    cb: &mut SaveCb,
    out: W,
    opts: SaveOptions,
    config: &str,
) -> Result<(SaveStats, Option<LibxlSaveStats>, W)> {
    match frame {
        Framing::Libxc => {
            let (stats, w) =
                save(dom, cb, out, opts, None).map_err(|e| anyhow!("save failed: {e}"))?;
            Ok((stats, None, w))
        }
        Framing::Libxl => {
            let (s, w) =
                save_libxl(dom, cb, out, opts, None).map_err(|e| anyhow!("save failed: {e}"))?;
            Ok((s.libxc.clone(), Some(s), w))
        }
        Framing::Xl => {
            let (s, w) = save_xl(dom, cb, out, opts, Some(config.as_bytes()), None)
                .map_err(|e| anyhow!("save failed: {e}"))?;
            Ok((s.libxc.clone(), Some(s), w))
        }
    }
}

pub(crate) fn print_stats(
    stats: &SaveStats,
    libxl: Option<&LibxlSaveStats>,
    verdict: Option<&DowntimeVerdict>,
    json: bool,
) {
    let mut err = std::io::stderr().lock();
    if json {
        let v = match libxl {
            Some(l) => serde_json::json!({
                "save": stats,
                "downtime_policy": verdict,
                "libxl": {
                    "bytes": l.bytes,
                    "libxl_records": l.libxl_records,
                    "checkpoints": l.checkpoints,
                    "emulator_records": l.emulator_records,
                },
            }),
            None => serde_json::json!({ "save": stats, "downtime_policy": verdict }),
        };
        let _ = writeln!(err, "{}", crate::schema::stamp(v));
        return;
    }
    let _ = writeln!(
        err,
        "{:>4}  {:<9}  {:>10}  {:>10}  {:>10}  {:>10}  {:>12}",
        "pass", "guest", "sent", "dirtied", "MiB", "ms", "predicted ms"
    );
    for p in &stats.passes {
        let _ = writeln!(
            err,
            "{:>4}  {:<9}  {:>10}  {:>10}  {:>10.1}  {:>10.1}  {:>12}",
            p.pass,
            if p.suspended { "suspended" } else { "running" },
            p.pages_sent,
            p.pages_dirtied,
            p.bytes as f64 / (1 << 20) as f64,
            p.time.as_secs_f64() * 1e3,
            p.predicted_downtime
                .map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
        );
    }
    let _ = writeln!(
        err,
        "total {:.1} MiB, {} checkpoints, downtime {}{}",
        stats.bytes as f64 / (1 << 20) as f64,
        stats.checkpoints,
        stats.downtime.map_or("-".to_string(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1e3
        )),
        if stats.stop_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", stats.stop_reason)
        }
    );
    if let Some(v) = verdict {
        let _ = writeln!(err, "downtime policy: {}", v.reason);
    }
    if let Some(l) = libxl {
        let _ = writeln!(
            err,
            "libxl: {} records ({} emulator, {} checkpoint ends), stream {:.1} MiB",
            l.libxl_records,
            l.emulator_records,
            l.checkpoints,
            l.bytes as f64 / (1 << 20) as f64
        );
    }
}

pub(crate) struct RestoreCb;

impl RestoreCallbacks<SimGuest> for RestoreCb {
    fn checkpoint(&mut self, _g: &mut SimGuest) -> CheckpointAnswer {
        CheckpointAnswer::Success
    }
}

/// The destination a stream asks for: the guest type of its domain header (an xl config
/// must name the same one, and gives the vcpu count); HVM guests in libxl framing get an
/// empty device model for the emulator records to load into.
pub(crate) fn destination(d: &Destination<'_>, seed: u64) -> Result<SimGuest, RestoreError> {
    let mut vcpus = MAX_VCPUS;
    if let Some(c) = d.config {
        let bad = |detail: String| {
            RestoreError::Stream(
                StreamError::invalid(xenmig::xl::XlHeader::SIZE as u64, "xl.config", detail)
                    .with_item("xl config"),
            )
        };
        let cfg = SimDomainConfig::from_json(c).map_err(bad)?;
        if cfg.guest != d.guest {
            return Err(bad(format!(
                "the config describes a {:?} guest, the stream a {:?} one",
                cfg.guest, d.guest
            )));
        }
        eprintln!(
            "xl config: {} ({}, {} vcpus, {} MiB)",
            cfg.name,
            if cfg.guest == GuestType::X86Hvm {
                "hvm"
            } else {
                "pv"
            },
            cfg.vcpus,
            cfg.memory >> 20
        );
        vcpus = cfg.vcpus.clamp(1, MAX_VCPUS);
    }
    Ok(SimGuest::for_destination(d, vcpus, seed))
}

fn sim_restore(a: RestoreArgs) -> Result<ExitCode> {
    let input = Input::from_path_arg(&a.input);
    let opened = input
        .open()
        .with_context(|| format!("cannot open {}", input.describe()))?;
    let opts = ReaderOptions {
        framing: None,
        strictness: if a.lenient {
            Strictness::Lenient
        } else {
            Strictness::Strict
        },
    };
    // Checkpointed streams are recognised by their CHECKPOINT records.
    let ropts = RestoreOptions {
        stream_type: StreamType::Remus,
        store_evtchn: 1,
        console_evtchn: 2,
    };
    let seed = a.seed;
    let make = move |d: &Destination<'_>| destination(d, seed);
    let result: Result<(SimGuest, LibxlRestoreResult), LibxlRestoreError> = match opened {
        crate::io::Opened::File(f) => {
            // The file is only read while mapped.
            let map = unsafe { memmap2::Mmap::map(&f) }
                .with_context(|| format!("cannot map {}", input.describe()))?;
            let mut r = Reader::from_slice(&map, opts);
            restore_stream(make, &mut RestoreCb, &mut r, ropts, None)
        }
        crate::io::Opened::Stream(s) => {
            let mut r = Reader::from_read(s, opts);
            restore_stream(make, &mut RestoreCb, &mut r, ropts, None)
        }
    };
    match result {
        Ok((dom, lres)) => {
            let res = &lres.libxc;
            if a.json {
                let v = if lres.framing == Some(Framing::Libxc) {
                    serde_json::json!({ "restore": res, "state_digest": dom.state_digest_hex() })
                } else {
                    serde_json::json!({
                        "restore": res,
                        "libxl": {
                            "framing": lres.framing,
                            "xl": lres.xl,
                            "libxl_records": lres.libxl_records,
                            "checkpoints": lres.checkpoints,
                            "emulator_records": lres.emulator_records,
                            "end": lres.end,
                        },
                        "state_digest": dom.state_digest_hex(),
                    })
                };
                eprintln!("{}", crate::schema::stamp(v));
            } else if res.failed_over {
                eprintln!(
                    "the stream broke after checkpoint {}: failed over to it",
                    res.checkpoints
                );
            }
            crate::out::say(&format!("state-digest: {}\n", dom.state_digest_hex()));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("xenmig sim restore: rejected: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
