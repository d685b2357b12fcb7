//! `cargo xtask realxen [OPTIONS] [SCENARIO...]`: proves xenmig's save helper on a real Xen.
//!
//! Boots Debian's Xen 4.17 hypervisor with a Linux dom0 under `qemu-system-x86_64 -accel tcg`
//! (no KVM needed) and runs `xl` scenarios with xenmig as libxl's save helper: the scripts
//! and guest configurations are in `realxen/`, the dom0 initramfs is built here around a
//! release build of xenmig with the `xen` feature. Each scenario reports one
//! `REALXEN-RESULT` line on the serial console; the report lists them with their key lines.
//!
//! Setup installs what is missing with apt-get (QEMU, Xen's userspace, busybox, libxen-dev)
//! and only downloads and unpacks the hypervisor and kernel packages into the work
//! directory: the host's boot loader is never touched.

use crate::cmd::{output, sh};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every scenario, in the order a full run takes them.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "pv-save",
        "64-bit PV: xl save through xenmig, xenmig verify, xl restore with Xen's helper",
    ),
    (
        "pv-restore",
        "64-bit PV: xl save with Xen's helper, xl restore through xenmig",
    ),
    (
        "hvm-save",
        "HVM: xl save through xenmig, xenmig verify, xl restore with Xen's helper",
    ),
    (
        "hvm-restore",
        "HVM: xl save with Xen's helper, xl restore through xenmig",
    ),
    (
        "hvm-migrate",
        "HVM: live xl migrate to localhost, xenmig on both ends",
    ),
    (
        "pvh-remus",
        "PVH: xl remus through xenmig, primary killed, secondary fails over",
    ),
    (
        "pvh-save",
        "PVH: xl save through xenmig, xl restore with Xen's helper",
    ),
    (
        "pvh-restore",
        "PVH: xl save with Xen's helper, xl restore through xenmig",
    ),
    (
        "tlb-probe",
        "platform: do dom0's memory and vector registers read what was last written \
         (realxen-probe, and busybox pipelines, idle and with a PVH guest running)",
    ),
    (
        "bench",
        "xl save, xl restore and live xl migrate of 512 MiB PV and HVM guests with Xen's \
         helper and with xenmig, alternating, 3 rounds: times, ratios and migration downtime \
         (the emulated host gets 4 GiB, dom0 1.5 GiB)",
    ),
    (
        "xen-pv-save",
        "baseline: pv-save with Xen's own helper (its image verified by xenmig)",
    ),
    (
        "xen-hvm-save",
        "baseline: hvm-save with Xen's own helper (its image verified by xenmig)",
    ),
    (
        "xen-hvm-migrate",
        "baseline: hvm-migrate with Xen's own helper on both ends",
    ),
    (
        "xen-pvh-remus",
        "baseline: pvh-remus with Xen's own helper on both ends",
    ),
];

/// What `cargo xtask realxen` runs without arguments.
const DEFAULT: &[&str] = &[
    "pv-save",
    "pv-restore",
    "hvm-save",
    "hvm-restore",
    "hvm-migrate",
    "pvh-remus",
];

const USAGE: &str = "\
usage: cargo xtask realxen [OPTIONS] [SCENARIO[*N]...]

Boots Xen 4.17 under QEMU (TCG) and runs xl scenarios with xenmig as libxl's save helper.
SCENARIO*N runs a scenario N times in the same boot (reported as SCENARIO#1..N); the xen-*
scenarios run the same steps with Xen's own helper, as a baseline.

Every run is one attempt with one verdict: PASS, FAIL (a failed xl command, a stream that
xenmig verify refuses or that names a pfn the guest cannot have, a helper killed by a
signal, an allocation abort, a heap report by glibc) or PLATFORM (the guest did not boot
before any helper ran). Only PLATFORM runs are booted again by --retries; a FAIL stands.

options:
  --retries N       boot again for the runs whose verdict was PLATFORM, up to N times (default 0)
  --timeout SECS    give up on one boot after SECS seconds (default 3000)
  --workdir DIR     downloads, initramfs, logs (default $REALXEN_DIR, else <target>/realxen)
  --keep-images     keep the images and streams in the output archive (failed ones are kept anyway)
  --no-malloc-check run without glibc's MALLOC_PERTURB_/MALLOC_CHECK_=3 in dom0
  --asan            the helper built with AddressSanitizer (needs the nightly toolchain)
  --xen-opts OPTS   more options on Xen's command line (e.g. \"pcid=0 xpti=0\")
  --cpu MODEL       QEMU's CPU model (default max)
  --smp N           emulated CPUs (default 2)
  --tcg single|multi  QEMU's TCG threading (default multi: one host thread per vCPU)
  --no-setup        do not check for or install packages
  --list            list the scenarios

Run as root: setup uses apt-get, and the dom0 initramfs carries files only root may read.";

struct Options {
    /// What dom0 runs: NAME or NAME*N.
    scenarios: Vec<String>,
    retries: u32,
    timeout: Duration,
    workdir: PathBuf,
    keep_images: bool,
    setup: bool,
    malloc_check: bool,
    /// The helper built with AddressSanitizer (nightly).
    asan: bool,
    xen_opts: String,
    cpu: String,
    /// Emulated CPUs.
    smp: u32,
    tcg: String,
}

/// A run's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    /// The emulated platform's failure before any helper ran (the guest did not boot).
    Platform,
}

/// The outcome of one run, as its boot reported it.
#[derive(Debug, Clone)]
struct Outcome {
    verdict: Verdict,
    reason: String,
    seconds: Option<f64>,
    boot: usize,
}

/// The run names a scenario list expands to: `a*3` gives `a#1`, `a#2`, `a#3`.
fn run_names(specs: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for spec in specs {
        match spec.split_once('*') {
            Some((name, n)) => {
                let n: usize = n.parse().unwrap_or(1);
                if n > 1 {
                    out.extend((1..=n).map(|k| format!("{name}#{k}")));
                } else {
                    out.push(name.to_string());
                }
            }
            None => out.push(spec.clone()),
        }
    }
    out
}

