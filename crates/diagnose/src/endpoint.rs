//! Resolving what the user typed (`default/web`, `node/node-1`, `service/default/web`, an IP) to
//! an address and the network namespace it lives in, through lookups remembered for one diagnosis.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use model::{NetnsOwner, NetnsRecord, Snapshot};
use thiserror::Error;

use crate::policy::namespace_of;

/// An endpoint as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    Ip(IpAddr),
    Pod { namespace: String, name: String },
    Node(String),
    Service { namespace: String, name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    #[error("{0:?} is not an IP, namespace/pod, node/NAME or service/namespace/name")]
    Syntax(String),
    #[error("{0} is not in the snapshot")]
    NotFound(String),
    #[error("{0} has no address in the snapshot ({1})")]
    NoAddress(String, String),
}

impl std::str::FromStr for EndpointSpec {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if let Ok(ip) = s.parse() {
            return Ok(EndpointSpec::Ip(ip));
        }
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| !p.is_empty();
        match parts.as_slice() {
            ["node", name] if ok(name) => Ok(EndpointSpec::Node(name.to_string())),
            ["service" | "svc", ns, name] if ok(ns) && ok(name) => Ok(EndpointSpec::Service {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            [ns, name] if ok(ns) && ok(name) => Ok(EndpointSpec::Pod {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            _ => Err(EndpointError::Syntax(s.to_string())),
        }
    }
}

/// Lookups over a snapshot for one diagnosis, shared by every part of it (walk, CNI intent,
/// Service and NetworkPolicy checks). A diagnosis asks about a few dozen netns, nodes, pods and
/// addresses of a snapshot that may hold tens of thousands, so nothing is indexed up front: each
/// question is answered by a scan the first time and remembered (one scan per distinct question,
/// instead of hashing the whole snapshot on every diagnosis).
pub struct Index<'a> {
    pub snapshot: &'a Snapshot,
    netns: Memo<String, &'a NetnsRecord>,
    /// Which netns holds an address (loopback addresses excluded: every netns has them).
    owner_of_ip: Memo<IpAddr, &'a NetnsRecord>,
    /// A node's host netns, by node name.
    host_of_node: Memo<String, &'a NetnsRecord>,
    /// A pod's netns, by (namespace, name).
    netns_of_pod: Memo<(String, String), &'a NetnsRecord>,
    /// Pod objects by (namespace, name).
    pod_by_name: Memo<(String, String), &'a Pod>,
    /// The non-hostNetwork pod holding an address.
    pod_by_ip: Memo<IpAddr, &'a Pod>,
}

/// Answers found so far (`None`: looked for, not there).
type Memo<K, V> = RefCell<HashMap<K, Option<V>>>;

/// The remembered answer to `key`, or `scan`'s, remembered.
fn remembered<K, V, Q>(memo: &Memo<K, V>, key: &Q, scan: impl FnOnce() -> Option<V>) -> Option<V>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
    V: Copy,
{
    if let Some(found) = memo.borrow().get(key) {
        return *found;
    }
    let found = scan();
    memo.borrow_mut().insert(key.to_owned(), found);
    found
}

impl<'a> Index<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Index<'a> {
        Index {
            snapshot,
            netns: Memo::default(),
            owner_of_ip: Memo::default(),
            host_of_node: Memo::default(),
            netns_of_pod: Memo::default(),
            pod_by_name: Memo::default(),
            pod_by_ip: Memo::default(),
        }
    }

    pub fn netns(&self, id: &str) -> Option<&'a NetnsRecord> {
        remembered(&self.netns, id, || self.snapshot.netns(id))
    }

