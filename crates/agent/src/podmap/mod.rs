//! Pod mapping: network namespace inode → the entity (node or pod) whose labels a sample gets.
//!
//! Sources, in order (the first to claim a netns wins):
//! - the host netns (the agent's own at start) is always the node entity (`k8s_pod=""`);
//!   hostNetwork pods share it and count as the node;
//! - lab inventories ([`inventory`]);
//! - the container runtime over its CRI socket ([`cri`]: containerd / CRI-O, found at
//!   [`CRI_SOCKETS`] or `--cri-socket`), with the pod's labels;
//! - when there is no CRI socket or the runtime did not answer, /proc ([`procfs`]: kubepods
//!   cgroup → pod UID → the kubelet's pod log directory).
//!
//! Refreshed on change, never polled hot: when an inventory or the pod log directory changes
//! (inotify, in `run`), when a sample or event names a netns the map does not know (at most once
//! per netns, see [`PodMap::get`]), and on a slow timer ([`SLOW_REFRESH`]) for pods that come
//! and go unseen. Each refresh swaps the whole map atomically; readers never wait for the
//! runtime. Must not read any metric.

pub mod cri;
pub mod inventory;
pub mod procfs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Duration;

use serde::Serialize;

use crate::events::PodRef;

/// The slow timer: re-read the runtime / /proc this often even when nothing asked.
pub const SLOW_REFRESH: Duration = Duration::from_secs(30);

/// Least time between two refreshes asked for by unknown netns (a burst of new pods is one
/// refresh, not one each).
const MIN_REFRESH_GAP: Duration = Duration::from_secs(2);

/// Unknown netns remembered so each asks for one refresh only; forgotten past this many (a
/// churn of short-lived namespaces then asks again, still at most every [`MIN_REFRESH_GAP`]).
const MAX_REMEMBERED_MISSES: usize = 4096;

/// Whom a netns belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// The node's own netns (or an emulated node's, in a lab).
    Node,
    Pod {
        namespace: String,
        name: String,
    },
}

/// Which source mapped a netns (shown per pod in `/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The agent's own netns.
    Host,
    /// A lab inventory file.
    Inventory,
    /// The container runtime's CRI answer.
    Cri,
    /// /proc: a kubepods cgroup's pod UID named by the kubelet's pod log directory.
    ProcCgroup,
    /// /proc: a kubepods cgroup without a pod log directory; the name is the process's
    /// `HOSTNAME` and the namespace is unknown (empty).
    ProcHostname,
}

/// One network namespace the agent collects from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entity {
    /// Inode of the netns (what eBPF reports as `netns`).
    pub netns: u64,
    /// A path that can be opened and passed to setns(2).
    pub path: PathBuf,
    /// The Kubernetes node the netns is on (`k8s_node`).
    pub node: String,
    pub owner: Owner,
    /// Pod labels (for `additionalLabels` `${labels:NAME}`).
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
    pub source: Source,
}

impl Entity {
    pub fn namespace(&self) -> &str {
        match &self.owner {
            Owner::Node => "",
            Owner::Pod { namespace, .. } => namespace,
        }
    }

    pub fn pod(&self) -> &str {
        match &self.owner {
            Owner::Node => "",
            Owner::Pod { name, .. } => name,
        }
    }

    pub fn is_host(&self) -> bool {
        self.owner == Owner::Node
    }
}

/// What the CRI side found at the last refresh, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CriState {
    /// No socket at the given or the well-known paths: pods come from /proc.
    Absent { looked_at: Vec<PathBuf> },
    /// The runtime answered; its ready sandboxes are mapped.
    Connected {
        socket: PathBuf,
        runtime: String,
        version: String,
        sandboxes: usize,
    },
    /// A socket is there but the runtime failed or did not answer: pods come from /proc.
    Failed { socket: PathBuf, error: String },
}

/// Well-known CRI sockets, probed in this order when `--cri-socket` is not given.
pub const CRI_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
];

/// Where the pod map comes from.
#[derive(Debug, Clone)]
pub struct PodMapSources {
    pub node: String,
    /// Directory of lab state dirs holding `inventory.json`; `None` disables.
    pub inventory_dir: Option<PathBuf>,
    /// `--cri-socket`; `None` probes [`CRI_SOCKETS`].
    pub cri_socket: Option<PathBuf>,
}