/// The scenario a run name belongs to (`a#2` → `a`).
fn scenario_of(run: &str) -> &str {
    run.split_once('#').map_or(run, |(s, _)| s)
}

/// The scenario list that runs `runs` again, one run each (`a#1`, `a#4` → `a*2`).
fn rerun_specs(runs: &[String]) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in runs {
        let s = scenario_of(r);
        match counts.iter_mut().find(|(n, _)| n == s) {
            Some((_, c)) => *c += 1,
            None => counts.push((s.to_string(), 1)),
        }
    }
    counts
        .into_iter()
        .map(|(s, c)| if c > 1 { format!("{s}*{c}") } else { s })
        .collect()
}

/// Merges one boot's outcomes into `results`. `asked` are the run names this boot stands in
/// for, in order (a rerun of `a#1` and `a#4` is reported as `a#1`, `a#2`): each gets the
/// outcome of the run in its place, a missing one a FAIL. Every attempt is kept.
fn merge_boot(
    results: &mut BTreeMap<String, Vec<Outcome>>,
    asked: &[String],
    got: &BTreeMap<String, Outcome>,
    boot: usize,
) {
    let specs = rerun_specs(asked);
    let reported = run_names(&specs);
    for (want, as_run) in asked.iter().zip(reported.iter()) {
        let o = got.get(as_run).cloned().unwrap_or(Outcome {
            verdict: Verdict::Fail,
            reason: "no result: the boot ended before the run reported".into(),
            seconds: None,
            boot,
        });
        results.entry(want.clone()).or_default().push(o);
    }
}

