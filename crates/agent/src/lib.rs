//! The node agent (issue #4): probes (procfs, netlink, eBPF tracepoints) → Prometheus metrics,
//! anomaly events → sinks, `/status`, and this node's snapshot for live diagnosis.
//!
//! A drop-in for KubeSkoop's exporter: the same probe names, its `config.yaml` accepted
//! unchanged, `/status` of the same shape, metrics `<prefix>_<probe>_<metric>` with
//! `k8s_node`/`k8s_namespace`/`k8s_pod` (prefix `netsleuth`, or `kubeskoop` for its dashboards).
//! See `docs/agent.md`.
//!
//! Layout: [`probe`] (the framework and its traits), [`probes`] (one module per probe and the
//! catalogue), [`registry`] (samples → OpenMetrics), [`events`] (Event + bus), [`podmap`]
//! (netns → pod), [`health`] (the agent's own metrics).

pub mod agent;
pub mod config;
pub mod events;
pub mod health;
pub mod http;
pub mod netns_files;
pub mod podmap;
pub mod probe;
pub mod probes;
pub mod registry;
pub mod run;
pub mod scrape;
pub mod sinks;
pub mod status;
