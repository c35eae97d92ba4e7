//! The procfs files a scrape keeps open per netns (so later scrapes need no setns(2) or path
//! lookup) must follow the pods: counters still move between scrapes, a pod whose netns
//! vanishes leaves no open file (an open `/proc/net` file would keep the dead netns alive) and
//! no thread behind, and a pod that appears is read on the next scrape.
//! Needs root (netns, veth). One test in its own binary: it counts the process's fds and threads.

mod common;

use std::process::{Command, Stdio};

use common::{agent_with, ip, sample, write_inventory, PodPair};

/// Per-netns probes that read only procfs files (no probe needs the thread inside a netns).
const FILE_PROBES: &str = "metrics:\n  probes: [{name: netdev}, {name: ip}, {name: tcp}, {name: udp}, {name: tcpext}, {name: sock}, {name: conntrack}]\n";

fn series(metric: &str, pod: &str) -> String {
    format!("netsleuth_{metric}{{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"{pod}\"}}")
}

fn entries(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// A third pod's netns, removed on drop.
struct ExtraNetns(String);

impl Drop for ExtraNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn open_netns_files_follow_pods_appearing_and_vanishing() {
    let pods = PodPair::new("f1");
    let podmap = pods.podmap("node-1");
    let agent = agent_with(FILE_PROBES, podmap.clone());

    let first = agent.render_metrics();
    assert!(sample(&first, &series("tcp_activeopens_total", "client")).is_some());
    // Node + two pods, each with its files open.
    assert_eq!(agent.netns_files().netns_count(), 3);
    let per_scrape = agent.netns_files().open_files();
    let fds = entries("/proc/self/fd");
    let threads = entries("/proc/self/task");

    // Re-reading the open files sees the kernel's new numbers, and opens nothing new.
    pods.tcp_traffic(8090, 2, 1000);
    let second = agent.render_metrics();
    let delta = |metric: &str, pod: &str| {
        sample(&second, &series(metric, pod)).unwrap()
            - sample(&first, &series(metric, pod)).unwrap()
    };
    assert_eq!(delta("tcp_activeopens_total", "client"), 2.0);
    assert_eq!(delta("tcp_passiveopens_total", "server"), 2.0);
    assert!(delta("netdev_rxbytes_total", "server") >= 2000.0);
    assert_eq!(agent.netns_files().open_files(), per_scrape);
    assert_eq!(entries("/proc/self/fd"), fds);
    assert_eq!(
        entries("/proc/self/task"),
        threads,
        "scrape threads must end"
    );

    // The server's netns goes away while the inventory still lists it: skipped, files closed.
    ip(&["netns", "del", &pods.b]);
    let third = agent.render_metrics();
    assert!(sample(&third, &series("tcp_activeopens_total", "server")).is_none());
    assert!(sample(&third, &series("tcp_activeopens_total", "client")).is_some());
    assert_eq!(agent.netns_files().netns_count(), 2);
    let closed = per_scrape - agent.netns_files().open_files();
    assert!(closed >= 7, "only {closed} files closed");
    assert_eq!(entries("/proc/self/fd"), fds - closed);
    assert_eq!(entries("/proc/self/task"), threads);

    // A new pod listed in another inventory is read on the next scrape after the map refresh.
    let extra = ExtraNetns("nsl-agtf1-c".into());
    let _ = Command::new("ip")
        .args(["netns", "del", &extra.0])
        .stderr(Stdio::null())
        .status();
    ip(&["netns", "add", &extra.0]);
    write_inventory(
        pods.inventory_dir.path(),
        "extra",
        &[("newcomer", extra.0.as_str())],
    );
    podmap.refresh();
    let fourth = agent.render_metrics();
    assert!(
        sample(&fourth, &series("tcp_activeopens_total", "newcomer")).is_some(),
        "{fourth}"
    );
    assert_eq!(agent.netns_files().netns_count(), 3);
}
