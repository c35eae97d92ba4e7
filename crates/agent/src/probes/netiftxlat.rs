//! `netiftxlat` adapter: per-netns transmit latency histograms (qdisc and driver stages), and
//! `NETIFTXLAT_QDISC` / `NETIFTXLAT_XMIT` events for packets slower than `slowThresholdMs`.

use bpf::netiftxlat::{NetifTxLatency, TxStage};

use super::ebpf::{
    forward_loader, histogram, histogram_value, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::Samples;

forward_loader!(NetifTxLatency, "netiftxlat");

static METRICS: [MetricDesc; 1] = [histogram(
    "netiftxlat",
    "latency_seconds",
    "Transmit latency: qdisc (queued to driver) and driver (driver call)",
    &["stage"],
)];

impl MetricSource for NetifTxLatency {
    const METRICS: &'static [MetricDesc] = &METRICS;

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for ((netns, stage), hist) in self.histograms()? {
            let stage = match stage {
                TxStage::Qdisc => "qdisc",
                TxStage::Driver => "driver",
            };
            out.for_netns(u64::from(netns.0))
                .add(&METRICS[0], &[stage], histogram_value(&hist));
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
