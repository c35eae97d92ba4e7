//! The lab's cluster layout and the Kubernetes objects derived from it — pure data, no host access.
//!
//! Addressing (documented in `docs/lab.md`):
//! - underlay `192.168.0.0/24` (and `192.168.1.0/24` for calico-crosssubnet, odd nodes on the
//!   first, even nodes on the second), gateway `.1` in the underlay netns, node-N at `.(10+N)`;
//! - cluster CIDR `10.244.0.0/16`, node-N's podCIDR `10.244.(N-1).0/24`, pods from `.2`;
//! - Services `10.96.0.0/16` (ClusterIPs from `10.96.0.10`), NodePorts from 30000.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use model::snapshot::{
    ClusterInfo, CniMode, KubeObjects, KubeProxyMode, NetnsOwner, SnapshotSource, SourceKind,
};
use model::{Inventory, NetnsLocation};
use serde::{Deserialize, Serialize};

use crate::sha256::hex_prefix;
use crate::LabError;

pub const CLUSTER_CIDR: Ipv4Net = ipv4_net([10, 244, 0, 0], 16);
pub const SERVICE_CIDR: Ipv4Net = ipv4_net([10, 96, 0, 0], 16);
/// First ClusterIP handed out (`.1` is `kubernetes`, `.10` conventionally kube-dns, so user
/// Services start above both).
pub const FIRST_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;
/// Calico's pod-side gateway: a link-local address answered by proxy ARP on the host veth.
pub const CALICO_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The port and protocols every default pod (from `--pods-per-node`) serves.
pub const DEFAULT_POD_PORT: i32 = 8080;
/// The host outside the cluster on the first underlay subnet (netns `nsl-<lab>-external`): what
/// "pod → an address outside the cluster" reaches. It listens on [`DEFAULT_POD_PORT`] TCP and UDP.
pub const EXTERNAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 254);

const fn ipv4_net(octets: [u8; 4], prefix: u8) -> Ipv4Net {
    match Ipv4Net::new(
        Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
        prefix,
    ) {
        Ok(net) => net,
        Err(_) => panic!("constant prefix length is at most 32"),
    }
}

/// One emulated node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlan {
    /// `node-N`.
    pub name: String,
    /// `nsl-<lab>-node-N`.
    pub netns: String,
    /// Address of its `eth0` on the underlay.
    pub ip: Ipv4Addr,
    pub underlay: Ipv4Net,
    /// The underlay gateway (the underlay netns' address on this node's subnet).
    pub gateway: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// MAC of the VXLAN device, published in the node's annotations as the daemons do.
    pub vtep_mac: String,
}

impl NodePlan {
    /// The VXLAN device address (flannel's `X.0/32`, calico's `IPv4VXLANTunnelAddr`).
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.pod_cidr.network()
    }
    /// Flannel's bridge address and the pods' gateway in flannel modes.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pod_cidr.network()) + 1)
    }
}

/// One pod and where the lab put it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodPlan {
    /// The object as applied, with `spec.nodeName` and `status` filled by the lab.
    pub pod: Pod,
    pub node: String,
    pub ip: Ipv4Addr,
    /// `None` for hostNetwork pods (they live in the node's netns).
    pub netns: Option<String>,
    /// The node-side veth (`vethXXXXXXXX` for flannel, `caliXXXXXXXXXXX` for calico).
    pub host_veth: Option<String>,
}

impl PodPlan {
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.pod.metadata.labels.clone().unwrap_or_default()
    }
    /// The ports the pod's containers declare, i.e. what its listener serves.
    pub fn listen_ports(&self) -> Vec<crate::ListenPort> {
        let mut ports: Vec<crate::ListenPort> = self
            .pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let transport = match p.protocol.as_deref().unwrap_or("TCP") {
                    "TCP" => crate::Transport::Tcp,
                    "UDP" => crate::Transport::Udp,
                    _ => return None, // SCTP: no listener
                };
                Some(crate::ListenPort {
                    port: u16::try_from(p.container_port).ok()?,
                    transport,
                })
            })
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }
    /// Resolves a Service targetPort (number or container port name) on this pod.
    pub fn resolve_port(&self, target: &IntOrString) -> Option<i32> {
        match target {
            IntOrString::Int(port) => Some(*port),
            IntOrString::String(name) => self
                .pod
                .spec
                .iter()
                .flat_map(|spec| &spec.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        }
    }
}