/// A run's final verdict: a FAIL in any attempt stands; PLATFORM only if no attempt passed.
fn final_verdict(attempts: &[Outcome]) -> Verdict {
    if attempts.iter().any(|o| o.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if attempts.iter().any(|o| o.verdict == Verdict::Pass) {
        Verdict::Pass
    } else {
        Verdict::Platform
    }
}

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let Some(opts) = parse(root, args)? else {
        return Ok(());
    };
    let t0 = Instant::now();
    fs::create_dir_all(&opts.workdir)?;
    let work = opts
        .workdir
        .canonicalize()
        .with_context(|| format!("work directory {}", opts.workdir.display()))?;
    if opts.setup {
        setup(&work)?;
    }
    let xenmig = build_xenmig(root, opts.asan)?;
    // dom0 gets xenmig the way an operator does: from its Debian package (an ASan build has
    // no package, and is copied in at the package's paths).
    let package = if opts.asan {
        None
    } else {
        Some(crate::deb::build(root)?)
    };
    let probe = build_probe(root)?;
    match &package {
        Some(p) => step(&format!("dom0 initramfs with the package {}", p.display())),
        None => step(&format!("dom0 initramfs with {}", xenmig.display())),
    }
    build_initramfs(root, &work, &xenmig, package.as_deref(), &probe)?;
    let setup_time = t0.elapsed();

    let runs = run_names(&opts.scenarios);
    let mut results: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    let mut todo = runs.clone();
    let mut boots = 0;
    for boot in 1..=opts.retries as usize + 1 {
        if todo.is_empty() {
            break;
        }
        boots = boot;
        let specs = if boot == 1 {
            opts.scenarios.clone()
        } else {
            rerun_specs(&todo)
        };
        let got = boot_once(&work, &specs, &opts, boot)?;
        merge_boot(&mut results, &todo, &got, boot);
        // Boot again only for runs whose every attempt so far was the platform's.
        todo.retain(|r| {
            results
                .get(r)
                .is_some_and(|a| final_verdict(a) == Verdict::Platform)
        });
    }
    report(&work, &runs, &results, setup_time, t0.elapsed());
    let bench_missed = if runs.iter().any(|r| scenario_of(r) == "bench") {
        bench_report(&work, boots)
    } else {
        Vec::new()
    };
    let failed: Vec<&String> = runs
        .iter()
        .filter(|r| {
            results
                .get(*r)
                .is_none_or(|a| final_verdict(a) != Verdict::Pass)
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} runs did not pass: {}",
            failed.len(),
            runs.len(),
            failed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !bench_missed.is_empty() {
        bail!(
            "the bench missed {} target(s): {}",
            bench_missed.len(),
            bench_missed.join("; ")
        );
    }
    Ok(())
}

/// Rounds the bench must complete with each helper for a target to count.
const BENCH_MIN_ROUNDS: usize = 3;

/// The bench's table from every boot's console (printed, and written to `<work>/bench.md`);
/// returns the targets missed.
fn bench_report(work: &Path, boots: usize) -> Vec<String> {
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    for boot in 1..=boots {
        let log = fs::read(work.join(format!("serial-{boot}.log"))).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        samples.extend(crate::realxen_bench::parse(&log));
        notes.extend(crate::realxen_bench::notes(&log));
    }
    if samples.is_empty() {
        return vec!["no operation was timed".into()];
    }
    let (mut md, missed) = crate::realxen_bench::table(&samples, BENCH_MIN_ROUNDS);
    // What this Xen cannot do with either helper has no row and no target.
    for (guest, op, line) in &notes {
        if !samples.iter().any(|s| &s.guest == guest && &s.op == op) {
            md.push_str(&format!("\n{line}\n"));
        }
    }
    println!();
    println!("bench: Xen's libxl-save-helper against xenmig, same boot, best of each:");
    for l in md.lines() {
        println!("  {l}");
    }
    let _ = fs::write(work.join("bench.md"), &md);
    println!("  table: {}/bench.md", work.display());
    missed
}

fn parse(root: &Path, args: &[String]) -> Result<Option<Options>> {
    let mut o = Options {
        scenarios: Vec::new(),
        retries: 0,
        timeout: Duration::from_secs(3000),
        workdir: std::env::var_os("REALXEN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir(root).join("realxen")),
        keep_images: false,
        setup: true,
        malloc_check: true,
        asan: false,
        xen_opts: String::new(),
        cpu: "max".into(),
        smp: 2,
        tcg: "multi".into(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--list" => {
                for (name, what) in SCENARIOS {
                    let default = if DEFAULT.contains(name) {
                        " (default)"
                    } else {
                        ""
                    };
                    println!("{name:12} {what}{default}");
                }
                return Ok(None);
            }
            "--retries" => o.retries = value("--retries")?.parse().context("--retries")?,
            "--timeout" => {
                o.timeout = Duration::from_secs(value("--timeout")?.parse().context("--timeout")?)
            }
            "--workdir" => o.workdir = PathBuf::from(value("--workdir")?),
            "--keep-images" => o.keep_images = true,
            "--no-setup" => o.setup = false,
            "--no-malloc-check" => o.malloc_check = false,
            "--asan" => o.asan = true,
            "--xen-opts" => o.xen_opts = value("--xen-opts")?,
            "--cpu" => o.cpu = value("--cpu")?,
            "--smp" => {
                o.smp = value("--smp")?
                    .parse()
                    .ok()
                    .filter(|&n| (1..=8).contains(&n))
                    .context("--smp takes a number from 1 to 8")?
            }
            "--tcg" => {
                o.tcg = value("--tcg")?;
                if o.tcg != "single" && o.tcg != "multi" {
                    bail!("--tcg takes single or multi");
                }
            }
            s if s.starts_with('-') => bail!("unknown option `{s}`\n\n{USAGE}"),
            s => {
                let (name, count) = match s.split_once('*') {
                    Some((n, c)) => (
                        n,
                        c.parse::<usize>()
                            .ok()
                            .filter(|&c| c >= 1)
                            .with_context(|| {
                                format!("`{s}`: the count after * must be 1 or more")
                            })?,
                    ),
                    None => (s, 1),
                };
                if !SCENARIOS.iter().any(|(n, _)| *n == name) {
                    bail!("unknown scenario `{name}` (see --list)");
                }
                if o.scenarios
                    .iter()
                    .any(|x| scenario_of(x.split('*').next().unwrap_or(x)) == name)
                {
                    bail!("scenario `{name}` named twice (use {name}*N to repeat it)");
                }
                o.scenarios.push(if count > 1 {
                    format!("{name}*{count}")
                } else {
                    name.to_string()
                });
            }
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = DEFAULT.iter().map(|s| s.to_string()).collect();
    }
    Ok(Some(o))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn step(what: &str) {
    println!("realxen: {what}");
}

// --- setup -------------------------------------------------------------------------------

const XEN_BIN: &str = "/usr/lib/xen-4.17/bin";
const DEVICE_MODEL: &str = "/usr/libexec/xen-qemu-system-i386";

/// Files whose absence means a package is missing, and the package.
const NEEDED: &[(&str, &str)] = &[
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/usr/lib/xen-4.17/bin/xl", "xen-utils-4.17"),
    (DEVICE_MODEL, "qemu-system-xen"),
    ("/usr/share/seabios/bios-256k.bin", "seabios"),
    ("/bin/busybox", "busybox-static"),
    ("/usr/bin/cpio", "cpio"),
    ("/sbin/depmod", "kmod"),
    ("/usr/include/xenctrl.h", "libxen-dev"),
    // The package dom0 installs xenmig from (`cargo xtask deb`).
    ("/usr/bin/dpkg-shlibdeps", "dpkg-dev"),
    ("/usr/bin/strip", "binutils"),
];

fn setup(work: &Path) -> Result<()> {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(f, _)| !Path::new(f).exists())
        .map(|(_, p)| *p)
        .collect();
    // busybox must be the static one: it runs in both initramfs without libraries.
    let busybox_static = Path::new("/bin/busybox").exists()
        && !output(Command::new("ldd").arg("/bin/busybox"))
            .unwrap_or_default()
            .contains("=>");
    let mut pkgs: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
    if !busybox_static && !pkgs.iter().any(|p| p == "busybox-static") {
        pkgs.push("busybox-static".into());
    }
    let mut lists_fresh = false;
    if !pkgs.is_empty() {
        step(&format!("apt-get install {}", pkgs.join(" ")));
        apt_install(&pkgs)?;
        lists_fresh = true;
    }
    let stage = work.join("stage");
    if stage.join("KVER").exists() && stage.join("boot").exists() {
        return Ok(());
    }
    // apt-cache and apt-get download need the package lists, which a fresh machine may lack.
    if !lists_fresh {
        step("apt-get update");
        apt_update()?;
    }
    step("downloading and unpacking the Xen hypervisor and Linux kernel packages");
    let debs = work.join("debs");
    let _ = fs::remove_dir_all(&debs);
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&debs)?;
    fs::create_dir_all(&stage)?;
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let kpkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .context("apt-cache depends linux-image-amd64 names no kernel package")?
        .to_string();
    sh(Command::new("apt-get")
        .args(["download", "xen-hypervisor-4.17-amd64", &kpkg])
        .current_dir(&debs))?;
    for e in fs::read_dir(&debs)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            sh(Command::new("dpkg-deb").arg("-x").arg(&p).arg(&stage))?;
        }
    }
    let kver = kpkg
        .strip_prefix("linux-image-")
        .context("kernel package name")?;
    sh(Command::new("depmod").arg("-b").arg(&stage).arg(kver))?;
    fs::write(stage.join("KVER"), kver)?;
    Ok(())
}

fn apt_update() -> Result<()> {
    sh(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// apt-get install, pinning an installed qemu-utils to the archive's QEMU when a newer one
/// (from backports) would block qemu-system-x86.
fn apt_install(pkgs: &[String]) -> Result<()> {
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    apt_update()?;
    // Keep package scripts from starting Xen's services on this host.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let created = !policy.exists();
    if created {
        fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        sh(Command::new("chmod").arg("+x").arg(policy))?;
    }
    let mut args: Vec<String> = ["install", "-y", "--no-install-recommends"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(pkgs.iter().cloned());
    let installed = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))
        .unwrap_or_default();
    let candidate = output(Command::new("apt-cache").args(["policy", "qemu-system-x86"]))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_string))
        .unwrap_or_default();
    if pkgs.iter().any(|p| p.starts_with("qemu"))
        && !installed.is_empty()
        && !candidate.is_empty()
        && installed != candidate
    {
        step(&format!(
            "qemu-utils {installed} would block qemu-system-x86 {candidate}: installing qemu-utils {candidate}"
        ));
        args.push("--allow-downgrades".into());
        args.push(format!("qemu-utils={candidate}"));
    }
    let r = sh(Command::new("apt-get").args(&args).envs(env));
    if created {
        let _ = fs::remove_file(policy);
    }
    r
}

