//! `netsleuth agent`.

use std::process::ExitCode;

/// Not built yet (see docs/architecture.md); exits 2 saying so.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the node agent is not built yet")
}
