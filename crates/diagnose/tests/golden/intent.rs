//! Golden cases for Kubernetes intent on flannel host-gw: NetworkPolicy denials enforced by
//! kube-router-style rules (ingress; egress to a named port the server does not declare), and
//! Service faults (externalTrafficPolicy=Local without a local endpoint, a named targetPort no pod
//! declares, kube-proxy's iptables rules out of sync with the EndpointSlices, IPVS real servers
//! out of sync).
//!
//! Node rulesets are what the lab programs in real namespaces: `lab::kube_proxy` renders
//! kube-proxy's iptables rules from the Services and EndpointSlices, `lab::policy` the policy
//! enforcement chains, so the examples are reproducible from these builders. IPVS cannot run
//! here (no ip_vs module): its example carries `/proc/net/ip_vs` text in the kernel's format
//! (`ip_vs_info_seq_show()`), as recorded for netstack's parser tests.
//!
//! Scenario tests at the end vary the examples (stale enforcement rules, a second fault in front
//! of a policy denial, pod clients of an ETP=Local NodePort, ITP=Local, endpoint conditions,
//! external and load-balancer addresses, kube-proxy's nftables mode from a recorded `nft -j`
//! dump) and assert what must and must not be reported.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use diagnose::synthetic::{flannel_host_gw, ClusterSize};
use k8s_openapi::api::core::v1::{ObjectReference, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lab::kube_proxy::{render_kube_proxy_iptables, KubeProxyInput};
use lab::plan::{LabState, PodPlan};
use model::diagnosis::Verdict;
use model::{CniMode, FindingCode, KubeProxyMode, Snapshot};
use netstack::state::{Address, LinkKind, OperState, Route, RouteType, Scope};

use super::{diagnose_tcp, ipv4_rules, netns, tcp_query, Case};

const FOLDER: &str = "flannel-host-gw";

/// Two nodes, two pods each; Service default/web-0 (80 → 8080 "http") with endpoints
/// web-1-1 (10.244.0.2) and web-1-2 (10.244.0.3) on node-1. Pods get a `role` label each
/// (web-1-1 frontend, web-1-2 api, web-2-1 db, web-2-2 cache) and EndpointSlices the
/// nodeName and targetRef the EndpointSlice controller writes.
fn base() -> Snapshot {
    let mut s = flannel_host_gw(ClusterSize {
        nodes: 2,
        pods_per_node: 2,
        services: 1,
        endpoints_per_service: 2,
        rules_on_nodes: 2,
    });
    let roles = [
        ("web-1-1", "frontend"),
        ("web-1-2", "api"),
        ("web-2-1", "db"),
        ("web-2-2", "cache"),
    ];
    for pod in &mut s.kubernetes.pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some((_, role)) = roles.iter().find(|(n, _)| *n == name) {
            pod.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert("role".into(), (*role).into());
        }
    }
    let pods: Vec<(String, String, String)> = s
        .kubernetes
        .pods
        .iter()
        .filter_map(|p| {
            Some((
                p.status.as_ref()?.pod_ip.clone()?,
                p.metadata.name.clone()?,
                p.spec.as_ref()?.node_name.clone()?,
            ))
        })
        .collect();
    for slice in &mut s.kubernetes.endpoint_slices {
        for endpoint in &mut slice.endpoints {
            if let Some((_, name, node)) = pods
                .iter()
                .find(|(ip, _, _)| endpoint.addresses.contains(ip))
            {
                endpoint.node_name = Some(node.clone());
                endpoint.target_ref = Some(pod_ref(name));
            }
        }
    }
    s
}

