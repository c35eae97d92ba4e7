//! kube-proxy (iptables mode) as a pure function: Services + EndpointSlices → `iptables-restore`
//! text with the chains, names, comments and probabilities kube-proxy writes.
//!
//! The lab applies the output in every node netns; the parse benchmark uses it, fed by
//! [`synthetic_services`], as its generator. Nothing here touches the host.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::sha256::kube_proxy_hash;

/// What one node's kube-proxy sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeProxyInput {
    /// The node the rules are for (decides which endpoints are local for ETP=Local).
    pub node_name: String,
    /// `--cluster-cidr`: traffic from outside it to a ClusterIP is masqueraded.
    pub cluster_cidr: Option<Ipv4Net>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// One ready endpoint of one service port.
struct Backend {
    ip: String,
    port: i32,
    local: bool,
}

/// Rules of one table, chains declared in first-use order as kube-proxy does.
#[derive(Default)]
struct Table {
    chains: Vec<String>,
    rules: String,
}

impl Table {
    fn chain(&mut self, name: &str) {
        if !self.chains.iter().any(|c| c == name) {
            self.chains.push(name.to_string());
        }
    }
    fn rule(&mut self, chain: &str, spec: std::fmt::Arguments<'_>) {
        let _ = writeln!(self.rules, "-A {chain} {spec}");
    }
    fn write(&self, out: &mut String, name: &str, builtins: &[&str]) {
        let _ = writeln!(out, "*{name}");
        for builtin in builtins {
            let _ = writeln!(out, ":{builtin} ACCEPT [0:0]");
        }
        for chain in &self.chains {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        out.push_str(&self.rules);
        out.push_str("COMMIT\n");
    }
}

/// kube-proxy's probability for the i-th of n remaining endpoints: `%0.10f` of 1/n.
pub fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}

/// Renders the `filter` and `nat` tables kube-proxy would own on `input.node_name`.
pub fn render_kube_proxy_iptables(input: &KubeProxyInput) -> String {
    let mut nat = Table::default();
    let mut filter = Table::default();
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        nat.chain(chain);
    }
    for chain in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    ] {
        filter.chain(chain);
    }
    let portals = "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
    nat.rule("PREROUTING", format_args!("{portals}"));
    nat.rule("OUTPUT", format_args!("{portals}"));
    nat.rule(
        "POSTROUTING",
        format_args!("-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"),
    );
    nat.rule("KUBE-MARK-MASQ", format_args!("-j MARK --or-mark 0x4000"));
    nat.rule(
        "KUBE-POSTROUTING",
        format_args!("-m mark ! --mark 0x4000/0x4000 -j RETURN"),
    );
    nat.rule(
        "KUBE-POSTROUTING",
        format_args!("-j MARK --xor-mark 0x4000"),
    );
    nat.rule(
        "KUBE-POSTROUTING",
        format_args!("-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"),
    );
    let new = "-m conntrack --ctstate NEW";
    let firewall =
        "-m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL";
    let external = "-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES";
    filter.rule("INPUT", format_args!("{new} {firewall}"));
    filter.rule(
        "INPUT",
        format_args!(
            "-m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS"
        ),
    );
    filter.rule("INPUT", format_args!("{new} {external}"));
    filter.rule("FORWARD", format_args!("{new} {firewall}"));
    filter.rule(
        "FORWARD",
        format_args!("-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"),
    );
    filter.rule("FORWARD", format_args!("{new} {portals}"));
    filter.rule("FORWARD", format_args!("{new} {external}"));
    filter.rule("OUTPUT", format_args!("{new} {firewall}"));
    filter.rule("OUTPUT", format_args!("{new} {portals}"));
    filter.rule(
        "KUBE-FORWARD",
        format_args!("-m conntrack --ctstate INVALID -j DROP"),
    );
    filter.rule(
        "KUBE-FORWARD",
        format_args!("-m mark --mark 0x4000/0x4000 -m comment --comment \"kubernetes forwarding rules\" -j ACCEPT"),
    );
    filter.rule(
        "KUBE-FORWARD",
        format_args!(
            "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        ),
    );

    let mut services: Vec<&Service> = input.services.iter().collect();
    services.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    // Rules that must come after every per-service rule of KUBE-SERVICES.
    let mut nodeport_rules = String::new();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref().unwrap_or_default();
        for port in spec.ports.iter().flatten() {
            let backends = backends_for(input, namespace, name, port);
            render_service_port(
                input,
                &mut nat,
                &mut filter,
                &mut nodeport_rules,
                spec,
                namespace,
                name,
                port,
                &backends,
            );
        }
    }
    nat.rules.push_str(&nodeport_rules);
    nat.rule(
        "KUBE-SERVICES",
        format_args!(
            "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
        ),
    );
    let mut out = String::new();
    filter.write(&mut out, "filter", &["INPUT", "FORWARD", "OUTPUT"]);
    nat.write(
        &mut out,
        "nat",
        &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
    );
    out
}