// --- builds ------------------------------------------------------------------------------

/// Builds xenmig with the `xen` feature in a target directory of its own (`<target>/xen`):
/// the workspace's `release/xenmig`, which tests run, stays the build without it, and a test
/// run or build sharing the workspace's target directory is neither rebuilt nor blocked.
/// With `asan`, the build uses the nightly toolchain with AddressSanitizer (its runtime is
/// linked into the binary, so it runs in dom0 as it is) in `<target>/xen-asan`.
fn build_xenmig(root: &Path, asan: bool) -> Result<PathBuf> {
    let dir = target_dir(root).join(if asan { "xen-asan" } else { "xen" });
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = if asan {
        // rustup's cargo picks the toolchain from `+nightly`.
        let mut c = Command::new("cargo");
        c.arg("+nightly")
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .env("RUSTFLAGS", "-Zsanitizer=address");
        c
    } else {
        Command::new(cargo)
    };
    cmd.args([
        "build",
        "--release",
        "-p",
        "xenmig-cli",
        "--features",
        "xen",
        "--target-dir",
    ])
    .arg(&dir);
    if asan {
        cmd.args(["--target", "x86_64-unknown-linux-gnu"]);
    }
    step(&format!("{cmd:?}"));
    let status = cmd.current_dir(root).status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building xenmig with the xen feature failed ({status})");
    }
    let bin = if asan {
        dir.join("x86_64-unknown-linux-gnu/release/xenmig")
    } else {
        dir.join("release/xenmig")
    };
    if !bin.exists() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// Builds `realxen-probe` (xtask/src/bin/realxen-probe.rs), the platform's memory-coherence
/// check that scenario `tlb-probe` runs in dom0, and `realxen-downtime`
/// (xtask/src/bin/realxen-downtime.rs), which times a live migration's downtime for scenario
/// `bench`, in the same target directory as xenmig; returns the directory that holds both.
fn build_probe(root: &Path) -> Result<PathBuf> {
    let dir = target_dir(root).join("xen");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "-p",
        "xtask",
        "--bin",
        "realxen-probe",
        "--bin",
        "realxen-downtime",
        "--target-dir",
    ])
    .arg(&dir);
    step(&format!("{cmd:?}"));
    let status = cmd.current_dir(root).status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building realxen-probe and realxen-downtime failed ({status})");
    }
    Ok(dir.join("release"))
}

/// Copies `src` to the same path under `root`, following links.
fn install(root: &Path, src: &Path) -> Result<()> {
    let rel = src.strip_prefix("/").unwrap_or(src);
    let dst = root.join(rel);
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(src, &dst).with_context(|| format!("copy {}", src.display()))?;
    Ok(())
}

/// The shared libraries (and loader) an executable needs, from ldd.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = output(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "=>") {
            if let Some(p) = words.get(i + 1).filter(|p| p.starts_with('/')) {
                libs.push(PathBuf::from(p));
            }
        } else if let Some(p) = words.first().filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// busybox and a link for each of its applets.
