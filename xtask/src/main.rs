//! Workspace tasks: `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
//!
//! - `docs`: regenerates the Markdown documentation in `docs/` from the specs in `spec/`.
//! - `check`: loads every spec, printing each problem at file:line:col, fails if a
//!   document in `docs/` is not what `docs` would write, and fails on a framing, page-size,
//!   alignment or cap literal outside generated code and `runtime/core/src/limits.rs`
//!   (`literals.rs`), and fails if the stream-layer crate depends on the drivers, simulator,
//!   save helper, Xen backend, `sha2` or `zstd` (`layers.rs`).
//! - `realxen`: boots Xen 4.17 under QEMU and runs `xl` save/restore/migrate/Remus scenarios
//!   with xenmig as libxl's save helper (`realxen.rs`).
//! - `bench`: end-to-end benchmarks of the `xenmig` binary against `cat`, then criterion.
//! - `fuzz`: seeds and runs the cargo-fuzz targets in `fuzz/`, one after the other (`fuzz.rs`).
//! - `deb`: the Debian package of xenmig; `deb-test`: installs, checks and removes it
//!   (`deb.rs`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xenmig_codegen::{load, markdown, Spec};

mod bench;
mod cmd;
mod deb;
mod fuzz;
mod layers;
mod literals;
mod realxen;
mod realxen_bench;
mod reap;
mod scaling;

/// Each spec and the document generated from it.
const DOCS: &[(&str, &str)] = &[
    ("spec/libxc.yaml", "docs/libxc-migration-stream.md"),
    ("spec/libxl.yaml", "docs/libxl-migration-stream.md"),
    ("spec/xl.yaml", "docs/xl-save-file.md"),
    ("spec/x86_state.yaml", "docs/x86-state.md"),
    ("spec/legacy.yaml", "docs/legacy-stream.md"),
    ("spec/core_dump.yaml", "docs/core-dump.md"),
];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  docs    regenerate docs/*.md from spec/*.yaml
  check   check every spec, that docs/ is up to date, and that no format fact or cap
          is written as a literal outside generated code and runtime/core/src/limits.rs,
          and that the stream layer (xenmig-stream) depends on no driver, simulator,
          save helper or Xen crate, nor on sha2 or zstd
  realxen boot Xen under QEMU and run xl scenarios with xenmig as save helper
          (see `cargo xtask realxen --help`)
  bench   benchmark xenmig against cat and memcpy (see `cargo xtask bench --help`)
  fuzz    run each cargo-fuzz target for a while (see `cargo xtask fuzz --help`)
  deb     build xenmig with the xen feature and package it as
          target/deb/xenmig_<version>_<arch>.deb (see `cargo xtask deb --help`)
  deb-test  build the package, install it, check it and remove it again (root)
  help    show this message";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let result = match command.as_deref() {
        Some("docs") => no_args("docs", &rest).and_then(|()| docs()),
        Some("check") => no_args("check", &rest).and_then(|()| check()),
        Some("realxen") => realxen::main(&root(), &rest),
        Some("bench") => bench::run(&root(), &rest),
        Some("fuzz") => fuzz::run(&root(), &rest),
        Some("deb") => deb::run(&root(), &rest),
        Some("deb-test") => deb::test(&root(), &rest),
        // The two ends of the plain TCP copy `bench` compares migration with.
        Some("tcp-sink") => bench::tcp_sink(&rest),
        Some("tcp-source") => bench::tcp_source(&rest),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("error: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn no_args(command: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        bail!("`{command}` takes no arguments, got `{}`", rest.join(" "))
    }
}

/// The workspace root (the parent of this crate).
fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Loads a spec, printing each of its errors.
fn load_spec(path: &Path) -> Option<Spec> {
    match load(path) {
        Ok(spec) => Some(spec),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            None
        }
    }
}

/// Path relative to the root, for messages.
fn shown(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

fn docs() -> Result<()> {
    let root = root();
    let mut failed = Vec::new();
    for (spec_path, doc_path) in DOCS {
        let spec_path = root.join(spec_path);
        let doc_path = root.join(doc_path);
        let Some(spec) = load_spec(&spec_path) else {
            failed.push(shown(&root, &spec_path));
            continue;
        };
        let text = markdown::emit(&spec);
        let old = std::fs::read_to_string(&doc_path).ok();
        if old.as_deref() == Some(text.as_str()) {
            println!("unchanged {}", shown(&root, &doc_path));
            continue;
        }
        if let Some(dir) = doc_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&doc_path, text)
            .with_context(|| format!("cannot write {}", doc_path.display()))?;
        println!("wrote {}", shown(&root, &doc_path));
    }
    if !failed.is_empty() {
        bail!(
            "{} has errors; its document was not written",
            failed.join(", ")
        );
    }
    Ok(())
}

fn check() -> Result<()> {
    let root = root();
    let mut bad_specs = Vec::new();
    let mut stale = Vec::new();
    for (spec_path, doc_path) in DOCS {
        let spec_path = root.join(spec_path);
        let doc_path = root.join(doc_path);
        let Some(spec) = load_spec(&spec_path) else {
            bad_specs.push(shown(&root, &spec_path));
            continue;
        };
        let text = markdown::emit(&spec);
        match std::fs::read_to_string(&doc_path) {
            Ok(old) if old == text => println!("ok {}", shown(&root, &doc_path)),
            Ok(_) => {
                eprintln!("{} is out of date", shown(&root, &doc_path));
                stale.push(shown(&root, &doc_path));
            }
            Err(e) => {
                eprintln!("{} cannot be read: {e}", shown(&root, &doc_path));
                stale.push(shown(&root, &doc_path));
            }
        }
    }
    let (findings, stale_allowed) = literals::scan(&root)?;
    for f in &findings {
        eprintln!(
            "{}:{}: `{}` is {}; name it instead: {}",
            f.path, f.line, f.pattern, f.meaning, f.text
        );
    }
    for s in &stale_allowed {
        eprintln!("allow-list entry matches no line any more: {s}");
    }
    if findings.is_empty() && stale_allowed.is_empty() {
        println!(
            "ok no format-fact literals in {}",
            literals::SCANNED.join(", ")
        );
    }
    let mut problems = Vec::new();
    if let Err(e) = layers::check_stream_deps(&root) {
        problems.push(format!("{e:#}"));
    }
    if !findings.is_empty() {
        problems.push(format!(
            "{} format-fact literal(s) outside generated code and runtime/core/src/limits.rs",
            findings.len()
        ));
    }
    if !stale_allowed.is_empty() {
        problems.push(format!(
            "{} stale allow-list entr(y/ies) in xtask/src/literals.rs",
            stale_allowed.len()
        ));
    }
    if !bad_specs.is_empty() {
        problems.push(format!("errors in {}", bad_specs.join(", ")));
    }
    if !stale.is_empty() {
        problems.push(format!(
            "out of date: {}; run `cargo xtask docs`",
            stale.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}