fn backends_for(
    input: &KubeProxyInput,
    namespace: &str,
    name: &str,
    port: &ServicePort,
) -> Vec<Backend> {
    let port_name = port.name.clone().unwrap_or_default();
    let mut backends: Vec<Backend> = input
        .endpoint_slices
        .iter()
        .filter(|slice| {
            slice.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(name)
        })
        .flat_map(|slice| {
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port);
            slice.endpoints.iter().filter_map(move |endpoint| {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                Some(Backend {
                    ip: endpoint.addresses.first()?.clone(),
                    port: slice_port.filter(|_| ready)?,
                    local: endpoint.node_name.as_deref() == Some(input.node_name.as_str()),
                })
            })
        })
        .collect();
    // kube-proxy orders endpoints by their "ip:port" string.
    backends.sort_by_key(|b| format!("{}:{}", b.ip, b.port));
    backends.dedup_by_key(|b| format!("{}:{}", b.ip, b.port));
    backends
}

#[allow(clippy::too_many_arguments)] // one service port's whole context; a struct would only rename it
fn render_service_port(
    input: &KubeProxyInput,
    nat: &mut Table,
    filter: &mut Table,
    nodeport_rules: &mut String,
    spec: &ServiceSpec,
    namespace: &str,
    name: &str,
    port: &ServicePort,
    backends: &[Backend],
) {
    let port_name = port
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| format!(":{n}"))
        .unwrap_or_default();
    let service_port_name = format!("{namespace}/{name}{port_name}");
    let protocol = port
        .protocol
        .as_deref()
        .unwrap_or("TCP")
        .to_ascii_lowercase();
    let hash = kube_proxy_hash(&format!("{service_port_name}{protocol}"));
    let (svc_chain, ext_chain, svl_chain) = (
        format!("KUBE-SVC-{hash}"),
        format!("KUBE-EXT-{hash}"),
        format!("KUBE-SVL-{hash}"),
    );
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| ip.parse::<Ipv4Addr>().is_ok());
    let node_port = port
        .node_port
        .filter(|_| matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")));
    let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
    let p = &protocol;
    let dport = port.port;

    if backends.is_empty() {
        if let Some(ip) = cluster_ip {
            filter.rule(
                "KUBE-SERVICES",
                format_args!("-d {ip}/32 -p {p} -m comment --comment \"{service_port_name} has no endpoints\" -m {p} --dport {dport} -j REJECT --reject-with icmp-port-unreachable"),
            );
        }
        if let Some(node_port) = node_port {
            filter.rule(
                "KUBE-EXTERNAL-SERVICES",
                format_args!("-m addrtype --dst-type LOCAL -p {p} -m comment --comment \"{service_port_name} has no endpoints\" -m {p} --dport {node_port} -j REJECT --reject-with icmp-port-unreachable"),
            );
        }
        return;
    }

    nat.chain(&svc_chain);
    if let Some(ip) = cluster_ip {
        nat.rule(
            "KUBE-SERVICES",
            format_args!("-d {ip}/32 -p {p} -m comment --comment \"{service_port_name} cluster IP\" -m {p} --dport {dport} -j {svc_chain}"),
        );
        if let Some(cidr) = input.cluster_cidr {
            nat.rule(
                &svc_chain,
                format_args!("! -s {cidr} -d {ip}/32 -p {p} -m comment --comment \"{service_port_name} cluster IP\" -m {p} --dport {dport} -j KUBE-MARK-MASQ"),
            );
        }
    }
    render_endpoint_jumps(nat, &svc_chain, &service_port_name, p, backends.iter());

    if let Some(node_port) = node_port {
        nat.chain(&ext_chain);
        let _ = writeln!(
            nodeport_rules,
            "-A KUBE-NODEPORTS -p {p} -m comment --comment \"{service_port_name}\" -m {p} --dport {node_port} -j {ext_chain}"
        );
        if local_only {
            nat.chain(&svl_chain);
            if let Some(cidr) = input.cluster_cidr {
                nat.rule(
                    &ext_chain,
                    format_args!("-s {cidr} -m comment --comment \"pod traffic for {service_port_name} external destinations\" -j {svc_chain}"),
                );
            }
            nat.rule(
                &ext_chain,
                format_args!("-m comment --comment \"masquerade LOCAL traffic for {service_port_name} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"),
            );
            nat.rule(
                &ext_chain,
                format_args!("-m comment --comment \"route LOCAL traffic for {service_port_name} external destinations\" -m addrtype --src-type LOCAL -j {svc_chain}"),
            );
            nat.rule(&ext_chain, format_args!("-j {svl_chain}"));
            let local: Vec<&Backend> = backends.iter().filter(|b| b.local).collect();
            if local.is_empty() {
                filter.rule(
                    "KUBE-EXTERNAL-SERVICES",
                    format_args!("-m comment --comment \"{service_port_name} has no local endpoints\" -m addrtype --dst-type LOCAL -p {p} -m {p} --dport {node_port} -j DROP"),
                );
            }
            render_endpoint_jumps(nat, &svl_chain, &service_port_name, p, local.into_iter());
        } else {
            nat.rule(
                &ext_chain,
                format_args!("-m comment --comment \"masquerade traffic for {service_port_name} external destinations\" -j KUBE-MARK-MASQ"),
            );
            nat.rule(&ext_chain, format_args!("-j {svc_chain}"));
        }
    }
}