fn pod_ref(name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some("default".into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

/// kube-proxy's rules for `node` as it would write them from `objects` (Services and slices).
fn kube_proxy_rules(objects: &Snapshot, node: &str) -> String {
    render_kube_proxy_iptables(&KubeProxyInput {
        node_name: node.into(),
        cluster_cidr: Some("10.244.0.0/14".parse().expect("valid")),
        services: objects.kubernetes.services.clone(),
        endpoint_slices: objects.kubernetes.endpoint_slices.clone(),
    })
}

/// kube-router's policy chains for the pods on `node`, merged into the `filter` table of
/// kube-proxy's rules: its hooks go first in INPUT/FORWARD/OUTPUT, as its `-I … 1` puts them.
fn with_policy_rules(kube_proxy: &str, s: &Snapshot, node: &str) -> String {
    let state = LabState {
        name: "golden".into(),
        cni: CniMode::FlannelHostGw,
        nodes: Vec::new(),
        pods: s
            .kubernetes
            .pods
            .iter()
            .filter_map(|pod| {
                let spec = pod.spec.as_ref()?;
                let node = spec.node_name.clone()?;
                let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
                let name = pod.metadata.name.clone()?;
                Some(PodPlan {
                    pod: pod.clone(),
                    netns: Some(format!("{node}/default/{name}")),
                    node,
                    ip,
                    host_veth: None,
                })
            })
            .collect(),
        services: Vec::new(),
        network_policies: s.kubernetes.network_policies.clone(),
        listener: Vec::new(),
    };
    let policy = lab::policy::render_policy_iptables(&state, node);
    let body = policy
        .strip_prefix("*filter\n")
        .and_then(|b| b.strip_suffix("COMMIT\n"))
        .expect("one filter table");
    let (declarations, rules): (Vec<&str>, Vec<&str>) =
        body.lines().partition(|l| l.starts_with(':'));
    let hooks: Vec<String> = rules
        .iter()
        .filter_map(|l| l.strip_prefix("-I "))
        .map(|l| {
            let (chain, rest) = l.split_once(" 1 ").expect("-I CHAIN 1 …");
            format!("-A {chain} {rest}")
        })
        .collect();
    let chains: Vec<&str> = rules
        .iter()
        .copied()
        .filter(|l| l.starts_with("-A "))
        .collect();
    let (filter, rest) = kube_proxy
        .strip_prefix("*filter\n")
        .and_then(|k| k.split_once("COMMIT\n"))
        .expect("kube-proxy renders filter first");
    let (builtins, own): (Vec<&str>, Vec<&str>) = filter.lines().partition(|l| l.starts_with(':'));
    let mut out = String::from("*filter\n");
    for line in builtins.iter().chain(&declarations) {
        out.push_str(line);
        out.push('\n');
    }
    for line in hooks.iter().map(String::as_str).chain(chains).chain(own) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out.push_str(rest);
    out
}

fn set_rules(s: &mut Snapshot, node: &str, rules: String) {
    netns(s, node)
        .iptables
        .as_mut()
        .expect("nodes carry a dump")
        .ipv4 = Some(rules.into());
}

/// Both nodes' rules as kube-proxy writes them from `s`'s Services and slices, with
/// kube-router's chains for the policies of `enforced` merged in when given.
fn sync_node_rules(s: &mut Snapshot, enforced: Option<&Snapshot>) {
    for node in ["node-1", "node-2"] {
        let mut rules = kube_proxy_rules(s, node);
        if let Some(enforced) = enforced {
            rules = with_policy_rules(&rules, enforced, node);
        }
        set_rules(s, node, rules);
    }
}

/// The spec of the cluster's one Service (`default/web-0`).
fn service_spec(s: &mut Snapshot) -> &mut ServiceSpec {
    s.kubernetes.services[0].spec.as_mut().expect("spec")
}

/// The one port of the cluster's one Service.
fn service_port(s: &mut Snapshot) -> &mut ServicePort {
    &mut service_spec(s).ports.as_mut().expect("ports")[0]
}

fn policy(yaml: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(yaml).expect("test policy")
}

fn case(
    name: &'static str,
    snapshot: Snapshot,
    (src, dst, port): (&'static str, &'static str, u16),
    cause: (FindingCode, &'static str),
) -> Case {
    Case {
        folder: FOLDER,
        name,
        snapshot,
        src,
        dst,
        port,
        verdict: Verdict::Blocked,
        cause: Some(cause),
    }
}

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();

    // Ingress: db pods accept only the api pods; the frontend is rejected on node-2.
    let mut s = base();
    s.kubernetes.network_policies.push(db_from_api());
    let enforced = s.clone();
    sync_node_rules(&mut s, Some(&enforced));
    out.push(case(
        "policy-ingress-denied",
        s,
        ("default/web-1-1", "default/web-2-1", 8080),
        (FindingCode::PolicyIngressDenied, "node-2"),
    ));

    // Egress to a named port the server does not declare: the frontend may reach the db on
    // "postgres", and web-2-1 declares only "http". kube-router resolves named ports against
    // the peer pods and writes no ACCEPT for a name none declares, which the lab's renderer
    // (protocol-wide for names) is given as the resolved, empty, port list.
    let mut s = base();
    let egress = serde_json::json!({
        "metadata": {"namespace": "default", "name": "frontend-egress"},
        "spec": {"podSelector": {"matchLabels": {"role": "frontend"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"role": "db"}}}], "ports": [{"port": "postgres"}]}]}
    });
    s.kubernetes.network_policies.push(policy(egress.clone()));
    let mut as_enforced = s.clone();
    let mut resolved = egress;
    resolved["spec"]["egress"] = serde_json::json!([]);
    as_enforced.kubernetes.network_policies = vec![policy(resolved)];
    sync_node_rules(&mut s, Some(&as_enforced));
    out.push(case(
        "policy-egress-denied-named-port",
        s,
        ("default/web-1-1", "default/web-2-1", 8080),
        (FindingCode::PolicyEgressDenied, "node-1"),
    ));

    // externalTrafficPolicy=Local NodePort reached on node-2, whose kube-proxy has no local
    // endpoint (both run on node-1): traffic from another node is dropped.
    let mut s = base();
    let spec = service_spec(&mut s);
    spec.type_ = Some("NodePort".into());
    spec.external_traffic_policy = Some("Local".into());
    service_port(&mut s).node_port = Some(30080);
    service_port(&mut s).target_port = Some(IntOrString::String("http".into()));
    sync_node_rules(&mut s, None);
    out.push(case(
        "etp-local-no-local-endpoint",
        s,
        ("node/node-1", "node/node-2", 30080),
        (FindingCode::ServiceNoLocalEndpoint, "node-2"),
    ));

    // A named targetPort no pod declares: the EndpointSlice controller publishes no endpoint,
    // and kube-proxy rejects the ClusterIP.
    let mut s = base();
    service_port(&mut s).target_port = Some(IntOrString::String("metrics".into()));
    for slice in &mut s.kubernetes.endpoint_slices {
        slice.endpoints.clear();
    }
    sync_node_rules(&mut s, None);
    out.push(case(
        "named-port-missing",
        s,
        ("default/web-1-1", "service/default/web-0", 80),
        (FindingCode::ServiceNamedPortMissing, "node-1"),
    ));

    // kube-proxy on node-1 stopped syncing: web-1-2 went NotReady and web-2-1 became an
    // endpoint, but node-1's rules are still those of the old slices.
    let mut s = base();
    let old = s.clone();
    let slice = &mut s.kubernetes.endpoint_slices[0];
    for endpoint in &mut slice.endpoints {
        if endpoint.addresses == ["10.244.0.3"] {
            endpoint.conditions = Some(EndpointConditions {
                ready: Some(false),
                serving: Some(false),
                terminating: Some(false),
            });
        }
    }
    slice.endpoints.push(Endpoint {
        addresses: vec!["10.244.1.2".into()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        node_name: Some("node-2".into()),
        target_ref: Some(pod_ref("web-2-1")),
        ..Endpoint::default()
    });
    let stale = kube_proxy_rules(&old, "node-1");
    set_rules(&mut s, "node-1", stale);
    let fresh = kube_proxy_rules(&s, "node-2");
    set_rules(&mut s, "node-2", fresh);
    out.push(case(
        "proxy-out-of-sync",
        s,
        ("default/web-1-1", "service/default/web-0", 80),
        (FindingCode::ServiceProxyOutOfSync, "node-1"),
    ));

    // The same ingress policy on plain flannel, which enforces no NetworkPolicy: delivered,
    // and a warning that intent and datapath disagree.
    let mut s = base();
    s.kubernetes.network_policies.push(db_from_api());
    out.push(Case {
        verdict: Verdict::Delivered,
        ..case(
            "policy-not-enforced",
            s,
            ("default/web-1-1", "default/web-2-1", 8080),
            (FindingCode::PolicyIngressDenied, "node-2/default/web-2-1"),
        )
    });

    // A headless Service: its name resolves to the pods, each reached directly.
    let mut s = base();
    service_spec(&mut s).cluster_ip = Some("None".into());
    sync_node_rules(&mut s, None);
    out.push(Case {
        verdict: Verdict::Delivered,
        ..case(
            "headless-service",
            s,
            ("default/web-2-1", "service/default/web-0", 8080),
            (FindingCode::ServiceHeadless, ""),
        )
    });

    // targetPort 9090 while the pods serve 8080: kube-proxy DNATs to a closed port.
    let mut s = base();
    service_port(&mut s).target_port = Some(IntOrString::Int(9090));
    for slice in &mut s.kubernetes.endpoint_slices {
        for port in slice.ports.iter_mut().flatten() {
            port.port = Some(9090);
        }
    }
    sync_node_rules(&mut s, None);
    out.push(case(
        "wrong-target-port",
        s,
        ("default/web-2-1", "service/default/web-0", 80),
        (FindingCode::ServiceWrongTargetPort, "node-2"),
    ));

    out.push(case(
        "ipvs-out-of-sync",
        ipvs_out_of_sync(),
        ("default/web-2-1", "service/default/web-0", 80),
        (FindingCode::ServiceIpvsOutOfSync, "node-2"),
    ));
    out
}

