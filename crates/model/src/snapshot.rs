//! The snapshot: everything the diagnosis engine needs, in one versioned, documented bundle.
//!
//! Documented in `docs/snapshot.md`. Kubernetes objects are k8s-openapi types, serialised as the
//! API server does; per-netns state is [`netstack::state::NetnsState`]. The same snapshot always
//! gives the same diagnosis, so nothing here depends on time or on the machine reading it.

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use netstack::state::NetnsState;
use serde::{Deserialize, Serialize};

/// Value of [`Snapshot::format`].
pub const FORMAT: &str = "netsleuth.snapshot";
/// Current snapshot schema version. Bump on any incompatible change and describe it in
/// `docs/snapshot.md`.
pub const VERSION: u32 = 1;

/// A whole cluster's (or a part of it) state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Always [`FORMAT`].
    pub format: String,
    /// Schema version, [`VERSION`] for what this build writes.
    pub version: u32,
    /// Where the state came from.
    pub source: SnapshotSource,
    /// Cluster-wide settings that are not Kubernetes objects (or are derived from them).
    #[serde(default)]
    pub cluster: ClusterInfo,
    #[serde(default)]
    pub kubernetes: KubeObjects,
    /// Network namespaces, host and pod, of every node in the snapshot.
    #[serde(default)]
    pub netns: Vec<NetnsRecord>,
}

/// Where a snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSource {
    pub kind: SourceKind,
    /// Lab name, cluster context name, or generator description.
    #[serde(default)]
    pub name: String,
    /// RFC 3339 time of collection, informational only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Collected from a `netsleuth lab` cluster.
    Lab,
    /// Collected from a live cluster (agents or collector).
    Live,
    /// Recorded from a real cluster and kept as a fixture.
    Recorded,
    /// Written by a generator (benchmarks, examples).
    Synthetic,
}

/// Cluster-wide facts. Each is optional; the engine auto-detects what is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_mode: Option<KubeProxyMode>,
    /// Pod network (`--cluster-cidr`), one per family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// Service network (`--service-cluster-ip-range`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// Cluster DNS domain, `cluster.local` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
}

/// The CNI and its datapath mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CniMode {
    FlannelHostGw,
    FlannelVxlan,
    CalicoBgp,
    CalicoIpip,
    CalicoVxlan,
    CalicoCrosssubnet,
    /// Any other CNI: forwarding follows the FIB only.
    Generic,
}

impl CniMode {
    pub const ALL: [CniMode; 7] = [
        CniMode::FlannelHostGw,
        CniMode::FlannelVxlan,
        CniMode::CalicoBgp,
        CniMode::CalicoIpip,
        CniMode::CalicoVxlan,
        CniMode::CalicoCrosssubnet,
        CniMode::Generic,
    ];

    /// Stable name as used on the command line (`--cni flannel-vxlan`) and in snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            CniMode::FlannelHostGw => "flannel-host-gw",
            CniMode::FlannelVxlan => "flannel-vxlan",
            CniMode::CalicoBgp => "calico-bgp",
            CniMode::CalicoIpip => "calico-ipip",
            CniMode::CalicoVxlan => "calico-vxlan",
            CniMode::CalicoCrosssubnet => "calico-crosssubnet",
            CniMode::Generic => "generic",
        }
    }
}

impl fmt::Display for CniMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CniMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CniMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = CniMode::ALL.iter().map(|m| m.as_str()).collect();
                format!(
                    "unknown CNI mode {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxyMode {
    Iptables,
    Ipvs,
    Nftables,
    /// No kube-proxy (a CNI replaces it, or Services are not used).
    None,
}

/// The Kubernetes objects that matter for the datapath.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeObjects {
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub endpoint_slices: Vec<EndpointSlice>,
    #[serde(default)]
    pub network_policies: Vec<NetworkPolicy>,
    /// ConfigMaps that configure the datapath (kube-proxy's, the CNI's), when present.
    #[serde(default)]
    pub config_maps: Vec<ConfigMap>,
}

/// One network namespace and whom it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsRecord {
    /// Unique id inside the snapshot: `node-1` for a node's host netns, `node-1/default/web-0` for
    /// a pod's. Veth peers refer to netns by this id.
    pub id: String,
    /// The Kubernetes node it lives on (for the lab's underlay router: the router's name).
    pub node: String,
    pub owner: NetnsOwner,
    pub state: NetnsState,
}

/// Whose network namespace it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetnsOwner {
    /// The node's root netns (also used by hostNetwork pods).
    Host,
    /// A pod's netns.
    Pod { namespace: String, name: String },
    /// Something that is not a Kubernetes node: an underlay router, an external host.
    Infrastructure { role: String },
}

impl Snapshot {
    /// An empty snapshot of the current version.
    pub fn new(source: SnapshotSource) -> Snapshot {
        Snapshot {
            format: FORMAT.to_string(),
            version: VERSION,
            source,
            cluster: ClusterInfo::default(),
            kubernetes: KubeObjects::default(),
            netns: Vec::new(),
        }
    }

    /// The netns record with this id.
    pub fn netns(&self, id: &str) -> Option<&NetnsRecord> {
        self.netns.iter().find(|n| n.id == id)
    }

    /// A node's host netns.
    pub fn host_netns(&self, node: &str) -> Option<&NetnsRecord> {
        self.netns
            .iter()
            .find(|n| n.node == node && n.owner == NetnsOwner::Host)
    }

    /// A pod's netns.
    pub fn pod_netns(&self, namespace: &str, name: &str) -> Option<&NetnsRecord> {
        self.netns.iter().find(|n| {
            matches!(&n.owner, NetnsOwner::Pod { namespace: ns, name: nm } if ns == namespace && nm == name)
        })
    }
}
