//! The collector against real network namespaces (needs root): build two namespaces with a veth
//! between them and one of everything the snapshot describes, collect them, check each part came
//! back as configured, and check that the simulator fed with the collected state gives the
//! kernel's own answers (`ip route get`, real TCP connects through an iptables DROP).
//!
//! Namespaces are named `nslc-<test>-<pid>-{a,b}` and removed by a Drop guard, also on failure.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use collect::collect_netns;
use model::Snapshot;
use netstack::fib::{Fib, FlowKey, RouteOutcome};
use netstack::iptables::StateContext;
use netstack::netfilter::{Hook, Netfilter, NetfilterVerdict};
use netstack::packet::{Packet, Protocol};
use netstack::state::{
    IptablesBackend, LinkKind, NeighState, NetnsState, RouteType, RuleAction, StatePart,
};

/// Two namespaces that exist for one test.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new(test: &str) -> Pair {
        let pid = std::process::id();
        let pair = Pair {
            a: format!("nslc-{test}-{pid}-a"),
            b: format!("nslc-{test}-{pid}-b"),
        };
        pair.drop_namespaces();
        for ns in [&pair.a, &pair.b] {
            run(&["ip", "netns", "add", ns]);
        }
        pair
    }

    fn drop_namespaces(&self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }

    fn path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{ns}"))
    }

    /// Runs `command` inside `ns`.
    fn exec(&self, ns: &str, command: &str) {
        let mut args = vec!["ip", "netns", "exec", ns];
        args.extend(command.split_whitespace());
        run(&args);
    }

    fn exec_output(&self, ns: &str, command: &str) -> String {
        let mut args = vec!["ip", "netns", "exec", ns];
        args.extend(command.split_whitespace());
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.drop_namespaces();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread inside `ns`; sockets it creates stay in `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(Pair::path(ns)).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Namespace A: veth `va` (10.99.0.1/24) to B's `vb` (10.99.0.2/24); a bridge `br0`
/// (10.98.0.1/24) with one end of a local veth pair as its port; a vxlan over `va` with a static FDB entry; a route in table
/// 100 chosen by an `ip rule`, and a different one in main; a permanent neighbour; an iptables
/// DROP for TCP 9000; `ip_forward=1` and `rp_filter=2` on `va`. B: a TCP listener on 8080.
fn build(pair: &Pair) {
    let (a, b) = (&pair.a, &pair.b);
    for cmd in [
        format!("link add va type veth peer name vb netns {b}"),
        "addr add 10.99.0.1/24 dev va".into(),
        "link set va up".into(),
        "link set lo up".into(),
        "link add br0 type bridge".into(),
        "link add p0 type veth peer name p1".into(),
        "link set p0 master br0".into(),
        "link set p1 up".into(),
        "link set p0 up".into(),
        "link set br0 up".into(),
        "addr add 10.98.0.1/24 dev br0".into(),
        "link add vx0 type vxlan id 42 local 10.99.0.1 dstport 4789 dev va nolearning".into(),
        "link set vx0 up".into(),
        "route add 10.50.0.0/16 via 10.98.0.5 dev br0".into(),
        "route add 10.50.0.0/16 via 10.99.0.2 dev va table 100".into(),
        "rule add from 10.99.0.1 to 10.50.0.0/16 lookup 100 pref 1000".into(),
        "neigh add 10.99.0.7 lladdr 02:00:00:00:00:07 dev va nud permanent".into(),
    ] {
        let mut args = vec!["ip", "-n", a.as_str()];
        args.extend(cmd.split_whitespace());
        run(&args);
    }
    for cmd in [
        "addr add 10.99.0.2/24 dev vb",
        "link set vb up",
        "link set lo up",
    ] {
        let mut args = vec!["ip", "-n", b.as_str()];
        args.extend(cmd.split_whitespace());
        run(&args);
    }
    pair.exec(
        a,
        "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.99.0.2 self permanent",
    );
    pair.exec(a, "iptables -A INPUT -p tcp --dport 9000 -j DROP");
    pair.exec(a, "sysctl -qw net.ipv4.ip_forward=1");
    pair.exec(a, "sysctl -qw net.ipv4.conf.va.rp_filter=2");
}

fn collect(pair: &Pair) -> Snapshot {
    let mut reported = Vec::new();
    let snapshot = collect_netns(
        &[Pair::path(&pair.a), Pair::path(&pair.b)],
        &mut |location, _| reported.push(location.id.clone()),
    )
    .expect("collect");
    reported.sort();
    assert_eq!(
        reported,
        vec![pair.a.clone(), pair.b.clone()],
        "progress per namespace"
    );
    // What is written is what is read back.
    let bytes = snapshot.to_bytes(true).unwrap();
    assert_eq!(Snapshot::from_bytes("collected", &bytes).unwrap(), snapshot);
    snapshot
}

fn state<'a>(snapshot: &'a Snapshot, id: &str) -> &'a NetnsState {
    &snapshot
        .netns(id)
        .unwrap_or_else(|| panic!("{id} collected"))
        .state
}

#[test]
fn collects_every_part_of_two_namespaces() {
    let pair = Pair::new("parts");
    build(&pair);
    let listener = in_netns(&pair.b, || TcpListener::bind("10.99.0.2:8080").unwrap());
    let snapshot = collect(&pair);
    drop(listener);
    let a = state(&snapshot, &pair.a);
    let b = state(&snapshot, &pair.b);

    // Links: kinds, state, the veth pair across namespaces, masters, vxlan parameters.
    let va = a.link("va").unwrap();
    assert_eq!(va.kind, LinkKind::Veth);
    assert!(va.admin_up && va.mtu == 1500 && va.mac.is_some());
    let peer = va.peer.as_ref().unwrap();
    assert_eq!(peer.netns.as_deref(), Some(pair.b.as_str()));
    assert_eq!(peer.name.as_deref(), Some("vb"));
    assert_eq!(b.link("vb").unwrap().index, peer.ifindex);
    let back = b.link("vb").unwrap().peer.as_ref().unwrap();
    assert_eq!(
        (back.netns.as_deref(), back.name.as_deref()),
        (Some(pair.a.as_str()), Some("va"))
    );
    assert_eq!(a.link("lo").unwrap().kind, LinkKind::Loopback);
    assert_eq!(a.link("br0").unwrap().kind, LinkKind::Bridge);
    let p0 = a.link("p0").unwrap();
    assert_eq!(p0.master.as_deref(), Some("br0"));
    let local_peer = p0.peer.as_ref().unwrap();
    assert_eq!(local_peer.netns, None, "a veth pair inside one namespace");
    assert_eq!(local_peer.name.as_deref(), Some("p1"));
    let vx0 = a.link("vx0").unwrap();
    assert_eq!(vx0.kind, LinkKind::Vxlan);
    let vxlan = vx0.vxlan.as_ref().unwrap();
    assert_eq!(vxlan.vni, 42);
    assert_eq!(vxlan.port, 4789);
    assert_eq!(vxlan.local, Some("10.99.0.1".parse().unwrap()));
    assert_eq!(vxlan.device.as_deref(), Some("va"));
    assert!(!vxlan.learning);

    // Addresses.
    assert!(a
        .addresses_of("va")
        .any(|x| x.address == "10.99.0.1".parse::<IpAddr>().unwrap() && x.prefix_len == 24));

    // Routes of every table, with type, gateway, device, protocol and preferred source.
    let in_table = |table: u32, dst: &str| {
        a.routes
            .iter()
            .find(|r| r.table == table && r.dst.to_string() == dst)
            .unwrap_or_else(|| panic!("route {dst} in table {table}: {:#?}", a.routes))
    };
    let policy = in_table(100, "10.50.0.0/16");
    assert_eq!(policy.gateway, Some("10.99.0.2".parse().unwrap()));
    assert_eq!(policy.dev.as_deref(), Some("va"));
    let connected = in_table(254, "10.99.0.0/24");
    assert_eq!(connected.protocol.as_deref(), Some("kernel"));
    assert_eq!(connected.prefsrc, Some("10.99.0.1".parse().unwrap()));
    assert_eq!(in_table(255, "10.99.0.1/32").kind, RouteType::Local);
    assert!(
        a.routes.iter().any(|r| r.dst.to_string() == "fe80::/64"),
        "IPv6 routes too"
    );

    // Rules: ours and the kernel's three defaults.
    let rule = a.rules.iter().find(|r| r.priority == 1000).unwrap();
    assert_eq!(rule.action, RuleAction::Lookup);
    assert_eq!(rule.table, 100);
    assert_eq!(rule.from.unwrap().to_string(), "10.99.0.1/32");
    assert_eq!(rule.to.unwrap().to_string(), "10.50.0.0/16");
    for (priority, table) in [(0, 255), (32766, 254), (32767, 253)] {
        assert!(a
            .rules
            .iter()
            .any(|r| r.priority == priority && r.table == table));
    }

    // Neighbours and FDB.
    let neighbour = a
        .neighbours
        .iter()
        .find(|n| n.ip == "10.99.0.7".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_eq!(
        (neighbour.dev.as_str(), neighbour.state),
        ("va", NeighState::Permanent)
    );
    assert_eq!(neighbour.mac.as_deref(), Some("02:00:00:00:00:07"));
    let flood = a
        .fdb
        .iter()
        .find(|f| f.dev == "vx0" && f.mac == "00:00:00:00:00:00")
        .unwrap();
    assert_eq!(flood.dst, Some("10.99.0.2".parse().unwrap()));
    assert!(flood.permanent);
    assert!(a
        .fdb
        .iter()
        .any(|f| f.dev == "p0" && f.master.as_deref() == Some("br0")));

    // Sysctls are per namespace: A's settings are not B's.
    assert_eq!(a.sysctl("net/ipv4/ip_forward"), Some("1"));
    assert_eq!(b.sysctl("net/ipv4/ip_forward"), Some("0"));
    assert_eq!(a.sysctl("net/ipv4/conf/va/rp_filter"), Some("2"));
    assert!(a.sysctl("net/ipv6/conf/va/disable_ipv6").is_some());

    // iptables as iptables-save prints it, with the backend.
    let iptables = a.iptables.as_ref().unwrap();
    assert_eq!(iptables.backend, IptablesBackend::Nft);
    assert!(iptables
        .ipv4
        .as_deref()
        .unwrap()
        .contains("-A INPUT -p tcp -m tcp --dport 9000 -j DROP"));
    assert!(a.nftables.as_deref().unwrap().starts_with("{\"nftables\""));
    assert!(a.ipsets.is_some());

    // The listener is in B only.
    let listening = |s: &NetnsState| {
        s.sockets
            .as_ref()
            .unwrap()
            .iter()
            .any(|l| l.protocol == 6 && l.port == 8080)
    };
    assert!(listening(b) && !listening(a));
    assert!(a.conntrack.is_some());

    // Nothing is missing but IPVS, whose module this kernel does not have.
    for s in [a, b] {
        let missing: Vec<StatePart> = s.missing.iter().map(|m| m.part).collect();
        assert!(
            missing.iter().all(|p| *p == StatePart::Ipvs),
            "{:#?}",
            s.missing
        );
        if s.ipvs.is_none() {
            assert!(s.missing_reason(StatePart::Ipvs).unwrap().contains("ip_vs"));
        }
    }
}

/// `ip route get` output → (gateway, dev), e.g. `10.50.1.1 from 10.99.0.1 via 10.99.0.2 dev va
/// table 100 uid 0`.
fn kernel_route(pair: &Pair, args: &str) -> (Option<IpAddr>, String) {
    let out = pair.exec_output(&pair.a, &format!("ip route get {args}"));
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .map(|i| words[i + 1].to_string())
    };
    (
        after("via").map(|g| g.parse().unwrap()),
        after("dev").unwrap(),
    )
}

