//! Fixtures shared by the lab's tests and other crates' lab tests (feature `test-support`): a
//! guard that takes a lab down however a test ends, the healthy cluster every CNI mode is checked
//! on, and the flows such a cluster carries.
//!
//! Test code only: nothing outside tests enables the feature.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use netstack::packet::Protocol;

use crate::lab::{Lab, LabSpec, EXTERNAL_TARGET};
use crate::objects::parse_objects;
use crate::probe::ProbeRequest;
use crate::LabError;

/// How long a probe waits: long enough for a first ARP round trip on a loaded two-CPU machine.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(2000);

/// A running lab, taken down when the guard drops (also when the test panics).
pub struct LabGuard(Lab);

impl LabGuard {
    /// Brings `spec` up after removing any leftover lab of the same name; a lab that fails half
    /// way up is taken down too.
    pub fn up(spec: LabSpec) -> Result<LabGuard, LabError> {
        let name = spec.name.clone();
        let _ = Lab::down(&name);
        Lab::up(spec).map(LabGuard).inspect_err(|_| {
            let _ = Lab::down(&name);
        })
    }
}

impl Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl DerefMut for LabGuard {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.0
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(err) = Lab::down(self.0.name()) {
            eprintln!("cleanup of lab {} failed: {err}", self.0.name());
        }
    }
}

/// A lab name no other test run uses at the same time: `t` + `tag` + 5 hex digits.
pub fn unique_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t{tag}{:x}", (nanos ^ std::process::id()) & 0xfffff)
}

/// Besides the default pods (`app: pod`, serving 8080 as port `http`): a hostNetwork pod with
/// its own listener on node-2, and a NodePort Service over the default pods.
const HEALTHY_OBJECTS: &str = "
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

/// The healthy cluster: 3 nodes with 2 pods each on `cni`, plus [`HEALTHY_OBJECTS`]; pod
/// listeners run `listener`.
pub fn healthy_spec(
    name: String,
    cni: model::CniMode,
    listener: Vec<String>,
) -> Result<LabSpec, LabError> {
    Ok(LabSpec {
        cni,
        nodes: 3,
        pods_per_node: 2,
        objects: parse_objects("healthy cluster", HEALTHY_OBJECTS)?,
        listener,
        ..LabSpec::new(name)
    })
}

/// Bytes a TCP flow writes (and needs echoed) when full-size segments matter: many segments,
/// each as large as the MSS the receiver announced allows.
const LARGE_WRITE: usize = 64 * 1024;

/// `flow` writing [`LARGE_WRITE`] bytes instead of only connecting.
fn large_write(mut flow: Flow) -> Flow {
    flow.request.payload = LARGE_WRITE;
    flow
}

/// One flow a healthy cluster carries.
pub struct Flow {
    pub what: &'static str,
    pub request: ProbeRequest,
}

/// Every kind of flow a cluster carries, on a lab built from [`healthy_spec`]: pod to pod (same
/// node, other node; TCP, UDP, ICMP), to a Service from two nodes, to a NodePort, node to pod,
/// to a hostNetwork pod, and out of the cluster. Node to pod goes to two other nodes (across
/// calico-crosssubnet's router, encapsulated, and on the same subnet, not) with a large write.
pub fn healthy_flows(lab: &Lab) -> Result<Vec<Flow>, LabError> {
    let node_port = lab.state().node_port("default", "web")?;
    let flow = |what, src: &str, dst: &str, port, protocol| Flow {
        what,
        request: ProbeRequest {
            src: src.into(),
            dst: dst.into(),
            port,
            protocol,
            payload: 0,
        },
    };
    let pod = "default/pod-1-1";
    Ok(vec![
        flow(
            "pod to pod, same node",
            pod,
            "default/pod-1-2",
            8080,
            Protocol::Tcp,
        ),
        flow(
            "pod to pod, other node",
            pod,
            "default/pod-2-1",
            8080,
            Protocol::Tcp,
        ),
        flow(
            "pod to pod, UDP",
            pod,
            "default/pod-3-2",
            8080,
            Protocol::Udp,
        ),
        flow(
            "pod to pod, ICMP",
            pod,
            "default/pod-2-2",
            0,
            Protocol::Icmp,
        ),
        flow(
            "pod to Service",
            pod,
            "service/default/web",
            80,
            Protocol::Tcp,
        ),
        flow(
            "pod to Service, from node-3",
            "default/pod-3-1",
            "service/default/web",
            80,
            Protocol::Tcp,
        ),
        flow(
            "pod to NodePort",
            pod,
            "node/node-2",
            node_port,
            Protocol::Tcp,
        ),
        large_write(flow(
            "node to pod",
            "node/node-1",
            "default/pod-2-1",
            8080,
            Protocol::Tcp,
        )),
        // calico-crosssubnet: node-3 shares node-1's subnet, so this one is routed without
        // encapsulation into a pod veth narrower (the VXLAN MTU) than the node's.
        large_write(flow(
            "node to pod, other node on the same subnet",
            "node/node-1",
            "default/pod-3-1",
            8080,
            Protocol::Tcp,
        )),
        flow(
            "pod to hostNetwork pod",
            pod,
            "default/hostnet",
            9090,
            Protocol::Tcp,
        ),
        flow(
            "pod to outside the cluster",
            pod,
            EXTERNAL_TARGET,
            8080,
            Protocol::Tcp,
        ),
    ])
}
