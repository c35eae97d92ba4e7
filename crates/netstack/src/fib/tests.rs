use std::net::IpAddr;

use ipnet::IpNet;

use super::neigh::*;
use super::sysctl::ArpIgnore;
use super::*;
use crate::state::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn net(text: &str) -> IpNet {
    text.parse().expect("test prefix")
}

fn link(index: u32, name: &str, kind: LinkKind) -> Link {
    Link {
        index,
        name: name.to_string(),
        kind,
        admin_up: true,
        oper_state: OperState::Up,
        mtu: 1500,
        mac: None,
        master: None,
        peer: None,
        vxlan: None,
        tunnel: None,
        noarp: false,
    }
}

fn address(dev: &str, cidr: &str) -> Address {
    let prefix: IpNet = net(cidr);
    Address {
        dev: dev.to_string(),
        address: prefix.addr(),
        prefix_len: prefix.prefix_len(),
        scope: Scope::Universe,
    }
}

fn route(table: u32, dst: &str) -> Route {
    Route {
        table,
        dst: net(dst),
        kind: RouteType::Unicast,
        gateway: None,
        dev: None,
        prefsrc: None,
        metric: 0,
        scope: Scope::Universe,
        protocol: None,
        onlink: false,
        mtu: None,
        nexthops: Vec::new(),
    }
}

fn via(table: u32, dst: &str, gateway: &str, dev: &str) -> Route {
    Route {
        gateway: Some(ip(gateway)),
        dev: Some(dev.to_string()),
        ..route(table, dst)
    }
}

fn connected(dst: &str, dev: &str) -> Route {
    Route {
        dev: Some(dev.to_string()),
        scope: Scope::Link,
        ..route(table::MAIN, dst)
    }
}

fn typed(table: u32, dst: &str, kind: RouteType) -> Route {
    Route {
        kind,
        ..route(table, dst)
    }
}

fn rule(priority: u32, table: u32) -> RoutingRule {
    RoutingRule {
        priority,
        ..default_rules(Family::Inet).remove(0)
    }
    .with_table(table)
}

impl RoutingRule {
    fn with_table(mut self, table: u32) -> RoutingRule {
        self.table = table;
        self
    }
}

/// A host with eth0 (192.168.1.10/24, default via .1), dummy1 (10.1.0.1/24) and lo.
fn host() -> NetnsState {
    let mut state = NetnsState {
        links: vec![
            link(1, "lo", LinkKind::Loopback),
            link(2, "eth0", LinkKind::Device),
            link(3, "dummy1", LinkKind::Dummy),
        ],
        addresses: vec![
            Address {
                scope: Scope::Host,
                ..address("lo", "127.0.0.1/8")
            },
            address("eth0", "192.168.1.10/24"),
            address("dummy1", "10.1.0.1/24"),
        ],
        routes: vec![
            via(table::MAIN, "0.0.0.0/0", "192.168.1.1", "eth0"),
            connected("192.168.1.0/24", "eth0"),
            connected("10.1.0.0/24", "dummy1"),
        ],
        ..NetnsState::default()
    };
    for a in state.addresses.clone() {
        state.routes.push(Route {
            kind: RouteType::Local,
            dev: Some(a.dev.clone()),
            prefsrc: Some(a.address),
            scope: Scope::Host,
            ..route(table::LOCAL, &format!("{}/32", a.address))
        });
    }
    state.routes.push(Route {
        kind: RouteType::Broadcast,
        dev: Some("eth0".to_string()),
        prefsrc: Some(ip("192.168.1.10")),
        scope: Scope::Link,
        ..route(table::LOCAL, "192.168.1.255/32")
    });
    state.rules = default_rules(Family::Inet);
    state
}

fn first_hop(decision: &RouteDecision) -> &ChosenNextHop {
    match &decision.outcome {
        RouteOutcome::Unicast { nexthops } => &nexthops[0],
        other => panic!("expected unicast, got {other:?}"),
    }
}

fn dev_of(decision: &RouteDecision) -> Option<&str> {
    first_hop(decision).dev.as_deref()
}

// ---- tables: longest prefix, metric, route types ----

#[test]
fn longest_prefix_wins_over_default() {
    let state = host();
    let fib = Fib::new(&state);
    let decision = fib.lookup(&FlowKey::to(ip("10.1.0.7")));
    assert_eq!(dev_of(&decision), Some("dummy1"));
    assert_eq!(first_hop(&decision).gateway, None);
    assert_eq!(
        decision.route.as_ref().map(|r| r.dst),
        Some(net("10.1.0.0/24"))
    );
    let decision = fib.lookup(&FlowKey::to(ip("8.8.8.8")));
    assert_eq!(first_hop(&decision).gateway, Some(ip("192.168.1.1")));
    assert_eq!(
        first_hop(&decision).neighbour_target(ip("8.8.8.8")),
        ip("192.168.1.1")
    );
}

#[test]
fn lower_metric_wins_for_equal_prefix() {
    let mut state = host();
    state.routes.push(Route {
        metric: 50,
        ..via(table::MAIN, "172.16.0.0/12", "10.1.0.254", "dummy1")
    });
    state.routes.push(Route {
        metric: 10,
        ..via(table::MAIN, "172.16.0.0/12", "192.168.1.2", "eth0")
    });
    let decision = Fib::new(&state).lookup(&FlowKey::to(ip("172.16.3.3")));
    assert_eq!(first_hop(&decision).gateway, Some(ip("192.168.1.2")));
}

