//! Link-layer checks at a hop: which VTEP a vxlan device really sends to (neighbour + FDB),
//! whether the bridge port towards a pod is enslaved and up, whether a pod's host veth sits on
//! the bridge its CNI uses, whether the next hop answers ARP, and whether a pod's interface
//! still exists.

use std::net::IpAddr;

use model::{Evidence, Finding, FindingCode, Level, NetnsOwner, NetnsRecord, Owner};
use netstack::fib::neigh::{
    answers_arp, resolve_neighbour, vxlan_forward, ArpAnswer, NeighbourResolution, NoArpAnswer,
    VxlanForwarding,
};
use netstack::fib::{Fib, RouteDecision, RouteOutcome};
use netstack::state::{Link, LinkKind, OperState, Scope};

use super::sysctl_evidence;
use crate::cni::Datapath;
use crate::endpoint::{describe, Index};
use crate::policy::namespace_of;
use crate::walk::finding;

fn cni_owner(dp: &Datapath<'_>) -> Option<Owner> {
    Some(Owner::Cni {
        name: dp.cni.value.to_string(),
    })
}

/// Where a vxlan device sends an encapsulated packet: the remote VTEP address and, when it is
/// inside the snapshot, the netns and vxlan device that decapsulate it.
pub struct Vtep {
    pub address: IpAddr,
    pub next: Option<(String, String)>,
}

/// Resolve the remote VTEP of vxlan device `dev` for next hop `target`, the way the kernel
/// does: neighbour entry for the target gives the inner MAC, the FDB entry for that MAC gives
/// the VTEP. Disagreement with the CNI's intent (the remote node's VTEP MAC and address) is the
/// finding.
pub fn vxlan_remote(
    dp: &Datapath<'_>,
    index: &Index<'_>,
    record: &NetnsRecord,
    dev: &str,
    target: IpAddr,
) -> Result<Option<Vtep>, Box<Finding>> {
    let state = &record.state;
    let intent = dp.vtep_for_gateway(target);
    let expected_mac = intent.as_ref().and_then(|i| i.mac.clone());
    let mac_text = expected_mac.as_deref().unwrap_or("<remote VTEP MAC>");
    let neighbour_fix = format!(
        "ip neigh replace {target} lladdr {mac_text} dev {dev} nud permanent (inside {})",
        record.id
    );
    let mac = match resolve_neighbour(state, dev, target) {
        NeighbourResolution::Resolved { entry } => {
            let mac = entry.mac.clone().unwrap_or_default();
            if let Some(want) = expected_mac
                .as_deref()
                .filter(|w| !w.eq_ignore_ascii_case(&mac))
            {
                let node = intent.as_ref().map(|i| i.node.as_str()).unwrap_or("?");
                return Err(Box::new(finding(
                    FindingCode::NeighbourMissing,
                    Level::Error,
                    record,
                    Some(dev),
                    format!(
                        "the neighbour entry for {target} on {dev} in {} says {mac}, but {node}'s VTEP MAC is {want}: frames go to the wrong VTEP or nowhere",
                        describe(record)
                    ),
                    vec![Evidence::Text {
                        text: format!("{target} dev {dev} lladdr {mac} {:?}", entry.state),
                    }],
                    cni_owner(dp),
                    Some(&neighbour_fix),
                )));
            }
            mac
        }
        NeighbourResolution::NotNeeded { .. } => return Ok(None),
        NeighbourResolution::WouldArp { found } => {
            let seen = found
                .map(|n| format!("{target} dev {dev} {:?}", n.state))
                .unwrap_or_else(|| format!("no entry for {target} on {dev}"));
            return Err(Box::new(finding(
                FindingCode::NeighbourMissing,
                Level::Error,
                record,
                Some(dev),
                format!(
                    "{dev} in {} has no usable neighbour entry for the next hop {target}; the CNI installs it permanently and nothing answers ARP over the overlay",
                    describe(record)
                ),
                vec![Evidence::Text { text: seen }],
                cni_owner(dp),
                Some(&neighbour_fix),
            )));
        }
    };
    let fdb_fix = |verb: &str| {
        let dst = intent
            .as_ref()
            .map(|i| i.node_ip.to_string())
            .unwrap_or_else(|| "<remote node IP>".into());
        format!(
            "bridge fdb {verb} {mac} dev {dev} dst {dst} self permanent (inside {})",
            record.id
        )
    };
    match vxlan_forward(state, dev, &mac) {
        VxlanForwarding::NoRemote => Err(Box::new(finding(
            FindingCode::VxlanFdbWrong,
            Level::Error,
            record,
            Some(dev),
            format!(
                "{dev} in {} has no FDB entry for {mac} (the VTEP of {target}) and no default remote: the kernel drops the encapsulated frame",
                describe(record)
            ),
            vec![Evidence::Text {
                text: format!("bridge fdb show dev {dev}: nothing for {mac}"),
            }],
            cni_owner(dp),
            Some(&fdb_fix("append")),
        ))),
        VxlanForwarding::Remotes { vteps, entries, .. } => {
            if let Some(want) = intent
                .as_ref()
                .map(|i| i.node_ip)
                .filter(|ip| !vteps.contains(ip))
            {
                let node = intent.as_ref().map(|i| i.node.as_str()).unwrap_or("?");
                let got: Vec<String> = vteps.iter().map(IpAddr::to_string).collect();
                return Err(Box::new(finding(
                    FindingCode::VxlanFdbWrong,
                    Level::Error,
                    record,
                    Some(dev),
                    format!(
                        "{dev} in {} sends frames for {mac} to VTEP {}, but {node}'s VTEP is {want}",
                        describe(record),
                        got.join(", ")
                    ),
                    entries
                        .iter()
                        .map(|e| Evidence::Text {
                            text: format!(
                                "{} dev {} dst {}",
                                e.mac,
                                e.dev,
                                e.dst.map(|d| d.to_string()).unwrap_or_default()
                            ),
                        })
                        .collect(),
                    cni_owner(dp),
                    Some(&format!(
                        "bridge fdb del {mac} dev {dev} dst {} self; {}",
                        got.join(","),
                        fdb_fix("append")
                    )),
                )));
            }
            let Some(vtep) = vteps.first() else {
                return Ok(None);
            };
            let vni = state
                .link(dev)
                .and_then(|l| l.vxlan.as_ref())
                .map(|v| v.vni);
            let next = index.owner_of(*vtep).and_then(|remote| {
                let ingress = remote
                    .state
                    .links
                    .iter()
                    .find(|l| l.kind == LinkKind::Vxlan && l.vxlan.as_ref().map(|v| v.vni) == vni)
                    .or_else(|| remote.state.link(dev))?;
                Some((remote.id.clone(), ingress.name.clone()))
            });
            Ok(Some(Vtep {
                address: *vtep,
                next,
            }))
        }
    }
}

