//! IPVS as the kernel shows it: parsing `/proc/net/ip_vs` (virtual services and their real
//! servers) and `/proc/net/ip_vs_stats`, and the lookup a packet to a virtual address gets —
//! every real server it may be scheduled to, with the share of new connections each receives.
//!
//! The text formats are those of `ip_vs_info_seq_show()` and `ip_vs_stats_show()`
//! (net/netfilter/ipvs/ip_vs_ctl.c): addresses and ports in hexadecimal, IPv6 in `[…]`.
//! Parsing is strict: text that does not have that shape is an error naming the line and field,
//! never a guess. This module does not evaluate iptables (kube-proxy's IPVS mode still relies on
//! iptables/ipset for masquerading; that is the netfilter evaluators' business).

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Path the service table is read from, for error messages.
pub const IP_VS_PATH: &str = "/proc/net/ip_vs";
/// Path of the global counters.
pub const IP_VS_STATS_PATH: &str = "/proc/net/ip_vs_stats";

/// Text that is not what the kernel prints.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}:{line}: {field}: {message}")]
pub struct IpvsParseError {
    pub path: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// The field that could not be read (`address`, `port`, `weight`, …).
    pub field: &'static str,
    pub message: String,
}

/// Transport protocol of a virtual service (`ip_vs_proto_name()`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpvsProtocol {
    Tcp,
    Udp,
    Sctp,
    /// `AH`, `ESP`, `UNK` and other rarely used names, as printed.
    Other(String),
}

impl IpvsProtocol {
    fn parse(name: &str) -> IpvsProtocol {
        match name {
            "TCP" => IpvsProtocol::Tcp,
            "UDP" => IpvsProtocol::Udp,
            "SCTP" => IpvsProtocol::Sctp,
            other => IpvsProtocol::Other(other.to_string()),
        }
    }

    /// The protocol of a simulated packet.
    pub fn of(protocol: crate::packet::Protocol) -> IpvsProtocol {
        match protocol {
            crate::packet::Protocol::Tcp => IpvsProtocol::Tcp,
            crate::packet::Protocol::Udp => IpvsProtocol::Udp,
            crate::packet::Protocol::Sctp => IpvsProtocol::Sctp,
            crate::packet::Protocol::Icmp => IpvsProtocol::Other("ICMP".to_string()),
        }
    }
}

impl fmt::Display for IpvsProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsProtocol::Tcp => f.write_str("TCP"),
            IpvsProtocol::Udp => f.write_str("UDP"),
            IpvsProtocol::Sctp => f.write_str("SCTP"),
            IpvsProtocol::Other(name) => f.write_str(name),
        }
    }
}

/// What identifies a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServiceKey {
    Address {
        protocol: IpvsProtocol,
        address: IpAddr,
        port: u16,
    },
    /// A firewall-mark service (`ipvsadm -f`): packets whose mark equals it.
    Fwmark { mark: u32 },
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Address {
                protocol,
                address: IpAddr::V6(a),
                port,
            } => {
                write!(f, "{protocol} [{a}]:{port}")
            }
            ServiceKey::Address {
                protocol,
                address,
                port,
            } => {
                write!(f, "{protocol} {address}:{port}")
            }
            ServiceKey::Fwmark { mark } => write!(f, "FWM {mark}"),
        }
    }
}

/// `persistent TIMEOUT NETMASK`: a client sticks to one real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Persistence {
    /// Seconds.
    pub timeout: u32,
    /// IPv4: the client netmask (`FFFFFFFF` = per client address); IPv6: the prefix length.
    pub netmask: u32,
}

/// Packet forwarding method of a real server (`ip_vs_fwd_name()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardMethod {
    /// NAT: the destination is rewritten to the real server (kube-proxy's mode).
    Masq,
    /// The real server is this host.
    Local,
    /// IP-in-IP to the real server.
    Tunnel,
    /// Direct routing: only the MAC changes.
    Route,
}

/// One real server (`  -> …` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServer {
    pub address: IpAddr,
    pub port: u16,
    pub forward: ForwardMethod,
    /// 0 means quiesced: existing connections continue, new ones are not scheduled to it.
    pub weight: i32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    /// 1-based line in the text, for evidence.
    pub line: usize,
}

