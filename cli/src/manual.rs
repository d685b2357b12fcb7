//! What each command's `--help` and manual page say beyond its options: exit status,
//! environment and examples, written once here.
//!
//! [`command`] is the clap command the program parses with: the derived one, with each entry
//! of [`MANUALS`] attached to its command as `after_long_help`, so `--help` shows it.
//! [`write_pages`] (`xenmig manpages DIR`) renders the same entries as the EXIT STATUS,
//! ENVIRONMENT and EXAMPLES sections of `xenmig(1)` and of one page per subcommand
//! (`xenmig-verify(1)`, `xenmig-sim-migrate(1)`, ...).

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The manual of one command.
pub struct Manual {
    /// The command's subcommand names under `xenmig` (empty: `xenmig` itself).
    pub path: &'static [&'static str],
    /// Exit statuses and what each means.
    pub exit: &'static [(&'static str, &'static str)],
    /// Environment variables and what they do to this command.
    pub env: &'static [(&'static str, &'static str)],
    /// Examples: what it does, then the command line.
    pub examples: &'static [(&'static str, &'static str)],
    /// Other pages worth reading, besides the parent's and the subcommands' (which are listed
    /// anyway).
    pub see_also: &'static [&'static str],
}

const USAGE_ERROR: (&str, &str) = (
    "2",
    "Usage error, an input that cannot be read, or standard output that cannot be written.",
);

const ENV_BACKEND: (&str, &str) = (
    "XENMIG_SAVE_HELPER_BACKEND",
    "Which domain the save helper saves or restores. Unset or `xen`: the real domain, through \
     libxenctrl (a build with the `xen` feature, as the Debian package is). \
     `sim[:GUEST,WIDTH,MEMORY,VCPUS,key=value...]`: a simulated domain instead, e.g. \
     `sim:pv,64,128M,2,seed=1` (keys seed, dirty and bandwidth; flag nologdirty). Read only by \
     save-helper.",
);

const ENV_TIMING: (&str, &str) = (
    "XENMIG_XEN_TIMING",
    "When set (to anything), the save helper over real Xen prints on standard error how long \
     the save or restore took and how the time split over the Xen operations and the reads \
     and writes of the stream, how long opening the Xen interfaces took before it and closing \
     them after it (libxl waits for the helper to exit). Read only by save-helper.",
);

const ENV_LIBXL_SAVE_HELPER: (&str, &str) = (
    "LIBXL_SAVE_HELPER",
    "Read by libxl (xl, libvirt), not by xenmig: the save/restore helper libxl starts. Set it \
     to /usr/lib/xenmig/libxl-save-helper for xl save, restore, migrate and remus to run \
     xenmig's; unset, libxl runs Xen's own helper.",
);

const ENV_LIBXL_CONVERT_HELPER: (&str, &str) = (
    "LIBXL_CONVERT_HELPER",
    "Read by libxl, not by xenmig: the program libxl runs to turn a legacy stream into a v2 one \
     on restore. Set it to /usr/lib/xenmig/convert-legacy-stream to use xenmig's converter.",
);

const ENV_NO_COLOR: (&str, &str) = (
    "NO_COLOR, CLICOLOR, CLICOLOR_FORCE",
    "The colour of help and usage errors, which is used only on a terminal: NO_COLOR set (not \
     empty) turns it off, CLICOLOR=0 too; CLICOLOR_FORCE set (not empty) turns it on even when \
     the output is not a terminal.",
);

const ENV_TMPDIR: (&str, &str) = (
    "TMPDIR",
    "Where standard input that is not a regular file (a pipe) is first copied, since the \
     pages are read back from it: an unnamed file in this directory (default /tmp), gone when \
     xenmig exits.",
);

const REFUSED: (&str, &str) = (
    "1",
    "The stream is refused: what verify --lenient rejects, with the same rule and offset.",
);

