//! `cargo xtask deb`: a Debian package of xenmig built with the `xen` feature, and
//! `cargo xtask deb-test`: that package installed, tried and removed again.
//!
//! The package is put together here with dpkg-deb, from:
//! - `/usr/bin/xenmig`: the release build with the `xen` feature, in `<target>/xen` like
//!   `cargo xtask realxen`'s (so either reuses the other's build), stripped as dh_strip does;
//! - `/usr/lib/xenmig/libxl-save-helper` and `/usr/lib/xenmig/convert-legacy-stream`:
//!   relative links to it (the binary acts on the name it was started under);
//! - `/usr/share/man/man1/*.1.gz`: written by the built binary (`xenmig manpages`) and
//!   compressed with `gzip -9n`;
//! - completions for bash, zsh and fish, from `xenmig completions SHELL`;
//! - `/usr/share/doc/xenmig/`: `packaging/debian/copyright`, with the Rust crates linked into
//!   the binary listed from `cargo tree`, and `packaging/debian/README.Debian`.
//!
//! Depends is computed, not written: `dpkg-shlibdeps` (dpkg-dev) maps each shared library
//! the stripped binary needs (its ELF NEEDED entries) to the installed package that ships
//! it, with the lowest version that has every symbol the binary uses (from that package's
//! symbols or shlibs file). The package is written to `<target>/deb/.xenmig_<v>_<arch>.deb.tmp`
//! and renamed to `xenmig_<v>_<arch>.deb` once dpkg-deb has succeeded.

use crate::cmd::output;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package's name, and the binary's.
const PACKAGE: &str = "xenmig";

/// Who answers for the package (overridden by `DEBFULLNAME` and `DEBEMAIL`, as Debian's
/// tools do).
const MAINTAINER: &str = "xenmig maintainers <maintainers@users.noreply.r-seed-ca22e49b.example>";

/// Where the package's files go, relative to the root, and the links to the binary.
const BIN: &str = "usr/bin/xenmig";
const LINKS: &[&str] = &[
    "usr/lib/xenmig/libxl-save-helper",
    "usr/lib/xenmig/convert-legacy-stream",
];
const MAN_DIR: &str = "usr/share/man/man1";
const DOC_DIR: &str = "usr/share/doc/xenmig";
/// Each shell and where its completion script goes.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/xenmig"),
    ("zsh", "usr/share/zsh/vendor-completions/_xenmig"),
    ("fish", "usr/share/fish/vendor_completions.d/xenmig.fish"),
];

const DESCRIPTION: &str = "\
Xen domain save images and migration streams
 xenmig reads, writes, verifies, inspects and converts the streams Xen saves
 and migrates domains as (the libxc and libxl migration formats, xl save
 files, and the legacy format of Xen 4.5 and older).
 .
 It also stands in for two of Xen's helper programs: libxl-save-helper
 (libxl's save/restore helper, chosen with LIBXL_SAVE_HELPER) and
 convert-legacy-stream. See /usr/share/doc/xenmig/README.Debian.";

const USAGE: &str = "\
usage: cargo xtask deb
       cargo xtask deb-test

deb       build xenmig with the xen feature (in <target>/xen) and package it as
          <target>/deb/xenmig_<version>_<arch>.deb (needs libxen-dev, dpkg-dev)
deb-test  build the package, dpkg -i it, check the installed command, its links,
          manual pages and bash completion, then dpkg -r it and check that every
          file it installed is gone (root only; needs man-db)";

/// `cargo xtask deb`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            return Ok(());
        }
        bail!(
            "`deb` takes no arguments, got `{}`\n\n{USAGE}",
            args.join(" ")
        );
    }
    let deb = build(root)?;
    println!("{}", deb.display());
    Ok(())
}

