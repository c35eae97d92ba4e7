//! Real labs on this host (needs root): healthy paths in every CNI mode, faults that block them,
//! YAML apply, exec and status. Lab names are unique per test so tests run in parallel.

use std::time::{Duration, Instant};

use lab::faults::{scenario_spec, Fault};
use lab::testing::{healthy_flows, healthy_spec, unique_name, LabGuard, PROBE_TIMEOUT};
use lab::{Lab, LabSpec, ProbeRequest};
use model::snapshot::CniMode;
use netstack::packet::Protocol;

/// This crate's standalone pod listener (the `netsleuth` binary is not built here).
fn listener() -> Vec<String> {
    vec![env!("CARGO_BIN_EXE_nsl-lab-serve").into()]
}

fn spec(tag: &str, cni: CniMode) -> LabSpec {
    LabSpec {
        listener: listener(),
        ..LabSpec {
            cni,
            ..LabSpec::new(unique_name(tag))
        }
    }
}

fn probe(lab: &Lab, src: &str, dst: &str, port: u16, protocol: Protocol) -> lab::ProbeOutcome {
    let request = ProbeRequest {
        src: src.into(),
        dst: dst.into(),
        port,
        protocol,
        payload: 0,
    };
    lab.probe(&request, PROBE_TIMEOUT)
        .unwrap_or_else(|e| panic!("probe {src} -> {dst}:{port}/{protocol}: {e}"))
}

