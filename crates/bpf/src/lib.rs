//! eBPF probes of the node agent. Each probe is a C program on kernel tracepoints
//! (`src/<probe>/<probe>.bpf.c`, compiled by `build.rs` with clang) and a Rust loader beside it
//! (`src/<probe>/mod.rs`, loading with aya) that reads the probe's in-kernel aggregates on demand
//! and drains its sampled events.
//!
//! Every program is `tp_btf` (BTF-typed tracepoint): this project's kernels refuse kprobes and
//! fentry, and typed arguments avoid hand-written tracepoint layouts (KubeSkoop's tcpretrans
//! broke on one). Counting happens in the kernel in per-CPU maps — latency probes keep a log2
//! histogram and exact counts over 1 ms / `Options::slow_threshold` / 100 ms ([`SlowCounts`],
//! `latency.bpf.h`) side by side; events go through a ring buffer behind a per-CPU token bucket,
//! and what the bucket or a full buffer dropped is counted ([`ProbeStats`]).
//!
//! Per-netns counts are keyed by the namespace's inode and its never-reused cookie ([`Netns`]):
//! the kernel gives a freed namespace's inode to the next one, so the inode alone would hand a
//! dead pod's counts to its successor. Each netns-keyed probe's `forget_netns` deletes the
//! entries of namespaces the caller knows are dead.
//!
//! This crate must not know about metrics, HTTP or Kubernetes: it returns plain values keyed by
//! network namespace, and the agent (`crates/agent/src/probes/`) turns them into series.

mod btf;
mod error;
mod kallsyms;
mod net;
mod object;
mod options;
mod stats;

pub mod biolatency;
pub mod flow;
pub mod kernellatency;
pub mod netiftxlat;
pub mod netsoftirq;
pub mod packetloss;
pub mod socketlatency;
pub mod tcpreset;
pub mod tcpretrans;

pub use btf::{BtfError, EnumNames, KernelBtf};
pub use error::Error;
pub use kallsyms::KernelSymbols;
pub use net::{
    monotonic_ns_to_system_time, L3Protocol, L4Protocol, Netns, NetnsCookie, NetnsInode, TcpState,
    Tuple,
};
pub use object::{enable_runtime_stats, MapFill, ProgramRuntime, RuntimeStatsGuard};
pub use options::Options;
pub use stats::{Log2Histogram, ProbeStats, SlowCounts};

#[cfg(test)]
mod tests {
    /// The agent shares a loaded probe between its metric and event halves across threads.
    #[test]
    fn probes_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<crate::packetloss::PacketLoss>();
        shareable::<crate::flow::Flow>();
        shareable::<crate::biolatency::BioLatency>();
    }
}
