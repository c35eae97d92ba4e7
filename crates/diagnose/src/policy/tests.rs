//! Every semantic point of NetworkPolicy, table-driven, including the mistakes people (and
//! KubeSkoop, see research/skoop-engine.md §7) make: one peer element with two selectors vs two
//! elements, empty selectors, `ingress: [{}]` vs `ingress: []`, policyTypes defaulting, named
//! ports resolved on the destination pod, endPort, ipBlock `except`, hostNetwork pods.

use super::*;
use model::snapshot::{SnapshotSource, SourceKind};
use model::Snapshot;
use serde_json::{json, Value};

/// Two namespaces (default: team=a; other: team=b; "bare" has no Namespace object), pods with
/// declared ports, and a hostNetwork pod on a node address.
fn cluster(policies: Vec<Value>) -> Snapshot {
    let pod = |ns: &str, name: &str, ip: &str, labels: Value, ports: Value, host: bool| {
        json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"hostNetwork": host, "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip}
        })
    };
    let objects = json!({
        "namespaces": [
            {"metadata": {"name": "default", "labels": {"team": "a"}}},
            {"metadata": {"name": "other", "labels": {"team": "b"}}}
        ],
        "pods": [
            pod("default", "web", "10.0.0.1", json!({"app": "web"}),
                json!([{"name": "http", "containerPort": 8080}]), false),
            pod("default", "db", "10.0.0.2", json!({"app": "db", "tier": "data"}),
                json!([{"name": "postgres", "containerPort": 5432}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]), false),
            pod("default", "client", "10.0.0.3", json!({"app": "client"}), json!([]), false),
            pod("other", "client", "10.0.1.1", json!({"app": "client"}), json!([]), false),
            pod("bare", "job", "10.0.2.1", json!({"app": "job"}), json!([]), false),
            pod("kube-system", "agent", "192.168.0.2", json!({"app": "agent"}), json!([]), true)
        ],
        "network_policies": policies
    });
    let mut snapshot = Snapshot::new(SnapshotSource {
        kind: SourceKind::Synthetic,
        name: "policy semantics".into(),
        collected_at: None,
    });
    snapshot.kubernetes = serde_json::from_value(objects).expect("test objects deserialize");
    snapshot
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": "default", "name": name}, "spec": spec})
}

#[derive(Debug)]
enum Expect {
    NotSelectable,
    NotIsolated,
    /// `policy[rule]` entries that allow.
    Allowed(&'static [&'static str]),
    /// Substrings the denial explanation must contain.
    Denied(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    policies: Vec<Value>,
    direction: PolicyDirection,
    src: &'static str,
    dst: &'static str,
    protocol: Protocol,
    dport: u16,
    expect: Expect,
}

fn case(
    name: &'static str,
    policies: Vec<Value>,
    direction: PolicyDirection,
    (src, dst, dport): (&'static str, &'static str, u16),
    expect: Expect,
) -> Case {
    Case {
        name,
        policies,
        direction,
        src,
        dst,
        protocol: Protocol::Tcp,
        dport,
        expect,
    }
}

use PolicyDirection::{Egress, Ingress};

const CLIENT_TO_WEB: (&str, &str, u16) = ("10.0.0.3", "10.0.0.1", 8080);
const OTHER_CLIENT_TO_WEB: (&str, &str, u16) = ("10.0.1.1", "10.0.0.1", 8080);

fn web_policy(name: &str, ingress: Value) -> Value {
    policy(
        name,
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": ingress}),
    )
}

