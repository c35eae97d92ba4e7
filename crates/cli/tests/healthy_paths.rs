//! Healthy paths against the real kernel (needs root): in every CNI mode, one healthy lab and
//! every kind of flow a cluster carries. Real traffic (`Lab::probe`) must get through, and
//! `netsleuth diagnose --lab` on the same flow must agree: exit 0, verdict delivered, no
//! error-level finding. A diagnosis that blocks a flow the kernel delivers is a false alarm.
//!
//! Labs are named `hp-<mode>-<pid>` and taken down by a Drop guard, also on failure.

use std::process::Command;
use std::time::Duration;

use lab::{Lab, LabSpec, ProbeRequest, EXTERNAL_TARGET, SUPPORTED_CNI};
use model::CniMode;
use netstack::packet::Protocol;

/// Long enough for a first ARP round trip on a loaded two-CPU machine.
const PROBE_TIMEOUT: Duration = Duration::from_millis(2000);

/// A hostNetwork pod with its own listener on node-2, a ClusterIP Service and a NodePort Service
/// over the default pods (`app: pod`, 8080).
const OBJECTS: &str = "
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
  selector: {app: pod}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  selector: {app: pod}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

/// Takes the lab down however the test ends.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(err) = Lab::down(&self.0) {
            eprintln!("cleanup of lab {} failed: {err}", self.0);
        }
    }
}

/// What `netsleuth diagnose --lab` said about one flow.
struct Diagnosis {
    status: Option<i32>,
    verdict: String,
    error_codes: Vec<String>,
}

/// `netsleuth diagnose --lab` on the probe's flow, its report in `format`.
fn run_diagnose(lab: &str, probe: &ProbeRequest, format: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(["diagnose", "--lab", lab, "-s", &probe.src, "-d", &probe.dst])
        .args(["-p", &probe.port.to_string()])
        .args(["--protocol", &probe.protocol.to_string(), "-o", format])
        .output()
        .expect("run netsleuth diagnose")
}

/// The human-readable report, shown when the diagnosis disagrees with the traffic.
fn diagnosis_text(lab: &str, probe: &ProbeRequest) -> String {
    let text = run_diagnose(lab, probe, "text");
    format!(
        "{}{}",
        String::from_utf8_lossy(&text.stdout),
        String::from_utf8_lossy(&text.stderr)
    )
}

fn diagnose(lab: &str, probe: &ProbeRequest) -> Diagnosis {
    let json = run_diagnose(lab, probe, "json");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
    let error_codes = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["level"] == "error" || f["level"] == "fatal")
        .filter_map(|f| f["code"].as_str().map(String::from))
        .collect();
    Diagnosis {
        status: json.status.code(),
        verdict: report["verdict"].as_str().unwrap_or("(no report)").into(),
        error_codes,
    }
}

fn healthy_paths(cni: CniMode, tag: &str) {
    let name = format!("hp-{tag}-{}", std::process::id() % 100_000);
    let _ = Lab::down(&name);
    let spec = LabSpec {
        cni,
        nodes: 2,
        pods_per_node: 2,
        objects: lab::parse_objects("healthy.yaml", OBJECTS).expect("test YAML parses"),
        listener: vec![
            env!("CARGO_BIN_EXE_netsleuth").into(),
            "lab".into(),
            "serve".into(),
        ],
        ..LabSpec::new(name.clone())
    };
    let lab = Lab::up(spec).unwrap_or_else(|e| panic!("{cni}: lab up: {e}"));
    let _guard = LabGuard(name.clone());
    let node_port = lab
        .state()
        .service("default", "web-np")
        .and_then(|s| s.spec.as_ref()?.ports.as_ref()?[0].node_port)
        .and_then(|p| u16::try_from(p).ok())
        .expect("NodePort assigned");
    let flows: [(&str, &str, &str, u16); 7] = [
        (
            "pod to pod, same node",
            "default/pod-1-1",
            "default/pod-1-2",
            8080,
        ),
        (
            "pod to pod, cross node",
            "default/pod-1-1",
            "default/pod-2-1",
            8080,
        ),
        (
            "pod to Service",
            "default/pod-1-1",
            "service/default/web",
            80,
        ),
        (
            "pod to NodePort",
            "default/pod-1-1",
            "node/node-2",
            node_port,
        ),
        ("node to pod", "node/node-1", "default/pod-2-1", 8080),
        (
            "pod to hostNetwork pod",
            "default/pod-1-1",
            "default/hostnet",
            9090,
        ),
        (
            "pod to outside the cluster",
            "default/pod-1-1",
            EXTERNAL_TARGET,
            8080,
        ),
    ];
    let mut failures = Vec::new();
    for (what, src, dst, port) in flows {
        let mut probe = ProbeRequest {
            src: src.into(),
            dst: dst.into(),
            port,
            protocol: Protocol::Tcp,
            payload: 0,
        };
        let traffic = lab
            .probe(&probe, PROBE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{cni}: {what}: probe: {e}"));
        assert!(traffic.reachable, "{cni}: {what}: real traffic: {traffic}");
        // diagnose resolves lab names itself, except the lab-only name of the outside host.
        if dst == EXTERNAL_TARGET {
            probe.dst = lab.address_of(dst).expect("external address").to_string();
        }
        let diagnosis = diagnose(&name, &probe);
        if diagnosis.status != Some(0)
            || diagnosis.verdict != "delivered"
            || !diagnosis.error_codes.is_empty()
        {
            failures.push(format!(
                "{cni}: {what} ({src} -> {dst}:{port}): traffic flows, diagnose exit {:?}, \
                 verdict {}, errors {:?}:\n{}",
                diagnosis.status,
                diagnosis.verdict,
                diagnosis.error_codes,
                diagnosis_text(&name, &probe)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_supported_mode_is_covered() {
    let covered = [
        CniMode::FlannelHostGw,
        CniMode::FlannelVxlan,
        CniMode::CalicoBgp,
        CniMode::CalicoVxlan,
        CniMode::CalicoCrosssubnet,
    ];
    assert!(SUPPORTED_CNI.iter().all(|m| covered.contains(m)));
}

#[test]
fn healthy_paths_flannel_host_gw() {
    healthy_paths(CniMode::FlannelHostGw, "fhg");
}

#[test]
fn healthy_paths_flannel_vxlan() {
    healthy_paths(CniMode::FlannelVxlan, "fvx");
}

#[test]
fn healthy_paths_calico_bgp() {
    healthy_paths(CniMode::CalicoBgp, "cbg");
}

#[test]
fn healthy_paths_calico_vxlan() {
    healthy_paths(CniMode::CalicoVxlan, "cvx");
}

#[test]
fn healthy_paths_calico_crosssubnet() {
    healthy_paths(CniMode::CalicoCrosssubnet, "ccs");
}
