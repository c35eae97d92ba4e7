//! Differential test: our conntrack model against the kernel's, on a real NATed flow.
//!
//! Three throw-away namespaces (`nsfib-ct-…`): a client, a router that DNATs a "service"
//! address 10.96.0.50:53/udp to a server at 10.32.0.2:5353 and masquerades towards it, and the
//! server. One datagram goes there and back. We read the router's table with `conntrack -L`
//! (parsed here, test code only; the collector uses netlink), and check that our table classifies
//! the packets the kernel saw and that our un-NAT of the server's reply gives exactly the
//! address the client's socket received it from.
//!
//! Needs root (network namespaces, iptables); without it the test says so and does nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Child;

use netstack::conntrack::{ConntrackTable, NatBinding};
use netstack::packet::{CtDirection, CtState, Packet, Protocol};
use netstack::state::{ConntrackEntry, ConntrackState, ConntrackTuple};

mod common;
use common::{exec, ip_in, is_root, run, Background, Namespaces};

/// `udp 17 29 src=… dst=… sport=… dport=… src=… dst=… sport=… dport=… [ASSURED] mark=0 use=1`
fn parse_conntrack_line(line: &str) -> ConntrackEntry {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut tuples: Vec<BTreeMap<&str, &str>> = Vec::new();
    let mut status = Vec::new();
    let mut mark = 0;
    for word in &words[3..] {
        match word.split_once('=') {
            Some(("src", _)) if tuples.last().is_none_or(|t| t.contains_key("src")) => {
                tuples.push(BTreeMap::from([("src", &word[4..])]));
            }
            Some(("mark", value)) => mark = value.parse().expect("mark"),
            Some((key @ ("src" | "dst" | "sport" | "dport"), value)) => {
                tuples.last_mut().expect("tuple").insert(key, value);
            }
            Some(_) => {}
            None if word.starts_with('[') => status.push(word.trim_matches(['[', ']']).to_string()),
            None => {}
        }
    }
    let tuple = |t: &BTreeMap<&str, &str>| ConntrackTuple {
        src: t["src"].parse().expect("src"),
        dst: t["dst"].parse().expect("dst"),
        sport: t["sport"].parse().expect("sport"),
        dport: t["dport"].parse().expect("dport"),
    };
    ConntrackEntry {
        protocol: words[1].parse().expect("protocol number"),
        original: tuple(&tuples[0]),
        reply: tuple(&tuples[1]),
        tcp_state: None,
        mark,
        zone: 0,
        status,
        timeout: words[2].parse().ok(),
    }
}

/// "ADDRESS PORT" as the Python helpers print it.
fn endpoint(text: &str) -> (IpAddr, u16) {
    let (address, port) = text.split_once(' ').expect("address and port");
    (
        address.parse().expect("address"),
        port.parse().expect("port"),
    )
}

