//! `netsleuth collect` and `netsleuth diagnose --lab` end to end, on real network namespaces
//! (needs root). Labs are named `tcol…<pid>` and namespaces `nslt-…-<pid>`, removed by Drop guards
//! even when an assertion fails.

use std::path::PathBuf;
use std::process::{Command, Output};

use model::Snapshot;

fn netsleuth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(args)
        .output()
        .expect("run netsleuth")
}

/// `netsleuth COMMAND… -s default/pod-1-1 -d default/pod-2-1 -p 8080 EXTRA…`: the cross-node
/// flow the lab tests probe and diagnose.
fn pod_to_pod(command: &[&str], extra: &[&str]) -> Output {
    let flow = [
        "-s",
        "default/pod-1-1",
        "-d",
        "default/pod-2-1",
        "-p",
        "8080",
    ];
    netsleuth(&[command, &flow, extra].concat())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A lab for one test, taken down however the test ends.
struct TestLab(String);

impl TestLab {
    fn up(prefix: &str, args: &[&str]) -> TestLab {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        let lab = TestLab(name);
        let mut all = vec!["lab", "up", "--name", &lab.0];
        all.extend(args);
        let out = netsleuth(&all);
        assert!(out.status.success(), "lab up: {}", text(&out.stderr));
        lab
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let _ = netsleuth(&["lab", "down", "--name", &self.0]);
    }
}

/// Two namespaces joined by a veth, taken down however the test ends.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

#[test]
fn collect_netns_writes_a_compressed_snapshot_with_peers_resolved() {
    let pid = std::process::id();
    let (a, b) = (format!("nslt-col-{pid}-a"), format!("nslt-col-{pid}-b"));
    let _guard = Namespaces(vec![a.clone(), b.clone()]);
    ip(&["netns", "add", &a]);
    ip(&["netns", "add", &b]);
    ip(&[
        "-n", &a, "link", "add", "x0", "type", "veth", "peer", "name", "y0", "netns", &b,
    ]);
    ip(&["-n", &a, "addr", "add", "10.97.0.1/30", "dev", "x0"]);
    ip(&["-n", &a, "link", "set", "x0", "up"]);

    let file = std::env::temp_dir().join(format!("nslt-col-{pid}.json.zst"));
    let out = netsleuth(&[
        "collect",
        "--netns",
        &format!("/run/netns/{a}"),
        &format!("/run/netns/{b}"),
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("read {a}")),
        "progress per namespace: {stderr}"
    );
    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        &bytes[..4],
        &[0x28, 0xb5, 0x2f, 0xfd],
        ".zst output is zstd"
    );
    let snapshot = Snapshot::from_bytes("collected", &bytes).unwrap();
    let x0 = snapshot.netns(&a).unwrap().state.link("x0").unwrap();
    assert!(x0.admin_up);
    let peer = x0.peer.as_ref().unwrap();
    assert_eq!(peer.netns.as_deref(), Some(b.as_str()));
    assert_eq!(peer.name.as_deref(), Some("y0"));
}

#[test]
fn collect_exit_codes_follow_the_contract() {
    let out = netsleuth(&["collect", "--lab", "tcol-does-not-exist", "-o", "/dev/null"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown lab: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("tcol-does-not-exist"));

    let out = netsleuth(&[
        "collect",
        "--netns",
        "/run/netns/nslt-nope-0",
        "-o",
        "/dev/null",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "unreadable namespace: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("/run/netns/nslt-nope-0"));

    let out = netsleuth(&["collect", "--kubeconfig", "/nonexistent", "-o", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not available"));

    let out = netsleuth(&["collect", "-o", "/dev/null"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing to collect is a usage error"
    );
}

#[test]
fn collect_lab_writes_every_namespace_with_the_objects() {
    let lab = TestLab::up("tcoll", &["--nodes", "2", "--pods-per-node", "1"]);
    let file: PathBuf = std::env::temp_dir().join(format!("{}.json", lab.0));
    let out = netsleuth(&["collect", "--lab", &lab.0, "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let snapshot = Snapshot::from_bytes("collected", &bytes).unwrap();
    let mut ids: Vec<&str> = snapshot.netns.iter().map(|n| n.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "external",
            "node-1",
            "node-1/default/pod-1-1",
            "node-2",
            "node-2/default/pod-2-1",
            "underlay"
        ]
    );
    assert_eq!(snapshot.kubernetes.pods.len(), 2);
    assert!(snapshot.source.collected_at.is_some());
    // Every pod's eth0 leads to its node's host veth, named.
    let pod = snapshot.pod_netns("default", "pod-1-1").unwrap();
    let peer = pod.state.link("eth0").unwrap().peer.clone().unwrap();
    assert_eq!(peer.netns.as_deref(), Some("node-1"));
    assert!(peer.name.unwrap().starts_with("veth"));
}

#[test]
fn diagnose_lab_reads_only_the_nodes_on_the_path_and_agrees_with_real_traffic() {
    let lab = TestLab::up(
        "tdlab",
        &[
            "--nodes",
            "3",
            "--pods-per-node",
            "1",
            "--cni",
            "flannel-vxlan",
        ],
    );
    let probe = pod_to_pod(&["lab", "probe", "--name", &lab.0], &[]);
    assert!(probe.status.success(), "real traffic gets through");
    let out = pod_to_pod(&["diagnose", "--lab", &lab.0], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("DELIVERED"), "{stdout}");
    // underlay + external host + node-1 + node-2 + their two pods, not node-3 and its pod.
    assert!(stderr.contains("collected 6 of 8 namespaces"), "{stderr}");
    assert!(!stderr.contains("node-3"), "{stderr}");

    // Break it the way an admin would; real traffic and the diagnosis agree again.
    let out = netsleuth(&[
        "lab",
        "exec",
        "--name",
        &lab.0,
        "node-2",
        "--",
        "iptables",
        "-I",
        "FORWARD",
        "-d",
        "10.244.1.2",
        "-j",
        "DROP",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let probe = pod_to_pod(
        &["lab", "probe", "--name", &lab.0],
        &["--timeout-ms", "500"],
    );
    assert_eq!(probe.status.code(), Some(1), "real traffic is blocked");
    let out = pod_to_pod(&["diagnose", "--lab", &lab.0], &["-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["code"] == "netfilter.drop" && f["place"]["node"] == "node-2"),
        "{report:#}"
    );
}

#[test]
fn diagnose_lab_usage_errors() {
    let out = netsleuth(&[
        "diagnose",
        "--lab",
        "tdlab-none",
        "-s",
        "default/a",
        "-d",
        "default/b",
    ]);
    assert_eq!(out.status.code(), Some(2), "unknown lab");
    let out = netsleuth(&[
        "diagnose",
        "--kubeconfig",
        "/nonexistent",
        "-s",
        "default/a",
        "-d",
        "default/b",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no API server reader in this build"
    );
}