/// Everything the lab knows; saved as `lab.json` in the state dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub cni: CniMode,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    /// Services with `clusterIP` and `nodePort`s assigned.
    pub services: Vec<Service>,
    pub network_policies: Vec<NetworkPolicy>,
    /// Program and leading arguments that run a pod listener (`netsleuth lab serve`); the ports
    /// are appended.
    pub listener: Vec<String>,
}

impl LabState {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodPlan> {
        self.pods
            .iter()
            .find(|p| p.namespace() == namespace && p.name() == name)
    }
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| {
            s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// The NodePort the lab gave the first port of Service `namespace/name`: an error naming the
    /// Service when it has none.
    pub fn node_port(&self, namespace: &str, name: &str) -> Result<u16, LabError> {
        self.service(namespace, name)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first()?.node_port)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| LabError::Invalid(format!("Service {namespace}/{name} got no NodePort")))
    }

    /// Netns of the underlay (bridge or router) that connects the nodes' `eth0`s.
    pub fn underlay_netns(&self) -> String {
        format!("{}underlay", netns_prefix(&self.name))
    }

    /// Netns of the host outside the cluster ([`EXTERNAL_ADDRESS`]).
    pub fn external_netns(&self) -> String {
        format!("{}external", netns_prefix(&self.name))
    }

    /// Every netns of this lab, underlay first.
    pub fn all_netns(&self) -> Vec<String> {
        let mut names = vec![self.underlay_netns(), self.external_netns()];
        names.extend(self.nodes.iter().map(|n| n.netns.clone()));
        names.extend(self.pods.iter().filter_map(|p| p.netns.clone()));
        names
    }

    pub fn node_objects(&self) -> Vec<Node> {
        self.nodes
            .iter()
            .map(|node| node_object(self.cni, node))
            .collect()
    }

    pub fn namespace_objects(&self) -> Vec<Namespace> {
        let mut names: Vec<&str> = self.pods.iter().map(|p| p.namespace()).collect();
        names.extend(
            self.services
                .iter()
                .filter_map(|s| s.metadata.namespace.as_deref()),
        );
        names.push("default");
        names.sort();
        names.dedup();
        names.into_iter().map(namespace_object).collect()
    }

    /// EndpointSlices as the EndpointSlice controller writes them: one per selector Service, every
    /// running pod matching the selector (all lab pods are ready).
    pub fn endpoint_slices(&self) -> Vec<EndpointSlice> {
        self.services
            .iter()
            .filter_map(|service| endpoint_slice(service, &self.pods))
            .collect()
    }

    pub fn kube_objects(&self) -> KubeObjects {
        KubeObjects {
            nodes: self.node_objects(),
            namespaces: self.namespace_objects(),
            pods: self.pods.iter().map(|p| p.pod.clone()).collect(),
            services: self.services.clone(),
            endpoint_slices: self.endpoint_slices(),
            network_policies: self.network_policies.clone(),
            config_maps: Vec::new(),
        }
    }

    /// The collector's input: objects plus every netns with its snapshot id and owner.
    pub fn inventory(&self) -> Inventory {
        let mut netns = vec![NetnsLocation {
            id: "underlay".into(),
            node: "underlay".into(),
            owner: NetnsOwner::Infrastructure {
                role: underlay_role(self.cni).into(),
            },
            path: crate::sys::netns_path(&self.underlay_netns()),
        }];
        netns.push(NetnsLocation {
            id: "external".into(),
            node: "external".into(),
            owner: NetnsOwner::Infrastructure {
                role: "external-host".into(),
            },
            path: crate::sys::netns_path(&self.external_netns()),
        });
        netns.extend(self.nodes.iter().map(|n| NetnsLocation {
            id: n.name.clone(),
            node: n.name.clone(),
            owner: NetnsOwner::Host,
            path: crate::sys::netns_path(&n.netns),
        }));
        netns.extend(self.pods.iter().filter_map(|p| {
            Some(NetnsLocation {
                id: format!("{}/{}", p.node, p.key()),
                node: p.node.clone(),
                owner: NetnsOwner::Pod {
                    namespace: p.namespace().into(),
                    name: p.name().into(),
                },
                path: crate::sys::netns_path(p.netns.as_ref()?),
            })
        }));
        Inventory {
            source: SnapshotSource {
                kind: SourceKind::Lab,
                name: self.name.clone(),
                collected_at: None,
            },
            cluster: ClusterInfo {
                cni: Some(self.cni),
                kube_proxy_mode: Some(KubeProxyMode::Iptables),
                cluster_cidrs: vec![CLUSTER_CIDR.into()],
                service_cidrs: vec![SERVICE_CIDR.into()],
                dns_domain: Some("cluster.local".into()),
            },
            kubernetes: self.kube_objects(),
            netns,
        }
    }
}

