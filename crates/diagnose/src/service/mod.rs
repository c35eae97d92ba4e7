//! Kubernetes intent for Service traffic: which Service port a destination addresses (ClusterIP,
//! NodePort on a node address, LoadBalancer ingress IP, externalIP, or a headless Service whose
//! DNS name resolves to pod IPs), which endpoints the EndpointSlices offer (ready, serving,
//! terminating; publishNotReadyAddresses), and the mistakes that leave a Service without a working
//! backend: a port the Service lacks, a named targetPort no pod declares, a targetPort nothing
//! listens on, externalTrafficPolicy / internalTrafficPolicy Local with no endpoint on the node,
//! and kube-proxy's rules (iptables KUBE-SVC/KUBE-SEP chains, IPVS real servers) out of sync with
//! the EndpointSlices (`proxy`).
//!
//! What kube-proxy really does with the packet is the walk's business (it evaluates kube-proxy's
//! rules); these checks say why, in Kubernetes terms. A check whose cause the walk already met as
//! a symptom (kube-proxy's REJECT of a port without endpoints, its DROP of one without local
//! endpoints, a closed port on the backend) rewrites that finding in place instead of adding a
//! second one, so the path keeps pointing at one finding that names the cause; the symptom is
//! recognised by the finding's code, owner, place and packet ([`Symptom`]), never its text.
//! Reads the snapshot and the walk's results only.

mod proxy;
pub use proxy::translating_node;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use model::{Evidence, Finding, FindingCode, Level, NetnsOwner, Owner, Place};
use netstack::netfilter::Netfilter;
use netstack::packet::Protocol;

use crate::endpoint::{EndpointSpec, Index};
use crate::policy::{namespace_of, pod_key};
use crate::Query;

/// How the destination addresses the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    ClusterIp,
    /// `node/NAME` (or a node address) on the port's nodePort.
    NodePort {
        node: String,
    },
    LoadBalancerIp,
    ExternalIp,
    /// `clusterIP: None`: cluster DNS answers with the endpoints' addresses.
    Headless,
}

/// The Service (and port) a destination addresses.
pub struct Frontend<'a> {
    pub service: &'a Service,
    pub namespace: &'a str,
    pub name: &'a str,
    /// `None` when the Service has no port for the destination port.
    pub port: Option<&'a ServicePort>,
    pub access: Access,
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        _ => "TCP",
    }
}

fn port_protocol(port: &ServicePort) -> &str {
    port.protocol.as_deref().unwrap_or("TCP")
}

/// `default/web:http` (kube-proxy's "service port name").
fn port_label(frontend: &Frontend<'_>) -> String {
    let port = frontend
        .port
        .and_then(|p| p.name.as_deref())
        .filter(|n| !n.is_empty())
        .map(|n| format!(":{n}"))
        .unwrap_or_default();
    format!("{}/{}{port}", frontend.namespace, frontend.name)
}

/// Which Service port the destination addresses, if any.
pub fn frontend<'a>(
    index: &Index<'a>,
    dst_spec: &EndpointSpec,
    dst_ip: IpAddr,
    query: &Query,
) -> Option<Frontend<'a>> {
    let k8s = &index.snapshot.kubernetes;
    let proto = protocol_name(query.protocol);
    let dport = i32::from(query.dport);
    let by_port = |svc: &'a Service| -> Option<&'a ServicePort> {
        svc.spec
            .as_ref()?
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == dport && port_protocol(p) == proto)
    };
    let make = |service: &'a Service, port, access| {
        Some(Frontend {
            service,
            namespace: namespace_of(&service.metadata),
            name: service.metadata.name.as_deref().unwrap_or_default(),
            port,
            access,
        })
    };
    if let EndpointSpec::Service { namespace, name } = dst_spec {
        let service = k8s.services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })?;
        let access = if is_headless(service) {
            Access::Headless
        } else {
            Access::ClusterIp
        };
        return make(service, by_port(service), access);
    }
    let ip = dst_ip.to_string();
    for service in &k8s.services {
        let Some(spec) = &service.spec else { continue };
        let cluster_ips = spec.cluster_ips.iter().flatten().chain(&spec.cluster_ip);
        let access = if cluster_ips.into_iter().any(|c| *c == ip) {
            Access::ClusterIp
        } else if spec.external_ips.iter().flatten().any(|e| *e == ip) {
            Access::ExternalIp
        } else if service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|ing| ing.iter().any(|i| i.ip.as_deref() == Some(&ip)))
        {
            Access::LoadBalancerIp
        } else {
            continue;
        };
        return make(service, by_port(service), access);
    }
    // A node address on a nodePort.
    let node = index
        .owner_of(dst_ip)
        .filter(|r| r.owner == NetnsOwner::Host)
        .map(|r| r.node.clone())?;
    k8s.services.iter().find_map(|service| {
        let spec = service.spec.as_ref()?;
        if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            return None;
        }
        let port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.node_port == Some(dport) && port_protocol(p) == proto)?;
        make(service, Some(port), Access::NodePort { node: node.clone() })
    })
}

fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// One endpoint of the Service port, as the EndpointSlices say.
#[derive(Debug, Clone)]
pub struct Backend<'a> {
    pub address: IpAddr,
    /// The port the EndpointSlice publishes for the Service port (what kube-proxy DNATs to).
    pub port: Option<u16>,
    pub node: Option<&'a str>,
    pub pod: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Topology hints (`hints.forZones`/`forNodes`): kube-proxy may program only the endpoints
    /// hinted for its node's zone.
    pub hinted: bool,
}

/// The endpoints of a Service port, from every EndpointSlice labelled with the Service's name.
pub fn backends<'a>(
    k8s: &'a model::snapshot::KubeObjects,
    namespace: &str,
    name: &str,
    port: Option<&ServicePort>,
) -> Vec<Backend<'a>> {
    // EndpointSlice ports carry the Service port's name ("" when unnamed).
    let port_name = port.map(|p| p.name.clone().unwrap_or_default());
    let mut out = Vec::new();
    for slice in k8s
        .endpoint_slices
        .iter()
        .filter(|s| slice_of(s, namespace, name))
    {
        let slice_port = port_name.as_ref().and_then(|wanted| {
            slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == *wanted)
        });
        let lists_ports = slice.ports.as_ref().is_some_and(|p| !p.is_empty());
        if port_name.is_some() && lists_ports && slice_port.is_none() {
            continue;
        }
        let port = slice_port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        for endpoint in &slice.endpoints {
            // kube-proxy uses the first address of an endpoint.
            let Some(address) = endpoint.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let (ready, serving, terminating) = conditions(endpoint);
            out.push(Backend {
                address,
                port,
                node: endpoint.node_name.as_deref(),
                pod: endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        Some(format!(
                            "{}/{}",
                            r.namespace.as_deref().unwrap_or(namespace),
                            r.name.as_deref()?
                        ))
                    }),
                ready,
                serving,
                terminating,
                hinted: endpoint.hints.as_ref().is_some_and(|h| {
                    h.for_zones.as_ref().is_some_and(|z| !z.is_empty())
                        || h.for_nodes.as_ref().is_some_and(|n| !n.is_empty())
                }),
            });
        }
    }
    out
}

/// (ready, serving, terminating) with the API's defaults for absent fields: ready unknown means
/// ready, serving defaults to ready, terminating to false.
fn conditions(endpoint: &Endpoint) -> (bool, bool, bool) {
    let c = endpoint.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    (ready, serving, terminating)
}

fn slice_of(slice: &EndpointSlice, namespace: &str, name: &str) -> bool {
    namespace_of(&slice.metadata) == namespace
        && slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(String::as_str)
            == Some(name)
}

/// The endpoints kube-proxy sends new connections to: the ready ones, or, when none is ready,
/// the terminating ones that still serve (KEP-1669 fallback).
pub fn in_use<'b, 'a>(backends: &'b [Backend<'a>]) -> Vec<&'b Backend<'a>> {
    let ready: Vec<&Backend<'a>> = backends.iter().filter(|b| b.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    backends
        .iter()
        .filter(|b| b.serving && b.terminating)
        .collect()
}

