//! `netsleuth collect`, and the glue around a live lab (`lab::live`) that `diagnose --lab`, `demo`
//! and `bench lab` share: exit statuses and progress on stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use collect::NetnsFilter;
use diagnose::Query;
use lab::live::LiveError;
use lab::Lab;
use model::diagnosis::Diagnosis;
use model::{Inventory, NetnsLocation, Snapshot};

use super::bench::ms;
use super::{exit, ExitError};

/// Read network namespaces into a snapshot file (needs root).
///
/// Each namespace is read on its own thread inside it: links, addresses, routes of every table,
/// rules, neighbours and FDB over rtnetlink; sysctls, sockets and conntrack from procfs;
/// iptables-save, nft and ipset output verbatim. Whatever cannot be read is listed in the
/// snapshot as missing, with the reason.
///
/// Exit status: 0 written; 2 bad usage or unknown lab; 3 a namespace could not be read.
///
/// Example: netsleuth collect --lab demo -o demo.json.zst
#[derive(clap::Args)]
pub struct Args {
    /// Collect every namespace of this `netsleuth lab` cluster, with its Kubernetes objects.
    #[arg(long, conflicts_with_all = ["netns", "kubeconfig"], required_unless_present_any = ["netns", "kubeconfig"])]
    pub lab: Option<String>,
    /// Collect these namespaces (`/run/netns/NAME`, `/proc/PID/ns/net`).
    #[arg(long, num_args = 1.., conflicts_with = "kubeconfig")]
    pub netns: Vec<PathBuf>,
    /// Collect a live cluster through its API server.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Snapshot file to write; a name ending in `.zst` is zstd-compressed.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let snapshot = match (&args.lab, &args.kubeconfig) {
        (Some(name), _) => collect_lab(name)?,
        (None, Some(_)) => return Err(kubeconfig_unavailable()),
        (None, None) => {
            let started = Instant::now();
            let snapshot =
                collect::collect_netns(&args.netns, &mut report_progress).map_err(incomplete)?;
            eprintln!(
                "collected {} namespaces in {:.0} ms",
                snapshot.netns.len(),
                ms(started.elapsed())
            );
            snapshot
        }
    };
    write_snapshot(&snapshot, &args.output)?;
    Ok(ExitCode::from(exit::OK))
}

/// `--kubeconfig`: there is no API-server reader in this build.
pub fn kubeconfig_unavailable() -> anyhow::Error {
    ExitError::bad_input(
        "collecting a live cluster (--kubeconfig) is not available in this build: use --lab or --netns",
    )
}

/// A collector error: the state could not be read, so any diagnosis would be incomplete (3).
fn incomplete(err: collect::CollectError) -> anyhow::Error {
    anyhow::Error::new(ExitError {
        code: exit::INCOMPLETE,
        message: err.to_string(),
    })
}

fn report_progress(location: &NetnsLocation, took: Duration) {
    eprintln!("  read {:<32} {:>6.1} ms", location.id, ms(took));
}

/// Opens the lab `name` (2 when there is none).
fn open_lab(name: &str) -> anyhow::Result<Lab> {
    Lab::open(name).map_err(|e| ExitError::bad_input(e.to_string()))
}

/// The namespaces and objects of the lab `name`, as the collector takes them.
pub fn lab_inventory(name: &str) -> anyhow::Result<Inventory> {
    Ok(open_lab(name)?.inventory())
}

/// Collects every namespace of the lab `name`, with progress on stderr.
fn collect_lab(name: &str) -> anyhow::Result<Snapshot> {
    let lab = open_lab(name)?;
    let started = Instant::now();
    let snapshot = lab
        .collect(&NetnsFilter::All, &mut report_progress)
        .map_err(incomplete)?;
    report_collected(
        name,
        snapshot.netns.len(),
        lab.inventory().netns.len(),
        started.elapsed(),
    );
    Ok(snapshot)
}

/// Collects the namespaces of the lab `name` that `query` involves and diagnoses it, with
/// progress on stderr: 2 when the lab or the question is wrong, 3 when a namespace cannot be read.
pub fn diagnose_lab(name: &str, query: &Query) -> anyhow::Result<Diagnosis> {
    let live = open_lab(name)?
        .diagnose(query, &mut report_progress)
        .map_err(|e| match e {
            LiveError::Question(e) => ExitError::bad_input(e.to_string()),
            LiveError::Collect(e) => incomplete(e),
        })?;
    report_collected(
        name,
        live.namespaces_read,
        live.namespaces_in_lab,
        live.collect_took,
    );
    Ok(live.diagnosis)
}

fn report_collected(lab: &str, read: usize, in_lab: usize, took: Duration) {
    eprintln!(
        "collected {read} of {in_lab} namespaces of lab {lab} in {:.0} ms",
        ms(took)
    );
}

fn write_snapshot(snapshot: &Snapshot, path: &Path) -> anyhow::Result<()> {
    let compress = path.extension().is_some_and(|e| e == "zst");
    let bytes = snapshot.to_bytes(compress)?;
    std::fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}
