//! Where the walker calls the CNI-intent and path checks (`crate::cni`, `crate::checks`): on
//! entering a netns, after each routing decision, on leaving by a device, and when nothing
//! listens. The checks return the index of the finding that stops the path, if one fires. Also
//! here: where tunnel devices (vxlan, ipip) and an underlay switch really deliver a packet, and
//! the DNATs nobody known owns, remembered for `nat.wrong`. The walker's own rules (netfilter,
//! routing) stay in `walk.rs`; nothing here changes the snapshot.

use std::net::IpAddr;

use model::diagnosis::Direction;
use model::{Evidence, Finding, FindingCode, Level, NetnsOwner, NetnsRecord, Owner};
use netstack::fib::{Fib, FlowKey, RouteDecision, RouteOutcome};
use netstack::netfilter::HookOutcome;
use netstack::packet::{Packet, Protocol};
use netstack::state::{Link, LinkKind, OperState};

use super::{finding, Flight, Walker};
use crate::checks::{conntrack, devices, mtu, sysctl};
use crate::endpoint::describe;
use crate::owner::{hand_added_hint, owner_of_rule};

/// Where a tunnel device really sends the packet, and the step that says so.
pub(super) struct Tunnelled {
    pub next: Option<(String, String)>,
    pub step: String,
}

/// Whether leaving by `link` stops right here: it is administratively down, or it has no
/// carrier for a reason of its own. A veth or bridge without carrier because its peer or every
/// port is down is left to the next hop's checks, which name the device that really is down.
pub(super) fn link_stops_egress(link: &Link) -> bool {
    let no_carrier = matches!(link.oper_state, OperState::Down | OperState::LowerLayerDown);
    !link.admin_up || (no_carrier && !matches!(link.kind, LinkKind::Veth | LinkKind::Bridge))
}

impl<'a> Walker<'a> {
    /// A veth whose peer is a port of a bridge in an infrastructure netns (the underlay switch)
    /// hands the frame, switched, to whoever holds `target` on another port of that bridge; the
    /// walk continues there. Kubernetes netns are never shortcut: their bridges run netfilter
    /// on bridged frames (br_netfilter), which the walk models by entering them.
    pub(super) fn through_switch(
        &self,
        peer_ns: String,
        peer_dev: String,
        target: IpAddr,
    ) -> (String, String) {
        let switch = self
            .index
            .netns(&peer_ns)
            .filter(|r| matches!(r.owner, NetnsOwner::Infrastructure { .. }));
        let bridge = switch.and_then(|r| r.state.link(&peer_dev)?.master.clone());
        let holder = self.index.owner_of(target).and_then(|owner| {
            let dev = owner.state.addresses.iter().find(|a| a.address == target)?;
            // Its device must be plugged into the same bridge (a veth whose peer is a port).
            let link = owner.state.link(&dev.dev)?;
            let port = link.peer.as_ref()?;
            let on_bridge = switch?
                .state
                .links
                .iter()
                .any(|l| Some(l.name.as_str()) == port.name.as_deref() && l.master == bridge);
            (owner.id != peer_ns && on_bridge && bridge.is_some())
                .then(|| (owner.id.clone(), dev.dev.clone()))
        });
        holder.unwrap_or((peer_ns, peer_dev))
    }

    fn push_all(&mut self, found: Option<Finding>) -> Option<usize> {
        found.map(|f| self.push(f))
    }

    /// On entering `id`: a new connection needs a conntrack slot; a reply through a netns the
    /// request never crossed has no conntrack entry there (its state becomes what conntrack
    /// makes of it, INVALID for a SYN-ACK); a bridged reply needs iptables to see it for the
    /// reverse NAT.
    pub(super) fn entry_checks(&mut self, id: &str, flight: &mut Flight) -> Option<usize> {
        let record = self.index.netns(id)?;
        match self.direction {
            Direction::Forward => {
                self.forward_netns.insert(id.to_string());
                if let Some(idx) = self.push_all(conntrack::table_full(record, &flight.packet)) {
                    return Some(idx);
                }
            }
            Direction::Reply if !self.forward_netns.contains(id) => {
                if let Some(state) = conntrack::state_without_request(record, &flight.packet) {
                    flight.packet.ct_state = state;
                }
            }
            Direction::Reply => {}
        }
        let needs_un_nat = flight
            .bindings
            .iter()
            .any(|(ns, b)| ns == id && b.un_nat_reply(&flight.packet).is_some());
        self.push_all(sysctl::bridged_reply_bypasses_nat(
            record,
            &flight.packet,
            needs_un_nat,
        ))
    }

    /// Remember the DNATs of a hook that nobody known owns (not kube-proxy, a CNI, Docker,
    /// Istio): if the packet then finds nothing listening, that rule sent it there.
    pub(super) fn note_hand_dnat(&mut self, id: &str, out: &HookOutcome) {
        for t in out.trace.iter().filter(|t| t.action.starts_with("DNAT")) {
            if let (Some(Owner::Unknown), _) = owner_of_rule(Some(&t.rule), &out.trace) {
                let to = (out.packet.dst, out.packet.dport);
                self.hand_dnat.push((id.to_string(), t.rule.clone(), to));
            }
        }
    }

