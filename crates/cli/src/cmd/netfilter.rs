//! `netsleuth netfilter …`.

use std::process::ExitCode;

/// (being built)
#[derive(clap::Subcommand)]
pub enum NetfilterCommand {
    /// (being built)
    Placeholder,
}

pub fn run(_command: NetfilterCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("netfilter is being built")
}
