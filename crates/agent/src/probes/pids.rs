//! Which processes live in which network namespace (for `fd` and `io`): one scan of
//! `/proc/*/ns/net`, reused for a second and shared by both probes, so one scrape scans once
//! however many netns it visits.
//!
//! A netns inode is reused by the kernel as soon as its namespace is gone (a new pod's netns
//! often gets the inode of one deleted a moment before), so a scan up to a second old can list,
//! under a live inode, processes of a namespace that no longer exists. Every pid handed out is
//! therefore checked to be in that netns now.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FRESH_FOR: Duration = Duration::from_secs(1);

/// Netns inode → pids, and when it was scanned.
type Scan = (Instant, HashMap<u64, Vec<u32>>);

struct PidIndex {
    cache: Mutex<Option<Scan>>,
}

/// The index `fd` and `io` share.
static PIDS: PidIndex = PidIndex {
    cache: Mutex::new(None),
};

impl PidIndex {
    /// Pids in the netns whose inode is `netns` now.
    fn pids(&self, netns: u64) -> Vec<u32> {
        let listed = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let stale = cache
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() > FRESH_FOR);
            if stale {
                *cache = Some((Instant::now(), scan()));
            }
            cache
                .as_ref()
                .and_then(|(_, map)| map.get(&netns).cloned())
                .unwrap_or_default()
        };
        listed
            .into_iter()
            .filter(|&pid| netns_of(pid) == Some(netns))
            .collect()
    }
}

/// `per_process` of every process in the netns whose inode is `netns` now, added up column by
/// column; a process for which it is `None` (exited since the scan) adds nothing.
pub(crate) fn sum_over_processes<const N: usize>(
    netns: u64,
    per_process: impl Fn(u32) -> Option<[u64; N]>,
) -> [u64; N] {
    let mut sums = [0u64; N];
    for values in PIDS.pids(netns).into_iter().filter_map(per_process) {
        for (sum, value) in sums.iter_mut().zip(values) {
            *sum += value;
        }
    }
    sums
}

/// The netns inode of a process; `None` once it has exited (or for kernel threads).
fn netns_of(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|meta| meta.ino())
}

fn scan() -> HashMap<u64, Vec<u32>> {
    let mut map: HashMap<u64, Vec<u32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes exit while we scan; kernel threads have no readable ns: both are skipped.
        if let Some(netns) = netns_of(pid) {
            map.entry(netns).or_default().push(pid);
        }
    }
    map
}