/// The addresses of ready endpoints (of one port, or of any), sorted: what cluster DNS returns
/// for a headless Service (with publishNotReadyAddresses the EndpointSlice controller already
/// marks every endpoint ready).
pub fn ready_addresses(
    k8s: &model::snapshot::KubeObjects,
    namespace: &str,
    name: &str,
    port: Option<&ServicePort>,
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = backends(k8s, namespace, name, port)
        .iter()
        .filter(|b| b.ready)
        .map(|b| b.address)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// For a headless Service: the pod addresses its DNS name resolves to (of every port: the
/// client picks the port itself).
pub fn headless_addresses(
    frontend: &Frontend<'_>,
    k8s: &model::snapshot::KubeObjects,
) -> Vec<IpAddr> {
    ready_addresses(k8s, frontend.namespace, frontend.name, None)
}

/// Everything the checks need besides the frontend.
pub struct Context<'a, 'p> {
    pub index: &'a Index<'a>,
    pub query: &'a Query,
    pub src_ip: IpAddr,
    /// The destination as resolved (a node address for NodePort access).
    pub dst_ip: IpAddr,
    /// Pods by address (the policy index doubles as the cluster's pod directory).
    pub pods: &'p crate::policy::PolicyIndex<'a>,
    /// The node the client's netns is on.
    pub src_node: &'a str,
    pub ends: &'p [crate::PathEnd<'p>],
}