#[test]
fn reject_route_types_and_their_errnos() {
    for (kind, expected, errno) in [
        (
            RouteType::Blackhole,
            RouteOutcome::Blackhole {
                by: DecidedBy::Route,
            },
            "EINVAL",
        ),
        (
            RouteType::Unreachable,
            RouteOutcome::Unreachable {
                by: DecidedBy::Route,
            },
            "EHOSTUNREACH",
        ),
        (
            RouteType::Prohibit,
            RouteOutcome::Prohibit {
                by: DecidedBy::Route,
            },
            "EACCES",
        ),
    ] {
        let mut state = host();
        state.routes.push(typed(table::MAIN, "10.99.0.0/16", kind));
        let decision = Fib::new(&state).lookup(&FlowKey::to(ip("10.99.1.1")));
        assert_eq!(decision.outcome, expected);
        assert_eq!(decision.outcome.errno(), Some(errno));
        assert_eq!(decision.route.map(|r| r.kind), Some(kind));
    }
}

#[test]
fn no_route_is_enetunreach() {
    let mut state = host();
    state.routes.retain(|r| r.dst.prefix_len() != 0);
    let decision = Fib::new(&state).lookup(&FlowKey::to(ip("8.8.8.8")));
    assert_eq!(decision.outcome, RouteOutcome::NoRoute);
    assert_eq!(decision.outcome.errno(), Some("ENETUNREACH"));
    let results: Vec<_> = decision.trail.iter().map(|s| s.result.clone()).collect();
    assert_eq!(results, vec![RuleStepResult::NoRouteInTable; 3]);
}

#[test]
fn local_address_is_delivered_locally_with_itself_as_source() {
    let state = host();
    let fib = Fib::new(&state);
    let decision = fib.lookup(&FlowKey::to(ip("10.1.0.1")));
    assert_eq!(
        decision.outcome,
        RouteOutcome::Local {
            source: Some(ip("10.1.0.1"))
        }
    );
    assert_eq!(decision.rule.map(|r| r.table), Some(table::LOCAL));
    assert!(fib.is_local_address(ip("192.168.1.10")));
    assert!(!fib.is_local_address(ip("192.168.1.11")));
}

#[test]
fn broadcast_route_type() {
    let state = host();
    let decision = Fib::new(&state).lookup(&FlowKey::to(ip("192.168.1.255")));
    assert_eq!(
        decision.outcome,
        RouteOutcome::Broadcast {
            dev: Some("eth0".to_string()),
            source: Some(ip("192.168.1.10"))
        }
    );
}

#[test]
fn throw_route_falls_through_to_next_rule() {
    let mut state = host();
    state.rules.push(rule(100, 100));
    state
        .routes
        .push(typed(100, "10.1.0.0/16", RouteType::Throw));
    state
        .routes
        .push(via(100, "0.0.0.0/0", "10.1.0.254", "dummy1"));
    let fib = Fib::new(&state);
    let thrown = fib.lookup(&FlowKey::to(ip("10.1.0.7")));
    assert_eq!(dev_of(&thrown), Some("dummy1"));
    assert_eq!(
        first_hop(&thrown).gateway,
        None,
        "main's connected route, not table 100's default"
    );
    assert!(thrown
        .trail
        .iter()
        .any(|s| s.rule.priority == 100 && matches!(s.result, RuleStepResult::Throw { .. })));
    let elsewhere = fib.lookup(&FlowKey::to(ip("8.8.8.8")));
    assert_eq!(first_hop(&elsewhere).gateway, Some(ip("10.1.0.254")));
}

#[test]
fn dead_next_hop_is_skipped_for_a_less_specific_route() {
    let mut state = host();
    state.links.push(Link {
        admin_up: false,
        ..link(4, "down0", LinkKind::Dummy)
    });
    state.routes.push(connected("8.8.0.0/16", "down0"));
    let decision = Fib::new(&state).lookup(&FlowKey::to(ip("8.8.8.8")));
    assert_eq!(dev_of(&decision), Some("eth0"));
}

#[test]
fn multipath_returns_every_hop_with_weights() {
    let mut state = host();
    state.routes.push(Route {
        nexthops: vec![
            NextHop {
                gateway: Some(ip("192.168.1.2")),
                dev: Some("eth0".into()),
                weight: 1,
                onlink: false,
            },
            NextHop {
                gateway: Some(ip("10.1.0.2")),
                dev: Some("dummy1".into()),
                weight: 3,
                onlink: true,
            },
        ],
        ..route(table::MAIN, "172.20.0.0/16")
    });
    let decision = Fib::new(&state).lookup(&FlowKey::to(ip("172.20.1.1")));
    let RouteOutcome::Unicast { nexthops } = decision.outcome else {
        panic!("unicast expected")
    };
    let summary: Vec<_> = nexthops
        .iter()
        .map(|h| (h.dev.as_deref(), h.gateway, h.weight, h.onlink, h.source))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                Some("eth0"),
                Some(ip("192.168.1.2")),
                1,
                false,
                Some(ip("192.168.1.10"))
            ),
            (
                Some("dummy1"),
                Some(ip("10.1.0.2")),
                3,
                true,
                Some(ip("10.1.0.1"))
            ),
        ]
    );
}

