//! `socketlatency` adapter: per-netns histograms of how long received data waits in sockets
//! before being read, KubeSkoop's `read1ms` / `read100ms` counters (reads of data that waited
//! more than 1 ms / 100 ms), and `SOCKETLAT_READSLOW` events for reads slower than
//! `slowThresholdMs`. KubeSkoop's `write1ms` / `write100ms` are not exported: no tracepoint
//! marks when a TCP write is sent.

use bpf::socketlatency::SocketLatency;

use super::ebpf::{
    for_live_netns, forget_dead_netns, forward_loader, histogram, histogram_value, kernel_event,
    EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(SocketLatency, "socketlatency");

static METRICS: [MetricDesc; 3] = [
    histogram(
        "socketlatency",
        "read_latency_seconds",
        "Time received data waited in a socket until the application read it",
        &["protocol"],
    ),
    MetricDesc::counter(
        "socketlatency",
        "read1ms",
        "Reads of data that waited more than 1 ms in the socket",
    )
    .with_labels(&["protocol"]),
    MetricDesc::counter(
        "socketlatency",
        "read100ms",
        "Reads of data that waited more than 100 ms in the socket",
    )
    .with_labels(&["protocol"]),
];

impl MetricSource for SocketLatency {
    const METRICS: &'static [MetricDesc] = &METRICS;

    forget_dead_netns!();

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        let slow = self.slow_counts()?;
        for (key @ (netns, protocol), hist) in self.histograms()? {
            let protocol = protocol.name();
            let over = slow.get(&key).copied().unwrap_or_default();
            let Some(mut netns) = for_live_netns(out, netns) else {
                continue;
            };
            netns.add(&METRICS[0], &[&protocol], histogram_value(&hist));
            netns.add(&METRICS[1], &[&protocol], Value::Counter(over.over_1ms));
            netns.add(&METRICS[2], &[&protocol], Value::Counter(over.over_100ms));
        }
        Ok(())
    }
}

impl EventSource for SocketLatency {
    fn drain(&mut self, out: &mut EventBatch) {
        for slow in self.drain_events() {
            let message = format!(
                "pid={} comm={} latency={:?}",
                slow.pid, slow.command, slow.latency
            );
            out.push(kernel_event(
                EventType::SocketLatReadSlow,
                slow.netns,
                slow.time,
                slow.tuple,
                message,
            ));
        }
    }
}
