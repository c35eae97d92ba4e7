//! IP sets from `ipset save` text, for the iptables `set` match.
//!
//! Our own parser: the format is two line kinds, `create NAME TYPE [options]` and
//! `add NAME ENTRY [options]`. Membership follows the set type's dimensions (`hash:ip,port` looks
//! at an address and a port, in the directions the rule's `--match-set NAME src,dst` gives).
//! Types we do not model are kept, and a lookup in them answers "unknown" so the caller can
//! report the assumption.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::packet::Packet;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct IpsetParseError {
    pub line: usize,
    pub message: String,
}

/// One dimension of a set type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    /// `ip` or `net`: an address (a host is a /32 or /128 net).
    Addr,
    /// `port`: protocol and port.
    Port,
    /// `mac`, `iface`, `mark`: not visible to a simulated L3 packet.
    Other,
}

/// One element: a value per dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Element {
    Addr(IpNet),
    /// Protocol number (0 = any) and port range.
    Port {
        proto: u8,
        lo: u16,
        hi: u16,
    },
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    /// Type as written, e.g. `hash:ip,port`.
    pub set_type: String,
    dimensions: Vec<Dimension>,
    members: Vec<Vec<Element>>,
    /// `list:set` members, by name.
    sub_sets: Vec<String>,
    modelled: bool,
}