#[test]
fn route_mtu_overrides_device_mtu() {
    let mut state = host();
    state.routes.push(Route {
        mtu: Some(1400),
        onlink: true,
        ..via(table::MAIN, "10.244.1.0/24", "10.244.1.0", "dummy1")
    });
    let fib = Fib::new(&state);
    let hop = first_hop(&fib.lookup(&FlowKey::to(ip("10.244.1.5")))).clone();
    assert_eq!(
        (hop.mtu, hop.mtu_from, hop.onlink),
        (Some(1400), Some(MtuSource::Route), true)
    );
    let hop = first_hop(&fib.lookup(&FlowKey::to(ip("10.1.0.9")))).clone();
    assert_eq!(
        (hop.mtu, hop.mtu_from),
        (Some(1500), Some(MtuSource::Device))
    );
}

// ---- preferred source ----

#[test]
fn prefsrc_from_route_else_primary_address_of_device() {
    let mut state = host();
    state.addresses.push(address("eth0", "192.168.1.99/24")); // secondary: never picked
    state.addresses.push(address("eth0", "172.31.0.5/16"));
    state.routes.push(Route {
        prefsrc: Some(ip("10.1.0.1")),
        ..via(table::MAIN, "10.50.0.0/16", "192.168.1.3", "eth0")
    });
    state
        .routes
        .push(via(table::MAIN, "10.60.0.0/16", "172.31.0.1", "eth0"));
    let fib = Fib::new(&state);
    let source = |dst| first_hop(&fib.lookup(&FlowKey::to(ip(dst)))).source;
    assert_eq!(source("10.50.1.1"), Some(ip("10.1.0.1")), "route src wins");
    assert_eq!(
        source("8.8.8.8"),
        Some(ip("192.168.1.10")),
        "primary in the gateway's subnet"
    );
    assert_eq!(
        source("10.60.1.1"),
        Some(ip("172.31.0.5")),
        "the address whose subnet holds the gateway"
    );
    let given = fib.lookup(&FlowKey {
        src: Some(ip("10.1.0.1")),
        ..FlowKey::to(ip("8.8.8.8"))
    });
    assert_eq!(
        first_hop(&given).source,
        Some(ip("10.1.0.1")),
        "an already chosen source stays"
    );
}

#[test]
fn prefsrc_falls_back_to_another_device_when_out_device_has_no_address() {
    let mut state = host();
    state.links.push(link(5, "tun0", LinkKind::Tun));
    state.routes.push(connected("10.70.0.0/16", "tun0"));
    let decision = Fib::new(&state).lookup(&FlowKey::to(ip("10.70.0.1")));
    assert_eq!(
        first_hop(&decision).source,
        Some(ip("192.168.1.10")),
        "lowest ifindex, not lo's host scope"
    );
}

// ---- rules ----

fn policy_host(extra: RoutingRule) -> NetnsState {
    let mut state = host();
    state.rules.push(extra);
    state
        .routes
        .push(via(100, "0.0.0.0/0", "10.1.0.254", "dummy1"));
    state
}

fn uses_table_100(state: &NetnsState, flow: FlowKey) -> bool {
    first_hop(&Fib::new(state).lookup(&flow)).gateway == Some(ip("10.1.0.254"))
}

fn flow(dst: &str) -> FlowKey {
    FlowKey::to(ip(dst))
}

#[test]
fn fwmark_selector_with_and_without_mask() {
    let state = policy_host(RoutingRule {
        fwmark: Some(0x100),
        fwmask: Some(0xf00),
        ..rule(100, 100)
    });
    assert!(uses_table_100(
        &state,
        FlowKey {
            fwmark: 0x1ff,
            ..flow("8.8.8.8")
        }
    ));
    assert!(!uses_table_100(
        &state,
        FlowKey {
            fwmark: 0x200,
            ..flow("8.8.8.8")
        }
    ));
    let exact = policy_host(RoutingRule {
        fwmark: Some(0x4000),
        ..rule(100, 100)
    });
    assert!(uses_table_100(
        &exact,
        FlowKey {
            fwmark: 0x4000,
            ..flow("8.8.8.8")
        }
    ));
    assert!(!uses_table_100(
        &exact,
        FlowKey {
            fwmark: 0x4001,
            ..flow("8.8.8.8")
        }
    ));
}

#[test]
fn iif_selector_sees_local_traffic_as_lo() {
    let state = policy_host(RoutingRule {
        iif: Some("lo".into()),
        ..rule(100, 100)
    });
    assert!(uses_table_100(&state, flow("8.8.8.8")));
    let forwarded = FlowKey {
        src: Some(ip("192.168.1.50")),
        iif: Some("eth0".into()),
        ..flow("8.8.8.8")
    };
    assert!(!uses_table_100(&state, forwarded));
}

#[test]
fn oif_selector_needs_a_bound_socket() {
    let state = policy_host(RoutingRule {
        oif: Some("dummy1".into()),
        ..rule(100, 100)
    });
    assert!(!uses_table_100(&state, flow("8.8.8.8")));
    assert!(uses_table_100(
        &state,
        FlowKey {
            oif: Some("dummy1".into()),
            ..flow("8.8.8.8")
        }
    ));
}