/// The Service checks; findings explained by a symptom the walk met are merged into it.
/// `netfilter` is the parsed ruleset of the [`translating_node`]'s host netns (the walk's).
pub fn check(
    ctx: &Context<'_, '_>,
    frontend: &Frontend<'_>,
    netfilter: Option<&Netfilter>,
    findings: &mut Vec<Finding>,
) {
    let k8s = &ctx.index.snapshot.kubernetes;
    let service_owner = Owner::Service {
        namespace: frontend.namespace.into(),
        name: frontend.name.into(),
    };
    let object = |detail: String| Evidence::Object {
        kind: "Service".into(),
        namespace: Some(frontend.namespace.into()),
        name: frontend.name.into(),
        detail: Some(detail),
    };
    let mut report = |finding: Finding, symptom: Symptom<'_>| {
        merge_or_push(ctx, findings, finding, symptom);
    };
    if frontend.access == Access::Headless {
        let addresses: Vec<String> = headless_addresses(frontend, k8s)
            .iter()
            .map(ToString::to_string)
            .collect();
        report(
            Finding {
                code: FindingCode::ServiceHeadless,
                level: Level::Info,
                place: Place::default(),
                message: format!(
                    "Service {}/{} is headless: its DNS name resolves to the pod addresses {}, so each is diagnosed directly (no kube-proxy, no NAT)",
                    frontend.namespace,
                    frontend.name,
                    addresses.join(", ")
                ),
                evidence: vec![object("clusterIP: None".into())],
                owner: None,
                hint: Some("Clients get every address from DNS and pick one themselves; diagnose one pod with -d NAMESPACE/POD.".into()),
            },
            Symptom::None,
        );
        // The client connects to the pods directly, on the port it chose: the Service's ports
        // only name them (DNS SRV), and kube-proxy has nothing to do.
        return;
    }

    let Some(port) = frontend.port else {
        if ctx.query.protocol != Protocol::Icmp {
            let have: Vec<String> = frontend
                .service
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .map(|p| format!("{}/{}", p.port, port_protocol(p)))
                .collect();
            report(
                Finding {
                    code: FindingCode::ServicePortMissing,
                    level: Level::Error,
                    place: Place::default(),
                    message: format!(
                        "Service {}/{} has no port {}/{}; it exposes {}",
                        frontend.namespace,
                        frontend.name,
                        ctx.query.dport,
                        protocol_name(ctx.query.protocol),
                        if have.is_empty() {
                            "none".into()
                        } else {
                            have.join(", ")
                        }
                    ),
                    evidence: vec![object(format!("ports: {}", have.join(", ")))],
                    owner: Some(service_owner),
                    hint: Some(
                        "Use one of the Service's ports, or add the port to the Service.".into(),
                    ),
                },
                Symptom::None,
            );
        }
        return;
    };
    let label = port_label(frontend);
    let spec = frontend.service.spec.as_ref();
    let all = backends(k8s, frontend.namespace, frontend.name, Some(port));
    let used = in_use(&all);

    // A named targetPort no selected pod declares: the EndpointSlice controller leaves those
    // pods out, which is why there are no endpoints; say that instead of "no endpoints".
    let named_missing = named_port_check(ctx, frontend, port);
    let named_port_explains_emptiness = named_missing
        .as_ref()
        .is_some_and(|(all_lack, _)| *all_lack);
    if let Some((all_lack, finding)) = named_missing {
        let symptom = if all_lack {
            Symptom::KubeProxy(FindingCode::NetfilterReject)
        } else {
            Symptom::None
        };
        report(finding, symptom);
    }

    let ready = all.iter().filter(|b| b.ready).count();
    let terminating_serving = all.iter().filter(|b| b.serving && b.terminating).count();
    if ready == 0 && !named_port_explains_emptiness {
        let has_selector = spec
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        let not_ready: Vec<String> = all
            .iter()
            .filter(|b| !b.ready)
            .map(|b| {
                format!(
                    "{}{}{}",
                    b.address,
                    b.pod
                        .as_deref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default(),
                    if b.terminating {
                        " terminating"
                    } else {
                        " not ready"
                    }
                )
            })
            .collect();
        let (level, message, hint) = if terminating_serving > 0 {
            (
                Level::Warning,
                format!(
                    "Service {label} has no ready endpoint; kube-proxy falls back to {terminating_serving} terminating endpoint(s) that still serve, which are shutting down: {}",
                    not_ready.join(", ")
                ),
                "New pods must become Ready before the old ones finish terminating: check the rollout (kubectl rollout status) and the readiness probe.",
            )
        } else if all.is_empty() {
            (
                Level::Error,
                format!(
                    "Service {label} has no endpoints{}",
                    if has_selector {
                        ": no ready pod matches its selector"
                    } else {
                        " and no selector"
                    }
                ),
                "Check the selector against the pods' labels and why the pods are not Ready (kubectl describe pod).",
            )
        } else {
            (
                Level::Error,
                format!(
                    "Service {label} has {} endpoints, none ready: {}",
                    all.len(),
                    not_ready.join(", ")
                ),
                "Check why the pods are not Ready (kubectl describe pod: readiness probe, crash loop).",
            )
        };
        report(
            Finding {
                code: FindingCode::ServiceNoEndpoints,
                level,
                place: Place::default(),
                message,
                evidence: vec![object(format!("{ready} ready of {} endpoints", all.len()))],
                owner: Some(service_owner.clone()),
                hint: Some(hint.into()),
            },
            Symptom::KubeProxy(FindingCode::NetfilterReject),
        );
    }

    if spec.and_then(|s| s.publish_not_ready_addresses) == Some(true) {
        let unready: Vec<String> = all
            .iter()
            .filter_map(|b| b.pod.clone())
            .filter(|p| pod_by_key(ctx.index, p).is_some_and(pod_is_unready))
            .collect();
        if !unready.is_empty() {
            report(
                Finding {
                    code: FindingCode::ServiceNoEndpoints,
                    level: Level::Info,
                    place: Place::default(),
                    message: format!("Service {label} has publishNotReadyAddresses: its endpoints include pods that are not Ready ({}), and traffic reaches them", unready.join(", ")),
                    evidence: vec![object("publishNotReadyAddresses: true".into())],
                    owner: Some(service_owner.clone()),
                    hint: Some("Intended for StatefulSet peer discovery; for client traffic, drop publishNotReadyAddresses.".into()),
                },
                Symptom::None,
            );
        }
    }

    traffic_policy_check(ctx, frontend, &label, &used, &mut report);
    wrong_target_port_check(ctx, frontend, port, &label, &used, &mut report);
    let host = proxy::translating_node(frontend, ctx.src_node)
        .and_then(|node| ctx.index.host_netns(&node));
    if let Some(host) = host {
        proxy::check(
            ctx, frontend, port, &label, &used, host, netfilter, findings,
        );
    }
}