    /// Nothing listens where `packet` arrived: when a hand-added DNAT set that destination, the
    /// rule is the cause (`nat.wrong`), placed where it rewrote the packet.
    pub(super) fn hand_dnat_explains(&mut self, packet: &Packet) -> Option<usize> {
        let to = (packet.dst, packet.dport);
        let (netns, rule, _) = self.hand_dnat.iter().find(|(_, _, t)| *t == to)?.clone();
        let record = self.index.netns(&netns)?;
        let message = format!(
            "{}/{} rule #{} ({}) in {} rewrites the destination to {}:{}, where nothing listens; no Service, CNI or known tool owns the rule",
            rule.table,
            rule.chain,
            rule.position,
            crate::render::rule_location(&rule),
            describe(record),
            packet.dst,
            packet.dport
        );
        let hint = hand_added_hint(Some(&rule));
        Some(self.push(finding(
            FindingCode::NatWrong,
            Level::Error,
            record,
            None,
            message,
            vec![Evidence::Rule { rule }],
            Some(Owner::Unknown),
            Some(&hint),
        )))
    }

    /// After routing in `id`: the route must be the one the CNI programs.
    pub(super) fn intent_check(
        &mut self,
        id: &str,
        packet: &Packet,
        decision: &RouteDecision,
    ) -> Option<usize> {
        let record = self.index.netns(id)?;
        let skipped = devices::down_route_skipped(record, packet.dst, decision).or_else(|| {
            devices::blackholed_own_pod(&self.datapath, self.index, record, packet.dst, decision)
        });
        if let Some(f) = skipped {
            return Some(self.push(f));
        }
        let found = self.datapath.check_route(record, packet, decision)?;
        // The kernel skips routes through a device that is down: the CNI's route may be there
        // and its device down, with a broader route catching the packet.
        if let Some(idx) = self.down_link_explains(record, packet) {
            return Some(idx);
        }
        Some(self.push(found))
    }

    /// The largest packet of the walk in progress at this hop. A full-size packet from the
    /// sender: its first egress device's MTU (`link`, when this is the first egress), for TCP and
    /// ICMP replies no larger than the forward packets. TCP also never sends more than the
    /// receiver takes: the receiver's SYN announces an MSS from its route MTU back to the
    /// sender, so a hop as narrow as the receiver's own link (a pod's veth behind a node with a
    /// wider MTU) carries every segment. A datagram is as large as its sender makes it.
    fn packet_size(&mut self, link: &Link, packet: &Packet) -> u32 {
        let ceiling = match self.direction {
            Direction::Reply if packet.protocol != Protocol::Udp => self.forward_size,
            _ => None,
        };
        let full = *self
            .full_size
            .get_or_insert(ceiling.map_or(link.mtu, |c| c.min(link.mtu)));
        match packet.protocol {
            Protocol::Tcp => self.receiver_mtu(packet).map_or(full, |mtu| mtu.min(full)),
            _ => full,
        }
    }

    /// The MTU the receiver of `packet` derives its TCP MSS from: its route back to the
    /// packet's source (the route's `mtu` metric, else its device's MTU). `None` when the
    /// receiver is outside the snapshot or has no unicast route back.
    fn receiver_mtu(&self, packet: &Packet) -> Option<u32> {
        let receiver = self.index.owner_of(packet.dst)?;
        // Not the walk's cached simulation: building that reports the receiver's unreadable
        // rulesets, which only matter once the packet gets there.
        let decision = Fib::new(&receiver.state).lookup(&FlowKey::to(packet.src));
        let RouteOutcome::Unicast { nexthops } = decision.outcome else {
            return None;
        };
        let device_mtu = receiver
            .state
            .link(&nexthops.into_iter().find_map(|h| h.dev)?)?
            .mtu;
        let route_mtu = decision.route.and_then(|r| r.mtu);
        Some(route_mtu.map_or(device_mtu, |mtu| mtu.min(device_mtu)))
    }

