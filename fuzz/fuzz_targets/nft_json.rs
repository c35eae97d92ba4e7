//! `nft -j` parsing and evaluation: any input gives a ruleset or an error naming a JSON path,
//! never a panic; a ruleset evaluates at every hook without panicking, and the probabilities of
//! a hook's outcomes add up to 1 (fan-out splits a branch, it never loses or invents flows).
//!
//! Random bytes are rarely JSON, so the first byte picks how the rest is used: as the whole
//! dump, as the `expr` array of one rule in a table that has a set, a verdict map, a data map
//! and a second chain for it to refer to, or as an overwrite at some offset of the recorded
//! kube-proxy node dump (near-valid dumps reach the deep parts of the parser and evaluator).
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use netstack::iptables::{AddrType, EvalContext, SetDirection};
use netstack::netfilter::{Hook, Netfilter};
use netstack::packet::{Packet, Protocol};

const NODE: &str = include_str!("../../crates/netstack/testdata/nft/node.json");

const RULE_TEMPLATE: &str = r#"{"nftables": [
{"table": {"family": "inet", "name": "t"}},
{"chain": {"family": "inet", "table": "t", "name": "c", "type": "nat", "hook": "prerouting", "prio": -100, "policy": "drop"}},
{"chain": {"family": "inet", "table": "t", "name": "sub"}},
{"set": {"family": "inet", "name": "s", "table": "t", "type": ["ipv4_addr", "inet_service"], "flags": ["interval"], "elem": [{"concat": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"range": [80, 90]}]}]}},
{"map": {"family": "inet", "name": "v", "table": "t", "type": "inet_service", "map": "verdict", "elem": [[80, {"goto": {"target": "sub"}}]]}},
{"map": {"family": "inet", "name": "d", "table": "t", "type": ["ipv4_addr", "inet_service"], "map": "ipv4_addr . inet_service", "elem": [[{"concat": ["10.0.0.2", 80]}, {"concat": ["10.1.0.1", 8080]}]]}},
{"rule": {"family": "inet", "table": "t", "chain": "sub", "handle": 2, "expr": [{"return": null}]}},
{"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 1, "expr": EXPR}}]}"#;

struct Ctx;

impl EvalContext for Ctx {
    fn addr_type(&self, addr: IpAddr) -> AddrType {
        if addr.is_loopback() {
            AddrType::Local
        } else {
            AddrType::Unicast
        }
    }
    fn device_address(&self, _dev: &str, _towards: IpAddr) -> Option<IpAddr> {
        Some("10.0.0.254".parse().unwrap())
    }
    fn in_set(&self, _name: &str, _packet: &Packet, _d: &[SetDirection]) -> Option<bool> {
        None
    }
    fn reverse_path_ok(&self, _p: &Packet, _l: bool, _v: bool, _a: bool) -> bool {
        true
    }
}

fuzz_target!(|data: &[u8]| {
    // [mode, offset (2 bytes, for the overwrite mode), text…]
    let [mode, o1, o2, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let dump = match mode % 3 {
        0 => text.to_string(),
        1 => RULE_TEMPLATE.replace("EXPR", text),
        _ => {
            let boundary = |i: usize| {
                (i..NODE.len())
                    .find(|&i| NODE.is_char_boundary(i))
                    .unwrap_or(NODE.len())
            };
            let at = boundary(usize::from(u16::from_le_bytes([*o1, *o2])) * NODE.len() / 65536);
            let end = boundary((at + text.len()).min(NODE.len()));
            format!("{}{}{}", &NODE[..at], text, &NODE[end..])
        }
    };
    let Ok(rules) = netstack::nft::parse(&dump) else {
        return;
    };
    let nf = Netfilter::with_nftables(rules);
    let mut tcp = Packet::new(
        "10.0.0.2".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        Protocol::Tcp,
        4000,
        80,
    );
    tcp.iif = Some("eth0".into());
    tcp.oif = Some("eth1".into());
    let icmp6 = Packet::new(
        "fd00::1".parse().unwrap(),
        "fd00::2".parse().unwrap(),
        Protocol::Icmp,
        1,
        0,
    );
    for packet in [&tcp, &icmp6, &tcp.reversed()] {
        for hook in [
            Hook::Prerouting,
            Hook::Input,
            Hook::Forward,
            Hook::Output,
            Hook::Postrouting,
        ] {
            let outcomes = nf.run_hook(hook, packet, &Ctx);
            let total: f64 = outcomes.iter().map(|o| o.probability).sum();
            assert!(
                (total - 1.0).abs() < 1e-6,
                "probabilities add up to {total} at {hook:?}"
            );
        }
    }
});