/// Where the /proc fallback and sandbox pids are looked up: the host's by default (the agent
/// runs with hostPID); tests point them at their own.
#[derive(Debug, Clone)]
pub struct ProcRoots {
    pub proc_root: PathBuf,
    /// The kubelet's pod log directory (`<namespace>_<name>_<uid>/` per pod).
    pub pods_log_dir: PathBuf,
}

impl Default for ProcRoots {
    fn default() -> ProcRoots {
        ProcRoots {
            proc_root: PathBuf::from("/proc"),
            pods_log_dir: PathBuf::from("/var/log/pods"),
        }
    }
}

#[derive(Debug)]
struct MapState {
    entities: Vec<Arc<Entity>>,
    by_inode: HashMap<u64, usize>,
    /// Files, sandboxes and netns that could not be read, with why (shown in `/status`).
    problems: Vec<String>,
    cri: CriState,
}

impl MapState {
    fn with_host(host: &Arc<Entity>) -> MapState {
        MapState {
            entities: vec![host.clone()],
            by_inode: HashMap::from([(host.netns, 0)]),
            problems: Vec::new(),
            cri: CriState::Absent { looked_at: vec![] },
        }
    }
}

/// "A netns nobody knows showed up": wakes the refresher early.
#[derive(Debug, Default)]
struct Wake {
    asked: Mutex<bool>,
    condvar: Condvar,
}

/// The current netns → entity map; cheap to read from any thread.
#[derive(Debug)]
pub struct PodMap {
    host: Arc<Entity>,
    sources: Option<PodMapSources>,
    roots: ProcRoots,
    state: RwLock<Arc<MapState>>,
    /// Serialises refreshes (timer, inotify and tests may ask at once).
    refreshing: Mutex<()>,
    /// Netns that missed and already asked for a refresh.
    misses: Mutex<HashSet<u64>>,
    wake: Arc<Wake>,
}

