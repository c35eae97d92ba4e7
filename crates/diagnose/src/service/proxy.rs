//! kube-proxy's programmed state against the EndpointSlices, on the node that translates the
//! packet (the client's node for a ClusterIP, the receiving node for a NodePort):
//!
//! - iptables mode: the `nat` KUBE-SERVICES rule for the ClusterIP and port leads to a KUBE-SVC-
//!   (or KUBE-SVL- for internalTrafficPolicy=Local) chain whose KUBE-SEP- chains DNAT to the
//!   endpoints; a `filter` "has no endpoints" REJECT while endpoints exist is stale too;
//! - IPVS mode: the virtual service for the ClusterIP (and node address:nodePort) and its real
//!   servers with a positive weight (weight 0 = quiesced, no new connections).
//!
//! - nftables mode: what the walk's branches were translated to on that node (the netfilter
//!   evaluator runs kube-proxy's `service-ips` map and `numgen random mod N vmap` fan-out, so
//!   every endpoint the rules hold is a branch).
//!
//! Stale (programmed, not an endpoint) and missing (an endpoint, not programmed) endpoints are
//! listed.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ServicePort;
use model::snapshot::KubeProxyMode;
use model::{Evidence, Finding, FindingCode, Level, NetnsRecord, Owner, Place};
use netstack::iptables::{MatchKind, Ruleset, TableName, Target};
use netstack::ipvs::{IpvsProtocol, IpvsTable};
use netstack::netfilter::{Netfilter, RuleRef, RuleSource};

use super::{port_protocol, Access, Backend, Context, Frontend};

/// `ip:port` of an endpoint.
type Address = (IpAddr, u16);

/// The node whose kube-proxy translates the packet: the receiving node for NodePort access, the
/// client's node for a ClusterIP. LoadBalancer / externalIP traffic enters at a node the snapshot
/// cannot name, and a headless Service has nothing for kube-proxy to translate.
pub fn translating_node(frontend: &Frontend<'_>, src_node: &str) -> Option<String> {
    let cluster_ip = frontend.service.spec.as_ref()?.cluster_ip.as_deref()?;
    cluster_ip.parse::<IpAddr>().ok()?;
    match &frontend.access {
        Access::NodePort { node } => Some(node.clone()),
        Access::ClusterIp => Some(src_node.to_string()),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)] // one Service port's whole context
pub fn check(
    ctx: &Context<'_, '_>,
    frontend: &Frontend<'_>,
    port: &ServicePort,
    label: &str,
    used: &[&Backend<'_>],
    host: &NetnsRecord,
    netfilter: Option<&Netfilter>,
    findings: &mut Vec<Finding>,
) {
    let spec = frontend.service.spec.as_ref();
    let Some(cluster_ip) = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        return;
    };
    let node = host.node.clone();
    let local_only = spec.and_then(|s| s.internal_traffic_policy.as_deref()) == Some("Local")
        && frontend.access == Access::ClusterIp;
    // The rules of one family hold that family's endpoints (dual-stack Services have both).
    let expected: BTreeSet<Address> = used
        .iter()
        .filter(|b| b.address.is_ipv4() == cluster_ip.is_ipv4())
        .filter(|b| !local_only || b.node == Some(node.as_str()))
        .filter_map(|b| Some((b.address, b.port?)))
        .collect();
    let mode = ctx.index.snapshot.cluster.kube_proxy_mode;
    let place = Place {
        node: Some(node.clone()),
        netns: Some(host.id.clone()),
        device: None,
    };
    let hinted = used.iter().any(|b| b.hinted);
    let judge = |code, what: &str, programmed: Programmed| {
        // With topology hints kube-proxy may leave other zones' endpoints out: only what it
        // programmed beyond the slices (stale) can be judged.
        let expected = if hinted {
            let have: BTreeSet<Address> = programmed.endpoints.iter().map(|(a, _)| *a).collect();
            expected.intersection(&have).copied().collect()
        } else {
            expected.clone()
        };
        compare(
            label,
            &node,
            place.clone(),
            code,
            what,
            &expected,
            programmed,
        )
    };
    let protocol = port_protocol(port).to_ascii_lowercase();
    let service_port = u16::try_from(port.port).unwrap_or_default();

    if matches!(mode, None | Some(KubeProxyMode::Iptables)) {
        let rules = netfilter.and_then(|nf| {
            if cluster_ip.is_ipv4() {
                nf.ipv4.as_ref()
            } else {
                nf.ipv6.as_ref()
            }
        });
        if let Some(rules) = rules {
            let programmed = iptables_endpoints(rules, cluster_ip, service_port, &protocol);
            if let Some(programmed) = programmed {
                findings.extend(judge(
                    FindingCode::ServiceProxyOutOfSync,
                    "kube-proxy's iptables rules",
                    programmed,
                ));
            }
        }
    }
    if mode == Some(KubeProxyMode::Nftables) {
        if let Some(programmed) = walked_endpoints(ctx.ends, &host.id, ctx.dst_ip) {
            findings.extend(judge(
                FindingCode::ServiceProxyOutOfSync,
                "kube-proxy's nftables rules",
                programmed,
            ));
        }
    }
    if matches!(mode, None | Some(KubeProxyMode::Ipvs)) {
        let Some(text) = host.state.ipvs.as_deref() else {
            return;
        };
        let table = match IpvsTable::parse(text) {
            Ok(t) => t,
            Err(e) => {
                findings.push(Finding {
                    code: FindingCode::StateIncomplete,
                    level: Level::Warning,
                    place: place.clone(),
                    message: format!("the IPVS table of node {node} cannot be read ({e}); kube-proxy's IPVS state was not compared with the EndpointSlices"),
                    evidence: vec![Evidence::Text { text: e.to_string() }],
                    owner: None,
                    hint: Some("Collect /proc/net/ip_vs again.".into()),
                });
                return;
            }
        };
        let ipvs_protocol = match port_protocol(port) {
            "UDP" => IpvsProtocol::Udp,
            "SCTP" => IpvsProtocol::Sctp,
            _ => IpvsProtocol::Tcp,
        };
        let mut addresses = vec![(cluster_ip, service_port)];
        if let (Access::NodePort { .. }, Some(node_port)) = (&frontend.access, port.node_port) {
            addresses.push((ctx.dst_ip, u16::try_from(node_port).unwrap_or_default()));
        }
        for (address, vport) in addresses {
            let programmed = ipvs_endpoints(&table, &ipvs_protocol, address, vport);
            findings.extend(judge(
                FindingCode::ServiceIpvsOutOfSync,
                "the IPVS real servers",
                programmed,
            ));
        }
    }
}