/// Every command's manual; a test checks that each visible command has one.
pub const MANUALS: &[Manual] = &[
    Manual {
        path: &[],
        exit: &[
            (
                "0",
                "Success: the stream is valid, or the command did what it was asked.",
            ),
            (
                "1",
                "The stream is invalid or was refused, the two images differ (diff), or the \
                 save, restore or migration failed; each command's page says which.",
            ),
            USAGE_ERROR,
        ],
        env: &[
            ENV_BACKEND,
            ENV_TIMING,
            ENV_LIBXL_SAVE_HELPER,
            ENV_LIBXL_CONVERT_HELPER,
            ENV_NO_COLOR,
        ],
        examples: &[
            (
                "Check a file written by xl save:",
                "xenmig verify guest.save",
            ),
            (
                "Describe it, for a program:",
                "xenmig info --json guest.save",
            ),
            (
                "The JSON Schema of that output (every --json output has one):",
                "xenmig schema info",
            ),
            (
                "Convert a stream saved by Xen 4.5 or older:",
                "xenmig convert-legacy -i old.save -o new.save -f libxl -x",
            ),
            (
                "Install bash completion for the current user:",
                "xenmig completions bash > ~/.local/share/bash-completion/completions/xenmig",
            ),
        ],
        see_also: &["xl(1)"],
    },
    Manual {
        path: &["verify"],
        exit: &[
            ("0", "The stream is valid."),
            ("1", "The stream is invalid or truncated."),
            USAGE_ERROR,
        ],
        env: &[],
        examples: &[
            (
                "Check a file written by xl save:",
                "xenmig verify guest.save",
            ),
            (
                "Only the exit status, from a pipe:",
                "cat guest.save | xenmig verify -q -",
            ),
            (
                "Check only what Xen's restore checks, with the report as JSON:",
                "xenmig verify --lenient --json guest.save",
            ),
            (
                "Xen's verify-stream-v2 spelling, a bare libxc image on descriptor 3:",
                "xenmig verify -f libxc -i 3",
            ),
        ],
        see_also: &[],
    },
    Manual {
        path: &["info"],
        exit: &[
            ("0", "The stream is valid."),
            (
                "1",
                "The stream is invalid or truncated; what was read before the error is \
                 still described.",
            ),
            USAGE_ERROR,
        ],
        env: &[],
        examples: &[
            ("Describe a save file:", "xenmig info guest.save"),
            (
                "The same as one JSON object:",
                "xenmig info --json guest.save",
            ),
        ],
        see_also: &[],
    },
    Manual {
        path: &["dump"],
        exit: &[
            ("0", "Every record was listed."),
            (
                "1",
                "A record is invalid: the listing stops there and the error is reported.",
            ),
            USAGE_ERROR,
        ],
        env: &[],
        examples: &[
            ("One line per record:", "xenmig dump guest.save"),
            (
                "One JSON object per record, with the pages' contents:",
                "xenmig dump --json --pages guest.save | head",
            ),
        ],
        see_also: &[],
    },
    Manual {
        path: &["convert-legacy"],
        exit: &[
            ("0", "The stream was converted."),
            (
                "1",
                "The input is not a valid legacy stream, or reading or writing failed. \
                 Started as convert-legacy-stream, also when --in or --out is missing, as \
                 Xen's converter does.",
            ),
            (
                "2",
                "The input holds something the converter does not handle, or a usage error.",
            ),
        ],
        env: &[ENV_LIBXL_CONVERT_HELPER],
        examples: &[
            (
                "Convert an xl save file from Xen 4.5 or older (the width, guest type and xl \
                 header are detected):",
                "xenmig convert-legacy -i old.save -o new.save -f libxl -x",
            ),
            (
                "As libxl runs it, under the name convert-legacy-stream:",
                "/usr/lib/xenmig/convert-legacy-stream --in 3 --out 4 --width 64 --guest pv \
                 --format libxl",
            ),
        ],
        see_also: &["xenmig-verify(1)"],
    },
    Manual {
        path: &["extract-memory"],
        exit: &[
            ("0", "The dump was written."),
            REFUSED,
            (
                "2",
                "Usage error, or reading or writing failed; no partial dump is left at the \
                 output path.",
            ),
        ],
        env: &[ENV_TMPDIR],
        examples: &[
            (
                "An ELF core of a save file, for Volatility, gdb or crash:",
                "xenmig extract-memory guest.save -o guest.elf",
            ),
            (
                "The second checkpoint of a Remus stream, as a sparse raw image:",
                "xenmig extract-memory remus.stream --checkpoint 2 --format raw -o guest.raw",
            ),
            (
                "From a pipe, as LiME:",
                "zcat guest.save.gz | xenmig extract-memory - --format lime -o guest.lime",
            ),
        ],
        see_also: &["xenmig-extract(1)", "xenmig-diff(1)"],
    },
    Manual {
        path: &["extract"],
        exit: &[("0", "Every file was written."), REFUSED, USAGE_ERROR],
        env: &[ENV_TMPDIR],
        examples: &[
            (
                "The config, device model state, registers and policies of a save file:",
                "xenmig extract guest.save guest-state",
            ),
            (
                "Those of the third checkpoint of a COLO stream:",
                "xenmig extract colo.stream --checkpoint 3 checkpoint-3",
            ),
        ],
        see_also: &["xenmig-extract-memory(1)", "xenmig-diff(1)"],
    },
    Manual {
        path: &["diff"],
        exit: &[
            ("0", "The two images are the same."),
            ("1", "They differ."),
            (
                "2",
                "Usage error, an input that is refused or cannot be read, or standard output \
                 that cannot be written.",
            ),
        ],
        env: &[ENV_TMPDIR],
        examples: &[
            (
                "What changed between two saves of a guest:",
                "xenmig diff monday.save tuesday.save",
            ),
            (
                "Between checkpoints 1 and 5 of one Remus stream, as JSON:",
                "xenmig diff --checkpoint-a 1 --checkpoint-b 5 --json remus.stream remus.stream",
            ),
        ],
        see_also: &["xenmig-extract(1)", "xenmig-verify(1)"],
    },
    Manual {
        path: &["sim"],
        exit: &[
            ("0", "The simulated save, restore or migration succeeded."),
            ("1", "It failed, or the stream was rejected."),
            (
                "2",
                "Usage error; for sim migrate also a failure after the point of no return.",
            ),
        ],
        env: &[],
        examples: &[(
            "Save a simulated guest and restore the stream; the two state-digest lines \
             match:",
            "xenmig sim save -o - | xenmig sim restore -",
        )],
        see_also: &[],
    },
    Manual {
        path: &["sim", "save"],
        exit: &[
            ("0", "Saved; the guest's state-digest is printed."),
            ("1", "The save failed."),
            ("2", "Usage error."),
        ],
        env: &[],
        examples: &[
            (
                "A live save of a 1 GiB HVM guest as an xl save file:",
                "xenmig sim save --guest hvm --memory 1G --live --frame xl -o guest.save",
            ),
            (
                "Three Remus checkpoints of a guest dirtying pages:",
                "xenmig sim save --dirty-rate 2000 --remus 3 -o remus.stream",
            ),
        ],
        see_also: &["xenmig-sim-restore(1)"],
    },
    Manual {
        path: &["sim", "restore"],
        exit: &[
            ("0", "Restored; the guest's state-digest is printed."),
            ("1", "The stream was rejected or the restore failed."),
            ("2", "Usage error."),
        ],
        env: &[],
        examples: &[
            (
                "Restore a stream into a fresh simulated domain:",
                "xenmig sim restore guest.save",
            ),
            (
                "The results as JSON:",
                "xenmig sim restore --json guest.save",
            ),
        ],
        see_also: &["xenmig-sim-save(1)"],
    },
    Manual {
        path: &["sim", "migrate"],
        exit: &[
            ("0", "Migrated: the guest runs on the receiver."),
            (
                "1",
                "The migration failed before the point of no return; the guest was resumed \
                 here (or resuming it failed too, which is reported).",
            ),
            (
                "2",
                "The migration failed after the point of no return: the guest is left \
                 suspended here and its state on the receiver is unknown. Also a usage error.",
            ),
        ],
        env: &[],
        examples: &[
            (
                "On one terminal, wait for the guest:",
                "xenmig sim migrate-receive --listen 127.0.0.1:8002",
            ),
            (
                "On another, migrate a 1 GiB guest live:",
                "xenmig sim migrate --live --memory 1G 127.0.0.1:8002",
            ),
            (
                "Remus, checkpointing until the link breaks (the receiver runs with --remus):",
                "xenmig sim migrate --remus 0 127.0.0.1:8002",
            ),
        ],
        see_also: &["xenmig-sim-migrate-receive(1)"],
    },
    Manual {
        path: &["sim", "migrate-receive"],
        exit: &[
            (
                "0",
                "The guest runs here: migrated, or failed over to the last checkpoint.",
            ),
            (
                "1",
                "The restore failed, the sender did not clear the guest to run, or \
                 unpausing it failed; nothing runs here.",
            ),
            ("2", "Usage error."),
        ],
        env: &[],
        examples: &[
            (
                "Wait on a port the system picks (printed as listening: ADDR:PORT):",
                "xenmig sim migrate-receive --listen 127.0.0.1:0",
            ),
            (
                "Receive a compressed COLO stream:",
                "xenmig sim migrate-receive --listen 127.0.0.1:8002 --colo --compress",
            ),
        ],
        see_also: &["xenmig-sim-migrate(1)"],
    },
    Manual {
        path: &["save-helper"],
        exit: &[
            (
                "0",
                "The helper reported completion to libxl and libxl answered. Whether the \
                 save or restore succeeded is in the completion message, as with Xen's \
                 helper.",
            ),
            (
                "254",
                "libxl closed the helper's standard input while the helper waited for a \
                 reply (xl was killed).",
            ),
            (
                "255",
                "Arguments libxl would never pass, or a failure before the helper could \
                 report completion.",
            ),
            (
                "SIGABRT",
                "libxl did not provide a callback the stream needs (Xen's helper asserts \
                 there).",
            ),
        ],
        env: &[ENV_BACKEND, ENV_TIMING, ENV_LIBXL_SAVE_HELPER],
        examples: &[
            (
                "Save one domain with xenmig's helper instead of Xen's:",
                "LIBXL_SAVE_HELPER=/usr/lib/xenmig/libxl-save-helper xl save guest guest.save",
            ),
            (
                "Migrate with it, printing where the time goes:",
                "LIBXL_SAVE_HELPER=/usr/lib/xenmig/libxl-save-helper XENMIG_XEN_TIMING=1 \
                 xl migrate guest otherhost",
            ),
        ],
        see_also: &["xl(1)"],
    },
    Manual {
        path: &["schema"],
        exit: &[
            ("0", "The schema or the list was printed."),
            (
                "2",
                "Usage error (a name that is not listed), or standard output that cannot be \
                 written.",
            ),
        ],
        env: &[],
        examples: &[
            ("The outputs that have a schema:", "xenmig schema --list"),
            (
                "Save the schema of info --json, to check what it prints:",
                "xenmig schema info > xenmig-info.schema.json",
            ),
        ],
        see_also: &[],
    },
    Manual {
        path: &["completions"],
        exit: &[
            ("0", "The script was printed."),
            (
                "2",
                "Usage error, or standard output that cannot be written.",
            ),
        ],
        env: &[],
        examples: &[
            (
                "bash, for the current user:",
                "xenmig completions bash > ~/.local/share/bash-completion/completions/xenmig",
            ),
            (
                "zsh, in a directory on $fpath:",
                "xenmig completions zsh > ~/.zfunc/_xenmig",
            ),
            (
                "fish:",
                "xenmig completions fish > ~/.config/fish/completions/xenmig.fish",
            ),
        ],
        see_also: &[],
    },
];

