//! Link-layer resolution of a next hop: the neighbour (ARP/NDP) entry, then — for bridges and
//! vxlan devices — which port or remote VTEP the frame goes to, and whether this netns answers
//! an ARP request (own address with `arp_ignore`/`arp_filter`, proxy entries, `proxy_arp`).
//!
//! Every answer says what it used (the entry, the sysctl) and what was missing, so that a
//! finding can cite it. Nothing here sends ARP; "would ARP" means the kernel would have to.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::sysctl::{ArpIgnore, SysctlReading};
use super::{Fib, FlowKey, RouteOutcome};
use crate::state::{Address, FdbEntry, LinkKind, NeighState, Neighbour, NetnsState, Scope};

/// The vxlan "default destination" MAC: frames for unknown MACs go to these entries' remotes.
pub const ALL_ZERO_MAC: &str = "00:00:00:00:00:00";

fn same_mac(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Why a device needs no neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoNeighbourNeeded {
    /// `IFF_NOARP` (e.g. ipip, wireguard, or a device configured `arp off`).
    NoarpDevice,
    Loopback,
}

/// Result of resolving the link-layer address of `target` on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "resolution", rename_all = "snake_case")]
pub enum NeighbourResolution {
    NotNeeded {
        why: NoNeighbourNeeded,
    },
    /// A usable entry (permanent, noarp, reachable, or stale/delay/probe which still transmit
    /// while being re-confirmed).
    Resolved {
        entry: Neighbour,
    },
    /// No usable entry: the kernel would ARP (or send a neighbour solicitation) and queue the
    /// packet; `found` is the failed/incomplete entry, if there is one.
    WouldArp {
        found: Option<Neighbour>,
    },
}

impl NeighbourResolution {
    pub fn mac(&self) -> Option<&str> {
        match self {
            NeighbourResolution::Resolved { entry } => entry.mac.as_deref(),
            _ => None,
        }
    }
}

/// Look up the neighbour entry for `target` on `dev`.
pub fn resolve_neighbour(state: &NetnsState, dev: &str, target: IpAddr) -> NeighbourResolution {
    if let Some(link) = state.link(dev) {
        if link.kind == LinkKind::Loopback {
            return NeighbourResolution::NotNeeded {
                why: NoNeighbourNeeded::Loopback,
            };
        }
        if link.noarp {
            return NeighbourResolution::NotNeeded {
                why: NoNeighbourNeeded::NoarpDevice,
            };
        }
    }
    let found = state
        .neighbours
        .iter()
        .find(|n| !n.proxy && n.dev == dev && n.ip == target);
    match found {
        Some(entry) if usable(entry.state) && entry.mac.is_some() => {
            NeighbourResolution::Resolved {
                entry: entry.clone(),
            }
        }
        Some(entry) if entry.state == NeighState::Noarp => NeighbourResolution::Resolved {
            entry: entry.clone(),
        },
        other => NeighbourResolution::WouldArp {
            found: other.cloned(),
        },
    }
}

fn usable(state: NeighState) -> bool {
    matches!(
        state,
        NeighState::Permanent
            | NeighState::Noarp
            | NeighState::Reachable
            | NeighState::Stale
            | NeighState::Delay
            | NeighState::Probe
    )
}

/// Where a bridge sends a frame for a destination MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "forwarding", rename_all = "snake_case")]
pub enum BridgeForwarding {
    /// A learned or static FDB entry names the port.
    Port { port: String, entry: FdbEntry },
    /// The MAC belongs to the bridge or one of its ports' own addresses: delivered up the stack.
    Local { entry: Option<FdbEntry> },
    /// Unknown MAC: flooded to every port that is up.
    Flood { ports: Vec<String> },
}

/// Which port of `bridge` a frame to `mac` (in `vlan`, when VLAN filtering is used) leaves by.
pub fn bridge_forward(
    state: &NetnsState,
    bridge: &str,
    mac: &str,
    vlan: Option<u16>,
) -> BridgeForwarding {
    if state
        .link(bridge)
        .and_then(|l| l.mac.as_deref())
        .is_some_and(|m| same_mac(m, mac))
    {
        return BridgeForwarding::Local { entry: None };
    }
    let entry = state.fdb.iter().find(|e| {
        same_mac(&e.mac, mac)
            && (e.master.as_deref() == Some(bridge) || e.dev == bridge)
            && (vlan.is_none() || e.vlan.is_none() || e.vlan == vlan)
    });
    match entry {
        Some(e) if e.dev == bridge || is_port_own_mac(state, e) => BridgeForwarding::Local {
            entry: Some(e.clone()),
        },
        Some(e) => BridgeForwarding::Port {
            port: e.dev.clone(),
            entry: e.clone(),
        },
        None => BridgeForwarding::Flood {
            ports: state
                .links
                .iter()
                .filter(|l| l.master.as_deref() == Some(bridge) && l.admin_up)
                .map(|l| l.name.clone())
                .collect(),
        },
    }
}

/// The permanent entries `bridge fdb` shows for each port's own MAC mean "this host".
fn is_port_own_mac(state: &NetnsState, entry: &FdbEntry) -> bool {
    entry.permanent
        && state
            .link(&entry.dev)
            .and_then(|l| l.mac.as_deref())
            .is_some_and(|m| same_mac(m, &entry.mac))
}

/// How a vxlan device chose the remote VTEP(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VxlanRemoteSource {
    /// FDB entries for the inner destination MAC.
    MacEntry,
    /// No entry for the MAC: the all-zero (default/flood) entries.
    AllZeroEntry,
    /// No FDB entry at all, but the device was created with `remote`/`group` (the kernel keeps
    /// that as an all-zero entry; the snapshot's FDB did not show it).
    DeviceDefault,
}