    /// A node's host netns.
    pub fn host_netns(&self, node: &str) -> Option<&'a NetnsRecord> {
        remembered(&self.host_of_node, node, || self.snapshot.host_netns(node))
    }

    /// A pod's netns.
    pub fn pod_netns(&self, namespace: &str, name: &str) -> Option<&'a NetnsRecord> {
        let key = (namespace.to_string(), name.to_string());
        remembered(&self.netns_of_pod, &key, || {
            self.snapshot.pod_netns(namespace, name)
        })
    }

    /// A pod object by namespace and name (a manifest without a namespace is in "default").
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&'a Pod> {
        let key = (namespace.to_string(), name.to_string());
        remembered(&self.pod_by_name, &key, || {
            self.snapshot.kubernetes.pods.iter().find(|p| {
                namespace_of(&p.metadata) == namespace && p.metadata.name.as_deref() == Some(name)
            })
        })
    }

    /// The pod (not hostNetwork) holding `ip` in `status.podIPs` / `status.podIP`: the last
    /// Running one, as the API server's latest assignment; without one, the first finished pod
    /// that still carries it.
    pub fn pod_at(&self, ip: IpAddr) -> Option<&'a Pod> {
        remembered(&self.pod_by_ip, &ip, || {
            pod_with_address(&self.snapshot.kubernetes.pods, ip)
        })
    }

    /// The netns that holds `ip` on one of its devices (the first one, in snapshot order).
    pub fn owner_of(&self, ip: IpAddr) -> Option<&'a NetnsRecord> {
        remembered(&self.owner_of_ip, &ip, || {
            self.snapshot.netns.iter().find(|record| {
                record
                    .state
                    .addresses
                    .iter()
                    .any(|a| a.address == ip && !a.address.is_loopback() && a.dev != "lo")
            })
        })
    }

    /// Resolve an endpoint to (address, netns). The netns is `None` for addresses outside the
    /// snapshot (and for Service virtual IPs, which live nowhere).
    pub fn resolve(
        &self,
        spec: &EndpointSpec,
        raw: &str,
    ) -> Result<(IpAddr, Option<&'a NetnsRecord>), EndpointError> {
        let k8s = &self.snapshot.kubernetes;
        match spec {
            EndpointSpec::Ip(ip) => Ok((*ip, self.owner_of(*ip))),
            EndpointSpec::Pod { namespace, name } => {
                let pod = self.pod(namespace, name);
                let netns = self.pod_netns(namespace, name);
                let ip = pod
                    .and_then(|p| p.status.as_ref())
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse().ok())
                    .or_else(|| netns.and_then(primary_address));
                match (pod, netns, ip) {
                    (None, None, _) => {
                        Err(EndpointError::NotFound(format!("pod {namespace}/{name}")))
                    }
                    (_, _, None) => Err(EndpointError::NoAddress(
                        format!("pod {namespace}/{name}"),
                        "no status.podIP and no netns".into(),
                    )),
                    (_, ns, Some(ip)) => Ok((ip, ns.or_else(|| self.owner_of(ip)))),
                }
            }
            EndpointSpec::Node(name) => {
                let netns = self.host_netns(name);
                let node = k8s
                    .nodes
                    .iter()
                    .find(|n| n.metadata.name.as_deref() == Some(name));
                let ip = node
                    .and_then(internal_ip)
                    .or_else(|| netns.and_then(primary_address));
                match (node, netns, ip) {
                    (None, None, _) => Err(EndpointError::NotFound(format!("node {name}"))),
                    (_, _, None) => Err(EndpointError::NoAddress(
                        format!("node {name}"),
                        "no InternalIP".into(),
                    )),
                    (_, ns, Some(ip)) => Ok((ip, ns)),
                }
            }
            EndpointSpec::Service { namespace, name } => {
                let svc = k8s
                    .services
                    .iter()
                    .find(|s| {
                        s.metadata.namespace.as_deref() == Some(namespace)
                            && s.metadata.name.as_deref() == Some(name)
                    })
                    .ok_or_else(|| {
                        EndpointError::NotFound(format!("service {namespace}/{name}"))
                    })?;
                let cluster_ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
                if cluster_ip == Some("None") {
                    // Headless: DNS answers with the ready endpoints' addresses; the first one
                    // stands for the query (the walk goes to each).
                    let ip = crate::service::ready_addresses(k8s, namespace, name, None)
                        .first()
                        .copied()
                        .ok_or_else(|| {
                            EndpointError::NoAddress(
                                raw.to_string(),
                                "headless Service with no ready endpoint: its DNS name resolves to nothing".into(),
                            )
                        })?;
                    return Ok((ip, self.owner_of(ip)));
                }
                let ip = cluster_ip.and_then(|ip| ip.parse().ok()).ok_or_else(|| {
                    EndpointError::NoAddress(raw.to_string(), "no clusterIP".into())
                })?;
                Ok((ip, None))
            }
        }
    }
}

fn pod_with_address(pods: &[Pod], ip: IpAddr) -> Option<&Pod> {
    let canonical = ip.to_string();
    let holding = pods.iter().filter(|p| !is_host_network(p)).filter(|p| {
        p.status.as_ref().is_some_and(|status| {
            status
                .pod_ips
                .iter()
                .flatten()
                .map(|a| a.ip.as_str())
                .chain(status.pod_ip.as_deref())
                .any(|a| text_is_address(a, ip, &canonical))
        })
    });
    let running = |p: &&Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    holding
        .clone()
        .rfind(running)
        .or_else(|| holding.clone().next())
}

fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Whether an address as the API server wrote it (`status.podIP`) is `ip`, cheaply: lookups
/// compare it against every pod of the snapshot. An IPv4 address parses only from its one
/// canonical form, so a string comparison is exact; IPv6 has several spellings and is parsed.
pub(crate) fn text_is_address(text: &str, ip: IpAddr, canonical: &str) -> bool {
    match ip {
        IpAddr::V4(_) => text == canonical,
        IpAddr::V6(_) => text.parse::<IpAddr>().ok() == Some(ip),
    }
}

/// A node's `status.addresses` InternalIP, the address the cluster reaches it at.
pub(crate) fn internal_ip(node: &k8s_openapi::api::core::v1::Node) -> Option<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse().ok())
}

/// The first global address of a netns (eth0 for pods and nodes).
fn primary_address(record: &NetnsRecord) -> Option<IpAddr> {
    let state = &record.state;
    let preferred = state.addresses.iter().find(|a| a.dev == "eth0");
    preferred
        .or_else(|| {
            state
                .addresses
                .iter()
                .find(|a| a.dev != "lo" && !a.address.is_loopback())
        })
        .map(|a| a.address)
}

/// The node name a netns belongs to, for places and text.
pub fn node_of(record: &NetnsRecord) -> &str {
    &record.node
}

/// A short human name for a netns: `pod default/web-0 on node-1` or `node node-1`.
pub fn describe(record: &NetnsRecord) -> String {
    match &record.owner {
        NetnsOwner::Host => format!("node {}", record.node),
        NetnsOwner::Pod { namespace, name } => format!("pod {namespace}/{name} on {}", record.node),
        NetnsOwner::Infrastructure { role } => format!("{role} {}", record.id),
    }
}
