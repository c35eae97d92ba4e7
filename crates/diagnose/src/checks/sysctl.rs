//! `bridge-nf-call-iptables`: with it off (or `br_netfilter` not loaded), frames a bridge
//! forwards between two of its ports never see iptables. A reply from a Service endpoint to a
//! client on the same bridge is then bridged straight back without conntrack undoing the
//! Service DNAT: the client gets an answer from the pod's address instead of the Service's and
//! drops it.

use model::{Evidence, Finding, FindingCode, Level, NetnsRecord, Owner};
use netstack::packet::Packet;
use netstack::state::LinkKind;

use super::sysctl_evidence;
use crate::endpoint::describe;
use crate::walk::finding;

const KEY: &str = "net/bridge/bridge-nf-call-iptables";

/// `packet` arrived through a port of a bridge in `record` and needs conntrack's reverse NAT
/// there (`needs_un_nat`). If its destination sits on the same bridge the frame is bridged, and
/// iptables only sees it with `bridge-nf-call-iptables=1`.
pub fn bridged_reply_bypasses_nat(
    record: &NetnsRecord,
    packet: &Packet,
    needs_un_nat: bool,
) -> Option<Finding> {
    if !needs_un_nat || packet.physdev_in.is_none() {
        return None;
    }
    let bridge = packet.iif.as_deref()?;
    let state = &record.state;
    if state.link(bridge)?.kind != LinkKind::Bridge {
        return None;
    }
    let on_bridge = state.addresses.iter().any(|a| {
        a.dev == bridge
            && ipnet::IpNet::new(a.address, a.prefix_len)
                .is_ok_and(|n| n.trunc().contains(&packet.dst))
    });
    // To one of this netns' own addresses the frame is routed up the stack, not bridged.
    let local = state.addresses.iter().any(|a| a.address == packet.dst);
    if !on_bridge || local {
        return None;
    }
    let (evidence, why) = match state.bridge_nf_call_iptables() {
        Some(r) if r.value => return None,
        Some(r) => (sysctl_evidence(&r), "bridge-nf-call-iptables is 0"),
        // The key exists only while br_netfilter is loaded; with sysctls collected, its
        // absence means the module is not loaded, which has the same effect.
        None if !state.sysctls.is_empty() => (
            vec![Evidence::Text {
                text: format!("{KEY} absent: br_netfilter is not loaded"),
            }],
            "br_netfilter is not loaded",
        ),
        None => return None,
    };
    Some(finding(
        FindingCode::SysctlBridgeNfCall,
        Level::Error,
        record,
        Some(bridge),
        format!(
            "{why} in {}: the reply {packet} is bridged on {bridge} straight to the client without conntrack undoing the Service NAT, so the client sees it come from the pod's address and drops it",
            describe(record)
        ),
        evidence,
        Some(Owner::Kernel),
        Some(&format!(
            "modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1 (inside {}), and persist both in /etc/modules-load.d and /etc/sysctl.d",
            record.id
        )),
    ))
}