/// Every lab netns starts with this, so `down --all` finds leftovers of crashed runs.
pub fn netns_prefix(lab: &str) -> String {
    format!("{}{lab}-", crate::NETNS_PREFIX)
}

fn underlay_role(cni: CniMode) -> &'static str {
    if cni == CniMode::CalicoCrosssubnet {
        "underlay-router"
    } else {
        "underlay-bridge"
    }
}

/// Lays out `count` nodes for `cni`.
pub fn plan_nodes(lab: &str, cni: CniMode, count: u8) -> Vec<NodePlan> {
    (1..=count)
        .map(|index| {
            let subnet_index = if cni == CniMode::CalicoCrosssubnet {
                (index + 1) % 2
            } else {
                0
            };
            NodePlan {
                name: format!("node-{index}"),
                netns: format!("{}node-{index}", netns_prefix(lab)),
                ip: Ipv4Addr::new(192, 168, subnet_index, 10 + index),
                underlay: ipv4_net([192, 168, subnet_index, 0], 24),
                gateway: Ipv4Addr::new(192, 168, subnet_index, 1),
                pod_cidr: ipv4_net([10, 244, index - 1, 0], 24),
                // Locally administered unicast MACs, stable per node so annotations never drift.
                vtep_mac: format!("0e:6e:73:6c:00:{index:02x}"),
            }
        })
        .collect()
}

/// Name of a pod's node-side veth, in the style of its CNI.
pub fn host_veth_name(cni: CniMode, namespace: &str, name: &str) -> String {
    match cni {
        CniMode::CalicoBgp
        | CniMode::CalicoIpip
        | CniMode::CalicoVxlan
        | CniMode::CalicoCrosssubnet => {
            format!("cali{}", hex_prefix(&format!("{namespace}.{name}"), 11))
        }
        _ => format!("veth{}", hex_prefix(&format!("{namespace}/{name}"), 8)),
    }
}

