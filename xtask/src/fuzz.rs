//! `cargo xtask fuzz [--seconds N] [--no-seed] [TARGET...]`: seeds the corpora of the
//! cargo-fuzz targets in `fuzz/` and runs each target in turn with libFuzzer for N seconds
//! (default 600), one fuzzer process at a time, then prints (and writes to
//! `<target-dir>/fuzz/summary.md`) a table of executions per second and corpus sizes.
//!
//! Seeding: `xenmig sim save` writes a few small streams, then the `fuzz_seeds` example of
//! the tests crate turns them and the repository's vectors into `fuzz/corpus/TARGET/seed-*`
//! (the corpora are not committed). A target that crashes, hangs (`-timeout`) or runs out
//! of memory fails the task; its input is copied into `fuzz/regressions/TARGET/`, which
//! `cargo test` replays on stable Rust (`tests/tests/fuzz_regressions.rs`).
//!
//! Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [--no-seed] [TARGET...]

Seeds fuzz/corpus/TARGET and runs each cargo-fuzz target (all of fuzz/fuzz_targets when none
is named) for N seconds (default 600), one after the other, with
  cargo +nightly fuzz run TARGET -- -max_total_time=N -rss_limit_mb=2048
      -malloc_limit_mb=512 -timeout=10 -max_len=1048576 -print_final_stats=1
A crash, hang or out-of-memory input is copied to fuzz/regressions/TARGET/ and the task fails.
  --no-seed  run on the corpora as they are (skip building xenmig and writing seeds)";

/// libFuzzer's limits for every run.
const LIBFUZZER_LIMITS: &[&str] = &[
    "-rss_limit_mb=2048",
    "-malloc_limit_mb=512",
    "-timeout=10",
    "-max_len=1048576",
    "-print_final_stats=1",
];

struct Options {
    seconds: u64,
    seed: bool,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: 600,
        seed: true,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a number")?;
                o.seconds = v
                    .parse()
                    .with_context(|| format!("--seconds: `{v}` is not a number"))?;
                if o.seconds == 0 {
                    bail!("--seconds must be at least 1");
                }
            }
            "--no-seed" => o.seed = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option `{s}`\n\n{USAGE}"),
            s => o.targets.push(s.to_string()),
        }
    }
    Ok(o)
}

/// What one run of a target gave.
#[derive(Default)]
struct Run {
    target: String,
    seconds: u64,
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
    corpus_files: u64,
    corpus_bytes: u64,
    /// `None`: no finding; otherwise what libFuzzer reported and where its input was kept.
    finding: Option<String>,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let fuzz = root.join("fuzz");
    let all = fuzz_targets(&fuzz)?;
    let targets = if opts.targets.is_empty() {
        all.clone()
    } else {
        for t in &opts.targets {
            if !all.contains(t) {
                bail!("no fuzz target `{t}` (there are: {})", all.join(", "));
            }
        }
        opts.targets.clone()
    };
    check_cargo_fuzz()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let work = crate::bench::target_dir(root, &cargo)?.join("fuzz");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    if opts.seed {
        seed(root, &cargo, &work)?;
    }
    eprintln!("building the fuzz targets (cargo +nightly fuzz build)");
    let status = nightly(root)
        .args(["fuzz", "build"])
        .status()
        .context("cannot run cargo +nightly fuzz build")?;
    if !status.success() {
        bail!("cargo +nightly fuzz build failed: {status}");
    }

    let mut runs = Vec::new();
    for t in &targets {
        let r = run_target(root, &work, t, opts.seconds)?;
        eprintln!("{}", row(&r));
        runs.push(r);
    }
    let table = summary(&runs);
    println!("\n{table}");
    let path = work.join("summary.md");
    std::fs::write(&path, &table).with_context(|| format!("cannot write {}", path.display()))?;
    println!("(written to {})", path.display());
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| r.finding.is_some())
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "findings in {}: inputs copied to fuzz/regressions/ (fix them, then `cargo test -p \
             xenmig-tests --test fuzz_regressions`)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The targets: `fuzz/fuzz_targets/*.rs`, sorted.
fn fuzz_targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("{} holds no targets", dir.display());
    }
    Ok(v)
}

/// `cargo +nightly ...` from the root: the rustup proxy, not the stable cargo running us.
fn nightly(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root)
        .arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    c
}

fn check_cargo_fuzz() -> Result<()> {
    let ok = nightly(Path::new("."))
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "`cargo +nightly fuzz` does not run: install a nightly toolchain (rustup toolchain \
             install nightly) and cargo-fuzz (cargo install cargo-fuzz)"
        );
    }
    Ok(())
}

/// Small simulated domains `xenmig sim save` writes as seeds: file name, arguments. Names
/// with `remus` are checkpointed streams.
const SIM_SAVES: &[(&str, &[&str])] = &[
    ("sim-pv64-libxc.bin", &["--guest", "pv", "--width", "64"]),
    (
        "sim-pv32-libxl.bin",
        &["--guest", "pv", "--width", "32", "--frame", "libxl"],
    ),
    ("sim-hvm-xl.bin", &["--guest", "hvm", "--frame", "xl"]),
    ("sim-hvm-libxc.bin", &["--guest", "hvm"]),
    (
        "sim-pv64-live-libxl.bin",
        &["--live", "--dirty-rate", "2000", "--frame", "libxl"],
    ),
    (
        "sim-hvm-remus-libxl.bin",
        &["--guest", "hvm", "--remus", "2", "--frame", "libxl"],
    ),
    (
        "sim-pv64-remus-xl.bin",
        &["--guest", "pv", "--remus", "2", "--frame", "xl"],
    ),
];

