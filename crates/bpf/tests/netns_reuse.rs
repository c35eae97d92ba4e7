//! A netns inode the kernel hands to a new namespace, on the real kernel. Its own test binary
//! (cargo runs binaries one after another): deleting and re-creating namespaces until the inode
//! comes back would hand inodes to other tests' namespaces while their probes still count the
//! dead ones' drops.

mod support;

use std::net::UdpSocket;

use bpf::packetloss::{DropKey, DropReason, PacketLoss};
use bpf::L3Protocol;
use bpf::L4Protocol;
use support::{options, Netns};

fn no_socket_udp(ns: &Netns, probe: &PacketLoss) -> DropKey {
    let code = probe
        .reason_names()
        .value("NO_SOCKET")
        .expect("reason exists on this kernel") as u32;
    DropKey {
        netns: ns.id(),
        reason: DropReason {
            code,
            name: "NO_SOCKET".into(),
        },
        l3: L3Protocol::Ipv4,
        l4: L4Protocol::Udp,
    }
}

/// `count` datagrams to a closed port on the namespace's loopback: `count` NO_SOCKET drops.
fn send_to_closed_port(ns: &Netns, count: usize) {
    ns.run(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..count {
            socket.send_to(b"netsleuth", "127.0.0.1:9").unwrap();
        }
    });
}

/// The kernel gives a deleted namespace's inode to the next one: the new namespace's drops must
/// be counted apart from the dead one's (the cookie, not the inode, tells them apart), and
/// `forget_netns` must delete the dead namespace's entries and nothing else.
#[test]
fn a_reused_netns_inode_is_counted_apart_and_the_dead_namespace_forgotten() {
    let mut probe = PacketLoss::load(&options()).expect("packetloss loads");
    // Other processes on the machine may take the freed inode first and keep it: then the
    // round starts again with a fresh namespace (a new cookie, so its counts start from zero).
    let mut round = 0;
    let (new, old_key) = loop {
        round += 1;
        assert!(
            round <= 5,
            "the kernel did not hand a freed netns inode back in 5 rounds"
        );
        let old = Netns::new("plreuse-old");
        let old_key = no_socket_udp(&old, &probe);
        send_to_closed_port(&old, 4);
        assert_eq!(probe.counts().unwrap().get(&old_key), Some(&4));
        if let Some(new) = old.replace_with_same_inode("plreuse-new") {
            break (new, old_key);
        }
    };
    let new_key = no_socket_udp(&new, &probe);
    assert_eq!(new_key.netns.inode, old_key.netns.inode);
    assert_ne!(new_key.netns.cookie, old_key.netns.cookie);
    send_to_closed_port(&new, 2);
    let counts = probe.counts().unwrap();
    assert_eq!(counts.get(&new_key), Some(&2), "{counts:#?}");
    assert_eq!(counts.get(&old_key), Some(&4), "{counts:#?}");

    let inode = new_key.netns.inode;
    let live = new_key.netns.cookie;
    let forgotten = probe
        .forget_netns(|netns| netns.inode == inode && netns.cookie != live)
        .unwrap();
    let counts = probe.counts().unwrap();
    assert!(forgotten >= 1, "the dead namespace's entry went");
    assert!(
        counts
            .keys()
            .all(|k| k.netns.inode != inode || k.netns.cookie == live),
        "{counts:#?}"
    );
    assert_eq!(counts.get(&new_key), Some(&2), "{counts:#?}");
}
