//! `tcpsummary`: TCP sockets of the netns by state, and their queued bytes, from one
//! `SOCK_DIAG_BY_FAMILY` dump per address family (KubeSkoop parsed `/proc/net/tcp{,6}` text and
//! skipped the whole netns when `tcp6` was missing; here a missing IPv6 just counts as none).

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::procfs::ProcfsProbe;

const fn g(name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::gauge("tcpsummary", name, help)
}

pub static TCPSUMMARY: [MetricDesc; 8] = [
    g("tcpestablishedconn", "TCP sockets in ESTABLISHED"),
    g("tcptimewaitconn", "TCP sockets in TIME_WAIT"),
    g("tcpclosewaitconn", "TCP sockets in CLOSE_WAIT"),
    g("tcpsynsentconn", "TCP sockets in SYN_SENT"),
    g("tcpsynrecvconn", "TCP sockets in SYN_RECV"),
    g("tcplistenconn", "TCP sockets in LISTEN"),
    g(
        "tcptxqueue",
        "Bytes in send queues of non-LISTEN TCP sockets",
    ),
    g(
        "tcprxqueue",
        "Bytes in receive queues of non-LISTEN TCP sockets",
    ),
];

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 10;

/// Counts in [`TCPSUMMARY`] order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary(pub [u64; 8]);

impl Summary {
    /// Add one `struct inet_diag_msg` (state at byte 1, rqueue at 56, wqueue at 60).
    pub(crate) fn add(&mut self, msg: &[u8]) {
        if msg.len() < 64 {
            return;
        }
        let state = msg[1];
        let rqueue = u32::from_ne_bytes(msg[56..60].try_into().expect("4 bytes")) as u64;
        let wqueue = u32::from_ne_bytes(msg[60..64].try_into().expect("4 bytes")) as u64;
        let slot = match state {
            TCP_ESTABLISHED => Some(0),
            TCP_TIME_WAIT => Some(1),
            TCP_CLOSE_WAIT => Some(2),
            TCP_SYN_SENT => Some(3),
            TCP_SYN_RECV => Some(4),
            TCP_LISTEN => Some(5),
            _ => None,
        };
        if let Some(i) = slot {
            self.0[i] += 1;
        }
        if state != TCP_LISTEN {
            self.0[6] += wqueue;
            self.0[7] += rqueue;
        }
    }
}

/// `struct inet_diag_req_v2` for all TCP sockets of `family`, every state.
fn request(family: u8) -> [u8; 56] {
    let mut req = [0u8; 56];
    req[0] = family;
    req[1] = libc::IPPROTO_TCP as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req
}

pub(crate) struct TcpSummary;

impl ProcfsProbe for TcpSummary {
    const NAME: &'static str = "tcpsummary";
    const METRICS: &'static [MetricDesc] = &TCPSUMMARY;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let mut summary = Summary::default();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            match super::netlink::dump(
                libc::NETLINK_SOCK_DIAG,
                SOCK_DIAG_BY_FAMILY,
                &request(family),
            ) {
                Ok(msgs) => msgs.iter().for_each(|m| summary.add(m)),
                // IPv6 disabled: no v6 sockets, not an error.
                Err(e)
                    if family == libc::AF_INET6 as u8 && e.raw_os_error() == Some(libc::ENOENT) => {
                }
                Err(e) => {
                    return Err(ProbeError::other(
                        "tcpsummary",
                        format!("sock_diag dump: {e}"),
                    ))
                }
            }
        }
        for (desc, v) in TCPSUMMARY.iter().zip(summary.0) {
            out.gauge(desc, v as f64);
        }
        Ok(())
    }
}
