//! Real labs on this host (needs root): healthy paths in every CNI mode, faults that block them,
//! YAML apply, exec and status. Lab names are unique per test so tests run in parallel.

use std::time::{Duration, Instant};

use lab::faults::{scenario_spec, Fault};
use lab::{Lab, LabSpec, ProbeRequest};
use model::snapshot::CniMode;
use netstack::packet::Protocol;

/// Long enough for a first ARP round trip on a loaded two-CPU machine.
const TIMEOUT: Duration = Duration::from_millis(2000);

/// Tears the lab down however the test ends.
struct Guard(Lab);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(err) = Lab::down(self.0.name()) {
            eprintln!("cleanup of lab {} failed: {err}", self.0.name());
        }
    }
}

fn unique_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t{tag}{:x}", (nanos ^ std::process::id()) & 0xfffff)
}

fn spec(tag: &str, cni: CniMode) -> LabSpec {
    LabSpec {
        listener: vec![env!("CARGO_BIN_EXE_nsl-lab-serve").into()],
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
    lab.probe(&request, TIMEOUT)
        .unwrap_or_else(|e| panic!("probe {src} -> {dst}:{port}/{protocol}: {e}"))
}

const WEB: &str = "
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: default, labels: {app: hostnet}}
spec:
  nodeName: node-2
  hostNetwork: true
  containers: [{name: c, ports: [{containerPort: 9090}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: pod}
  ports: [{name: http, port: 80, targetPort: http}]
";

fn healthy_paths_are_reachable(cni: CniMode, tag: &str) {
    let mut spec = spec(tag, cni);
    spec.pods_per_node = 2;
    spec.objects = lab::parse_objects("web.yaml", WEB).expect("test YAML parses");
    let guard = Guard(Lab::up(spec).expect("lab up"));
    let lab = &guard.0;
    let node_port = lab
        .state()
        .service("default", "web")
        .and_then(|s| s.spec.as_ref()?.ports.as_ref()?[0].node_port)
        .expect("NodePort assigned");
    let node_port = u16::try_from(node_port).expect("NodePort fits u16");
    let cases: [(&str, &str, u16, Protocol); 9] = [
        ("default/pod-1-1", "default/pod-1-2", 8080, Protocol::Tcp),
        ("default/pod-1-1", "default/pod-2-1", 8080, Protocol::Tcp),
        ("default/pod-1-1", "default/pod-3-2", 8080, Protocol::Udp),
        ("default/pod-1-1", "default/pod-2-2", 0, Protocol::Icmp),
        ("default/pod-1-1", "service/default/web", 80, Protocol::Tcp),
        ("default/pod-1-1", "node/node-2", node_port, Protocol::Tcp),
        ("node/node-1", "default/pod-3-1", 8080, Protocol::Tcp),
        ("default/pod-1-1", "default/hostnet", 9090, Protocol::Tcp),
        ("default/pod-3-1", "service/default/web", 80, Protocol::Tcp),
    ];
    for (src, dst, port, protocol) in cases {
        let outcome = probe(lab, src, dst, port, protocol);
        assert!(
            outcome.reachable,
            "{cni}: {src} -> {dst}:{port}/{protocol}: {outcome}"
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
    let guard = Guard(Lab::up(spec).expect("lab up"));
    let elapsed = started.elapsed();
    // Generous against the 3 s target: other tests share the two CPUs.
    assert!(elapsed < Duration::from_secs(6), "lab up took {elapsed:?}");
    let inventory: model::Inventory = serde_json::from_slice(
        &std::fs::read(guard.0.inventory_path()).expect("inventory written"),
    )
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
    let guard = Guard(
        Lab::up(LabSpec {
            nodes: 1,
            pods_per_node: 1,
            ..spec("ex", CniMode::FlannelHostGw)
        })
        .expect("lab up"),
    );
    let code = guard.0.exec(
        "default/pod-1-1",
        &[
            "sh".into(),
            "-c".into(),
            "ip -4 addr show eth0 | grep -q 10.244.0.2 && exit 7".into(),
        ],
    );
    assert_eq!(code.expect("exec runs"), 7);
    assert!(matches!(
        guard.0.exec("default/nope", &["true".into()]),
        Err(lab::LabError::UnknownEndpoint(_))
    ));
}

fn fault_blocks_traffic(fault: Fault, cni: CniMode) {
    let name = unique_name(&fault.name()[..2]);
    let mut spec = scenario_spec(name, cni);
    spec.listener = vec![env!("CARGO_BIN_EXE_nsl-lab-serve").into()];
    let mut guard = Guard(Lab::up(spec).expect("lab up"));
    let healthy = ProbeRequest {
        src: lab::faults::SOURCE_POD.into(),
        dst: lab::faults::DESTINATION_POD.into(),
        port: 8080,
        protocol: Protocol::Tcp,
        payload: 0,
    };
    let before = guard.0.probe(&healthy, TIMEOUT).expect("probe runs");
    assert!(
        before.reachable,
        "{} {cni}: healthy before injection: {before}",
        fault.name()
    );
    let injected = fault.inject(&mut guard.0).expect("fault injects");
    let after = guard.0.probe(&injected.probe, TIMEOUT).expect("probe runs");
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
    let mut guard = Guard(Lab::up(spec).expect("lab up"));
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
        .0
        .apply(lab::parse_objects("policy.yaml", policy).expect("policy parses"))
        .expect("apply");
    let allowed = probe(
        &guard.0,
        "default/pod-1-1",
        "default/pod-2-1",
        8080,
        Protocol::Tcp,
    );
    assert!(allowed.reachable, "selected source: {allowed}");
    let denied = probe(
        &guard.0,
        "default/pod-3-1",
        "default/pod-2-1",
        8080,
        Protocol::Tcp,
    );
    assert!(!denied.reachable, "other source: {denied}");
    let rules =
        std::fs::read_to_string(guard.0.dir().join("iptables/node-2.rules")).expect("rules saved");
    assert!(
        rules.contains("rule to ACCEPT traffic for policy default/only-pod-1-1"),
        "policy named in its rules"
    );
}

/// Injects `fault`, then undoes only its sysctl on `node`: traffic must flow again, proving that
/// sysctl (not the rest of the setup the fault needs) is the cause.
fn sysctl_is_the_root_cause(fault: Fault, cni: CniMode, node: &str, undo: &[lab::sys::Sysctl]) {
    let mut spec = scenario_spec(unique_name(&fault.name()[..2]), cni);
    spec.listener = vec![env!("CARGO_BIN_EXE_nsl-lab-serve").into()];
    let mut guard = Guard(Lab::up(spec).expect("lab up"));
    let injected = fault.inject(&mut guard.0).expect("fault injects");
    assert!(
        !guard
            .0
            .probe(&injected.probe, TIMEOUT)
            .expect("probe runs")
            .reachable,
        "{}: blocked",
        fault.name()
    );
    let netns = guard
        .0
        .state()
        .node(node)
        .expect("node exists")
        .netns
        .clone();
    lab::sys::write_sysctls(&netns, undo).expect("sysctls written");
    let outcome = guard.0.probe(&injected.probe, TIMEOUT).expect("probe runs");
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
    spec.listener = vec![env!("CARGO_BIN_EXE_nsl-lab-serve").into()];
    let mut guard = Guard(Lab::up(spec).expect("lab up"));
    let injected = Fault::UnderlayMtuMismatch
        .inject(&mut guard.0)
        .expect("fault injects");
    assert!(
        !guard
            .0
            .probe(&injected.probe, TIMEOUT)
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
            .0
            .probe(&small, TIMEOUT)
            .expect("probe runs")
            .reachable,
        "small datagrams still pass"
    );
    let underlay = guard.0.state().underlay_netns();
    lab::sys::ip_batch(Some(&underlay), &["link set n2 mtu 1500".into()]).expect("mtu restored");
    let outcome = guard.0.probe(&injected.probe, TIMEOUT).expect("probe runs");
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
    let mut guard = Guard(Lab::up(spec).expect("lab up"));
    let err = Fault::PodInterfaceDown
        .inject(&mut guard.0)
        .expect_err("a hostNetwork pod has no eth0 of its own to take down");
    assert!(
        err.to_string()
            .contains("pod default/pod-2-1 has no network namespace"),
        "{err}"
    );
}