impl RealServer {
    pub fn is_quiesced(&self) -> bool {
        self.weight <= 0
    }
}

/// One virtual service with its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualService {
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wrr`, `lc`, `sh`, …).
    pub scheduler: String,
    /// `ops`: one-packet scheduling (UDP only).
    pub one_packet: bool,
    pub persistence: Option<Persistence>,
    pub real_servers: Vec<RealServer>,
    /// 1-based line of the service in the text.
    pub line: usize,
}

/// Where new connections to a service go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Real servers that receive new connections, with their expected share (sums to 1).
    pub branches: Vec<ScheduledServer>,
    /// Weight-0 servers: they keep existing connections but get no new ones.
    pub quiesced: Vec<RealServer>,
}

impl Schedule {
    /// No real server can take a new connection: IPVS drops it.
    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledServer {
    pub server: RealServer,
    pub probability: f64,
}

impl VirtualService {
    /// The share of new connections each real server receives over many connections. Weighted
    /// schedulers split by weight; `rr`, `lc` and `dh` split evenly among servers with a
    /// positive weight (they only use the weight to exclude quiesced servers).
    pub fn schedule(&self) -> Schedule {
        let (active, quiesced): (Vec<&RealServer>, Vec<&RealServer>) =
            self.real_servers.iter().partition(|s| !s.is_quiesced());
        let by_weight = !matches!(self.scheduler.as_str(), "rr" | "lc" | "dh");
        let share = |s: &RealServer| if by_weight { f64::from(s.weight) } else { 1.0 };
        let total: f64 = active.iter().map(|s| share(s)).sum();
        Schedule {
            branches: active
                .iter()
                .map(|s| ScheduledServer {
                    server: (*s).clone(),
                    probability: share(s) / total,
                })
                .collect(),
            quiesced: quiesced.into_iter().cloned().collect(),
        }
    }
}

/// The parsed `/proc/net/ip_vs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpvsTable {
    /// `1.2.1` from the header, when present.
    pub version: Option<String>,
    /// Connection hash table size from the header.
    pub conn_table_size: Option<u32>,
    pub services: Vec<VirtualService>,
}

