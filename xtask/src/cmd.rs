//! Running the commands the tasks need: one place for "run it, and fail with what it said".

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs `cmd` and returns its standard output; a failure carries the command, its status and
/// everything it printed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` for its effect, as [`output`] does.
pub fn sh(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}
