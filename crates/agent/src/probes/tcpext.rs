//! `tcpext`: the `TcpExt` section of the netns's `/proc/net/netstat` (KubeSkoop's 32 keys,
//! lower-cased), all monotonic counters.

use crate::probe::MetricDesc;

use super::snmp::MibSection;

const fn c(name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::counter("tcpext", name, help)
}

pub static TCPEXT: [MetricDesc; 32] = [
    c("listendrops", "SYNs to LISTEN sockets dropped"),
    c(
        "listenoverflows",
        "Times the accept queue of a listener overflowed",
    ),
    c("tcpsynretrans", "SYN and SYN/ACK retransmits"),
    c("tcpfastretrans", "Fast retransmits"),
    c("tcpretransfail", "Retransmits that failed (e.g. no memory)"),
    c("tcptimeouts", "Retransmission timer expiries"),
    c(
        "tcpabortonclose",
        "Connections reset: closed with unread data",
    ),
    c("tcpabortonmemory", "Connections reset: out of memory"),
    c(
        "tcpabortontimeout",
        "Connections reset: retransmission timeout",
    ),
    c("tcpabortonlinger", "Connections reset: linger timeout"),
    c("tcpabortondata", "Connections reset: data after close"),
    c("tcpabortfailed", "Resets that could not be sent"),
    c(
        "tcpackskippedsynrecv",
        "ACKs not sent in SYN_RECV (rate limit)",
    ),
    c(
        "tcpackskippedpaws",
        "ACKs not sent after PAWS drop (rate limit)",
    ),
    c(
        "tcpackskippedseq",
        "ACKs not sent for out-of-window segments (rate limit)",
    ),
    c(
        "tcpackskippedfinwait2",
        "ACKs not sent in FIN_WAIT2 (rate limit)",
    ),
    c(
        "tcpackskippedtimewait",
        "ACKs not sent in TIME_WAIT (rate limit)",
    ),
    c(
        "tcpackskippedchallenge",
        "Challenge ACKs not sent (rate limit)",
    ),
    c("tcprcvqdrop", "Segments dropped: receive queue full"),
    c("tcpmemorypressures", "Times TCP entered memory pressure"),
    c(
        "tcpmemorypressureschrono",
        "Milliseconds spent in TCP memory pressure",
    ),
    c("pawsactive", "Active opens rejected by PAWS"),
    c(
        "pawsestab",
        "Segments dropped by PAWS on established connections",
    ),
    c(
        "embryonicrsts",
        "Resets received for embryonic (SYN_RECV) connections",
    ),
    c("tcpwinprobe", "Zero-window probes sent"),
    c("tcpkeepalive", "Keepalive probes sent"),
    c("tcpmtupfail", "Path-MTU probes that failed"),
    c("tcpmtupsuccess", "Path-MTU probes that succeeded"),
    c("tcpzerowindowdrop", "Segments dropped: zero receive window"),
    c("tcpbacklogdrop", "Segments dropped: socket backlog full"),
    c(
        "pfmemallocdrop",
        "Segments dropped: pfmemalloc skb on a non-memalloc socket",
    ),
    c("tcpwqueuetoobig", "Sends refused: write queue too big"),
];

pub(crate) struct TcpExt;

impl MibSection for TcpExt {
    const NAME: &'static str = "tcpext";
    const FILE: &'static str = "/proc/thread-self/net/netstat";
    const SECTION: &'static str = "TcpExt";
    const METRICS: &'static [MetricDesc] = &TCPEXT;
}