#[test]
fn the_simulator_on_collected_state_agrees_with_the_kernel() {
    let pair = Pair::new("agree");
    build(&pair);
    let snapshot = collect(&pair);
    let a = state(&snapshot, &pair.a);
    let fib = Fib::new(a);

    // Policy routing: the source decides between table 100 and main.
    for (src, args) in [
        (Some("10.99.0.1"), "10.50.1.1 from 10.99.0.1"),
        (None, "10.50.1.1"),
        (None, "10.99.0.2"),
        (None, "10.98.0.9"),
    ] {
        let mut flow = FlowKey::to("10.50.1.1".parse().unwrap());
        flow.dst = args.split_whitespace().next().unwrap().parse().unwrap();
        flow.src = src.map(|s| s.parse().unwrap());
        let decision = fib.lookup(&flow);
        let RouteOutcome::Unicast { nexthops } = &decision.outcome else {
            panic!("{args}: {:?}", decision.outcome);
        };
        let ours = (nexthops[0].gateway, nexthops[0].dev.clone().unwrap());
        assert_eq!(ours, kernel_route(&pair, args), "ip route get {args}");
    }
    let decision = fib.lookup(&FlowKey::to("10.77.0.1".parse().unwrap()));
    assert_eq!(decision.outcome, RouteOutcome::NoRoute);
    let kernel = Command::new("ip")
        .args(["netns", "exec", &pair.a, "ip", "route", "get", "10.77.0.1"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&kernel.stderr).contains("Network is unreachable"),
        "the kernel has no route either"
    );

    // Netfilter: the collected ruleset drops TCP 9000 on INPUT and accepts 9001; real
    // connects from B agree.
    let (netfilter, problems) = Netfilter::from_state(a);
    assert!(problems.is_empty(), "{problems:?}");
    let ctx = StateContext::new(a, netfilter.ipsets.clone());
    let verdict = |port: u16| {
        let mut packet = Packet::new(
            "10.99.0.2".parse().unwrap(),
            "10.99.0.1".parse().unwrap(),
            Protocol::Tcp,
            40000,
            port,
        );
        packet.iif = Some("va".into());
        netfilter.run_hook(Hook::Input, &packet, &ctx)[0]
            .verdict
            .clone()
    };
    assert_eq!(verdict(9000), NetfilterVerdict::Drop);
    assert_eq!(verdict(9001), NetfilterVerdict::Accept);
    let listeners = in_netns(&pair.a, || {
        [9000, 9001].map(|port| TcpListener::bind(("10.99.0.1", port)).unwrap())
    });
    let connects = in_netns(&pair.b, || {
        [9000, 9001].map(|port| {
            let addr: SocketAddr = ([10, 99, 0, 1], port).into();
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
    });
    drop(listeners);
    assert_eq!(
        connects,
        [false, true],
        "the kernel: 9000 dropped, 9001 accepted"
    );
}

#[test]
fn a_namespace_that_does_not_exist_is_an_error_naming_it() {
    let err = collect_netns(&[PathBuf::from("/run/netns/nslc-nope-0")], &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("/run/netns/nslc-nope-0"), "{err}");
}