fn cases() -> Vec<Case> {
    let one_element = web_policy(
        "same-element",
        json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}},
                           "podSelector": {"matchLabels": {"app": "client"}}}]}]),
    );
    let two_elements = web_policy(
        "two-elements",
        json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}},
                          {"podSelector": {"matchLabels": {"app": "nobody"}}}]}]),
    );
    let ip_block = web_policy(
        "ipblock",
        json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/24"]}}]}]),
    );
    vec![
        case(
            "no policy: not isolated",
            vec![],
            Ingress,
            CLIENT_TO_WEB,
            Expect::NotIsolated,
        ),
        case(
            "empty podSelector and ingress: [] isolates every pod and allows nothing",
            vec![policy(
                "deny-all",
                json!({"podSelector": {}, "ingress": []}),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["default/deny-all has no ingress rules: it allows nothing"]),
        ),
        case(
            "absent podSelector selects every pod too",
            vec![policy("deny-all", json!({"policyTypes": ["Ingress"]}))],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["has no ingress rules"]),
        ),
        case(
            "ingress: [{}] allows everything",
            vec![policy(
                "allow-all",
                json!({"podSelector": {}, "ingress": [{}]}),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Allowed(&["default/allow-all[0]"]),
        ),
        case(
            "policy in another namespace does not select the pod",
            vec![
                json!({"metadata": {"namespace": "other", "name": "deny"}, "spec": {"podSelector": {}}}),
            ],
            Ingress,
            CLIENT_TO_WEB,
            Expect::NotIsolated,
        ),
        case(
            "only egress rules and no policyTypes: Ingress is still governed (deny)",
            vec![policy(
                "egress-only",
                json!({"podSelector": {}, "egress": [{}]}),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["has no ingress rules"]),
        ),
        case(
            "egress: [] without policyTypes does not isolate egress",
            vec![policy(
                "empty-egress",
                json!({"podSelector": {}, "egress": []}),
            )],
            Egress,
            ("10.0.0.1", "10.0.0.2", 5432),
            Expect::NotIsolated,
        ),
        case(
            "policyTypes [Egress] with no egress rules denies egress",
            vec![policy(
                "deny-egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            Egress,
            ("10.0.0.1", "10.0.0.2", 5432),
            Expect::Denied(&["default/deny-egress has no egress rules"]),
        ),
        case(
            "policyTypes [Egress] does not govern ingress",
            vec![policy(
                "deny-egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::NotIsolated,
        ),
        case(
            "podSelector peer: same namespace allowed",
            vec![web_policy(
                "from-clients",
                json!([{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Allowed(&["default/from-clients[0]"]),
        ),
        case(
            "podSelector peer alone: a matching pod in another namespace is denied",
            vec![web_policy(
                "from-clients",
                json!([{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]),
            )],
            Ingress,
            OTHER_CLIENT_TO_WEB,
            Expect::Denied(&["selects only namespace default, and other/client is elsewhere"]),
        ),
        case(
            "one element with both selectors: pod must match both (allowed)",
            vec![one_element.clone()],
            Ingress,
            OTHER_CLIENT_TO_WEB,
            Expect::Allowed(&["default/same-element[0]"]),
        ),
        case(
            "one element with both selectors: right labels, wrong namespace (denied)",
            vec![one_element],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["namespaceSelector {team=b} does not match namespace default"]),
        ),
        case(
            "two elements: either matches (namespace alone allows any pod there)",
            vec![two_elements.clone()],
            Ingress,
            OTHER_CLIENT_TO_WEB,
            Expect::Allowed(&["default/two-elements[0]"]),
        ),
        case(
            "two elements: neither matches, both reasons given",
            vec![two_elements],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&[
                "namespaceSelector {team=b} does not match namespace default",
                "podSelector {app=nobody} does not match pod default/client",
            ]),
        ),
        case(
            "namespaceSelector {} selects every namespace",
            vec![web_policy(
                "any-ns",
                json!([{"from": [{"namespaceSelector": {}}]}]),
            )],
            Ingress,
            OTHER_CLIENT_TO_WEB,
            Expect::Allowed(&["default/any-ns[0]"]),
        ),
        case(
            "namespace without an object still has kubernetes.io/metadata.name",
            vec![web_policy(
                "from-bare",
                json!([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "bare"}}}]}]),
            )],
            Ingress,
            ("10.0.2.1", "10.0.0.1", 8080),
            Expect::Allowed(&["default/from-bare[0]"]),
        ),
        case(
            "ipBlock except carves out the pod's address",
            vec![ip_block.clone()],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["ipBlock 10.0.0.0/16 excepts 10.0.0.0/24"]),
        ),
        case(
            "ipBlock matches a pod address outside the except",
            vec![ip_block.clone()],
            Ingress,
            OTHER_CLIENT_TO_WEB,
            Expect::Allowed(&["default/ipblock[0]"]),
        ),
        case(
            "ipBlock outside the cidr",
            vec![ip_block],
            Ingress,
            ("172.16.0.9", "10.0.0.1", 8080),
            Expect::Denied(&["ipBlock 10.0.0.0/16 does not contain it"]),
        ),
        case(
            "ipBlock matches a non-pod address (a node)",
            vec![web_policy(
                "from-nodes",
                json!([{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}]),
            )],
            Ingress,
            ("192.168.0.9", "10.0.0.1", 8080),
            Expect::Allowed(&["default/from-nodes[0]"]),
        ),
        case(
            "a selector peer never matches a non-pod (hostNetwork pod's node address)",
            vec![web_policy(
                "from-all-pods",
                json!([{"from": [{"namespaceSelector": {}}]}]),
            )],
            Ingress,
            ("192.168.0.2", "10.0.0.1", 8080),
            Expect::Denied(&["192.168.0.2 is not a pod"]),
        ),
        case(
            "hostNetwork pods are never selected",
            vec![policy("deny-all", json!({"podSelector": {}}))],
            Ingress,
            ("10.0.0.3", "192.168.0.2", 9100),
            Expect::NotSelectable,
        ),
        case(
            "numeric port allowed",
            vec![web_policy("port", json!([{"ports": [{"port": 8080}]}]))],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Allowed(&["default/port[0]"]),
        ),
        case(
            "numeric port denied, peer matched: the port is the reason",
            vec![web_policy(
                "port",
                json!([{"from": [{"podSelector": {}}], "ports": [{"port": 9090}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&[
                "a peer matches but no port does",
                "allows port 9090/TCP only",
            ]),
        ),
        case(
            "endPort range covers the port",
            vec![web_policy(
                "range",
                json!([{"ports": [{"port": 8000, "endPort": 8100}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Allowed(&["default/range[0]"]),
        ),
        case(
            "endPort range misses the port",
            vec![web_policy(
                "range",
                json!([{"ports": [{"port": 9000, "endPort": 9100}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["allows port 9000-9100/TCP only"]),
        ),
        case(
            "protocol: a UDP port entry does not allow TCP",
            vec![web_policy(
                "udp",
                json!([{"ports": [{"port": 8080, "protocol": "UDP"}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["allows UDP only"]),
        ),
        case(
            "named port resolved on the destination pod (ingress)",
            vec![web_policy("named", json!([{"ports": [{"port": "http"}]}]))],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Allowed(&["default/named[0]"]),
        ),
        case(
            "named port the destination pod does not declare (ingress)",
            vec![web_policy(
                "named",
                json!([{"ports": [{"port": "metrics"}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&[
                "named port metrics/TCP is not declared by pod default/web (it declares http=8080/TCP)",
            ]),
        ),
        case(
            "named port on egress resolves against the destination (peer) pod",
            vec![policy(
                "to-db",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "postgres"}]}]}),
            )],
            Egress,
            ("10.0.0.1", "10.0.0.2", 5432),
            Expect::Allowed(&["default/to-db[0]"]),
        ),
        case(
            "named port on egress resolving to another number",
            vec![policy(
                "to-db",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "postgres"}]}]}),
            )],
            Egress,
            ("10.0.0.1", "10.0.0.2", 5433),
            Expect::Denied(&["named port postgres is 5432 on the destination pod"]),
        ),
        case(
            "named port on egress to a non-pod address cannot match",
            vec![policy(
                "to-db",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": "postgres"}]}]}),
            )],
            Egress,
            ("10.0.0.1", "172.16.0.1", 5432),
            Expect::Denied(&["can only match a pod"]),
        ),
        case(
            "allow-union: a deny-all and an allow policy select the pod; the allow wins",
            vec![
                policy("deny-all", json!({"podSelector": {}, "ingress": []})),
                web_policy(
                    "allow-clients",
                    json!([{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]),
                ),
            ],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Allowed(&["default/allow-clients[0]"]),
        ),
        case(
            "every isolating policy explains itself when none allows",
            vec![
                policy("deny-all", json!({"podSelector": {}, "ingress": []})),
                web_policy(
                    "allow-db",
                    json!([{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]),
                ),
            ],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&[
                "default/allow-db ingress: rule [0]: no peer matches (podSelector {app=db} does not match pod default/client)",
                "default/deny-all has no ingress rules",
            ]),
        ),
        case(
            "matchExpressions: In, NotIn, Exists, DoesNotExist all hold",
            vec![policy(
                "exprs",
                json!({"podSelector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web", "api"]},
                {"key": "app", "operator": "NotIn", "values": ["db"]},
                {"key": "app", "operator": "Exists"},
                {"key": "debug", "operator": "DoesNotExist"}]}, "ingress": []}),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["default/exprs has no ingress rules"]),
        ),
        case(
            "matchExpressions that fail do not select the pod",
            vec![policy(
                "exprs",
                json!({"podSelector": {"matchExpressions": [
                {"key": "tier", "operator": "Exists"}]}, "ingress": []}),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::NotIsolated,
        ),
        case(
            "an invalid operator in a peer is reported, not matched",
            vec![web_policy(
                "bad",
                json!([{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Matches", "values": ["c.*"]}]}}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["invalid: matchExpressions operator \"Matches\" on app"]),
        ),
        case(
            "an invalid ipBlock cidr is reported, not matched",
            vec![web_policy(
                "bad",
                json!([{"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}]),
            )],
            Ingress,
            CLIENT_TO_WEB,
            Expect::Denied(&["ipBlock \"10.0.0.300/8\" is not a CIDR"]),
        ),
    ]
}

#[test]
fn network_policy_semantics() {
    let mut failures = Vec::new();
    for case in cases() {
        let snapshot = cluster(case.policies.clone());
        let pods = Index::new(&snapshot);
        let index = PolicyIndex::new(&pods);
        let flow = Flow {
            src: case.src.parse().expect("test address"),
            dst: case.dst.parse().expect("test address"),
            protocol: case.protocol,
            dport: case.dport,
        };
        let got = index.evaluate(case.direction, &flow);
        let ok = match (&case.expect, &got) {
            (Expect::NotSelectable, Isolation::NotSelectable { .. }) => true,
            (Expect::NotIsolated, Isolation::NotIsolated { .. }) => true,
            (Expect::Allowed(want), Isolation::Allowed { allowed_by, .. }) => {
                let have: Vec<String> = allowed_by
                    .iter()
                    .map(|(p, i)| format!("{p}[{i}]"))
                    .collect();
                have == *want
            }
            (Expect::Denied(want), Isolation::Denied { denials, .. }) => {
                let text: Vec<String> = denials.iter().map(ToString::to_string).collect();
                let text = text.join(" | ");
                want.iter().all(|w| text.contains(w))
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {got:?}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn icmp_matches_only_rules_without_ports() {
    let snapshot = cluster(vec![web_policy(
        "mixed",
        json!([{"ports": [{"port": 8080}]}, {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]),
    )]);
    let pods = Index::new(&snapshot);
    let index = PolicyIndex::new(&pods);
    let ping = |src: &str| Flow {
        src: src.parse().expect("test address"),
        dst: "10.0.0.1".parse().expect("test address"),
        protocol: Protocol::Icmp,
        dport: 0,
    };
    match index.evaluate(Ingress, &ping("10.0.0.3")) {
        Isolation::Allowed { allowed_by, .. } => assert_eq!(allowed_by.len(), 1),
        other => panic!("ping from a client is allowed by the port-less rule: {other:?}"),
    }
    match index.evaluate(Ingress, &ping("10.0.0.2")) {
        Isolation::Denied { denials, .. } => {
            let text = denials[0].to_string();
            assert!(
                text.contains("rule [0]: a peer matches but no port does (allows TCP only)"),
                "{text}"
            );
        }
        other => panic!("ping from db is denied: {other:?}"),
    }
}

#[test]
fn selectors_describe_themselves_for_messages() {
    let selector: LabelSelector = serde_json::from_value(json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "debug", "operator": "DoesNotExist"}]
    }))
    .expect("selector");
    assert_eq!(
        describe_selector(&selector),
        "{app=web, tier in (a,b), !debug}"
    );
    assert_eq!(describe_selector(&LabelSelector::default()), "{}");
}
