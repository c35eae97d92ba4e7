//! Unit tests. The node-level tests read `testdata/nft/node.json`, recorded from the real
//! `nft -j list ruleset` (nftables 1.0.6) after loading `kube-proxy.nft` and `firewall.nft` and
//! two iptables-nft rules (`node.iptables` is `iptables-nft-save` of the same netns). Per
//! expression tests build small dumps in the same JSON shapes.

use std::net::IpAddr;

use super::*;
use crate::iptables::{AddrType, EvalContext, SetDirection};
use crate::netfilter::{HookOutcome, Netfilter, NetfilterVerdict, RuleSource};
use crate::packet::{CtDirection, CtState, Packet, Protocol};
use crate::state::{IptablesBackend, IptablesDump, NetnsState};

const NODE_JSON: &str = include_str!("../../testdata/nft/node.json");
const NODE_IPTABLES: &str = include_str!("../../testdata/nft/node.iptables");

/// The node 10.77.1.1 with `eth0` (address 10.77.1.1) and `nfte0` (10.77.2.1).
struct Ctx;

impl EvalContext for Ctx {
    fn addr_type(&self, addr: IpAddr) -> AddrType {
        if ["10.77.1.1", "10.77.2.1"].contains(&addr.to_string().as_str()) {
            AddrType::Local
        } else {
            AddrType::Unicast
        }
    }
    fn device_address(&self, dev: &str, _towards: IpAddr) -> Option<IpAddr> {
        match dev {
            "eth0" => Some(ip("10.77.1.1")),
            "nfte0" => Some(ip("10.77.2.1")),
            _ => None,
        }
    }
    fn in_set(&self, _name: &str, _packet: &Packet, _d: &[SetDirection]) -> Option<bool> {
        None
    }
    fn reverse_path_ok(&self, _p: &Packet, _l: bool, _v: bool, _a: bool) -> bool {
        true
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet::new(ip(src), ip(dst), Protocol::Tcp, 40000, dport)
}

fn node() -> Ruleset {
    parse(NODE_JSON).expect("recorded dump parses")
}

fn run(rs: Ruleset, hook: Hook, packet: &Packet) -> Vec<HookOutcome> {
    let nf = Netfilter::with_nftables(rs);
    nf.run_hook(hook, packet, &Ctx)
}

fn only(outcomes: Vec<HookOutcome>) -> HookOutcome {
    assert_eq!(outcomes.len(), 1, "expected one outcome: {outcomes:#?}");
    outcomes.into_iter().next().unwrap()
}

fn actions(o: &HookOutcome) -> Vec<&str> {
    o.trace.iter().map(|t| t.action.as_str()).collect()
}

// ---- small dumps in nft's JSON shapes ----

/// A dump of one `inet t` table: a base chain `c` at `hook` with `policy`, a regular chain `sub`,
/// extra items (sets, maps), and one rule per `exprs` entry in `c` (rules in `sub` are written
/// as `sub:` followed by the expr JSON).
fn dump(hook: &str, policy: &str, extra: &[&str], exprs: &[&str]) -> String {
    let mut items = vec![
        r#"{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}"#.to_string(),
        r#"{"table": {"family": "inet", "name": "t", "handle": 1}}"#.to_string(),
    ];
    let nat_statement = ["{\"dnat\"", "{\"snat\"", "{\"masquerade\"", "{\"redirect\""];
    let kind = if exprs
        .iter()
        .any(|e| nat_statement.iter().any(|n| e.contains(n)))
    {
        "nat"
    } else {
        "filter"
    };
    items.push(format!(
        r#"{{"chain": {{"family": "inet", "table": "t", "name": "c", "handle": 1, "type": "{kind}", "hook": "{hook}", "prio": 0, "policy": "{policy}"}}}}"#
    ));
    items.push(r#"{"chain": {"family": "inet", "table": "t", "name": "sub", "handle": 2}}"#.into());
    items.extend(extra.iter().map(|s| s.to_string()));
    for (i, e) in exprs.iter().enumerate() {
        let (chain, e) = match e.strip_prefix("sub:") {
            Some(rest) => ("sub", rest),
            None => ("c", *e),
        };
        items.push(format!(
            r#"{{"rule": {{"family": "inet", "table": "t", "chain": "{chain}", "handle": {}, "expr": {e}}}}}"#,
            i + 10
        ));
    }
    format!(r#"{{"nftables": [{}]}}"#, items.join(",\n"))
}

fn rules(hook: &str, policy: &str, exprs: &[&str]) -> Ruleset {
    parse(&dump(hook, policy, &[], exprs)).expect("test dump parses")
}

/// Verdict of a forward hook with one `match LEFT OP RIGHT; accept` rule, policy drop.
fn matches(left: &str, op: &str, right: &str, packet: &Packet) -> bool {
    let rule = format!(
        r#"[{{"match": {{"op": "{op}", "left": {left}, "right": {right}}}}}, {{"accept": null}}]"#
    );
    let o = only(run(
        rules("forward", "drop", &[&rule]),
        Hook::Forward,
        packet,
    ));
    assert!(o.unsupported.is_empty(), "{:?}", o.unsupported);
    o.verdict == NetfilterVerdict::Accept
}

// ---- the recorded node ----

#[test]
fn recorded_dump_reads_every_table_chain_set_and_rule() {
    let rs = node();
    let names: Vec<String> = rs.tables.iter().map(Table::display_name).collect();
    assert_eq!(
        names,
        ["ip kube-proxy", "inet filter", "ip portmap", "ip filter"]
    );
    let kp = rs.table(Family::Ip, "kube-proxy").unwrap();
    assert_eq!(kp.chains.len(), 23);
    let svc = kp.set("service-ips").unwrap();
    assert_eq!(
        svc.key,
        DataType::from_names(&["ipv4_addr", "inet_proto", "inet_service"])
    );
    assert_eq!(svc.elements().len(), 2);
    // Every kube-proxy and firewall statement is modelled; only iptables-nft's `xt` is not.
    for table in &rs.tables {
        for chain in &table.chains {
            for rule in &chain.rules {
                let unmodelled = rule.stmts.iter().any(|s| matches!(s, Stmt::Unsupported(_)));
                assert_eq!(
                    unmodelled,
                    table.name == "filter"
                        && table.family == Family::Ip
                        && rule.text.contains("statistic"),
                    "{}",
                    rule.text
                );
            }
        }
    }
    let services = kp.chain("services").unwrap();
    assert_eq!(
        services.rules[0].text,
        "ip daddr . meta l4proto . th dport vmap @service-ips"
    );
    let forward = rs
        .table(Family::Inet, "filter")
        .unwrap()
        .chain("forward")
        .unwrap();
    assert_eq!(forward.base.as_ref().unwrap().policy, Policy::Drop);
    assert_eq!(
        forward.rules[3].text,
        r#"meta iifname nftc* meta oifname nfte* tcp dport { 8080, 9000-9100 } accept"#
    );
}

#[test]
fn cluster_ip_fans_out_to_every_endpoint_through_numgen_vmap() {
    let p = tcp("192.168.5.5", "172.30.0.41", 80);
    let mut outs = run(node(), Hook::Prerouting, &p);
    outs.sort_by_key(|o| o.packet.dst);
    assert_eq!(outs.len(), 2);
    for (o, ep) in outs.iter().zip(["10.77.2.2", "10.77.2.3"]) {
        assert_eq!(o.verdict, NetfilterVerdict::Accept);
        assert_eq!((o.packet.dst, o.packet.dport), (ip(ep), 8080));
        assert!((o.probability - 0.5).abs() < 1e-9);
        // From outside the cluster CIDR: marked for masquerade.
        assert_eq!(o.packet.mark, 0x4000);
        assert!(actions(o).contains(&"goto service-ULMVA6XW-ns1/svc1/tcp/p80 (vmap @service-ips)"));
        let dnat = o
            .trace
            .iter()
            .find(|t| t.action.starts_with("DNAT"))
            .unwrap();
        assert_eq!(dnat.action, format!("DNAT to {ep}:8080"));
        let by = &dnat.rule;
        assert_eq!(by.source, RuleSource::Nftables);
        assert_eq!(by.table, "ip kube-proxy");
        assert!(by.chain.starts_with("endpoint-"), "{}", by.chain);
        assert_eq!(by.text, format!("meta l4proto tcp dnat to {ep}:8080"));
        assert!(by.handle.is_some());
    }
}

#[test]
fn nodeport_goes_through_external_chain_to_the_endpoints() {
    let p = tcp("10.77.1.2", "10.77.1.1", 30080);
    let outs = run(node(), Hook::Prerouting, &p);
    assert_eq!(outs.len(), 2);
    let total: f64 = outs.iter().map(|o| o.probability).sum();
    assert!((total - 1.0).abs() < 1e-9);
    for o in &outs {
        assert_eq!(o.packet.dport, 8080);
        assert!(actions(o)
            .contains(&"goto external-ULMVA6XW-ns1/svc1/tcp/p80 (vmap @service-nodeports)"));
        assert_eq!(
            o.packet.mark, 0x4000,
            "NodePort traffic is always masqueraded"
        );
    }
}

#[test]
fn service_without_endpoints_is_rejected_and_unallocated_cluster_ip_dropped() {
    let o = only(run(
        node(),
        Hook::Forward,
        &tcp("10.77.1.2", "172.30.0.42", 80),
    ));
    assert_eq!(
        o.verdict,
        NetfilterVerdict::Reject {
            with: "icmp port-unreachable".into()
        }
    );
    assert_eq!(o.decided_by.as_ref().unwrap().chain, "reject-chain");
    assert!(actions(&o).contains(&"goto reject-chain (vmap @no-endpoint-services)"));

    let o = only(run(
        node(),
        Hook::Forward,
        &tcp("10.77.1.2", "172.30.9.9", 80),
    ));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
    let by = o.decided_by.unwrap();
    assert_eq!((by.chain.as_str(), by.position), ("cluster-ips-check", 2));
    assert!(
        by.text
            .ends_with(r#"drop comment "Drop traffic to unallocated ClusterIPs""#),
        "{}",
        by.text
    );

    // A ClusterIP on a port it does not serve.
    let o = only(run(
        node(),
        Hook::Forward,
        &tcp("10.77.1.2", "172.30.0.41", 81),
    ));
    assert!(matches!(o.verdict, NetfilterVerdict::Reject { .. }));
    assert_eq!(o.decided_by.unwrap().position, 1);
}

#[test]
fn load_balancer_source_ranges_drop_other_sources() {
    let allowed = only(run(
        node(),
        Hook::Prerouting,
        &tcp("203.0.113.5", "192.0.2.50", 80),
    ));
    assert_eq!(allowed.verdict, NetfilterVerdict::Accept);
    assert_eq!(allowed.packet.dst, ip("10.77.2.2"));
    assert!(
        (allowed.probability - 1.0).abs() < 1e-9,
        "numgen mod 1 is one branch"
    );

    let denied = only(run(
        node(),
        Hook::Prerouting,
        &tcp("198.18.0.1", "192.0.2.50", 80),
    ));
    assert_eq!(denied.verdict, NetfilterVerdict::Drop);
    assert_eq!(
        denied.decided_by.unwrap().chain,
        "firewall-HVFWP5L3-ns5/svc5/tcp/p80"
    );
    assert_eq!(
        denied.packet.dst,
        ip("192.0.2.50"),
        "dropped before the nat chain"
    );
}

#[test]
fn masquerading_only_marked_packets_and_clearing_the_mark() {
    let mut p = tcp("192.168.5.5", "10.77.2.2", 8080);
    p.oif = Some("nfte0".into());
    p.mark = 0x4000;
    let o = only(run(node(), Hook::Postrouting, &p));
    assert_eq!(o.packet.src, ip("10.77.2.1"));
    assert_eq!(o.packet.mark, 0);
    assert!(o.packet.ct_snat);
    assert_eq!(
        actions(&o).last().unwrap(),
        &"MASQUERADE to 10.77.2.1 (address of nfte0)"
    );

    p.mark = 0;
    let o = only(run(node(), Hook::Postrouting, &p));
    assert_eq!(o.packet.src, ip("192.168.5.5"));
    assert!(actions(&o).contains(&"RETURN"));
}

#[test]
fn host_firewall_policy_drop_with_accept_rules() {
    let fwd = |mut p: Packet, iif: &str, oif: &str| {
        p.iif = Some(iif.into());
        p.oif = Some(oif.into());
        only(run(node(), Hook::Forward, &p))
    };
    // Wildcard interfaces and an anonymous set with a range.
    assert_eq!(
        fwd(tcp("10.77.1.2", "10.77.2.2", 9050), "nftc0", "nfte0").verdict,
        NetfilterVerdict::Accept
    );
    // Not in the accepted ports: the chain policy.
    let o = fwd(tcp("10.77.1.2", "10.77.2.2", 9999), "nftc0", "nfte0");
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
    assert_eq!(actions(&o).last().unwrap(), &"policy DROP");
    let by = o.decided_by.unwrap();
    assert_eq!(
        (by.table.as_str(), by.chain.as_str(), by.position),
        ("inet filter", "forward", 0)
    );
    // A prefix element of an interval set.
    let o = fwd(tcp("198.51.100.7", "10.77.2.2", 8080), "nftc0", "nfte0");
    assert_eq!(
        (o.verdict, o.decided_by.unwrap().position),
        (NetfilterVerdict::Drop, 3)
    );
    assert_eq!(
        fwd(tcp("10.77.1.2", "10.77.2.2", 5432), "nftc0", "nfte0").verdict,
        NetfilterVerdict::Reject {
            with: "tcp reset".into()
        }
    );
    let ping = Packet::new(ip("10.77.1.2"), ip("10.77.2.2"), Protocol::Icmp, 1, 0);
    assert_eq!(
        fwd(ping, "nftc0", "nfte0").verdict,
        NetfilterVerdict::Accept
    );
    // The reply of an accepted flow.
    let reply = tcp("10.77.1.2", "10.77.2.2", 9050).reversed();
    assert_eq!(
        fwd(reply, "nfte0", "nftc0").verdict,
        NetfilterVerdict::Accept
    );
    // udp: log (passive) then accept.
    let udp = Packet::new(ip("10.77.1.2"), ip("10.77.2.2"), Protocol::Udp, 5000, 53);
    let o = fwd(udp, "nftc0", "nfte0");
    assert_eq!(o.verdict, NetfilterVerdict::Accept);
    assert!(actions(&o).windows(2).any(|w| w == ["log", "ACCEPT"]));
}

#[test]
fn dnat_through_a_concatenated_data_map_and_marks() {
    let o = only(run(
        node(),
        Hook::Prerouting,
        &tcp("10.77.1.2", "10.77.1.1", 8888),
    ));
    assert_eq!((o.packet.dst, o.packet.dport), (ip("10.77.2.2"), 8080));
    assert_eq!((o.packet.mark, o.packet.ct_mark), (0x10, 0x10));
    assert!(actions(&o).contains(&"CONNMARK set 0x10"));
    assert_eq!(o.decided_by.unwrap().table, "ip portmap");
    // Not in the map: the lookup fails, the rule does not apply.
    let o = only(run(
        node(),
        Hook::Prerouting,
        &tcp("10.77.1.2", "10.77.1.1", 8889),
    ));
    assert_eq!(o.packet.dst, ip("10.77.1.1"));
}

#[test]
fn nat_chains_see_only_new_connections() {
    let mut p = tcp("192.168.5.5", "172.30.0.41", 80);
    p.ct_state = CtState::Established;
    let o = only(run(node(), Hook::Prerouting, &p));
    assert_eq!(o.packet.dst, ip("172.30.0.41"));
    assert!(
        o.trace.iter().all(|t| t.action == "policy ACCEPT"),
        "only filter chains ran: {:?}",
        actions(&o)
    );
}

#[test]
fn iptables_nft_tables_are_evaluated_once_through_iptables_save() {
    let mut state = NetnsState {
        nftables: Some(NODE_JSON.into()),
        iptables: Some(IptablesDump {
            backend: IptablesBackend::Nft,
            ipv4: Some(NODE_IPTABLES.into()),
            ipv6: None,
        }),
        ..NetnsState::default()
    };
    let mut p = tcp("10.77.1.99", "10.77.2.2", 8080);
    p.iif = Some("nftc0".into());
    p.oif = Some("nfte0".into());
    let (nf, problems) = Netfilter::from_state(&state);
    assert!(problems.is_empty(), "{problems:?}");
    let o = only(nf.run_hook(Hook::Forward, &p, &Ctx));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
    let by = o.decided_by.unwrap();
    assert_eq!(
        by.source,
        RuleSource::Iptables,
        "the hand-added rule is cited from iptables-save"
    );
    assert!(by.text.contains("hand-added block"));
    // kube-proxy's forward chain (priority -110) ran before the iptables filter table (0).
    assert_eq!(o.trace[0].rule.table, "ip kube-proxy");
    assert!(
        o.trace.iter().all(|t| t.rule.table != "ip filter"),
        "the nft copy is skipped"
    );
    assert!(o.unsupported.is_empty());

    // Without the iptables-save text the nft copy is evaluated natively, and its `xt`
    // statistic match is reported as unsupported on that rule only.
    state.iptables = None;
    let (nf, _) = Netfilter::from_state(&state);
    let o = only(nf.run_hook(Hook::Forward, &p, &Ctx));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
    assert_eq!(o.decided_by.unwrap().table, "ip filter");
    let mut q = tcp("10.77.1.2", "10.77.2.2", 8080);
    q.iif = Some("nftc0".into());
    q.oif = Some("nfte0".into());
    let o = only(nf.run_hook(Hook::Forward, &q, &Ctx));
    assert_eq!(o.unsupported.len(), 1);
    assert!(
        o.unsupported[0].feature.starts_with("xt match statistic"),
        "{}",
        o.unsupported[0].feature
    );
    assert_eq!(o.unsupported[0].rule.handle, Some(3));
}

#[test]
fn malformed_dump_is_reported_by_from_state_and_not_fatal() {
    let state = NetnsState {
        nftables: Some(r#"{"nftables": [{"table": {"family": "ipx", "name": "t"}}]}"#.into()),
        ..NetnsState::default()
    };
    let (nf, problems) = Netfilter::from_state(&state);
    assert!(nf.nftables.is_none());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].source, "nftables");
    assert!(
        problems[0]
            .to_string()
            .starts_with("nftables: line 1: at nftables[0].table.family: unknown variant `ipx`"),
        "{}",
        problems[0]
    );
}

// ---- parse errors name the JSON path ----

#[test]
fn parse_errors_name_the_json_path() {
    let err = |text: &str| parse(text).unwrap_err();
    let e = err("{\"nftables\": [\n  {\"table\": {\"family\": \"ip\", \"name\": \"t\"}},\n  {\"chain\": }\n]}");
    assert_eq!(e.line, 3, "{e}");
    let e = err(
        r#"{"nftables": [{"table": {"family": "ip", "name": "t"}}, {"chain": {"family": "ip", "table": "t"}}]}"#,
    );
    assert_eq!(e.path, "nftables[1].chain");
    assert!(e.message.contains("missing field `name`"), "{e}");
    let e = err(
        r#"{"nftables": [{"table": {"family": "ip", "name": "t"}}, {"chain": {"family": "ip", "table": "t", "name": "c", "hook": "input", "prio": "first"}}]}"#,
    );
    assert_eq!(e.path, "nftables[1].chain");
    assert!(e.message.contains("unknown priority \"first\""), "{e}");
    let e = err(
        r#"{"nftables": [{"table": {"family": "ip", "name": "t"}}, {"rule": {"family": "ip", "table": "t", "chain": "nope", "expr": []}}]}"#,
    );
    assert_eq!(e.path, "nftables[1].rule.chain");
    let e = err(
        r#"{"nftables": [{"rule": {"family": "ip", "table": "t", "chain": "c", "expr": []}}]}"#,
    );
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("nftables[0].rule.table", "table ip t is not declared")
    );
    let e = err(
        r#"{"nftables": [{"table": {"family": "ip", "name": "t"}}, {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": {}}}]}"#,
    );
    assert_eq!(e.path, "nftables[1].rule.expr");
    assert_eq!(err("[]").path, ".");
}

#[test]
fn standard_priority_names_and_unmodelled_hooks() {
    let text = r#"{"nftables": [{"table": {"family": "netdev", "name": "n"}},
      {"chain": {"family": "netdev", "table": "n", "name": "in", "type": "filter", "hook": "ingress", "prio": 0, "policy": "drop"}},
      {"table": {"family": "inet", "name": "t"}},
      {"chain": {"family": "inet", "table": "t", "name": "late", "type": "filter", "hook": "forward", "prio": "security"}},
      {"chain": {"family": "inet", "table": "t", "name": "early", "type": "filter", "hook": "forward", "prio": "mangle"}},
      {"rule": {"family": "inet", "table": "t", "chain": "late", "handle": 1, "expr": [{"counter": null}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "early", "handle": 2, "expr": [{"counter": null}]}}]}"#;
    let rs = parse(text).unwrap();
    let o = only(run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80)));
    // The netdev ingress chain (policy drop) is not on the IP path; priorities order the rest.
    assert_eq!(o.verdict, NetfilterVerdict::Accept);
    let chains: Vec<&str> = o.trace.iter().map(|t| t.rule.chain.as_str()).collect();
    assert_eq!(chains, ["early", "early", "late", "late"]);
}