fn db_from_api() -> NetworkPolicy {
    policy(serde_json::json!({
        "metadata": {"namespace": "default", "name": "db-from-api"},
        "spec": {"podSelector": {"matchLabels": {"role": "db"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "api"}}}], "ports": [{"port": 8080}]}]}
    }))
}

/// kube-proxy in IPVS mode on node-2 (the client's node): the ClusterIP on `kube-ipvs0`, the
/// iptables/ipset rules IPVS mode keeps for masquerading, and `/proc/net/ip_vs` in the kernel's
/// format with a stale real server (10.244.1.9, a deleted pod) and without the endpoint
/// 10.244.0.3. IPVS cannot run here (no ip_vs module), so this text stands for the recording.
fn ipvs_out_of_sync() -> Snapshot {
    let mut s = base();
    s.cluster.kube_proxy_mode = Some(KubeProxyMode::Ipvs);
    let state = netns(&mut s, "node-2");
    let mut dummy = state
        .links
        .iter()
        .find(|l| l.name == "cni0")
        .expect("cni0")
        .clone();
    dummy.name = "kube-ipvs0".into();
    dummy.index = 99;
    dummy.kind = LinkKind::Dummy;
    dummy.oper_state = OperState::Unknown;
    state.links.push(dummy);
    let local = state
        .routes
        .iter()
        .find(|r| r.kind == RouteType::Local && r.dev.as_deref() == Some("cni0"))
        .expect("local route of cni0")
        .clone();
    state.routes.push(Route {
        dst: "10.96.0.10/32".parse().expect("valid"),
        dev: Some("kube-ipvs0".into()),
        ..local
    });
    state.addresses.push(Address {
        dev: "kube-ipvs0".into(),
        address: "10.96.0.10".parse().expect("valid"),
        prefix_len: 32,
        scope: Scope::Universe,
    });
    state.ipsets = Some(
        "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n\
         add KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n"
            .into(),
    );
    state.ipvs = Some(
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n\
         TCP  0A60000A:0050 rr  \n  \
         -> 0AF40002:1F90      Masq    1      0          0         \n  \
         -> 0AF40109:1F90      Masq    1      0          3         \n"
            .into(),
    );
    state.iptables.as_mut().expect("dump").ipv4 = Some(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODE-PORT - [0:0]\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-SERVICES ! -s 10.244.0.0/14 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n\
         -A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\n\
         -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n\
         COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"
            .into(),
    );
    s
}

