//! `xenmig verify`, `info` and `dump` (being written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct VerifyArgs {}
#[derive(clap::Args)]
pub struct InfoArgs {}
#[derive(clap::Args)]
pub struct DumpArgs {}

pub fn verify(_a: VerifyArgs) -> ExitCode {
    ExitCode::from(2)
}
pub fn info(_a: InfoArgs) -> ExitCode {
    ExitCode::from(2)
}
pub fn dump(_a: DumpArgs) -> ExitCode {
    ExitCode::from(2)
}