/// Width `--help` text is wrapped to.
const WIDTH: usize = 79;

/// `text` wrapped at [`WIDTH`], each line indented by `indent`.
fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > WIDTH {
            out.push_str(&" ".repeat(indent));
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&" ".repeat(indent));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Where the text of an entry starts.
const ITEM_INDENT: usize = 10;

/// One exit status or variable: its name, then its text from [`ITEM_INDENT`] (on the name's
/// line when the name is short enough).
fn item(name: &str, text: &str) -> String {
    let body = wrap(text, ITEM_INDENT);
    if 2 + name.len() < ITEM_INDENT {
        // The name over the first line's indentation, which is all spaces.
        format!("  {name}{}", &body[2 + name.len()..])
    } else {
        format!("  {name}\n{body}")
    }
}

/// The manual's sections as plain text, for `after_long_help`.
pub fn help_text(m: &Manual) -> String {
    let mut s = String::from("Exit status:\n");
    for (code, what) in m.exit {
        s.push_str(&item(code, what));
    }
    if !m.env.is_empty() {
        s.push_str("\nEnvironment:\n");
        for (name, what) in m.env {
            s.push_str(&item(name, what));
        }
    }
    if !m.examples.is_empty() {
        s.push_str("\nExamples:\n");
        for (i, (what, line)) in m.examples.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str(&wrap(what, 2));
            s.push_str(&format!("      {line}\n"));
        }
    }
    s.trim_end().to_string()
}