#[test]
fn from_and_to_selectors() {
    let state = policy_host(RoutingRule {
        from: Some(net("10.244.0.0/16")),
        ..rule(100, 100)
    });
    assert!(uses_table_100(
        &state,
        FlowKey {
            src: Some(ip("10.244.3.3")),
            ..flow("8.8.8.8")
        }
    ));
    assert!(
        !uses_table_100(&state, flow("8.8.8.8")),
        "no source yet: the unspecified address"
    );
    let state = policy_host(RoutingRule {
        to: Some(net("8.8.0.0/16")),
        ..rule(100, 100)
    });
    assert!(uses_table_100(&state, flow("8.8.8.8")));
    assert!(!uses_table_100(&state, flow("9.9.9.9")));
}

#[test]
fn ipproto_and_port_range_selectors() {
    let state = policy_host(RoutingRule {
        ip_proto: Some(6),
        sport: Some((1000, 2000)),
        dport: Some((443, 443)),
        ..rule(100, 100)
    });
    let tcp = FlowKey {
        ip_proto: 6,
        sport: 1500,
        dport: 443,
        ..flow("8.8.8.8")
    };
    assert!(uses_table_100(&state, tcp.clone()));
    assert!(!uses_table_100(
        &state,
        FlowKey {
            ip_proto: 17,
            ..tcp.clone()
        }
    ));
    assert!(!uses_table_100(
        &state,
        FlowKey {
            sport: 2001,
            ..tcp.clone()
        }
    ));
    assert!(!uses_table_100(&state, FlowKey { dport: 80, ..tcp }));
}

#[test]
fn not_inverts_the_selector() {
    let state = policy_host(RoutingRule {
        invert: true,
        fwmark: Some(1),
        ..rule(100, 100)
    });
    assert!(uses_table_100(&state, flow("8.8.8.8")));
    assert!(!uses_table_100(
        &state,
        FlowKey {
            fwmark: 1,
            ..flow("8.8.8.8")
        }
    ));
}

#[test]
fn rule_actions_reject_with_their_errnos() {
    for (action, expected, errno) in [
        (
            RuleAction::Blackhole,
            RouteOutcome::Blackhole {
                by: DecidedBy::Rule,
            },
            "EINVAL",
        ),
        (
            RuleAction::Unreachable,
            RouteOutcome::Unreachable {
                by: DecidedBy::Rule,
            },
            "ENETUNREACH",
        ),
        (
            RuleAction::Prohibit,
            RouteOutcome::Prohibit {
                by: DecidedBy::Rule,
            },
            "EACCES",
        ),
    ] {
        let state = policy_host(RoutingRule {
            action,
            to: Some(net("8.8.8.0/24")),
            ..rule(50, 0)
        });
        let decision = Fib::new(&state).lookup(&flow("8.8.8.8"));
        assert_eq!(decision.outcome, expected);
        assert_eq!(decision.outcome.errno(), Some(errno));
        assert_eq!(decision.rule.map(|r| r.priority), Some(50));
        assert_eq!(decision.route, None);
    }
}

#[test]
fn goto_skips_rules_and_unresolved_goto_continues() {
    let mut state = policy_host(RoutingRule {
        action: RuleAction::Goto,
        goto: Some(300),
        ..rule(50, 0)
    });
    state.rules.push(RoutingRule {
        action: RuleAction::Blackhole,
        ..rule(200, 0)
    });
    state.rules.push(rule(300, 100));
    let decision = Fib::new(&state).lookup(&flow("8.8.8.8"));
    assert_eq!(
        first_hop(&decision).gateway,
        Some(ip("10.1.0.254")),
        "rule 200 skipped"
    );
    assert_eq!(
        decision.trail[1].result,
        RuleStepResult::Goto {
            target: 300,
            resolved: true
        }
    );
    state.rules.retain(|r| r.priority != 300);
    let decision = Fib::new(&state).lookup(&flow("8.8.8.8"));
    assert_eq!(
        decision.outcome,
        RouteOutcome::Blackhole {
            by: DecidedBy::Rule
        }
    );
    assert_eq!(
        decision.trail[1].result,
        RuleStepResult::Goto {
            target: 300,
            resolved: false
        }
    );
}

#[test]
fn nop_rule_continues() {
    let state = policy_host(RoutingRule {
        action: RuleAction::Nop,
        ..rule(50, 0)
    });
    let decision = Fib::new(&state).lookup(&flow("8.8.8.8"));
    assert!(decision
        .trail
        .iter()
        .any(|s| s.result == RuleStepResult::Nop));
    assert_eq!(first_hop(&decision).gateway, Some(ip("192.168.1.1")));
}

#[test]
fn suppress_prefixlength_ignores_the_default_route_only() {
    // the wg-quick pattern: consult main but ignore its default route
    let mut state = policy_host(RoutingRule {
        suppress_prefixlen: Some(0),
        ..rule(10, table::MAIN)
    });
    state.rules.push(rule(20, 100));
    let fib = Fib::new(&state);
    let default = fib.lookup(&flow("8.8.8.8"));
    assert_eq!(first_hop(&default).gateway, Some(ip("10.1.0.254")));
    assert!(matches!(
        default.trail[1].result,
        RuleStepResult::Suppressed { .. }
    ));
    let specific = fib.lookup(&flow("192.168.1.77"));
    assert_eq!(specific.rule.map(|r| r.priority), Some(10));
}

