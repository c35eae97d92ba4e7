//! The eBPF packetloss probe run by the agent over lab pods: a DROP rule in the server pod's
//! netns makes the kernel drop the client's SYNs; the drops must show up as the server pod's
//! `packetloss` counters (reason NETFILTER_DROP) and as `PacketLoss` events labelled with that
//! pod. Needs root, BTF and tracepoints (skips with the loader's reason when the probe cannot
//! load, which `/status` shows as Failed).

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{agent_with, sample, PodPair};

#[test]
fn netfilter_drops_in_a_lab_pod_are_counted_and_reported_for_that_pod() {
    let pods = PodPair::new("e1");
    let agent = agent_with(
        "metrics:\n  probes: [{name: packetloss}]\nevent:\n  probes: [{name: packetloss}]\n",
        pods.podmap("node-1"),
    );
    let status = serde_json::to_value(agent.status()).unwrap();
    if status["inuse_probes"]["metrics"][0]["state"] != "Running" {
        eprintln!("packetloss cannot load here: {status}");
        return;
    }
    let mut events = agent.bus().subscribe();
    let rule = Command::new("ip")
        .args([
            "netns", "exec", &pods.b, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8090",
            "-j", "DROP",
        ])
        .status()
        .unwrap();
    assert!(rule.success(), "iptables in the server netns");
    let before = agent.render_metrics();

    // The client's SYNs die in the server's INPUT chain.
    let client = pods.a.clone();
    std::thread::spawn(move || {
        common::enter(&format!("/run/netns/{client}"));
        for _ in 0..3 {
            let _ = TcpStream::connect_timeout(
                &"10.77.0.2:8090".parse().unwrap(),
                Duration::from_millis(300),
            );
        }
    })
    .join()
    .unwrap();

    let series = "netsleuth_packetloss_total{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"server\",reason=\"NETFILTER_DROP\",protocol=\"tcp\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let text = agent.render_metrics();
        if sample(&text, series).unwrap_or(0.0) >= 3.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dropped = sample(&after, series).unwrap_or_else(|| panic!("no {series} in\n{after}"))
        - sample(&before, series).unwrap_or(0.0);
    assert!(dropped >= 3.0, "{dropped} drops counted");
    assert!(
        sample(&after, "netsleuth_packetloss_netfilter_total{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"server\"}").unwrap() >= 3.0
    );
    // Nothing was dropped by netfilter in the client's netns.
    assert!(sample(&after, "netsleuth_packetloss_netfilter_total{k8s_node=\"node-1\",k8s_namespace=\"default\",k8s_pod=\"client\"}").is_none());

    // The events: PacketLoss, the server pod, the reason and the SYN's 5-tuple.
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        assert!(
            Instant::now() < deadline,
            "no PacketLoss event for the server pod"
        );
        match events.try_recv() {
            Ok(e)
                if e.pod.as_ref().is_some_and(|p| p.name == "server")
                    && e.reason.as_deref() == Some("NETFILTER_DROP") =>
            {
                break e
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let json = serde_json::to_value(&*event).unwrap();
    assert_eq!(json["type"], "PacketLoss");
    assert_eq!(json["node"], "node-1");
    assert_eq!(json["pod"]["namespace"], "default");
    assert_eq!(json["tuple"]["dst"], "10.77.0.2");
    assert_eq!(json["tuple"]["dport"], 8090);
    assert_eq!(json["tuple"]["src"], "10.77.0.1");
}
