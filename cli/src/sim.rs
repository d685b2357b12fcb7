//! `xenmig sim save` and `xenmig sim restore`: the save and restore drivers over simulated
//! domains, so anyone can make real streams and watch a live migration converge.

use crate::io::Input;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use xenmig::domain::{
    CheckpointAnswer, GuestType, PrecopyDecision, PrecopyStats, RestoreCallbacks, SaveCallbacks,
};
use xenmig::policy::{DowntimeTarget, DowntimeVerdict};
use xenmig::reader::{Reader, ReaderOptions};
use xenmig::restore::{restore_new, RestoreOptions, RestoreResult};
use xenmig::save::{save, SaveOptions, SaveStats, StreamType};
use xenmig::sim::{SimConfig, SimDomain, Workload, MAX_VCPUS};
use xenmig::wire::Strictness;

#[derive(clap::Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(clap::Subcommand)]
enum SimCommand {
    /// Save a simulated domain; prints `state-digest: HEX` of its state at the final suspend.
    Save(SaveArgs),
    /// Restore a stream into a fresh simulated domain; prints `state-digest: HEX`.
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
struct SaveArgs {
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
    /// Precopy passes while the guest runs.
    #[arg(long)]
    live: bool,
    /// Pages the guest dirties per second (simulated time) while it runs.
    #[arg(long, default_value_t = 0)]
    dirty_rate: u64,
    /// Precopy policy: `xen` (stop below 50 dirty pages or after 5 passes) or `downtime:MS`.
    #[arg(long, default_value = "xen")]
    policy: String,
    /// Simulated link bandwidth in bytes per second (drives the simulated clock).
    #[arg(long, default_value = "1G")]
    bandwidth: String,
    /// Checkpoint N epochs (Remus), then close the stream without END.
    #[arg(long, value_name = "EPOCHS")]
    remus: Option<u32>,
    /// Debug mode: after the final pass, send every page again for the receiver to compare.
    #[arg(long)]
    verify_mode: bool,
    /// Per-pass statistics as JSON on stderr.
    #[arg(long)]
    json: bool,
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
    /// Results as JSON.
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

enum Policy {
    Xen,
    Downtime(DowntimeTarget),
}

struct SaveCb {
    policy: Policy,
    remus: Option<u32>,
    epoch: u32,
    digest_at_suspend: Option<String>,
    digests: Vec<String>,
    interval: Duration,
    report: Box<dyn Write>,
}

impl SaveCallbacks<SimDomain> for SaveCb {
    fn suspend(&mut self, dom: &mut SimDomain) -> bool {
        dom.suspend();
        self.digest_at_suspend = Some(dom.state_digest_hex());
        true
    }

    fn postcopy(&mut self, dom: &mut SimDomain) -> i32 {
        self.epoch += 1;
        let d = self.digest_at_suspend.clone().unwrap_or_default();
        let _ = writeln!(self.report, "epoch {} state-digest: {d}", self.epoch);
        self.digests.push(d);
        dom.resume();
        1
    }

    fn checkpoint(&mut self, dom: &mut SimDomain) -> i32 {
        match self.remus {
            Some(n) if self.epoch < n => {
                // The guest runs for one checkpoint interval.
                dom.run_for(self.interval);
                1
            }
            _ => 0,
        }
    }

