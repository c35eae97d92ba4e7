//! `netsleuth demo`: the product in one command — build a lab cluster from network namespaces,
//! prove real traffic flows and the live diagnosis agrees, break it the way real incidents do,
//! prove real traffic stops, then collect the live lab again and show that the diagnosis names
//! the fault, where it is, its owner and the fix. Cleans up after itself (also on error).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use diagnose::render::{render, Format};
use lab::faults::{scenario_spec, DESTINATION_POD, SOURCE_POD};
use lab::{Fault, Lab, ProbeRequest};
use model::diagnosis::Verdict;
use model::CniMode;
use netstack::packet::Protocol;

use super::ExitError;

/// Build a lab cluster, break it, diagnose it live, explain, clean up (needs root).
///
/// Two nodes with one pod each, on the chosen CNI datapath. Real TCP from default/pod-1-1 to
/// default/pod-2-1:8080 first succeeds and the live diagnosis says delivered; then the fault is
/// injected (by default a hand-added DROP in node-2's FORWARD chain), the fault's probe fails,
/// and the diagnosis of the freshly collected lab must name the fault at the right place, with
/// its owner and the fix. Exit 0 when it does, 1 when it does not.
#[derive(clap::Args)]
pub struct Args {
    /// Lab name (its namespaces are called nsl-NAME-…).
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// CNI datapath to emulate.
    #[arg(long, default_value = "flannel-host-gw")]
    pub cni: CniMode,
    /// The fault to inject (`netsleuth lab inject --name NAME` lists them).
    #[arg(long, default_value = "node-forward-drop")]
    pub fault: String,
    /// Leave the lab running afterwards (remove it with `netsleuth lab down --name NAME`).
    #[arg(long)]
    pub keep: bool,
}

/// Removes the lab when the demo ends, however it ends.
struct Teardown<'a> {
    name: &'a str,
    keep: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = Lab::down(self.name) {
                eprintln!("netsleuth demo: cleaning up lab {}: {e}", self.name);
            }
        }
    }
}

const STEPS: usize = 7;

fn step(started: Instant, n: usize, text: &str) {
    eprintln!(
        "[{n}/{STEPS} {:>5.2}s] {text}",
        started.elapsed().as_secs_f64()
    );
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let fault = Fault::from_name(&args.fault).ok_or_else(|| {
        let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        ExitError::bad_input(format!(
            "unknown fault {:?}; one of: {}",
            args.fault,
            names.join(", ")
        ))
    })?;
    if !fault.applies_to(args.cni) {
        return Err(ExitError::bad_input(format!(
            "fault {} does not apply to {}; it applies to {}",
            fault.name(),
            args.cni,
            fault
                .cni_modes()
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    step(
        started,
        1,
        &format!(
            "building a 2-node {} lab \"{}\" from network namespaces",
            args.cni, args.name
        ),
    );
    let _ = Lab::down(&args.name);
    let mut lab = Lab::up(scenario_spec(args.name.clone(), args.cni))?;
    let _teardown = Teardown {
        name: &args.name,
        keep: args.keep,
    };
    let healthy_probe = ProbeRequest {
        src: SOURCE_POD.into(),
        dst: DESTINATION_POD.into(),
        port: 8080,
        protocol: Protocol::Tcp,
        payload: 0,
    };

    step(
        started,
        2,
        &format!("real traffic {SOURCE_POD} -> {DESTINATION_POD}:8080 before the fault"),
    );
    let before = lab.probe(&healthy_probe, Duration::from_secs(2))?;
    eprintln!("         {before}");

    step(
        started,
        3,
        "collecting the live lab and diagnosing the same flow",
    );
    let healthy = super::collect::diagnose_lab(&args.name, &healthy_probe.query())?;
    eprintln!("         diagnosis: {:?}", healthy.verdict);

    step(started, 4, &format!("injecting fault \"{}\"", fault.name()));
    let injected = fault.inject(&mut lab)?;

    step(
        started,
        5,
        &format!(
            "real traffic {} -> {}:{} ({}) after the fault",
            injected.probe.src, injected.probe.dst, injected.probe.port, injected.probe.protocol
        ),
    );
    let after = lab.probe(&injected.probe, Duration::from_secs(2))?;
    eprintln!("         {after}");

    step(
        started,
        6,
        "collecting the live lab again and diagnosing that flow",
    );
    let diagnosis = super::collect::diagnose_lab(&args.name, &injected.probe.query())?;
    println!("{}", render(&diagnosis, Format::Text));

    step(started, 7, "verdict");
    let found = injected.reported_in(&diagnosis);
    let agrees = before.reachable
        && healthy.verdict == Verdict::Delivered
        && !after.reachable
        && diagnosis.verdict == Verdict::Blocked;
    match found {
        Some(f) if agrees => {
            println!(
                "netsleuth names the fault: [{}] at {}, owner {} — and real packets agree (reachable before, blocked after).",
                f.code,
                f.place.netns.as_deref().or(f.place.node.as_deref()).unwrap_or("?"),
                f.owner.as_ref().map(|o| o.to_string()).unwrap_or_else(|| "unknown".into())
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            println!(
                "netsleuth did NOT confirm the fault: expected [{}] at {:?}; real traffic before: {}, after: {}; diagnosis before: {:?}, after: {:?}",
                injected.expected_code,
                injected.expected_place,
                before.reachable,
                after.reachable,
                healthy.verdict,
                diagnosis.verdict
            );
            Ok(ExitCode::from(super::exit::BLOCKED))
        }
    }
}
