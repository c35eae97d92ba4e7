//! One module per probe, and the catalogue that maps KubeSkoop's probe names to factories.
//!
//! A probe module reads the kernel and writes samples or events; it must not know about HTTP,
//! sinks or other probes. A procfs (or netlink) probe is its metric table and collect function
//! (`procfs::ProcfsProbe`); eBPF probes (crate `bpf`) have their adapter module here too: add the
//! module and one [`ProbeSpec`] line to [`CATALOGUE`].

pub mod conntrack;
pub mod fd;
pub mod io;
pub mod ipvs;
pub mod netdev;
mod netlink;
mod pids;
mod procfs;
pub mod qdisc;
pub mod snmp;
pub mod sock;
pub mod softnet;
pub mod tcpext;
pub mod tcpsummary;

// eBPF probes (crate `bpf`): adapters over its loaders, glue in `ebpf`.
mod biolatency;
mod ebpf;
mod flow;
mod kernellatency;
mod netiftxlat;
mod packetloss;
mod socketlatency;
mod softirq;
mod tcpreset;
mod tcpretrans;

use crate::probe::{Overhead, ProbeKind, ProbeSpec};

/// Every probe this agent knows, by KubeSkoop name. `/status` lists these as available.
pub static CATALOGUE: &[ProbeSpec] = &[
    procfs::spec::<netdev::Netdev>("per-netns device counters (/proc/net/dev)", Overhead::Low),
    procfs::spec::<snmp::Ip>("IP MIB (/proc/net/snmp Ip)", Overhead::Low),
    procfs::spec::<snmp::Tcp>("TCP MIB (/proc/net/snmp Tcp)", Overhead::Low),
    procfs::spec::<snmp::Udp>("UDP MIB (/proc/net/snmp Udp)", Overhead::Low),
    procfs::spec::<tcpext::TcpExt>("TCP extended MIB (/proc/net/netstat TcpExt)", Overhead::Low),
    procfs::spec::<sock::Sock>("TCP socket counts (/proc/net/sockstat)", Overhead::Low),
    procfs::spec::<softnet::Softnet>("NET_RX softirq per-CPU stats, node only", Overhead::Low),
    procfs::spec::<conntrack::Conntrack>("conntrack stats and table fill", Overhead::Low),
    procfs::spec::<qdisc::Qdisc>("root qdisc stats per device (netlink)", Overhead::Low),
    procfs::spec::<fd::Fd>(
        "open fds and sockets of the netns's processes",
        Overhead::Medium,
    ),
    procfs::spec::<io::Io>(
        "syscalls and storage bytes of the netns's processes",
        Overhead::Low,
    ),
    procfs::spec::<ipvs::Ipvs>("IPVS totals (/proc/net/ip_vs_stats)", Overhead::Low),
    procfs::spec::<tcpsummary::TcpSummary>(
        "TCP sockets by state and queued bytes (sock_diag)",
        Overhead::Medium,
    ),
    // eBPF (tp_btf tracepoints); a host that cannot run one shows it Failed with the reason.
    ebpf::spec::<bpf::packetloss::PacketLoss>(
        "drops by kernel drop reason and netns (skb:kfree_skb)",
        Overhead::Medium,
    ),
    ebpf::spec::<bpf::tcpreset::TcpReset>(
        "TCP resets sent and received, socket state",
        Overhead::Low,
    ),
    ebpf::spec::<bpf::tcpretrans::TcpRetrans>("TCP retransmissions per netns", Overhead::Low),
    ebpf::spec::<bpf::socketlatency::SocketLatency>(
        "time data waits in sockets before being read",
        Overhead::High,
    ),
    ebpf::spec::<bpf::netsoftirq::NetSoftirq>(
        "NET_RX/NET_TX softirq wait and run time",
        Overhead::High,
    ),
    ebpf::spec::<bpf::netiftxlat::NetifTxLatency>(
        "transmit latency in qdisc and driver",
        Overhead::High,
    ),
    ebpf::spec::<bpf::kernellatency::KernelLatency>(
        "receive latency netif_receive_skb to socket",
        Overhead::High,
    ),
    ebpf::spec::<bpf::biolatency::BioLatency>("block request latency per device", Overhead::Medium),
    ebpf::metrics_spec::<bpf::flow::Flow>(
        "bytes/packets per pod 5-tuple (bounded LRU)",
        Overhead::Medium,
    ),
];

/// KubeSkoop's old or mis-cased names → ours.
const ALIASES: &[(&str, &str)] = &[
    ("net_softirq", "softirq"),
    ("netsoftirq", "softirq"),
    ("netiftxlatency", "netiftxlat"),
    ("virtcmdLatency", "virtcmdlatency"),
];

/// The catalogue name for a configured name (aliases resolved).
pub fn canonical_name(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(old, _)| *old == name)
        .map(|(_, new)| *new)
        .unwrap_or(name)
}

/// The catalogue entry for a probe name.
pub fn spec(name: &str) -> Option<&'static ProbeSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// Names of the probes of one kind, in catalogue order.
pub fn names(kind: ProbeKind) -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .filter(|s| match kind {
            ProbeKind::Metrics => s.metrics.is_some(),
            ProbeKind::Event => s.event.is_some(),
        })
        .map(|s| s.name)
        .collect()
}
