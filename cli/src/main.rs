//! The `xenmig` command: inspect, verify and convert Xen save images and migration streams.
//!
//! Started under the name `convert-legacy-stream` (a symlink), it behaves as Xen's
//! converter of that name, so `LIBXL_CONVERT_HELPER` can point at it. Started as
//! `libxl-save-helper`, it is libxl's save/restore helper (`LIBXL_SAVE_HELPER`).

use clap::{FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod convert_legacy;
mod forensics;
mod inspect;
mod io;
mod manual;
mod out;
mod progress;
mod render;
mod save_helper;
mod schema;
mod sim;

#[derive(Parser)]
#[command(
    name = "xenmig",
    version,
    about = "Xen domain save images and migration streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a stream against every rule of the formats.
    Verify(inspect::VerifyArgs),
    /// Describe a stream: guest, versions, framing, records, pages, vcpus, checkpoints.
    Info(inspect::InfoArgs),
    /// One line (or JSON object) per record, or per chunk and part of a legacy stream.
    Dump(inspect::DumpArgs),
    /// Convert a legacy (Xen 4.5 and older) stream to v2, like Xen's convert-legacy-stream.
    ConvertLegacy(convert_legacy::Args),
    /// Write a saved or captured guest's memory and vCPU registers as an ELF core (or Xen
    /// dump-core, raw, LiME) for Volatility, gdb and crash.
    ExtractMemory(forensics::ExtractMemoryArgs),
    /// Write every blob a saved or captured guest carries into a directory: the xl config,
    /// the device model's state and xenstore keys, the HVM context (raw and decoded), each
    /// vCPU's registers and contexts, CPUID/MSR policies, TSC info, HVM params.
    Extract(forensics::ExtractArgs),
    /// Compare two images (two saves, or two checkpoints of one stream): frames added,
    /// removed and changed, and each state record's changed fields.
    Diff(forensics::DiffArgs),
    /// Save and restore simulated domains with xenmig's drivers.
    Sim(sim::SimArgs),
    /// libxl's save/restore helper, as LIBXL_SAVE_HELPER runs it.
    #[command(override_usage = save_helper::SYNOPSIS, long_about = save_helper::ABOUT)]
    SaveHelper {
        #[arg(
            num_args = 0..,
            allow_hyphen_values = true,
            trailing_var_arg = true,
            hide = true
        )]
        args: Vec<String>,
    },
    /// Print the JSON Schema of a command's --json output (`--list` names them all).
    Schema(schema::SchemaArgs),
    /// Print a shell completion script for xenmig.
    Completions {
        /// The shell the script is for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

// `xenmig manpages DIR`, for packaging. Parsed on its own, outside `Cli`, so that neither
// `--help`, the completion scripts nor the pages themselves offer it.
#[derive(Parser)]
#[command(
    name = "xenmig manpages",
    bin_name = "xenmig manpages",
    about = "Write the manual pages (xenmig.1 and one per subcommand) into DIR"
)]
struct ManpagesCli {
    /// Where the pages go (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "convert-legacy-stream" {
        return convert_legacy::main_as_reference();
    }
    // The helper's argv is libxl's, which clap must not see.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if name == "libxl-save-helper" {
        save_helper::main(&argv);
    }
    if argv.get(1).map(String::as_str) == Some("save-helper") {
        save_helper::main(argv.get(1..).unwrap_or_default());
    }
    if argv.get(1).map(String::as_str) == Some("manpages") {
        return match ManpagesCli::try_parse_from(std::env::args_os().skip(1)) {
            Ok(m) => out::finish(manual::manpages(&m.dir)),
            Err(e) => {
                let _ = e.print();
                ExitCode::from(if e.use_stderr() { 2 } else { 0 })
            }
        };
    }
    let mut cmd = manual::command();
    let parsed = cmd
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|m| Cli::from_arg_matches(&m).map_err(|e| e.format(&mut cmd)));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Command::Verify(a) => inspect::verify(a),
        Command::Info(a) => inspect::info(a),
        Command::Dump(a) => inspect::dump(a),
        Command::ConvertLegacy(a) => convert_legacy::run(a),
        Command::ExtractMemory(a) => forensics::extract_memory(a),
        Command::Extract(a) => forensics::extract(a),
        Command::Diff(a) => forensics::diff(a),
        Command::Sim(a) => sim::run(a),
        Command::SaveHelper { args } => {
            let argv: Vec<String> = std::iter::once("save-helper".to_string())
                .chain(args)
                .collect();
            save_helper::main(&argv)
        }
        Command::Schema(a) => schema::run(a),
        Command::Completions { shell } => manual::completions(shell),
    };
    // Output that could not be written is an error, whatever the command concluded.
    out::finish(code)
}
