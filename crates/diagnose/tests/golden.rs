//! Golden tests over the example snapshots in `examples/<cni-mode>/`: each example is a
//! synthetic cluster of one CNI mode (healthy, or with one fault injected the way it happens on
//! real nodes), and its diagnosis must keep giving the same verdict, the same detected CNI, the
//! same root-cause finding at the same place, and the same report (`*.expected.txt`). Every file
//! under `examples/` must belong to a case.
//!
//! `UPDATE_GOLDEN=1 cargo test -p diagnose --test golden` rewrites the examples and reports after
//! a deliberate change; review the diff.

use std::path::PathBuf;
use std::sync::Arc;

use diagnose::render::{render, Format};
use diagnose::synthetic::{flannel_host_gw, ClusterSize};
use diagnose::Query;
use model::diagnosis::{Diagnosis, Verdict};
use model::{FindingCode, Snapshot};
use netstack::packet::Protocol;
use netstack::state::{RouteType, Scope};

fn base() -> Snapshot {
    flannel_host_gw(ClusterSize {
        nodes: 2,
        pods_per_node: 2,
        services: 1,
        endpoints_per_service: 2,
        rules_on_nodes: 2,
    })
}

#[path = "golden/cni_modes.rs"]
mod cni_modes;
#[path = "golden/intent.rs"]
mod intent;

/// Every example: flannel host-gw's below, the other CNI modes' in `cni_modes`, Service and
/// NetworkPolicy intent in `intent`.
fn all_cases() -> Vec<Case> {
    let mut all = cases();
    all.extend(cni_modes::cases());
    all.extend(intent::cases());
    all
}

pub fn netns<'a>(s: &'a mut Snapshot, id: &str) -> &'a mut netstack::state::NetnsState {
    &mut s
        .netns
        .iter_mut()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("no netns {id}"))
        .state
}

/// The `iptables-save` text of netns `id`.
pub fn ipv4_rules<'a>(s: &'a mut Snapshot, id: &str) -> &'a mut Arc<str> {
    netns(s, id)
        .iptables
        .as_mut()
        .and_then(|d| d.ipv4.as_mut())
        .expect("rules")
}

/// What every golden case asks: a TCP connection from `src` to `dst`:`port` (source port 40000).
pub fn tcp_query(src: &str, dst: &str, port: u16) -> Query {
    Query {
        src: src.into(),
        dst: dst.into(),
        protocol: Protocol::Tcp,
        dport: port,
        sport: 40000,
    }
}

/// [`tcp_query`] diagnosed on `s`.
pub fn diagnose_tcp(s: &Snapshot, src: &str, dst: &str, port: u16) -> Diagnosis {
    diagnose::diagnose(s, &tcp_query(src, dst, port)).expect("diagnose")
}

