//! `netsleuth agent`: the node agent (crate `agent`) as a service on :9102.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::ExitError;

/// Run the node agent: probes → /metrics, events → sinks, /status, /events, /healthz.
#[derive(clap::Args)]
pub struct Args {
    /// KubeSkoop-compatible YAML config (reloaded on SIGHUP and when the file changes).
    /// Without it: KubeSkoop's default procfs probes, stderr sink, :9102.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Metric name prefix: `kubeskoop` makes KubeSkoop's Grafana dashboards find the series.
    #[arg(long, default_value = "netsleuth")]
    metric_prefix: String,
    /// This node's name (`k8s_node`); default: $INSPECTOR_NODENAME, else the hostname.
    #[arg(long, env = "INSPECTOR_NODENAME")]
    node: Option<String>,
    /// Directory of lab state dirs whose `inventory.json` map network namespaces to pods.
    #[arg(long, default_value = "/run/netsleuth/labs")]
    inventory_dir: PathBuf,
    /// CRI socket (containerd / CRI-O); default: the well-known paths.
    #[arg(long, env = "RUNTIME_SOCK")]
    cri_socket: Option<PathBuf>,
    /// Listen address, overriding the config's `address` (e.g. 127.0.0.1:9102).
    #[arg(long)]
    address: Option<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = agent::agent::AgentOptions {
        config_path: args.config.clone(),
        node: args.node.clone().unwrap_or_else(hostname),
        metric_prefix: args.metric_prefix.clone(),
        inventory_dir: Some(args.inventory_dir.clone()),
        cri_socket: args.cri_socket.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let agent =
            agent::agent::Agent::start(options).map_err(|e| ExitError::bad_input(e.to_string()))?;
        let address = match &args.address {
            Some(text) => agent::config::parse_address(text)
                .map_err(|m| ExitError::bad_input(format!("--address: {m}")))?,
            None => agent.config().address,
        };
        let listener = agent::run::Listener::bind(&address).await?;
        agent::run::reload_on_sighup(agent.clone()).context("cannot handle SIGHUP")?;
        if let Some(path) = &args.config {
            agent::run::reload_on_file_change(agent.clone(), path)
                .with_context(|| format!("cannot watch {}", path.display()))?;
        }
        agent::run::refresh_pods_on_change(agent.clone())
            .context("cannot watch the inventory dir")?;
        tracing::info!(
            "netsleuth agent on {} (node {})",
            listener.local_addr(),
            agent.options().node
        );
        eprintln!("netsleuth agent listening on {}", listener.local_addr());
        agent::run::serve(agent, listener).await?;
        Ok(ExitCode::SUCCESS)
    })
}