/// ETP=Local (external access from outside the cluster's pods and the node itself) and
/// ITP=Local (ClusterIP access): only endpoints on the node that receives the packet count.
fn traffic_policy_check(
    ctx: &Context<'_, '_>,
    frontend: &Frontend<'_>,
    label: &str,
    used: &[&Backend<'_>],
    report: &mut dyn FnMut(Finding, Symptom<'_>),
) {
    let Some(spec) = frontend.service.spec.as_ref() else {
        return;
    };
    let (field, node) = match &frontend.access {
        Access::NodePort { node } if spec.external_traffic_policy.as_deref() == Some("Local") => {
            // kube-proxy sends pod traffic and the node's own traffic cluster-wide.
            let from_pod = ctx.pods.pod_at(ctx.src_ip).is_some();
            let from_node_itself = ctx
                .index
                .owner_of(ctx.src_ip)
                .is_some_and(|r| r.owner == NetnsOwner::Host && r.node == *node);
            if from_pod || from_node_itself {
                return;
            }
            ("externalTrafficPolicy", node.clone())
        }
        Access::ClusterIp if spec.internal_traffic_policy.as_deref() == Some("Local") => {
            ("internalTrafficPolicy", ctx.src_node.to_string())
        }
        _ => return,
    };
    if used.iter().any(|b| b.node == Some(node.as_str())) || used.is_empty() {
        return;
    }
    let elsewhere: Vec<String> = used
        .iter()
        .map(|b| format!("{} on {}", b.address, b.node.unwrap_or("an unknown node")))
        .collect();
    let place = ctx
        .index
        .host_netns(&node)
        .map(|r| Place {
            node: Some(node.clone()),
            netns: Some(r.id.clone()),
            device: None,
        })
        .unwrap_or(Place {
            node: Some(node.clone()),
            ..Place::default()
        });
    report(
        Finding {
            code: FindingCode::ServiceNoLocalEndpoint,
            level: Level::Error,
            place,
            message: format!(
                "Service {label} has {field}=Local and no ready endpoint on {node}, which receives this traffic, so kube-proxy drops it; its endpoints are {}",
                elsewhere.join(", ")
            ),
            evidence: vec![Evidence::Object {
                kind: "Service".into(),
                namespace: Some(frontend.namespace.into()),
                name: frontend.name.into(),
                detail: Some(format!("{field}: Local")),
            }],
            owner: Some(Owner::Service {
                namespace: frontend.namespace.into(),
                name: frontend.name.into(),
            }),
            hint: Some(if field == "externalTrafficPolicy" {
                format!(
                    "Send the traffic to a node that runs an endpoint (the load balancer's health check on healthCheckNodePort does this), run an endpoint on {node} (a DaemonSet), or set externalTrafficPolicy: Cluster (the client address is then masqueraded)."
                )
            } else {
                format!(
                    "Run an endpoint on {node} (a DaemonSet), or set internalTrafficPolicy: Cluster."
                )
            }),
        },
        Symptom::KubeProxy(FindingCode::NetfilterDrop),
    );
}

fn pod_by_key<'a>(index: &Index<'a>, key: &str) -> Option<&'a Pod> {
    let (namespace, name) = key.split_once('/')?;
    index.pod(namespace, name)
}

/// The pod reports `Ready=False` (a pod without conditions is not judged).
fn pod_is_unready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status != "True")
}

/// Pods the Service's selector picks (running, not hostNetwork-agnostic: kube-proxy does not care).
fn selected_pods<'a>(
    k8s: &'a model::snapshot::KubeObjects,
    frontend: &Frontend<'_>,
) -> Vec<&'a Pod> {
    let Some(selector) = frontend
        .service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    k8s.pods
        .iter()
        .filter(|p| namespace_of(&p.metadata) == frontend.namespace)
        .filter(|p| {
            let labels: BTreeMap<String, String> = p.metadata.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect()
}

/// A container port: (name, number).
type DeclaredPort = (Option<String>, i32);

/// Container ports a pod declares for `protocol`.
fn declared_ports(pod: &Pod, protocol: &str) -> Vec<DeclaredPort> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == protocol)
        .map(|p| (p.name.clone(), p.container_port))
        .collect()
}