/// The manual of the command at `path`.
pub fn manual(path: &[&str]) -> Option<&'static Manual> {
    MANUALS.iter().find(|m| m.path == path)
}

/// `cmd` with the manual of each of its commands attached as `after_long_help`; `path` is
/// where `cmd` is under `xenmig`.
fn attach(mut cmd: clap::Command, path: &mut Vec<&'static str>) -> clap::Command {
    if let Some(m) = manual(path) {
        cmd = cmd.after_long_help(help_text(m));
    }
    let names: Vec<&'static str> = cmd
        .get_subcommands()
        .filter_map(|c| MANUALS.iter().find_map(|m| name_in(m, path, c.get_name())))
        .collect();
    for name in names {
        path.push(name);
        cmd = cmd.mut_subcommand(name, |c| attach(c, path));
        path.pop();
    }
    cmd
}

/// The `'static` name of subcommand `name` of the command at `path`, if a manual is under it.
fn name_in(m: &Manual, path: &[&str], name: &str) -> Option<&'static str> {
    match m.path.split_at_checked(path.len()) {
        Some((head, [first, ..])) if head == path && *first == name => Some(first),
        _ => None,
    }
}

/// The command `xenmig` parses its arguments with.
pub fn command() -> clap::Command {
    attach(crate::Cli::command(), &mut Vec::new())
}