/// The example called `name`, from any folder.
fn named_case(name: &str) -> Case {
    all_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

pub struct Case {
    /// The CNI mode: the folder under `examples/`, and what auto-detection must name.
    pub folder: &'static str,
    pub name: &'static str,
    pub snapshot: Snapshot,
    pub src: &'static str,
    pub dst: &'static str,
    pub port: u16,
    pub verdict: Verdict,
    /// Root cause: finding code and the netns it must be placed in.
    pub cause: Option<(FindingCode, &'static str)>,
}

/// A fault on the cross-node pod → pod path, with its expected verdict and root cause.
fn cross_node_fault(
    name: &'static str,
    snapshot: Snapshot,
    verdict: Verdict,
    code: FindingCode,
    netns: &'static str,
) -> Case {
    Case {
        folder: "flannel-host-gw",
        name,
        snapshot,
        src: "default/web-1-1",
        dst: "default/web-2-1",
        port: 8080,
        verdict,
        cause: Some((code, netns)),
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let healthy = |name, dst, port| Case {
        folder: "flannel-host-gw",
        name,
        snapshot: base(),
        src: "default/web-1-1",
        dst,
        port,
        verdict: Verdict::Delivered,
        cause: None,
    };
    out.push(healthy(
        "healthy-pod-to-pod-cross-node",
        "default/web-2-1",
        8080,
    ));
    out.push(healthy(
        "healthy-pod-to-pod-same-node",
        "default/web-1-2",
        8080,
    ));
    out.push(healthy(
        "healthy-pod-to-service",
        "service/default/web-0",
        80,
    ));
    out.push(healthy("healthy-node-to-pod", "default/web-2-2", 8080));
    out.last_mut().expect("pushed").src = "node/node-1";

    let mut s = base();
    let filter = ipv4_rules(&mut s, "node-2");
    *filter = filter.replace("-A FORWARD -m conntrack --ctstate INVALID -j DROP\n", "-A FORWARD -m conntrack --ctstate INVALID -j DROP\n-A FORWARD -d 10.244.1.0/24 -p tcp -m tcp --dport 8080 -j DROP\n").into();
    out.push(cross_node_fault(
        "forward-drop-hand-added",
        s,
        Verdict::Blocked,
        FindingCode::NetfilterDrop,
        "node-2",
    ));

    let mut s = base();
    let filter = ipv4_rules(&mut s, "node-2");
    *filter = filter
        .replace(":FORWARD ACCEPT [0:0]", ":FORWARD DROP [0:0]")
        .into();
    out.push(cross_node_fault(
        "forward-policy-drop",
        s,
        Verdict::Blocked,
        FindingCode::NetfilterPolicyDrop,
        "node-2",
    ));

    let mut s = base();
    let routes = &mut netns(&mut s, "node-1").routes;
    routes.retain(|r| r.dst.to_string() != "10.244.1.0/24");
    let mut blackhole = routes[0].clone();
    blackhole.dst = "10.244.1.0/24".parse().expect("valid");
    blackhole.kind = RouteType::Blackhole;
    blackhole.dev = None;
    blackhole.table = netstack::state::table::MAIN;
    blackhole.scope = Scope::Universe;
    routes.push(blackhole);
    out.push(cross_node_fault(
        "blackhole-route",
        s,
        Verdict::Blocked,
        FindingCode::RouteBlackhole,
        "node-1",
    ));

    let mut s = base();
    netns(&mut s, "node-1")
        .routes
        .retain(|r| r.dst.to_string() != "10.244.1.0/24");
    out.push(cross_node_fault(
        "route-missing",
        s,
        Verdict::Blocked,
        FindingCode::RouteMissing,
        "node-1",
    ));

    let mut s = base();
    for (k, v) in netns(&mut s, "node-2").sysctls.iter_mut() {
        if k.ends_with("forwarding") || k == "net/ipv4/ip_forward" {
            *v = "0".into();
        }
    }
    out.push(cross_node_fault(
        "ip-forward-off",
        s,
        Verdict::Blocked,
        FindingCode::SysctlIpForward,
        "node-2",
    ));

    let mut s = base();
    netns(&mut s, "node-2")
        .links
        .iter_mut()
        .find(|l| l.name == "cni0")
        .expect("cni0")
        .admin_up = false;
    out.push(cross_node_fault(
        "bridge-down",
        s,
        Verdict::Blocked,
        FindingCode::LinkDown,
        "node-2",
    ));

    let mut s = base();
    netns(&mut s, "node-2/default/web-2-1").sockets = Some(Vec::new());
    out.push(cross_node_fault(
        "no-listener",
        s,
        Verdict::Blocked,
        FindingCode::SocketNoListener,
        "node-2/default/web-2-1",
    ));

    let mut s = base();
    netns(&mut s, "node-1")
        .iptables
        .as_mut()
        .expect("dump")
        .ipv4 = Some("*filter\n-A FORWARD -j ACCEPT\n".into());
    out.push(cross_node_fault(
        "unreadable-ruleset",
        s,
        Verdict::Incomplete,
        FindingCode::StateIncomplete,
        "node-1",
    ));

    // A native nftables table next to the iptables rules, as `nft -j list ruleset` (nftables
    // 1.0.6) printed it after `nft -f` loaded `table inet filter { chain forward { type filter
    // hook forward priority 0; policy accept; ct state established,related accept; ip daddr
    // 10.244.1.0/24 tcp dport 8080 counter drop comment "debug block, remove later" } }` in a
    // scratch netns.
    let mut s = base();
    netns(&mut s, "node-2").nftables = Some(NFT_HAND_ADDED_FORWARD_DROP.into());
    out.push(cross_node_fault(
        "nft-forward-drop-hand-added",
        s,
        Verdict::Blocked,
        FindingCode::NetfilterDrop,
        "node-2",
    ));

    let mut s = base();
    let mut truncated = NFT_HAND_ADDED_FORWARD_DROP.to_string();
    truncated.truncate(truncated.find("{\"rule\"").expect("a rule"));
    netns(&mut s, "node-1").nftables = Some(truncated);
    out.push(cross_node_fault(
        "unreadable-nft-ruleset",
        s,
        Verdict::Incomplete,
        FindingCode::StateIncomplete,
        "node-1",
    ));

    let mut s = base();
    s.kubernetes.endpoint_slices.clear();
    out.push(Case {
        folder: "flannel-host-gw",
        name: "service-without-endpoints",
        snapshot: s,
        src: "default/web-1-1",
        dst: "service/default/web-0",
        port: 80,
        verdict: Verdict::Blocked,
        cause: Some((FindingCode::ServiceNoEndpoints, "")),
    });
    out
}

const NFT_HAND_ADDED_FORWARD_DROP: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "filter", "handle": 1}}, {"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}, {"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 2, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 3, "comment": "debug block, remove later", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.244.1.0", "len": 24}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}]}
"#;

/// A hand-added rule in a native nft table: the drop names the rule by family, table, chain and
/// handle, nobody owns it, and the fix is the exact `nft delete rule` command.
#[test]
fn nft_hand_added_drop_names_the_rule_and_the_nft_fix() {
    let case = named_case("nft-forward-drop-hand-added");
    let d = diagnose_tcp(&case.snapshot, case.src, case.dst, case.port);
    let drop = &d.findings[0];
    assert_eq!(
        drop.code,
        FindingCode::NetfilterDrop,
        "{}",
        render(&d, Format::Text)
    );
    assert_eq!(drop.owner, Some(model::Owner::Unknown));
    assert_eq!(
        drop.hint.as_deref(),
        Some("The rule was added by hand or by a tool netsleuth does not know; if it is not wanted: nft delete rule inet filter forward handle 3")
    );
    let model::Evidence::Rule { rule } = &drop.evidence[0] else {
        panic!("evidence is not the rule: {:?}", drop.evidence);
    };
    assert_eq!(rule.source, netstack::netfilter::RuleSource::Nftables);
    assert_eq!(
        (rule.table.as_str(), rule.chain.as_str()),
        ("inet filter", "forward")
    );
    assert_eq!(rule.handle, Some(3));
    assert!(
        rule.text.contains("ip daddr 10.244.1.0/24 tcp dport 8080"),
        "{}",
        rule.text
    );
    assert!(rule.text.contains("drop"), "{}", rule.text);
    // JSON output carries the same: family+table, chain, handle and text.
    let json: serde_json::Value = serde_json::from_str(&render(&d, Format::Json)).expect("json");
    let evidence = &json["findings"][0]["evidence"][0]["rule"];
    assert_eq!(evidence["source"], "nftables");
    assert_eq!(evidence["table"], "inet filter");
    assert_eq!(evidence["chain"], "forward");
    assert_eq!(evidence["handle"], 3);
}

/// An nft dump that cannot be read says which command to collect it with.
#[test]
fn unreadable_nft_ruleset_hint_names_nft_command() {
    let case = named_case("unreadable-nft-ruleset");
    let d = diagnose_tcp(&case.snapshot, case.src, case.dst, case.port);
    let problem = &d.findings[0];
    assert_eq!(problem.code, FindingCode::StateIncomplete);
    assert!(
        problem.message.contains("nftables ruleset of"),
        "{}",
        problem.message
    );
    let hint = problem.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("nft -j list ruleset"), "{hint}");
    assert!(!hint.contains("iptables-save"), "{hint}");
}

fn examples_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn examples_diagnose_to_their_golden_reports() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let root = examples_root();
    let all = all_cases();
    for case in &all {
        let dir = root.join(case.folder);
        std::fs::create_dir_all(&dir).expect("examples dir");
        let snap_path = dir.join(format!("{}.json", case.name));
        let report_path = dir.join(format!("{}.expected.txt", case.name));
        let bytes = case.snapshot.to_bytes(false).expect("encode");
        if update {
            std::fs::write(&snap_path, &bytes).expect("write example");
        }
        // The committed example must be what the builder makes, and must load through the codec.
        let committed = std::fs::read(&snap_path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", snap_path.display()));
        assert!(
            committed == bytes,
            "{} is stale: run UPDATE_GOLDEN=1 cargo test -p diagnose --test golden",
            snap_path.display()
        );
        let snapshot = Snapshot::from_bytes(&snap_path.display().to_string(), &committed)
            .expect("example loads");

        let d = diagnose_tcp(&snapshot, case.src, case.dst, case.port);
        let label = format!("{}/{}", case.folder, case.name);
        assert_eq!(
            d.verdict,
            case.verdict,
            "{label}:\n{}",
            render(&d, Format::Text)
        );
        // Auto-detection must name the mode the example was built as.
        assert_eq!(
            d.datapath.as_ref().map(|p| p.cni.as_str()),
            Some(case.folder),
            "{label}: detected CNI"
        );
        match case.cause {
            None => assert!(
                d.findings.iter().all(|f| f.level < model::Level::Error),
                "{label}: healthy paths must have no error-level finding:\n{}",
                render(&d, Format::Text)
            ),
            Some((code, netns)) => {
                let hit = d.findings.iter().find(|f| f.code == code);
                let f = hit.unwrap_or_else(|| {
                    panic!("{label}: expected {code}:\n{}", render(&d, Format::Text))
                });
                assert_eq!(
                    f.place.netns.as_deref().unwrap_or(""),
                    netns,
                    "{label}: wrong place"
                );
                assert_eq!(
                    d.findings[0].code,
                    code,
                    "{label}: the root cause comes first:\n{}",
                    render(&d, Format::Text)
                );
                assert!(f.hint.is_some(), "{label}: every error says how to fix it");
            }
        }
        let report = render(&d, Format::Text);
        if update {
            std::fs::write(&report_path, &report).expect("write report");
        }
        let expected = std::fs::read_to_string(&report_path).unwrap_or_default();
        assert_eq!(
            report, expected,
            "{label}: report changed (UPDATE_GOLDEN=1 to accept)"
        );
    }
    // Every committed example is one of the cases (a removed case must take its files along).
    for folder in std::fs::read_dir(&root).expect("examples/") {
        let folder = folder.expect("entry").path();
        for file in std::fs::read_dir(&folder).expect("example folder") {
            let file = file.expect("entry").path();
            let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let stem = name
                .strip_suffix(".expected.txt")
                .or_else(|| name.strip_suffix(".json"));
            let Some(stem) = stem else { continue };
            let folder_name = folder.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                all.iter()
                    .any(|c| c.folder == folder_name && c.name == stem),
                "{} has no golden case: delete it or add one",
                file.display()
            );
        }
    }
}