fn down(link: &Link) -> bool {
    !link.admin_up || matches!(link.oper_state, OperState::Down | OperState::LowerLayerDown)
}

/// Leaving by `bridge` towards `next_dev` in pod netns `next`: the bridge hands the frame to
/// the port whose veth peer that is. The port must exist, be up, and be enslaved to `bridge`.
pub fn bridge_port(
    dp: &Datapath<'_>,
    record: &NetnsRecord,
    bridge: &str,
    next: &NetnsRecord,
    next_dev: &str,
) -> Option<Finding> {
    let next_index = next.state.link(next_dev).map(|l| l.index);
    let port = record.state.links.iter().find(|l| {
        l.kind == LinkKind::Veth
            && l.peer.as_ref().is_some_and(|p| {
                p.netns.as_deref() == Some(next.id.as_str())
                    && (p.name.as_deref() == Some(next_dev) || Some(p.ifindex) == next_index)
            })
    })?;
    let name = &port.name;
    if port.master.as_deref() != Some(bridge) {
        let now = port
            .master
            .as_deref()
            .map(|m| format!("enslaved to {m}"))
            .unwrap_or_else(|| "not enslaved to any bridge".into());
        return Some(finding(
            FindingCode::LinkWrongMaster,
            Level::Error,
            record,
            Some(name),
            format!(
                "{name} (the host end of {}'s {next_dev}) is {now}, so {bridge} cannot deliver to it",
                describe(next)
            ),
            vec![Evidence::Link {
                name: name.clone(),
                detail: format!("master {}", port.master.as_deref().unwrap_or("none")),
            }],
            cni_owner(dp),
            Some(&format!(
                "ip link set {name} master {bridge} (inside {})",
                record.id
            )),
        ));
    }
    // Without carrier because the pod's own end is down: the walk reports that end.
    let pod_end_up = next.state.link(next_dev).is_some_and(|l| l.admin_up);
    if !port.admin_up || (down(port) && pod_end_up) {
        return Some(finding(
            FindingCode::LinkDown,
            Level::Error,
            record,
            Some(name),
            format!(
                "{name} (the {bridge} port towards {}) is down",
                describe(next)
            ),
            vec![Evidence::Link {
                name: name.clone(),
                detail: format!(
                    "admin {}, oper {:?}",
                    if port.admin_up { "up" } else { "down" },
                    port.oper_state
                ),
            }],
            None,
            Some(&format!("ip link set {name} up (inside {})", record.id)),
        ));
    }
    None
}