#[test]
fn missing_table_falls_through_and_missing_rules_assume_defaults() {
    let mut state = policy_host(rule(10, 4242));
    let decision = Fib::new(&state).lookup(&flow("8.8.8.8"));
    assert_eq!(decision.trail[1].result, RuleStepResult::NoRouteInTable);
    assert!(!decision.default_rules_assumed);
    state.rules.clear();
    let decision = Fib::new(&state).lookup(&flow("8.8.8.8"));
    assert!(decision.default_rules_assumed);
    assert_eq!(first_hop(&decision).gateway, Some(ip("192.168.1.1")));
}

#[test]
fn oif_bound_lookup_without_route_assumes_onlink() {
    let mut state = host();
    state.routes.retain(|r| r.dst.prefix_len() != 0);
    let decision = Fib::new(&state).lookup(&FlowKey {
        oif: Some("eth0".into()),
        ..flow("8.8.8.8")
    });
    assert!(decision.assumed_onlink_via_oif);
    assert_eq!(dev_of(&decision), Some("eth0"));
}

// ---- IPv6 ----

#[test]
fn ipv6_lookup_uses_v6_rules_and_tables() {
    let mut state = host();
    state.addresses.push(address("eth0", "fd00:1::10/64"));
    state.routes.push(Route {
        dev: Some("eth0".into()),
        ..route(table::MAIN, "fd00:1::/64")
    });
    state
        .routes
        .push(via(table::MAIN, "::/0", "fd00:1::1", "eth0"));
    state
        .routes
        .push(typed(table::MAIN, "fd00:dead::/32", RouteType::Unreachable));
    state.routes.push(Route {
        kind: RouteType::Local,
        dev: Some("eth0".into()),
        ..route(table::LOCAL, "fd00:1::10/128")
    });
    let fib = Fib::new(&state);
    let out = fib.lookup(&flow("2001:db8::1"));
    assert_eq!(first_hop(&out).gateway, Some(ip("fd00:1::1")));
    assert_eq!(first_hop(&out).source, Some(ip("fd00:1::10")));
    assert!(out.default_rules_assumed, "host() has only IPv4 rules");
    assert_eq!(out.rule.map(|r| r.family), Some(Family::Inet6));
    assert_eq!(
        fib.lookup(&flow("fd00:dead::1")).outcome.errno(),
        Some("EHOSTUNREACH")
    );
    assert!(matches!(
        fib.lookup(&flow("fd00:1::10")).outcome,
        RouteOutcome::Local { .. }
    ));
    assert_eq!(
        fib.rules(Family::Inet6).len(),
        2,
        "IPv6 has no default-table rule"
    );
}

// ---- reverse path filter ----

fn asymmetric() -> NetnsState {
    // replies to 10.9.0.0/16 leave by dummy1, but packets from there may arrive on eth0
    let mut state = host();
    state
        .routes
        .push(via(table::MAIN, "10.9.0.0/16", "10.1.0.254", "dummy1"));
    state
}

#[test]
fn rp_filter_strict_drops_asymmetric_path_loose_passes() {
    let state = asymmetric();
    let fib = Fib::new(&state);
    let check = |mode| fib.reverse_path(mode, "eth0", ip("10.9.1.1"), ip("192.168.1.10"), 0, false);
    match check(RpFilterMode::Strict) {
        ReversePath::Drop {
            reason: RpDropReason::WrongInterface { expected, via },
            ..
        } => {
            assert_eq!(
                (expected.as_str(), via),
                ("eth0", vec!["dummy1".to_string()])
            );
        }
        other => panic!("strict must drop: {other:?}"),
    }
    assert_eq!(check(RpFilterMode::Loose), ReversePath::Pass);
    assert_eq!(check(RpFilterMode::Off), ReversePath::Pass);
    let symmetric = fib.reverse_path(
        RpFilterMode::Strict,
        "dummy1",
        ip("10.9.1.1"),
        ip("10.1.0.1"),
        0,
        false,
    );
    assert_eq!(symmetric, ReversePath::Pass);
}

#[test]
fn rp_filter_drops_without_reverse_route_or_with_local_source() {
    let mut state = host();
    state.routes.retain(|r| r.dst.prefix_len() != 0);
    let fib = Fib::new(&state);
    let no_route = fib.reverse_path(
        RpFilterMode::Loose,
        "eth0",
        ip("8.8.8.8"),
        ip("192.168.1.10"),
        0,
        false,
    );
    assert!(matches!(
        no_route,
        ReversePath::Drop {
            reason: RpDropReason::NoRoute,
            ..
        }
    ));
    let spoofed = fib.reverse_path(
        RpFilterMode::Loose,
        "eth0",
        ip("10.1.0.1"),
        ip("192.168.1.10"),
        0,
        false,
    );
    assert!(matches!(
        spoofed,
        ReversePath::Drop {
            reason: RpDropReason::LocalSource,
            ..
        }
    ));
    let allowed = fib.reverse_path(
        RpFilterMode::Loose,
        "eth0",
        ip("10.1.0.1"),
        ip("192.168.1.10"),
        0,
        true,
    );
    assert_eq!(allowed, ReversePath::Pass);
}

#[test]
fn rp_filter_reverse_lookup_uses_the_given_mark() {
    let mut state = asymmetric();
    state.rules.push(RoutingRule {
        fwmark: Some(7),
        ..rule(10, 100)
    });
    state
        .routes
        .push(via(100, "10.9.0.0/16", "192.168.1.1", "eth0"));
    let fib = Fib::new(&state);
    let strict = |mark| {
        fib.reverse_path(
            RpFilterMode::Strict,
            "eth0",
            ip("10.9.1.1"),
            ip("192.168.1.10"),
            mark,
            false,
        )
    };
    assert!(matches!(strict(0), ReversePath::Drop { .. }));
    assert_eq!(strict(7), ReversePath::Pass);
}