/// Inode of a netns file.
pub fn netns_inode(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

impl PodMap {
    /// Only the host netns (no inventories, no CRI): for tests and `--no-pods`.
    pub fn host_only(node: &str) -> PodMap {
        let host = Arc::new(host_entity(node));
        PodMap {
            state: RwLock::new(Arc::new(MapState::with_host(&host))),
            host,
            sources: None,
            roots: ProcRoots::default(),
            refreshing: Mutex::new(()),
            misses: Mutex::new(HashSet::new()),
            wake: Arc::default(),
        }
    }

    /// Build from the sources and read them once, with the host's /proc.
    pub fn new(sources: PodMapSources) -> PodMap {
        PodMap::with_roots(sources, ProcRoots::default())
    }

    /// Build from the sources and read them once, with /proc and the pod logs at `roots`.
    pub fn with_roots(sources: PodMapSources, roots: ProcRoots) -> PodMap {
        let mut map = PodMap::host_only(&sources.node);
        map.sources = Some(sources);
        map.roots = roots;
        map.refresh();
        map
    }

    pub fn node(&self) -> &str {
        &self.host.node
    }

    pub fn host(&self) -> Arc<Entity> {
        self.host.clone()
    }

    /// The CRI state of the last refresh.
    pub fn cri(&self) -> CriState {
        self.current().cri.clone()
    }

    pub fn inventory_dir(&self) -> Option<&Path> {
        self.sources.as_ref()?.inventory_dir.as_deref()
    }

    /// Every entity, the host first, pods in a stable order (by namespace, name).
    pub fn entities(&self) -> Vec<Arc<Entity>> {
        self.current().entities.clone()
    }

    pub fn problems(&self) -> Vec<String> {
        self.current().problems.clone()
    }

    /// The entity of this netns inode, if mapped. A netns not mapped asks the refresher for
    /// one early refresh (once per netns: one that is no pod does not keep asking).
    pub fn get(&self, netns: u64) -> Option<Arc<Entity>> {
        let state = self.current();
        let found = state
            .by_inode
            .get(&netns)
            .map(|&i| state.entities[i].clone());
        if found.is_none() && self.sources.is_some() {
            self.note_unknown(netns);
        }
        found
    }

    fn note_unknown(&self, netns: u64) {
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        if misses.len() >= MAX_REMEMBERED_MISSES {
            misses.clear();
        }
        if misses.insert(netns) {
            *self.wake.asked.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.wake.condvar.notify_one();
        }
    }

    /// The pod of a netns (None for the host and unmapped netns).
    pub fn pod_of(&self, netns: u64) -> Option<PodRef> {
        let entity = self.get(netns)?;
        match &entity.owner {
            Owner::Node => None,
            Owner::Pod { namespace, name } => Some(PodRef {
                namespace: namespace.clone(),
                name: name.clone(),
            }),
        }
    }

    fn current(&self) -> Arc<MapState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-read every source and swap the map atomically.
    pub fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = MapState::with_host(&self.host);
        if let Some(sources) = &self.sources {
            let mut found = Vec::new();
            if let Some(dir) = &sources.inventory_dir {
                inventory::read_inventories(dir, &mut found, &mut state.problems);
            }
            state.cri = match find_cri_socket(sources.cri_socket.as_deref()) {
                Ok(socket) => match cri::query(&socket, cri::CRI_TIMEOUT) {
                    Ok(answer) => {
                        let cri = CriState::Connected {
                            socket,
                            runtime: answer.runtime.name,
                            version: answer.runtime.version,
                            sandboxes: answer.sandboxes.len(),
                        };
                        for sandbox in answer.sandboxes {
                            match sandbox_entity(&sources.node, &self.roots, sandbox) {
                                Ok(Some(entity)) => found.push(entity),
                                Ok(None) => {}
                                Err(problem) => state.problems.push(problem),
                            }
                        }
                        cri
                    }
                    Err(e) => CriState::Failed {
                        socket,
                        error: e.to_string(),
                    },
                },
                Err(looked_at) => CriState::Absent { looked_at },
            };
            if !matches!(state.cri, CriState::Connected { .. }) {
                let claimed: HashSet<u64> = found.iter().map(|e| e.netns).collect();
                let host = self.host.netns;
                let from_proc =
                    procfs::scan(&self.roots.proc_root, &self.roots.pods_log_dir, |n| {
                        n == host || claimed.contains(&n)
                    });
                found.extend(from_proc.into_iter().map(|f| proc_entity(&sources.node, f)));
            }
            // The first source to claim a netns wins, then a stable order (node, its own
            // netns first, then pods by namespace/name): the pod limit always cuts the same.
            let mut claimed = HashSet::from([self.host.netns]);
            found.retain(|e| claimed.insert(e.netns));
            found.sort_by(|a, b| {
                (&a.node, !a.is_host(), a.namespace(), a.pod()).cmp(&(
                    &b.node,
                    !b.is_host(),
                    b.namespace(),
                    b.pod(),
                ))
            });
            for entity in found {
                state.by_inode.insert(entity.netns, state.entities.len());
                state.entities.push(Arc::new(entity));
            }
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }

    /// Refresh on a thread of its own every `every`, and early (at most every 2 s) when
    /// [`PodMap::get`] meets an unknown netns. The thread ends when the map is dropped.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        if self.sources.is_none() {
            return Ok(());
        }
        let map: Weak<PodMap> = Arc::downgrade(self);
        let wake = self.wake.clone();
        std::thread::Builder::new()
            .name("pods-refresh".into())
            .spawn(move || loop {
                {
                    let asked = wake.asked.lock().unwrap_or_else(|p| p.into_inner());
                    let (mut asked, _) = wake
                        .condvar
                        .wait_timeout_while(asked, every, |asked| !*asked)
                        .unwrap_or_else(|p| p.into_inner());
                    *asked = false;
                }
                let Some(map) = map.upgrade() else {
                    return;
                };
                map.refresh();
                drop(map);
                std::thread::sleep(MIN_REFRESH_GAP);
            })?;
        Ok(())
    }

    /// Directories whose changes should trigger [`PodMap::refresh`]: the inventory dir and its
    /// labs, and the kubelet's pod log directory (a new pod gets its directory there).
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let Some(sources) = &self.sources else {
            return Vec::new();
        };
        let mut dirs = vec![self.roots.pods_log_dir.clone()];
        if let Some(dir) = &sources.inventory_dir {
            dirs.push(dir.clone());
            if let Ok(read) = std::fs::read_dir(dir) {
                dirs.extend(read.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        dirs
    }
}

fn host_entity(node: &str) -> Entity {
    let path = PathBuf::from("/proc/self/ns/net");
    Entity {
        netns: netns_inode(&path).unwrap_or(0),
        // The agent's own netns at start, by a path that stays valid: setns back to it.
        path: PathBuf::from(format!("/proc/{}/ns/net", std::process::id())),
        node: node.to_string(),
        owner: Owner::Node,
        labels: BTreeMap::new(),
        source: Source::Host,
    }
}

/// The socket to ask, or every path looked at.
fn find_cri_socket(explicit: Option<&Path>) -> Result<PathBuf, Vec<PathBuf>> {
    use std::os::unix::fs::FileTypeExt;
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => CRI_SOCKETS.iter().map(PathBuf::from).collect(),
    };
    candidates
        .iter()
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.file_type().is_socket()))
        .cloned()
        .ok_or(candidates)
}

