//! `netsleuth demo`.

use std::process::ExitCode;

/// (being built)
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo is being built")
}
