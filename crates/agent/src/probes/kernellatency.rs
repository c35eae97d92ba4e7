//! `kernellatency` adapter: per-netns receive-path latency histograms (to TCP processing, to
//! the user copy), and `RXKERNEL_SLOW` events for packets slower than `slowThresholdMs`.

use bpf::kernellatency::{KernelLatency, RxStage};

use super::ebpf::{
    forward_loader, histogram, histogram_value, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::Samples;

forward_loader!(KernelLatency, "kernellatency");

static METRICS: [MetricDesc; 1] = [histogram(
    "kernellatency",
    "rx_latency_seconds",
    "Receive latency from netif_receive_skb to TCP processing (to_tcp) or to the copy to user space (to_user)",
    &["stage"],
)];

fn stage(stage: RxStage) -> &'static str {
    match stage {
        RxStage::ToTcp => "to_tcp",
        RxStage::ToUserCopy => "to_user",
    }
}

impl MetricSource for KernelLatency {
    const METRICS: &'static [MetricDesc] = &METRICS;

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for ((netns, rx_stage), hist) in self.histograms()? {
            out.for_netns(u64::from(netns.0)).add(
                &METRICS[0],
                &[stage(rx_stage)],
                histogram_value(&hist),
            );
        }
        Ok(())
    }
}

impl EventSource for KernelLatency {
    fn drain(&mut self, out: &mut EventBatch) {
        for slow in self.drain_events() {
            let message = format!("stage={} latency={:?}", stage(slow.stage), slow.latency);
            out.push(kernel_event(
                EventType::RxKernelSlow,
                slow.netns,
                slow.time,
                slow.tuple,
                message,
            ));
        }
    }
}