impl IpvsTable {
    /// Parse `/proc/net/ip_vs` text.
    pub fn parse(text: &str) -> Result<IpvsTable, IpvsParseError> {
        let mut table = IpvsTable::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |field, message: String| IpvsParseError {
                path: IP_VS_PATH,
                line,
                field,
                message,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty()
                || trimmed.starts_with("Prot LocalAddress:Port")
                || trimmed.starts_with("-> RemoteAddress:Port")
            {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("IP Virtual Server version ") {
                let (version, size) = parse_header(rest).ok_or_else(|| {
                    err(
                        "header",
                        format!("expected \"VERSION (size=N)\", got {rest:?}"),
                    )
                })?;
                table.version = Some(version);
                table.conn_table_size = Some(size);
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("->") {
                let server = parse_real_server(rest, line)?;
                let service = table.services.last_mut().ok_or_else(|| {
                    err(
                        "service",
                        "real server line before any virtual service".to_string(),
                    )
                })?;
                service.real_servers.push(server);
                continue;
            }
            table.services.push(parse_service(trimmed, line)?);
        }
        Ok(table)
    }

    /// The service a packet to `address:port` over `protocol` hits.
    pub fn service(
        &self,
        protocol: &IpvsProtocol,
        address: IpAddr,
        port: u16,
    ) -> Option<&VirtualService> {
        self.services.iter().find(|s| match &s.key {
            ServiceKey::Address {
                protocol: p,
                address: a,
                port: o,
            } => p == protocol && *a == address && *o == port,
            ServiceKey::Fwmark { .. } => false,
        })
    }

    /// The firewall-mark service for packets carrying `mark`.
    pub fn fwmark_service(&self, mark: u32) -> Option<&VirtualService> {
        self.services
            .iter()
            .find(|s| s.key == ServiceKey::Fwmark { mark })
    }

    /// The service a simulated packet hits: by mark first (IPVS checks fwmark services before
    /// address services in `ip_vs_service_find()`), then by destination.
    pub fn service_for(&self, packet: &crate::packet::Packet) -> Option<&VirtualService> {
        (packet.mark != 0)
            .then(|| self.fwmark_service(packet.mark))
            .flatten()
            .or_else(|| self.service(&IpvsProtocol::of(packet.protocol), packet.dst, packet.dport))
    }
}

fn parse_header(rest: &str) -> Option<(String, u32)> {
    let (version, size) = rest.split_once(" (size=")?;
    let size = size.strip_suffix(')')?.parse().ok()?;
    Some((version.to_string(), size))
}

/// Hexadecimal digits only: `from_str_radix` would also take a sign, which the kernel never prints.
fn hex_digits<T>(
    text: &str,
    parse: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Result<T, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not hexadecimal"));
    }
    parse(text, 16).map_err(|e| format!("{text:?} is not hexadecimal: {e}"))
}

fn hex_u32(text: &str, line: usize, field: &'static str) -> Result<u32, IpvsParseError> {
    hex_digits(text, u32::from_str_radix).map_err(|message| IpvsParseError {
        path: IP_VS_PATH,
        line,
        field,
        message,
    })
}

/// `0A600001:0050` or `[fd00:0000:…:0001]:0050`.
fn parse_endpoint(text: &str, line: usize) -> Result<(IpAddr, u16), IpvsParseError> {
    let err = |field, message: String| IpvsParseError {
        path: IP_VS_PATH,
        line,
        field,
        message,
    };
    let (address, port) = match text.strip_prefix('[') {
        Some(v6) => {
            let (address, port) = v6
                .split_once("]:")
                .ok_or_else(|| err("address", format!("{text:?} lacks \"]:PORT\"")))?;
            let address: Ipv6Addr = address
                .parse()
                .map_err(|e| err("address", format!("{address:?} is not IPv6: {e}")))?;
            (IpAddr::V6(address), port)
        }
        None => {
            let (address, port) = text
                .split_once(':')
                .ok_or_else(|| err("address", format!("{text:?} lacks \":PORT\"")))?;
            if address.len() != 8 {
                return Err(err("address", format!("{address:?} is not 8 hex digits")));
            }
            (
                IpAddr::V4(Ipv4Addr::from(hex_u32(address, line, "address")?)),
                port,
            )
        }
    };
    if port.len() != 4 {
        return Err(err("port", format!("{port:?} is not 4 hex digits")));
    }
    let port = hex_digits(port, u16::from_str_radix).map_err(|m| err("port", m))?;
    Ok((address, port))
}

/// `TCP  0A600001:0050 rr  [ops] [persistent 10800 FFFFFFFF]`, `FWM  00000001 wrr …`.
fn parse_service(text: &str, line: usize) -> Result<VirtualService, IpvsParseError> {
    let err = |field, message: String| IpvsParseError {
        path: IP_VS_PATH,
        line,
        field,
        message,
    };
    let mut fields = text.split_whitespace();
    let protocol = fields
        .next()
        .ok_or_else(|| err("protocol", "empty line".to_string()))?;
    let target = fields
        .next()
        .ok_or_else(|| err("address", "missing".to_string()))?;
    let key = if protocol == "FWM" {
        ServiceKey::Fwmark {
            mark: hex_u32(target, line, "fwmark")?,
        }
    } else {
        if !protocol.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(err(
                "protocol",
                format!("{protocol:?} is not a protocol name"),
            ));
        }
        let (address, port) = parse_endpoint(target, line)?;
        ServiceKey::Address {
            protocol: IpvsProtocol::parse(protocol),
            address,
            port,
        }
    };
    let scheduler = fields
        .next()
        .ok_or_else(|| err("scheduler", "missing".to_string()))?;
    let mut service = VirtualService {
        key,
        scheduler: scheduler.to_string(),
        one_packet: false,
        persistence: None,
        real_servers: Vec::new(),
        line,
    };
    while let Some(flag) = fields.next() {
        match flag {
            "ops" => service.one_packet = true,
            "persistent" => {
                let timeout = fields
                    .next()
                    .ok_or_else(|| err("persistent timeout", "missing".to_string()))?;
                let timeout = timeout.parse().map_err(|e| {
                    err(
                        "persistent timeout",
                        format!("{timeout:?} is not a number: {e}"),
                    )
                })?;
                let netmask = fields
                    .next()
                    .ok_or_else(|| err("persistent netmask", "missing".to_string()))?;
                let netmask = hex_u32(netmask, line, "persistent netmask")?;
                service.persistence = Some(Persistence { timeout, netmask });
            }
            other => return Err(err("flags", format!("unknown flag {other:?}"))),
        }
    }
    Ok(service)
}