/// The real servers IPVS schedules new connections of `address:port` to (weight 0 = quiesced
/// servers keep old connections only and are left out).
pub(super) fn ipvs_endpoints(
    table: &IpvsTable,
    protocol: &IpvsProtocol,
    address: IpAddr,
    port: u16,
) -> Programmed {
    match table.service(protocol, address, port) {
        Some(service) => Programmed {
            endpoints: service
                .real_servers
                .iter()
                .filter(|r| !r.is_quiesced())
                .map(|r| {
                    let text = format!(
                        "/proc/net/ip_vs line {}: {protocol} {address}:{port} -> {}:{} weight {}",
                        r.line, r.address, r.port, r.weight
                    );
                    ((r.address, r.port), Evidence::Text { text })
                })
                .collect(),
            absent: None,
        },
        None => Programmed {
            endpoints: Vec::new(),
            absent: Some(format!(
                "no IPVS virtual service {protocol} {address}:{port}"
            )),
        },
    }
}

/// The endpoints the forward branches were translated to in `netns`, with the translating
/// step as evidence; `None` when no branch got there (nothing can be said about its rules).
pub(super) fn walked_endpoints(
    ends: &[crate::PathEnd<'_>],
    netns: &str,
    frontend: IpAddr,
) -> Option<Programmed> {
    let mut reached = false;
    let mut endpoints: Vec<(Address, Evidence)> = Vec::new();
    for end in ends {
        let Some(hop) = end.path.hops.iter().find(|h| h.netns == netns) else {
            continue;
        };
        reached = true;
        let address = (end.packet.dst, end.packet.dport);
        if end.packet.dst == frontend || endpoints.iter().any(|(a, _)| *a == address) {
            continue;
        }
        let step = hop
            .steps
            .iter()
            .find(|s| s.contains("DNAT"))
            .cloned()
            .unwrap_or_else(|| format!("{} => {}", hop.packet_in, hop.packet_out));
        endpoints.push((
            address,
            Evidence::Text {
                text: format!("{netns}: {step}"),
            },
        ));
    }
    reached.then(|| Programmed {
        absent: endpoints
            .is_empty()
            .then(|| format!("the packet is translated to no endpoint on {netns}")),
        endpoints,
    })
}

/// What kube-proxy programmed for one Service port.
pub(super) struct Programmed {
    /// Endpoints with the evidence (rule or real server) that programs each.
    pub endpoints: Vec<(Address, Evidence)>,
    /// Why nothing is programmed at all, when nothing is (no chain, no virtual service).
    pub absent: Option<String>,
}

/// The difference between what kube-proxy programmed and the endpoints in use, as a finding.
pub(super) fn compare(
    label: &str,
    node: &str,
    place: Place,
    code: FindingCode,
    what: &str,
    expected: &BTreeSet<Address>,
    programmed: Programmed,
) -> Option<Finding> {
    let have: BTreeSet<Address> = programmed.endpoints.iter().map(|(a, _)| *a).collect();
    let stale: Vec<&Address> = have.difference(expected).collect();
    let missing: Vec<&Address> = expected.difference(&have).collect();
    if stale.is_empty() && missing.is_empty() {
        return None;
    }
    let list = |a: &[&Address]| {
        a.iter()
            .map(|(ip, port)| format!("{ip}:{port}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !stale.is_empty() {
        parts.push(format!(
            "stale (not an endpoint any more, still sent traffic): {}",
            list(&stale)
        ));
    }
    if !missing.is_empty() {
        parts.push(format!(
            "missing (an endpoint, never sent traffic): {}",
            list(&missing)
        ));
    }
    if let Some(absent) = &programmed.absent {
        parts.push(absent.clone());
    }
    let mut evidence: Vec<Evidence> = programmed
        .endpoints
        .into_iter()
        .filter(|(a, _)| stale.contains(&a))
        .map(|(_, e)| e)
        .collect();
    evidence.push(Evidence::Text {
        text: format!(
            "EndpointSlices: {}",
            if expected.is_empty() {
                "no endpoint in use".to_string()
            } else {
                list(&expected.iter().collect::<Vec<_>>())
            }
        ),
    });
    Some(Finding {
        code,
        level: Level::Error,
        place,
        message: format!(
            "{what} on {node} for Service {label} disagree with its EndpointSlices: {}",
            parts.join("; ")
        ),
        evidence,
        owner: Some(Owner::KubeProxy),
        hint: Some(format!(
            "kube-proxy on {node} has not synced the current EndpointSlices: check its logs (kubectl -n kube-system logs on that node's kube-proxy pod) and restart it."
        )),
    })
}

fn rule_ref(
    rules: &Ruleset,
    table: TableName,
    chain: &str,
    position: usize,
    rule: &netstack::iptables::Rule,
) -> RuleRef {
    RuleRef {
        source: if rules.ipv6 {
            RuleSource::Ip6tables
        } else {
            RuleSource::Iptables
        },
        table: table.as_str().into(),
        chain: chain.into(),
        position,
        line: rule.line,
        handle: None,
        text: rules.rule_text(rule).to_string(),
    }
}

/// Does the rule address `ip`:`port`/`protocol` (the KUBE-SERVICES portal shape)?
fn addresses(rule: &netstack::iptables::Rule, ip: IpAddr, port: u16, protocol: u8) -> bool {
    let mut dst = false;
    let mut dport = false;
    let mut proto = true;
    for m in rule.matches.iter().filter(|m| !m.invert) {
        match &m.kind {
            MatchKind::Destination(net) => {
                dst = net.contains(&ip) && net.prefix_len() == net.max_prefix_len()
            }
            MatchKind::DestinationPort(range) => dport = range.contains(port),
            MatchKind::Protocol(p) => proto = *p == 0 || *p == protocol,
            _ => {}
        }
    }
    dst && dport && proto
}

/// The endpoints kube-proxy's iptables rules DNAT the ClusterIP:port to; `None` when the
/// ruleset holds no kube-proxy rules at all (another proxy mode, or no kube-proxy).
pub(super) fn iptables_endpoints(
    rules: &Ruleset,
    cluster_ip: IpAddr,
    port: u16,
    protocol: &str,
) -> Option<Programmed> {
    let protocol_number = match protocol {
        "udp" => 17,
        "sctp" => 132,
        _ => 6,
    };
    let nat = rules.table(TableName::Nat)?;
    let services = nat.chain("KUBE-SERVICES")?;
    let portal = services.rules().iter().find_map(|r| match &r.target {
        Target::Chain { name, .. } if addresses(r, cluster_ip, port, protocol_number) => {
            Some(&**name)
        }
        _ => None,
    });
    let mut endpoints = Vec::new();
    if let Some(chain) = portal {
        collect_dnat(rules, chain, 0, &mut endpoints);
    }
    // kube-proxy REJECTs a Service port it believes has no endpoints in filter KUBE-SERVICES.
    let reject = rules
        .table(TableName::Filter)
        .and_then(|t| t.chain("KUBE-SERVICES"))
        .and_then(|c| {
            c.rules().iter().enumerate().find(|(_, r)| {
                matches!(r.target, Target::Reject { .. })
                    && addresses(r, cluster_ip, port, protocol_number)
            })
        });
    let absent = match (portal, reject) {
        (_, Some((position, rule))) => Some(format!(
            "kube-proxy rejects it as having no endpoints (filter/KUBE-SERVICES rule #{}: {})",
            position + 1,
            rules.rule_text(rule)
        )),
        (None, None) => Some(format!("no KUBE-SERVICES rule for {cluster_ip}:{port}")),
        (Some(_), None) => None,
    };
    Some(Programmed { endpoints, absent })
}

/// DNAT targets reachable from `chain` through KUBE-SVC/SVL/SEP jumps.
fn collect_dnat(rules: &Ruleset, chain: &str, depth: usize, out: &mut Vec<(Address, Evidence)>) {
    let Some(table) = rules.table(TableName::Nat) else {
        return;
    };
    let Some(c) = table.chain(chain) else { return };
    if depth > 4 {
        return;
    }
    for (i, rule) in c.rules().iter().enumerate() {
        match &rule.target {
            Target::Chain { name, .. } if &**name != "KUBE-MARK-MASQ" => {
                collect_dnat(rules, name, depth + 1, out)
            }
            Target::Dnat {
                addr: Some(addr),
                port: Some(range),
            } => out.push((
                (*addr, range.lo),
                Evidence::Rule {
                    rule: rule_ref(rules, TableName::Nat, chain, i + 1, rule),
                },
            )),
            _ => {}
        }
    }
}
