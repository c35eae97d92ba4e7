//! `netsleuth diagnose`.

use std::process::ExitCode;

/// Simulate one packet from SRC to DST and say where and why it stops.
///
/// SRC and DST accept an IP, `namespace/pod`, `node/NAME` or `service/namespace/name`.
/// Exit status: 0 delivered and no error-level finding; 1 blocked or an error-level finding;
/// 2 bad usage or input; 3 diagnosis incomplete (state missing or unreadable).
#[derive(clap::Args)]
pub struct Args {
    /// Source: IP, namespace/pod, node/NAME or service/namespace/name.
    #[arg(short = 's', long = "src")]
    pub src: String,
    /// Destination: IP, namespace/pod, node/NAME or service/namespace/name.
    #[arg(short = 'd', long = "dst")]
    pub dst: String,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("diagnose is being built")
}
