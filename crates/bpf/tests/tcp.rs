//! tcpreset and tcpretrans on the real kernel: resets from connecting to a closed port and
//! from an aborted connection, and retransmissions forced by an iptables DROP on an
//! established connection, all inside our own network namespaces.

mod support;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bpf::tcpreset::{ResetKey, ResetKind, TcpReset};
use bpf::tcpretrans::{RetransKey, TcpRetrans};
use bpf::{L4Protocol, TcpState};
use support::{options, Netns};

#[test]
fn connect_to_closed_port_counts_a_sent_and_a_received_reset_with_tuples() {
    let ns = Netns::new("rst");
    let mut probe = TcpReset::load(&options()).expect("tcpreset loads");
    let closed: SocketAddr = "127.0.0.1:4321".parse().unwrap();
    let refused = ns.run(move || TcpStream::connect(closed).unwrap_err().kind());
    assert_eq!(refused, ErrorKind::ConnectionRefused);

    let counts = probe.counts().unwrap();
    let at = |kind, state| {
        counts
            .get(&ResetKey {
                netns: ns.id(),
                kind,
                state,
            })
            .copied()
    };
    assert_eq!(
        at(ResetKind::SentNoSocket, TcpState::NoSocket),
        Some(1),
        "{counts:#?}"
    );
    assert_eq!(
        at(ResetKind::Received, TcpState::SynSent),
        Some(1),
        "{counts:#?}"
    );

    let events: Vec<_> = probe
        .drain_events()
        .into_iter()
        .filter(|e| e.netns == ns.inode())
        .collect();
    let sent = events
        .iter()
        .find(|e| e.kind == ResetKind::SentNoSocket)
        .expect("sent reset event");
    let sent_tuple = sent.tuple.unwrap();
    assert_eq!(sent_tuple.protocol, L4Protocol::Tcp);
    assert_eq!(
        sent_tuple.src, closed,
        "src is the resetting end, port in host order"
    );
    assert_eq!(sent.reason.as_deref(), Some("NO_SOCKET"));
    let received = events
        .iter()
        .find(|e| e.kind == ResetKind::Received)
        .expect("received reset event");
    let received_tuple = received.tuple.unwrap();
    assert_eq!(received_tuple.dst, closed);
    assert_eq!(
        received_tuple.src, sent_tuple.dst,
        "both ends name the same connection"
    );
    assert_eq!(received.state, TcpState::SynSent);
    assert_eq!(received.reason, None);
}

#[test]
fn aborted_established_connection_resets_in_established_state() {
    let ns = Netns::new("rstest");
    let mut probe = TcpReset::load(&options()).unwrap();
    let (client_addr, server_addr) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(server_addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // SO_LINGER 0: close() aborts with a reset instead of a FIN.
        nix::sys::socket::setsockopt(
            &accepted,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(accepted);
        std::thread::sleep(Duration::from_millis(50));
        (client.local_addr().unwrap(), server_addr)
    });
    let counts = probe.counts().unwrap();
    let key = ResetKey {
        netns: ns.id(),
        kind: ResetKind::Received,
        state: TcpState::Established,
    };
    assert_eq!(counts.get(&key), Some(&1), "{counts:#?}");
    let events = probe.drain_events();
    let received = events
        .iter()
        .find(|e| e.netns == ns.inode() && e.kind == ResetKind::Received)
        .unwrap();
    assert_eq!(
        received.tuple.map(|t| (t.src, t.dst)),
        Some((client_addr, server_addr))
    );
}

#[test]
fn dropped_segments_of_an_established_connection_are_retransmitted_and_counted() {
    let ns = Netns::new("retr");
    let mut probe = TcpRetrans::load(&options()).expect("tcpretrans loads");
    let (client_addr, server_addr) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(server_addr).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        // From here on the server never sees the client's segments. `sh` runs in this thread's
        // namespace: children inherit it.
        support::sh(&format!(
            "iptables -w -A INPUT -p tcp --dport {} -j DROP",
            server_addr.port()
        ));
        client.write_all(b"lost in the netns").unwrap();
        // RTO starts at 200 ms+ and doubles: 1.5 s gives at least two retransmissions.
        std::thread::sleep(Duration::from_millis(1500));
        (client.local_addr().unwrap(), server_addr)
    });
    let counts = probe.counts().unwrap();
    let retransmits = counts
        .get(&RetransKey {
            netns: ns.id(),
            state: TcpState::Established,
        })
        .copied()
        .unwrap_or(0);
    assert!(retransmits >= 2, "{counts:#?}");
    let events: Vec<_> = probe
        .drain_events()
        .into_iter()
        .filter(|e| e.netns == ns.inode())
        .collect();
    assert_eq!(events.len() as u64, retransmits);
    for event in &events {
        let tuple = event.tuple.unwrap();
        assert_eq!(
            (tuple.protocol, tuple.src, tuple.dst),
            (L4Protocol::Tcp, client_addr, server_addr)
        );
    }
}