fn node_object(cni: CniMode, node: &NodePlan) -> Node {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus};
    let mut annotations = BTreeMap::new();
    let mut put = |key: &str, value: String| annotations.insert(key.to_string(), value);
    match cni {
        CniMode::FlannelHostGw | CniMode::FlannelVxlan => {
            let vxlan = cni == CniMode::FlannelVxlan;
            put(
                "flannel.alpha.coreos.com/backend-type",
                if vxlan { "vxlan" } else { "host-gw" }.into(),
            );
            put(
                "flannel.alpha.coreos.com/backend-data",
                if vxlan {
                    format!("{{\"VNI\":1,\"VtepMAC\":\"{}\"}}", node.vtep_mac)
                } else {
                    "null".into()
                },
            );
            put(
                "flannel.alpha.coreos.com/kube-subnet-manager",
                "true".into(),
            );
            put("flannel.alpha.coreos.com/public-ip", node.ip.to_string());
        }
        _ => {
            put(
                "projectcalico.org/IPv4Address",
                format!("{}/{}", node.ip, node.underlay.prefix_len()),
            );
            if matches!(cni, CniMode::CalicoVxlan | CniMode::CalicoCrosssubnet) {
                put(
                    "projectcalico.org/IPv4VXLANTunnelAddr",
                    node.vtep_ip().to_string(),
                );
            }
        }
    }
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), node.name.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    Node {
        metadata: ObjectMeta {
            name: Some(node.name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(node.pod_cidr.to_string()),
            pod_cidrs: Some(vec![node.pod_cidr.to_string()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: node.ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: node.name.clone(),
                },
            ]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("kubelet is posting ready status".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn namespace_object(name: &str) -> Namespace {
    let labels = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())]);
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A pod of `--pods-per-node`: `default/pod-<node index>-<k>`, labelled `app: pod`, serving
/// 8080/TCP (`http`) and 8080/UDP (`udp`).
pub fn default_pod(node: &NodePlan, k: usize) -> Pod {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
    let index = node.name.trim_start_matches("node-");
    let name = format!("pod-{index}-{k}");
    let port = |name: &str, protocol: &str| ContainerPort {
        name: Some(name.into()),
        container_port: DEFAULT_POD_PORT,
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([
                ("app".to_string(), "pod".to_string()),
                ("name".to_string(), name),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.name.clone()),
            containers: vec![Container {
                name: "echo".into(),
                image: Some("netsleuth-lab-serve".into()),
                ports: Some(vec![port("http", "TCP"), port("udp", "UDP")]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Fills what the scheduler, kubelet and CNI would: nodeName, namespace, Running/Ready status.
pub fn complete_pod(mut pod: Pod, node: &NodePlan, ip: Ipv4Addr) -> Pod {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodIP, PodStatus};
    pod.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.name.clone());
    let condition = |type_: &str| PodCondition {
        type_: type_.into(),
        status: "True".into(),
        ..Default::default()
    };
    let container_statuses = spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            ready: true,
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        })
        .collect();
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        host_ip: Some(node.ip.to_string()),
        pod_ip: Some(ip.to_string()),
        pod_ips: Some(vec![PodIP { ip: ip.to_string() }]),
        conditions: Some(vec![
            condition("Initialized"),
            condition("ContainersReady"),
            condition("Ready"),
        ]),
        container_statuses: Some(container_statuses),
        ..Default::default()
    });
    pod
}

/// Does `selector` (matchLabels + matchExpressions) select `labels`?
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false, // the API server rejects other operators; select nothing rather than all
        }
    });
    labels_ok && expressions_ok
}

fn endpoint_slice(service: &Service, pods: &[PodPlan]) -> Option<EndpointSlice> {
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref()?;
    let namespace = service
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = service.metadata.name.clone()?;
    let members: Vec<&PodPlan> = pods
        .iter()
        .filter(|p| {
            p.namespace() == namespace && selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))
        })
        .collect();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|port| {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                // The controller resolves named ports per pod; the lab's pods of one Service
                // share a template, so the first member's answer holds for all.
                port: members.iter().find_map(|p| p.resolve_port(&target)),
                ..Default::default()
            }
        })
        .collect();
    let endpoints = members
        .iter()
        .map(|p| Endpoint {
            addresses: vec![p.ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some(p.node.clone()),
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(namespace.clone()),
                name: Some(p.name().into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Some(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!(
                "{name}-{}",
                hex_prefix(&format!("{namespace}/{name}"), 5)
            )),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/service-name".to_string(), name),
                (
                    "endpointslice.kubernetes.io/managed-by".to_string(),
                    "endpointslice-controller.k8s.io".to_string(),
                ),
            ])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    })
}
