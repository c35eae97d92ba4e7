//! `netsleuth collect`.

use std::process::ExitCode;

/// Not built yet (see docs/architecture.md); exits 2 saying so.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "collect is not built yet: diagnose the recorded snapshots in examples/ with --snapshot"
    )
}
