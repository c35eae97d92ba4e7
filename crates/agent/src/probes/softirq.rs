//! `softirq` adapter (KubeSkoop's `net_softirq`): NET_RX/NET_TX softirq wait and run time
//! histograms for the node, and `SOFTIRQ_*` events for runs slower than `slowThresholdMs`
//! (`*_100MS` from 100 ms). Softirqs have no netns: everything goes to the node.

use std::time::Duration;

use bpf::netsoftirq::{NetSoftirq, SoftirqPhase, SoftirqVector};

use super::ebpf::{
    forward_loader, histogram, histogram_value, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::Samples;

forward_loader!(NetSoftirq, "softirq");

static METRICS: [MetricDesc; 1] = [histogram(
    "softirq",
    "latency_seconds",
    "Networking softirq latency: wait (raised to started) and run (started to finished)",
    &["softirq_type", "phase"],
)];

impl MetricSource for NetSoftirq {
    const METRICS: &'static [MetricDesc] = &METRICS;

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for ((vector, phase), hist) in self.histograms()? {
            let vector = match vector {
                SoftirqVector::NetRx => "net_rx",
                SoftirqVector::NetTx => "net_tx",
            };
            let phase = match phase {
                SoftirqPhase::Wait => "wait",
                SoftirqPhase::Run => "run",
            };
            out.add(&METRICS[0], &[vector, phase], histogram_value(&hist));
        }
        Ok(())
    }
}

impl EventSource for NetSoftirq {
    fn drain(&mut self, out: &mut EventBatch) {
        for slow in self.drain_events() {
            let over_100ms = slow.latency >= Duration::from_millis(100);
            let kind = match (slow.phase, over_100ms) {
                (SoftirqPhase::Wait, false) => EventType::SoftirqSchedSlow,
                (SoftirqPhase::Wait, true) => EventType::SoftirqSched100ms,
                (SoftirqPhase::Run, false) => EventType::SoftirqExecuteSlow,
                (SoftirqPhase::Run, true) => EventType::SoftirqExecute100ms,
            };
            let message = format!(
                "cpu={} type={:?} latency={:?}",
                slow.cpu, slow.vector, slow.latency
            );
            out.push(kernel_event(
                kind,
                bpf::NetnsInode(0),
                slow.time,
                None,
                message,
            ));
        }
    }
}