fn healthy_paths_are_reachable(cni: CniMode, tag: &str) {
    let spec = healthy_spec(unique_name(tag), cni, listener()).expect("spec");
    let guard = LabGuard::up(spec).expect("lab up");
    let lab = &*guard;
    for flow in healthy_flows(lab).expect("flows") {
        let request = &flow.request;
        let outcome = lab
            .probe(request, PROBE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{cni}: {}: probe: {e}", flow.what));
        assert!(
            outcome.reachable,
            "{cni}: {} ({} -> {}:{}/{}): {outcome}",
            flow.what, request.src, request.dst, request.port, request.protocol
        );
    }
    // Nothing listens on 8081: the pod's kernel refuses, proving the probe sees real answers.
    let refused = probe(
        lab,
        "default/pod-1-1",
        "default/pod-2-1",
        8081,
        Protocol::Tcp,
    );
    assert_eq!(
        (refused.reachable, refused.detail.as_str()),
        (false, "connection refused")
    );
}

#[test]
fn healthy_flannel_host_gw() {
    healthy_paths_are_reachable(CniMode::FlannelHostGw, "hg");
}
#[test]
fn healthy_flannel_vxlan() {
    healthy_paths_are_reachable(CniMode::FlannelVxlan, "fv");
}
#[test]
fn healthy_calico_bgp() {
    healthy_paths_are_reachable(CniMode::CalicoBgp, "cb");
}
#[test]
fn healthy_calico_vxlan() {
    healthy_paths_are_reachable(CniMode::CalicoVxlan, "cv");
}
#[test]
fn healthy_calico_crosssubnet() {
    healthy_paths_are_reachable(CniMode::CalicoCrosssubnet, "cx");
}

#[test]
fn three_nodes_six_pods_come_up_fast_and_down_removes_everything() {
    let mut spec = spec("sp", CniMode::FlannelVxlan);
    spec.pods_per_node = 2;
    let name = spec.name.clone();
    let started = Instant::now();
    let guard = LabGuard::up(spec).expect("lab up");
    let elapsed = started.elapsed();
    // Generous against the 3 s target: other tests share the two CPUs.
    assert!(elapsed < Duration::from_secs(6), "lab up took {elapsed:?}");
    let inventory: model::Inventory =
        serde_json::from_slice(&std::fs::read(guard.inventory_path()).expect("inventory written"))
            .expect("inventory parses");
    assert_eq!(
        inventory.netns.len(),
        1 + 1 + 3 + 6,
        "underlay + external host + nodes + pods"
    );
    assert_eq!(inventory.kubernetes.nodes.len(), 3);
    let reopened = Lab::open(&name).expect("lab found by name");
    assert_eq!(reopened.state().pods.len(), 6);
    drop(guard);
    assert!(
        lab::sys::netns_with_prefix(&format!("nsl-{name}-")).is_empty(),
        "netns left behind"
    );
    assert!(Lab::open(&name).is_err(), "state dir left behind");
}

#[test]
fn exec_passes_exit_status_through() {
    let guard = LabGuard::up(LabSpec {
        nodes: 1,
        pods_per_node: 1,
        ..spec("ex", CniMode::FlannelHostGw)
    })
    .expect("lab up");
    let code = guard.exec(
        "default/pod-1-1",
        &[
            "sh".into(),
            "-c".into(),
            "ip -4 addr show eth0 | grep -q 10.244.0.2 && exit 7".into(),
        ],
    );
    assert_eq!(code.expect("exec runs"), 7);
    assert!(matches!(
        guard.exec("default/nope", &["true".into()]),
        Err(lab::LabError::UnknownEndpoint(_))
    ));
}

fn fault_blocks_traffic(fault: Fault, cni: CniMode) {
    let name = unique_name(&fault.name()[..2]);
    let mut spec = scenario_spec(name, cni);
    spec.listener = listener();
    let mut guard = LabGuard::up(spec).expect("lab up");
    let healthy = ProbeRequest {
        src: lab::faults::SOURCE_POD.into(),
        dst: lab::faults::DESTINATION_POD.into(),
        port: 8080,
        protocol: Protocol::Tcp,
        payload: 0,
    };
    let before = guard.probe(&healthy, PROBE_TIMEOUT).expect("probe runs");
    assert!(
        before.reachable,
        "{} {cni}: healthy before injection: {before}",
        fault.name()
    );
    let injected = fault.inject(&mut guard).expect("fault injects");
    let after = guard
        .probe(&injected.probe, PROBE_TIMEOUT)
        .expect("probe runs");
    assert!(
        !after.reachable,
        "{} {cni}: still reachable after injection: {after}",
        fault.name()
    );
    assert!(fault.applies_to(cni));
}

#[test]
fn every_fault_blocks_traffic_in_every_cni_mode_it_applies_to() {
    let cases: Vec<(Fault, CniMode)> = Fault::ALL
        .into_iter()
        .flat_map(|fault| fault.cni_modes().into_iter().map(move |cni| (fault, cni)))
        .collect();
    // A few labs at a time: dozens at once starve two CPUs and turn the healthy probes flaky.
    let queue = std::sync::Mutex::new(cases.into_iter());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                while let Some((fault, cni)) = queue.lock().ok().and_then(|mut q| q.next()) {
                    if std::panic::catch_unwind(|| fault_blocks_traffic(fault, cni)).is_err() {
                        failures
                            .lock()
                            .map(|mut f| f.push(format!("{} in {cni}", fault.name())))
                            .ok();
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "faults that did not block traffic: {failures:?}"
    );
}

#[test]
fn network_policy_allows_only_the_selected_source() {
    let mut spec = spec("np", CniMode::CalicoBgp);
    spec.pods_per_node = 1;
    let mut guard = LabGuard::up(spec).expect("lab up");
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-pod-1-1, namespace: default}
spec:
  podSelector: {matchLabels: {name: pod-2-1}}
  ingress:
  - from: [{podSelector: {matchLabels: {name: pod-1-1}}}]
    ports: [{port: 8080}]
";
    guard
        .apply(lab::parse_objects("policy.yaml", policy).expect("policy parses"))
        .expect("apply");
    let allowed = probe(
        &guard,
        "default/pod-1-1",
        "default/pod-2-1",
        8080,
        Protocol::Tcp,
    );
    assert!(allowed.reachable, "selected source: {allowed}");
    let denied = probe(
        &guard,
        "default/pod-3-1",
        "default/pod-2-1",
        8080,
        Protocol::Tcp,
    );
    assert!(!denied.reachable, "other source: {denied}");
    let rules =
        std::fs::read_to_string(guard.dir().join("iptables/node-2.rules")).expect("rules saved");
    assert!(
        rules.contains("rule to ACCEPT traffic for policy default/only-pod-1-1"),
        "policy named in its rules"
    );
}

/// Injects `fault`, then undoes only its sysctl on `node`: traffic must flow again, proving that
/// sysctl (not the rest of the setup the fault needs) is the cause.
fn sysctl_is_the_root_cause(fault: Fault, cni: CniMode, node: &str, undo: &[lab::sys::Sysctl]) {
    let mut spec = scenario_spec(unique_name(&fault.name()[..2]), cni);
    spec.listener = listener();
    let mut guard = LabGuard::up(spec).expect("lab up");
    let injected = fault.inject(&mut guard).expect("fault injects");
    assert!(
        !guard
            .probe(&injected.probe, PROBE_TIMEOUT)
            .expect("probe runs")
            .reachable,
        "{}: blocked",
        fault.name()
    );
    let netns = guard.state().node(node).expect("node exists").netns.clone();
    lab::sys::write_sysctls(&netns, undo).expect("sysctls written");
    let outcome = guard
        .probe(&injected.probe, PROBE_TIMEOUT)
        .expect("probe runs");
    assert!(
        outcome.reachable,
        "{} with the sysctl undone: {outcome}",
        fault.name()
    );
}

#[test]
fn rp_filter_fault_is_the_sysctl_not_the_asymmetric_route() {
    let loose = [
        lab::sys::Sysctl::new("net/ipv4/conf/all/rp_filter", 2),
        lab::sys::Sysctl::new("net/ipv4/conf/flannel.1/rp_filter", 2),
    ];
    sysctl_is_the_root_cause(
        Fault::RpFilterStrictAsymmetric,
        CniMode::FlannelVxlan,
        "node-2",
        &loose,
    );
}

#[test]
fn bridge_nf_call_fault_is_the_sysctl_not_the_same_node_service() {
    let on = [lab::sys::Sysctl::new(
        "net/bridge/bridge-nf-call-iptables",
        1,
    )];
    sysctl_is_the_root_cause(
        Fault::BridgeNfCallOff,
        CniMode::FlannelHostGw,
        "node-1",
        &on,
    );
}

#[test]
fn underlay_mtu_fault_drops_full_size_packets_only_until_the_mtu_matches() {
    let mut spec = scenario_spec(unique_name("mt"), CniMode::FlannelVxlan);
    spec.listener = listener();
    let mut guard = LabGuard::up(spec).expect("lab up");
    let injected = Fault::UnderlayMtuMismatch
        .inject(&mut guard)
        .expect("fault injects");
    assert!(
        !guard
            .probe(&injected.probe, PROBE_TIMEOUT)
            .expect("probe runs")
            .reachable,
        "full-size datagram dropped"
    );
    let small = ProbeRequest {
        payload: 0,
        ..injected.probe.clone()
    };
    assert!(
        guard
            .probe(&small, PROBE_TIMEOUT)
            .expect("probe runs")
            .reachable,
        "small datagrams still pass"
    );
    let underlay = guard.state().underlay_netns();
    lab::sys::ip_batch(Some(&underlay), &["link set n2 mtu 1500".into()]).expect("mtu restored");
    let outcome = guard
        .probe(&injected.probe, PROBE_TIMEOUT)
        .expect("probe runs");
    assert!(outcome.reachable, "matching MTU again: {outcome}");
}

#[test]
fn a_fault_needing_the_pods_own_netns_refuses_a_host_network_pod() {
    let pods = "
apiVersion: v1
kind: Pod
metadata: {name: pod-1-1, namespace: default}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: pod-2-1, namespace: default}
spec:
  nodeName: node-2
  hostNetwork: true
  containers: [{name: c, ports: [{containerPort: 8080}]}]
";
    let spec = LabSpec {
        nodes: 2,
        objects: lab::parse_objects("pods.yaml", pods).expect("test YAML parses"),
        ..spec("hn", CniMode::FlannelHostGw)
    };
    let mut guard = LabGuard::up(spec).expect("lab up");
    let err = Fault::PodInterfaceDown
        .inject(&mut guard)
        .expect_err("a hostNetwork pod has no eth0 of its own to take down");
    assert!(
        err.to_string()
            .contains("pod default/pod-2-1 has no network namespace"),
        "{err}"
    );
}
