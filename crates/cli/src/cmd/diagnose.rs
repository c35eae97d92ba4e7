//! `netsleuth diagnose`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use diagnose::render::{render, Format};
use diagnose::Query;
use model::diagnosis::Verdict;
use model::Snapshot;
use netstack::packet::Protocol;

use super::{exit, ExitError};

/// Simulate one packet from SRC to DST and say where and why it stops.
///
/// The packet is walked through every network namespace on the way with the kernel's own
/// rules from the snapshot — netfilter rule by rule, policy routing, devices — and the reply
/// is walked back through the NAT the forward path set up. Each finding names the rule, route,
/// sysctl or object responsible, who owns it, and how to fix it.
///
/// SRC and DST accept an IP, `namespace/pod`, `node/NAME` or `service/namespace/name`.
///
/// Exit status: 0 delivered with no error-level finding; 1 blocked or an error-level finding;
/// 2 bad usage or input; 3 diagnosis incomplete (state missing or unreadable).
///
/// Example: netsleuth diagnose --snapshot examples/flannel-host-gw/policy-ingress-denied.json -s default/web-1-1 -d default/web-2-1 -p 8080
#[derive(clap::Args)]
pub struct Args {
    /// Source: IP, namespace/pod, node/NAME or service/namespace/name.
    #[arg(short = 's', long = "src")]
    pub src: String,
    /// Destination: IP, namespace/pod, node/NAME or service/namespace/name.
    #[arg(short = 'd', long = "dst")]
    pub dst: String,
    /// Destination port (a Service's port when DST is a Service).
    #[arg(short = 'p', long = "port", default_value_t = 80)]
    pub port: u16,
    #[arg(long, default_value = "tcp", value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// Source port of the simulated client.
    #[arg(long, default_value_t = 40000)]
    pub sport: u16,
    /// A snapshot file (JSON, optionally zstd-compressed) written by `netsleuth collect`.
    #[arg(long, conflicts_with_all = ["lab", "kubeconfig"], required_unless_present_any = ["lab", "kubeconfig"])]
    pub snapshot: Option<PathBuf>,
    /// Collect a `netsleuth lab` cluster by name and diagnose it.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub lab: Option<String>,
    /// Diagnose a live cluster through its agents.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "format", default_value = "text", value_parser = ["text", "json", "dot", "mermaid", "svg"])]
    pub format: String,
    /// Write the report to FILE instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let query = Query {
        src: args.src,
        dst: args.dst,
        protocol: args.protocol,
        dport: args.port,
        sport: args.sport,
    };
    let diagnosis = match (&args.snapshot, &args.lab, &args.kubeconfig) {
        (Some(path), _, _) => {
            let name = path.display().to_string();
            let bytes = std::fs::read(path)
                .map_err(|e| ExitError::bad_input(format!("cannot read {name}: {e}")))?;
            let snapshot = Snapshot::from_bytes(&name, &bytes)
                .map_err(|e| ExitError::bad_input(e.to_string()))?;
            diagnose::diagnose(&snapshot, &query)
                .map_err(|e| ExitError::bad_input(e.to_string()))?
        }
        (None, Some(lab), _) => super::collect::diagnose_lab(lab, &query)?,
        (None, None, Some(_)) => return Err(super::collect::kubeconfig_unavailable()),
        (None, None, None) => {
            return Err(ExitError::bad_input(
                "one of --snapshot, --lab or --kubeconfig is required",
            ))
        }
    };
    let format = match args.format.as_str() {
        "json" => Format::Json,
        "dot" => Format::Dot,
        "mermaid" => Format::Mermaid,
        "svg" => Format::Svg,
        _ => Format::Text,
    };
    let report = render(&diagnosis, format);
    match &args.output {
        Some(path) => std::fs::write(path, report)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{report}"),
    }
    Ok(ExitCode::from(match diagnosis.verdict {
        Verdict::Delivered => exit::OK,
        Verdict::Blocked => exit::BLOCKED,
        Verdict::Incomplete => exit::INCOMPLETE,
    }))
}
