//! EndpointSlice conditions as kube-proxy reads them, and kube-proxy's programmed state against
//! the slices: iptables rules rendered by `lab::kube_proxy` (the chains, comments and DNATs
//! kube-proxy writes; the lab applies the same text in real namespaces) and the recorded
//! `/proc/net/ip_vs` of `netstack`'s tests (IPVS cannot run here: no ip_vs module).

use std::collections::BTreeSet;

use k8s_openapi::api::discovery::v1::EndpointConditions;
use lab::kube_proxy::{render_kube_proxy_iptables, synthetic_services};

use super::proxy::{compare, iptables_endpoints, ipvs_endpoints, Programmed};
use super::*;

fn endpoint(ready: Option<bool>, serving: Option<bool>, terminating: Option<bool>) -> Endpoint {
    Endpoint {
        addresses: vec!["10.1.0.2".into()],
        conditions: Some(EndpointConditions {
            ready,
            serving,
            terminating,
        }),
        ..Endpoint::default()
    }
}

#[test]
fn endpoint_conditions_follow_the_api_defaults() {
    // (ready, serving, terminating) as written → as meant.
    let table = [
        ((None, None, None), (true, true, false)),
        ((Some(false), None, None), (false, false, false)),
        ((Some(false), Some(true), Some(true)), (false, true, true)),
        ((Some(true), None, Some(false)), (true, true, false)),
    ];
    for ((r, s, t), want) in table {
        assert_eq!(conditions(&endpoint(r, s, t)), want, "{r:?} {s:?} {t:?}");
    }
    assert_eq!(conditions(&Endpoint::default()), (true, true, false));
}

fn backend(ready: bool, serving: bool, terminating: bool, last: u8) -> Backend<'static> {
    Backend {
        address: IpAddr::from([10, 1, 0, last]),
        port: Some(8080),
        node: None,
        pod: None,
        ready,
        serving,
        terminating,
        hinted: false,
    }
}

#[test]
fn kube_proxy_uses_ready_endpoints_then_falls_back_to_serving_terminating_ones() {
    let mixed = [backend(true, true, false, 1), backend(false, true, true, 2)];
    let used: Vec<u8> = in_use(&mixed)
        .iter()
        .map(|b| last_octet(b.address))
        .collect();
    assert_eq!(used, [1], "ready endpoints win");
    let rollout = [
        backend(false, true, true, 2),
        backend(false, false, true, 3),
        backend(false, false, false, 4),
    ];
    let used: Vec<u8> = in_use(&rollout)
        .iter()
        .map(|b| last_octet(b.address))
        .collect();
    assert_eq!(used, [2], "only terminating endpoints that still serve");
}

fn last_octet(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    }
}

fn endpoints_of(input: &lab::KubeProxyInput) -> BTreeSet<(IpAddr, u16)> {
    input.endpoint_slices[0]
        .endpoints
        .iter()
        .map(|e| (e.addresses[0].parse().expect("address"), 8080))
        .collect()
}

fn place() -> Place {
    Place {
        node: Some("node-1".into()),
        netns: Some("node-1".into()),
        device: None,
    }
}

/// What kube-proxy's iptables rules rendered from `input` program for `bench/svc-0`
/// (ClusterIP 10.96.0.2:80/tcp).
fn svc0_programmed(input: &lab::KubeProxyInput) -> Programmed {
    let rules = netstack::iptables::parse(&render_kube_proxy_iptables(input))
        .expect("kube-proxy rules parse");
    iptables_endpoints(&rules, "10.96.0.2".parse().expect("ip"), 80, "tcp")
        .expect("kube-proxy rules present")
}

/// `bench/svc-0`'s endpoints against what node-1's kube-proxy rules program.
fn compare_svc0(expected: &BTreeSet<(IpAddr, u16)>, programmed: Programmed) -> Option<Finding> {
    compare(
        "bench/svc-0:http",
        "node-1",
        place(),
        FindingCode::ServiceProxyOutOfSync,
        "kube-proxy's iptables rules",
        expected,
        programmed,
    )
}

/// `service`'s endpoints against what node-1's IPVS table schedules.
fn compare_ipvs(
    service: &str,
    expected: &BTreeSet<(IpAddr, u16)>,
    programmed: Programmed,
) -> Option<Finding> {
    compare(
        service,
        "node-1",
        place(),
        FindingCode::ServiceIpvsOutOfSync,
        "the IPVS real servers",
        expected,
        programmed,
    )
}