/// A ready sandbox as an entity (`None` for hostNetwork: it is the node), or why not.
fn sandbox_entity(
    node: &str,
    roots: &ProcRoots,
    sandbox: cri::Sandbox,
) -> Result<Option<Entity>, String> {
    let pid_path = |pid: u32| roots.proc_root.join(pid.to_string()).join("ns/net");
    let path = match sandbox.netns {
        cri::SandboxNetns::Node => return Ok(None),
        cri::SandboxNetns::Path { path, pid } => match (netns_inode(&path), pid) {
            (Ok(_), _) | (Err(_), None) => path,
            (Err(_), Some(pid)) => pid_path(pid),
        },
        cri::SandboxNetns::Pid(pid) => pid_path(pid),
        cri::SandboxNetns::Unknown(why) => {
            return Err(format!(
                "CRI sandbox {}/{} ({}): {why}",
                sandbox.namespace, sandbox.name, sandbox.id
            ));
        }
    };
    let netns = netns_inode(&path).map_err(|e| {
        format!(
            "CRI sandbox {}/{}: netns {}: {e}",
            sandbox.namespace,
            sandbox.name,
            path.display()
        )
    })?;
    Ok(Some(Entity {
        netns,
        path,
        node: node.to_string(),
        owner: Owner::Pod {
            namespace: sandbox.namespace,
            name: sandbox.name,
        },
        labels: sandbox.labels,
        source: Source::Cri,
    }))
}

fn proc_entity(node: &str, found: procfs::Found) -> Entity {
    Entity {
        netns: found.netns,
        path: found.path,
        node: node.to_string(),
        owner: Owner::Pod {
            namespace: found.namespace,
            name: found.name,
        },
        labels: BTreeMap::new(),
        source: if found.name_from_hostname {
            Source::ProcHostname
        } else {
            Source::ProcCgroup
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_cri_socket_is_reported_with_the_paths_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("containerd.sock");
        assert_eq!(find_cri_socket(Some(&missing)), Err(vec![missing]));
    }

    #[test]
    fn host_netns_is_the_node_and_maps_to_no_pod() {
        let map = PodMap::host_only("n1");
        let host = map.host();
        assert_eq!(
            host.netns,
            netns_inode(Path::new("/proc/self/ns/net")).unwrap()
        );
        assert_eq!(map.get(host.netns).unwrap().node, "n1");
        assert_eq!(map.pod_of(host.netns), None);
    }

    #[test]
    fn unreadable_inventory_is_a_problem_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lab1")).unwrap();
        std::fs::write(dir.path().join("lab1/inventory.json"), "{not json").unwrap();
        let map = PodMap::with_roots(
            PodMapSources {
                node: "n1".into(),
                inventory_dir: Some(dir.path().to_path_buf()),
                cri_socket: Some(dir.path().join("none.sock")),
            },
            ProcRoots {
                proc_root: dir.path().join("no-proc"),
                pods_log_dir: dir.path().join("no-pods"),
            },
        );
        assert_eq!(map.entities().len(), 1);
        let problems = map.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("lab1/inventory.json"), "{problems:?}");
    }
}
