//! Which processes live in which network namespace (for `fd` and `io`): one scan of
//! `/proc/*/ns/net`, reused for a second so one scrape scans once however many netns it visits.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FRESH_FOR: Duration = Duration::from_secs(1);

/// Netns inode → pids, and when it was scanned.
type Scan = (Instant, HashMap<u64, Vec<u32>>);

#[derive(Default)]
pub(crate) struct PidIndex {
    cache: Mutex<Option<Scan>>,
}

impl PidIndex {
    /// Pids whose netns inode is `netns`.
    pub(crate) fn pids(&self, netns: u64) -> Vec<u32> {
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
    }
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
        if let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            map.entry(meta.ino()).or_default().push(pid);
        }
    }
    map
}