fn add_busybox(root: &Path) -> Result<()> {
    for d in ["bin", "sbin", "usr/bin", "usr/sbin"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    let list = output(Command::new("/bin/busybox").arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let p = root.join(applet);
        if p.symlink_metadata().is_err() {
            if let Some(d) = p.parent() {
                fs::create_dir_all(d)?;
            }
            symlink("/bin/busybox", &p)?;
        }
    }
    Ok(())
}

fn cpio_gz(dir: &Path, out: &Path, level: u32) -> Result<()> {
    let script = format!(
        "find . | cpio -o -H newc --quiet | gzip -{level} > '{}'",
        out.display()
    );
    sh(Command::new("sh").arg("-c").arg(script).current_dir(dir))
}

fn build_initramfs(
    root: &Path,
    work: &Path,
    xenmig: &Path,
    package: Option<&Path>,
    probe: &Path,
) -> Result<()> {
    let scripts = root.join("realxen");
    let stage = work.join("stage");
    let kver = fs::read_to_string(stage.join("KVER"))
        .context("no unpacked kernel: run without --no-setup once")?
        .trim()
        .to_string();
    let build = work.join("build");
    let _ = fs::remove_dir_all(&build);
    fs::create_dir_all(&build)?;

    // The guests' initramfs: busybox and the heartbeat.
    let g = build.join("domU-root");
    for d in ["proc", "sys", "dev"] {
        fs::create_dir_all(g.join(d))?;
    }
    add_busybox(&g)?;
    fs::copy(scripts.join("domU-init.sh"), g.join("init"))?;
    chmod_x(&g.join("init"))?;
    cpio_gz(&g, &build.join("domU-initrd.gz"), 9)?;

    // dom0: the toolstack, QEMU's device model and firmware, xenmig, modules, guests.
    let d = build.join("dom0-root");
    for dir in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "out",
        "guest",
        "etc/xen",
        "var/lib/xen",
        "var/log/xen/console",
        "root",
        "usr/lib/xenmig",
    ] {
        fs::create_dir_all(d.join(dir))?;
    }
    symlink("/run", d.join("var/run"))?;
    symlink("/run/lock", d.join("var/lock"))?;
    add_busybox(&d)?;
    let mut bins: Vec<PathBuf> = [
        "xl",
        "libxl-save-helper",
        "xenstored",
        "xenconsoled",
        "xenconsole",
        "xen-init-dom0",
    ]
    .iter()
    .map(|b| Path::new(XEN_BIN).join(b))
    .collect();
    bins.push(PathBuf::from(DEVICE_MODEL));
    for b in &bins {
        install(&d, b)?;
    }
    for f in [
        "/usr/lib/xen-4.17/boot/hvmloader",
        "/usr/share/seabios/bios-256k.bin",
        "/usr/share/qemu/linuxboot_dma.bin",
        "/usr/share/qemu/linuxboot.bin",
        "/usr/share/qemu/kvmvapic.bin",
    ] {
        if Path::new(f).exists() {
            install(&d, Path::new(f))?;
        }
    }
    sh(Command::new("cp")
        .args(["-rL", "/usr/share/qemu/keymaps"])
        .arg(d.join("usr/share/qemu/")))?;
    // xenmig: the package unpacked as dpkg installs it (/usr/bin/xenmig, and
    // /usr/lib/xenmig/libxl-save-helper and convert-legacy-stream as links to it); an ASan
    // build, which has no package, copied to the same paths.
    let helper_dir = d.join("usr/lib/xenmig");
    let installed = d.join("usr/bin/xenmig");
    match package {
        Some(deb) => {
            sh(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&d))?;
            for link in ["libxl-save-helper", "convert-legacy-stream"] {
                let l = helper_dir.join(link);
                if fs::canonicalize(&l).ok() != fs::canonicalize(&installed).ok() {
                    bail!(
                        "the package's {} does not lead to /usr/bin/xenmig",
                        l.display()
                    );
                }
            }
        }
        None => {
            fs::create_dir_all(d.join("usr/bin"))?;
            fs::copy(xenmig, &installed)?;
            sh(Command::new("strip").arg("--strip-debug").arg(&installed))?;
            symlink("../../bin/xenmig", helper_dir.join("libxl-save-helper"))?;
            symlink("../../bin/xenmig", helper_dir.join("convert-legacy-stream"))?;
        }
    }
    bins.push(installed);
    for p in ["realxen-probe", "realxen-downtime"] {
        fs::copy(probe.join(p), helper_dir.join(p))?;
        bins.push(probe.join(p));
    }
    let mut libs: Vec<PathBuf> = Vec::new();
    for b in &bins {
        libs.extend(libraries(b)?);
    }
    libs.push(PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"));
    // glibc's debugging malloc, preloaded in dom0 for MALLOC_CHECK_=3 (see dom0-init.sh).
    let malloc_debug = Path::new("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0");
    if malloc_debug.exists() {
        libs.push(malloc_debug.to_path_buf());
    }
    libs.sort();
    libs.dedup();
    for l in &libs {
        install(&d, l)?;
    }
    // Xen's drivers and virtio-blk for the output disk, in dependency order.
    let mut order: Vec<String> = Vec::new();
    for m in [
        "xenfs",
        "xen-evtchn",
        "xen-gntdev",
        "xen-gntalloc",
        "xen-privcmd",
        "virtio_pci",
        "virtio_blk",
    ] {
        let deps = output(Command::new("modprobe").arg("-d").arg(&stage).args([
            "-S",
            &kver,
            "--show-depends",
            m,
        ]))?;
        for line in deps.lines() {
            let mut w = line.split_whitespace();
            if w.next() == Some("insmod") {
                if let Some(ko) = w.next() {
                    let rel = Path::new(ko)
                        .strip_prefix(&stage)
                        .unwrap_or(Path::new(ko))
                        .to_string_lossy()
                        .into_owned();
                    let rel = format!("/{}", rel.trim_start_matches('/'));
                    if !order.contains(&rel) {
                        order.push(rel);
                    }
                }
            }
        }
    }
    for rel in &order {
        let dst = d.join(rel.trim_start_matches('/'));
        if let Some(p) = dst.parent() {
            fs::create_dir_all(p)?;
        }
        fs::copy(stage.join(rel.trim_start_matches('/')), &dst)?;
    }
    fs::write(d.join("etc/modules.order"), order.join("\n") + "\n")?;
    let vmlinuz = stage.join(format!("boot/vmlinuz-{kver}"));
    fs::copy(&vmlinuz, d.join("guest/vmlinuz"))?;
    fs::copy(build.join("domU-initrd.gz"), d.join("guest/domU-initrd.gz"))?;
    for cfg in ["pv64.cfg", "pvh64.cfg", "hvm64.cfg"] {
        fs::copy(scripts.join(cfg), d.join("etc/xen").join(cfg))?;
    }
    fs::write(d.join("etc/xen/xl.conf"), "autoballoon=\"off\"\n")?;
    fs::copy(scripts.join("dom0-init.sh"), d.join("init"))?;
    fs::copy(scripts.join("checks.sh"), d.join("etc/realxen-checks.sh"))?;
    chmod_x(&d.join("init"))?;
    cpio_gz(&d, &build.join("dom0-initrd.gz"), 1)?;

    // QEMU's multiboot loader wants the hypervisor uncompressed.
    let xen_gz = fs::read_dir(stage.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("xen-4.17") && n.ends_with(".gz"))
        })
        .context("no xen-4.17*.gz in the unpacked hypervisor package")?;
    let out = fs::File::create(build.join("xen"))?;
    let status = Command::new("zcat")
        .arg(&xen_gz)
        .stdout(out)
        .status()
        .context("zcat")?;
    if !status.success() {
        bail!("zcat {} failed", xen_gz.display());
    }
    fs::copy(&vmlinuz, build.join("vmlinuz"))?;
    Ok(())
}

fn chmod_x(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

// --- boot --------------------------------------------------------------------------------

/// How long the console may stay silent before the harness asks Xen what it is doing. Xen,
/// its HVM guests' firmware and the scenarios (every 30 s while Remus checkpoints) print
/// often; silence this long usually means dom0 or the whole machine stopped, and the dump
/// costs a boot that is merely slow nothing but console lines.
const QUIET_CONSOLE: Duration = Duration::from_secs(180);

/// How many times a boot asks.
const MAX_KEY_DUMPS: u32 = 2;

/// Xen's debug keys sent on a quiet console: `d` registers and stacks of every CPU, `0` dom0's
/// vCPU registers, `q` each domain's state, `r` the schedulers' run queues.
const DEBUG_KEYS: &[u8] = b"d0qr";

/// Switches the serial console's input to Xen (three Ctrl-A) and sends [`DEBUG_KEYS`], one at
/// a time; what Xen prints goes to the console log like the rest.
fn send_debug_keys(console: &Path) -> Result<()> {
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(console)
        .with_context(|| format!("cannot connect to {}", console.display()))?;
    // What the console prints meanwhile also comes down this socket: drop it, so that QEMU
    // never waits on a full socket buffer.
    let mut drain = s.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
    });
    s.write_all(&[1, 1, 1])?;
    std::thread::sleep(Duration::from_millis(500));
    for &k in DEBUG_KEYS {
        s.write_all(&[k])?;
        std::thread::sleep(Duration::from_secs(3));
    }
    s.shutdown(std::net::Shutdown::Both)?;
    let _ = reader.join();
    Ok(())
}

