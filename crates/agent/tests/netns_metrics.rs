//! Real network namespaces registered as lab pods: traffic between them must move the right
//! pod's counters, and the rendered `/metrics` (in the Prometheus text format promtool reads)
//! must pass `promtool check metrics`. A netns inode the kernel reuses for a new namespace
//! must carry neither the dead pod's labels nor its counters.
//! Needs root (netns, veth).

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use agent::health::AgentMetrics;
use agent::netns_files::NetnsFileCache;
use agent::probe::{
    MetricDesc, MetricProbe, ProbeArgs, ProbeContext, ProbeError, Scope, SharedLoaders,
};
use agent::registry::{Samples, ScrapeOutput, Value};
use agent::scrape::{scrape, ActiveMetricProbe, ScrapeSettings};
use common::{agent_with, lab_podmap, netns_with_inode, sample, write_inventory, Netns, PodPair};

const PROBES: &str = "metrics:\n  probes:\n    - name: netdev\n    - name: tcp\n    - name: ip\n    - name: tcpext\n    - name: sock\n    - name: tcpsummary\n    - name: qdisc\n    - name: conntrack\n    - name: softnet\n    - name: fd\n    - name: io\n    - name: udp\n";

/// The inode-reuse test needs the freed inode to go to the namespace it creates next, so no
/// other test of this binary may create a namespace meanwhile: they share, it excludes.
static NETNS_CREATION: RwLock<()> = RwLock::new(());

fn creating_namespaces() -> RwLockReadGuard<'static, ()> {
    NETNS_CREATION
        .read()
        .unwrap_or_else(PoisonError::into_inner)
}

fn series(metric: &str, pod: &str) -> String {
    format!("netsleuth_{metric}{{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"{pod}\"}}")
}

#[test]
fn tcp_traffic_between_lab_pods_moves_each_pods_own_counters() {
    let _shared = creating_namespaces();
    let pods = PodPair::new("m1");
    let agent = agent_with(PROBES, pods.podmap("node-1"));
    // Veths default to `noqueue` (no root qdisc to count): give the client's one a real qdisc.
    let tc = std::process::Command::new("tc")
        .args([
            "-n", &pods.a, "qdisc", "add", "dev", "eth0", "root", "pfifo",
        ])
        .status()
        .unwrap();
    assert!(tc.success());
    let before = agent.render_metrics();
    pods.tcp_traffic(8080, 3, 100_000);
    let after = agent.render_metrics();
    let delta = |metric: &str, pod: &str| {
        let s = series(metric, pod);
        sample(&after, &s).unwrap_or_else(|| panic!("no {s} in\n{after}"))
            - sample(&before, &s).unwrap_or_else(|| panic!("no {s} before"))
    };
    assert_eq!(delta("tcp_activeopens_total", "client"), 3.0);
    assert_eq!(delta("tcp_passiveopens_total", "server"), 3.0);
    assert_eq!(delta("tcp_activeopens_total", "server"), 0.0);
    assert_eq!(delta("tcp_passiveopens_total", "client"), 0.0);
    assert!(delta("netdev_rxbytes_total", "server") >= 300_000.0);
    assert!(delta("netdev_txbytes_total", "client") >= 300_000.0);
    assert!(delta("ip_indelivers_total", "server") > 0.0);
    // Closed by the client: TIME_WAIT sockets now sit in the client's netns.
    assert!(sample(&after, &series("tcpsummary_tcptimewaitconn", "client")).unwrap() >= 1.0);
    // The veth's root qdisc is per device and per netns.
    let qdisc = "netsleuth_qdisc_packets_total{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"client\",interface=\"eth0\"}";
    assert!(
        sample(&after, qdisc).unwrap() > sample(&before, qdisc).unwrap_or(0.0),
        "{after}"
    );
    // softnet is node-global: only on the node, never repeated per pod.
    assert!(!after.contains(
        "netsleuth_softnet_processed_total{k8s_node=\"node-1\",k8s_namespace=\"default\""
    ));
    assert!(after.contains(
        "netsleuth_softnet_processed_total{k8s_node=\"node-1\",k8s_namespace=\"\",k8s_pod=\"\"}"
    ));
    assert!(
        agent
            .status()
            .inuse_probes
            .metrics
            .iter()
            .all(|p| p.last_error.is_none()),
        "{:?}",
        agent.status().inuse_probes.metrics
    );
}

