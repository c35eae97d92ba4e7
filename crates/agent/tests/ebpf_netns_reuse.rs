//! eBPF counts across a netns inode the kernel hands to a new namespace (issue #4), on the real
//! kernel through the agent: a lab pod drops packets (iptables DROP) and waits on a socket, its
//! netns is deleted, new namespaces are made until one gets the freed inode, and that one is
//! registered as another pod. The new pod's `packetloss` and `socketlatency` series must start
//! from its own zero, the old pod's must be gone, and the probes' maps must no longer hold the
//! dead namespace's entries (read with bpftool).
//!
//! Its own test binary (cargo runs test binaries one after another): re-creating namespaces
//! until the inode comes back would hand inodes to other tests' namespaces. Needs root, BTF and
//! tracepoints; a probe that cannot load fails the test with the loader's reason.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use agent::agent::Agent;
use common::{agent_with, ip, lab_podmap, netns_with_inode, sample, write_inventory, Netns};

/// The netns's cookie, as the kernel keys it in the probes' maps.
fn cookie(netns: &Netns) -> u64 {
    netns.run(|| bpf::NetnsCookie::of_current_thread().unwrap().0)
}

/// `count` UDP datagrams to port 7777, which the netns's OUTPUT chain drops.
fn dropped_datagrams(netns: &Netns, count: usize) {
    ip(&[
        "netns",
        "exec",
        netns.name(),
        "iptables",
        "-w",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        "7777",
        "-j",
        "DROP",
    ]);
    netns.run(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..count {
            // The DROP makes send fail with EPERM; the drop happened.
            let _ = socket.send_to(b"dropped", "127.0.0.1:7777");
        }
    });
}

/// One read of data that waited 20 ms in a TCP socket on the netns's loopback.
fn slow_read(netns: &Netns) {
    netns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.write_all(b"waits").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).unwrap();
    });
}

fn drops(pod: &str) -> String {
    format!(
        "netsleuth_packetloss_total{{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"{pod}\",reason=\"NETFILTER_DROP\",protocol=\"udp\"}}"
    )
}

fn reads(pod: &str) -> String {
    format!(
        "netsleuth_socketlatency_read_latency_seconds_count{{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"{pod}\",protocol=\"tcp\"}}"
    )
}

/// Scrapes until `series` reads `value` (the kernel's counts are read per scrape) or 10 s
/// passed; returns the last scrape.
fn scrape_until(agent: &Agent, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = agent.render_metrics();
        if sample(&text, series) == Some(value) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// IDs of the eBPF maps called `name` loaded now.
fn map_ids(name: &str) -> HashSet<u64> {
    let output = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("bpftool runs");
    assert!(output.status.success(), "bpftool map show");
    let maps: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    maps.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == name)
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

/// The (cookie, inode) each key of map `id` starts with (`struct ns_netns` heads the packetloss
/// keys; `ns_hist_key` has the same first 12 bytes).
fn netns_keys(id: u64) -> Vec<(u64, u64)> {
    let output = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .expect("bpftool runs");
    assert!(output.status.success(), "bpftool map dump id {id}");
    let entries: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let bytes: Vec<u8> = entry["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect();
            let cookie = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            let inode = u64::from(u32::from_le_bytes(bytes[8..12].try_into().unwrap()));
            (cookie, inode)
        })
        .collect()
}

/// Whether any of the maps `ids` holds an entry of the netns (`cookie`, `inode`).
fn held(ids: &HashSet<u64>, cookie: u64, inode: u64) -> bool {
    ids.iter()
        .any(|&id| netns_keys(id).contains(&(cookie, inode)))
}

#[test]
fn a_pod_that_inherits_a_dead_pods_netns_inode_starts_from_zero_and_the_dead_entries_go() {
    let labs = tempfile::tempdir().unwrap();
    write_inventory(labs.path(), "reuse", &[("old", "hph-reuse-old")]);
    let (drop_maps_before, read_maps_before) = (map_ids("drop_counts"), map_ids("read_latency"));
    let agent = agent_with(
        "metrics:\n  probes: [{name: packetloss}, {name: socketlatency}]\n",
        lab_podmap("node-1", labs.path()),
    );
    let status = serde_json::to_value(agent.status()).unwrap();
    for probe in 0..2 {
        assert_eq!(
            status["inuse_probes"]["metrics"][probe]["state"], "Running",
            "{status}"
        );
    }
    // This agent's maps: the ones that were not there before it started.
    let drop_maps: HashSet<u64> = &map_ids("drop_counts") - &drop_maps_before;
    let read_maps: HashSet<u64> = &map_ids("read_latency") - &read_maps_before;
    assert!(!drop_maps.is_empty() && !read_maps.is_empty());

    // The old pod counts, its netns goes, and new namespaces are made until one gets its inode
    // (freed asynchronously once the agent's next scrape lets go of it). Other processes on the
    // machine may take the inode first and keep it: then the whole round starts again with a
    // fresh old pod (whose counts start from zero too: it has a new cookie).
    let mut round = 0;
    let (new, old_inode, old_cookie) = loop {
        round += 1;
        assert!(
            round <= 5,
            "the kernel did not hand a freed netns inode back in 5 rounds"
        );
        let old = Netns::add("hph-reuse-old");
        agent.podmap().refresh();
        dropped_datagrams(&old, 5);
        slow_read(&old);
        slow_read(&old);
        let text = scrape_until(&agent, &drops("old"), 5.0);
        assert_eq!(sample(&text, &drops("old")), Some(5.0), "{text}");
        let text = scrape_until(&agent, &reads("old"), 2.0);
        assert_eq!(sample(&text, &reads("old")), Some(2.0), "{text}");
        let (old_inode, old_cookie) = (old.inode(), cookie(&old));
        assert!(held(&drop_maps, old_cookie, old_inode));
        assert!(held(&read_maps, old_cookie, old_inode));

        drop(old);
        agent.render_metrics();
        if let Some(new) = netns_with_inode("hph-reuse-new", old_inode) {
            break (new, old_inode, old_cookie);
        }
    };
    assert_ne!(cookie(&new), old_cookie);

    write_inventory(labs.path(), "reuse", &[("new", "hph-reuse-new")]);
    agent.podmap().refresh();
    dropped_datagrams(&new, 2);
    slow_read(&new);
    let text = scrape_until(&agent, &drops("new"), 2.0);
    assert_eq!(sample(&text, &drops("new")), Some(2.0), "{text}");
    let text = scrape_until(&agent, &reads("new"), 1.0);
    assert_eq!(sample(&text, &reads("new")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &drops("old")), None, "{text}");
    assert_eq!(sample(&text, &reads("old")), None, "{text}");

    assert!(
        !held(&drop_maps, old_cookie, old_inode),
        "the dead netns's drop counts were deleted"
    );
    assert!(
        !held(&read_maps, old_cookie, old_inode),
        "the dead netns's read latencies were deleted"
    );
    assert!(held(&drop_maps, cookie(&new), old_inode));
}