/// Boots once with `scenarios`; returns what the serial console reported.
fn boot_once(
    work: &Path,
    scenarios: &[String],
    opts: &Options,
    boot: usize,
) -> Result<BTreeMap<String, Outcome>> {
    let build = work.join("build");
    let disk = build.join("out.img");
    let _ = fs::remove_file(&disk);
    fs::File::create(&disk)?.set_len(3 << 30)?;
    let serial = work.join(format!("serial-{boot}.log"));
    let _ = fs::remove_file(&serial);
    // The console is also a socket (its output still logged to `serial`), so that keys can be
    // sent to Xen when the console goes quiet (see `QUIET_CONSOLE`).
    let console = work.join(format!("console-{boot}.sock"));
    let _ = fs::remove_file(&console);
    if serial.to_string_lossy().contains(',') || console.to_string_lossy().contains(',') {
        bail!("the work directory's path may not contain commas (QEMU's option separator)");
    }
    // smap=0: with SMAP, the 64-bit PV dom0 faults on its first iret under QEMU's TCG.
    // spec-ctrl=eager-fpu: Xen's lazy FPU switching (CR0.TS and #NM, its default on the AMD
    // CPU QEMU emulates) loses vector registers between vCPUs sharing a CPU under TCG: dom0
    // processes read another vCPU's xmm values (realxen/README.md, scenario tlb-probe). Eager
    // switching saves and restores them at every switch, and the probe reads none wrong.
    // The bench's 512 MiB guests need room for two copies during a migration, and dom0 for
    // an image in its tmpfs.
    let bench = scenarios
        .iter()
        .any(|s| s.split('*').next() == Some("bench"));
    let (host_mib, dom0_mib) = if bench { (4096, 1536) } else { (3072, 1024) };
    let xen_cmdline = format!(
        "console=com1 com1=115200,8n1 dom0_mem={dom0_mib}M,max:{dom0_mib}M dom0_max_vcpus=2 \
         loglvl=all guest_loglvl=all console_timestamps=boot smap=0 spec-ctrl=eager-fpu {}",
        opts.xen_opts
    );
    let dom0_cmdline = format!(
        "console=hvc0 earlyprintk=xen loglevel=6 realxen.scenarios={} realxen.keep={} realxen.malloc={} realxen.asan={}",
        // QEMU separates multiboot modules with commas: none may appear in a command line.
        scenarios.join("+"),
        opts.keep_images as u8,
        // glibc's debugging malloc and ASan's allocator do not mix.
        (opts.malloc_check && !opts.asan) as u8,
        opts.asan as u8
    );
    if opts.xen_opts.contains(',') {
        bail!("--xen-opts may not contain commas (QEMU's multiboot module separator)");
    }
    step(&format!(
        "boot {boot}: Xen under qemu-system-x86_64 -accel tcg,thread={} -cpu {} -smp {}, Xen options `{}`, scenarios {}",
        opts.tcg,
        opts.cpu,
        opts.smp,
        opts.xen_opts,
        scenarios.join(" ")
    ));
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .arg("-accel")
        .arg(format!("tcg,thread={}", opts.tcg))
        .args(["-cpu", &opts.cpu, "-machine", "pc"])
        .args(["-m", &host_mib.to_string(), "-smp", &opts.smp.to_string()])
        .args(["-display", "none", "-monitor", "none"])
        .args(["-no-reboot", "-net", "none"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=con,path={},server=on,wait=off,logfile={},logappend=off",
            console.display(),
            serial.display()
        ))
        .args(["-serial", "chardev:con"])
        .arg("-kernel")
        .arg(build.join("xen"))
        .arg("-append")
        .arg(&xen_cmdline)
        .arg("-initrd")
        .arg(format!(
            "{} {dom0_cmdline},{}",
            build.join("vmlinuz").display(),
            build.join("dom0-initrd.gz").display()
        ))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    // Follow the console: progress and results as they come.
    let mut seen = 0u64;
    let mut pending = String::new();
    let mut timed_out = false;
    let mut last_output = Instant::now();
    let mut key_dumps = 0;
    loop {
        let done = child.try_wait()?.is_some();
        if let Ok(mut f) = fs::File::open(&serial) {
            if f.seek(SeekFrom::Start(seen)).is_ok() {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() {
                    if !buf.is_empty() {
                        last_output = Instant::now();
                    }
                    seen += buf.len() as u64;
                    pending.push_str(&String::from_utf8_lossy(&buf));
                    while let Some(i) = pending.find('\n') {
                        let line: String = pending.drain(..=i).collect();
                        let line = line.trim_end();
                        if let Some(p) = line.find("REALXEN") {
                            println!("  {:>5}s {}", t0.elapsed().as_secs(), &line[p..]);
                            let _ = std::io::stdout().flush();
                        }
                    }
                }
            }
        }
        if done {
            break;
        }
        if last_output.elapsed() > QUIET_CONSOLE && key_dumps < MAX_KEY_DUMPS {
            key_dumps += 1;
            last_output = Instant::now();
            let said = match send_debug_keys(&console) {
                Ok(()) => format!(
                    "sent Xen's debug keys {} (their output follows in {})",
                    String::from_utf8_lossy(DEBUG_KEYS),
                    serial.display()
                ),
                Err(e) => format!("could not send Xen's debug keys: {e:#}"),
            };
            println!(
                "  {:>5}s console quiet for {} s: {said}",
                t0.elapsed().as_secs(),
                QUIET_CONSOLE.as_secs()
            );
        }
        if t0.elapsed() > opts.timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    step(&format!(
        "boot {boot} ended after {}s{}",
        t0.elapsed().as_secs(),
        if timed_out {
            " (timed out: killed)"
        } else {
            ""
        }
    ));
    let text = String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).into_owned();
    let out = work.join(format!("out-{boot}"));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    if text.contains("archive written") {
        if let Err(e) = sh(Command::new("tar")
            .arg("-xf")
            .arg(&disk)
            .arg("-C")
            .arg(&out))
        {
            println!("realxen: cannot extract the output archive: {e:#}");
        }
    }
    let _ = fs::remove_file(&disk);
    for line in text.lines() {
        if let Some(p) = line.find("REALXEN-PLATFORM ") {
            step(&format!("boot {boot}: {}", &line[p + 17..]));
        }
    }
    Ok(parse_results(&text, boot))
}

