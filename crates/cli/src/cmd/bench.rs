//! `netsleuth bench …`.

use std::process::ExitCode;

/// (being built)
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// (being built)
    Placeholder,
}

pub fn run(_command: BenchCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("bench is being built")
}
