//! Load-time settings shared by all probes. Fields a probe does not use are ignored by it
//! (each field says which probes read it).

use std::path::PathBuf;
use std::time::Duration;

/// Settings applied when a probe is loaded; changing them needs a reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Kernel BTF used for CO-RE relocation, tracepoint lookup and drop-reason names.
    pub btf_path: PathBuf,
    /// Events each CPU may push per second (token-bucket refill rate); 0 disables events.
    pub events_per_second: u64,
    /// Events each CPU may push in a burst (token-bucket capacity).
    pub event_burst: u64,
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// Latency probes push an event only for samples slower than this, and count them in
    /// `SlowCounts::over_slow_threshold`.
    pub slow_threshold: Duration,
    /// packetloss: attach the kernel stack (16 frames) to each sampled drop event.
    pub capture_stack: bool,
    /// Entries of each aggregation map (counters, histograms, flow LRU, in-flight timestamps).
    pub max_entries: u32,
    /// flow: also count flows of the host network namespace, not only pods'.
    pub include_host_netns: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
            events_per_second: 100,
            event_burst: 200,
            ring_buffer_bytes: 256 * 1024,
            slow_threshold: Duration::from_millis(10),
            capture_stack: false,
            max_entries: 16384,
            include_host_netns: false,
        }
    }
}
