//! The README's main job, end to end: `netsleuth demo` builds a lab (needs root), real traffic
//! flows, the fault stops it, and the diagnosis of the freshly collected lab names the rule —
//! exit 0 only when all agree.

use std::process::Command;

#[test]
fn demo_breaks_a_lab_and_names_the_fault() {
    let name = format!("tdemo{}", std::process::id() % 100_000);
    let out = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(["demo", "--name", &name])
        .output()
        .expect("run netsleuth demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("reachable: connected"), "{stderr}");
    assert!(
        stderr.contains("diagnosis: Delivered"),
        "the healthy lab diagnoses as delivered: {stderr}"
    );
    assert!(stderr.contains("NOT reachable"), "{stderr}");
    assert!(
        stderr.contains("collected 6 of 6 namespaces of lab"),
        "the diagnosis reads the live lab: {stderr}"
    );
    assert!(stdout.contains("[netfilter.drop] at node-2"), "{stdout}");
    assert!(
        stdout.contains("iptables -t filter -D FORWARD"),
        "the fix is the exact command:\n{stdout}"
    );
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&format!("nsl-{name}-")),
        "demo left namespaces behind"
    );
}

#[test]
fn diagnose_exit_codes_follow_the_contract() {
    let examples = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/flannel-host-gw"
    );
    let run = |file: &str, dst: &str, port: &str| {
        Command::new(env!("CARGO_BIN_EXE_netsleuth"))
            .args([
                "diagnose",
                "--snapshot",
                &format!("{examples}/{file}"),
                "-s",
                "default/web-1-1",
                "-d",
                dst,
                "-p",
                port,
            ])
            .output()
            .expect("run netsleuth diagnose")
            .status
            .code()
    };
    assert_eq!(
        run("healthy-pod-to-service.json", "service/default/web-0", "80"),
        Some(0)
    );
    assert_eq!(
        run("forward-drop-hand-added.json", "default/web-2-1", "8080"),
        Some(1)
    );
    assert_eq!(
        run("unreadable-ruleset.json", "default/web-2-1", "8080"),
        Some(3)
    );
    assert_eq!(
        run("healthy-pod-to-service.json", "default/nope", "80"),
        Some(2)
    );
    assert_eq!(run("does-not-exist.json", "default/web-2-1", "80"), Some(2));
}