fn step(what: &str) {
    println!("deb: {what}");
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The cargo arguments of the build, shared with `cargo tree` for the crate list.
const BUILD_ARGS: &[&str] = &["-p", "xenmig-cli", "--features", "xen"];

/// Builds the package; returns its path.
pub fn build(root: &Path) -> Result<PathBuf> {
    let target = target_dir(root);
    let xen_target = target.join("xen");
    let mut cmd = cargo();
    cmd.args(["build", "--release"])
        .args(BUILD_ARGS)
        .arg("--target-dir")
        .arg(&xen_target)
        .current_dir(root);
    step(&format!("{cmd:?}"));
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building xenmig with the xen feature failed ({status}); it needs libxen-dev");
    }
    let built = xen_target.join("release").join(PACKAGE);

    let version = version_of(&built)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let out_dir = target.join("deb");
    let name = format!("{PACKAGE}_{version}_{arch}.deb");
    // A scratch source tree: debian/control for dpkg-shlibdeps, and the package's root in
    // debian/xenmig, where dpkg-shlibdeps expects the binaries it analyses.
    let work = out_dir.join(format!(".{PACKAGE}_{version}_{arch}.work"));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    }
    let result = stage_and_pack(root, &built, &work, &version, &arch, &out_dir, &name);
    let _ = fs::remove_dir_all(&work);
    result
}

/// The version `xenmig --version` reports (`xenmig 0.1.0`).
fn version_of(bin: &Path) -> Result<String> {
    let text = output(Command::new(bin).arg("--version"))?;
    match text.trim().split_once(' ') {
        Some((PACKAGE, v))
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c)) =>
        {
            Ok(v.to_string())
        }
        _ => bail!("unexpected `{} --version`: {text:?}", bin.display()),
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// Writes `data` to `path` with `mode`, making its directory.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(d) = path.parent() {
        mkdir(d)?;
    }
    fs::write(path, data).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn stage_and_pack(
    root: &Path,
    built: &Path,
    work: &Path,
    version: &str,
    arch: &str,
    out_dir: &Path,
    name: &str,
) -> Result<PathBuf> {
    let stage = &work.join("debian").join(PACKAGE);
    // The binary, stripped of its debug information and notes as dh_strip strips.
    let bin = stage.join(BIN);
    write_file(
        &bin,
        &fs::read(built).with_context(|| format!("read {}", built.display()))?,
        0o755,
    )?;
    output(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&bin),
    )
    .context("strip (binutils)")?;
    for link in LINKS {
        let path = stage.join(link);
        mkdir(path.parent().unwrap_or(stage))?;
        symlink(relative_target(link, BIN), &path)
            .with_context(|| format!("link {}", path.display()))?;
    }

    // Manual pages, written by the binary itself, then compressed.
    let pages = stage.join(".pages");
    output(Command::new(&bin).arg("manpages").arg(&pages))?;
    let man_dir = stage.join(MAN_DIR);
    mkdir(&man_dir)?;
    let mut page_names: Vec<_> = fs::read_dir(&pages)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    page_names.sort();
    if page_names.is_empty() {
        bail!("`xenmig manpages` wrote no page");
    }
    for page in &page_names {
        let mut file = page.clone();
        file.push(".gz");
        write_file(&man_dir.join(file), &gzip(&pages.join(page))?, 0o644)?;
    }
    fs::remove_dir_all(&pages)?;

    for (shell, path) in COMPLETIONS {
        let script = output(Command::new(&bin).args(["completions", shell]))?;
        if script.is_empty() {
            bail!("`xenmig completions {shell}` printed nothing");
        }
        write_file(&stage.join(path), script.as_bytes(), 0o644)?;
    }

    let doc = stage.join(DOC_DIR);
    let template = root.join("packaging/debian/copyright");
    let copyright =
        fs::read_to_string(&template).with_context(|| format!("read {}", template.display()))?;
    let crates = linked_crates(root)?;
    if !copyright.contains("@CRATES@") {
        bail!("{} has no @CRATES@ line", template.display());
    }
    write_file(
        &doc.join("copyright"),
        copyright.replace("@CRATES@", &crates).as_bytes(),
        0o644,
    )?;
    let changelog = work.join("changelog.Debian");
    write_file(&changelog, changelog_entry(root, version).as_bytes(), 0o644)?;
    write_file(&doc.join("changelog.gz"), &gzip(&changelog)?, 0o644)?;
    let readme = root.join("packaging/debian/README.Debian");
    write_file(
        &doc.join("README.Debian"),
        &fs::read(&readme).with_context(|| format!("read {}", readme.display()))?,
        0o644,
    )?;

    // dpkg-shlibdeps finds the package's root by its DEBIAN directory.
    let debian = stage.join("DEBIAN");
    mkdir(&debian)?;
    let depends = shlib_depends(work, BIN)?;
    step(&format!("Depends: {depends}"));
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {}\n\
         Installed-Size: {}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: {DESCRIPTION}\n",
        maintainer(),
        installed_size(stage)?,
    );
    let md5sums = md5sums(stage)?;
    write_file(&debian.join("control"), control.as_bytes(), 0o644)?;
    write_file(&debian.join("md5sums"), md5sums.as_bytes(), 0o644)?;
    directories_0755(stage)?;

    mkdir(out_dir)?;
    let tmp = out_dir.join(format!(".{name}.tmp"));
    let deb = out_dir.join(name);
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(["--root-owner-group", "--build"])
        .arg(stage)
        .arg(&tmp);
    step(&format!("{cmd:?}"));
    if let Err(e) = output(&mut cmd) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &deb).with_context(|| format!("rename to {}", deb.display()))?;
    step(&format!(
        "{} ({} KiB)",
        deb.display(),
        fs::metadata(&deb)?.len().div_ceil(1024)
    ));
    Ok(deb)
}