/// A packet from a pod entering its node through the host veth: bridge-based CNIs enslave that
/// veth to their bridge; one outside it is cut off from the pods' gateway and their replies.
pub fn pod_veth_master(
    dp: &Datapath<'_>,
    next: &NetnsRecord,
    ingress: &str,
    from: &NetnsRecord,
) -> Option<Finding> {
    let bridge = dp.pod_bridge()?;
    if next.owner != NetnsOwner::Host || !matches!(from.owner, NetnsOwner::Pod { .. }) {
        return None;
    }
    let link = next
        .state
        .link(ingress)
        .filter(|l| l.kind == LinkKind::Veth)?;
    if link.master.as_deref() == Some(bridge) || next.state.link(bridge).is_none() {
        return None;
    }
    Some(finding(
        FindingCode::LinkWrongMaster,
        Level::Error,
        next,
        Some(ingress),
        format!(
            "{ingress} (the host end of {}'s interface) is enslaved to {} instead of {bridge}: the pod's gateway and its replies are on {bridge}",
            describe(from),
            link.master.as_deref().unwrap_or("nothing")
        ),
        vec![Evidence::Link {
            name: ingress.into(),
            detail: format!("master {}", link.master.as_deref().unwrap_or("none")),
        }],
        cni_owner(dp),
        Some(&format!(
            "ip link set {ingress} master {bridge} (inside {})",
            next.id
        )),
    ))
}

/// Whether the next hop answers the ARP request the sender must make for `target` (no usable
/// neighbour entry on `dev`): `arp_ignore`/`arp_filter` on the receiving device, or a missing
/// `proxy_arp` where the CNI relies on it (calico's 169.254.1.1 gateway). A request arriving
/// on a bridge port floods the bridge, so whoever holds `target` there answers.
pub fn arp_answer(
    index: &Index<'_>,
    record: &NetnsRecord,
    dev: &str,
    target: IpAddr,
    next: &NetnsRecord,
    next_dev: &str,
) -> Option<Finding> {
    let out = record.state.link(dev)?;
    if out.noarp || out.kind == LinkKind::Loopback {
        return None;
    }
    if !matches!(
        resolve_neighbour(&record.state, dev, target),
        NeighbourResolution::WouldArp { .. }
    ) {
        return None;
    }
    let (next, next_dev) = match next.state.link(next_dev)?.master.as_deref() {
        None => (next, next_dev),
        Some(bridge) => {
            let owner = index.owner_of(target)?;
            let holder = owner.state.addresses.iter().find(|a| a.address == target)?;
            let on = if owner.id == next.id {
                bridge
            } else {
                holder.dev.as_str()
            };
            (owner, on)
        }
    };
    let fib = Fib::new(&record.state);
    let sender = fib.select_source(dev, target, Scope::Link)?;
    let next_fib = Fib::new(&next.state);
    let (what, evidence, fix) = match answers_arp(&next_fib, next_dev, target, sender) {
        ArpAnswer::NoAnswer {
            reason: NoArpAnswer::ArpIgnore { mode },
        } => (
            format!("arp_ignore ({mode:?}) forbids answering for {target}"),
            next.state
                .arp_ignore(next_dev)
                .map(|r| sysctl_evidence(&r))
                .unwrap_or_default(),
            format!(
                "sysctl -w net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.{next_dev}.arp_ignore=0 (inside {})",
                next.id
            ),
        ),
        ArpAnswer::NoAnswer {
            reason: NoArpAnswer::ArpFilter { route_dev },
        } => (
            format!(
                "arp_filter is on and the route back to {sender} leaves by {} instead",
                route_dev.as_deref().unwrap_or("no device")
            ),
            next.state
                .arp_filter(next_dev)
                .map(|r| sysctl_evidence(&r))
                .unwrap_or_default(),
            format!(
                "sysctl -w net.ipv4.conf.all.arp_filter=0 net.ipv4.conf.{next_dev}.arp_filter=0 (inside {})",
                next.id
            ),
        ),
        ArpAnswer::NoAnswer {
            reason: NoArpAnswer::NotLocalNotProxied,
        } if next.owner == NetnsOwner::Host
            && next
                .state
                .link(next_dev)
                .is_some_and(|l| l.kind == LinkKind::Veth) =>
        {
            (
                format!("{target} is not its address and proxy_arp is off on {next_dev}"),
                next.state
                    .proxy_arp(next_dev)
                    .map(|r| sysctl_evidence(&r))
                    .unwrap_or_default(),
                format!(
                    "sysctl -w net.ipv4.conf.{next_dev}.proxy_arp=1 (inside {}); the CNI sets it when it creates the veth",
                    next.id
                ),
            )
        }
        _ => return None,
    };
    Some(finding(
        FindingCode::SysctlArp,
        Level::Error,
        next,
        Some(next_dev),
        format!(
            "{} must resolve {target} on {dev}, but {} does not answer ARP on {next_dev}: {what}",
            describe(record),
            describe(next)
        ),
        evidence,
        None,
        Some(&fix),
    ))
}

