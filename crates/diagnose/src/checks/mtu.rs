//! MTU along the path. The packet size that matters is a full-size packet from the sender
//! (its egress device's MTU: that is what TCP's MSS and a full UDP datagram fill). Every device
//! it crosses must carry that size, and a tunnel device must carry it plus its outer headers
//! (50 bytes for VXLAN, 20 for IPIP) on its underlay device. Both ends of every L2 segment on
//! the way count, including veth peers the walk does not visit (an underlay bridge port):
//! frames larger than a receiving port's MTU are dropped without any ICMP.

use model::{Evidence, Finding, FindingCode, Level, NetnsRecord};
use netstack::state::{Link, LinkKind};

use crate::endpoint::{describe, Index};
use crate::walk::finding;

fn link_evidence(link: &Link, netns: &str) -> Evidence {
    Evidence::Link {
        name: link.name.clone(),
        detail: format!("mtu {} ({}, in {netns})", link.mtu, link.kind),
    }
}

/// The veth peer of `link` in another netns of the snapshot.
fn peer<'a>(index: &Index<'a>, link: &Link) -> Option<(&'a NetnsRecord, &'a Link)> {
    if link.kind != LinkKind::Veth {
        return None;
    }
    let p = link.peer.as_ref()?;
    let netns = index.netns(p.netns.as_deref()?)?;
    let peer = netns
        .state
        .links
        .iter()
        .find(|l| Some(l.name.as_str()) == p.name.as_deref() || l.index == p.ifindex)?;
    Some((netns, peer))
}

/// The finding, placed at `link`; `fix` is the command that makes the path consistent.
fn too_small(
    record: &NetnsRecord,
    link: &Link,
    size: u32,
    why: String,
    evidence: Vec<Evidence>,
    fix: String,
) -> Finding {
    finding(
        FindingCode::LinkMtuMismatch,
        Level::Error,
        record,
        Some(&link.name),
        format!(
            "{} in {}: {why}; full-size packets ({size} bytes) are dropped",
            link.name,
            describe(record)
        ),
        evidence,
        None,
        Some(&fix),
    )
}

fn set_mtu(link: &Link, netns: &str, mtu: u32) -> String {
    format!(
        "ip link set {} mtu {mtu} (inside {netns}), or lower the sender's MTU (the pods' MTU must leave room for the overlay headers)",
        link.name
    )
}

/// One device the packet leaves or enters, and its veth peer: both must carry `size` bytes.
pub fn device(index: &Index<'_>, record: &NetnsRecord, link: &Link, size: u32) -> Option<Finding> {
    if link.kind == LinkKind::Loopback {
        return None;
    }
    if link.mtu < size {
        return Some(too_small(
            record,
            link,
            size,
            format!(
                "MTU {} is smaller than the {size} bytes the sender puts on the wire",
                link.mtu
            ),
            vec![link_evidence(link, &record.id)],
            // A tunnel cannot grow past its underlay: the senders must shrink instead.
            if link.kind.encapsulation_overhead() > 0 {
                format!(
                    "Set the pods' MTU to {} (the CNI's MTU setting; pods pick it up when recreated)",
                    link.mtu
                )
            } else {
                set_mtu(link, &record.id, size)
            },
        ));
    }
    let (peer_ns, peer_link) = peer(index, link)?;
    (peer_link.mtu < size).then(|| {
        too_small(
            record,
            link,
            size,
            format!(
                "its peer {} in {} has MTU {} (this end: {})",
                peer_link.name, peer_ns.id, peer_link.mtu, link.mtu
            ),
            vec![
                link_evidence(link, &record.id),
                link_evidence(peer_link, &peer_ns.id),
            ],
            set_mtu(peer_link, &peer_ns.id, size),
        )
    })
}

/// A tunnel device's outer packets must fit its underlay device: `mtu + overhead <= underlay`.
pub fn tunnel(record: &NetnsRecord, tunnel: &Link, underlay: &Link) -> Option<Finding> {
    let overhead = tunnel.kind.encapsulation_overhead();
    let outer = tunnel.mtu.saturating_add(overhead);
    (overhead > 0 && outer > underlay.mtu).then(|| {
        too_small(
            record,
            tunnel,
            tunnel.mtu,
            format!(
                "MTU {} plus {overhead} bytes of {} headers makes {outer}-byte packets, more than {}'s MTU {}",
                tunnel.mtu, tunnel.kind, underlay.name, underlay.mtu
            ),
            vec![link_evidence(tunnel, &record.id), link_evidence(underlay, &record.id)],
            set_mtu(tunnel, &record.id, underlay.mtu.saturating_sub(overhead)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::NetnsOwner;
    use netstack::state::{NetnsState, OperState};

    fn dev(name: &str, kind: LinkKind, mtu: u32) -> Link {
        Link {
            index: 1,
            name: name.into(),
            kind,
            admin_up: true,
            oper_state: OperState::Up,
            mtu,
            mac: None,
            master: None,
            peer: None,
            vxlan: None,
            tunnel: None,
            noarp: false,
        }
    }

    fn node() -> NetnsRecord {
        NetnsRecord {
            id: "node-1".into(),
            node: "node-1".into(),
            owner: NetnsOwner::Host,
            state: NetnsState::default(),
        }
    }

    #[test]
    fn tunnels_must_leave_room_for_their_headers() {
        let eth0 = dev("eth0", LinkKind::Device, 1500);
        // What flannel and calico configure: 1500 - 50 and 1500 - 20.
        assert!(tunnel(&node(), &dev("flannel.1", LinkKind::Vxlan, 1450), &eth0).is_none());
        assert!(tunnel(&node(), &dev("tunl0", LinkKind::Ipip, 1480), &eth0).is_none());
        let f = tunnel(&node(), &dev("flannel.1", LinkKind::Vxlan, 1500), &eth0)
            .expect("1500 + 50 does not fit 1500");
        assert_eq!(f.code, FindingCode::LinkMtuMismatch);
        assert_eq!(f.place.device.as_deref(), Some("flannel.1"));
        assert!(f.message.contains("1550-byte"), "{}", f.message);
        assert!(tunnel(&node(), &dev("tunl0", LinkKind::Ipip, 1490), &eth0).is_some());
    }
}