/// `chain` → one KUBE-SEP per backend, with kube-proxy's statistic probabilities; each SEP chain
/// (masquerade hairpin + DNAT) is written once even when reached from SVC and SVL.
fn render_endpoint_jumps<'a>(
    nat: &mut Table,
    chain: &str,
    service_port_name: &str,
    protocol: &str,
    backends: impl ExactSizeIterator<Item = &'a Backend>,
) {
    let count = backends.len();
    for (i, backend) in backends.enumerate() {
        let endpoint = format!("{}:{}", backend.ip, backend.port);
        let sep = format!(
            "KUBE-SEP-{}",
            kube_proxy_hash(&format!("{service_port_name}{protocol}{endpoint}"))
        );
        let statistic = if i + 1 < count {
            format!(
                " -m statistic --mode random --probability {}",
                probability(count - i)
            )
        } else {
            String::new()
        };
        nat.rule(
            chain,
            format_args!(
                "-m comment --comment \"{service_port_name} -> {endpoint}\"{statistic} -j {sep}"
            ),
        );
        if !nat.chains.contains(&sep) {
            nat.chain(&sep);
            nat.rule(
                &sep,
                format_args!(
                    "-s {}/32 -m comment --comment \"{service_port_name}\" -j KUBE-MARK-MASQ",
                    backend.ip
                ),
            );
            nat.rule(
                &sep,
                format_args!("-p {protocol} -m comment --comment \"{service_port_name}\" -m {protocol} -j DNAT --to-destination {endpoint}"),
            );
        }
    }
}