// Scenarios around the examples: what must (and must not) be said, asserted on the findings.

fn text(d: &model::diagnosis::Diagnosis) -> String {
    diagnose::render::render(d, diagnose::render::Format::Text)
}

fn only(d: &model::diagnosis::Diagnosis, code: FindingCode) -> &model::Finding {
    let hits: Vec<&model::Finding> = d.findings.iter().filter(|f| f.code == code).collect();
    assert_eq!(hits.len(), 1, "one {code} expected:\n{}", text(d));
    hits[0]
}

fn example(name: &str) -> Snapshot {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .snapshot
}

#[test]
fn enforcement_rules_that_deny_what_the_policies_allow_are_called_stale() {
    // The rules were written for "db-from-api"; the policy now also admits the frontend.
    let mut s = example("policy-ingress-denied");
    s.kubernetes.network_policies = vec![policy(serde_json::json!({
        "metadata": {"namespace": "default", "name": "db-from-api"},
        "spec": {"podSelector": {"matchLabels": {"role": "db"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "api"}}},
                                       {"podSelector": {"matchLabels": {"role": "frontend"}}}]}]}
    }))];
    let d = diagnose_tcp(&s, "default/web-1-1", "default/web-2-1", 8080);
    assert_eq!(d.verdict, Verdict::Blocked);
    let f = only(&d, FindingCode::PolicyIngressDenied);
    assert!(
        f.message.contains("yet the NetworkPolicies in the snapshot allow it (ingress allowed by default/db-from-api ingress[0];")
            && f.message.contains("the enforcement rules are out of date"),
        "{}",
        text(&d)
    );
    assert!(f
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("policy agent on node-2")));
}

