//! Our nft evaluator against the kernel's, on real traffic.
//!
//! Three throw-away namespaces (`nsnft-{cli,node,ep}-<pid>`): a client 10.77.1.2, a node
//! (10.77.1.1 on `nftc0` towards the client, 10.77.2.1 on `nfte0` towards the endpoints) that
//! runs `testdata/nft/kube-proxy.nft` (a kube-proxy nftables-mode ruleset: ClusterIP, NodePort,
//! LoadBalancer source ranges, a service without endpoints, numgen vmaps) and
//! `testdata/nft/firewall.nft` (an `inet filter` forward chain with policy drop, a blocklist set,
//! a port-forward data map), and an endpoint netns 10.77.2.2 + 10.77.2.3 serving TCP 8080, 9999
//! and 5432. The ruleset is read back with the real `nft -j list ruleset`, parsed, and for each
//! probe our verdict (prerouting → forward → postrouting) is checked against what the real
//! packets did: connected (and to which endpoint address, from which source), refused, or
//! silently dropped.
//!
//! Needs root, `nft` and python3; without root the test says so and does nothing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use netstack::iptables::{AddrType, EvalContext, SetDirection};
use netstack::netfilter::{Hook, Netfilter, NetfilterVerdict};
use netstack::packet::{Packet, Protocol};

mod common;
use common::{exec, ip_in, is_root, run, Background, Namespaces};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The node as the evaluator needs to know it: its addresses and devices.
struct Node;

