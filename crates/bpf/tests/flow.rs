//! flow on the real kernel: UDP traffic between two of our namespaces must be counted per
//! namespace, direction and 5-tuple (ports in host order, IP bytes), the host namespace left
//! out by default, and the map bounded.

mod support;

use std::net::{SocketAddr, UdpSocket};

use bpf::flow::{Direction, Flow, FlowCounters, FlowKey};
use bpf::{L4Protocol, NetnsInode, Options, Tuple};
use support::{options, veth_pair, Netns};

fn send(
    ns: &Netns,
    src: &'static str,
    dst: SocketAddr,
    count: usize,
    payload: usize,
) -> SocketAddr {
    ns.run(move || {
        let socket = UdpSocket::bind(src).unwrap();
        for _ in 0..count {
            socket.send_to(&vec![1u8; payload], dst).unwrap();
        }
        socket.local_addr().unwrap()
    })
}

#[test]
fn udp_flow_between_netns_is_counted_on_both_sides() {
    let (a, b) = (Netns::new("flowa"), Netns::new("flowb"));
    let mut probe = Flow::load(&options()).expect("flow loads");
    veth_pair(&a, &b, 43);
    let dst: SocketAddr = "10.77.43.2:5000".parse().unwrap();
    let src = send(&a, "10.77.43.1:0", dst, 10, 100);
    std::thread::sleep(std::time::Duration::from_millis(50));

    let flows = probe.flows().unwrap();
    let tuple = Tuple {
        protocol: L4Protocol::Udp,
        src,
        dst,
    };
    let expected = FlowCounters {
        packets: 10,
        bytes: 10 * (20 + 8 + 100),
    };
    assert_eq!(
        flows.get(&FlowKey {
            netns: a.id(),
            direction: Direction::Egress,
            tuple
        }),
        Some(&expected),
        "{flows:#?}"
    );
    assert_eq!(
        flows.get(&FlowKey {
            netns: b.id(),
            direction: Direction::Ingress,
            tuple
        }),
        Some(&expected)
    );

    let host = NetnsInode(
        std::fs::metadata("/proc/self/ns/net")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
            .unwrap(),
    );
    assert!(
        flows.keys().all(|k| k.netns.inode != host),
        "host netns is skipped by default"
    );

    // Forgetting a namespace (as the agent does for a dead one) deletes its flows only.
    let a_id = a.id();
    assert!(probe.forget_netns(|netns| netns == a_id).unwrap() >= 1);
    let flows = probe.flows().unwrap();
    assert!(flows.keys().all(|k| k.netns != a_id), "{flows:#?}");
    assert!(flows.keys().any(|k| k.netns == b.id()), "{flows:#?}");
}

#[test]
fn flow_map_is_bounded_by_max_entries() {
    let (a, b) = (Netns::new("flowlru-a"), Netns::new("flowlru-b"));
    let probe = Flow::load(&Options {
        max_entries: 64,
        ..options()
    })
    .unwrap();
    veth_pair(&a, &b, 44);
    for port in 0..300u16 {
        let dst = SocketAddr::from(([10, 77, 44, 2], 6000 + port));
        send(&a, "10.77.44.1:0", dst, 1, 10);
    }
    let fill = probe.map_fills().unwrap()[0];
    assert_eq!((fill.map, fill.capacity), ("flows", 64));
    assert!(fill.entries <= 64, "{fill:?}");
    assert!(probe.flows().unwrap().len() <= 64);
    assert_eq!(
        probe.stats().unwrap().map_full,
        0,
        "the LRU evicts instead of failing"
    );
}