#[test]
fn service_traffic_fans_out_to_every_endpoint_and_replies_are_un_natted() {
    let d = diagnose_tcp(&base(), "default/web-1-1", "service/default/web-0", 80);
    let forward: Vec<_> = d
        .paths
        .iter()
        .filter(|p| p.direction == model::diagnosis::Direction::Forward)
        .collect();
    assert_eq!(forward.len(), 2, "{}", render(&d, Format::Text));
    let total: f64 = forward.iter().map(|p| p.probability).sum();
    assert!((total - 1.0).abs() < 1e-6);
    // The reply arrives back at the client from the Service address, not the pod's.
    for reply in d
        .paths
        .iter()
        .filter(|p| p.direction == model::diagnosis::Direction::Reply)
    {
        assert!(reply.delivered);
        let last = reply.hops.last().expect("hops");
        assert!(
            last.packet_out
                .contains("10.96.0.10:80 -> 10.244.0.2:40000"),
            "{}",
            render(&d, Format::Text)
        );
    }
}

#[test]
fn renderers_produce_their_formats() {
    let d = diagnose_tcp(
        &cases()[4].snapshot,
        "default/web-1-1",
        "default/web-2-1",
        8080,
    );
    let json: serde_json::Value =
        serde_json::from_str(&render(&d, Format::Json)).expect("JSON parses");
    assert_eq!(json["verdict"], "blocked");
    assert_eq!(json["findings"][0]["code"], "netfilter.drop");
    assert_eq!(
        json["findings"][0]["evidence"][0]["rule"]["chain"],
        "FORWARD"
    );
    let dot = render(&d, Format::Dot);
    assert!(
        dot.starts_with("digraph") && dot.contains("\"node-2\" [color=\"#d62728\""),
        "{dot}"
    );
    let mermaid = render(&d, Format::Mermaid);
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("style node_2 stroke:#d62728"),
        "{mermaid}"
    );
}
