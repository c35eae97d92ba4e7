//! `netiftxlat` adapter: per-netns transmit latency histograms (qdisc and driver stages),
//! KubeSkoop's `qdiscslow100ms` / `netdevslow100ms` counters (a stage slower than 100 ms), and
//! `NETIFTXLAT_QDISC` / `NETIFTXLAT_XMIT` events for packets slower than `slowThresholdMs`.

use bpf::netiftxlat::{NetifTxLatency, TxStage};

use super::ebpf::{
    for_live_netns, forget_dead_netns, forward_loader, histogram, histogram_value, kernel_event,
    EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(NetifTxLatency, "netiftxlat");

static METRICS: [MetricDesc; 3] = [
    histogram(
        "netiftxlat",
        "latency_seconds",
        "Transmit latency: qdisc (queued to driver) and driver (driver call)",
        &["stage"],
    ),
    MetricDesc::counter(
        "netiftxlat",
        "qdiscslow100ms",
        "Packets that waited more than 100 ms in the qdisc",
    ),
    MetricDesc::counter(
        "netiftxlat",
        "netdevslow100ms",
        "Packets the driver took more than 100 ms to transmit",
    ),
];

impl MetricSource for NetifTxLatency {
    const METRICS: &'static [MetricDesc] = &METRICS;

    forget_dead_netns!();

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        let slow = self.slow_counts()?;
        for (key @ (netns, stage), hist) in self.histograms()? {
            let (label, over_100ms) = match stage {
                TxStage::Qdisc => ("qdisc", &METRICS[1]),
                TxStage::Driver => ("driver", &METRICS[2]),
            };
            let Some(mut netns) = for_live_netns(out, netns) else {
                continue;
            };
            netns.add(&METRICS[0], &[label], histogram_value(&hist));
            let over = slow.get(&key).copied().unwrap_or_default();
            netns.add(over_100ms, &[], Value::Counter(over.over_100ms));
        }
        Ok(())
    }
}

impl EventSource for NetifTxLatency {
    fn drain(&mut self, out: &mut EventBatch) {
        for slow in self.drain_events() {
            let kind = match slow.stage {
                TxStage::Qdisc => EventType::NetifTxLatQdisc,
                TxStage::Driver => EventType::NetifTxLatXmit,
            };
            let message = format!("ifindex={} latency={:?}", slow.ifindex, slow.latency);
            out.push(kernel_event(
                kind, slow.netns, slow.time, slow.tuple, message,
            ));
        }
    }
}
