//! Pod mapping: network namespace inode → the entity (node or pod) whose labels a sample gets.
//!
//! Sources, in order:
//! - the host netns (the agent's own at start) is always the node entity (`k8s_pod=""`);
//! - lab inventories (`<inventory dir>/*/inventory.json`, default `/run/netsleuth/labs`, written
//!   by `netsleuth lab`): each listed netns becomes its pod (or, for an emulated node's netns,
//!   that node), with the pod's labels for `additionalLabels`;
//! - a CRI socket (containerd / CRI-O, found automatically or `--cri-socket`): detected and
//!   reported in `/status`; the CRI client itself is not built yet, so pods behind a real
//!   runtime are not mapped (their samples count as the node's).
//!
//! The map is rebuilt when an inventory changes (inotify on the directory), never polled hot.
//! Must not read any metric.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use model::snapshot::NetnsOwner;
use model::Inventory;
use serde::Serialize;

use crate::events::PodRef;

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

/// What the CRI side found, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CriState {
    /// No socket at the given or the well-known paths.
    Absent { looked_at: Vec<PathBuf> },
    /// A socket is there; the CRI client is not built, so its pods are not mapped.
    FoundNotQueried { socket: PathBuf },
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

#[derive(Debug, Default)]
struct MapState {
    entities: Vec<Arc<Entity>>,
    by_inode: HashMap<u64, usize>,
    /// Inventory files that could not be read, with why (shown in `/status`).
    problems: Vec<String>,
}

/// The current netns → entity map; cheap to read from any thread.
#[derive(Debug)]
pub struct PodMap {
    host: Arc<Entity>,
    sources: Option<PodMapSources>,
    cri: CriState,
    state: RwLock<Arc<MapState>>,
}

/// Inode of a netns file.
pub fn netns_inode(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

impl PodMap {
    /// Only the host netns (no inventories, no CRI): for tests and `--no-pods`.
    pub fn host_only(node: &str) -> PodMap {
        let host = Arc::new(host_entity(node));
        let mut state = MapState::default();
        state.by_inode.insert(host.netns, 0);
        state.entities.push(host.clone());
        PodMap {
            host,
            sources: None,
            cri: CriState::Absent { looked_at: vec![] },
            state: RwLock::new(Arc::new(state)),
        }
    }

    /// Build from the sources and read them once.
    pub fn new(sources: PodMapSources) -> PodMap {
        let host = Arc::new(host_entity(&sources.node));
        let cri = detect_cri(sources.cri_socket.as_deref());
        let map = PodMap {
            host,
            sources: Some(sources),
            cri,
            state: RwLock::new(Arc::new(MapState::default())),
        };
        map.refresh();
        map
    }

    pub fn node(&self) -> &str {
        &self.host.node
    }

    pub fn host(&self) -> Arc<Entity> {
        self.host.clone()
    }

    pub fn cri(&self) -> &CriState {
        &self.cri
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

    /// The entity of this netns inode, if mapped.
    pub fn get(&self, netns: u64) -> Option<Arc<Entity>> {
        let state = self.current();
        state
            .by_inode
            .get(&netns)
            .map(|&i| state.entities[i].clone())
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
        let mut state = MapState::default();
        state.by_inode.insert(self.host.netns, 0);
        state.entities.push(self.host.clone());
        if let Some(dir) = self.sources.as_ref().and_then(|s| s.inventory_dir.as_ref()) {
            let mut found = Vec::new();
            read_inventories(dir, &mut found, &mut state.problems);
            // Stable order (node, its own netns first, then pods by namespace/name): the pod
            // limit then always cuts the same pods.
            found.sort_by(|a, b| {
                (&a.node, !a.is_host(), a.namespace(), a.pod()).cmp(&(
                    &b.node,
                    !b.is_host(),
                    b.namespace(),
                    b.pod(),
                ))
            });
            for entity in found {
                if state.by_inode.contains_key(&entity.netns) {
                    continue;
                }
                state.by_inode.insert(entity.netns, state.entities.len());
                state.entities.push(Arc::new(entity));
            }
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }

    /// Directories whose changes should trigger [`PodMap::refresh`].
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let Some(dir) = self.inventory_dir() else {
            return Vec::new();
        };
        let mut dirs = vec![dir.to_path_buf()];
        if let Ok(read) = std::fs::read_dir(dir) {
            dirs.extend(read.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
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
    }
}

fn detect_cri(explicit: Option<&Path>) -> CriState {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => CRI_SOCKETS.iter().map(PathBuf::from).collect(),
    };
    for candidate in &candidates {
        if std::fs::metadata(candidate)
            .map(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            })
            .unwrap_or(false)
        {
            return CriState::FoundNotQueried {
                socket: candidate.clone(),
            };
        }
    }
    CriState::Absent {
        looked_at: candidates,
    }
}

fn read_inventories(dir: &Path, found: &mut Vec<Entity>, problems: &mut Vec<String>) {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        // No labs: nothing to map, not a problem.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for lab in read.flatten() {
        let file = lab.path().join("inventory.json");
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        let inventory: Inventory = match serde_json::from_slice(&bytes) {
            Ok(inv) => inv,
            Err(e) => {
                problems.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        entities_of(&inventory, found, problems);
    }
}

fn entities_of(inventory: &Inventory, found: &mut Vec<Entity>, problems: &mut Vec<String>) {
    for location in &inventory.netns {
        let owner = match &location.owner {
            NetnsOwner::Host => Owner::Node,
            NetnsOwner::Pod { namespace, name } => Owner::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            // Underlay routers are the lab's plumbing, not Kubernetes.
            NetnsOwner::Infrastructure { .. } => continue,
        };
        let netns = match netns_inode(&location.path) {
            Ok(inode) => inode,
            Err(e) => {
                problems.push(format!("{}: {e}", location.path.display()));
                continue;
            }
        };
        let labels = match &owner {
            Owner::Pod { namespace, name } => inventory
                .kubernetes
                .pods
                .iter()
                .find(|p| {
                    p.metadata.name.as_deref() == Some(name)
                        && p.metadata.namespace.as_deref().unwrap_or("default") == namespace
                })
                .and_then(|p| p.metadata.labels.clone())
                .unwrap_or_default(),
            Owner::Node => BTreeMap::new(),
        };
        found.push(Entity {
            netns,
            path: location.path.clone(),
            node: location.node.clone(),
            owner,
            labels,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_cri_socket_is_reported_with_the_paths_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("containerd.sock");
        match detect_cri(Some(&missing)) {
            CriState::Absent { looked_at } => assert_eq!(looked_at, vec![missing]),
            other => panic!("expected absent, got {other:?}"),
        }
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
        let map = PodMap::new(PodMapSources {
            node: "n1".into(),
            inventory_dir: Some(dir.path().to_path_buf()),
            cri_socket: Some(dir.path().join("none.sock")),
        });
        assert_eq!(map.entities().len(), 1);
        let problems = map.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("lab1/inventory.json"), "{problems:?}");
    }
}
