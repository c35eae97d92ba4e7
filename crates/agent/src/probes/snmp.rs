//! `tcp`, `udp`, `ip`: the `Tcp`, `Udp` and `Ip` sections of the netns's `/proc/net/snmp`
//! (one parser, three probes, as in KubeSkoop). Metric names are the kernel's keys lower-cased.

use crate::probe::{MetricDesc, MetricType, ProbeError};
use crate::registry::Samples;

use super::procfs::{mib_section, ProcfsProbe};

const fn c(probe: &'static str, name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::counter(probe, name, help)
}
const fn g(probe: &'static str, name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::gauge(probe, name, help)
}

pub static TCP: [MetricDesc; 10] = [
    c(
        "tcp",
        "activeopens",
        "TCP connections opened actively (SYN sent)",
    ),
    c(
        "tcp",
        "passiveopens",
        "TCP connections opened passively (SYN received)",
    ),
    c("tcp", "retranssegs", "TCP segments retransmitted"),
    c("tcp", "attemptfails", "TCP connection attempts that failed"),
    c(
        "tcp",
        "estabresets",
        "TCP connections reset from ESTABLISHED or CLOSE-WAIT",
    ),
    g(
        "tcp",
        "currestab",
        "TCP connections currently ESTABLISHED or CLOSE-WAIT",
    ),
    c("tcp", "insegs", "TCP segments received"),
    c("tcp", "outsegs", "TCP segments sent"),
    c("tcp", "inerrs", "TCP segments received in error"),
    c("tcp", "outrsts", "TCP segments sent with RST"),
];

pub static UDP: [MetricDesc; 8] = [
    c("udp", "indatagrams", "UDP datagrams delivered"),
    c("udp", "noports", "UDP datagrams to a port with no listener"),
    c(
        "udp",
        "inerrors",
        "UDP datagrams not delivered for other reasons",
    ),
    c("udp", "outdatagrams", "UDP datagrams sent"),
    c(
        "udp",
        "rcvbuferrors",
        "UDP datagrams dropped: receive buffer full",
    ),
    c(
        "udp",
        "sndbuferrors",
        "UDP datagrams dropped: send buffer full",
    ),
    c("udp", "incsumerrors", "UDP datagrams with a bad checksum"),
    c("udp", "ignoredmulti", "UDP multicast datagrams ignored"),
];

pub static IP: [MetricDesc; 19] = [
    g("ip", "forwarding", "IP forwarding: 1 on, 2 off"),
    g("ip", "defaultttl", "Default TTL"),
    c("ip", "inreceives", "IP datagrams received"),
    c("ip", "inhdrerrors", "IP datagrams dropped: header errors"),
    c(
        "ip",
        "inaddrerrors",
        "IP datagrams dropped: invalid destination address",
    ),
    c("ip", "forwdatagrams", "IP datagrams forwarded"),
    c(
        "ip",
        "inunknownprotos",
        "IP datagrams dropped: unknown protocol",
    ),
    c(
        "ip",
        "indiscards",
        "IP datagrams discarded on input (no error, e.g. no buffer)",
    ),
    c("ip", "indelivers", "IP datagrams delivered to upper layers"),
    c("ip", "outrequests", "IP datagrams handed down for sending"),
    c("ip", "outdiscards", "IP datagrams discarded on output"),
    c("ip", "outnoroutes", "IP datagrams dropped: no route"),
    c("ip", "reasmtimeout", "Reassembly timeouts"),
    c("ip", "reasmreqds", "Fragments needing reassembly"),
    c("ip", "reasmoks", "Datagrams reassembled"),
    c("ip", "reasmfails", "Reassembly failures"),
    c("ip", "fragoks", "Datagrams fragmented"),
    c("ip", "fragfails", "Datagrams not fragmented (DF set)"),
    c("ip", "fragcreates", "Fragments created"),
];

/// One section of one MIB file as one probe: the [`ProcfsProbe`] of every `MibSection`.
pub(crate) trait MibSection: Send + Sync + 'static {
    const NAME: &'static str;
    /// `/proc/thread-self/net/…`, resolved in the netns being visited.
    const FILE: &'static str;
    const SECTION: &'static str;
    const METRICS: &'static [MetricDesc];
}

impl<M: MibSection> ProcfsProbe for M {
    const NAME: &'static str = M::NAME;
    const METRICS: &'static [MetricDesc] = M::METRICS;
    const NEEDS_THREAD_IN_NETNS: bool = false;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let text = out.netns_file(M::NAME, M::FILE)?;
        let section = mib_section(M::NAME, M::FILE, &text, M::SECTION)?;
        // Metric names are the kernel's keys lower-cased; a key an older kernel lacks is
        // simply absent, not an error.
        for (key, v) in section {
            let Some(desc) = M::METRICS.iter().find(|d| d.name.eq_ignore_ascii_case(key)) else {
                continue;
            };
            match desc.kind {
                MetricType::Counter => out.counter(desc, v.max(0) as u64),
                _ => out.gauge(desc, v as f64),
            }
        }
        Ok(())
    }
}

const SNMP: &str = "/proc/thread-self/net/snmp";

pub(crate) struct Tcp;

impl MibSection for Tcp {
    const NAME: &'static str = "tcp";
    const FILE: &'static str = SNMP;
    const SECTION: &'static str = "Tcp";
    const METRICS: &'static [MetricDesc] = &TCP;
}

pub(crate) struct Udp;

impl MibSection for Udp {
    const NAME: &'static str = "udp";
    const FILE: &'static str = SNMP;
    const SECTION: &'static str = "Udp";
    const METRICS: &'static [MetricDesc] = &UDP;
}

pub(crate) struct Ip;

impl MibSection for Ip {
    const NAME: &'static str = "ip";
    const FILE: &'static str = SNMP;
    const SECTION: &'static str = "Ip";
    const METRICS: &'static [MetricDesc] = &IP;
}
