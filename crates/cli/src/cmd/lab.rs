//! `netsleuth lab …`: flags and glue to the `lab` crate (all logic lives there).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use lab::{Lab, LabSpec, ListenPort, ProbeRequest};
use model::snapshot::CniMode;
use netstack::packet::Protocol;

use super::{exit, ExitError};

/// Emulated Kubernetes clusters made of network namespaces on this host.
#[derive(clap::Subcommand)]
pub enum LabCommand {
    /// Build a lab: nodes, pods, CNI datapath, kube-proxy and policy rules, listeners.
    Up(UpArgs),
    /// Apply pods, Services and NetworkPolicies (Kubernetes YAML, multi-document).
    Apply(ApplyArgs),
    /// Run a command inside a node's or pod's netns; its exit status is passed through.
    Exec(ExecArgs),
    /// Send real traffic from SRC to DST: exit 0 if reachable, 1 if not.
    Probe(ProbeArgs),
    /// Show a lab's nodes, pods, services and policies.
    Status(NameArgs),
    /// Remove a lab (its netns, devices, listeners and state).
    Down(DownArgs),
    /// Break a lab built with `--nodes 2 --pods-per-node 1` the way a real incident does; prints
    /// the probe that is now blocked and the finding a diagnosis must report. Without FAULT, lists
    /// the catalogue.
    Inject(InjectArgs),
    /// The pod listener (TCP and UDP echo), started by the lab inside each pod's netns.
    #[command(hide = true)]
    Serve {
        /// PORT/PROTO to serve, e.g. 8080/tcp 8080/udp.
        ports: Vec<ListenPort>,
    },
}

#[derive(clap::Args)]
pub struct NameArgs {
    /// Lab name.
    #[arg(long, default_value = lab::DEFAULT_NAME)]
    name: String,
}

#[derive(clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    name: NameArgs,
    /// CNI datapath to emulate.
    #[arg(long, default_value = "flannel-vxlan", value_parser = parse_cni)]
    cni: CniMode,
    /// Number of nodes (node-1 … node-N).
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// Default pods per node (default/pod-<node>-<k>, serving 8080/tcp and 8080/udp).
    #[arg(long, default_value_t = 0)]
    pods_per_node: usize,
    /// Kubernetes objects to apply once the lab is up.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    name: NameArgs,
    /// Kubernetes YAML files (Pods, Services, NetworkPolicies).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    name: NameArgs,
    /// NODE, node/NODE or NAMESPACE/POD.
    target: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    name: NameArgs,
    /// Source: an IP, namespace/pod or node/NAME.
    #[arg(short = 's', long)]
    src: String,
    /// Destination: an IP, namespace/pod, node/NAME or service/namespace/name.
    #[arg(short = 'd', long)]
    dst: String,
    /// Destination port (ignored for icmp).
    #[arg(short = 'p', long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value = "tcp")]
    protocol: Protocol,
    /// TCP: bytes to send after connecting that must be echoed; UDP: the datagram size. A
    /// full-size UDP datagram finds MTU problems a TCP handshake passes.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

#[derive(clap::Args)]
pub struct DownArgs {
    /// Lab name.
    #[arg(long, default_value = lab::DEFAULT_NAME, conflicts_with = "all")]
    name: String,
    /// Remove every lab, including what crashed runs left behind.
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args)]
pub struct InjectArgs {
    #[command(flatten)]
    name: NameArgs,
    /// Fault name (see `netsleuth lab inject` without one).
    fault: Option<String>,
}

fn parse_cni(text: &str) -> Result<CniMode, String> {
    text.parse()
}

fn read_files(files: &[PathBuf]) -> anyhow::Result<Vec<lab::LabObject>> {
    let mut objects = Vec::new();
    for file in files {
        objects.extend(lab::read_objects(file).map_err(|e| ExitError::bad_input(e.to_string()))?);
    }
    Ok(objects)
}