#[test]
fn reply_un_nat_and_states_agree_with_kernel_conntrack() {
    if !is_root() {
        eprintln!("SKIPPED reply_un_nat_and_states_agree_with_kernel_conntrack: needs root");
        return;
    }
    let pid = std::process::id();
    let [client, router, server] =
        ["cli", "rt", "srv"].map(|role| format!("nsfib-ct-{role}-{pid}"));
    let _guard = Namespaces::create([client.clone(), router.clone(), server.clone()]);
    for netns in [&client, &router, &server] {
        ip_in(netns, "link set lo up");
    }
    let (c0, r0, r1, s0) = ("fibc0", "fibr0", "fibr1", "fibs0");
    run(&[
        "ip", "link", "add", c0, "netns", &client, "type", "veth", "peer", "name", r0, "netns",
        &router,
    ]);
    run(&[
        "ip", "link", "add", s0, "netns", &server, "type", "veth", "peer", "name", r1, "netns",
        &router,
    ]);
    for (netns, dev, address) in [
        (&client, c0, "10.31.0.2/24"),
        (&router, r0, "10.31.0.1/24"),
        (&router, r1, "10.32.0.1/24"),
        (&server, s0, "10.32.0.2/24"),
    ] {
        ip_in(netns, &format!("addr add {address} dev {dev}"));
        ip_in(netns, &format!("link set {dev} up"));
    }
    ip_in(&client, "route add default via 10.31.0.1");
    ip_in(&server, "route add default via 10.32.0.1");
    exec(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    exec(
        &router,
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            "10.96.0.50",
            "-p",
            "udp",
            "--dport",
            "53",
            "-j",
            "DNAT",
            "--to-destination",
            "10.32.0.2:5353",
        ],
    );
    exec(
        &router,
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            r1,
            "-j",
            "MASQUERADE",
        ],
    );

    let echo_once = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10)\n\
        s.bind(('10.32.0.2', 5353)); data, peer = s.recvfrom(100); s.sendto(data, peer)\n\
        print(peer[0], peer[1])";
    let mut server_process = Background::python_in(&server, echo_once);
    // the server binds in well under a second; the client retries in case it has not yet
    let ask = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n\
        s.bind(('10.31.0.2', 40000))\n\
        for attempt in range(10):\n    \
            s.sendto(b'hello', ('10.96.0.50', 53))\n    \
            try:\n        data, peer = s.recvfrom(100); break\n    \
            except socket.timeout: pass\n\
        print(peer[0], peer[1])";
    let client_saw = endpoint(&exec(&client, &["python3", "-c", ask]));
    let server_output = finish(&mut server_process.0);
    let server_saw = endpoint(&server_output);

    let listing = exec(&router, &["conntrack", "-L", "-n", "-p", "udp"]);
    let entries: Vec<ConntrackEntry> = listing
        .lines()
        .filter(|l| l.starts_with("udp"))
        .map(parse_conntrack_line)
        .collect();
    assert_eq!(entries.len(), 1, "one flow expected, got:\n{listing}");
    let state = ConntrackState {
        entries,
        count: exec(
            &router,
            &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"],
        )
        .parse()
        .ok(),
        max: exec(
            &router,
            &["cat", "/proc/sys/net/netfilter/nf_conntrack_max"],
        )
        .parse()
        .ok(),
        stats: BTreeMap::new(),
    };
    let table = ConntrackTable::new(&state, Some(true));
    assert_eq!(table.is_full(), Some(false));

    // the server's reply, as it left the server
    let reply = Packet::new(
        ip_of("10.32.0.2"),
        server_saw.0,
        Protocol::Udp,
        5353,
        server_saw.1,
    );
    let found = table.lookup(&reply);
    assert_eq!(
        (found.state, found.direction),
        (CtState::Established, CtDirection::Reply)
    );
    let binding = found.nat.expect("the kernel entry is NATed");
    assert!(binding.is_dnat() && binding.is_snat());
    let delivered = binding
        .un_nat_reply(&reply)
        .expect("reply belongs to the flow");
    assert_eq!(
        (delivered.src, delivered.sport),
        client_saw,
        "reply source after un-NAT"
    );
    assert_eq!(
        (delivered.dst, delivered.dport),
        (ip_of("10.31.0.2"), 40000)
    );

    // what NAT did on the way there, recorded from the two ends, is the kernel's binding
    let sent = Packet::new(
        ip_of("10.31.0.2"),
        ip_of("10.96.0.50"),
        Protocol::Udp,
        40000,
        53,
    );
    let arrived = Packet {
        src: server_saw.0,
        sport: server_saw.1,
        dst: ip_of("10.32.0.2"),
        dport: 5353,
        ..sent.clone()
    };
    assert_eq!(NatBinding::record(&sent, &arrived), Some(binding));

    let again = table.lookup(&sent);
    assert_eq!(
        (again.state, again.direction),
        (CtState::Established, CtDirection::Original)
    );
    let other_port = Packet {
        sport: 40001,
        ..sent
    };
    assert_eq!(table.lookup(&other_port).state, CtState::New);
}

fn ip_of(text: &str) -> IpAddr {
    text.parse().expect("address")
}

/// Wait for the server and return what it printed (the guard keeps the process, so a failed
/// assertion before this point still kills it).
fn finish(child: &mut Child) -> String {
    use std::io::Read;
    let mut out = String::new();
    if let Some(stdout) = child.stdout.as_mut() {
        stdout.read_to_string(&mut out).expect("read server output");
    }
    let status = child.wait().expect("server exit");
    assert!(status.success(), "server failed: {out}");
    out.trim().to_string()
}