#[test]
fn a_policy_denial_behind_another_fault_is_still_reported_once() {
    let mut s = example("policy-not-enforced");
    let rules = ipv4_rules(&mut s, "node-2");
    *rules = rules.replace(
        "-A FORWARD -m conntrack --ctstate INVALID -j DROP\n",
        "-A FORWARD -m conntrack --ctstate INVALID -j DROP\n-A FORWARD -d 10.244.1.0/24 -j DROP\n",
    ).into();
    let d = diagnose_tcp(&s, "default/web-1-1", "default/web-2-1", 8080);
    assert_eq!(
        d.findings[0].code,
        FindingCode::NetfilterDrop,
        "{}",
        text(&d)
    );
    let f = only(&d, FindingCode::PolicyIngressDenied);
    assert_eq!(f.level, model::Level::Warning);
    assert!(
        f.message
            .contains("even once the finding that stops the path is fixed"),
        "{}",
        f.message
    );
}

#[test]
fn allowed_traffic_raises_no_policy_finding() {
    let d = diagnose_tcp(
        &example("policy-ingress-denied"),
        "default/web-1-2",
        "default/web-2-1",
        8080,
    );
    assert_eq!(
        d.verdict,
        Verdict::Delivered,
        "the api pod may reach the db:\n{}",
        text(&d)
    );
    assert!(
        d.findings.iter().all(|f| f.level < model::Level::Warning),
        "{}",
        text(&d)
    );
}