pub fn run(command: LabCommand) -> anyhow::Result<ExitCode> {
    match command {
        LabCommand::Up(args) => {
            let objects = read_files(&args.files)?;
            let listener = std::env::current_exe()
                .context("locating the netsleuth binary for pod listeners")?;
            let spec = LabSpec {
                cni: args.cni,
                nodes: args.nodes,
                pods_per_node: args.pods_per_node,
                objects,
                listener: vec![listener.display().to_string(), "lab".into(), "serve".into()],
                ..LabSpec::new(args.name.name)
            };
            let started = std::time::Instant::now();
            let lab = Lab::up(spec)?;
            print!("{}", lab.status());
            println!(
                "up in {:.2}s; state in {}",
                started.elapsed().as_secs_f64(),
                lab.dir().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Apply(args) => {
            let objects = read_files(&args.files)?;
            let mut lab = Lab::open(&args.name.name)?;
            let count = objects.len();
            lab.apply(objects)?;
            println!("applied {count} object(s) to lab {}", lab.name());
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec(args) => {
            let lab = Lab::open(&args.name.name)?;
            let code = lab.exec(&args.target, &args.command)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
        }
        LabCommand::Probe(args) => {
            if args.protocol.has_ports() && args.port == 0 {
                return Err(ExitError::bad_input(
                    "--port is required for tcp and udp probes",
                ));
            }
            let lab = Lab::open(&args.name.name)?;
            let request = ProbeRequest {
                src: args.src,
                dst: args.dst,
                port: args.port,
                protocol: args.protocol,
                payload: args.payload_bytes,
            };
            let outcome = lab.probe(&request, Duration::from_millis(args.timeout_ms))?;
            let port = if request.protocol.has_ports() {
                format!(":{}", request.port)
            } else {
                String::new()
            };
            println!(
                "{} -> {} ({}{port}/{}): {outcome}",
                request.src, request.dst, outcome.dst_ip, request.protocol
            );
            Ok(ExitCode::from(if outcome.reachable {
                exit::OK
            } else {
                exit::BLOCKED
            }))
        }
        LabCommand::Status(args) => {
            print!("{}", Lab::open(&args.name)?.status());
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down(args) => {
            if args.all {
                let removed = Lab::down_all()?;
                println!("removed {} netns and every lab state dir", removed.len());
            } else {
                Lab::down(&args.name)?;
                println!("lab {} is down", args.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Inject(args) => {
            let Some(fault_name) = args.fault else {
                for fault in lab::Fault::ALL {
                    let modes: Vec<&str> = fault.cni_modes().iter().map(|m| m.as_str()).collect();
                    println!("{:<28} {}", fault.name(), modes.join(", "));
                }
                return Ok(ExitCode::SUCCESS);
            };
            let fault = lab::Fault::from_name(&fault_name).ok_or_else(|| {
                ExitError::bad_input(format!(
                    "unknown fault {fault_name:?}; run `netsleuth lab inject` for the list"
                ))
            })?;
            let mut lab = Lab::open(&args.name.name)?;
            if !fault.applies_to(lab.state().cni) {
                return Err(ExitError::bad_input(format!(
                    "fault {fault_name} does not apply to CNI {}",
                    lab.state().cni
                )));
            }
            let injected = fault.inject(&mut lab)?;
            let place = &injected.expected_place;
            println!("injected {fault_name}");
            println!(
                "blocked now: -s {} -d {} -p {} --protocol {}",
                injected.probe.src,
                injected.probe.dst,
                injected.probe.port,
                injected.probe.protocol
            );
            println!(
                "expected finding: {} at node {} netns {} device {}",
                injected.expected_code,
                place.node.as_deref().unwrap_or("-"),
                place.netns.as_deref().unwrap_or("-"),
                place.device.as_deref().unwrap_or("-")
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Serve { ports } => {
            lab::serve::serve(&ports)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