// ---- display ----

#[test]
fn rules_print_as_ip_rule_does() {
    let full = RoutingRule {
        invert: true,
        from: Some(net("10.0.0.0/8")),
        to: Some(net("192.168.0.0/16")),
        fwmark: Some(0x4000),
        fwmask: Some(0x4000),
        iif: Some("eth0".into()),
        ip_proto: Some(6),
        dport: Some((80, 90)),
        suppress_prefixlen: Some(0),
        ..rule(100, table::MAIN)
    };
    assert_eq!(
        full.to_string(),
        "100:\tnot from 10.0.0.0/8 to 192.168.0.0/16 fwmark 0x4000/0x4000 iif eth0 ipproto tcp dport 80-90 lookup main suppress_prefixlength 0"
    );
    assert_eq!(
        rule(0, table::LOCAL).to_string(),
        "0:\tfrom all lookup local"
    );
    let exact_mark = RoutingRule {
        fwmark: Some(1),
        fwmask: Some(u32::MAX),
        ..rule(5, 7)
    };
    assert_eq!(exact_mark.to_string(), "5:\tfrom all fwmark 0x1 lookup 7");
    let goto = RoutingRule {
        action: RuleAction::Goto,
        goto: Some(300),
        ..rule(6, 0)
    };
    assert_eq!(goto.to_string(), "6:\tfrom all goto 300");
    let blackhole = RoutingRule {
        action: RuleAction::Blackhole,
        ..rule(7, 0)
    };
    assert_eq!(blackhole.to_string(), "7:\tfrom all blackhole");
}

#[test]
fn routes_print_as_ip_route_does() {
    let default = Route {
        protocol: Some("dhcp".into()),
        prefsrc: Some(ip("192.168.1.10")),
        metric: 100,
        ..via(table::MAIN, "0.0.0.0/0", "192.168.1.1", "eth0")
    };
    assert_eq!(
        default.to_string(),
        "default via 192.168.1.1 dev eth0 proto dhcp src 192.168.1.10 metric 100"
    );
    let host_route = Route {
        kind: RouteType::Local,
        scope: Scope::Host,
        dev: Some("eth0".into()),
        ..route(table::LOCAL, "10.1.0.1/32")
    };
    assert_eq!(
        host_route.to_string(),
        "local 10.1.0.1 dev eth0 table local scope host"
    );
    let blackhole = Route {
        protocol: Some("static".into()),
        ..typed(100, "10.0.0.0/8", RouteType::Blackhole)
    };
    assert_eq!(
        blackhole.to_string(),
        "blackhole 10.0.0.0/8 table 100 proto static"
    );
    let flannel = Route {
        onlink: true,
        mtu: Some(1450),
        ..via(table::MAIN, "10.244.1.0/24", "10.244.1.0", "flannel.1")
    };
    assert_eq!(
        flannel.to_string(),
        "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink mtu 1450"
    );
}

// ---- sysctls ----

fn with_sysctls(pairs: &[(&str, &str)]) -> NetnsState {
    NetnsState {
        sysctls: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..host()
    }
}

#[test]
fn rp_filter_is_the_max_of_all_and_device_and_unknown_when_missing() {
    let state = with_sysctls(&[
        ("net/ipv4/conf/all/rp_filter", "1"),
        ("net/ipv4/conf/eth0/rp_filter", "2"),
        ("net/ipv4/conf/dummy1/rp_filter", "0"),
    ]);
    assert_eq!(
        state.rp_filter("eth0").map(|r| r.value),
        Some(RpFilterMode::Loose)
    );
    let strict = state.rp_filter("dummy1").expect("both known");
    assert_eq!(strict.value, RpFilterMode::Strict);
    assert_eq!(
        strict.from[0],
        ("net/ipv4/conf/all/rp_filter".to_string(), "1".to_string())
    );
    assert_eq!(
        state.rp_filter("lo"),
        None,
        "all=1 alone cannot rule out dev=2"
    );
    let loose_all = with_sysctls(&[("net/ipv4/conf/all/rp_filter", "2")]);
    assert_eq!(
        loose_all.rp_filter("lo").map(|r| r.value),
        Some(RpFilterMode::Loose)
    );
}

#[test]
fn flag_sysctls_are_typed_and_missing_means_unknown() {
    let state = with_sysctls(&[
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/conf/eth0/forwarding", "0"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/ipv4/conf/all/proxy_arp", "0"),
        ("net/ipv4/conf/eth0/proxy_arp", "1"),
        ("net/ipv4/conf/all/arp_ignore", "0"),
        ("net/ipv4/conf/eth0/arp_ignore", "2"),
        ("net/netfilter/nf_conntrack_tcp_loose", "garbage"),
    ]);
    assert_eq!(state.ip_forward().map(|r| r.value), Some(true));
    assert_eq!(state.ipv4_forwarding("eth0").map(|r| r.value), Some(false));
    assert_eq!(state.ipv4_forwarding("dummy1"), None);
    assert_eq!(state.bridge_nf_call_iptables().map(|r| r.value), Some(true));
    assert_eq!(state.proxy_arp("eth0").map(|r| r.value), Some(true));
    assert_eq!(state.proxy_arp("dummy1"), None);
    assert_eq!(
        state.arp_ignore("eth0").map(|r| r.value),
        Some(ArpIgnore::TargetAndSenderSubnet)
    );
    assert_eq!(state.arp_filter("eth0"), None);
    assert_eq!(
        state.conntrack_tcp_loose(),
        None,
        "an unparsable value is unknown"
    );
}

