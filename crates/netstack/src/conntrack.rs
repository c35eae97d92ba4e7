//! Connection tracking: which conntrack state a packet has (`ctstate NEW/ESTABLISHED/INVALID`,
//! direction), and the NAT binding that makes a reply come back un-NATed exactly as the kernel
//! rewrites it.
//!
//! The table is the snapshot's [`ConntrackState`] (possibly empty: a diagnosis usually simulates
//! a flow that does not exist yet). The simulator records its own NAT decisions with
//! [`NatBinding::record`] and replays them on the reply. RELATED (ICMP errors and expectations
//! of helpers) is not modelled. This module reads state only; netfilter evaluation is elsewhere.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::packet::{CtDirection, CtState, Packet, Protocol, TcpFlags};
use crate::state::{ConntrackEntry, ConntrackState, ConntrackTuple, NetnsState};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// One direction of a connection: what conntrack keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowTuple {
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Source port, or the ICMP echo identifier.
    pub sport: u16,
    /// Destination port; 0 for ICMP.
    pub dport: u16,
}

impl FlowTuple {
    pub fn of_packet(packet: &Packet) -> FlowTuple {
        let (sport, dport) = if packet.protocol == Protocol::Icmp {
            // the echo id sits in `sport` of a request; `Packet::reversed` moves it to `dport`
            (
                if packet.sport != 0 {
                    packet.sport
                } else {
                    packet.dport
                },
                0,
            )
        } else {
            (packet.sport, packet.dport)
        };
        FlowTuple {
            protocol: packet.ip_proto(),
            src: packet.src,
            dst: packet.dst,
            sport,
            dport,
        }
    }

    fn of_entry(protocol: u8, tuple: &ConntrackTuple) -> FlowTuple {
        FlowTuple {
            protocol,
            src: tuple.src,
            dst: tuple.dst,
            sport: tuple.sport,
            dport: tuple.dport,
        }
    }

    /// The same connection seen from the other end.
    pub fn inverted(&self) -> FlowTuple {
        let is_icmp = matches!(self.protocol, IPPROTO_ICMP | IPPROTO_ICMPV6);
        FlowTuple {
            protocol: self.protocol,
            src: self.dst,
            dst: self.src,
            // ICMP keeps its identifier in the same slot in both directions
            sport: if is_icmp { self.sport } else { self.dport },
            dport: if is_icmp { self.dport } else { self.sport },
        }
    }

    /// Rewrite `packet`'s addresses (and ports, where the protocol has them) to this tuple.
    fn write_into(&self, packet: &mut Packet) {
        packet.src = self.src;
        packet.dst = self.dst;
        if packet.protocol.has_ports() {
            packet.sport = self.sport;
            packet.dport = self.dport;
        }
    }
}

/// What NAT did to the original direction of a connection: the tuple as the initiator sent it
/// and the tuple after every DNAT/SNAT/MASQUERADE/REDIRECT on the way. The kernel's reply tuple
/// is `translated.inverted()`; a reply matching it is rewritten to `original.inverted()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatBinding {
    pub original: FlowTuple,
    pub translated: FlowTuple,
}

impl NatBinding {
    /// The binding for a packet that NAT changed from `before` to `after`; `None` if NAT left
    /// its addresses and ports alone.
    pub fn record(before: &Packet, after: &Packet) -> Option<NatBinding> {
        let binding = NatBinding {
            original: FlowTuple::of_packet(before),
            translated: FlowTuple::of_packet(after),
        };
        (binding.original != binding.translated).then_some(binding)
    }

    /// The binding an existing conntrack entry carries, if it is NATed (its reply tuple is not
    /// simply the inverse of its original tuple).
    pub fn of_entry(entry: &ConntrackEntry) -> Option<NatBinding> {
        let binding = NatBinding {
            original: FlowTuple::of_entry(entry.protocol, &entry.original),
            translated: FlowTuple::of_entry(entry.protocol, &entry.reply).inverted(),
        };
        (binding.original != binding.translated).then_some(binding)
    }

    /// The destination was rewritten (DNAT, REDIRECT, IPVS masquerading).
    pub fn is_dnat(&self) -> bool {
        self.original.dst != self.translated.dst || self.original.dport != self.translated.dport
    }

    /// The source was rewritten (SNAT, MASQUERADE).
    pub fn is_snat(&self) -> bool {
        self.original.src != self.translated.src || self.original.sport != self.translated.sport
    }

    /// The tuple a reply arrives with.
    pub fn reply_tuple(&self) -> FlowTuple {
        self.translated.inverted()
    }