/// `REALXEN-RESULT <scenario> PASS|FAIL <reason>` and `=== scenario X done in Ns` lines.
fn parse_results(serial: &str, boot: usize) -> BTreeMap<String, Outcome> {
    let mut out: BTreeMap<String, Outcome> = BTreeMap::new();
    for line in serial.lines() {
        if let Some(p) = line.find("REALXEN-RESULT ") {
            let mut w = line[p + 15..].trim().splitn(3, ' ');
            let (Some(s), Some(v)) = (w.next(), w.next()) else {
                continue;
            };
            let verdict = match v {
                "PASS" => Verdict::Pass,
                "PLATFORM" => Verdict::Platform,
                _ => Verdict::Fail,
            };
            out.insert(
                s.to_string(),
                Outcome {
                    verdict,
                    reason: w.next().unwrap_or("").trim().to_string(),
                    seconds: None,
                    boot,
                },
            );
        } else if let Some(p) = line.find("=== scenario ") {
            let rest = &line[p + 13..];
            if let Some((s, t)) = rest.split_once(" done in ") {
                if let (Some(o), Ok(secs)) = (
                    out.get_mut(s.trim()),
                    t.trim().trim_end_matches('s').parse::<f64>(),
                ) {
                    o.seconds = Some(secs);
                }
            }
        }
    }
    out
}

// --- report ------------------------------------------------------------------------------

/// The records table of `xenmig info` (`layer type name count bytes`), without PAGE_DATA's
/// octets (they follow the guest's memory contents only through the page count).
fn record_table(info: &str) -> Vec<String> {
    info.lines()
        .skip_while(|l| !l.starts_with("records:"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() < 5 {
                return None;
            }
            let bytes = if w[2] == "PAGE_DATA" { "-" } else { w[4] };
            Some(format!("{} {} {} {}", w[0], w[2], w[3], bytes))
        })
        .collect()
}

/// Compares the record layout of the image xenmig wrote with the one Xen's helper wrote.
fn compare_layouts(work: &Path, results: &BTreeMap<String, Vec<Outcome>>) {
    for guest in ["pv", "hvm", "pvh"] {
        // The first passing run of a scenario that left its report.
        let find = |sc: &str| -> Option<String> {
            results.iter().find_map(|(run, attempts)| {
                let o = attempts.last()?;
                (scenario_of(run) == sc && o.verdict == Verdict::Pass)
                    .then(|| {
                        fs::read_to_string(work.join(format!("out-{}/{run}.info.txt", o.boot))).ok()
                    })
                    .flatten()
            })
        };
        let (Some(ours), Some(xens)) = (
            find(&format!("{guest}-save")),
            find(&format!("{guest}-restore")),
        ) else {
            continue;
        };
        let (a, b) = (record_table(&ours), record_table(&xens));
        if a.is_empty() || b.is_empty() {
            continue;
        }
        if a == b {
            println!(
                "  layout {guest}: xenmig's image has the records of Xen's ({} kinds, same counts and sizes)",
                a.len()
            );
        } else {
            println!("  layout {guest}: xenmig's image differs from Xen's:");
            for l in a.iter().filter(|l| !b.contains(l)) {
                println!("      xenmig only: {l}");
            }
            for l in b.iter().filter(|l| !a.contains(l)) {
                println!("      Xen only:    {l}");
            }
        }
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Platform => "PLATFORM",
    }
}

/// The per-scenario table: runs, and how many passed, failed, or failed on the platform;
/// also written as Markdown to `<work>/results.md`.
fn summary(runs: &[String], results: &BTreeMap<String, Vec<Outcome>>) -> String {
    let mut order: Vec<&str> = Vec::new();
    for r in runs {
        let s = scenario_of(r);
        if !order.contains(&s) {
            order.push(s);
        }
    }
    let mut md = String::from(
        "| scenario | runs | PASS | FAIL | PLATFORM | invalid streams | helper killed or heap report |\n|---|---|---|---|---|---|---|\n",
    );
    for s in order {
        let mine: Vec<&Vec<Outcome>> = runs
            .iter()
            .filter(|r| scenario_of(r) == s)
            .filter_map(|r| results.get(r))
            .collect();
        let count = |v: Verdict| mine.iter().filter(|a| final_verdict(a) == v).count();
        let attempts = || mine.iter().flat_map(|a| a.iter());
        let invalid = attempts()
            .filter(|o| o.reason.contains("xenmig verify") || o.reason.contains("names pfn"))
            .count();
        let killed = attempts()
            .filter(|o| {
                [
                    "fatal signal",
                    "memory allocation",
                    "malloc",
                    "free()",
                    "corrupted",
                    "AddressSanitizer",
                    "not written",
                    "changed in this process",
                ]
                .iter()
                .any(|k| o.reason.contains(k))
            })
            .count();
        md.push_str(&format!(
            "| {s} | {} | {} | {} | {} | {invalid} | {killed} |\n",
            mine.len(),
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Platform)
        ));
    }
    md
}