/// `n_services` ClusterIP Services (`bench/svc-N`, port 80 → 8080, named `http`) with
/// `n_endpoints` ready endpoints each, spread over three nodes: a kube-proxy-shaped ruleset of
/// about 17 rules per service at 5 endpoints (10k × 5 ≈ 170k rules).
pub fn synthetic_services(n_services: usize, n_endpoints: usize) -> KubeProxyInput {
    let mut services = Vec::with_capacity(n_services);
    let mut endpoint_slices = Vec::with_capacity(n_services);
    let address =
        |base: u32, index: usize| Ipv4Addr::from(base.wrapping_add(index as u32)).to_string();
    for s in 0..n_services {
        let name = format!("svc-{s}");
        let meta = |labels: Option<BTreeMap<String, String>>, name: String| ObjectMeta {
            name: Some(name),
            namespace: Some("bench".into()),
            labels,
            ..Default::default()
        };
        services.push(Service {
            metadata: meta(None, name.clone()),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                // 10.96.0.0/12 holds a million ClusterIPs; start past .0.0 and .0.1.
                cluster_ip: Some(address(u32::from(Ipv4Addr::new(10, 96, 0, 2)), s)),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::Int(8080)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        });
        let endpoints = (0..n_endpoints)
            .map(|e| Endpoint {
                // Pod network 10.0.0.0/8 minus the first /16: room for 16M pods.
                addresses: vec![address(
                    u32::from(Ipv4Addr::new(10, 1, 0, 0)),
                    s * n_endpoints + e,
                )],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(format!("node-{}", 1 + (s + e) % 3)),
                ..Default::default()
            })
            .collect();
        endpoint_slices.push(EndpointSlice {
            metadata: meta(
                Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_string(),
                    name.clone(),
                )])),
                format!("{name}-abcde"),
            ),
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        });
    }
    KubeProxyInput {
        node_name: "node-1".into(),
        cluster_cidr: Some(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap_or_default()),
        services,
        endpoint_slices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_formatted_like_kube_proxy() {
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(2), "0.5000000000");
    }

    #[test]
    fn renders_svc_sep_chains_with_hash_names_and_statistic() {
        let rules = render_kube_proxy_iptables(&synthetic_services(1, 3));
        let svc = format!("KUBE-SVC-{}", kube_proxy_hash("bench/svc-0:httptcp"));
        assert!(rules.contains(&format!(
            "-A KUBE-SERVICES -d 10.96.0.2/32 -p tcp -m comment --comment \"bench/svc-0:http cluster IP\" -m tcp --dport 80 -j {svc}\n"
        )), "{rules}");
        assert!(
            rules.contains("-m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-"),
            "{rules}"
        );
        assert!(
            rules.contains("-j DNAT --to-destination 10.1.0.2:8080\n"),
            "{rules}"
        );
        // The NodePort jump is the last rule of nat KUBE-SERVICES.
        let last_services_rule = rules
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap_or_default();
        assert!(
            last_services_rule.contains("-j KUBE-NODEPORTS"),
            "{last_services_rule}"
        );
    }

    #[test]
    fn synthetic_ruleset_has_seventeen_rules_per_service_at_five_endpoints() {
        let rules = render_kube_proxy_iptables(&synthetic_services(100, 5));
        let service_rules = rules.lines().filter(|l| l.starts_with("-A KUBE-S")).count();
        // KUBE-SERVICES 1 + SVC (1 masq + 5 jumps) + 5 SEP × 2, plus the one NodePorts jump.
        assert_eq!(service_rules, 100 * 17 + 1);
    }
}

#[cfg(test)]
mod local_policy_tests {
    use super::*;

    /// One NodePort Service with ETP=Local and its only endpoint on node-2.
    fn etp_local_input(node_name: &str) -> KubeProxyInput {
        let mut input = synthetic_services(1, 1);
        input.node_name = node_name.into();
        input.endpoint_slices[0].endpoints[0].node_name = Some("node-2".into());
        let spec = input.services[0]
            .spec
            .as_mut()
            .expect("synthetic services have a spec");
        spec.type_ = Some("NodePort".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.ports.as_mut().expect("one port")[0].node_port = Some(30080);
        input
    }

    #[test]
    fn etp_local_node_without_local_endpoint_drops_node_port_traffic() {
        let rules = render_kube_proxy_iptables(&etp_local_input("node-1"));
        let svl = format!("KUBE-SVL-{}", kube_proxy_hash("bench/svc-0:httptcp"));
        assert!(rules.contains(&format!("-j {svl}\n")), "{rules}");
        assert!(
            rules.contains("--comment \"bench/svc-0:http has no local endpoints\" -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j DROP"),
            "{rules}"
        );
    }

    #[test]
    fn etp_local_node_with_local_endpoint_jumps_to_it_from_svl() {
        let rules = render_kube_proxy_iptables(&etp_local_input("node-2"));
        let svl = format!("KUBE-SVL-{}", kube_proxy_hash("bench/svc-0:httptcp"));
        assert!(
            rules
                .lines()
                .any(|l| l.starts_with(&format!("-A {svl} ")) && l.contains("-j KUBE-SEP-")),
            "{rules}"
        );
        assert!(!rules.contains("has no local endpoints"), "{rules}");
    }

    #[test]
    fn service_without_endpoints_is_rejected_in_filter() {
        let mut input = synthetic_services(1, 1);
        input.endpoint_slices.clear();
        let rules = render_kube_proxy_iptables(&input);
        assert!(
            rules.contains("\"bench/svc-0:http has no endpoints\" -m tcp --dport 80 -j REJECT"),
            "{rules}"
        );
        assert!(
            !rules.contains("KUBE-SVC-"),
            "no NAT chain for a service without endpoints"
        );
    }
}
