//! `biolatency` adapter: block request latency histograms per device and operation for the
//! node, and `BIOLAT_10MS` events for requests slower than `slowThresholdMs` (default 10 ms).

use bpf::biolatency::{BioLatency, BlockOp};

use super::ebpf::{
    forward_loader, histogram, histogram_value, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::Samples;

forward_loader!(BioLatency, "biolatency");

static METRICS: [MetricDesc; 1] = [histogram(
    "biolatency",
    "latency_seconds",
    "Block request latency from issue to completion",
    &["device", "op"],
)];

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
        for ((device, block_op), hist) in self.histograms()? {
            let device = format!("{}:{}", device.major, device.minor);
            out.add(
                &METRICS[0],
                &[&device, op(block_op)],
                histogram_value(&hist),
            );
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