impl EvalContext for Node {
    fn addr_type(&self, addr: IpAddr) -> AddrType {
        if addr == ip("10.77.1.1") || addr == ip("10.77.2.1") {
            AddrType::Local
        } else {
            AddrType::Unicast
        }
    }
    fn device_address(&self, dev: &str, _towards: IpAddr) -> Option<IpAddr> {
        match dev {
            "nftc0" => Some(ip("10.77.1.1")),
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

/// What our model says happens to a client's first packet crossing the node.
#[derive(Debug)]
struct Predicted {
    /// Verdicts of every branch that was stopped, with its probability.
    stopped: Vec<(NetfilterVerdict, f64)>,
    /// `(destination, source)` the endpoint sees, for every branch that gets through.
    delivered: BTreeSet<(IpAddr, IpAddr)>,
}

fn predict(nf: &Netfilter, dst: &str, dport: u16) -> Predicted {
    let mut p = Packet::new(ip("10.77.1.2"), ip(dst), Protocol::Tcp, 40000, dport);
    p.iif = Some("nftc0".into());
    let mut stopped = Vec::new();
    let mut delivered = BTreeSet::new();
    for pre in nf.run_hook(Hook::Prerouting, &p, &Node) {
        if !pre.verdict.passes() {
            stopped.push((pre.verdict, pre.probability));
            continue;
        }
        // The node's routes: connected 10.77.1.0/24 on nftc0, everything else via nfte0.
        let mut routed = pre.packet.clone();
        routed.oif = Some(
            if routed.dst.to_string().starts_with("10.77.1.") {
                "nftc0"
            } else {
                "nfte0"
            }
            .into(),
        );
        for fwd in nf.run_hook(Hook::Forward, &routed, &Node) {
            let probability = pre.probability * fwd.probability;
            if !fwd.verdict.passes() {
                stopped.push((fwd.verdict, probability));
                continue;
            }
            for post in nf.run_hook(Hook::Postrouting, &fwd.packet, &Node) {
                assert!(post.verdict.passes(), "{post:?}");
                delivered.insert((post.packet.dst, post.packet.src));
            }
        }
    }
    Predicted { stopped, delivered }
}

/// What a real connection from the client did.
#[derive(Debug, PartialEq, Eq)]
enum Observed {
    /// The endpoint answered: the address it was reached on and the peer it saw.
    Connected { local: IpAddr, peer: IpAddr },
    /// RST or ICMP unreachable: the connection was refused at once.
    Refused,
    /// Nothing came back: dropped.
    TimedOut,
}

fn connect(client: &str, dst: &str, port: u16) -> Observed {
    let script = "import socket, sys\n\
        s = socket.socket(); s.settimeout(1.5)\n\
        try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print('ok', s.recv(100).decode().strip())\n\
        except ConnectionRefusedError: print('refused')\n\
        except (socket.timeout, TimeoutError): print('timeout')\n";
    let out = exec(client, &["python3", "-c", script, dst, &port.to_string()]);
    let words: Vec<&str> = out.split_whitespace().collect();
    match words.as_slice() {
        ["ok", local, peer] => Observed::Connected {
            local: ip(local),
            peer: ip(peer),
        },
        ["refused"] => Observed::Refused,
        ["timeout"] => Observed::TimedOut,
        _ => panic!("unexpected client output {out:?}"),
    }
}

fn ping(client: &str, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", client, "ping", "-c1", "-W1", dst])
        .output()
        .expect("ping")
        .status
        .success()
}

#[test]
fn nft_verdicts_match_real_traffic_through_a_kube_proxy_nftables_node() {
    if !is_root() {
        eprintln!("SKIPPED nft_verdicts_match_real_traffic_through_a_kube_proxy_nftables_node: needs root");
        return;
    }
    let pid = std::process::id();
    let [client, node, ep] = ["cli", "node", "ep"].map(|role| format!("nsnft-{role}-{pid}"));
    let _guard = Namespaces::create([client.clone(), node.clone(), ep.clone()]);
    for netns in [&client, &node, &ep] {
        ip_in(netns, "link set lo up");
    }
    run(&[
        "ip", "link", "add", "cli0", "netns", &client, "type", "veth", "peer", "name", "nftc0",
        "netns", &node,
    ]);
    run(&[
        "ip", "link", "add", "ep0", "netns", &ep, "type", "veth", "peer", "name", "nfte0", "netns",
        &node,
    ]);
    for (netns, dev, addresses) in [
        (&client, "cli0", &["10.77.1.2/24"][..]),
        (&node, "nftc0", &["10.77.1.1/24"][..]),
        (&node, "nfte0", &["10.77.2.1/24"][..]),
        (&ep, "ep0", &["10.77.2.2/24", "10.77.2.3/24"][..]),
    ] {
        for address in addresses {
            ip_in(netns, &format!("addr add {address} dev {dev}"));
        }
        ip_in(netns, &format!("link set {dev} up"));
    }
    ip_in(&client, "route add default via 10.77.1.1");
    ip_in(&ep, "route add default via 10.77.2.1");
    // The node's uplink: Service addresses that are not DNATed leave towards the endpoint side.
    ip_in(&node, "route add default via 10.77.2.2");
    exec(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/nft");
    for file in ["kube-proxy.nft", "firewall.nft"] {
        exec(&node, &["nft", "-f", testdata.join(file).to_str().unwrap()]);
    }

    // The endpoints: answer every connection with the address reached and the peer seen.
    let serve = "import socket, selectors\n\
        sel = selectors.DefaultSelector()\n\
        for port in (8080, 9999, 5432):\n    \
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    \
            s.bind(('0.0.0.0', port)); s.listen(16); sel.register(s, selectors.EVENT_READ)\n\
        print('ready', flush=True)\n\
        while True:\n    \
            for key, _ in sel.select():\n        \
                c, peer = key.fileobj.accept()\n        \
                c.sendall(('%s %s\\n' % (c.getsockname()[0], peer[0])).encode()); c.close()\n";
    let mut server = Background::python_in(&ep, serve);
    let mut ready = String::new();
    BufReader::new(server.0.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .expect("server output");
    assert_eq!(ready.trim(), "ready");

    let dump = exec(&node, &["nft", "-j", "list", "ruleset"]);
    let state = netstack::state::NetnsState {
        nftables: Some(dump),
        ..Default::default()
    };
    let (nf, problems) = Netfilter::from_state(&state);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(nf.nftables.as_ref().unwrap().tables.len(), 3);

    // ClusterIP: every connection reaches one of the two endpoints, from the client's own
    // address (in-cluster source: no masquerade), and both endpoints are predicted.
    let model = predict(&nf, "172.30.0.41", 80);
    assert!(model.stopped.is_empty(), "{model:?}");
    let endpoints: BTreeSet<(IpAddr, IpAddr)> = [
        (ip("10.77.2.2"), ip("10.77.1.2")),
        (ip("10.77.2.3"), ip("10.77.1.2")),
    ]
    .into();
    assert_eq!(model.delivered, endpoints);
    let mut seen = BTreeSet::new();
    for _ in 0..24 {
        match connect(&client, "172.30.0.41", 80) {
            Observed::Connected { local, peer } => {
                assert!(
                    model.delivered.contains(&(local, peer)),
                    "kernel: {local} from {peer}, model: {model:?}"
                );
                seen.insert((local, peer));
            }
            other => panic!("ClusterIP connection: {other:?}"),
        }
    }
    assert_eq!(
        seen, endpoints,
        "the kernel's numgen chose both endpoints, as the model's fan-out says it can"
    );

    // NodePort: DNAT to the endpoints and masquerade to the node's address on nfte0.
    let model = predict(&nf, "10.77.1.1", 30080);
    let masqueraded: BTreeSet<(IpAddr, IpAddr)> = [
        (ip("10.77.2.2"), ip("10.77.2.1")),
        (ip("10.77.2.3"), ip("10.77.2.1")),
    ]
    .into();
    assert_eq!(model.delivered, masqueraded);
    match connect(&client, "10.77.1.1", 30080) {
        Observed::Connected { local, peer } => {
            assert!(masqueraded.contains(&(local, peer)), "{local} {peer}")
        }
        other => panic!("NodePort connection: {other:?}"),
    }

    // The port-forward data map (`dnat ip to ip daddr . tcp dport map @forwards`).
    let model = predict(&nf, "10.77.1.1", 8888);
    let forwarded = (ip("10.77.2.2"), ip("10.77.1.2"));
    assert_eq!(model.delivered, [forwarded].into());
    assert_eq!(
        connect(&client, "10.77.1.1", 8888),
        Observed::Connected {
            local: forwarded.0,
            peer: forwarded.1
        }
    );

    // Direct to an endpoint port the firewall does not accept: the forward policy drops.
    let model = predict(&nf, "10.77.2.2", 9999);
    assert!(model.delivered.is_empty());
    assert_eq!(model.stopped, [(NetfilterVerdict::Drop, 1.0)]);
    assert_eq!(connect(&client, "10.77.2.2", 9999), Observed::TimedOut);

    // `tcp dport 5432 reject with tcp reset`: refused although the endpoint listens.
    let model = predict(&nf, "10.77.2.2", 5432);
    assert_eq!(
        model.stopped,
        [(
            NetfilterVerdict::Reject {
                with: "tcp reset".into()
            },
            1.0
        )]
    );
    assert_eq!(connect(&client, "10.77.2.2", 5432), Observed::Refused);

    // A Service without endpoints: kube-proxy rejects (ICMP port unreachable → refused).
    let model = predict(&nf, "172.30.0.42", 80);
    assert!(
        matches!(
            model.stopped.as_slice(),
            [(NetfilterVerdict::Reject { .. }, _)]
        ),
        "{model:?}"
    );
    assert_eq!(connect(&client, "172.30.0.42", 80), Observed::Refused);

    // An unallocated ClusterIP: dropped.
    let model = predict(&nf, "172.30.9.9", 80);
    assert_eq!(model.stopped, [(NetfilterVerdict::Drop, 1.0)]);
    assert_eq!(connect(&client, "172.30.9.9", 80), Observed::TimedOut);

    // ICMP echo to an endpoint is accepted by `iifname "nftc*" icmp type echo-request accept`.
    let mut echo = Packet::new(ip("10.77.1.2"), ip("10.77.2.2"), Protocol::Icmp, 1, 0);
    echo.iif = Some("nftc0".into());
    echo.oif = Some("nfte0".into());
    let out = nf.run_hook(Hook::Forward, &echo, &Node);
    assert!(out.iter().all(|o| o.verdict == NetfilterVerdict::Accept));
    assert!(ping(&client, "10.77.2.2"));
}