/// Where a vxlan device sends an encapsulated frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "forwarding", rename_all = "snake_case")]
pub enum VxlanForwarding {
    /// Sent to every address in `vteps` (one, unless the entry has several remotes).
    Remotes {
        vteps: Vec<IpAddr>,
        source: VxlanRemoteSource,
        entries: Vec<FdbEntry>,
    },
    /// No entry and no default remote: the kernel drops the frame (`tx_dropped`).
    NoRemote,
}

/// The remote VTEP(s) vxlan device `dev` sends a frame for inner destination `mac` to.
pub fn vxlan_forward(state: &NetnsState, dev: &str, mac: &str) -> VxlanForwarding {
    let entries_for = |wanted: &str| -> Vec<FdbEntry> {
        state
            .fdb
            .iter()
            .filter(|e| e.dev == dev && e.dst.is_some() && same_mac(&e.mac, wanted))
            .cloned()
            .collect()
    };
    let remotes = |entries: Vec<FdbEntry>, source| VxlanForwarding::Remotes {
        vteps: entries.iter().filter_map(|e| e.dst).collect(),
        source,
        entries,
    };
    let exact = entries_for(mac);
    if !exact.is_empty() {
        return remotes(exact, VxlanRemoteSource::MacEntry);
    }
    let flood = entries_for(ALL_ZERO_MAC);
    if !flood.is_empty() {
        return remotes(flood, VxlanRemoteSource::AllZeroEntry);
    }
    match state
        .link(dev)
        .and_then(|l| l.vxlan.as_ref())
        .and_then(|v| v.remote)
    {
        Some(remote) => VxlanForwarding::Remotes {
            vteps: vec![remote],
            source: VxlanRemoteSource::DeviceDefault,
            entries: Vec::new(),
        },
        None => VxlanForwarding::NoRemote,
    }
}

/// What happens after the neighbour is known, for devices that forward at layer 2 themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "device", rename_all = "snake_case")]
pub enum LayerTwoForwarding {
    Bridge(BridgeForwarding),
    Vxlan(VxlanForwarding),
}

/// The full link-layer story of one next hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLayerResolution {
    pub dev: String,
    /// The gateway, or the destination itself when on-link.
    pub target: IpAddr,
    pub neighbour: NeighbourResolution,
    /// Bridge port or vxlan remote, when `dev` is a bridge or vxlan device and the neighbour's
    /// MAC is known.
    pub forwarding: Option<LayerTwoForwarding>,
}

/// Resolve `target` on `dev` through the neighbour table and, for bridges and vxlan devices,
/// through their FDB (`flannel.1`: permanent neighbour → FDB entry with the node's VTEP).
pub fn resolve_link_layer(state: &NetnsState, dev: &str, target: IpAddr) -> LinkLayerResolution {
    let neighbour = resolve_neighbour(state, dev, target);
    let kind = state.link(dev).map(|l| &l.kind);
    let forwarding = neighbour.mac().and_then(|mac| match kind {
        Some(LinkKind::Bridge) => Some(LayerTwoForwarding::Bridge(bridge_forward(
            state, dev, mac, None,
        ))),
        Some(LinkKind::Vxlan) => Some(LayerTwoForwarding::Vxlan(vxlan_forward(state, dev, mac))),
        _ => None,
    });
    LinkLayerResolution {
        dev: dev.to_string(),
        target,
        neighbour,
        forwarding,
    }
}