/// The pages for `cmd` (already built) and its visible subcommands, with their paths.
fn pages(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
    out.push((path.clone(), cmd.clone()));
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        path.push(sub.get_name().to_string());
        pages(sub, path, out);
        path.pop();
    }
}

/// The file name of the page of the command at `path` (`xenmig-sim-save.1`).
fn page_name(path: &[String]) -> String {
    let mut name = String::from("xenmig");
    for p in path {
        name.push('-');
        name.push_str(p);
    }
    name
}

/// Renders the page of `cmd`, found at `path` under `xenmig`.
fn render(cmd: &clap::Command, path: &[String]) -> Result<Vec<u8>> {
    let version = env!("CARGO_PKG_VERSION");
    let name = page_name(path);
    // The sections clap_mangen renders from the command, without its EXTRA section: the
    // manual's entries get sections of their own.
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        // Without a date the .TH line loses an argument; the version stands in for it.
        .date(version)
        .source("xenmig")
        .manual("xenmig manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|c| !c.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    let key: Vec<&str> = path.iter().map(String::as_str).collect();
    let m = manual(&key).with_context(|| format!("no manual entry for `{}`", key.join(" ")))?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in m.exit {
        roff.control("TP", [])
            .text([bold(*code)])
            .text([roman(*what)]);
    }
    if !m.env.is_empty() {
        roff.control("SH", ["ENVIRONMENT"]);
        for (var, what) in m.env {
            roff.control("TP", [])
                .text([bold(*var)])
                .text([roman(*what)]);
        }
    }
    if !m.examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (what, line) in m.examples {
            roff.control("PP", []).text([roman(*what)]);
            roff.control("RS", ["4"])
                .control("nf", [])
                .text([bold(*line)])
                .control("fi", [])
                .control("RE", []);
        }
    }
    let mut see = Vec::new();
    if !path.is_empty() {
        see.push(format!("{}(1)", page_name(&path[..path.len() - 1])));
    }
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let mut p = path.to_vec();
        p.push(sub.get_name().to_string());
        see.push(format!("{}(1)", page_name(&p)));
    }
    see.extend(m.see_also.iter().map(|s| s.to_string()));
    if !see.is_empty() {
        roff.control("SH", ["SEE ALSO"]);
        let mut line = Vec::new();
        for (i, s) in see.iter().enumerate() {
            if i > 0 {
                line.push(roman(", "));
            }
            let (page, section) = s.split_once('(').unwrap_or((s, ""));
            line.push(bold(page));
            line.push(roman(format!("({section}")));
        }
        roff.text(line);
    }
    roff.to_writer(&mut out)?;
    if path.is_empty() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