/// Builds xenmig, writes the sim streams, and runs the `fuzz_seeds` example over them.
fn seed(root: &Path, cargo: &OsString, work: &Path) -> Result<()> {
    eprintln!("seeding: building xenmig (release)");
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "xenmig-cli",
            "--bin",
            "xenmig",
        ])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build -p xenmig-cli failed: {status}");
    }
    let xenmig = crate::bench::target_dir(root, cargo)?.join("release/xenmig");
    let sim = work.join("sim-streams");
    std::fs::create_dir_all(&sim).with_context(|| format!("cannot create {}", sim.display()))?;
    for (name, args) in SIM_SAVES {
        let out = sim.join(name);
        let status = Command::new(&xenmig)
            .args(["sim", "save", "--memory", "512K", "--vcpus", "2"])
            .args(*args)
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run xenmig sim save")?;
        if !status.success() {
            bail!("xenmig sim save {} failed: {status}", args.join(" "));
        }
    }
    eprintln!("seeding: writing fuzz/corpus/*/seed-*");
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--release", "--quiet", "-p", "xenmig-tests"])
        .args(["--example", "fuzz_seeds", "--"])
        .arg(root.join("fuzz/corpus"))
        .arg(&sim)
        .status()
        .context("cannot run the fuzz_seeds example")?;
    if !status.success() {
        bail!("the fuzz_seeds example failed: {status}");
    }
    Ok(())
}

/// Runs one target for `seconds`, its output in `<work>/TARGET.log`.
fn run_target(root: &Path, work: &Path, target: &str, seconds: u64) -> Result<Run> {
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let log_path = work.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    eprintln!(
        "fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let status = nightly(root)
        .args(["fuzz", "run", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_LIMITS)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot run cargo +nightly fuzz run {target}"))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (corpus_files, corpus_bytes) = dir_size(&corpus);
    let mut r = Run {
        target: target.to_string(),
        seconds,
        execs: stat(&text, "number_of_executed_units"),
        execs_per_sec: stat(&text, "average_exec_per_sec"),
        new_units: stat(&text, "new_units_added"),
        peak_rss_mb: stat(&text, "peak_rss_mb"),
        corpus_files,
        corpus_bytes,
        finding: None,
    };
    if !status.success() {
        let kind = finding_kind(&text);
        let kept = keep_findings(root, target, &text)?;
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!(
            "{target}: {kind} ({status}); last lines of the log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        r.finding = Some(if kept.is_empty() {
            format!("{kind}, no input written (see {})", log_path.display())
        } else {
            format!("{kind}: {}", kept.join(", "))
        });
    }
    Ok(r)
}

/// The value of libFuzzer's final `stat::NAME: VALUE` line.
fn stat(log: &str, name: &str) -> Option<u64> {
    let key = format!("stat::{name}:");
    log.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(&key)?.trim().parse().ok())
}

/// What libFuzzer says stopped the run.
fn finding_kind(log: &str) -> &'static str {
    if log.contains("ERROR: libFuzzer: timeout") {
        "timeout"
    } else if log.contains("out-of-memory") {
        "out of memory"
    } else if log.contains("panicked at") || log.contains("deadly signal") {
        "panic"
    } else if log.contains("ERROR: AddressSanitizer") {
        "memory error"
    } else {
        "failure"
    }
}

/// Copies every input libFuzzer wrote ("Test unit written to PATH") into
/// `fuzz/regressions/TARGET/`; returns the copies' paths relative to the root.
fn keep_findings(root: &Path, target: &str, log: &str) -> Result<Vec<String>> {
    let dir = root.join("fuzz/regressions").join(target);
    let mut kept = Vec::new();
    for l in log.lines() {
        let Some(p) = l.split("Test unit written to ").nth(1) else {
            continue;
        };
        let src = root.join(p.trim());
        let Some(name) = src.file_name() else {
            continue;
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dst = dir.join(name);
        std::fs::copy(&src, &dst)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
        kept.push(format!(
            "fuzz/regressions/{target}/{}",
            name.to_string_lossy()
        ));
    }
    Ok(kept)
}

/// Files and octets in a folder.
fn dir_size(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(m) = e.metadata() {
            if m.is_file() {
                files += 1;
                bytes += m.len();
            }
        }
    }
    (files, bytes)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

fn row(r: &Run) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
        r.target,
        r.seconds,
        opt(r.execs),
        opt(r.execs_per_sec),
        opt(r.new_units),
        r.corpus_files,
        r.corpus_bytes as f64 / (1 << 20) as f64,
        opt(r.peak_rss_mb),
        r.finding.as_deref().unwrap_or("none")
    )
}

fn summary(runs: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| target | seconds | executions | execs/s | new units | corpus files | corpus MiB | \
         peak RSS MB | findings |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in runs {
        let _ = writeln!(s, "{}", row(r));
    }
    s
}
