//! Config: KubeSkoop's config.yaml accepted unchanged, unknown keys refused by name, unused
//! KubeSkoop keys warned about, and a bad file on reload refused with the running config kept.

mod common;

use agent::agent::Agent;
use agent::config::{Config, SinkConfig};

/// KubeSkoop's documented config.yaml (research/exporter.md §2) with its Helm default probes.
const KUBESKOOP: &str = r#"debugMode: false
address: ":9102"
port: 9102
enableController: true
controllerAddr: "dns:controller:10263"
metrics:
  additionalLabels: ["app=${labels:app}", "env=prod"]
  probes:
    - name: conntrack
    - name: qdisc
    - name: netdev
    - name: io
    - name: sock
    - name: tcpsummary
    - name: tcp
    - name: tcpext
    - name: udp
    - name: packetloss
    - name: flow
      args: {enablePortInLabel: false}
    - name: tcpretrans
event:
  probes:
    - name: tcpreset
    - name: packetloss
      args: {enableStack: false}
    - name: tcpretrans
  sinks:
    - name: stderr
    - name: file
      args: {path: /var/log/skoop-events.log}
    - name: loki
      args: {addr: loki-service}
"#;

#[test]
fn kubeskoop_config_is_accepted_unchanged_with_warnings_for_unused_keys() {
    let config = Config::parse("config.yaml", KUBESKOOP).unwrap();
    assert_eq!(config.metric_probes.len(), 12);
    assert_eq!(config.event_probes.len(), 3);
    assert_eq!(config.sinks.len(), 3);
    assert!(matches!(&config.sinks[2], SinkConfig::Loki(l) if l.addr == "loki-service"));
    let warnings = config.warnings.join("\n");
    for key in ["enableController", "controllerAddr", "debugMode"] {
        assert!(warnings.contains(key), "no warning for {key}: {warnings}");
    }
    assert_eq!(config.additional_labels[1].name, "env");
}

/// The error text of a config that must be rejected, as `c.yaml`.
fn parse_error(yaml: &str) -> String {
    Config::parse("c.yaml", yaml).unwrap_err().to_string()
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_where() {
    let err = parse_error("metrics:\n  probes: []\n  probez: []\n");
    assert!(
        err.contains("c.yaml")
            && err.contains("probez")
            && err.contains("metrics")
            && err.contains("line 3"),
        "{err}"
    );
    let err = parse_error("metrics:\n  probes:\n    - name: netdevv\n");
    assert!(
        err.contains("metrics.probes[0].name") && err.contains("netdevv"),
        "{err}"
    );
    let err = parse_error("event:\n  sinks:\n    - name: loki\n      args: {adr: x}\n");
    assert!(
        err.contains("event.sinks[0].args") && err.contains("`adr`"),
        "{err}"
    );
    let err = parse_error("event:\n  sinks:\n    - name: file\n");
    assert!(
        err.contains("event.sinks[0].args") && err.contains("path"),
        "{err}"
    );
    let err = parse_error("metrics:\n  additionalLabels: [\"noequals\"]\n");
    assert!(err.contains("metrics.additionalLabels[0]"), "{err}");
    let err = parse_error("event:\n  probes:\n    - name: netdev\n");
    assert!(
        err.contains("event.probes[0].name") && err.contains("no event side"),
        "{err}"
    );
}

#[test]
fn probe_args_that_a_probe_does_not_take_fail_that_probe_in_status() {
    let agent = common::agent_with(
        "metrics:\n  probes: [{name: netdev, args: {foo: 1}}, {name: tcp}]\n",
        std::sync::Arc::new(agent::podmap::PodMap::host_only("n1")),
    );
    let status = agent.status();
    assert_eq!(status.inuse_probes.metrics[0].state, "Failed");
    assert!(status.inuse_probes.metrics[0]
        .error
        .as_deref()
        .unwrap()
        .contains("`foo`"));
    assert_eq!(status.inuse_probes.metrics[1].state, "Running");
}

#[tokio::test]
async fn reload_applies_a_good_file_and_refuses_a_bad_one_keeping_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "metrics:\n  probes: [{name: netdev}]\n").unwrap();
    let agent = Agent::start(common::options("netsleuth", Some(&path))).unwrap();
    assert_eq!(agent.status().inuse_probes.metrics.len(), 1);

    std::fs::write(&path, "metrics:\n  probes: [{name: netdev}, {name: tcp}]\n").unwrap();
    agent.reload().unwrap();
    let names: Vec<String> = agent
        .status()
        .inuse_probes
        .metrics
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["netdev", "tcp"]);

    std::fs::write(&path, "metrics:\n  probes: [{name: netdev}]\n  bogus: 1\n").unwrap();
    let err = agent.reload().unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
    let names: Vec<String> = agent
        .status()
        .inuse_probes
        .metrics
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["netdev", "tcp"], "the running config must be kept");
    assert!(agent
        .render_metrics()
        .contains("netsleuth_tcp_activeopens_total"));
}

#[test]
fn status_has_kubeskoops_shape_with_empty_lists_not_null() {
    let agent = common::agent_with(
        "metrics:\n  probes: [{name: netdev}]\n",
        std::sync::Arc::new(agent::podmap::PodMap::host_only("n1")),
    );
    let status = serde_json::to_value(agent.status()).unwrap();
    assert_eq!(
        status["inuse_probes"]["metrics"][0],
        serde_json::json!({"name": "netdev", "state": "Running"})
    );
    assert_eq!(status["inuse_probes"]["event"], serde_json::json!([]));
    let available = status["available_probes"]["metrics"].as_array().unwrap();
    for name in [
        "netdev",
        "tcp",
        "udp",
        "ip",
        "tcpext",
        "sock",
        "softnet",
        "conntrack",
        "qdisc",
        "fd",
        "io",
        "ipvs",
        "tcpsummary",
    ] {
        assert!(
            available.iter().any(|v| v == name),
            "{name} not available: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_config_file_reloads_it_and_a_configmap_style_symlink_swap_too() {
    let dir = tempfile::tempdir().unwrap();
    // A Kubernetes ConfigMap mount: config.yaml → ..data/config.yaml, ..data → a timestamped dir.
    let v1 = dir.path().join("..v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(
        v1.join("config.yaml"),
        "metrics:\n  probes: [{name: netdev}]\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", dir.path().join("config.yaml")).unwrap();
    let path = dir.path().join("config.yaml");
    let agent = Agent::start(common::options("netsleuth", Some(&path))).unwrap();
    agent::run::reload_on_file_change(agent.clone(), &path).unwrap();
    let probes = |agent: &Agent| -> Vec<String> {
        agent
            .status()
            .inuse_probes
            .metrics
            .iter()
            .map(|p| p.name.clone())
            .collect()
    };
    let wait_for = |want: &'static [&'static str]| {
        let agent = agent.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while probes(&agent) != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still {:?}",
                    probes(&agent)
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };

    // The way kubelet updates: new dir, then atomically re-point ..data.
    let kubelet_swap = |version: &str, yaml: &str| {
        std::fs::create_dir(dir.path().join(version)).unwrap();
        std::fs::write(dir.path().join(version).join("config.yaml"), yaml).unwrap();
        std::os::unix::fs::symlink(version, dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    };
    kubelet_swap(
        "..v2",
        "metrics:\n  probes: [{name: netdev}, {name: udp}]\n",
    );
    wait_for(&["netdev", "udp"]).await;

    // And a second time (KubeSkoop's watch died after the first swap).
    kubelet_swap("..v3", "metrics:\n  probes: [{name: tcp}]\n");
    wait_for(&["tcp"]).await;
}
