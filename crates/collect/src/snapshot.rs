//! From an inventory (or a list of namespace paths) to a snapshot: every selected namespace read
//! in parallel, one thread each (a bounded number at a time), then veth peers resolved across
//! the namespaces read together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::snapshot::{ClusterInfo, KubeObjects, NetnsOwner, SnapshotSource, SourceKind};
use model::{Inventory, NetnsLocation, NetnsRecord, Snapshot};
use netstack::state::NetnsState;

use crate::netlink::{self, ForeignPeer};
use crate::thread::spawn_in_netns;
use crate::{procfs, tools, CollectError};

/// Namespaces read at the same time. Reading is mostly waiting (netlink, child processes), so
/// this is above the core count; the bound keeps a large inventory from forking hundreds of
/// `iptables-save` at once.
const PARALLEL_NAMESPACES: usize = 8;

/// Which namespaces of an inventory to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsFilter {
    All,
    /// Only those on these nodes (by [`NetnsLocation::node`]; the lab's underlay is node
    /// `underlay`).
    Nodes(BTreeSet<String>),
}

impl NetnsFilter {
    fn selects(&self, location: &NetnsLocation) -> bool {
        match self {
            NetnsFilter::All => true,
            NetnsFilter::Nodes(nodes) => nodes.contains(&location.node),
        }
    }
}

/// Called on the caller's thread each time a namespace has been read, with how long it took.
pub type Progress<'a> = &'a mut dyn FnMut(&NetnsLocation, Duration);

/// A namespace read on its thread, before peers are resolved.
struct NetnsRead {
    state: NetnsState,
    foreign_peers: ForeignPeers,
}

/// Veths of one namespace whose peer is elsewhere: link index → snapshot id of the peer's
/// namespace, or the kernel's namespace id when that namespace was not read.
type ForeignPeers = Vec<(u32, Result<String, i32>)>;

/// Reads the selected namespaces of `inventory` into a snapshot carrying the inventory's source,
/// cluster facts and Kubernetes objects.
pub fn collect_inventory(
    inventory: &Inventory,
    filter: &NetnsFilter,
    progress: Progress<'_>,
) -> Result<Snapshot, CollectError> {
    let selected: Vec<&NetnsLocation> = inventory
        .netns
        .iter()
        .filter(|l| filter.selects(l))
        .collect();
    let reads = read_all(&selected, progress)?;
    let mut foreign_peers = Vec::with_capacity(reads.len());
    let mut records: Vec<NetnsRecord> = selected
        .iter()
        .zip(reads)
        .map(|(location, read)| {
            // Moved, not cloned: a node's state holds megabytes of conntrack and rules.
            foreign_peers.push(read.foreign_peers);
            NetnsRecord {
                id: location.id.clone(),
                node: location.node.clone(),
                owner: location.owner.clone(),
                state: read.state,
            }
        })
        .collect();
    resolve_peers(&mut records, &foreign_peers);
    Ok(Snapshot {
        source: SnapshotSource {
            collected_at: Some(rfc3339_now()),
            ..inventory.source.clone()
        },
        cluster: inventory.cluster.clone(),
        kubernetes: inventory.kubernetes.clone(),
        netns: records,
        ..Snapshot::new(inventory.source.clone())
    })
}

/// Reads namespaces given by path (`/run/netns/NAME`, `/proc/PID/ns/net`) into a snapshot
/// without Kubernetes objects. Each becomes a host namespace whose id and node are the name
/// (`NAME`, or `pid-PID`).
pub fn collect_netns(paths: &[PathBuf], progress: Progress<'_>) -> Result<Snapshot, CollectError> {
    let mut netns = Vec::new();
    let mut seen = BTreeSet::new();
    for path in paths {
        let id = id_for_path(path)?;
        if !seen.insert(id.clone()) {
            return Err(CollectError::Inventory {
                path: path.clone(),
                message: format!("names the same namespace id {id:?} as an earlier path"),
            });
        }
        netns.push(NetnsLocation {
            node: id.clone(),
            id,
            owner: NetnsOwner::Host,
            path: path.clone(),
        });
    }
    let inventory = Inventory {
        source: SnapshotSource {
            kind: SourceKind::Live,
            name: "netns".into(),
            collected_at: None,
        },
        cluster: ClusterInfo::default(),
        kubernetes: KubeObjects::default(),
        netns,
    };
    collect_inventory(&inventory, &NetnsFilter::All, progress)
}

/// `NAME` for `/run/netns/NAME` (or any other bind mount), `pid-PID` for `/proc/PID/ns/net`.
fn id_for_path(path: &Path) -> Result<String, CollectError> {
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    match parts.as_slice() {
        [.., "proc", pid, "ns", "net"] => Ok(format!("pid-{pid}")),
        [.., name] if *name != "/" => Ok((*name).to_string()),
        _ => Err(CollectError::Inventory {
            path: path.to_path_buf(),
            message: "is not a namespace file (expected /run/netns/NAME or /proc/PID/ns/net)"
                .into(),
        }),
    }
}