/// `0AF40105:1F90      Masq    1      0          0` (after the `->`).
fn parse_real_server(text: &str, line: usize) -> Result<RealServer, IpvsParseError> {
    let err = |field, message: String| IpvsParseError {
        path: IP_VS_PATH,
        line,
        field,
        message,
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [endpoint, forward, weight, active, inactive] = fields[..] else {
        return Err(err(
            "real server",
            format!("expected ADDRESS:PORT FORWARD WEIGHT ACTIVE INACTIVE, got {text:?}"),
        ));
    };
    let (address, port) = parse_endpoint(endpoint, line)?;
    let forward = match forward {
        "Masq" => ForwardMethod::Masq,
        "Local" => ForwardMethod::Local,
        "Tunnel" => ForwardMethod::Tunnel,
        "Route" => ForwardMethod::Route,
        other => {
            return Err(err(
                "forward",
                format!("unknown forwarding method {other:?}"),
            ))
        }
    };
    let number = |field, text: &str| -> Result<u32, IpvsParseError> {
        text.parse()
            .map_err(|e| err(field, format!("{text:?} is not a number: {e}")))
    };
    Ok(RealServer {
        address,
        port,
        forward,
        weight: weight
            .parse()
            .map_err(|e| err("weight", format!("{weight:?}: {e}")))?,
        active_conns: number("active connections", active)?,
        inactive_conns: number("inactive connections", inactive)?,
        line,
    })
}

/// One row of `/proc/net/ip_vs_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpvsCounters {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// The parsed `/proc/net/ip_vs_stats`: totals since boot and current per-second rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpvsStats {
    pub totals: IpvsCounters,
    pub rates: IpvsCounters,
}

impl IpvsStats {
    /// Parse `/proc/net/ip_vs_stats`: two header lines, the totals row, a blank line, one
    /// header line, the rates row; numbers in hexadecimal.
    pub fn parse(text: &str) -> Result<IpvsStats, IpvsParseError> {
        const FIELDS: [&str; 5] = [
            "conns",
            "in_packets",
            "out_packets",
            "in_bytes",
            "out_bytes",
        ];
        let mut rows = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fields: Vec<&str> = raw.split_whitespace().collect();
            let is_header = fields
                .first()
                .is_none_or(|f| hex_digits(f, u64::from_str_radix).is_err());
            if is_header {
                continue;
            }
            let err = |field, message| IpvsParseError {
                path: IP_VS_STATS_PATH,
                line,
                field,
                message,
            };
            if fields.len() != FIELDS.len() {
                return Err(err(
                    "row",
                    format!("expected 5 columns, got {}", fields.len()),
                ));
            }
            let mut values = [0u64; 5];
            for ((value, text), field) in values.iter_mut().zip(&fields).zip(FIELDS) {
                *value = hex_digits(text, u64::from_str_radix).map_err(|m| err(field, m))?;
            }
            let [conns, in_packets, out_packets, in_bytes, out_bytes] = values;
            rows.push((
                line,
                IpvsCounters {
                    conns,
                    in_packets,
                    out_packets,
                    in_bytes,
                    out_bytes,
                },
            ));
        }
        match rows[..] {
            [(_, totals), (_, rates)] => Ok(IpvsStats { totals, rates }),
            _ => Err(IpvsParseError {
                path: IP_VS_STATS_PATH,
                line: rows.get(2).map_or(text.lines().count(), |(line, _)| *line),
                field: "rows",
                message: format!(
                    "expected a totals row and a rates row, found {}",
                    rows.len()
                ),
            }),
        }
    }
}