fn describe_ports(ports: &[DeclaredPort]) -> String {
    if ports.is_empty() {
        return "no ports".into();
    }
    ports
        .iter()
        .map(|(n, p)| match n {
            Some(n) => format!("{n}={p}"),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A named targetPort: which selected pods do not declare it. Returns (every pod lacks it,
/// finding).
fn named_port_check(
    ctx: &Context<'_, '_>,
    frontend: &Frontend<'_>,
    port: &ServicePort,
) -> Option<(bool, Finding)> {
    let Some(IntOrString::String(name)) = &port.target_port else {
        return None;
    };
    let k8s = &ctx.index.snapshot.kubernetes;
    let protocol = port_protocol(port);
    let pods = selected_pods(k8s, frontend);
    let lacking: Vec<(&Pod, Vec<DeclaredPort>)> = pods
        .iter()
        .map(|p| (*p, declared_ports(p, protocol)))
        .filter(|(_, ports)| !ports.iter().any(|(n, _)| n.as_deref() == Some(name)))
        .collect();
    if lacking.is_empty() {
        return None;
    }
    let all_lack = lacking.len() == pods.len();
    let listed: Vec<String> = lacking
        .iter()
        .map(|(p, ports)| format!("{} declares {}", pod_key(p), describe_ports(ports)))
        .collect();
    let label = port_label(frontend);
    Some((
        all_lack,
        Finding {
            code: FindingCode::ServiceNamedPortMissing,
            level: if all_lack {
                Level::Error
            } else {
                Level::Warning
            },
            place: Place::default(),
            message: format!(
                "Service {label} targets the named port {name}/{protocol}, which {} of the {} selected pods declare{}, so the EndpointSlice controller leaves them out{}: {}",
                if all_lack {
                    "none".to_string()
                } else {
                    format!("{}", lacking.len())
                },
                pods.len(),
                if all_lack { "s" } else { " not" },
                if all_lack {
                    " and the Service has no endpoints"
                } else {
                    ""
                },
                listed.join("; ")
            ),
            evidence: vec![Evidence::Object {
                kind: "Service".into(),
                namespace: Some(frontend.namespace.into()),
                name: frontend.name.into(),
                detail: Some(format!("port {} targetPort: {name}", port.port)),
            }],
            owner: Some(Owner::Service {
                namespace: frontend.namespace.into(),
                name: frontend.name.into(),
            }),
            hint: Some(format!(
                "Name the container port {name} in the pod template (ports: [{{name: {name}, containerPort: N}}]), or set the Service's targetPort to the port the pods use."
            )),
        },
    ))
}

/// The backends' port against what their pods declare and listen on.
fn wrong_target_port_check(
    ctx: &Context<'_, '_>,
    frontend: &Frontend<'_>,
    port: &ServicePort,
    label: &str,
    used: &[&Backend<'_>],
    report: &mut dyn FnMut(Finding, Symptom<'_>),
) {
    let protocol = port_protocol(port);
    let proto_number = match protocol {
        "UDP" => 17,
        "SCTP" => 132,
        _ => 6,
    };
    let spec_target = match &port.target_port {
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(_)) => None,
        None => Some(port.port),
    };
    for backend in used {
        let Some(target) = backend.port.map(i32::from).or(spec_target) else {
            continue;
        };
        let pod = backend
            .pod
            .as_deref()
            .and_then(|key| pod_by_key(ctx.index, key))
            .or_else(|| ctx.pods.pod_at(backend.address));
        let Some(pod) = pod else { continue };
        let key = pod_key(pod);
        let declared = declared_ports(pod, protocol);
        let netns = ctx.index.pod_netns(
            namespace_of(&pod.metadata),
            pod.metadata.name.as_deref().unwrap_or_default(),
        );
        let sockets = netns.and_then(|r| r.state.sockets.as_ref());
        let listening: Vec<u16> = sockets
            .iter()
            .flat_map(|s| s.iter())
            .filter(|s| s.protocol == proto_number)
            .map(|s| s.port)
            .collect();
        let declares_target = declared.iter().any(|(_, n)| *n == target);
        let (level, evidence_text) = match sockets {
            // The pod listens: the target is right whatever is declared.
            Some(_) if listening.iter().any(|p| i32::from(*p) == target) => continue,
            // Nothing listens at all: a server problem, the walk says "no listener".
            Some(_) if listening.is_empty() => continue,
            Some(_) => (
                Level::Error,
                format!(
                    "{key} listens on {protocol} {}",
                    listening
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            None if declared.is_empty() || declares_target => continue,
            None => (
                Level::Warning,
                format!("{key} declares {}", describe_ports(&declared)),
            ),
        };
        // The Service is at fault, not the pod: the finding sits where kube-proxy translates to
        // the wrong port (the pod's netns when that node is unknown).
        let translating = proxy::translating_node(frontend, ctx.src_node)
            .and_then(|node| ctx.index.host_netns(&node));
        let place = translating
            .or(netns)
            .map(|r| Place {
                node: Some(r.node.clone()),
                netns: Some(r.id.clone()),
                device: None,
            })
            .unwrap_or_default();
        report(
            Finding {
                code: FindingCode::ServiceWrongTargetPort,
                level,
                place,
                message: format!(
                    "Service {label} sends port {} to {target}/{protocol} on its endpoints, but {evidence_text}",
                    port.port
                ),
                evidence: vec![
                    Evidence::Object {
                        kind: "Service".into(),
                        namespace: Some(frontend.namespace.into()),
                        name: frontend.name.into(),
                        detail: Some(format!("port {} targetPort {}", port.port, match &port.target_port {
                            Some(IntOrString::Int(n)) => n.to_string(),
                            Some(IntOrString::String(s)) => s.clone(),
                            None => format!("{} (defaults to port)", port.port),
                        })),
                    },
                    Evidence::Text { text: format!("{evidence_text}; declared container ports: {}", describe_ports(&declared)) },
                ],
                owner: Some(Owner::Service { namespace: frontend.namespace.into(), name: frontend.name.into() }),
                hint: Some("Set the Service's targetPort to the port the pods listen on (better: to the container port's name).".into()),
            },
            Symptom::NoListener {
                netns: netns.map(|r| r.id.as_str()),
                port: u16::try_from(target).unwrap_or_default(),
            },
        );
    }
}

/// The finding the walk records when it meets a cause of this kind, in its own (kernel) terms:
/// what a Service finding is matched with, by code, owner, place and packet, never by text.
pub enum Symptom<'s> {
    None,
    /// kube-proxy's own verdict on a Service port it has no (local) endpoint for: REJECT
    /// (`NetfilterReject`) for no endpoints at all, DROP (`NetfilterDrop`) for none on the node
    /// under a `Local` traffic policy. The rule's owner is kube-proxy (its chains and tables).
    KubeProxy(FindingCode),
    /// `socket.no_listener` in a netns, for a packet to `port`.
    NoListener {
        netns: Option<&'s str>,
        port: u16,
    },
}

/// Merge `finding` into the walk finding that is its symptom (at the same index, so paths still
/// point at it; with the symptom's evidence, and its place when the finding has none), or add
/// it. The walk cannot do this when it records the symptom: the Service finding is about the
/// Kubernetes objects and stands whether or not a path meets it (the walk may stop before the
/// node that translates), and which path it explains is known only once the walk is over. So
/// this pass joins two structured records: a finding that stops a forward path, and the symptom
/// the Service finding predicts.
fn merge_or_push(
    ctx: &Context<'_, '_>,
    findings: &mut Vec<Finding>,
    finding: Finding,
    symptom: Symptom<'_>,
) {
    // The walk may have met the same cause in the kernel's terms (an IPVS service without real
    // servers is "no endpoints" too).
    let is_symptom = |i: usize, end: &crate::PathEnd<'_>| {
        let Some(f) = findings.get(i) else {
            return false;
        };
        match &symptom {
            _ if f.code == finding.code => true,
            Symptom::None => false,
            Symptom::KubeProxy(code) => f.owner == Some(Owner::KubeProxy) && f.code == *code,
            Symptom::NoListener { netns, port } => {
                f.code == FindingCode::SocketNoListener
                    && f.place.netns.as_deref() == *netns
                    && end.packet.dport == *port
            }
        }
    };
    let target = ctx
        .ends
        .iter()
        .find_map(|e| e.path.stopped_by.filter(|&i| is_symptom(i, e)));
    match target {
        Some(i) => {
            let symptom = std::mem::replace(&mut findings[i], finding);
            let merged = &mut findings[i];
            merged.level = merged.level.max(symptom.level);
            merged.message = format!("{}. On the path: {}", merged.message, symptom.message);
            // The symptom's place is as precise or more (it names the device) when it is in the
            // same netns; a finding placed elsewhere keeps its own.
            if merged.place == Place::default() || merged.place.netns == symptom.place.netns {
                merged.place = symptom.place;
            }
            merged.evidence.extend(symptom.evidence);
        }
        None => {
            if !findings
                .iter()
                .any(|f| f.code == finding.code && f.message == finding.message)
            {
                findings.push(finding);
            }
        }
    }
}