fn read_all(
    selected: &[&NetnsLocation],
    progress: Progress<'_>,
) -> Result<Vec<NetnsRead>, CollectError> {
    // Opened up front: each thread enters its namespace through its own file, and every thread
    // may ask the kernel which namespace id a candidate has (RTM_GETNSID by fd), so all the
    // files stay open until the last thread is done.
    let files = selected
        .iter()
        .map(|l| {
            File::open(&l.path).map_err(|source| CollectError::OpenNetns {
                path: l.path.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One list for every thread (each skips its own namespace when it asks): a copy per thread
    // would grow with the square of the namespace count.
    let candidates: Arc<[(String, i32)]> = selected
        .iter()
        .zip(&files)
        .map(|(l, f)| (l.id.clone(), f.as_raw_fd()))
        .collect();
    let (done, finished) = mpsc::channel();
    let mut results: Vec<Option<NetnsRead>> = selected.iter().map(|_| None).collect();
    let mut started_at = vec![Instant::now(); selected.len()];
    let mut next = 0;
    let mut in_flight = 0;
    while next < selected.len() || in_flight > 0 {
        if next < selected.len() && in_flight < PARALLEL_NAMESPACES {
            let location = selected[next];
            let netns = files[next]
                .try_clone()
                .map_err(|source| CollectError::OpenNetns {
                    path: location.path.clone(),
                    source,
                })?;
            let candidates = Arc::clone(&candidates);
            let (path, id) = (location.path.clone(), location.id.clone());
            started_at[next] = Instant::now();
            spawn_in_netns(netns, path.clone(), next, done.clone(), move || {
                read_here(&path, &id, &candidates)
            })?;
            next += 1;
            in_flight += 1;
            continue;
        }
        let (index, result) = finished
            .recv()
            .expect("collector threads always report before exiting");
        in_flight -= 1;
        let read = result?;
        progress(selected[index], started_at[index].elapsed());
        results[index] = Some(read);
    }
    drop(files);
    Ok(results
        .into_iter()
        .map(|r| r.expect("every namespace reported"))
        .collect())
}

/// Reads the namespace the calling thread is in (snapshot id `own_id`). `candidates` are all
/// the namespaces being read, as `(snapshot id, open fd)`; the others name the namespaces veth
/// peers live in.
fn read_here(
    path: &Path,
    own_id: &str,
    candidates: &[(String, i32)],
) -> Result<NetnsRead, CollectError> {
    let tools = tools::start();
    let mut state = NetnsState::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| CollectError::Netlink {
            path: path.to_path_buf(),
            source,
        })?;
    let foreign: Vec<(ForeignPeer, Option<String>)> = runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| CollectError::Netlink {
                path: path.to_path_buf(),
                source,
            })?;
        tokio::spawn(connection);
        let foreign = netlink::read(&handle, &mut state).await;
        let wanted: BTreeSet<i32> = foreign.iter().map(|f| f.nsid).collect();
        let nsids = if wanted.is_empty() {
            BTreeMap::new()
        } else {
            let others = candidates.iter().filter(|(id, _)| id != own_id);
            netlink::nsids_of(&handle, others, &wanted).await
        };
        Ok::<_, CollectError>(
            foreign
                .into_iter()
                .map(|f| (f, nsids.get(&f.nsid).cloned()))
                .collect(),
        )
    })?;
    procfs::read(&mut state);
    tools.finish_into(&mut state);
    Ok(NetnsRead {
        state,
        foreign_peers: foreign
            .into_iter()
            .map(|(peer, id)| (peer.link_index, id.ok_or(peer.nsid)))
            .collect(),
    })
}

/// Points every veth whose peer is in another namespace at that namespace's snapshot id and
/// names the peer. A peer in a namespace that was not read gets the id
/// `outside-snapshot/nsid-N`, which no record has, so nothing mistakes it for a local device.
fn resolve_peers(records: &mut [NetnsRecord], foreign_peers: &[ForeignPeers]) {
    let names: BTreeMap<(String, u32), String> = records
        .iter()
        .flat_map(|r| {
            r.state
                .links
                .iter()
                .map(move |l| ((r.id.clone(), l.index), l.name.clone()))
        })
        .collect();
    for (record, foreign) in records.iter_mut().zip(foreign_peers) {
        for (link_index, peer_netns) in foreign {
            let Some(peer) = record
                .state
                .links
                .iter_mut()
                .find(|l| l.index == *link_index)
                .and_then(|l| l.peer.as_mut())
            else {
                continue;
            };
            match peer_netns {
                Ok(id) => {
                    peer.name = names.get(&(id.clone(), peer.ifindex)).cloned();
                    peer.netns = Some(id.clone());
                }
                Err(nsid) => peer.netns = Some(format!("outside-snapshot/nsid-{nsid}")),
            }
        }
    }
}

/// The current time as RFC 3339 UTC (`2026-11-29T13:45:07Z`).
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_namespace_path() {
        assert_eq!(id_for_path(Path::new("/run/netns/blue")).unwrap(), "blue");
        assert_eq!(id_for_path(Path::new("/proc/42/ns/net")).unwrap(), "pid-42");
        assert!(id_for_path(Path::new("/")).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