#[test]
fn external_traffic_policy_local_does_not_apply_to_pod_clients() {
    // kube-proxy sends pod traffic for a NodePort cluster-wide (KUBE-EXT "-s clusterCIDR").
    let d = diagnose_tcp(
        &example("etp-local-no-local-endpoint"),
        "default/web-2-1",
        "node/node-2",
        30080,
    );
    assert!(
        d.findings
            .iter()
            .all(|f| f.code != FindingCode::ServiceNoLocalEndpoint),
        "{}",
        text(&d)
    );
    assert_eq!(d.verdict, Verdict::Delivered, "{}", text(&d));
}

#[test]
fn internal_traffic_policy_local_without_an_endpoint_on_the_client_node() {
    let mut s = base();
    service_spec(&mut s).internal_traffic_policy = Some("Local".into());
    let d = diagnose_tcp(&s, "default/web-2-1", "service/default/web-0", 80);
    let f = only(&d, FindingCode::ServiceNoLocalEndpoint);
    assert_eq!(f.place.node.as_deref(), Some("node-2"));
    assert!(
        f.message
            .contains("internalTrafficPolicy=Local and no ready endpoint on node-2"),
        "{}",
        f.message
    );
    // From node-1, which runs both endpoints, nothing is wrong.
    let d = diagnose_tcp(&s, "default/web-1-1", "service/default/web-0", 80);
    assert!(
        d.findings
            .iter()
            .all(|f| f.code != FindingCode::ServiceNoLocalEndpoint),
        "{}",
        text(&d)
    );
}

fn set_conditions(s: &mut Snapshot, ready: bool, serving: bool, terminating: bool) {
    for endpoint in &mut s.kubernetes.endpoint_slices[0].endpoints {
        endpoint.conditions = Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        });
    }
}

#[test]
fn endpoints_that_terminate_but_still_serve_are_a_warning_not_an_outage() {
    let mut s = base();
    set_conditions(&mut s, false, true, true);
    let d = diagnose_tcp(&s, "default/web-2-1", "service/default/web-0", 80);
    let f = only(&d, FindingCode::ServiceNoEndpoints);
    assert_eq!(f.level, model::Level::Warning, "{}", text(&d));
    assert!(
        f.message
            .contains("falls back to 2 terminating endpoint(s) that still serve"),
        "{}",
        f.message
    );
}

#[test]
fn endpoints_that_are_not_ready_are_listed_by_pod() {
    let mut s = base();
    set_conditions(&mut s, false, false, false);
    let d = diagnose_tcp(&s, "default/web-2-1", "service/default/web-0", 80);
    let f = only(&d, FindingCode::ServiceNoEndpoints);
    assert_eq!(f.level, model::Level::Error);
    assert!(
        f.message.contains("has 2 endpoints, none ready: 10.244.0.2 (default/web-1-1) not ready, 10.244.0.3 (default/web-1-2) not ready"),
        "{}",
        f.message
    );
}

#[test]
fn publish_not_ready_addresses_reaching_unready_pods_is_noted() {
    let mut s = base();
    service_spec(&mut s).publish_not_ready_addresses = Some(true);
    let pod = s
        .kubernetes
        .pods
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some("web-1-2"))
        .expect("pod");
    pod.status.as_mut().expect("status").conditions =
        Some(vec![k8s_openapi::api::core::v1::PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        }]);
    let d = diagnose_tcp(&s, "default/web-2-1", "service/default/web-0", 80);
    let f = only(&d, FindingCode::ServiceNoEndpoints);
    assert_eq!(f.level, model::Level::Info);
    assert!(
        f.message
            .contains("pods that are not Ready (default/web-1-2)"),
        "{}",
        f.message
    );
}

#[test]
fn a_port_the_service_lacks_is_named_with_the_ports_it_has() {
    let d = diagnose_tcp(&base(), "default/web-2-1", "service/default/web-0", 81);
    let f = only(&d, FindingCode::ServicePortMissing);
    assert!(
        f.message.contains("has no port 81/TCP; it exposes 80/TCP"),
        "{}",
        f.message
    );
}

