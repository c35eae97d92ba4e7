//! Values every probe returns besides its own counters: what the event sampler did
//! (`probe_stats` in common.bpf.h) and log2 latency histograms.

use std::time::Duration;

/// Event and map accounting of one probe, summed over CPUs since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Events written to the ring buffer.
    pub events_emitted: u64,
    /// Events the token bucket sampled away (counted, not sent).
    pub events_rate_limited: u64,
    /// Events lost because the ring buffer was full (user space too slow).
    pub events_ringbuf_full: u64,
    /// Counts lost because an aggregation map was full.
    pub map_full: u64,
}

impl ProbeStats {
    /// Order of `enum ns_probe_stat` in common.bpf.h.
    pub(crate) fn from_slots(slots: [u64; 4]) -> Self {
        Self {
            events_emitted: slots[0],
            events_rate_limited: slots[1],
            events_ringbuf_full: slots[2],
            map_full: slots[3],
        }
    }
}

/// Samples strictly slower than each of the fixed thresholds KubeSkoop's counters use, counted
/// exactly in the kernel (`latency.bpf.h`); cumulative, so a 200 ms sample is in all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowCounts {
    /// More than 1 ms.
    pub over_1ms: u64,
    /// More than `Options::slow_threshold`.
    pub over_slow_threshold: u64,
    /// More than 100 ms.
    pub over_100ms: u64,
}

impl SlowCounts {
    /// Adds `count` to the threshold numbered as `enum ns_latency_threshold` in latency.bpf.h.
    pub(crate) fn add(&mut self, threshold: u16, count: u64) {
        match threshold {
            0 => self.over_1ms += count,
            1 => self.over_slow_threshold += count,
            2 => self.over_100ms += count,
            _ => {}
        }
    }
}

pub(crate) const HISTOGRAM_SLOTS: usize = 64;

/// Latency histogram with power-of-two buckets: bucket `i` counts samples `v` (nanoseconds)
/// with `2^i <= v < 2^(i+1)` (bucket 0 also holds 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log2Histogram {
    pub buckets: [u64; HISTOGRAM_SLOTS],
    pub sum_ns: u64,
}

impl Default for Log2Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; HISTOGRAM_SLOTS],
            sum_ns: 0,
        }
    }
}

impl Log2Histogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Exclusive upper bound of bucket `slot`.
    pub fn upper_bound(slot: usize) -> Duration {
        Duration::from_nanos(1u64.checked_shl(slot as u32 + 1).unwrap_or(u64::MAX))
    }

    /// Samples at or above `threshold`, counting whole buckets whose lower bound reaches it.
    pub fn count_at_least(&self, threshold: Duration) -> u64 {
        let threshold = threshold.as_nanos().min(u64::MAX as u128) as u64;
        self.buckets
            .iter()
            .enumerate()
            .filter(|(slot, _)| (1u64 << *slot) >= threshold)
            .map(|(_, count)| count)
            .sum()
    }

    pub(crate) fn add(&mut self, slot: u16, count: u64, sum_ns: u64) {
        if let Some(bucket) = self.buckets.get_mut(usize::from(slot)) {
            *bucket += count;
        }
        self.sum_ns += sum_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        let mut h = Log2Histogram::default();
        h.add(20, 3, 3 << 20);
        h.add(10, 1, 1 << 10);
        assert_eq!(h.count(), 4);
        assert_eq!(
            Log2Histogram::upper_bound(20),
            Duration::from_nanos(1 << 21)
        );
        assert_eq!(h.count_at_least(Duration::from_nanos(1 << 20)), 3);
        assert_eq!(h.count_at_least(Duration::ZERO), 4);
    }
}