    /// Un-NAT a reply: if `reply` belongs to this connection, the packet the initiator receives
    /// (source back to the VIP:port after DNAT, destination back to the client after SNAT),
    /// marked as reply direction with the NAT status bits set. `None` if it does not belong.
    pub fn un_nat_reply(&self, reply: &Packet) -> Option<Packet> {
        if FlowTuple::of_packet(reply) != self.reply_tuple() {
            return None;
        }
        let mut packet = reply.clone();
        self.original.inverted().write_into(&mut packet);
        packet.ct_state = CtState::Established;
        packet.ct_direction = CtDirection::Reply;
        packet.ct_dnat = self.is_dnat();
        packet.ct_snat = self.is_snat();
        Some(packet)
    }

    /// Apply the binding to a later original-direction packet of the same connection (conntrack
    /// NATs every packet of a flow the way it NATed the first).
    pub fn nat_original(&self, packet: &Packet) -> Option<Packet> {
        if FlowTuple::of_packet(packet) != self.original {
            return None;
        }
        let mut out = packet.clone();
        self.translated.write_into(&mut out);
        out.ct_dnat = self.is_dnat();
        out.ct_snat = self.is_snat();
        Some(out)
    }
}

/// Why a packet got its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum CtReason {
    /// Matches an entry's original tuple.
    OriginalTuple { seen_reply: bool },
    /// Matches an entry's reply tuple.
    ReplyTuple,
    /// No entry; a valid first packet (TCP SYN, UDP, ICMP echo request, …).
    FirstPacket,
    /// TCP with a flag combination the kernel rejects outright (`tcp_error`).
    BadTcpFlags,
    /// TCP without an entry that is not a SYN: RST, FIN, SYN-ACK are always INVALID; a bare ACK
    /// is picked up as NEW only with `nf_conntrack_tcp_loose` on. `loose_assumed` is set when
    /// the sysctl was not collected and the kernel default (on) was used.
    TcpNotSyn { loose_assumed: bool },
    /// ICMP without an entry that cannot start one (an echo reply, or an error with no
    /// related connection: RELATED is not modelled).
    IcmpNotNew { icmp_type: Option<u8> },
}

/// The state of one packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtLookup {
    pub state: CtState,
    pub direction: CtDirection,
    pub reason: CtReason,
    /// The entry it matched.
    pub entry: Option<ConntrackEntry>,
    /// The NAT the entry applies, if the matched entry is NATed.
    pub nat: Option<NatBinding>,
    /// A NEW packet would need an entry but the table is full: the kernel drops it
    /// ("nf_conntrack: table full, dropping packet") unless early drop frees a slot.
    pub table_full: bool,
}

/// Counters for findings (`None` where not collected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CtStats {
    pub count: Option<u64>,
    pub max: Option<u64>,
    pub insert_failed: Option<u64>,
    pub drop: Option<u64>,
    pub early_drop: Option<u64>,
    pub invalid: Option<u64>,
}

impl CtStats {
    /// `count / max`, when both are known and max is not zero.
    pub fn fill_ratio(&self) -> Option<f64> {
        match (self.count, self.max) {
            (Some(count), Some(max)) if max > 0 => Some(count as f64 / max as f64),
            _ => None,
        }
    }
}

/// The conntrack table of one netns, ready for lookups.
#[derive(Debug, Clone)]
pub struct ConntrackTable<'a> {
    entries: &'a [ConntrackEntry],
    stats: CtStats,
    tcp_loose: Option<bool>,
}