#[test]
fn cluster_external_and_load_balancer_addresses_are_the_service() {
    let mut s = base();
    s.kubernetes.endpoint_slices[0].endpoints.clear();
    let spec = service_spec(&mut s);
    spec.external_ips = Some(vec!["203.0.113.10".into()]);
    s.kubernetes.services[0].status = Some(k8s_openapi::api::core::v1::ServiceStatus {
        load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
            ingress: Some(vec![k8s_openapi::api::core::v1::LoadBalancerIngress {
                ip: Some("198.51.100.7".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    for dst in ["10.96.0.10", "203.0.113.10", "198.51.100.7"] {
        let d = diagnose_tcp(&s, "default/web-2-1", dst, 80);
        let f = only(&d, FindingCode::ServiceNoEndpoints);
        assert!(
            f.message
                .starts_with("Service default/web-0:http has no endpoints"),
            "{dst}: {}",
            f.message
        );
    }
}

#[test]
fn headless_services_resolve_to_ready_pods_only_and_fail_when_none_is() {
    let mut s = example("headless-service");
    set_conditions(&mut s, false, false, false);
    let err = diagnose::diagnose(
        &s,
        &tcp_query("default/web-2-1", "service/default/web-0", 8080),
    )
    .expect_err("nothing to resolve");
    assert!(
        err.to_string()
            .contains("headless Service with no ready endpoint"),
        "{err}"
    );
}

/// The `ip kube-proxy` table of the recorded `nft -j list ruleset` (netstack's test data: a
/// kube-proxy nftables-mode node, ns1/svc1 = 172.30.0.41:80 → 10.77.2.2:8080, 10.77.2.3:8080);
/// the host firewall recorded next to it is left out.
fn recorded_kube_proxy_nft() -> String {
    let recorded: serde_json::Value =
        serde_json::from_str(include_str!("../../../netstack/testdata/nft/node.json"))
            .expect("recorded nft JSON");
    let items = recorded["nftables"].as_array().expect("nftables array");
    let kept: Vec<&serde_json::Value> = items
        .iter()
        .filter(|item| {
            item.get("metainfo").is_some()
                || item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .is_some_and(|inner| {
                        let table = inner.get("table").or_else(|| inner.get("name"));
                        inner["family"] == "ip"
                            && table.and_then(|t| t.as_str()) == Some("kube-proxy")
                    })
        })
        .collect();
    serde_json::json!({ "nftables": kept }).to_string()
}

#[test]
fn kube_proxy_nftables_rules_are_compared_with_the_slices_through_the_walk() {
    let mut s = base();
    s.cluster.kube_proxy_mode = Some(KubeProxyMode::Nftables);
    netns(&mut s, "node-1").nftables = Some(recorded_kube_proxy_nft());
    let objects: serde_json::Value = serde_json::json!({
        "services": [{
            "metadata": {"namespace": "ns1", "name": "svc1"},
            "spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80, "targetPort": 8080}]}
        }],
        "endpoint_slices": [{
            "metadata": {"namespace": "ns1", "name": "svc1-x", "labels": {"kubernetes.io/service-name": "svc1"}},
            "addressType": "IPv4",
            "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.77.2.2"], "conditions": {"ready": true}},
                {"addresses": ["10.77.2.3"], "conditions": {"ready": false}},
                {"addresses": ["10.77.2.9"], "conditions": {"ready": true}}
            ]
        }]
    });
    let extra: model::snapshot::KubeObjects = serde_json::from_value(objects).expect("objects");
    s.kubernetes.services.extend(extra.services);
    s.kubernetes.endpoint_slices.extend(extra.endpoint_slices);

    let d = diagnose_tcp(&s, "default/web-1-1", "service/ns1/svc1", 80);
    // The walk fans out over kube-proxy's numgen vmap to both programmed endpoints.
    let translated: Vec<&str> = d
        .paths
        .iter()
        .flat_map(|p| &p.hops)
        .flat_map(|h| &h.steps)
        .filter(|s| s.contains("DNAT"))
        .map(String::as_str)
        .collect();
    assert_eq!(translated.len(), 2, "{}", text(&d));
    let f = only(&d, FindingCode::ServiceProxyOutOfSync);
    assert_eq!(f.place.netns.as_deref(), Some("node-1"));
    assert!(
        f.message
            .starts_with("kube-proxy's nftables rules on node-1 for Service ns1/svc1:p80 disagree")
            && f.message
                .contains("stale (not an endpoint any more, still sent traffic): 10.77.2.3:8080")
            && f.message
                .contains("missing (an endpoint, never sent traffic): 10.77.2.9:8080"),
        "{}",
        text(&d)
    );
}

#[test]
fn topology_hints_let_kube_proxy_leave_other_zones_out_but_not_add_strangers() {
    // node-1 is in zone a; the slices hint web-1-1 for zone a and web-1-2 for zone b, and
    // kube-proxy (topology-aware routing) programs only web-1-1 on node-1.
    let mut s = base();
    for endpoint in &mut s.kubernetes.endpoint_slices[0].endpoints {
        let zone = if endpoint.addresses == ["10.244.0.2"] {
            "a"
        } else {
            "b"
        };
        endpoint.hints = Some(k8s_openapi::api::discovery::v1::EndpointHints {
            for_zones: Some(vec![k8s_openapi::api::discovery::v1::ForZone {
                name: zone.into(),
            }]),
            ..Default::default()
        });
    }
    let mut zone_a = s.clone();
    zone_a.kubernetes.endpoint_slices[0]
        .endpoints
        .retain(|e| e.addresses == ["10.244.0.2"]);
    let rules = kube_proxy_rules(&zone_a, "node-1");
    set_rules(&mut s, "node-1", rules);
    let d = diagnose_tcp(&s, "default/web-1-1", "service/default/web-0", 80);
    assert!(
        d.findings
            .iter()
            .all(|f| f.code != FindingCode::ServiceProxyOutOfSync),
        "{}",
        text(&d)
    );
    // A programmed endpoint that is in no slice is still stale.
    let mut stranger = zone_a.clone();
    stranger.kubernetes.endpoint_slices[0].endpoints[0].addresses = vec!["10.244.1.3".into()];
    let rules = kube_proxy_rules(&stranger, "node-1");
    set_rules(&mut s, "node-1", rules);
    let d = diagnose_tcp(&s, "default/web-1-1", "service/default/web-0", 80);
    let f = only(&d, FindingCode::ServiceProxyOutOfSync);
    assert!(
        f.message
            .contains("stale (not an endpoint any more, still sent traffic): 10.244.1.3:8080")
            && !f.message.contains("missing"),
        "{}",
        f.message
    );
}

/// kube-proxy's REJECT of a Service port without endpoints is recognised by who owns the rule
/// and its verdict, not by the comment kube-proxy happens to write: without the comment, the
/// path still stops at one finding that names the Kubernetes cause.
#[test]
fn kube_proxy_rejects_are_recognised_by_owner_and_verdict_not_comment() {
    let mut s = example("named-port-missing");
    let rules = ipv4_rules(&mut s, "node-1");
    let commented = " -m comment --comment \"default/web-0:http has no endpoints\"";
    assert!(rules.contains(commented), "{rules}");
    *rules = rules.replace(commented, "").into();
    let d = diagnose_tcp(&s, "default/web-1-1", "service/default/web-0", 80);
    let stopped = d.paths[0].stopped_by.map(|i| &d.findings[i]);
    let f = stopped.unwrap_or_else(|| panic!("the path stops:\n{}", text(&d)));
    assert_eq!(f.code, FindingCode::ServiceNamedPortMissing, "{}", text(&d));
    assert!(
        f.message.contains("On the path: ") && f.message.contains("rejected"),
        "{}",
        f.message
    );
    assert!(
        !d.findings
            .iter()
            .any(|f| f.code == FindingCode::NetfilterReject),
        "{}",
        text(&d)
    );
}