// ---- expressions ----

const CT_STATE: &str = r#"{"ct": {"key": "state"}}"#;

#[test]
fn ct_state_flags_status_direction_and_mark() {
    let mut p = tcp("10.0.0.1", "10.0.0.2", 80);
    assert!(matches(CT_STATE, "in", r#""new""#, &p));
    assert!(!matches(
        CT_STATE,
        "in",
        r#"["established", "related"]"#,
        &p
    ));
    assert!(matches(CT_STATE, "!=", r#""established""#, &p));
    p.ct_state = CtState::Related;
    assert!(matches(CT_STATE, "in", r#"["established", "related"]"#, &p));
    assert!(matches(
        CT_STATE,
        "==",
        r#"{"set": ["related", "invalid"]}"#,
        &p
    ));
    let status = r#"{"ct": {"key": "status"}}"#;
    assert!(!matches(status, "in", r#""dnat""#, &p));
    p.ct_dnat = true;
    assert!(matches(status, "in", r#""dnat""#, &p));
    let dir = r#"{"ct": {"key": "direction"}}"#;
    assert!(matches(dir, "==", r#""original""#, &p));
    p.ct_direction = CtDirection::Reply;
    assert!(matches(dir, "==", r#""reply""#, &p));
    p.ct_mark = 0x1ff;
    assert!(matches(
        r#"{"&": [{"ct": {"key": "mark"}}, 255]}"#,
        "==",
        "255",
        &p
    ));
    assert!(!matches(r#"{"ct": {"key": "mark"}}"#, "==", "255", &p));
    // An untracked packet has no direction or mark.
    p.ct_state = CtState::Untracked;
    assert!(!matches(dir, "!=", r#""original""#, &p));
    assert!(matches(CT_STATE, "in", r#""untracked""#, &p));
}

#[test]
fn payload_fields_ports_and_comparisons() {
    let p = tcp("10.1.2.3", "10.9.0.1", 8443);
    let daddr = r#"{"payload": {"protocol": "ip", "field": "daddr"}}"#;
    let saddr = r#"{"payload": {"protocol": "ip", "field": "saddr"}}"#;
    let dport = r#"{"payload": {"protocol": "tcp", "field": "dport"}}"#;
    let th_dport = r#"{"payload": {"protocol": "th", "field": "dport"}}"#;
    assert!(matches(daddr, "==", r#""10.9.0.1""#, &p));
    assert!(matches(
        saddr,
        "==",
        r#"{"prefix": {"addr": "10.1.0.0", "len": 16}}"#,
        &p
    ));
    assert!(!matches(
        saddr,
        "!=",
        r#"{"prefix": {"addr": "10.0.0.0", "len": 8}}"#,
        &p
    ));
    assert!(matches(
        saddr,
        "==",
        r#"{"range": ["10.1.2.1", "10.1.2.9"]}"#,
        &p
    ));
    assert!(matches(dport, ">=", "1024", &p));
    assert!(!matches(dport, "<", "1024", &p));
    assert!(matches(dport, ">", "8442", &p));
    assert!(matches(dport, "<=", "8443", &p));
    assert!(matches(th_dport, "!=", "80", &p));
    assert!(matches(
        dport,
        "==",
        r#"{"set": [80, {"range": [8000, 8999]}]}"#,
        &p
    ));
    // `udp dport` on a TCP packet, a port of ICMP, `ip` fields of IPv6: no match either way.
    let udp_dport = r#"{"payload": {"protocol": "udp", "field": "dport"}}"#;
    assert!(!matches(udp_dport, "!=", "53", &p));
    let ping = Packet::new(ip("10.1.2.3"), ip("10.9.0.1"), Protocol::Icmp, 7, 0);
    assert!(!matches(th_dport, "!=", "80", &ping));
    assert!(matches(
        r#"{"payload": {"protocol": "icmp", "field": "type"}}"#,
        "==",
        r#"{"set": ["echo-reply", "echo-request"]}"#,
        &ping
    ));
    assert!(matches(
        r#"{"payload": {"protocol": "ip", "field": "protocol"}}"#,
        "==",
        r#""icmp""#,
        &ping
    ));
    let v6 = Packet::new(ip("fd00::5"), ip("fd00:1::1"), Protocol::Icmp, 7, 0);
    assert!(!matches(daddr, "!=", r#""10.9.0.1""#, &v6));
    assert!(matches(
        r#"{"payload": {"protocol": "ip6", "field": "daddr"}}"#,
        "==",
        r#"{"prefix": {"addr": "fd00:1::", "len": 64}}"#,
        &v6
    ));
    assert!(matches(
        r#"{"payload": {"protocol": "icmpv6", "field": "type"}}"#,
        "==",
        r#""echo-request""#,
        &v6
    ));
    assert!(matches(
        r#"{"meta": {"key": "l4proto"}}"#,
        "==",
        r#""ipv6-icmp""#,
        &v6
    ));
    assert!(matches(
        r#"{"meta": {"key": "nfproto"}}"#,
        "==",
        r#""ipv6""#,
        &v6
    ));
}

#[test]
fn tcp_flags_masks_and_implicit_flag_tests() {
    let flags = r#"{"payload": {"protocol": "tcp", "field": "flags"}}"#;
    let syn = tcp("10.0.0.1", "10.0.0.2", 80);
    let synack = tcp("10.0.0.1", "10.0.0.2", 80).reversed();
    let masked = r#"{"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}"#;
    assert!(matches(masked, "==", r#""syn""#, &syn));
    assert!(!matches(masked, "==", r#""syn""#, &synack));
    assert!(matches(flags, "in", r#""ack""#, &synack));
    assert!(!matches(flags, "in", r#""ack""#, &syn));
}

#[test]
fn meta_interfaces_marks_and_fib_local() {
    let mut p = tcp("10.0.0.1", "10.77.1.1", 22);
    p.iif = Some("veth1a2b".into());
    p.mark = 0x4005;
    let iifname = r#"{"meta": {"key": "iifname"}}"#;
    assert!(matches(iifname, "==", r#""veth*""#, &p));
    assert!(!matches(iifname, "==", r#""veth""#, &p));
    assert!(matches(iifname, "==", r#"{"set": ["lo", "veth*"]}"#, &p));
    assert!(
        !matches(r#"{"meta": {"key": "oifname"}}"#, "!=", r#""eth0""#, &p),
        "no out device yet"
    );
    assert!(matches(
        r#"{"&": [{"meta": {"key": "mark"}}, 16384]}"#,
        "!=",
        "0",
        &p
    ));
    assert!(matches(r#"{"meta": {"key": "mark"}}"#, "==", "16389", &p));
    let fib = r#"{"fib": {"result": "type", "flags": ["daddr"]}}"#;
    assert!(matches(fib, "==", r#""local""#, &p));
    assert!(!matches(
        fib,
        "==",
        r#""local""#,
        &tcp("10.0.0.1", "10.0.0.2", 22)
    ));
    assert!(matches(
        fib,
        "!=",
        r#"{"set": ["local", "broadcast"]}"#,
        &tcp("10.0.0.1", "10.0.0.2", 22)
    ));
}

#[test]
fn named_sets_with_concatenated_intervals_and_interface_names() {
    let sets = [
        r#"{"set": {"family": "inet", "name": "pairs", "table": "t", "type": ["ipv4_addr", "inet_service"], "flags": ["interval"], "elem": [{"concat": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"range": [80, 90]}]}, {"concat": ["192.168.1.1", 443]}]}}"#,
        r#"{"set": {"family": "inet", "name": "names", "table": "t", "type": "ifname", "elem": ["eth0", "veth1"]}}"#,
    ];
    let rule = r#"[{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"payload": {"protocol": "tcp", "field": "dport"}}]}, "right": "@pairs"}}, {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "@names"}}, {"accept": null}]"#;
    let rs = parse(&dump("forward", "drop", &sets, &[rule])).unwrap();
    let verdict = |src: &str, dport: u16, iif: &str| {
        let mut p = tcp(src, "10.99.0.1", dport);
        p.iif = Some(iif.into());
        only(run(rs.clone(), Hook::Forward, &p)).verdict
    };
    assert_eq!(verdict("10.3.3.3", 85, "eth0"), NetfilterVerdict::Accept);
    assert_eq!(verdict("10.3.3.3", 91, "eth0"), NetfilterVerdict::Drop);
    assert_eq!(
        verdict("192.168.1.1", 443, "veth1"),
        NetfilterVerdict::Accept
    );
    assert_eq!(
        verdict("192.168.1.1", 443, "veth10"),
        NetfilterVerdict::Drop
    );
}

#[test]
fn numgen_in_a_match_splits_the_branch() {
    let rule = r#"[{"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 4, "offset": 0}}, "right": 1}}, {"drop": null}]"#;
    let outs = run(
        rules("forward", "accept", &[rule]),
        Hook::Forward,
        &tcp("10.0.0.1", "10.0.0.2", 80),
    );
    assert_eq!(outs.len(), 2);
    let drop = outs
        .iter()
        .find(|o| o.verdict == NetfilterVerdict::Drop)
        .unwrap();
    let pass = outs
        .iter()
        .find(|o| o.verdict == NetfilterVerdict::Accept)
        .unwrap();
    assert!((drop.probability - 0.25).abs() < 1e-9 && (pass.probability - 0.75).abs() < 1e-9);
}

#[test]
fn dnat_to_numgen_map_fans_out_and_snat_redirect_rewrite() {
    let dnat = r#"[{"dnat": {"family": "ip", "addr": {"map": {"key": {"numgen": {"mode": "inc", "mod": 3, "offset": 0}}, "data": {"set": [[0, "10.2.0.1"], [{"range": [1, 2]}, "10.2.0.2"]]}}}, "port": 8080}}]"#;
    let mut outs = run(
        rules("prerouting", "accept", &[dnat]),
        Hook::Prerouting,
        &tcp("10.0.0.1", "10.1.0.1", 80),
    );
    outs.sort_by_key(|o| o.packet.dst);
    let got: Vec<(IpAddr, u16, f64)> = outs
        .iter()
        .map(|o| (o.packet.dst, o.packet.dport, (o.probability * 3.0).round()))
        .collect();
    assert_eq!(
        got,
        [(ip("10.2.0.1"), 8080, 1.0), (ip("10.2.0.2"), 8080, 2.0)]
    );
    assert!(outs.iter().all(|o| o.packet.ct_dnat));

    let snat = r#"[{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}}, {"snat": {"family": "ip", "addr": "1.2.3.4"}}]"#;
    let mut p = tcp("10.0.0.1", "8.8.8.8", 443);
    p.oif = Some("eth0".into());
    let o = only(run(
        rules("postrouting", "accept", &[snat]),
        Hook::Postrouting,
        &p,
    ));
    assert_eq!((o.packet.src, o.packet.sport), (ip("1.2.3.4"), 40000));
    assert_eq!(actions(&o), ["SNAT to 1.2.3.4:40000"]);

    let redirect = r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 15001}}, {"redirect": {"port": 15006}}]"#;
    let o = only(run(
        rules("output", "accept", &[redirect]),
        Hook::Output,
        &tcp("10.0.0.1", "10.5.5.5", 15001),
    ));
    assert_eq!((o.packet.dst, o.packet.dport), (ip("127.0.0.1"), 15006));

    // MASQUERADE with no address on the out device drops, as the kernel does.
    let mut p = tcp("10.0.0.1", "8.8.8.8", 443);
    p.oif = Some("nowhere0".into());
    let o = only(run(
        rules("postrouting", "accept", &[r#"[{"masquerade": null}]"#]),
        Hook::Postrouting,
        &p,
    ));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
}

#[test]
fn jump_goto_return_continue_and_policy() {
    // c: jump sub; continue; (sub: return) ; goto sub → sub ends → policy (goto does not return)
    let rs = rules(
        "forward",
        "drop",
        &[
            r#"[{"jump": {"target": "sub"}}]"#,
            r#"[{"continue": null}]"#,
            r#"[{"goto": {"target": "sub"}}]"#,
            r#"[{"accept": null}]"#,
            r#"sub:[{"counter": null}]"#,
        ],
    );
    let o = only(run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80)));
    assert_eq!(
        actions(&o),
        [
            "jump sub",
            "counter",
            "continue",
            "goto sub",
            "counter",
            "policy DROP"
        ]
    );
    assert_eq!(o.verdict, NetfilterVerdict::Drop);

    let rs = rules(
        "forward",
        "drop",
        &[
            r#"[{"jump": {"target": "sub"}}]"#,
            r#"[{"accept": null}]"#,
            r#"sub:[{"return": null}]"#,
            r#"sub:[{"drop": null}]"#,
        ],
    );
    let o = only(run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80)));
    assert_eq!(actions(&o), ["jump sub", "RETURN", "ACCEPT"]);
}

#[test]
fn vmap_with_prefix_keys_and_queue_and_notrack() {
    let rule = r#"[{"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}}, "data": {"set": [[{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"jump": {"target": "sub"}}], [{"prefix": {"addr": "192.168.0.0", "len": 16}}, {"drop": null}]]}}}]"#;
    let rs = rules(
        "output",
        "accept",
        &[rule, r#"sub:[{"queue": {"num": 3}}]"#],
    );
    let o = only(run(
        rs.clone(),
        Hook::Output,
        &tcp("10.0.0.1", "192.168.3.3", 80),
    ));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
    assert_eq!(actions(&o), ["DROP (vmap)"]);
    let o = only(run(
        rs.clone(),
        Hook::Output,
        &tcp("10.0.0.1", "10.3.3.3", 80),
    ));
    assert_eq!(o.verdict, NetfilterVerdict::Queue { num: 3 });
    let o = only(run(rs, Hook::Output, &tcp("10.0.0.1", "172.16.0.1", 80)));
    assert_eq!(
        (o.verdict, o.trace.len()),
        (NetfilterVerdict::Accept, 1),
        "no element: only the policy"
    );

    let notrack = r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}}, {"notrack": null}]"#;
    let dns = Packet::new(ip("10.0.0.1"), ip("10.0.0.10"), Protocol::Udp, 5353, 53);
    let o = only(run(
        rules("prerouting", "accept", &[notrack]),
        Hook::Prerouting,
        &dns,
    ));
    assert_eq!(o.packet.ct_state, CtState::Untracked);
}

#[test]
fn mark_set_expressions() {
    let rule = r#"[{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"&": [{"meta": {"key": "mark"}}, 4294901762]}, 2]}}}, {"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"meta": {"key": "mark"}}}}]"#;
    let mut p = tcp("10.0.0.1", "10.0.0.2", 80);
    p.mark = 0x1234_00ff;
    let o = only(run(rules("output", "accept", &[rule]), Hook::Output, &p));
    assert_eq!(
        (o.packet.mark, o.packet.ct_mark),
        (0x1234_0002, 0x1234_0002)
    );
    assert_eq!(
        actions(&o),
        [
            "MARK set 0x12340002",
            "CONNMARK set 0x12340002",
            "policy ACCEPT"
        ]
    );
}

#[test]
fn reject_variants() {
    let with = |reject: &str| {
        let rule = format!("[{reject}]");
        match only(run(
            rules("input", "accept", &[&rule]),
            Hook::Input,
            &tcp("10.0.0.1", "10.0.0.2", 80),
        ))
        .verdict
        {
            NetfilterVerdict::Reject { with } => with,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(with(r#"{"reject": null}"#), "icmp port-unreachable");
    assert_eq!(with(r#"{"reject": {"type": "tcp reset"}}"#), "tcp reset");
    assert_eq!(
        with(r#"{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}"#),
        "icmpx admin-prohibited"
    );
}

#[test]
fn unmodelled_statements_affect_only_their_rule_and_are_reported() {
    let rs = rules(
        "forward",
        "drop",
        &[
            // An unknown expression on the left: assumed to match, reported; the rule's drop
            // is taken only because of that assumption, so it is a later rule we check.
            r#"[{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}}, {"counter": null}]"#,
            r#"[{"limit": {"rate": 5, "per": "second"}}, {"frobnicate": {"x": 1}}, {"accept": null}]"#,
        ],
    );
    let o = only(run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80)));
    assert_eq!(o.verdict, NetfilterVerdict::Accept);
    let features: Vec<(&str, u64)> = o
        .unsupported
        .iter()
        .map(|u| (u.feature.as_str(), u.rule.handle.unwrap()))
        .collect();
    assert_eq!(features.len(), 3, "{features:?}");
    assert!(features[0].0.contains("meta skuid is not modelled") && features[0].1 == 10);
    assert!(features[1].0.contains("limit") && features[1].1 == 11);
    assert!(features[2].0.contains("\"frobnicate\" is not modelled") && features[2].1 == 11);
    assert!(o.unsupported.iter().all(|u| u.assumed_match));
}

#[test]
fn unreadable_sets_and_missing_targets_stay_on_their_rule() {
    let sets = [
        r#"{"set": {"family": "inet", "name": "macs", "table": "t", "type": "ipv4_addr", "elem": ["not-an-address"]}}"#,
    ];
    let rs = parse(&dump(
        "forward",
        "drop",
        &sets,
        &[
            r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@macs"}}, {"counter": null}]"#,
            r#"[{"jump": {"target": "missing"}}]"#,
            r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@nosuchset"}}]"#,
            r#"[{"accept": null}]"#,
        ],
    ))
    .unwrap();
    let o = only(run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80)));
    assert_eq!(o.verdict, NetfilterVerdict::Accept);
    let f: Vec<&str> = o.unsupported.iter().map(|u| u.feature.as_str()).collect();
    assert!(
        f[0].contains("set macs: \"not-an-address\" is not an IPv4 address"),
        "{f:?}"
    );
    assert!(
        f[1].contains("chain \"missing\", which the table does not declare"),
        "{f:?}"
    );
    assert!(f[2].contains("set @nosuchset is not declared"), "{f:?}");
}

#[test]
fn goto_loops_end_as_reported_drops() {
    let rs = rules(
        "forward",
        "accept",
        &[
            r#"[{"goto": {"target": "sub"}}]"#,
            r#"sub:[{"goto": {"target": "c"}}]"#,
        ],
    );
    let o = only(run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80)));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
    assert!(o.unsupported[0].feature.starts_with("rule loop"));
    let rs = rules(
        "forward",
        "accept",
        &[
            r#"[{"jump": {"target": "sub"}}]"#,
            r#"sub:[{"jump": {"target": "sub"}}]"#,
        ],
    );
    let o = only(run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80)));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
}

#[test]
fn large_maps_find_exact_and_interval_elements() {
    // 10,000 exact `addr . proto . port` elements (kube-proxy's service-ips on a big cluster)
    // and one prefix element: both kinds are found.
    let mut elems: Vec<String> = (0..10_000u32)
        .map(|i| {
            format!(
                r#"[{{"concat": ["172.30.{}.{}", "tcp", 80]}}, {{"drop": null}}]"#,
                i / 256,
                i % 256
            )
        })
        .collect();
    elems.push(
        r#"[{"concat": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "tcp", 80]}, {"accept": null}]"#
            .into(),
    );
    let map = format!(
        r#"{{"map": {{"family": "inet", "name": "m", "table": "t", "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict", "elem": [{}]}}}}"#,
        elems.join(",")
    );
    let rule = r#"[{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@m"}}]"#;
    let rs = parse(&dump("forward", "accept", &[&map], &[rule])).unwrap();
    let verdict = |dst: &str, port: u16| {
        only(run(rs.clone(), Hook::Forward, &tcp("10.9.9.9", dst, port))).verdict
    };
    assert_eq!(verdict("172.30.30.97", 80), NetfilterVerdict::Drop);
    assert_eq!(verdict("172.30.30.97", 81), NetfilterVerdict::Accept);
    let o = only(run(
        rs.clone(),
        Hook::Forward,
        &tcp("10.9.9.9", "10.1.2.3", 80),
    ));
    assert_eq!(o.trace[0].action, "ACCEPT (vmap @m)");
}

#[test]
fn chained_spreads_stay_within_the_branch_limit() {
    // Three base chains, each `numgen random mod 64 vmap { 0 : accept, …, 63 : accept }`:
    // 64³ paths unbounded; the evaluator stops splitting at the limit and says so.
    let elems: Vec<String> = (0..64)
        .map(|i| format!(r#"[{i}, {{"accept": null}}]"#))
        .collect();
    let rule = format!(
        r#"[{{"vmap": {{"key": {{"numgen": {{"mode": "random", "mod": 64, "offset": 0}}}}, "data": {{"set": [{}]}}}}}}]"#,
        elems.join(",")
    );
    let mut items = vec![r#"{"table": {"family": "inet", "name": "t"}}"#.to_string()];
    for (i, prio) in [0, 1, 2].iter().enumerate() {
        items.push(format!(
            r#"{{"chain": {{"family": "inet", "table": "t", "name": "c{i}", "type": "filter", "hook": "forward", "prio": {prio}, "policy": "accept"}}}}"#
        ));
        items.push(format!(
            r#"{{"rule": {{"family": "inet", "table": "t", "chain": "c{i}", "handle": {i}, "expr": {rule}}}}}"#
        ));
    }
    let rs = parse(&format!(r#"{{"nftables": [{}]}}"#, items.join(","))).unwrap();
    let outs = run(rs, Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert!(
        outs.len() <= 2 * crate::iptables::MAX_BRANCHES,
        "{}",
        outs.len()
    );
    let total: f64 = outs.iter().map(|o| o.probability).sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
    assert!(outs.iter().any(|o| o
        .unsupported
        .iter()
        .any(|u| u.feature.starts_with("fan-out limit"))));
}

#[test]
fn unknown_objects_render_as_json_in_rule_text() {
    // Found by the fuzzer: an unknown object as a value used to recurse without end.
    let rule = r#"[{"match": {"op": "==", "left": {"foo": 1}, "right": {"bar": {"baz": 2}}}}, {"accept": null}]"#;
    let rs = rules("forward", "drop", &[rule]);
    let text = &rs.tables[0].chain("c").unwrap().rules[0].text;
    assert_eq!(text, r#"{"foo":1} {"bar":{"baz":2}} accept"#);
}

#[test]
fn family_specific_nat_in_an_inet_chain_applies_to_its_family_only() {
    let rule = r#"[{"dnat": {"family": "ip6", "addr": "fd00::2", "port": 80}}]"#;
    let v4 = only(run(
        rules("prerouting", "accept", &[rule]),
        Hook::Prerouting,
        &tcp("10.0.0.1", "10.0.0.2", 8080),
    ));
    assert_eq!(v4.packet.dst, ip("10.0.0.2"));
    let v6 = only(run(
        rules("prerouting", "accept", &[rule]),
        Hook::Prerouting,
        &tcp("fd00::1", "fd00::9", 8080),
    ));
    assert_eq!((v6.packet.dst, v6.packet.dport), (ip("fd00::2"), 80));
    assert_eq!(actions(&v6)[0], "DNAT to [fd00::2]:80");
}

#[test]
fn a_native_ip_filter_table_next_to_legacy_iptables_is_evaluated() {
    // Lowercase base chain: not iptables-nft's, so it runs although iptables-save has a filter
    // table too.
    let text = r#"{"nftables": [{"table": {"family": "ip", "name": "filter"}},
      {"chain": {"family": "ip", "table": "filter", "name": "forward", "type": "filter", "hook": "forward", "prio": 10, "policy": "drop"}}]}"#;
    let state = NetnsState {
        nftables: Some(text.into()),
        iptables: Some(IptablesDump {
            backend: IptablesBackend::Legacy,
            ipv4: Some("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n".into()),
            ipv6: None,
        }),
        ..NetnsState::default()
    };
    let (nf, problems) = Netfilter::from_state(&state);
    assert!(problems.is_empty(), "{problems:?}");
    let o = only(nf.run_hook(Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80), &Ctx));
    assert_eq!(o.verdict, NetfilterVerdict::Drop);
    let by = o.decided_by.unwrap();
    assert_eq!(
        (by.source, by.table.as_str()),
        (RuleSource::Nftables, "ip filter")
    );
    assert_eq!(
        o.trace[0].rule.source,
        RuleSource::Iptables,
        "iptables' filter (0) ran first"
    );
}
