//! `biolatency` adapter: block request latency histograms per device and operation for the
//! node, `slow` / `slow100ms` counters (requests slower than `slowThresholdMs` / 100 ms; ours,
//! KubeSkoop's biolatency had events only), and `BIOLAT_10MS` events for requests slower than
//! `slowThresholdMs` (default 10 ms).

use bpf::biolatency::{BioLatency, BlockOp};

use super::ebpf::{
    forward_loader, histogram, histogram_value, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(BioLatency, "biolatency");

static METRICS: [MetricDesc; 3] = [
    histogram(
        "biolatency",
        "latency_seconds",
        "Block request latency from issue to completion",
        &["device", "op"],
    ),
    MetricDesc::counter(
        "biolatency",
        "slow",
        "Block requests slower than slowThresholdMs from issue to completion",
    )
    .with_labels(&["device", "op"]),
    MetricDesc::counter(
        "biolatency",
        "slow100ms",
        "Block requests slower than 100 ms from issue to completion",
    )
    .with_labels(&["device", "op"]),
];

fn op(op: BlockOp) -> &'static str {
    match op {
        BlockOp::Read => "read",
        BlockOp::Write => "write",
        BlockOp::Other => "other",
    }
}

impl MetricSource for BioLatency {
    const METRICS: &'static [MetricDesc] = &METRICS;

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        let slow = self.slow_counts()?;
        for (key @ (device, block_op), hist) in self.histograms()? {
            let device = format!("{}:{}", device.major, device.minor);
            let labels = [device.as_str(), op(block_op)];
            out.add(&METRICS[0], &labels, histogram_value(&hist));
            let over = slow.get(&key).copied().unwrap_or_default();
            out.add(
                &METRICS[1],
                &labels,
                Value::Counter(over.over_slow_threshold),
            );
            out.add(&METRICS[2], &labels, Value::Counter(over.over_100ms));
        }
        Ok(())
    }
}

impl EventSource for BioLatency {
    fn drain(&mut self, out: &mut EventBatch) {
        for slow in self.drain_events() {
            let message = format!(
                "{} {} latency {:?} device {}:{} {} {} bytes error {}",
                slow.command,
                slow.pid,
                slow.latency,
                slow.device.major,
                slow.device.minor,
                op(slow.op),
                slow.bytes,
                slow.error
            );
            out.push(kernel_event(
                EventType::BioLatency10ms,
                bpf::NetnsInode(0),
                slow.time,
                None,
                message,
            ));
        }
    }
}
