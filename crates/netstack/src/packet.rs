//! The simulated packet: what every part of the simulator reads and transforms.
//!
//! A [`Packet`] carries the header fields that Linux's forwarding decisions look at, plus the
//! per-skb metadata that rules set and read (mark, conntrack state and mark, input/output device).
//! NAT targets rewrite it in place, so the packet at the end of a path is what the kernel would
//! deliver.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// L4 protocol of the simulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Sctp,
}

impl Protocol {
    /// IP protocol number (ICMPv6 is 58; [`Packet::ip_proto`] takes the family into account).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Sctp => 132,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Whether the protocol has ports.
    pub fn has_ports(self) -> bool {
        !matches!(self, Protocol::Icmp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Protocol::Tcp),
            "udp" | "17" => Ok(Protocol::Udp),
            "icmp" | "1" | "icmpv6" | "ipv6-icmp" | "58" => Ok(Protocol::Icmp),
            "sctp" | "132" => Ok(Protocol::Sctp),
            other => Err(format!(
                "unknown protocol {other:?} (expected tcp, udp, icmp or sctp)"
            )),
        }
    }
}

/// Connection-tracking state of a packet as netfilter's `ctstate`/`ct state` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    /// `NOTRACK` / `notrack` was applied.
    Untracked,
}

impl CtState {
    pub fn as_str(self) -> &'static str {
        match self {
            CtState::New => "NEW",
            CtState::Established => "ESTABLISHED",
            CtState::Related => "RELATED",
            CtState::Invalid => "INVALID",
            CtState::Untracked => "UNTRACKED",
        }
    }
}

/// Direction of the packet relative to its conntrack entry (`ctdir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtDirection {
    Original,
    Reply,
}

/// TCP flags of the simulated segment. The first packet of a flow is a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub urg: bool,
}

impl TcpFlags {
    pub const SYN: TcpFlags = TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
        urg: false,
    };
    pub const SYN_ACK: TcpFlags = TcpFlags {
        syn: true,
        ack: true,
        fin: false,
        rst: false,
        psh: false,
        urg: false,
    };
    pub const ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
        psh: false,
        urg: false,
    };
}

/// One simulated packet with its skb metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// Source port (TCP/UDP/SCTP); ICMP echo identifier for ICMP.
    pub sport: u16,
    /// Destination port (TCP/UDP/SCTP); 0 for ICMP.
    pub dport: u16,
    /// ICMP type (8 = echo request, 0 = echo reply), for ICMP packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default)]
    pub tcp_flags: TcpFlags,
    /// Total IP length in bytes, for MTU checks and `length` matches.
    pub length: u32,
    /// DSCP/TOS byte.
    #[serde(default)]
    pub tos: u8,
    /// skb->mark.
    #[serde(default)]
    pub mark: u32,
    /// Conntrack mark (`connmark`).
    #[serde(default)]
    pub ct_mark: u32,
    pub ct_state: CtState,
    pub ct_direction: CtDirection,
    /// NAT already applied to this connection (`ctstate DNAT/SNAT`, `ct status dnat`).
    #[serde(default)]
    pub ct_dnat: bool,
    #[serde(default)]
    pub ct_snat: bool,
    /// Input device in the current netns (`-i`), `None` for locally generated packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    /// Output device in the current netns (`-o`), known after routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    /// Bridge ports for `physdev` matches, when the packet crosses a bridge with
    /// `bridge-nf-call-iptables` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physdev_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physdev_out: Option<String>,
}

impl Packet {
    /// A new first packet of a flow: TCP SYN, UDP datagram, or ICMP echo request, state NEW.
    pub fn new(src: IpAddr, dst: IpAddr, protocol: Protocol, sport: u16, dport: u16) -> Packet {
        let (tcp_flags, icmp_type, dport) = match protocol {
            Protocol::Tcp => (TcpFlags::SYN, None, dport),
            Protocol::Icmp => (TcpFlags::default(), Some(8), 0),
            _ => (TcpFlags::default(), None, dport),
        };
        Packet {
            src,
            dst,
            protocol,
            sport,
            dport,
            icmp_type,
            tcp_flags,
            length: 60,
            tos: 0,
            mark: 0,
            ct_mark: 0,
            ct_state: CtState::New,
            ct_direction: CtDirection::Original,
            ct_dnat: false,
            ct_snat: false,
            iif: None,
            oif: None,
            physdev_in: None,
            physdev_out: None,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// IP protocol number, with ICMPv6 for ICMP over IPv6.
    pub fn ip_proto(&self) -> u8 {
        match (self.protocol, self.is_ipv6()) {
            (Protocol::Icmp, true) => 58,
            (p, _) => p.number(),
        }
    }

    /// The same flow seen from the other side: addresses and ports swapped, reply direction,
    /// ESTABLISHED, per-device metadata cleared.
    pub fn reversed(&self) -> Packet {
        Packet {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            icmp_type: self.icmp_type.map(|t| if t == 8 { 0 } else { t }),
            tcp_flags: if self.protocol == Protocol::Tcp {
                TcpFlags::SYN_ACK
            } else {
                TcpFlags::default()
            },
            ct_state: CtState::Established,
            ct_direction: CtDirection::Reply,
            iif: None,
            oif: None,
            physdev_in: None,
            physdev_out: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fmt_ep = |ip: &IpAddr, port: u16| match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            IpAddr::V4(v4) => format!("{v4}:{port}"),
        };
        if self.protocol.has_ports() {
            write!(
                f,
                "{} {} -> {}",
                self.protocol,
                fmt_ep(&self.src, self.sport),
                fmt_ep(&self.dst, self.dport)
            )
        } else {
            write!(f, "{} {} -> {}", self.protocol, self.src, self.dst)
        }
    }
}
