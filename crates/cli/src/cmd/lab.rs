//! `netsleuth lab …`.

use std::process::ExitCode;

/// (being built)
#[derive(clap::Subcommand)]
pub enum LabCommand {
    /// (being built)
    Placeholder,
}

pub fn run(_command: LabCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("lab is being built")
}