#[test]
fn pod_limit_cuts_pods_but_keeps_the_node_and_says_what_was_cut() {
    let _shared = creating_namespaces();
    let pods = PodPair::new("m2");
    let agent = agent_with(
        "metrics:\n  podLimit: 1\n  probes: [{name: netdev}]\n",
        pods.podmap("node-1"),
    );
    let text = agent.render_metrics();
    assert!(sample(&text, &series("netdev_rxbytes_total", "client")).is_some());
    assert!(sample(&text, &series("netdev_rxbytes_total", "server")).is_none());
    assert!(text.contains(
        "netsleuth_netdev_rxbytes_total{k8s_node=\"node-1\",k8s_namespace=\"\",k8s_pod=\"\"}"
    ));
    assert_eq!(
        sample(
            &text,
            "netsleuth_agent_pods_cut{k8s_node=\"node-1\",k8s_namespace=\"\",k8s_pod=\"\"}"
        ),
        Some(1.0)
    );
    assert_eq!(agent.status().pods.cut, vec!["default/server".to_string()]);
}

#[test]
fn metrics_output_passes_promtool_check_metrics() {
    let _shared = creating_namespaces();
    let pods = PodPair::new("m3");
    let agent = agent_with(PROBES, pods.podmap("node-1"));
    pods.tcp_traffic(8081, 1, 10);
    let text = agent::http::to_prometheus_text(&agent.render_metrics());
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

#[test]
fn missing_kernel_module_marks_only_that_probe_failed_with_the_reason() {
    let _shared = creating_namespaces();
    // IPVS is not available on this host (no ip_vs module); the others keep running.
    let agent = agent_with(
        "metrics:\n  probes: [{name: ipvs}, {name: netdev}]\n",
        std::sync::Arc::new(agent::podmap::PodMap::host_only("node-1")),
    );
    let status = serde_json::to_value(agent.status()).unwrap();
    let probes = status["inuse_probes"]["metrics"].as_array().unwrap();
    assert_eq!(probes[0]["name"], "ipvs");
    if std::path::Path::new("/proc/net/ip_vs_stats").exists() {
        return; // ip_vs loaded on this host: nothing to check.
    }
    assert_eq!(probes[0]["state"], "Failed");
    assert!(
        probes[0]["error"].as_str().unwrap().contains("ip_vs"),
        "{status}"
    );
    assert_eq!(probes[1]["state"], "Running");
    assert!(agent
        .render_metrics()
        .contains("netsleuth_netdev_rxbytes_total{"));
}

/// `n` TCP connects to a closed port on the netns's loopback: `n` active opens.
fn refused_connects(netns: &Netns, n: usize) {
    netns.run(move || {
        for _ in 0..n {
            assert!(TcpStream::connect(("127.0.0.1", 9)).is_err());
        }
    });
}

static KEYED: MetricDesc = MetricDesc::counter("test", "inode_keyed", "Counted per netns inode");

/// Stands in for an eBPF map keyed by netns inode: one sample for `inode`, attributed to
/// whatever entity the scrape resolves that inode to.
struct InodeKeyed(Arc<AtomicU64>);

impl MetricProbe for InodeKeyed {
    fn name(&self) -> &'static str {
        "test"
    }

    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn metrics(&self) -> &'static [MetricDesc] {
        std::slice::from_ref(&KEYED)
    }

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), ProbeError> {
        out.for_netns(self.0.load(Ordering::Relaxed))
            .counter(&KEYED, 1);
        Ok(())
    }
}

fn active(probe: Box<dyn MetricProbe>) -> Arc<ActiveMetricProbe> {
    Arc::new(ActiveMetricProbe {
        probe,
        last_error: Mutex::new(None),
    })
}

fn pod_value<'a>(out: &'a ScrapeOutput, metric: &str, pod: &str) -> Option<&'a Value> {
    out.value(metric, &[("k8s_pod", pod)])
}