/// The pod of this node holding `ip` (from its status) and its collected netns.
fn own_pod<'s>(
    index: &Index<'s>,
    node: &str,
    ip: IpAddr,
) -> Option<(String, String, &'s NetnsRecord)> {
    let pod = index
        .pod_at(ip)
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))?;
    let namespace = namespace_of(&pod.metadata);
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let netns = index.pod_netns(namespace, name)?;
    Some((namespace.to_string(), name.to_string(), netns))
}

/// The pod of this node holding `ip`, when its netns was collected but no longer has the
/// address: its veth pair was deleted (deleting either end deletes both).
fn pod_lost_interface<'s>(
    index: &Index<'s>,
    node: &str,
    ip: IpAddr,
) -> Option<(String, String, &'s NetnsRecord)> {
    own_pod(index, node, ip)
        .filter(|(_, _, pod)| !pod.state.addresses.iter().any(|a| a.address == ip))
}

fn interface_missing(
    dp: &Datapath<'_>,
    record: &NetnsRecord,
    device: Option<&str>,
    target: IpAddr,
    (namespace, name, pod): (String, String, &NetnsRecord),
) -> Finding {
    finding(
        FindingCode::LinkMissing,
        Level::Error,
        record,
        device,
        format!(
            "pod {namespace}/{name} ({target}) has no interface with its address: its veth pair is gone, so {} has nowhere to deliver to it",
            describe(record)
        ),
        pod.state
            .links
            .iter()
            .map(|l| Evidence::Link {
                name: l.name.clone(),
                detail: format!("in {}", pod.id),
            })
            .collect(),
        cni_owner(dp),
        Some(&format!(
            "Recreate the pod ({namespace}/{name}) so the CNI plumbs it again: kubectl delete pod -n {namespace} {name}"
        )),
    )
}

/// Leaving by bridge `dev` towards `target`, a pod of this node that lost its interface.
pub fn pod_interface_missing(
    dp: &Datapath<'_>,
    index: &Index<'_>,
    record: &NetnsRecord,
    dev: &str,
    target: IpAddr,
) -> Option<Finding> {
    let lost = pod_lost_interface(index, &record.node, target)?;
    Some(interface_missing(dp, record, Some(dev), target, lost))
}

