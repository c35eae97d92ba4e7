//! `netsleuth collect`, and the lab collection `diagnose --lab`, `demo` and `bench lab` share.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use collect::NetnsFilter;
use diagnose::EndpointSpec;
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
        (Some(name), _) => collect_lab(name, &NetnsFilter::All)?,
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

/// The inventory a lab wrote when it was built (`lab` must exist: 2 otherwise).
pub fn lab_inventory(name: &str) -> anyhow::Result<Inventory> {
    let lab = lab::Lab::open(name).map_err(|e| ExitError::bad_input(e.to_string()))?;
    let path = lab.inventory_path();
    let shown = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow::Error::new(ExitError {
            code: exit::INCOMPLETE,
            message: format!("cannot read {shown}: {e}"),
        })
    })?;
    model::codec::from_json_slice(&shown, &bytes).map_err(|e| {
        anyhow::Error::new(ExitError {
            code: exit::INCOMPLETE,
            message: e.to_string(),
        })
    })
}

/// Collects the selected namespaces of a lab, with progress on stderr.
pub fn collect_lab(name: &str, filter: &NetnsFilter) -> anyhow::Result<Snapshot> {
    let inventory = lab_inventory(name)?;
    collect_inventory(&inventory, filter, &format!("lab {name}"))
}

/// Collects the namespaces of a lab that the question `src → dst:port` involves (see
/// `collect::scope`), with progress on stderr.
pub fn collect_lab_for_query(
    lab: &str,
    src: &str,
    dst: &str,
    port: u16,
) -> anyhow::Result<Snapshot> {
    let inventory = lab_inventory(lab)?;
    let parse = |text: &str, role: &str| {
        text.parse::<EndpointSpec>()
            .map_err(|e| ExitError::bad_input(format!("{role}: {e}")))
    };
    let filter = collect::scope::netns_for_query(
        &inventory,
        &parse(src, "source")?,
        &parse(dst, "destination")?,
        port,
    );
    collect_inventory(&inventory, &filter, &format!("lab {lab}"))
}

/// Collects the selected namespaces of an inventory, with progress on stderr.
pub fn collect_inventory(
    inventory: &Inventory,
    filter: &NetnsFilter,
    what: &str,
) -> anyhow::Result<Snapshot> {
    let started = Instant::now();
    let snapshot =
        collect::collect_inventory(inventory, filter, &mut report_progress).map_err(incomplete)?;
    eprintln!(
        "collected {} of {} namespaces of {what} in {:.0} ms",
        snapshot.netns.len(),
        inventory.netns.len(),
        ms(started.elapsed())
    );
    Ok(snapshot)
}

fn write_snapshot(snapshot: &Snapshot, path: &Path) -> anyhow::Result<()> {
    let compress = path.extension().is_some_and(|e| e == "zst");
    let bytes = snapshot.to_bytes(compress)?;
    std::fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}
