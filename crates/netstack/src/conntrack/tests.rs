use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::packet::{Packet, Protocol, TcpFlags};
use crate::state::{ConntrackEntry, ConntrackState, ConntrackTuple};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> ConntrackTuple {
    ConntrackTuple {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
    }
}

/// Client 10.244.0.5:40000 → Service 10.96.0.10:53, DNATed to pod 10.244.1.7:5353 and
/// masqueraded to the node address 192.168.1.10:61000.
fn dnat_and_masquerade(status: &[&str]) -> ConntrackEntry {
    ConntrackEntry {
        protocol: 6,
        original: tuple("10.244.0.5", 40000, "10.96.0.10", 53),
        reply: tuple("10.244.1.7", 5353, "192.168.1.10", 61000),
        tcp_state: Some("ESTABLISHED".into()),
        mark: 0,
        zone: 0,
        status: status.iter().map(|s| s.to_string()).collect(),
        timeout: Some(431999),
    }
}

fn conntrack(entries: Vec<ConntrackEntry>) -> ConntrackState {
    ConntrackState {
        entries,
        count: Some(10),
        max: Some(262144),
        stats: BTreeMap::new(),
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: TcpFlags) -> Packet {
    Packet {
        tcp_flags: flags,
        ..Packet::new(ip(src), ip(dst), Protocol::Tcp, sport, dport)
    }
}

#[test]
fn original_direction_is_established_once_a_reply_was_seen() {
    let state = conntrack(vec![dnat_and_masquerade(&["ASSURED"])]);
    let table = ConntrackTable::new(&state, Some(true));
    let lookup = table.lookup(&tcp("10.244.0.5", 40000, "10.96.0.10", 53, TcpFlags::ACK));
    assert_eq!(
        (lookup.state, lookup.direction),
        (CtState::Established, CtDirection::Original)
    );
    let binding = lookup.nat.expect("entry is NATed");
    assert!(binding.is_dnat() && binding.is_snat());
}

#[test]
fn unreplied_entry_keeps_retransmissions_new() {
    let state = conntrack(vec![dnat_and_masquerade(&["UNREPLIED"])]);
    let table = ConntrackTable::new(&state, Some(true));
    let lookup = table.lookup(&tcp("10.244.0.5", 40000, "10.96.0.10", 53, TcpFlags::SYN));
    assert_eq!(lookup.state, CtState::New);
    assert_eq!(lookup.reason, CtReason::OriginalTuple { seen_reply: false });
    let netlink = conntrack(vec![dnat_and_masquerade(&["CONFIRMED"])]);
    let lookup = ConntrackTable::new(&netlink, Some(true)).lookup(&tcp(
        "10.244.0.5",
        40000,
        "10.96.0.10",
        53,
        TcpFlags::SYN,
    ));
    assert_eq!(
        lookup.state,
        CtState::New,
        "netlink flags without SEEN_REPLY"
    );
}

#[test]
fn reply_tuple_match_is_established_reply() {
    let state = conntrack(vec![dnat_and_masquerade(&[])]);
    let table = ConntrackTable::new(&state, Some(true));
    let lookup = table.lookup(&tcp(
        "10.244.1.7",
        5353,
        "192.168.1.10",
        61000,
        TcpFlags::SYN_ACK,
    ));
    assert_eq!(
        (lookup.state, lookup.direction),
        (CtState::Established, CtDirection::Reply)
    );
    assert_eq!(lookup.reason, CtReason::ReplyTuple);
}

#[test]
fn tcp_without_entry_syn_is_new_others_invalid_unless_loose_picks_up_ack() {
    let empty = conntrack(Vec::new());
    let packet = |flags| tcp("10.0.0.1", 1234, "10.0.0.2", 80, flags);
    let strict = ConntrackTable::new(&empty, Some(false));
    let loose = ConntrackTable::new(&empty, Some(true));
    let unknown = ConntrackTable::new(&empty, None);
    assert_eq!(strict.lookup(&packet(TcpFlags::SYN)).state, CtState::New);
    assert_eq!(
        strict.lookup(&packet(TcpFlags::ACK)).state,
        CtState::Invalid
    );
    assert_eq!(loose.lookup(&packet(TcpFlags::ACK)).state, CtState::New);
    let assumed = unknown.lookup(&packet(TcpFlags::ACK));
    assert_eq!(assumed.state, CtState::New);
    assert_eq!(
        assumed.reason,
        CtReason::TcpNotSyn {
            loose_assumed: true
        }
    );
    assert_eq!(
        loose.lookup(&packet(TcpFlags::SYN_ACK)).state,
        CtState::Invalid
    );
    let rst = TcpFlags {
        rst: true,
        ..TcpFlags::default()
    };
    assert_eq!(loose.lookup(&packet(rst)).state, CtState::Invalid);
    let syn_fin = TcpFlags {
        fin: true,
        ..TcpFlags::SYN
    };
    assert_eq!(loose.lookup(&packet(syn_fin)).reason, CtReason::BadTcpFlags);
    assert_eq!(
        loose.lookup(&packet(TcpFlags::default())).state,
        CtState::Invalid
    );
}

#[test]
fn udp_and_icmp_without_entry() {
    let empty = conntrack(Vec::new());
    let table = ConntrackTable::new(&empty, None);
    let udp = Packet::new(ip("10.0.0.1"), ip("10.0.0.2"), Protocol::Udp, 5000, 53);
    assert_eq!(table.lookup(&udp).state, CtState::New);
    let echo = Packet::new(ip("10.0.0.1"), ip("10.0.0.2"), Protocol::Icmp, 77, 0);
    assert_eq!(table.lookup(&echo).state, CtState::New);
    let echo_reply = echo.reversed();
    let lookup = table.lookup(&echo_reply);
    assert_eq!(lookup.state, CtState::Invalid);
    assert_eq!(lookup.reason, CtReason::IcmpNotNew { icmp_type: Some(0) });
}

#[test]
fn icmp_echo_reply_matches_by_identifier() {
    let entry = ConntrackEntry {
        protocol: 1,
        original: tuple("10.0.0.1", 77, "10.0.0.2", 0),
        reply: tuple("10.0.0.2", 77, "10.0.0.1", 0),
        tcp_state: None,
        mark: 0,
        zone: 0,
        status: Vec::new(),
        timeout: Some(29),
    };
    let state = conntrack(vec![entry]);
    let table = ConntrackTable::new(&state, None);
    let echo = Packet::new(ip("10.0.0.1"), ip("10.0.0.2"), Protocol::Icmp, 77, 0);
    let lookup = table.lookup(&echo.reversed());
    assert_eq!(
        (lookup.state, lookup.direction),
        (CtState::Established, CtDirection::Reply)
    );
    assert_eq!(lookup.nat, None);
}

#[test]
fn full_table_drops_new_flows_only() {
    let mut state = conntrack(vec![dnat_and_masquerade(&["ASSURED"])]);
    state.count = Some(262144);
    state.stats = BTreeMap::from([("insert_failed".to_string(), 3), ("drop".to_string(), 12)]);
    let table = ConntrackTable::new(&state, Some(true));
    assert_eq!(table.is_full(), Some(true));
    assert!(
        table
            .lookup(&tcp("10.0.0.1", 1, "10.0.0.2", 80, TcpFlags::SYN))
            .table_full
    );
    assert!(
        !table
            .lookup(&tcp("10.244.0.5", 40000, "10.96.0.10", 53, TcpFlags::ACK))
            .table_full
    );
    let stats = table.stats();
    assert_eq!(
        (stats.insert_failed, stats.drop, stats.invalid),
        (Some(3), Some(12), None)
    );
    assert_eq!(stats.fill_ratio(), Some(1.0));
    let unknown = ConntrackState {
        count: None,
        ..state
    };
    assert_eq!(ConntrackTable::new(&unknown, None).is_full(), None);
}

#[test]
fn reply_to_dnat_gets_the_service_address_back() {
    let client = tcp("10.244.0.5", 40000, "10.96.0.10", 53, TcpFlags::SYN);
    let dnated = Packet {
        dst: ip("10.244.1.7"),
        dport: 5353,
        ..client.clone()
    };
    let binding = NatBinding::record(&client, &dnated).expect("NAT changed the packet");
    assert!(binding.is_dnat() && !binding.is_snat());
    let reply = dnated.reversed();
    let seen_by_client = binding
        .un_nat_reply(&reply)
        .expect("reply belongs to the flow");
    assert_eq!(
        (seen_by_client.src, seen_by_client.sport),
        (ip("10.96.0.10"), 53)
    );
    assert_eq!(
        (seen_by_client.dst, seen_by_client.dport),
        (ip("10.244.0.5"), 40000)
    );
    assert_eq!(seen_by_client.ct_direction, CtDirection::Reply);
    assert!(seen_by_client.ct_dnat && !seen_by_client.ct_snat);
    let stranger = Packet {
        sport: 9999,
        ..reply
    };
    assert_eq!(binding.un_nat_reply(&stranger), None);
}

#[test]
fn reply_to_masquerade_gets_the_client_address_back() {
    let pod = tcp("10.244.0.5", 40000, "93.184.216.34", 443, TcpFlags::SYN);
    let masqueraded = Packet {
        src: ip("192.168.1.10"),
        sport: 61000,
        ..pod.clone()
    };
    let binding = NatBinding::record(&pod, &masqueraded).expect("NAT changed the packet");
    assert!(binding.is_snat() && !binding.is_dnat());
    let back = binding
        .un_nat_reply(&masqueraded.reversed())
        .expect("reply belongs");
    assert_eq!((back.dst, back.dport), (ip("10.244.0.5"), 40000));
    assert_eq!((back.src, back.sport), (ip("93.184.216.34"), 443));
    assert!(
        NatBinding::record(&pod, &pod).is_none(),
        "no NAT, no binding"
    );
}

#[test]
fn entry_binding_un_nats_both_rewrites_and_renats_later_packets() {
    let entry = dnat_and_masquerade(&["ASSURED"]);
    let binding = NatBinding::of_entry(&entry).expect("NATed entry");
    let from_pod = tcp("10.244.1.7", 5353, "192.168.1.10", 61000, TcpFlags::ACK);
    let to_client = binding.un_nat_reply(&from_pod).expect("reply belongs");
    assert_eq!((to_client.src, to_client.sport), (ip("10.96.0.10"), 53));
    assert_eq!((to_client.dst, to_client.dport), (ip("10.244.0.5"), 40000));
    let next = tcp("10.244.0.5", 40000, "10.96.0.10", 53, TcpFlags::ACK);
    let natted = binding.nat_original(&next).expect("same flow");
    assert_eq!((natted.src, natted.sport), (ip("192.168.1.10"), 61000));
    assert_eq!((natted.dst, natted.dport), (ip("10.244.1.7"), 5353));
    let plain = ConntrackEntry {
        reply: tuple("10.96.0.10", 53, "10.244.0.5", 40000),
        ..entry
    };
    assert_eq!(NatBinding::of_entry(&plain), None);
}