/// Calico's block blackhole caught a packet for a pod of this node: its `/32` route went away
/// with its veth, deleted (`link.missing`) or set down (the kernel flushes a down device's
/// routes: `link.down`).
pub fn blackholed_own_pod(
    dp: &Datapath<'_>,
    index: &Index<'_>,
    record: &NetnsRecord,
    dst: IpAddr,
    decision: &RouteDecision,
) -> Option<Finding> {
    if record.owner != NetnsOwner::Host
        || !matches!(decision.outcome, RouteOutcome::Blackhole { .. })
    {
        return None;
    }
    if let Some(lost) = pod_lost_interface(index, &record.node, dst) {
        return Some(interface_missing(dp, record, None, dst, lost));
    }
    let (namespace, name, pod) = own_pod(index, &record.node, dst)?;
    let veth = record.state.links.iter().find(|l| {
        l.kind == LinkKind::Veth
            && l.peer.as_ref().and_then(|p| p.netns.as_deref()) == Some(pod.id.as_str())
    })?;
    if veth.admin_up {
        return None;
    }
    let dev = &veth.name;
    Some(finding(
        FindingCode::LinkDown,
        Level::Error,
        record,
        Some(dev),
        format!(
            "{dev} (the host end of pod {namespace}/{name}) in {} is down: the kernel removed its route to {dst}, and the block's blackhole swallows the packet",
            describe(record)
        ),
        vec![Evidence::Link {
            name: dev.clone(),
            detail: "admin down".into(),
        }],
        cni_owner(dp),
        Some(&format!(
            "ip link set {dev} up (inside {}); calico-node re-adds the /32 route",
            record.id
        )),
    ))
}

/// The kernel skips routes through a device that is administratively down, so a broader route
/// (a blackhole for the block, the default route) catches the packet; the down device is the
/// cause.
pub fn down_route_skipped(
    record: &NetnsRecord,
    dst: IpAddr,
    decision: &RouteDecision,
) -> Option<Finding> {
    let decided = decision.route.as_ref().map(|r| r.dst.prefix_len());
    let skipped = record.state.routes.iter().find(|r| {
        r.dst.contains(&dst)
            && decided.is_none_or(|len| r.dst.prefix_len() > len)
            && r.dev
                .as_deref()
                .and_then(|d| record.state.link(d))
                .is_some_and(|l| !l.admin_up)
    })?;
    let dev = skipped.dev.as_deref()?;
    Some(finding(
        FindingCode::LinkDown,
        Level::Error,
        record,
        Some(dev),
        format!(
            "{dev} in {} is down, so the kernel skips `{skipped}` and {dst} is not delivered",
            describe(record)
        ),
        vec![
            Evidence::Link {
                name: dev.into(),
                detail: "admin down".into(),
            },
            Evidence::Route {
                table: skipped.table,
                text: skipped.to_string(),
            },
        ],
        None,
        Some(&format!("ip link set {dev} up (inside {})", record.id)),
    ))
}

/// A veth that has no carrier although its peer is up.
pub fn no_carrier(record: &NetnsRecord, link: &Link) -> Finding {
    finding(
        FindingCode::LinkDown,
        Level::Error,
        record,
        Some(&link.name),
        format!(
            "{} in {} has no carrier ({:?}), so the packet cannot leave",
            link.name,
            describe(record),
            link.oper_state
        ),
        vec![Evidence::Link {
            name: link.name.clone(),
            detail: format!("admin up, oper {:?}", link.oper_state),
        }],
        None,
        Some(&format!(
            "ip link set {} down; ip link set {} up (inside {}); if it stays down, recreate the pod",
            link.name, link.name, record.id
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{cluster, ClusterSize};
    use model::CniMode;

    /// A pod manifest without `metadata.namespace` lives in "default", as the API server files
    /// it: its netns (recorded under "default") is still its own.
    #[test]
    fn a_pod_without_a_namespace_is_found_in_default() {
        let mut snapshot = cluster(
            CniMode::CalicoBgp,
            ClusterSize {
                nodes: 2,
                pods_per_node: 1,
                services: 0,
                endpoints_per_service: 0,
                rules_on_nodes: 0,
            },
        );
        let pod = snapshot
            .kubernetes
            .pods
            .iter_mut()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-2"))
            .expect("a pod on node-2");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        pod.metadata.namespace = None;
        let name = pod.metadata.name.clone().expect("named pod");
        let ip: IpAddr = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .expect("pod address");
        let index = Index::new(&snapshot);
        let (namespace, found, record) = own_pod(&index, "node-2", ip).expect("the pod is found");
        assert_eq!(
            (namespace.as_str(), found.as_str()),
            ("default", name.as_str())
        );
        assert!(
            matches!(&record.owner, NetnsOwner::Pod { name: n, .. } if *n == name),
            "{:?}",
            record.owner
        );
    }
}