fn report(
    work: &Path,
    runs: &[String],
    results: &BTreeMap<String, Vec<Outcome>>,
    setup: Duration,
    total: Duration,
) {
    println!();
    println!(
        "realxen results (setup and builds {}s, total {}s):",
        setup.as_secs(),
        total.as_secs()
    );
    for r in runs {
        match results.get(r) {
            Some(attempts) => {
                for (i, o) in attempts.iter().enumerate() {
                    println!(
                        "  {:8} {r:18} {:>6}  boot {}{}: {}",
                        verdict_name(o.verdict),
                        o.seconds.map(|t| format!("{t:.0}s")).unwrap_or_default(),
                        o.boot,
                        if i > 0 { " (again)" } else { "" },
                        o.reason
                    );
                }
            }
            None => println!("  -------- {r:18}  not run"),
        }
    }
    let md = summary(runs, results);
    println!();
    for l in md.lines() {
        println!("  {l}");
    }
    let _ = fs::write(work.join("results.md"), &md);
    compare_layouts(work, results);
    println!(
        "  logs: {}/serial-N.log, {}/out-N/ (steps.log, *.verify.txt, *.info.txt, *.failed.stream, xen-dmesg.txt); table: {}/results.md",
        work.display(),
        work.display(),
        work.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read_from_the_console() {
        let serial = "\
(XEN) boot
REALXEN[1.0s] === scenario pv-save
REALXEN-RESULT pv-save PASS saved by xenmig, ticks 3 -> 9
REALXEN[80.2s] === scenario pv-save done in 79.2s
junk REALXEN-RESULT pv-restore FAIL xl restore through xenmig failed
";
        let r = parse_results(serial, 1);
        assert_eq!(r["pv-save"].verdict, Verdict::Pass);
        assert_eq!(r["pv-save"].reason, "saved by xenmig, ticks 3 -> 9");
        assert_eq!(r["pv-save"].seconds, Some(79.2));
        assert_eq!(r["pv-restore"].verdict, Verdict::Fail);
        assert_eq!(r["pv-restore"].seconds, None);
    }

    #[test]
    fn repeated_scenarios_expand_to_runs() {
        let specs = vec!["pvh-remus*3".to_string(), "pv-save".to_string()];
        assert_eq!(
            run_names(&specs),
            ["pvh-remus#1", "pvh-remus#2", "pvh-remus#3", "pv-save"]
        );
        assert_eq!(
            rerun_specs(&["pvh-remus#1".into(), "pvh-remus#3".into(), "pv-save".into()]),
            ["pvh-remus*2", "pv-save"]
        );
    }

    /// A run whose first attempt wrote an invalid stream is a FAIL, whatever a later attempt
    /// does; only PLATFORM runs are booted again, and a later PASS clears only those.
    #[test]
    fn a_failed_attempt_stands_and_only_the_platform_is_retried() {
        let boot1 = "\
REALXEN-RESULT pvh-remus#1 FAIL xl remus through xenmig: rc 143 after 4 checkpoints; the stream names pfn 0x7f6b87555010, beyond any the guest has (0xfffff)
REALXEN-RESULT pvh-remus#2 PLATFORM the guest did not boot
REALXEN-RESULT pvh-remus#3 PASS 4 checkpoints through xenmig
";
        let runs = run_names(&["pvh-remus*3".to_string()]);
        let mut results = BTreeMap::new();
        merge_boot(&mut results, &runs, &parse_results(boot1, 1), 1);
        let todo: Vec<String> = runs
            .iter()
            .filter(|r| final_verdict(&results[*r]) == Verdict::Platform)
            .cloned()
            .collect();
        assert_eq!(todo, ["pvh-remus#2"]);
        assert_eq!(rerun_specs(&todo), ["pvh-remus"]);
        // The second boot runs the scenario once, under its plain name, and it passes.
        let boot2 = "REALXEN-RESULT pvh-remus PASS 4 checkpoints through xenmig\n";
        merge_boot(&mut results, &todo, &parse_results(boot2, 2), 2);
        assert_eq!(final_verdict(&results["pvh-remus#1"]), Verdict::Fail);
        assert_eq!(final_verdict(&results["pvh-remus#2"]), Verdict::Pass);
        assert_eq!(results["pvh-remus#2"].len(), 2, "both attempts are kept");
        assert_eq!(final_verdict(&results["pvh-remus#3"]), Verdict::Pass);
        // Even a PASS after a FAIL of the same run leaves it failed.
        let mut one = BTreeMap::new();
        let r = vec!["hvm-migrate".to_string()];
        merge_boot(
            &mut one,
            &r,
            &parse_results(
                "REALXEN-RESULT hvm-migrate FAIL xenmig verify: INVALID\n",
                1,
            ),
            1,
        );
        merge_boot(
            &mut one,
            &r,
            &parse_results("REALXEN-RESULT hvm-migrate PASS ok\n", 2),
            2,
        );
        assert_eq!(final_verdict(&one["hvm-migrate"]), Verdict::Fail);
        let md = summary(&runs, &results);
        assert!(md.contains("| pvh-remus | 3 | 2 | 1 | 0 | 1 | 0 |"), "{md}");
        // A run the boot never reported (it crashed or timed out) is a FAIL.
        let mut lost = BTreeMap::new();
        merge_boot(&mut lost, &r, &BTreeMap::new(), 1);
        assert_eq!(final_verdict(&lost["hvm-migrate"]), Verdict::Fail);
    }

    #[test]
    fn record_tables_ignore_page_contents() {
        let info = "\
records:        46 libxc, 2 libxl
  layer  type        name                           count          bytes
  libxl  0x00000001  LIBXC_CONTEXT                      1              0
  libxc  0x00000001  PAGE_DATA                         32      134480128
  libxc  0x00000004  X86_PV_VCPU_BASIC                  2          10352
pages:          32 PAGE_DATA records
";
        assert_eq!(
            record_table(info),
            [
                "libxl LIBXC_CONTEXT 1 0",
                "libxc PAGE_DATA 32 -",
                "libxc X86_PV_VCPU_BASIC 2 10352"
            ]
        );
    }
}