// ---- neighbours, bridge and vxlan FDB, ARP answers ----

fn neighbour(dev: &str, addr: &str, mac: Option<&str>, state: NeighState) -> Neighbour {
    Neighbour {
        dev: dev.into(),
        ip: ip(addr),
        mac: mac.map(str::to_string),
        state,
        proxy: false,
    }
}

fn fdb(dev: &str, mac: &str) -> FdbEntry {
    FdbEntry {
        dev: dev.into(),
        mac: mac.into(),
        master: None,
        dst: None,
        vni: None,
        vlan: None,
        permanent: false,
    }
}

#[test]
fn neighbour_states_decide_between_resolved_and_would_arp() {
    let mut state = host();
    state.neighbours = vec![
        neighbour(
            "eth0",
            "192.168.1.1",
            Some("aa:bb:cc:00:00:01"),
            NeighState::Stale,
        ),
        neighbour("eth0", "192.168.1.2", None, NeighState::Failed),
        neighbour(
            "eth0",
            "192.168.1.3",
            Some("aa:bb:cc:00:00:03"),
            NeighState::Permanent,
        ),
    ];
    assert_eq!(
        resolve_neighbour(&state, "eth0", ip("192.168.1.1")).mac(),
        Some("aa:bb:cc:00:00:01")
    );
    assert_eq!(
        resolve_neighbour(&state, "eth0", ip("192.168.1.3")).mac(),
        Some("aa:bb:cc:00:00:03")
    );
    assert!(matches!(
        resolve_neighbour(&state, "eth0", ip("192.168.1.2")),
        NeighbourResolution::WouldArp {
            found: Some(Neighbour {
                state: NeighState::Failed,
                ..
            })
        }
    ));
    assert_eq!(
        resolve_neighbour(&state, "eth0", ip("192.168.1.4")),
        NeighbourResolution::WouldArp { found: None }
    );
    assert!(
        matches!(
            resolve_neighbour(&state, "dummy1", ip("192.168.1.1")),
            NeighbourResolution::WouldArp { found: None }
        ),
        "entries are per device"
    );
    state.links.push(Link {
        noarp: true,
        ..link(6, "tunl0", LinkKind::Ipip)
    });
    assert_eq!(
        resolve_neighbour(&state, "tunl0", ip("10.0.0.1")),
        NeighbourResolution::NotNeeded {
            why: NoNeighbourNeeded::NoarpDevice
        }
    );
}

fn bridged() -> NetnsState {
    let mut state = host();
    state.links.push(Link {
        mac: Some("02:00:00:00:00:01".into()),
        ..link(10, "cni0", LinkKind::Bridge)
    });
    for (index, name, mac) in [
        (11, "veth1", "02:00:00:00:01:01"),
        (12, "veth2", "02:00:00:00:01:02"),
    ] {
        state.links.push(Link {
            master: Some("cni0".into()),
            mac: Some(mac.into()),
            ..link(index, name, LinkKind::Veth)
        });
    }
    state.fdb = vec![
        FdbEntry {
            master: Some("cni0".into()),
            ..fdb("veth2", "0a:58:0a:f4:00:05")
        },
        FdbEntry {
            master: Some("cni0".into()),
            permanent: true,
            ..fdb("veth1", "02:00:00:00:01:01")
        },
    ];
    state
}

#[test]
fn bridge_fdb_picks_the_port_floods_unknown_and_keeps_own_macs() {
    let state = bridged();
    assert!(matches!(
        bridge_forward(&state, "cni0", "0A:58:0A:F4:00:05", None),
        BridgeForwarding::Port { ref port, .. } if port == "veth2"
    ));
    assert_eq!(
        bridge_forward(&state, "cni0", "0a:58:0a:f4:00:99", None),
        BridgeForwarding::Flood {
            ports: vec!["veth1".into(), "veth2".into()]
        }
    );
    assert!(matches!(
        bridge_forward(&state, "cni0", "02:00:00:00:01:01", None),
        BridgeForwarding::Local { entry: Some(_) }
    ));
    assert_eq!(
        bridge_forward(&state, "cni0", "02:00:00:00:00:01", None),
        BridgeForwarding::Local { entry: None }
    );
}

fn flannel() -> NetnsState {
    let mut state = host();
    state.links.push(Link {
        noarp: false,
        vxlan: Some(VxlanInfo {
            vni: 1,
            local: Some(ip("192.168.1.10")),
            remote: None,
            port: 8472,
            device: Some("eth0".into()),
            learning: false,
        }),
        ..link(20, "flannel.1", LinkKind::Vxlan)
    });
    state.neighbours.push(neighbour(
        "flannel.1",
        "10.244.1.0",
        Some("66:77:88:99:aa:bb"),
        NeighState::Permanent,
    ));
    state.fdb.push(FdbEntry {
        dst: Some(ip("192.168.1.11")),
        permanent: true,
        ..fdb("flannel.1", "66:77:88:99:aa:bb")
    });
    state
}

