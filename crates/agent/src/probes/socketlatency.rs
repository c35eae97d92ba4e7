//! `socketlatency` adapter: per-netns histograms of how long received data waits in sockets
//! before being read, and `SOCKETLAT_READSLOW` events for reads slower than `slowThresholdMs`.

use bpf::socketlatency::SocketLatency;

use super::ebpf::{
    forward_loader, histogram, histogram_value, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::Samples;

forward_loader!(SocketLatency, "socketlatency");

static METRICS: [MetricDesc; 1] = [histogram(
    "socketlatency",
    "read_latency_seconds",
    "Time received data waited in a socket until the application read it",
    &["protocol"],
)];

impl MetricSource for SocketLatency {
    const METRICS: &'static [MetricDesc] = &METRICS;

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for ((netns, protocol), hist) in self.histograms()? {
            out.for_netns(u64::from(netns.0)).add(
                &METRICS[0],
                &[&protocol.name()],
                histogram_value(&hist),
            );
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
