//! `tcp`, `udp`, `ip`: the `Tcp`, `Udp` and `Ip` sections of the netns's `/proc/net/snmp`
//! (one parser, three probes, as in KubeSkoop). Metric names are the kernel's keys lower-cased.

use crate::probe::{MetricDesc, MetricProbe, ProbeArgs, ProbeContext, ProbeError, Scope};
use crate::registry::Samples;

use super::procfs::mib_section;

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

/// One section of one MIB file as one probe.
pub(crate) struct MibProbe {
    pub(crate) name: &'static str,
    /// `/proc/thread-self/net/…`, resolved in the netns being visited.
    pub(crate) file: &'static str,
    pub(crate) section: &'static str,
    pub(crate) metrics: &'static [MetricDesc],
}

impl MetricProbe for MibProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn scope(&self) -> Scope {
        Scope::PerNetns
    }

    fn metrics(&self) -> &'static [MetricDesc] {
        self.metrics
    }

    fn needs_thread_in_netns(&self) -> bool {
        false
    }

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let text = out.netns_file(self.name, self.file)?;
        let section = mib_section(self.name, self.file, &text, self.section)?;
        // Metric names are the kernel's keys lower-cased; a key an older kernel lacks is
        // simply absent, not an error.
        for (key, v) in section {
            let Some(desc) = self
                .metrics
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(key))
            else {
                continue;
            };
            match desc.kind {
                crate::probe::MetricType::Counter => out.counter(desc, v.max(0) as u64),
                _ => out.gauge(desc, v as f64),
            }
        }
        Ok(())
    }
}

pub(crate) fn tcp(args: &ProbeArgs, _: &ProbeContext) -> Result<Box<dyn MetricProbe>, ProbeError> {
    args.expect_none()?;
    Ok(Box::new(MibProbe {
        name: "tcp",
        file: "/proc/thread-self/net/snmp",
        section: "Tcp",
        metrics: &TCP,
    }))
}

pub(crate) fn udp(args: &ProbeArgs, _: &ProbeContext) -> Result<Box<dyn MetricProbe>, ProbeError> {
    args.expect_none()?;
    Ok(Box::new(MibProbe {
        name: "udp",
        file: "/proc/thread-self/net/snmp",
        section: "Udp",
        metrics: &UDP,
    }))
}

pub(crate) fn ip(args: &ProbeArgs, _: &ProbeContext) -> Result<Box<dyn MetricProbe>, ProbeError> {
    args.expect_none()?;
    Ok(Box::new(MibProbe {
        name: "ip",
        file: "/proc/thread-self/net/snmp",
        section: "Ip",
        metrics: &IP,
    }))
}
