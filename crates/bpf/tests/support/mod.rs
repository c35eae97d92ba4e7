//! Real-kernel test fixtures: named network namespaces removed on drop (even when the test
//! panics), running code inside them on a dedicated thread, and shell commands in them.
//! Every namespace name starts with `nsbpf-` so these tests never touch anyone else's.
#![allow(dead_code)] // each test binary uses a different subset

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use bpf::{Netns as NetnsId, NetnsCookie, NetnsInode};

pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// A fresh namespace with `lo` up. Create it *before* loading a probe: the kernel reuses
    /// the inode numbers of deleted namespaces, so a namespace created later could inherit
    /// counts another test's just-deleted namespace left in the probe's maps.
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "nsbpf-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&format!("ip netns add {name}"));
        let ns = Self { name };
        ns.exec("ip link set lo up");
        ns
    }

    pub fn inode(&self) -> NetnsInode {
        NetnsInode(
            std::fs::metadata(format!("/run/netns/{}", self.name))
                .expect("netns file")
                .ino() as u32,
        )
    }

    /// The namespace as the probes key it: inode and cookie.
    pub fn id(&self) -> NetnsId {
        NetnsId {
            inode: self.inode(),
            cookie: self.run(|| NetnsCookie::of_current_thread().expect("SO_NETNS_COOKIE")),
        }
    }

    /// Deletes this namespace and creates new ones until one gets its inode (the kernel hands
    /// a freed netns inode to the next namespace once the old one is cleaned up, which happens
    /// asynchronously); `None` when none did within 5 s (another process took the inode).
    pub fn replace_with_same_inode(self, tag: &str) -> Option<Netns> {
        let inode = self.inode();
        drop(self);
        for _ in 0..100 {
            let candidate = Netns::new(tag);
            if candidate.inode() == inode {
                return Some(candidate);
            }
            drop(candidate);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Runs a shell command inside the namespace; panics with its output on failure.
    pub fn exec(&self, command: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{}'", self.name, command))
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it opens live there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair between two namespaces: `a` gets 10.77.<subnet>.1/24, `b` gets .2.
pub fn veth_pair(a: &Netns, b: &Netns, subnet: u8) -> (String, String) {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let (va, vb) = (format!("vba{id}"), format!("vbb{id}"));
    sh(&format!(
        "ip link add {va} netns {} type veth peer name {vb} netns {}",
        a.name, b.name
    ));
    a.exec(&format!(
        "ip addr add 10.77.{subnet}.1/24 dev {va} && ip link set {va} up"
    ));
    b.exec(&format!(
        "ip addr add 10.77.{subnet}.2/24 dev {vb} && ip link set {vb} up"
    ));
    (va, vb)
}

pub fn sh(command: &str) -> String {
    let output = Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("spawn sh");
    assert!(
        output.status.success(),
        "`{command}` failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Test options: events effectively unthrottled so each test sees its own.
pub fn options() -> bpf::Options {
    bpf::Options {
        events_per_second: 100_000,
        event_burst: 100_000,
        ..bpf::Options::default()
    }
}
