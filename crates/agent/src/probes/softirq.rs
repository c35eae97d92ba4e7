//! `softirq` adapter (KubeSkoop's `net_softirq`): NET_RX/NET_TX softirq wait and run time
//! histograms for the node, KubeSkoop's `schedslow` / `schedslow100ms` / `excuteslow` /
//! `excuteslow100ms` counters (wait or run slower than `slowThresholdMs` / 100 ms, label
//! `softirq_type`), and `SOFTIRQ_*` events for softirqs slower than `slowThresholdMs`
//! (`*_100MS` over 100 ms). Softirqs have no netns: everything goes to the node.

use std::time::Duration;

use bpf::netsoftirq::{NetSoftirq, SoftirqPhase, SoftirqVector};

use super::ebpf::{
    forward_loader, histogram, histogram_value, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(NetSoftirq, "softirq");

static METRICS: [MetricDesc; 5] = [
    histogram(
        "softirq",
        "latency_seconds",
        "Networking softirq latency: wait (raised to started) and run (started to finished)",
        &["softirq_type", "phase"],
    ),
    MetricDesc::counter(
        "softirq",
        "schedslow",
        "Softirqs that waited more than slowThresholdMs between raised and started",
    )
    .with_labels(&["softirq_type"]),
    MetricDesc::counter(
        "softirq",
        "schedslow100ms",
        "Softirqs that waited more than 100 ms between raised and started",
    )
    .with_labels(&["softirq_type"]),
    MetricDesc::counter(
        "softirq",
        "excuteslow",
        "Softirqs that ran longer than slowThresholdMs (KubeSkoop's spelling)",
    )
    .with_labels(&["softirq_type"]),
    MetricDesc::counter(
        "softirq",
        "excuteslow100ms",
        "Softirqs that ran longer than 100 ms (KubeSkoop's spelling)",
    )
    .with_labels(&["softirq_type"]),
];

impl MetricSource for NetSoftirq {
    const METRICS: &'static [MetricDesc] = &METRICS;

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        let slow = self.slow_counts()?;
        for (key @ (vector, phase), hist) in self.histograms()? {
            let vector = match vector {
                SoftirqVector::NetRx => "net_rx",
                SoftirqVector::NetTx => "net_tx",
            };
            let (phase, over_slow, over_100ms) = match phase {
                SoftirqPhase::Wait => ("wait", &METRICS[1], &METRICS[2]),
                SoftirqPhase::Run => ("run", &METRICS[3], &METRICS[4]),
            };
            out.add(&METRICS[0], &[vector, phase], histogram_value(&hist));
            let over = slow.get(&key).copied().unwrap_or_default();
            out.add(
                over_slow,
                &[vector],
                Value::Counter(over.over_slow_threshold),
            );
            out.add(over_100ms, &[vector], Value::Counter(over.over_100ms));
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