fn endpoint_set(endpoints: &[(&str, u16)]) -> BTreeSet<(IpAddr, u16)> {
    endpoints
        .iter()
        .map(|(ip, port)| (ip.parse().expect("ip"), *port))
        .collect()
}

#[test]
fn kube_proxy_iptables_rules_in_sync_with_their_slices_raise_nothing() {
    let input = synthetic_services(1, 3);
    let programmed = svc0_programmed(&input);
    assert_eq!(programmed.endpoints.len(), 3);
    assert!(compare_svc0(&endpoints_of(&input), programmed).is_none());
}

#[test]
fn kube_proxy_iptables_rules_from_old_slices_list_stale_and_missing_endpoints() {
    // kube-proxy last synced when the endpoints were .0, .1, .2; now .1 is gone and .9 is new.
    let old = synthetic_services(1, 3);
    let mut expected = endpoints_of(&old);
    expected.remove(&("10.1.0.1".parse().expect("ip"), 8080));
    expected.insert(("10.1.0.9".parse().expect("ip"), 8080));
    let finding = compare_svc0(&expected, svc0_programmed(&old)).expect("out of sync");
    assert_eq!(finding.level, Level::Error);
    assert!(
        finding
            .message
            .contains("stale (not an endpoint any more, still sent traffic): 10.1.0.1:8080"),
        "{}",
        finding.message
    );
    assert!(
        finding
            .message
            .contains("missing (an endpoint, never sent traffic): 10.1.0.9:8080"),
        "{}",
        finding.message
    );
    // The stale endpoint's DNAT rule is the evidence.
    assert!(finding.evidence.iter().any(|e| matches!(e, Evidence::Rule { rule } if rule.text.contains("--to-destination 10.1.0.1:8080"))));
    assert_eq!(finding.owner, Some(Owner::KubeProxy));
}

#[test]
fn kube_proxy_reject_for_a_service_that_has_endpoints_is_out_of_sync() {
    let mut input = synthetic_services(1, 2);
    let expected = endpoints_of(&input);
    input.endpoint_slices.clear();
    let finding = compare_svc0(&expected, svc0_programmed(&input)).expect("out of sync");
    assert!(
        finding
            .message
            .contains("kube-proxy rejects it as having no endpoints"),
        "{}",
        finding.message
    );
}

#[test]
fn a_ruleset_without_kube_proxy_is_not_compared() {
    let rules = netstack::iptables::parse("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").expect("rules");
    assert!(iptables_endpoints(&rules, "10.96.0.2".parse().expect("ip"), 80, "tcp").is_none());
}

/// The `/proc/net/ip_vs` recorded for netstack's parser tests.
const RECORDED_IP_VS: &str = include_str!("../../../netstack/testdata/proc_net_ip_vs");

#[test]
fn ipvs_real_servers_are_compared_with_the_slices() {
    let table = netstack::ipvs::IpvsTable::parse(RECORDED_IP_VS).expect("recorded ip_vs parses");
    let dns: IpAddr = "10.96.0.10".parse().expect("ip");
    let programmed = ipvs_endpoints(&table, &netstack::ipvs::IpvsProtocol::Tcp, dns, 53);
    let in_sync = endpoint_set(&[("10.244.0.3", 53), ("10.244.0.4", 53)]);
    assert!(compare_ipvs("kube-system/kube-dns:dns-tcp", &in_sync, programmed).is_none());

    // 10.96.45.7:80 has a weight-0 (quiesced) real server: it takes no new connections, so an
    // endpoint that is still in the slices is missing from what IPVS schedules.
    let web: IpAddr = "10.96.45.7".parse().expect("ip");
    let programmed = ipvs_endpoints(&table, &netstack::ipvs::IpvsProtocol::Tcp, web, 80);
    let expected = endpoint_set(&[("10.244.1.5", 8080), ("10.244.2.7", 8080)]);
    let finding = compare_ipvs("default/web:http", &expected, programmed).expect("out of sync");
    assert!(
        finding
            .message
            .contains("stale (not an endpoint any more, still sent traffic): 10.244.2.6:8080"),
        "{}",
        finding.message
    );
    assert!(
        finding
            .message
            .contains("missing (an endpoint, never sent traffic): 10.244.2.7:8080"),
        "{}",
        finding.message
    );

    let none = ipvs_endpoints(
        &table,
        &netstack::ipvs::IpvsProtocol::Tcp,
        "10.96.0.99".parse().expect("ip"),
        80,
    );
    let finding = compare_ipvs("default/gone", &expected, none).expect("absent");
    assert!(
        finding
            .message
            .contains("no IPVS virtual service TCP 10.96.0.99:80"),
        "{}",
        finding.message
    );
}