#[test]
fn a_reused_netns_inode_carries_neither_the_dead_pods_labels_nor_its_counters() {
    let _alone = NETNS_CREATION
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let labs = tempfile::tempdir().unwrap();
    let podmap = lab_podmap("node-1", labs.path());
    let context = ProbeContext {
        node: "node-1".into(),
        podmap: podmap.clone(),
        shared: SharedLoaders::default(),
    };
    let tcp = agent::probes::spec("tcp").unwrap().metrics.unwrap();
    let keyed_inode = Arc::new(AtomicU64::new(0));
    let probes = [
        active(tcp(&ProbeArgs::default(), &context).unwrap()),
        active(Box::new(InodeKeyed(keyed_inode.clone()))),
    ];
    let (files, metrics) = (NetnsFileCache::default(), AgentMetrics::new());
    let run = || {
        scrape(
            &probes,
            &ScrapeSettings {
                podmap: &podmap,
                netns_files: &files,
                additional_labels: &[],
                pod_limit: 10,
                metrics: &metrics,
            },
        )
    };

    let mut round = 0;
    let new = loop {
        round += 1;
        assert!(
            round <= 5,
            "the kernel did not hand a freed netns inode back in 5 rounds"
        );
        let old = Netns::add("hpd-reuse-old");
        write_inventory(labs.path(), "reuse", &[("old", "hpd-reuse-old")]);
        podmap.refresh();
        keyed_inode.store(old.inode(), Ordering::Relaxed);
        refused_connects(&old, 3);
        let out = run();
        assert_eq!(
            pod_value(&out, "tcp_activeopens", "old"),
            Some(&Value::Counter(3))
        );
        assert_eq!(
            pod_value(&out, "test_inode_keyed", "old"),
            Some(&Value::Counter(1))
        );

        // The pod's netns goes; the pod map (not refreshed) still maps its inode to it. The next
        // scrape skips it and lets go of its files, so the kernel can free the namespace.
        let old_inode = old.inode();
        old.delete();
        let out = run();
        assert_eq!(pod_value(&out, "tcp_activeopens", "old"), None);
        assert_eq!(files.netns_count(), 1, "only the node's netns stays held");

        // New namespaces until one gets the dead pod's inode. No other test of this binary makes
        // namespaces meanwhile, but another process on the machine may take the inode first and
        // keep it: then the whole round starts again with a fresh old pod.
        if let Some(new) = netns_with_inode("hpd-reuse-new", old_inode) {
            break new;
        }
    };

    // Unmapped, the new namespace is the node's as far as inode-keyed data goes: never the
    // dead pod's, although the stale pod map still lists that inode for it.
    let out = run();
    assert_eq!(pod_value(&out, "test_inode_keyed", "old"), None);
    assert_eq!(
        pod_value(&out, "test_inode_keyed", ""),
        Some(&Value::Counter(1))
    );

    // Mapped as its own pod: its counters start from its own zero, not the old pod's 3.
    refused_connects(&new, 1);
    write_inventory(labs.path(), "reuse", &[("new", "hpd-reuse-new")]);
    podmap.refresh();
    let out = run();
    assert_eq!(
        pod_value(&out, "tcp_activeopens", "new"),
        Some(&Value::Counter(1))
    );
    assert_eq!(
        pod_value(&out, "test_inode_keyed", "new"),
        Some(&Value::Counter(1))
    );
    assert_eq!(pod_value(&out, "tcp_activeopens", "old"), None);
}

/// A process of ours, killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fd_and_io_count_the_processes_living_in_the_pods_netns() {
    let _shared = creating_namespaces();
    let pods = PodPair::new("m4");
    let agent = agent_with(
        "metrics:\n  probes: [{name: fd}, {name: io}]\n",
        pods.podmap("node-1"),
    );
    // A process in the client's netns holding two (UDP) sockets: bash opens them, `sleep`
    // inherits them.
    let script = "exec 3<>/dev/udp/127.0.0.1/9 4<>/dev/udp/127.0.0.1/10; echo ready; exec sleep 60";
    let mut child = Child(
        Command::new("ip")
            .args(["netns", "exec", &pods.a, "bash", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec runs"),
    );
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    // The process scan is reused for up to a second: scrape until it is seen.
    let mut text = agent.render_metrics();
    for _ in 0..50 {
        if sample(&text, &series("fd_opensocket", "client")) == Some(2.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        text = agent.render_metrics();
    }
    assert_eq!(
        sample(&text, &series("fd_opensocket", "client")),
        Some(2.0),
        "{text}"
    );
    // stdin, stdout, stderr and the two sockets at least.
    assert!(sample(&text, &series("fd_openfd", "client")).unwrap() >= 5.0);
    assert!(sample(&text, &series("io_readsyscall_total", "client")).unwrap() > 0.0);
    // Nothing runs in the server's netns.
    assert_eq!(sample(&text, &series("fd_openfd", "server")), Some(0.0));
    assert_eq!(
        sample(&text, &series("io_readsyscall_total", "server")),
        Some(0.0)
    );
}
