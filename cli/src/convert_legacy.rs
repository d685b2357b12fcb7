//! `xenmig convert-legacy` (being written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_a: Args) -> ExitCode {
    ExitCode::from(2)
}

pub fn main_as_reference() -> ExitCode {
    ExitCode::from(2)
}
