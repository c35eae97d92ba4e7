//! `ip6tables-save` can fail in a namespace while `iptables-save` works: the collector then keeps
//! the IPv4 dump and records the `iptables` part as missing for IPv6 only. An IPv4 diagnosis
//! through that namespace must stay complete; with the IPv4 dump missing too, it must not.

use diagnose::synthetic::{flannel_host_gw, ClusterSize};
use diagnose::Query;
use model::diagnosis::{Diagnosis, Verdict};
use model::{FindingCode, Snapshot};
use netstack::packet::Protocol;
use netstack::state::{MissingPart, NetnsState, StatePart};

/// Two flannel host-gw nodes; the source pod is on node-1, so node-1 is on every path.
fn cluster() -> Snapshot {
    flannel_host_gw(ClusterSize {
        nodes: 2,
        pods_per_node: 2,
        services: 1,
        endpoints_per_service: 2,
        rules_on_nodes: 2,
    })
}

fn node_1(s: &mut Snapshot) -> &mut NetnsState {
    &mut s
        .netns
        .iter_mut()
        .find(|n| n.id == "node-1")
        .expect("node-1 is in the synthetic cluster")
        .state
}

/// What the collector records when only `ip6tables-save` fails (see `collect::tools`).
fn lose_ipv6_rules(s: &mut Snapshot) {
    let state = node_1(s);
    state
        .iptables
        .as_mut()
        .expect("synthetic nodes carry iptables")
        .ipv6 = None;
    state.missing.push(MissingPart {
        part: StatePart::Iptables,
        reason: "IPv6 rules only: ip6tables-save failed (exit status: 1): can't initialize".into(),
    });
}

/// A pod on node-1 to the Service backed by pods on both nodes: the walk crosses node-1's
/// PREROUTING DNAT and FORWARD.
fn to_service(s: &Snapshot) -> Diagnosis {
    diagnose::diagnose(
        s,
        &Query {
            src: "default/web-1-1".into(),
            dst: "service/default/web-0".into(),
            protocol: Protocol::Tcp,
            dport: 80,
            sport: 40000,
        },
    )
    .expect("the query names objects of the snapshot")
}

fn incomplete_findings(d: &Diagnosis) -> Vec<&str> {
    d.findings
        .iter()
        .filter(|f| f.code == FindingCode::StateIncomplete)
        .map(|f| f.message.as_str())
        .collect()
}

#[test]
fn missing_ipv6_rules_leave_an_ipv4_diagnosis_complete() {
    let mut s = cluster();
    lose_ipv6_rules(&mut s);
    let d = to_service(&s);
    assert_eq!(d.verdict, Verdict::Delivered, "{:#?}", d.findings);
    assert!(incomplete_findings(&d).is_empty(), "{:#?}", d.findings);
}

#[test]
fn missing_ipv4_rules_make_an_ipv4_diagnosis_incomplete() {
    let mut s = cluster();
    lose_ipv6_rules(&mut s);
    node_1(&mut s).iptables = None;
    let d = to_service(&s);
    assert_eq!(d.verdict, Verdict::Incomplete, "{:#?}", d.findings);
    let incomplete = incomplete_findings(&d);
    assert!(
        incomplete
            .iter()
            .any(|m| m.starts_with("iptables of node node-1 were not collected")),
        "{incomplete:#?}"
    );
}
