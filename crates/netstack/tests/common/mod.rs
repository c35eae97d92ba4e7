//! Network-namespace plumbing shared by the kernel differential tests (`*_kernel.rs`): the
//! root check, throw-away namespaces that are deleted even when an assertion fails, background
//! processes that are killed likewise, and `ip` / `ip netns exec` runners that fail loudly.
//!
//! Only ever touches the namespaces its callers name; never the host's own network.

// Each test binary compiles this module on its own and uses a different subset of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// Whether we run as root; the kernel tests say "SKIPPED" and do nothing otherwise.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// Throw-away network namespaces, deleted on drop.
pub struct Namespaces(Vec<String>);

impl Namespaces {
    /// Creates each namespace fresh: a leftover from a crashed run with the same name (the
    /// names carry the pid) would make `ip netns add` fail, so it is deleted first. The guard
    /// exists before the first `add`, so a failure half-way still cleans up.
    pub fn create<I: IntoIterator<Item = String>>(names: I) -> Namespaces {
        let guard = Namespaces(names.into_iter().collect());
        for name in &guard.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            run(&["ip", "netns", "add", name]);
        }
        guard
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Kills a background process (a server, a listener) even when an assertion fails first.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Background {
    /// Starts the Python program `script` inside `netns` with its stdout piped to us.
    pub fn python_in(netns: &str, script: &str) -> Background {
        Background(
            Command::new("ip")
                .args(["netns", "exec", netns, "python3", "-c", script])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start python3 in the netns"),
        )
    }
}

/// Runs `args[0] args[1..]`, asserting success; returns its trimmed stdout.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ip -n NETNS ARGS…` (ARGS as one string, split on blanks), asserting success.
pub fn ip_in(netns: &str, args: &str) {
    let mut full = vec!["ip", "-n", netns];
    full.extend(args.split_whitespace());
    run(&full);
}

/// `ip netns exec NETNS COMMAND…`, asserting success; returns its trimmed stdout.
pub fn exec(netns: &str, command: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", netns];
    full.extend_from_slice(command);
    run(&full)
}