    /// Leaving by `link` towards `target`: the device must carry a full-size packet, and a
    /// tunnel device must resolve its remote end. `Ok(Some(tunnel))` says where a tunnel really
    /// sends the packet.
    pub(super) fn egress_checks(
        &mut self,
        record: &'a NetnsRecord,
        link: &Link,
        target: IpAddr,
        packet: &Packet,
    ) -> Result<Option<Tunnelled>, usize> {
        let size = self.packet_size(link, packet);
        if let Some(idx) = self.push_all(mtu::device(self.index, record, link, size)) {
            return Err(idx);
        }
        if link.kind == LinkKind::Ipip {
            return self.ipip_egress(record, link, target).map(Some);
        }
        if link.kind != LinkKind::Vxlan {
            return Ok(None);
        }
        let vtep = devices::vxlan_remote(&self.datapath, self.index, record, &link.name, target)
            .map_err(|f| self.push(*f))?;
        let next = vtep.as_ref().and_then(|v| v.next.clone());
        // The outer packet: the tunnel's MTU plus its headers must fit the underlay on both
        // ends (and their peers, e.g. the underlay bridge's ports).
        let outer = link.mtu.saturating_add(link.kind.encapsulation_overhead());
        let underlay = link
            .vxlan
            .as_ref()
            .and_then(|v| v.device.as_deref())
            .and_then(|d| record.state.link(d));
        if let Some(underlay) = underlay {
            let found = mtu::tunnel(record, link, underlay)
                .or_else(|| mtu::device(self.index, record, underlay, outer));
            if let Some(idx) = self.push_all(found) {
                return Err(idx);
            }
        }
        let remote_underlay = next.as_ref().and_then(|(netns, dev)| {
            let remote = self.index.netns(netns)?;
            let name = remote.state.link(dev)?.vxlan.as_ref()?.device.clone()?;
            Some((remote, remote.state.link(&name)?))
        });
        if let Some((remote, remote_link)) = remote_underlay {
            let found = mtu::device(self.index, remote, remote_link, outer);
            if let Some(idx) = self.push_all(found) {
                return Err(idx);
            }
        }
        let vni = link.vxlan.as_ref().map(|v| v.vni).unwrap_or_default();
        let step = match &vtep {
            Some(v) => format!(
                "encapsulated: vxlan VNI {vni} to VTEP {} ({})",
                v.address,
                next.as_ref()
                    .map(|(ns, _)| ns.as_str())
                    .unwrap_or("outside the snapshot")
            ),
            None => format!("encapsulated: vxlan VNI {vni}"),
        };
        Ok(Some(Tunnelled { next, step }))
    }

    /// An ipip device sends to the node at `target` (the route's onlink gateway), where the
    /// packet comes out of that node's ipip device; the outer packet must fit the underlay.
    fn ipip_egress(
        &mut self,
        record: &'a NetnsRecord,
        link: &Link,
        target: IpAddr,
    ) -> Result<Tunnelled, usize> {
        let fib = Fib::new(&record.state);
        let underlay = match fib.lookup(&FlowKey::to(target)).outcome {
            RouteOutcome::Unicast { nexthops } => nexthops.into_iter().find_map(|h| h.dev),
            _ => None,
        };
        if let Some(underlay) = underlay.as_deref().and_then(|d| record.state.link(d)) {
            if let Some(idx) = self.push_all(mtu::tunnel(record, link, underlay)) {
                return Err(idx);
            }
        }
        let next = self.index.owner_of(target).and_then(|remote| {
            let ingress = remote
                .state
                .links
                .iter()
                .find(|l| l.kind == LinkKind::Ipip)?;
            Some((remote.id.clone(), ingress.name.clone()))
        });
        let step = format!(
            "encapsulated: ipip to {target} ({})",
            next.as_ref()
                .map(|(ns, _)| ns.as_str())
                .unwrap_or("outside the snapshot")
        );
        Ok(Tunnelled { next, step })
    }

    /// Handing the packet from `link` to `next` (netns, device): a bridge must reach the pod
    /// through an enslaved, up port; the next hop must answer ARP and carry the packet; a pod's
    /// host veth must sit on the CNI's bridge. `Err((finding, placed in next))`.
    pub(super) fn next_hop_checks(
        &mut self,
        record: &'a NetnsRecord,
        link: &Link,
        packet: &Packet,
        target: IpAddr,
        next: Option<&(String, String)>,
    ) -> Result<(), (usize, bool)> {
        let Some((next_id, next_dev)) = next else {
            if link.kind == LinkKind::Bridge {
                let found = devices::pod_interface_missing(
                    &self.datapath,
                    self.index,
                    record,
                    &link.name,
                    target,
                );
                if let Some(idx) = self.push_all(found) {
                    return Err((idx, false));
                }
            }
            return Ok(());
        };
        let Some(next_record) = self.index.netns(next_id) else {
            return Ok(());
        };
        // A veth without carrier whose peer is administratively up: the fault is this end.
        let peer_up = next_record.state.link(next_dev).is_some_and(|l| l.admin_up);
        let no_carrier = matches!(link.oper_state, OperState::Down | OperState::LowerLayerDown);
        if link.kind == LinkKind::Veth && no_carrier && peer_up {
            let found = devices::no_carrier(record, link);
            return Err((self.push(found), false));
        }
        if link.kind == LinkKind::Bridge {
            let found =
                devices::bridge_port(&self.datapath, record, &link.name, next_record, next_dev);
            if let Some(idx) = self.push_all(found) {
                return Err((idx, false));
            }
        }
        if link.kind != LinkKind::Vxlan {
            let found = devices::arp_answer(
                self.index,
                record,
                &link.name,
                target,
                next_record,
                next_dev,
            );
            if let Some(idx) = self.push_all(found) {
                return Err((idx, true));
            }
        }
        let size = self.packet_size(link, packet);
        let at_next = [
            next_record
                .state
                .link(next_dev)
                .and_then(|l| mtu::device(self.index, next_record, l, size)),
            devices::pod_veth_master(&self.datapath, next_record, next_dev, record),
        ];
        match at_next.into_iter().flatten().next() {
            Some(f) => Err((self.push(f), true)),
            None => Ok(()),
        }
    }
}
