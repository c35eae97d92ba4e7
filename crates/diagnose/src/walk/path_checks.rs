//! Where the walker calls the CNI-intent and path checks (`crate::cni`, `crate::checks`): on
//! entering a netns, after each routing decision, and on leaving by a device. Each returns the
//! index of the finding that stops the path, if one fires.

use std::net::IpAddr;

use model::diagnosis::Direction;
use model::{Finding, NetnsRecord};
use netstack::fib::{Fib, FlowKey, RouteDecision, RouteOutcome};
use netstack::packet::Packet;
use netstack::state::{Link, LinkKind};

use super::{Flight, Walker};
use crate::checks::{conntrack, devices, mtu, sysctl};

impl<'a> Walker<'a> {
    fn push_all(&mut self, found: Option<Finding>) -> Option<usize> {
        found.map(|f| self.push(f))
    }

    /// On entering `id`: a new connection needs a conntrack slot; a bridged reply needs
    /// iptables to see it for the reverse NAT.
    pub(super) fn entry_checks(&mut self, id: &str, flight: &Flight) -> Option<usize> {
        let record = self.index.netns(id)?;
        if self.direction == Direction::Forward {
            if let Some(idx) = self.push_all(conntrack::table_full(record, &flight.packet)) {
                return Some(idx);
            }
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

    /// After routing in `id`: the route must be the one the CNI programs.
    pub(super) fn intent_check(
        &mut self,
        id: &str,
        packet: &Packet,
        decision: &RouteDecision,
    ) -> Option<usize> {
        let record = self.index.netns(id)?;
        let found = self.datapath.check_route(record, packet, decision)?;
        // The kernel skips routes through a device that is down: the CNI's route may be there
        // and its device down, with a broader route catching the packet.
        if let Some(idx) = self.down_link_explains(record, packet) {
            return Some(idx);
        }
        Some(self.push(found))
    }

    /// Leaving by `link` towards `target`: the device must carry a full-size packet, and a
    /// vxlan device must resolve the remote VTEP. `Ok(Some(next))` is where the vxlan device
    /// really sends the packet.
    pub(super) fn egress_checks(
        &mut self,
        record: &'a NetnsRecord,
        link: &Link,
        target: IpAddr,
    ) -> Result<Option<Option<(String, String)>>, usize> {
        let size = *self.full_size.get_or_insert(link.mtu);
        if let Some(idx) = self.push_all(mtu::device(self.index, record, link, size)) {
            return Err(idx);
        }
        if link.kind == LinkKind::Ipip {
            return self.ipip_egress(record, link, target).map(Some);
        }
        if link.kind != LinkKind::Vxlan {
            return Ok(None);
        }
        let next = devices::vxlan_remote(&self.datapath, self.index, record, &link.name, target)
            .map_err(|f| self.push(*f))?;
        // The outer packet: the tunnel's MTU plus its headers must fit the underlay on both
        // ends (and their peers, e.g. the underlay bridge's ports).
        let outer = link.mtu + link.kind.encapsulation_overhead();
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
        Ok(Some(next))
    }

    /// An ipip device sends to the node at `target` (the route's onlink gateway), where the
    /// packet comes out of that node's ipip device; the outer packet must fit the underlay.
    fn ipip_egress(
        &mut self,
        record: &'a NetnsRecord,
        link: &Link,
        target: IpAddr,
    ) -> Result<Option<(String, String)>, usize> {
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
        Ok(self.index.owner_of(target).and_then(|remote| {
            let ingress = remote
                .state
                .links
                .iter()
                .find(|l| l.kind == LinkKind::Ipip)?;
            Some((remote.id.clone(), ingress.name.clone()))
        }))
    }

    /// Handing the packet from `link` to `next` (netns, device): a bridge must reach the pod
    /// through an enslaved, up port; the next hop must answer ARP and carry the packet; a pod's
    /// host veth must sit on the CNI's bridge. `Err((finding, placed in next))`.
    pub(super) fn next_hop_checks(
        &mut self,
        record: &'a NetnsRecord,
        link: &Link,
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
        let size = self.full_size.unwrap_or(link.mtu);
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