/// Writes `xenmig.1` and a page per visible subcommand into `dir` (created if missing), each
/// through a temporary file renamed once written; returns their paths.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut root = command().disable_help_subcommand(true);
    root.build();
    let mut all = Vec::new();
    pages(&root, &mut Vec::new(), &mut all);
    let mut written = Vec::new();
    for (path, cmd) in &all {
        let text = render(cmd, path)?;
        let file = dir.join(format!("{}.1", page_name(path)));
        let tmp = dir.join(format!(".{}.1.tmp", page_name(path)));
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &file)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), file.display()))?;
        written.push(file);
    }
    Ok(written)
}

/// `xenmig completions SHELL`: the completion script on standard output.
pub fn completions(shell: clap_complete::Shell) -> std::process::ExitCode {
    let mut cmd = command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "xenmig", &mut script);
    match crate::out::Stdout.write_all(&script) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // finish() reports it.
        Err(_) => std::process::ExitCode::from(crate::out::EXIT_OUTPUT_FAILED),
    }
}

/// `xenmig manpages DIR`.
pub fn manpages(dir: &Path) -> std::process::ExitCode {
    match write_pages(dir) {
        Ok(files) => {
            let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
            crate::out::say(&list);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xenmig manpages: {e:#}");
            std::process::ExitCode::from(crate::out::EXIT_OUTPUT_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths of every visible command under `cmd` (at `path`), `cmd`'s own included.
    fn visible(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            path.push(sub.get_name().to_string());
            visible(sub, path, out);
            path.pop();
        }
    }

    #[test]
    fn every_command_has_a_manual_and_every_manual_a_command() {
        let mut root = command().disable_help_subcommand(true);
        root.build();
        let mut paths = Vec::new();
        visible(&root, &mut Vec::new(), &mut paths);
        for p in &paths {
            let key: Vec<&str> = p.iter().map(String::as_str).collect();
            let m = manual(&key).unwrap_or_else(|| panic!("no manual for {key:?}"));
            assert!(!m.exit.is_empty(), "{key:?} lists no exit status");
            assert!(!m.examples.is_empty(), "{key:?} has no example");
        }
        for m in MANUALS {
            let owned: Vec<String> = m.path.iter().map(|s| s.to_string()).collect();
            assert!(
                paths.contains(&owned),
                "manual for {:?}: no such command",
                m.path
            );
        }
        assert_eq!(paths.len(), MANUALS.len());
    }

    #[test]
    fn long_help_of_each_command_ends_with_its_manual() {
        let mut root = command();
        root.build();
        for m in MANUALS {
            let mut cmd = &mut root;
            for name in m.path {
                cmd = cmd
                    .find_subcommand_mut(name)
                    .expect("a manual's command exists");
            }
            let help = cmd.render_long_help().to_string();
            assert!(
                help.trim_end().ends_with(&help_text(m)),
                "{:?}: --help does not end with the manual:\n{help}",
                m.path
            );
            for (code, _) in m.exit {
                assert!(
                    help.contains(&format!("\n  {code} "))
                        || help.contains(&format!("\n  {code}\n"))
                );
            }
        }
        let reference = reference_help();
        let m = manual(&["convert-legacy"]).expect("convert-legacy has a manual");
        assert!(reference.trim_end().ends_with(&help_text(m)));
    }

    fn reference_help() -> String {
        crate::convert_legacy::reference_command()
            .render_long_help()
            .to_string()
    }

    /// The words of an example's command lines that run xenmig: each `|` segment, up to a
    /// redirection.
    fn invocations(line: &str) -> Vec<Vec<String>> {
        line.split('|')
            .map(|seg| {
                seg.split_whitespace()
                    .take_while(|w| !w.contains('>') && !w.contains('<'))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|w| !w.is_empty())
            .collect()
    }

    #[test]
    fn every_example_parses() {
        let mut checked = 0;
        for m in MANUALS {
            for (_, line) in m.examples {
                for words in invocations(line) {
                    match words[0].as_str() {
                        "xenmig" => {
                            command()
                                .try_get_matches_from(&words)
                                .unwrap_or_else(|e| panic!("{line}: {e}"));
                            checked += 1;
                        }
                        "/usr/lib/xenmig/convert-legacy-stream" => {
                            crate::convert_legacy::reference_command()
                                .try_get_matches_from(&words)
                                .unwrap_or_else(|e| panic!("{line}: {e}"));
                            checked += 1;
                        }
                        // The environment of an xl command line, then xl.
                        w if w.contains('=') || w == "xl" => {
                            let rest: Vec<&String> =
                                words.iter().skip_while(|w| w.contains('=')).collect();
                            assert_eq!(rest.first().map(|w| w.as_str()), Some("xl"), "{line}");
                            for w in words.iter().take_while(|w| w.contains('=')) {
                                let (var, _) = w.split_once('=').unwrap_or_default();
                                assert!(
                                    m.env.iter().any(|(name, _)| *name == var),
                                    "{line}: {var} is not in the page's environment"
                                );
                            }
                        }
                        "cat" | "zcat" | "head" => {}
                        other => panic!("{line}: an example running `{other}`"),
                    }
                }
            }
        }
        assert!(
            checked >= MANUALS.len(),
            "only {checked} invocations checked"
        );
    }

    #[test]
    fn a_wrong_example_does_not_parse() {
        let words = &invocations("xenmig verify --no-such-option guest.save")[0];
        assert!(command().try_get_matches_from(words).is_err());
    }

    #[test]
    fn help_text_stays_within_the_width_but_for_example_lines() {
        for m in MANUALS {
            let examples: Vec<&str> = m.examples.iter().map(|(_, l)| *l).collect();
            for line in help_text(m).lines() {
                if examples.contains(&line.trim()) {
                    continue;
                }
                assert!(line.len() <= WIDTH, "{:?}: {line:?} is too long", m.path);
            }
        }
    }

    #[test]
    fn wrap_breaks_between_words_and_indents() {
        let text = "a ".repeat(60);
        let wrapped = wrap(&text, ITEM_INDENT);
        for line in wrapped.lines() {
            assert!(line.starts_with(&" ".repeat(ITEM_INDENT)));
            assert!(line.len() <= WIDTH);
        }
        assert_eq!(wrapped.split_whitespace().count(), 60);
        assert_eq!(
            item("0", "ok"),
            format!("  0{}ok\n", " ".repeat(ITEM_INDENT - 3))
        );
        assert_eq!(
            item("XENMIG_XEN_TIMING", "set"),
            format!("  XENMIG_XEN_TIMING\n{}set\n", " ".repeat(ITEM_INDENT))
        );
    }

    #[test]
    fn pages_have_the_manual_sections_and_refer_to_each_other() {
        let dir = std::env::temp_dir().join(format!("xenmig-manpages-{}", std::process::id()));
        let files = write_pages(&dir).expect("pages written");
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names.len(), MANUALS.len());
        for m in MANUALS {
            let mut name = String::from("xenmig");
            for p in m.path {
                name = format!("{name}-{p}");
            }
            let text = std::fs::read_to_string(dir.join(format!("{name}.1"))).expect("page");
            assert!(
                text.contains(&format!(".TH {} 1", name.to_uppercase())),
                "{name}"
            );
            assert!(text.contains(".SH \"EXIT STATUS\""), "{name}");
            assert!(text.contains(".SH EXAMPLES"), "{name}");
            assert_eq!(
                text.contains(".SH ENVIRONMENT"),
                !m.env.is_empty(),
                "{name}"
            );
            assert!(!text.contains(".SH EXTRA"), "{name}");
            for (code, _) in m.exit {
                assert!(
                    text.contains(&format!(".TP\n\\fB{code}\\fR")),
                    "{name}: {code}"
                );
            }
            // Every page named in SEE ALSO exists.
            let see = text.split(".SH \"SEE ALSO\"").nth(1).expect("SEE ALSO");
            for part in see.split("\\fB").skip(1) {
                let page = part
                    .split("\\fR")
                    .next()
                    .unwrap_or_default()
                    .replace("\\-", "-");
                if page.starts_with("xenmig") {
                    assert!(names.contains(&format!("{page}.1")), "{name}: {page}");
                }
            }
        }
        let leftovers = std::fs::read_dir(&dir)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                    .unwrap_or(true)
            })
            .count();
        assert_eq!(leftovers, 0);
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
