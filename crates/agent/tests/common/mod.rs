//! Test helpers: real network namespaces registered as lab pods through an inventory file,
//! removed on drop (even when the test fails).

#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use agent::agent::{Agent, AgentOptions};
use agent::config::Config;
use agent::podmap::{PodMap, PodMapSources};
use model::snapshot::{NetnsOwner, SnapshotSource, SourceKind};
use model::{Inventory, NetnsLocation};
use nix::sched::{setns, CloneFlags};

pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

/// Two pods (netns `nsl-agt<tag>-a`, `-b`) joined by a veth pair: a=10.77.0.1, b=10.77.0.2.
pub struct PodPair {
    pub a: String,
    pub b: String,
    pub inventory_dir: tempfile::TempDir,
}

impl PodPair {
    pub fn new(tag: &str) -> PodPair {
        let a = format!("nsl-agt{tag}-a");
        let b = format!("nsl-agt{tag}-b");
        // Leftovers of a crashed run would make `ip netns add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &a])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &b])
            .stderr(std::process::Stdio::null())
            .status();
        let pair = PodPair {
            a: a.clone(),
            b: b.clone(),
            inventory_dir: tempfile::tempdir().unwrap(),
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ]);
        ip(&["-n", &a, "addr", "add", "10.77.0.1/24", "dev", "eth0"]);
        ip(&["-n", &b, "addr", "add", "10.77.0.2/24", "dev", "eth0"]);
        for ns in [&a, &b] {
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        write_inventory(
            pair.inventory_dir.path(),
            "agenttest",
            &[("client", a.as_str()), ("server", b.as_str())],
        );
        pair
    }

    pub fn podmap(&self, node: &str) -> Arc<PodMap> {
        lab_podmap(node, self.inventory_dir.path())
    }

    /// `connections` TCP connections from a to b:`port`, each sending `bytes` bytes.
    pub fn tcp_traffic(&self, port: u16, connections: usize, bytes: usize) {
        let b = self.b.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            enter(&format!("/run/netns/{b}"));
            let listener = TcpListener::bind(("10.77.0.2", port)).unwrap();
            ready_tx.send(()).unwrap();
            for _ in 0..connections {
                let (mut s, _) = listener.accept().unwrap();
                std::io::copy(&mut s, &mut std::io::sink()).unwrap();
            }
        });
        ready_rx.recv().unwrap();
        let a = self.a.clone();
        std::thread::spawn(move || {
            enter(&format!("/run/netns/{a}"));
            for _ in 0..connections {
                let mut s = TcpStream::connect(("10.77.0.2", port)).unwrap();
                std::io::Write::write_all(&mut s, &vec![7u8; bytes]).unwrap();
            }
        })
        .join()
        .unwrap();
        server.join().unwrap();
    }
}

/// A pod map of `node` from the lab inventories under `inventory_dir` only (no CRI).
pub fn lab_podmap(node: &str, inventory_dir: &Path) -> Arc<PodMap> {
    Arc::new(PodMap::new(PodMapSources {
        node: node.into(),
        inventory_dir: Some(inventory_dir.to_path_buf()),
        cri_socket: Some(inventory_dir.join("no-cri.sock")),
    }))
}

/// Register netns as pods of namespace `default` on `node-1`: `<dir>/<lab>/inventory.json`
/// listing each `(pod, netns name)` at `/run/netns/<netns name>` (replaced if there).
pub fn write_inventory(dir: &Path, lab: &str, pods: &[(&str, &str)]) {
    let inventory = Inventory {
        source: SnapshotSource {
            kind: SourceKind::Lab,
            name: lab.into(),
            collected_at: None,
        },
        cluster: Default::default(),
        kubernetes: Default::default(),
        netns: pods
            .iter()
            .map(|(pod, netns)| NetnsLocation {
                id: (*netns).to_string(),
                node: "node-1".into(),
                owner: NetnsOwner::Pod {
                    namespace: "default".into(),
                    name: (*pod).to_string(),
                },
                path: PathBuf::from(format!("/run/netns/{netns}")),
            })
            .collect(),
    };
    let lab = dir.join(lab);
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::write(
        lab.join("inventory.json"),
        serde_json::to_vec(&inventory).unwrap(),
    )
    .unwrap();
}

impl Drop for PodPair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.a])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.b])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A named netns with `lo` up, deleted on drop (even when the test fails).
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn add(name: &str) -> Netns {
        let netns = Netns { name: name.into() };
        netns.delete();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn inode(&self) -> u64 {
        agent::podmap::netns_inode(format!("/run/netns/{}", self.name).as_ref()).unwrap()
    }

    /// Runs `f` on a thread inside the netns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .unwrap()
    }

    pub fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A new netns `name` that got `inode` from the kernel (which hands a freed inode to the next
/// namespace once the old one is cleaned up, asynchronously), if one does within 5 s.
pub fn netns_with_inode(name: &str, inode: u64) -> Option<Netns> {
    for _ in 0..100 {
        let candidate = Netns::add(name);
        if candidate.inode() == inode {
            return Some(candidate);
        }
        drop(candidate);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

pub fn enter(path: &str) {
    let f = File::open(path).unwrap();
    setns(&f, CloneFlags::CLONE_NEWNET).unwrap();
}

pub fn options(prefix: &str, config_path: Option<&Path>) -> AgentOptions {
    AgentOptions {
        config_path: config_path.map(Path::to_path_buf),
        node: "node-1".into(),
        metric_prefix: prefix.into(),
        inventory_dir: None,
        cri_socket: None,
    }
}

pub fn agent_with(yaml: &str, podmap: Arc<PodMap>) -> Agent {
    let config = Config::parse("test.yaml", yaml).unwrap();
    Agent::with_config(options("netsleuth", None), config, podmap)
}

/// The value of the sample line that starts with `series` (exact name and labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}