    fn precopy_policy(&mut self, stats: PrecopyStats) -> Option<PrecopyDecision> {
        match &mut self.policy {
            Policy::Xen => None,
            Policy::Downtime(p) => Some(p.decide(stats)),
        }
    }
}

/// Standard output without Rust's line buffering, for streams.
fn raw_stdout() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // fd 1 stays open for the life of the process; ManuallyDrop keeps us from closing it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) })
}

fn sim_save(a: SaveArgs) -> Result<ExitCode> {
    let guest = if a.guest == "hvm" {
        GuestType::X86Hvm
    } else {
        GuestType::X86Pv
    };
    let bytes = parse_size(&a.memory)?;
    let pages = bytes / 4096;
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
    if a.verify_mode && (!a.live || a.remus.is_some()) {
        bail!("--verify-mode needs --live and a plain (not --remus) save, as in Xen");
    }
    let mut dom = SimDomain::build(SimConfig {
        guest,
        width: (a.width / 8) as u8,
        memory_pages: pages,
        vcpus: a.vcpus,
        seed: a.seed,
    })
    .map_err(|e| anyhow!("{e}"))?;
    dom.set_bandwidth(parse_size(&a.bandwidth)?);
    if a.dirty_rate > 0 {
        dom.set_workload(Some(Workload {
            rate_pages_per_sec: a.dirty_rate,
            seed: a.seed ^ 0x5eed,
        }));
    }
    let to_stdout = a.out == "-";
    let report: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let mut cb = SaveCb {
        policy,
        remus: a.remus,
        epoch: 0,
        digest_at_suspend: None,
        digests: Vec::new(),
        interval: Duration::from_millis(100),
        report,
    };
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
    let stats = if to_stdout {
        let mut out = raw_stdout();
        let (stats, _) = save(
            &mut dom,
            &mut cb,
            std::io::BufWriter::with_capacity(1 << 20, &mut *out),
            opts,
            None,
        )
        .map_err(|e| anyhow!("save failed: {e}"))?;
        stats
    } else {
        let spec = crate::io::OutputSpec::from_path_arg(&a.out);
        let mut output = spec
            .create()
            .with_context(|| format!("cannot create {}", a.out))?;
        let (stats, _) = save(&mut dom, &mut cb, &mut output, opts, None)
            .map_err(|e| anyhow!("save failed: {e}"))?;
        output
            .commit()
            .with_context(|| format!("cannot write {}", a.out))?;
        stats
    };
    let verdict = match &cb.policy {
        Policy::Downtime(p) => p.verdict.clone(),
        Policy::Xen => None,
    };
    print_stats(&stats, verdict.as_ref(), a.json);
    if a.remus.is_none() {
        let d = cb
            .digest_at_suspend
            .clone()
            .unwrap_or_else(|| dom.state_digest_hex());
        let _ = writeln!(cb.report, "state-digest: {d}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_stats(stats: &SaveStats, verdict: Option<&DowntimeVerdict>, json: bool) {
    let mut err = std::io::stderr().lock();
    if json {
        let v = serde_json::json!({ "save": stats, "downtime_policy": verdict });
        let _ = writeln!(err, "{v}");
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
}

struct RestoreCb;

impl RestoreCallbacks<SimDomain> for RestoreCb {
    fn checkpoint(&mut self, _dom: &mut SimDomain) -> CheckpointAnswer {
        CheckpointAnswer::Success
    }
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
    let make = move |guest: GuestType, _h: &xenmig::libxc::DomainHeader| {
        Ok(SimDomain::empty_for_restore(guest, 0, MAX_VCPUS, seed))
    };
    let result: Result<(SimDomain, RestoreResult), xenmig::restore::RestoreError> = match opened {
        crate::io::Opened::File(f) => {
            // The file is only read while mapped.
            let map = unsafe { memmap2::Mmap::map(&f) }
                .with_context(|| format!("cannot map {}", input.describe()))?;
            let mut r = Reader::from_slice(&map, opts);
            restore_new(make, &mut RestoreCb, &mut r, ropts)
        }
        crate::io::Opened::Stream(s) => {
            let mut r = Reader::from_read(s, opts);
            restore_new(make, &mut RestoreCb, &mut r, ropts)
        }
    };
    match result {
        Ok((dom, res)) => {
            if a.json {
                let v =
                    serde_json::json!({ "restore": res, "state_digest": dom.state_digest_hex() });
                eprintln!("{v}");
            } else if res.failed_over {
                eprintln!(
                    "the stream broke after checkpoint {}: failed over to it",
                    res.checkpoints
                );
            }
            println!("state-digest: {}", dom.state_digest_hex());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("xenmig sim restore: rejected: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