/// The file at `path` compressed with `gzip -9n` (no name or time stamp in the header, so
/// the same input gives the same bytes).
fn gzip(path: &Path) -> Result<Vec<u8>> {
    let out = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(path)
        .output()
        .context("cannot run gzip")?;
    if !out.status.success() {
        bail!(
            "gzip {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The package's changelog: one entry for the version, dated with the commit it is built
/// from, so that rebuilding the same commit gives the same file.
fn changelog_entry(root: &Path, version: &str) -> String {
    let head = output(
        Command::new("git")
            .args(["log", "-1", "--format=%H%n%aD"])
            .current_dir(root),
    )
    .unwrap_or_default();
    let mut lines = head.lines();
    let (what, date) = match (lines.next(), lines.next()) {
        (Some(commit), Some(date)) if !commit.is_empty() => (
            format!("Built with `cargo xtask deb` from commit\n    {commit}."),
            date.to_string(),
        ),
        _ => (
            "Built with `cargo xtask deb` outside a git checkout.".to_string(),
            output(Command::new("date").arg("-R"))
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
    };
    format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  * {what}\n\n -- {}  {date}\n",
        maintainer()
    )
}

/// The target of a relative link at `link` to `target` (both relative to the root).
fn relative_target(link: &str, target: &str) -> String {
    let from: Vec<&str> = link.split('/').collect();
    let to: Vec<&str> = target.split('/').collect();
    let dirs = &from[..from.len() - 1];
    let common = dirs.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; dirs.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

fn maintainer() -> String {
    match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(n), Ok(e)) if !n.is_empty() && !e.is_empty() => format!("{n} <{e}>"),
        _ => MAINTAINER.to_string(),
    }
}

/// The crates linked into the binary with their licenses, one per line, indented for a
/// control-file field: `cargo tree` over the build's normal dependencies, procedural macros
/// (which generate code but are not linked) left out.
fn linked_crates(root: &Path) -> Result<String> {
    let text = output(
        cargo()
            .args([
                "tree",
                "--locked",
                "-e",
                "normal,no-proc-macro",
                "--prefix",
                "none",
            ])
            .args(["--format", "{p}\t{l}"])
            .args(BUILD_ARGS)
            .current_dir(root),
    )?;
    let mut lines = BTreeSet::new();
    for line in text.lines() {
        // `name v1.2.3 (path)` for a workspace crate, `name v1.2.3` otherwise; `(*)` marks
        // one already shown.
        let (package, license) = line.split_once('\t').unwrap_or((line, ""));
        let mut words = package.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let license = license.trim().trim_end_matches("(*)").trim();
        let license = if license.is_empty() {
            "not declared"
        } else {
            license
        };
        lines.insert(format!(
            " {name} {} ({license})",
            version.trim_start_matches('v')
        ));
    }
    if lines.is_empty() {
        bail!("cargo tree listed no crate");
    }
    Ok(lines.into_iter().collect::<Vec<_>>().join("\n"))
}

/// The Depends line dpkg-shlibdeps computes for the binary at `bin` (relative to the
/// stage), run in `work`, where it finds the debian/control it wants and the package's root
/// in debian/xenmig.
fn shlib_depends(work: &Path, bin: &str) -> Result<String> {
    write_file(
        &work.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .arg("-O")
        .arg(format!("-edebian/{PACKAGE}/{bin}"))
        .current_dir(work)
        .output()
        .context("cannot run dpkg-shlibdeps (apt-get install dpkg-dev)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        eprint!("{stderr}");
    }
    if !out.status.success() {
        bail!("dpkg-shlibdeps failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let depends = stdout
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .unwrap_or_default();
    if depends.is_empty() {
        bail!("dpkg-shlibdeps printed no shlibs:Depends: {stdout}");
    }
    Ok(depends.to_string())
}

/// Every path under `dir`, directories before what they hold, in a stable order.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        let is_dir = fs::symlink_metadata(&p)?.is_dir();
        out.push(p.clone());
        if is_dir {
            walk(&p, out)?;
        }
    }
    Ok(())
}

/// The package's files (not DEBIAN), relative to the stage.
fn payload(stage: &Path) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    walk(stage, &mut all)?;
    Ok(all
        .into_iter()
        .filter_map(|p| p.strip_prefix(stage).ok().map(Path::to_path_buf))
        .filter(|p| !p.starts_with("DEBIAN"))
        .collect())
}

/// Installed-Size in KiB as dpkg-gencontrol counts it: each file rounded up to a KiB, one
/// for each directory and link.
fn installed_size(stage: &Path) -> Result<u64> {
    let mut kib = 0;
    for p in payload(stage)? {
        let m = fs::symlink_metadata(stage.join(&p))?;
        kib += if m.is_file() {
            m.len().div_ceil(1024)
        } else {
            1
        };
    }
    Ok(kib)
}

/// DEBIAN/md5sums: the regular files' sums, as `md5sum` prints them, paths relative to /.
fn md5sums(stage: &Path) -> Result<String> {
    let files: Vec<PathBuf> = payload(stage)?
        .into_iter()
        .filter(|p| {
            fs::symlink_metadata(stage.join(p))
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .collect();
    output(Command::new("md5sum").args(&files).current_dir(stage))
}

/// Directories 0755, whatever the umask made them.
fn directories_0755(stage: &Path) -> Result<()> {
    fs::set_permissions(stage, fs::Permissions::from_mode(0o755))?;
    let mut all = Vec::new();
    walk(stage, &mut all)?;
    for p in all {
        if fs::symlink_metadata(&p)?.is_dir() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

// --- deb-test ------------------------------------------------------------------------------

/// `cargo xtask deb-test`.
pub fn test(root: &Path, args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!(
            "`deb-test` takes no arguments, got `{}`\n\n{USAGE}",
            args.join(" ")
        );
    }
    // Safety: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        bail!("deb-test installs the package with dpkg: run it as root");
    }
    for (tool, package) in [
        ("man", "man-db"),
        ("bash", "bash"),
        ("dpkg-shlibdeps", "dpkg-dev"),
    ] {
        if output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            bail!("deb-test needs `{tool}`: apt-get install {package}");
        }
    }
    if installed()? {
        bail!("a package {PACKAGE} is installed already; deb-test leaves it alone");
    }
    if Path::new("/").join(BIN).exists() {
        bail!("/{BIN} exists and belongs to no package; deb-test would overwrite it");
    }
    let deb = build(root)?;
    let version = version_of(&target_dir(root).join("xen/release").join(PACKAGE))?;

    // What the package holds, and which of those paths were there before (its directories
    // shared with other packages, like /usr/bin).
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(&deb))?;
    let paths = listed_paths(&listing)?;
    let before: Vec<bool> = paths
        .iter()
        .map(|p| fs::symlink_metadata(p).is_ok())
        .collect();

    step(&format!("dpkg -i {}", deb.display()));
    let installed_ok = output(Command::new("dpkg").arg("-i").arg(&deb));
    // From here on the package is removed whatever the checks find.
    let checks = installed_ok.and_then(|out| {
        print!("{out}");
        check_installed(&version, &paths)
    });
    step("dpkg -r xenmig");
    let removed = output(Command::new("dpkg").args(["-r", PACKAGE]));
    checks?;
    print!("{}", removed?);
    if installed()? {
        bail!("{PACKAGE} is still installed after dpkg -r");
    }
    let mut left = Vec::new();
    for (p, existed) in paths.iter().zip(&before) {
        let exists = fs::symlink_metadata(p).is_ok();
        if exists && !existed {
            left.push(p.display().to_string());
        }
        if !exists && *existed {
            bail!(
                "{} existed before the install and is gone after dpkg -r",
                p.display()
            );
        }
    }
    if !left.is_empty() {
        bail!("left behind by dpkg -r: {}", left.join(", "));
    }
    let ours = paths.iter().zip(&before).filter(|(_, b)| !**b).count();
    step(&format!(
        "ok: installed, checked, removed; the {ours} paths the package added are gone"
    ));
    Ok(())
}

/// Whether dpkg has the package installed (or half installed).
fn installed() -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", PACKAGE])
        .output()
        .context("cannot run dpkg-query")?;
    // Unknown to dpkg: exit status 1. Known: `ii `, `rc `, `un `...; only `n` and `c`
    // (not installed, config files only) mean no files of it are on the system.
    let status = String::from_utf8_lossy(&out.stdout);
    Ok(out.status.success() && !matches!(status.chars().nth(1), Some('n' | 'c') | None))
}

/// The absolute paths in `dpkg-deb -c` output (tar listing lines ending in `./path` or
/// `./path -> target`).
fn listed_paths(listing: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in listing.lines() {
        let Some(at) = line.find(" ./") else {
            bail!("unexpected dpkg-deb -c line: {line}");
        };
        let name = &line[at + 2..];
        let name = name
            .split(" -> ")
            .next()
            .unwrap_or(name)
            .trim_end_matches('/');
        if !name.is_empty() && name != "." {
            paths.push(PathBuf::from(name));
        }
    }
    if paths.is_empty() {
        bail!("dpkg-deb -c listed nothing");
    }
    Ok(paths)
}

/// The checks of the installed package.
fn check_installed(version: &str, paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        if fs::symlink_metadata(p).is_err() {
            bail!(
                "{} is in the package but not on the system after dpkg -i (does a \
                 path-exclude in /etc/dpkg/dpkg.cfg.d/ leave it out?)",
                p.display()
            );
        }
    }
    let v = output(Command::new(Path::new("/").join(BIN)).arg("--version"))?;
    if v.trim() != format!("{PACKAGE} {version}") {
        bail!("/{BIN} --version said {v:?}");
    }
    let on_path = output(Command::new("sh").args(["-c", "command -v xenmig"]))?;
    if on_path.trim() != format!("/{BIN}") {
        bail!("`xenmig` on PATH is {on_path:?}, not /{BIN}");
    }
    step(&format!("xenmig --version: {}", v.trim()));
    let ldd = output(Command::new("ldd").arg(Path::new("/").join(BIN)))?;
    if ldd.contains("not found") {
        bail!("a library /{BIN} needs is missing although Depends is met:\n{ldd}");
    }

    let page = output(Command::new("man").args(["-w", "xenmig"]))?;
    if page.trim() != format!("/{MAN_DIR}/xenmig.1.gz") {
        bail!("man -w xenmig found {page:?}");
    }
    let rendered = output(
        Command::new("man")
            .arg("xenmig-save-helper")
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80"),
    )?;
    for section in [
        "EXIT STATUS",
        "ENVIRONMENT",
        "XENMIG_SAVE_HELPER_BACKEND",
        "EXAMPLES",
    ] {
        if !rendered.contains(section) {
            bail!("man xenmig-save-helper has no {section}:\n{rendered}");
        }
    }
    step(&format!("man -w xenmig: {}", page.trim()));

    let help = output(Command::new("/usr/lib/xenmig/convert-legacy-stream").arg("--help"))?;
    if !help.contains("convert-legacy-stream") || !help.contains("--skip-qemu") {
        bail!("/usr/lib/xenmig/convert-legacy-stream --help:\n{help}");
    }
    let help = output(Command::new("/usr/lib/xenmig/libxl-save-helper").arg("--help"))?;
    if !help.contains("--restore-domain") {
        bail!("/usr/lib/xenmig/libxl-save-helper --help:\n{help}");
    }
    step("the links answer --help as convert-legacy-stream and libxl-save-helper");

    // `xenmig ver<TAB>`: the function the installed script registers with `complete -F`,
    // called with the arguments and COMP_* variables bash gives it.
    let bash_script = format!("/{}", COMPLETIONS[0].1);
    let program = format!(
        "source {bash_script}\n\
         f=$(complete -p xenmig | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')\n\
         [ -n \"$f\" ] || {{ echo 'no complete -F for xenmig' >&2; exit 1; }}\n\
         COMP_WORDS=(xenmig ver)\n\
         COMP_CWORD=1\n\
         COMP_LINE='xenmig ver'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         COMPREPLY=()\n\
         \"$f\" xenmig ver xenmig\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    );
    let offered = output(Command::new("bash").args(["--norc", "--noprofile", "-c", &program]))?;
    if !offered.lines().any(|w| w == "verify") {
        bail!("bash completion of `xenmig ver` offered {offered:?}, not verify");
    }
    step(&format!(
        "bash completion of `xenmig ver`: {}",
        offered.split_whitespace().collect::<Vec<_>>().join(" ")
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_paths_reads_dpkg_deb_listings() {
        let listing = "\
drwxr-xr-x root/root         0 2026-01-01 00:00 ./
drwxr-xr-x root/root         0 2026-01-01 00:00 ./usr/bin/
-rwxr-xr-x root/root   4000000 2026-01-01 00:00 ./usr/bin/xenmig
lrwxrwxrwx root/root         0 2026-01-01 00:00 ./usr/lib/xenmig/libxl-save-helper -> ../../bin/xenmig
";
        assert_eq!(
            listed_paths(listing).unwrap(),
            [
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/bin/xenmig"),
                PathBuf::from("/usr/lib/xenmig/libxl-save-helper"),
            ]
        );
        assert!(listed_paths("").is_err());
        assert!(listed_paths("garbage").is_err());
    }

    #[test]
    fn links_point_up_to_the_binary() {
        assert_eq!(
            relative_target("usr/lib/xenmig/libxl-save-helper", BIN),
            "../../bin/xenmig"
        );
        assert_eq!(relative_target("usr/bin/other", BIN), "xenmig");
        assert_eq!(relative_target("etc/x", BIN), "../usr/bin/xenmig");
    }

    #[test]
    fn the_version_comes_from_the_binary() {
        let dir = std::env::temp_dir().join(format!("xtask-deb-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("xenmig");
        for (says, expect) in [
            ("xenmig 0.1.0", Some("0.1.0")),
            ("xenmig 1.2.3~rc1", Some("1.2.3~rc1")),
            ("other 0.1.0", None),
            ("xenmig 0.1 0", None),
            ("xenmig", None),
        ] {
            write_file(
                &fake,
                format!("#!/bin/sh\necho '{says}'\n").as_bytes(),
                0o755,
            )
            .unwrap();
            assert_eq!(version_of(&fake).ok().as_deref(), expect, "{says}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