#[test]
fn vxlan_next_hop_resolves_through_neighbour_and_fdb_to_the_remote_vtep() {
    let state = flannel();
    let resolution = resolve_link_layer(&state, "flannel.1", ip("10.244.1.0"));
    assert_eq!(resolution.neighbour.mac(), Some("66:77:88:99:aa:bb"));
    match resolution.forwarding {
        Some(LayerTwoForwarding::Vxlan(VxlanForwarding::Remotes { vteps, source, .. })) => {
            assert_eq!(
                (vteps, source),
                (vec![ip("192.168.1.11")], VxlanRemoteSource::MacEntry)
            );
        }
        other => panic!("expected a VTEP, got {other:?}"),
    }
    let missing = resolve_link_layer(&state, "flannel.1", ip("10.244.2.0"));
    assert_eq!(
        missing.neighbour,
        NeighbourResolution::WouldArp { found: None }
    );
    assert_eq!(missing.forwarding, None);
}

#[test]
fn vxlan_unknown_mac_uses_flood_entries_then_device_remote_else_drops() {
    let mut state = flannel();
    assert_eq!(
        vxlan_forward(&state, "flannel.1", "de:ad:be:ef:00:01"),
        VxlanForwarding::NoRemote
    );
    state.fdb.push(FdbEntry {
        dst: Some(ip("192.168.1.12")),
        ..fdb("flannel.1", ALL_ZERO_MAC)
    });
    state.fdb.push(FdbEntry {
        dst: Some(ip("192.168.1.13")),
        ..fdb("flannel.1", ALL_ZERO_MAC)
    });
    assert!(matches!(
        vxlan_forward(&state, "flannel.1", "de:ad:be:ef:00:01"),
        VxlanForwarding::Remotes { ref vteps, source: VxlanRemoteSource::AllZeroEntry, .. }
            if vteps == &vec![ip("192.168.1.12"), ip("192.168.1.13")]
    ));
    state.fdb.retain(|e| e.mac != ALL_ZERO_MAC);
    if let Some(vxlan) = state.links.iter_mut().find_map(|l| l.vxlan.as_mut()) {
        vxlan.remote = Some(ip("239.1.1.1"));
    }
    assert!(matches!(
        vxlan_forward(&state, "flannel.1", "de:ad:be:ef:00:01"),
        VxlanForwarding::Remotes {
            source: VxlanRemoteSource::DeviceDefault,
            ..
        }
    ));
}

#[test]
fn proxy_arp_answers_for_addresses_routed_elsewhere_when_forwarding() {
    // calico: the pod's gateway 169.254.1.1 is answered by the host side of the veth
    let mut state = with_sysctls(&[
        ("net/ipv4/conf/cali1/proxy_arp", "1"),
        ("net/ipv4/conf/all/proxy_arp", "0"),
        ("net/ipv4/conf/cali1/forwarding", "1"),
    ]);
    state.links.push(link(30, "cali1", LinkKind::Veth));
    let fib = Fib::new(&state);
    assert!(matches!(
        answers_arp(&fib, "cali1", ip("169.254.1.1"), ip("10.244.0.5")),
        ArpAnswer::ProxyArp { ref route_dev, .. } if route_dev == "eth0"
    ));
    state
        .sysctls
        .insert("net/ipv4/conf/cali1/forwarding".into(), "0".into());
    let fib = Fib::new(&state);
    assert_eq!(
        answers_arp(&fib, "cali1", ip("169.254.1.1"), ip("10.244.0.5")),
        ArpAnswer::NoAnswer {
            reason: NoArpAnswer::ForwardingOff
        }
    );
}

#[test]
fn proxy_neighbour_entry_answers_without_proxy_arp_sysctl() {
    let mut state = with_sysctls(&[("net/ipv4/conf/dummy1/forwarding", "1")]);
    state.neighbours.push(Neighbour {
        proxy: true,
        ..neighbour("dummy1", "192.168.1.77", None, NeighState::Permanent)
    });
    let fib = Fib::new(&state);
    assert!(matches!(
        answers_arp(&fib, "dummy1", ip("192.168.1.77"), ip("10.1.0.9")),
        ArpAnswer::ProxyEntry { .. }
    ));
    assert_eq!(
        answers_arp(&fib, "dummy1", ip("192.168.1.78"), ip("10.1.0.9")),
        ArpAnswer::Unknown {
            missing_sysctl: "net/ipv4/conf/dummy1/proxy_arp".into()
        }
    );
}

#[test]
fn arp_ignore_decides_answers_for_own_addresses() {
    let answer = |mode: &str| {
        let state = with_sysctls(&[
            ("net/ipv4/conf/all/arp_ignore", "0"),
            ("net/ipv4/conf/eth0/arp_ignore", mode),
            ("net/ipv4/conf/all/arp_filter", "0"),
            ("net/ipv4/conf/eth0/arp_filter", "0"),
        ]);
        let fib = Fib::new(&state);
        // 10.1.0.1 lives on dummy1, the request arrives on eth0
        answers_arp(&fib, "eth0", ip("10.1.0.1"), ip("192.168.1.50"))
    };
    assert!(matches!(answer("0"), ArpAnswer::OwnAddress { .. }));
    assert_eq!(
        answer("1"),
        ArpAnswer::NoAnswer {
            reason: NoArpAnswer::ArpIgnore {
                mode: ArpIgnore::TargetOnDevice
            }
        }
    );
    assert!(matches!(answer("8"), ArpAnswer::NoAnswer { .. }));
}
