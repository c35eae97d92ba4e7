//! `kernellatency` adapter: per-netns receive-path latency histograms (to TCP processing, to
//! the user copy), KubeSkoop's `rxslow` / `rxslow100ms` counters (receive to TCP processing
//! slower than `slowThresholdMs` / 100 ms), and `RXKERNEL_SLOW` events for packets slower than
//! `slowThresholdMs`. KubeSkoop's `txslow*` are not exported: no tracepoint marks the IP
//! transmit path.

use bpf::kernellatency::{KernelLatency, RxStage};

use super::ebpf::{
    for_live_netns, forget_dead_netns, forward_loader, histogram, histogram_value, kernel_event,
    EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(KernelLatency, "kernellatency");

static METRICS: [MetricDesc; 3] = [
    histogram(
        "kernellatency",
        "rx_latency_seconds",
        "Receive latency from netif_receive_skb to TCP processing (to_tcp) or to the copy to user space (to_user)",
        &["stage"],
    ),
    MetricDesc::counter(
        "kernellatency",
        "rxslow",
        "Packets slower than slowThresholdMs from netif_receive_skb to TCP processing",
    ),
    MetricDesc::counter(
        "kernellatency",
        "rxslow100ms",
        "Packets slower than 100 ms from netif_receive_skb to TCP processing",
    ),
];

fn stage(stage: RxStage) -> &'static str {
    match stage {
        RxStage::ToTcp => "to_tcp",
        RxStage::ToUserCopy => "to_user",
    }
}

impl MetricSource for KernelLatency {
    const METRICS: &'static [MetricDesc] = &METRICS;

    forget_dead_netns!();

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        let slow = self.slow_counts()?;
        for (key @ (netns, rx_stage), hist) in self.histograms()? {
            let Some(mut netns) = for_live_netns(out, netns) else {
                continue;
            };
            netns.add(&METRICS[0], &[stage(rx_stage)], histogram_value(&hist));
            // KubeSkoop's rx path ends at local delivery; to_user also holds socket queueing.
            if rx_stage == RxStage::ToTcp {
                let over = slow.get(&key).copied().unwrap_or_default();
                netns.add(&METRICS[1], &[], Value::Counter(over.over_slow_threshold));
                netns.add(&METRICS[2], &[], Value::Counter(over.over_100ms));
            }
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