impl<'a> ConntrackTable<'a> {
    /// The table of a netns: its entries and counters, and its `nf_conntrack_tcp_loose`. A
    /// netns without collected conntrack state is simulated as an empty table.
    pub fn of_netns(state: &'a NetnsState) -> ConntrackTable<'a> {
        let tcp_loose = state.conntrack_tcp_loose().map(|r| r.value);
        match &state.conntrack {
            Some(conntrack) => ConntrackTable::new(conntrack, tcp_loose),
            None => ConntrackTable {
                entries: &[],
                stats: CtStats::default(),
                tcp_loose,
            },
        }
    }

    pub fn new(conntrack: &'a ConntrackState, tcp_loose: Option<bool>) -> ConntrackTable<'a> {
        let stat = |name: &str| conntrack.stats.get(name).copied();
        ConntrackTable {
            entries: &conntrack.entries,
            stats: CtStats {
                count: conntrack.count,
                max: conntrack.max,
                insert_failed: stat("insert_failed"),
                drop: stat("drop"),
                early_drop: stat("early_drop"),
                invalid: stat("invalid"),
            },
            tcp_loose,
        }
    }

    pub fn stats(&self) -> CtStats {
        self.stats
    }

    /// Whether the table is at its limit (`nf_conntrack_count >= nf_conntrack_max`).
    pub fn is_full(&self) -> Option<bool> {
        match (self.stats.count, self.stats.max) {
            (Some(count), Some(max)) => Some(max > 0 && count >= max),
            _ => None,
        }
    }

    /// The conntrack state `packet` gets when it enters the stack (`nf_conntrack_in`).
    pub fn lookup(&self, packet: &Packet) -> CtLookup {
        let tuple = FlowTuple::of_packet(packet);
        for entry in self.entries {
            let original = FlowTuple::of_entry(entry.protocol, &entry.original);
            let reply = FlowTuple::of_entry(entry.protocol, &entry.reply);
            let found = |state, direction, reason| CtLookup {
                state,
                direction,
                reason,
                entry: Some(entry.clone()),
                nat: NatBinding::of_entry(entry),
                table_full: false,
            };
            if tuple == original {
                let seen_reply = seen_reply(entry);
                let state = if seen_reply {
                    CtState::Established
                } else {
                    CtState::New
                };
                return found(
                    state,
                    CtDirection::Original,
                    CtReason::OriginalTuple { seen_reply },
                );
            }
            if tuple == reply {
                return found(
                    CtState::Established,
                    CtDirection::Reply,
                    CtReason::ReplyTuple,
                );
            }
        }
        let (state, reason) = self.without_entry(packet);
        CtLookup {
            state,
            direction: CtDirection::Original,
            reason,
            entry: None,
            nat: None,
            table_full: state == CtState::New && self.is_full() == Some(true),
        }
    }

    /// `tcp_new()` / `icmp_new()` and friends: can this packet start a connection?
    fn without_entry(&self, packet: &Packet) -> (CtState, CtReason) {
        match packet.protocol {
            Protocol::Tcp => {
                let flags = packet.tcp_flags;
                if !valid_tcp_flags(flags) {
                    return (CtState::Invalid, CtReason::BadTcpFlags);
                }
                if flags.syn && !flags.ack {
                    return (CtState::New, CtReason::FirstPacket);
                }
                let picks_up_ack = flags.ack && !flags.syn && !flags.fin && !flags.rst;
                let loose = self.tcp_loose.unwrap_or(true);
                let reason = CtReason::TcpNotSyn {
                    loose_assumed: self.tcp_loose.is_none(),
                };
                if picks_up_ack && loose {
                    (CtState::New, reason)
                } else {
                    (CtState::Invalid, reason)
                }
            }
            Protocol::Icmp => {
                let starts_connection = match (packet.is_ipv6(), packet.icmp_type) {
                    // echo, timestamp, info and address-mask requests
                    (false, Some(8 | 13 | 15 | 17)) => true,
                    // echo request, node information query
                    (true, Some(128 | 139)) => true,
                    _ => false,
                };
                if starts_connection {
                    (CtState::New, CtReason::FirstPacket)
                } else {
                    (
                        CtState::Invalid,
                        CtReason::IcmpNotNew {
                            icmp_type: packet.icmp_type,
                        },
                    )
                }
            }
            Protocol::Udp | Protocol::Sctp => (CtState::New, CtReason::FirstPacket),
        }
    }
}

/// `tcp_valid_flags[]` (PSH, ECE and CWR are ignored there).
fn valid_tcp_flags(f: TcpFlags) -> bool {
    matches!(
        (f.syn, f.ack, f.fin, f.rst),
        (true, false, false, false)
            | (true, true, false, false)
            | (false, _, false, true)
            | (false, true, true, false)
            | (false, true, false, false)
    )
}

/// Whether the entry has seen traffic in the reply direction. Netlink-sourced entries carry
/// `SEEN_REPLY`; `conntrack -L` text only prints `[UNREPLIED]` for entries without it (and
/// never `CONFIRMED`), so its absence there means a reply was seen.
fn seen_reply(entry: &ConntrackEntry) -> bool {
    let has = |flag: &str| entry.status.iter().any(|s| s.eq_ignore_ascii_case(flag));
    has("SEEN_REPLY") || has("ASSURED") || (!has("UNREPLIED") && !has("CONFIRMED"))
}

#[cfg(test)]
mod tests;
