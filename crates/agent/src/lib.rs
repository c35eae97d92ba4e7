//! The node agent (issue #4): probes (procfs, netlink, eBPF tracepoints) → Prometheus metrics,
//! anomaly events → sinks, `/status`, and this node's snapshot for live diagnosis.
//!
//! Not built yet: this crate holds its place in the workspace so the layout shows the
//! architecture (see `docs/architecture.md`); `netsleuth agent` says so instead of pretending.
