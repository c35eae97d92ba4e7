//! Diagnoses over a snapshot recorded from a real lab (`netsleuth collect --lab`, flannel-vxlan,
//! 2 nodes with one pod each, Services `default/web` (ClusterIP) and `default/webnp` (NodePort
//! 30000), the hostNetwork pod `default/hostnet`, the host outside the cluster at
//! 192.168.0.254). Real traffic (`netsleuth lab probe`) got through on every flow below when it
//! was recorded, so each must diagnose as delivered with no error-level finding.
//!
//! Each flow once gave a false alarm: the reply of a NodePort connection was reverse-path checked
//! with its un-DNATed source (the node's own address), and the reply from the outside host was
//! sized at that host's MTU although the pod's MSS caps it.

use diagnose::render::{render, Format};
use diagnose::Query;
use model::diagnosis::Verdict;
use model::{Level, Snapshot};
use netstack::packet::Protocol;

fn recorded() -> Snapshot {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/recorded/flannel-vxlan-lab.json"
    );
    let bytes = std::fs::read(path).expect("recorded snapshot present");
    Snapshot::from_bytes(path, &bytes).expect("recorded snapshot parses")
}

fn assert_delivered(src: &str, dst: &str, port: u16) {
    let query = Query {
        src: src.into(),
        dst: dst.into(),
        protocol: Protocol::Tcp,
        dport: port,
        sport: 40000,
    };
    let d = diagnose::diagnose(&recorded(), &query).expect("diagnose");
    let errors: Vec<_> = d
        .findings
        .iter()
        .filter(|f| f.level >= Level::Error)
        .map(|f| f.code)
        .collect();
    assert!(
        d.verdict == Verdict::Delivered && errors.is_empty(),
        "{src} -> {dst}:{port}: {errors:?}\n{}",
        render(&d, Format::Text)
    );
}

#[test]
fn nodeport_reply_is_reverse_path_checked_with_the_source_it_arrives_with() {
    // node-2 DNATs to a pod and masquerades; the reply's source becomes 192.168.0.12:30000 only
    // after routing, so rp_filter sees the pod's address.
    assert_delivered("default/pod-1-1", "node/node-2", 30000);
}

#[test]
fn reply_from_a_host_with_a_larger_mtu_is_capped_by_the_pods_mss() {
    // 192.168.0.254 has MTU 1500, the pod's side of node-1 1450: the TCP reply fits the MSS the
    // pod announced.
    assert_delivered("default/pod-1-1", "192.168.0.254", 8080);
}

#[test]
fn the_other_healthy_flows_stay_delivered() {
    for (dst, port) in [
        ("default/pod-2-1", 8080),
        ("service/default/web", 80),
        ("default/hostnet", 9090),
    ] {
        assert_delivered("default/pod-1-1", dst, port);
    }
    assert_delivered("node/node-1", "default/pod-2-1", 8080);
}