/// Whether this netns answers an ARP request for `target` from `sender` arriving on `dev`
/// (`arp_process()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ArpAnswer {
    /// `target` is one of our addresses and `arp_ignore`/`arp_filter` allow the reply.
    OwnAddress {
        address: Address,
        arp_ignore: Option<SysctlReading<ArpIgnore>>,
    },
    /// A proxy neighbour entry (`ip neigh add proxy … dev DEV`) for `target`.
    ProxyEntry {
        entry: Neighbour,
    },
    /// `proxy_arp` is on for `dev` and the route to `target` leaves by another device.
    ProxyArp {
        proxy_arp: SysctlReading<bool>,
        route_dev: String,
    },
    NoAnswer {
        reason: NoArpAnswer,
    },
    /// The snapshot lacks a sysctl the answer depends on.
    Unknown {
        missing_sysctl: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoArpAnswer {
    /// `arp_ignore` forbids answering for this address on this device.
    ArpIgnore { mode: ArpIgnore },
    /// `arp_filter`: the route back to the sender does not leave by this device.
    ArpFilter { route_dev: Option<String> },
    /// Not our address and nothing proxies it.
    NotLocalNotProxied,
    /// Would be proxied, but forwarding is off on the device.
    ForwardingOff,
}

/// Answer an ARP request for IPv4 `target` from `sender` received on `dev`.
pub fn answers_arp(fib: &Fib<'_>, dev: &str, target: IpAddr, sender: IpAddr) -> ArpAnswer {
    let state = fib.state();
    let flow = FlowKey {
        src: Some(sender),
        iif: Some(dev.to_string()),
        ..FlowKey::to(target)
    };
    let route = fib.lookup(&flow);
    if matches!(route.outcome, RouteOutcome::Local { .. }) {
        return own_address_answer(fib, dev, target, sender);
    }
    let RouteOutcome::Unicast { nexthops } = &route.outcome else {
        return ArpAnswer::NoAnswer {
            reason: NoArpAnswer::NotLocalNotProxied,
        };
    };
    let route_dev = nexthops
        .first()
        .and_then(|h| h.dev.clone())
        .unwrap_or_default();
    if route_dev == dev {
        return ArpAnswer::NoAnswer {
            reason: NoArpAnswer::NotLocalNotProxied,
        };
    }
    let proxy_entry = state
        .neighbours
        .iter()
        .find(|n| n.proxy && n.ip == target && n.dev == dev);
    let proxy_arp = state.proxy_arp(dev);
    let proxies = proxy_entry.is_some() || proxy_arp.as_ref().is_some_and(|r| r.value);
    if !proxies {
        return match proxy_arp {
            Some(_) => ArpAnswer::NoAnswer {
                reason: NoArpAnswer::NotLocalNotProxied,
            },
            None => ArpAnswer::Unknown {
                missing_sysctl: format!("net/ipv4/conf/{dev}/proxy_arp"),
            },
        };
    }
    match state.ipv4_forwarding(dev) {
        None => ArpAnswer::Unknown {
            missing_sysctl: format!("net/ipv4/conf/{dev}/forwarding"),
        },
        Some(forwarding) if !forwarding.value => ArpAnswer::NoAnswer {
            reason: NoArpAnswer::ForwardingOff,
        },
        Some(_) => match (proxy_entry, proxy_arp) {
            (Some(entry), _) => ArpAnswer::ProxyEntry {
                entry: entry.clone(),
            },
            (None, Some(proxy_arp)) => ArpAnswer::ProxyArp {
                proxy_arp,
                route_dev,
            },
            (None, None) => ArpAnswer::NoAnswer {
                reason: NoArpAnswer::NotLocalNotProxied,
            },
        },
    }
}

fn own_address_answer(fib: &Fib<'_>, dev: &str, target: IpAddr, sender: IpAddr) -> ArpAnswer {
    let state = fib.state();
    let Some(address) = state.addresses.iter().find(|a| a.address == target) else {
        return ArpAnswer::NoAnswer {
            reason: NoArpAnswer::NotLocalNotProxied,
        };
    };
    let Some(arp_ignore) = state.arp_ignore(dev) else {
        return ArpAnswer::Unknown {
            missing_sysctl: format!("net/ipv4/conf/{dev}/arp_ignore"),
        };
    };
    let on_device = |a: &&Address| a.dev == dev && a.address == target;
    let allowed =
        match arp_ignore.value {
            ArpIgnore::AnyDevice => true,
            ArpIgnore::TargetOnDevice => state.addresses.iter().any(|a| on_device(&a)),
            ArpIgnore::TargetAndSenderSubnet => state.addresses.iter().filter(on_device).any(|a| {
                ipnet::IpNet::new(a.address, a.prefix_len).is_ok_and(|n| n.contains(&sender))
            }),
            ArpIgnore::NotHostScope => address.scope != Scope::Host,
            ArpIgnore::Never => false,
        };
    if !allowed {
        return ArpAnswer::NoAnswer {
            reason: NoArpAnswer::ArpIgnore {
                mode: arp_ignore.value,
            },
        };
    }
    let Some(arp_filter) = state.arp_filter(dev) else {
        return ArpAnswer::Unknown {
            missing_sysctl: format!("net/ipv4/conf/{dev}/arp_filter"),
        };
    };
    if arp_filter.value {
        let back = fib.lookup(&FlowKey {
            src: Some(target),
            ..FlowKey::to(sender)
        });
        let route_dev = match &back.outcome {
            RouteOutcome::Unicast { nexthops } => nexthops.first().and_then(|h| h.dev.clone()),
            _ => None,
        };
        if route_dev.as_deref() != Some(dev) {
            return ArpAnswer::NoAnswer {
                reason: NoArpAnswer::ArpFilter { route_dev },
            };
        }
    }
    ArpAnswer::OwnAddress {
        address: address.clone(),
        arp_ignore: Some(arp_ignore),
    }
}