impl IpSet {
    pub fn len(&self) -> usize {
        self.members.len() + self.sub_sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// All sets of a netns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSets {
    sets: HashMap<String, IpSet>,
}

impl IpSets {
    pub fn parse(text: &str) -> Result<IpSets, IpsetParseError> {
        let mut sets: HashMap<String, IpSet> = HashMap::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let fail = |message: String| IpsetParseError { line, message };
            let mut words = raw.split_whitespace();
            match words.next() {
                None => continue,
                Some(w) if w.starts_with('#') => continue,
                Some("create") => {
                    let name = words
                        .next()
                        .ok_or_else(|| fail("create without a set name".into()))?;
                    let set_type = words
                        .next()
                        .ok_or_else(|| fail(format!("set {name}: missing type")))?;
                    let (method, dims) = set_type.split_once(':').ok_or_else(|| {
                        fail(format!(
                            "set {name}: type {set_type:?} is not METHOD:DIMENSIONS"
                        ))
                    })?;
                    let dimensions: Vec<Dimension> = dims
                        .split(',')
                        .map(|d| match d {
                            "ip" | "net" => Dimension::Addr,
                            "port" => Dimension::Port,
                            _ => Dimension::Other,
                        })
                        .collect();
                    let modelled = set_type == "list:set"
                        || (matches!(method, "hash" | "bitmap")
                            && !dimensions.contains(&Dimension::Other));
                    if sets.contains_key(name) {
                        return Err(fail(format!("set {name} created twice")));
                    }
                    sets.insert(
                        name.to_string(),
                        IpSet {
                            name: name.to_string(),
                            set_type: set_type.to_string(),
                            dimensions,
                            members: Vec::new(),
                            sub_sets: Vec::new(),
                            modelled,
                        },
                    );
                }
                Some("add") => {
                    let name = words
                        .next()
                        .ok_or_else(|| fail("add without a set name".into()))?;
                    let entry = words
                        .next()
                        .ok_or_else(|| fail(format!("add {name}: missing entry")))?;
                    let set = sets.get_mut(name).ok_or_else(|| {
                        fail(format!("add to set {name:?}, which is not created before"))
                    })?;
                    if set.set_type == "list:set" {
                        set.sub_sets.push(entry.to_string());
                        continue;
                    }
                    let parts: Vec<&str> = entry.split(',').collect();
                    if parts.len() != set.dimensions.len() {
                        return Err(fail(format!(
                            "add {name}: entry {entry:?} has {} parts, type {} has {}",
                            parts.len(),
                            set.set_type,
                            set.dimensions.len()
                        )));
                    }
                    let element = parts
                        .iter()
                        .zip(&set.dimensions)
                        .map(|(part, dim)| {
                            parse_element(part, *dim).map_err(|m| fail(format!("add {name}: {m}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    set.members.push(element);
                }
                Some(other) => {
                    return Err(fail(format!("expected `create` or `add`, found {other:?}")))
                }
            }
        }
        Ok(IpSets { sets })
    }

    pub fn get(&self, name: &str) -> Option<&IpSet> {
        self.sets.get(name)
    }

    /// Whether the packet is in set `name`, looking at `directions` (one per dimension).
    /// `None` when the set is unknown or of a type we do not model.
    pub fn contains(
        &self,
        name: &str,
        packet: &Packet,
        directions: &[crate::iptables::SetDirection],
    ) -> Option<bool> {
        self.contains_depth(name, packet, directions, 0)
    }

    fn contains_depth(
        &self,
        name: &str,
        packet: &Packet,
        directions: &[crate::iptables::SetDirection],
        depth: usize,
    ) -> Option<bool> {
        use crate::iptables::SetDirection;
        let set = self.sets.get(name)?;
        if !set.modelled || depth > 8 {
            return None;
        }
        if set.set_type == "list:set" {
            let mut unknown = false;
            for sub in &set.sub_sets {
                match self.contains_depth(sub, packet, directions, depth + 1) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            return if unknown { None } else { Some(false) };
        }
        let found = set.members.iter().any(|element| {
            element.iter().enumerate().all(|(i, value)| {
                let dir = directions.get(i).copied().unwrap_or(SetDirection::Src);
                match value {
                    Element::Addr(net) => net.contains(&if dir == SetDirection::Src {
                        packet.src
                    } else {
                        packet.dst
                    }),
                    Element::Port { proto, lo, hi } => {
                        let port = if dir == SetDirection::Src {
                            packet.sport
                        } else {
                            packet.dport
                        };
                        (*proto == 0 || *proto == packet.ip_proto()) && (*lo..=*hi).contains(&port)
                    }
                    Element::Other(_) => false,
                }
            })
        });
        Some(found)
    }
}

fn parse_element(part: &str, dim: Dimension) -> Result<Element, String> {
    match dim {
        Dimension::Addr => {
            if let Some((from, to)) = part.split_once('-') {
                // `ipset save` prints ranges only for aligned blocks, which one prefix covers
                // exactly.
                let from: IpAddr = from
                    .parse()
                    .map_err(|_| format!("{from:?} is not an address"))?;
                let to: IpAddr = to
                    .parse()
                    .map_err(|_| format!("{to:?} is not an address"))?;
                return Ok(Element::Addr(covering(from, to)));
            }
            part.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map(Element::Addr)
                .map_err(|_| format!("{part:?} is not an address or prefix"))
        }
        Dimension::Port => {
            let (proto, ports) = match part.split_once(':') {
                Some((p, rest)) if p.chars().all(|c| c.is_ascii_alphabetic()) => (p, rest),
                _ => ("", part),
            };
            let proto = match proto {
                "" => 0,
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                "icmp" => 1,
                "icmpv6" => 58,
                other => return Err(format!("unknown protocol {other:?}")),
            };
            let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
            let lo: u16 = lo.parse().map_err(|_| format!("{lo:?} is not a port"))?;
            let hi: u16 = hi.parse().map_err(|_| format!("{hi:?} is not a port"))?;
            Ok(Element::Port { proto, lo, hi })
        }
        Dimension::Other => Ok(Element::Other(part.to_string())),
    }
}

/// The smallest prefix covering `from..=to`.
fn covering(from: IpAddr, to: IpAddr) -> IpNet {
    let max = if from.is_ipv4() { 32 } else { 128 };
    (0..=max)
        .rev()
        .filter_map(|len| IpNet::new(from, len).ok().map(|n| n.trunc()))
        .find(|n| n.contains(&to))
        .unwrap_or_else(|| IpNet::from(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::SetDirection::{Dst, Src};
    use crate::packet::Protocol;

    const SAVE: &str = "\
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-CLUSTER-IP 10.96.0.10,udp:53
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
create cali40all-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576
add cali40all-ipam-pools 10.244.0.0/16
create both list:set size 8
add both cali40all-ipam-pools
";

    fn packet(dst: &str, proto: Protocol, dport: u16) -> Packet {
        Packet::new(
            "10.244.1.2".parse().unwrap(),
            dst.parse().unwrap(),
            proto,
            40000,
            dport,
        )
    }

    #[test]
    fn hash_ip_port_matches_protocol_and_port() {
        let sets = IpSets::parse(SAVE).unwrap();
        assert_eq!(
            sets.contains(
                "KUBE-CLUSTER-IP",
                &packet("10.96.0.10", Protocol::Udp, 53),
                &[Dst, Dst]
            ),
            Some(true)
        );
        assert_eq!(
            sets.contains(
                "KUBE-CLUSTER-IP",
                &packet("10.96.0.10", Protocol::Tcp, 53),
                &[Dst, Dst]
            ),
            Some(false)
        );
        assert_eq!(
            sets.contains(
                "KUBE-CLUSTER-IP",
                &packet("10.96.0.1", Protocol::Tcp, 443),
                &[Dst, Dst]
            ),
            Some(true)
        );
    }

    #[test]
    fn hash_net_and_list_set_match_by_direction() {
        let sets = IpSets::parse(SAVE).unwrap();
        let p = packet("8.8.8.8", Protocol::Tcp, 80);
        assert_eq!(
            sets.contains("cali40all-ipam-pools", &p, &[Src]),
            Some(true)
        );
        assert_eq!(
            sets.contains("cali40all-ipam-pools", &p, &[Dst]),
            Some(false)
        );
        assert_eq!(sets.contains("both", &p, &[Src]), Some(true));
        assert_eq!(sets.contains("missing", &p, &[Src]), None);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = IpSets::parse("create a hash:ip\nadd b 1.2.3.4\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = IpSets::parse("create a hash:ip,port\nadd a 1.2.3.4\n").unwrap_err();
        assert!(e.message.contains("has 1 parts"), "{e}");
        let e = IpSets::parse("create a hash:ip\nadd a 1.2.3.x\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
    }
}
