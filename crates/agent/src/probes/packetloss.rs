//! `packetloss` adapter: the `bpf` packetloss loader's per-netns drop counters (by kernel drop
//! reason and protocol) as metrics, and its sampled drops as `PacketLoss` events carrying the
//! reason, the 5-tuple, the dropping function and, with `enableStack`, the stack.

use bpf::packetloss::PacketLoss;

use super::ebpf::{
    for_live_netns, forget_dead_netns, forward_loader, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(PacketLoss, "packetloss");

static METRICS: [MetricDesc; 2] = [
    MetricDesc::counter(
        "packetloss",
        "total",
        "Packets the kernel dropped, by drop reason (skb:kfree_skb)",
    )
    .with_labels(&["reason", "protocol"]),
    MetricDesc::counter(
        "packetloss",
        "netfilter",
        "Packets dropped by netfilter rules (reason NETFILTER_DROP)",
    ),
];

impl MetricSource for PacketLoss {
    const METRICS: &'static [MetricDesc] = &METRICS;

    forget_dead_netns!();

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for (key, count) in self.counts()? {
            let Some(mut netns) = for_live_netns(out, key.netns) else {
                continue;
            };
            netns.add(
                &METRICS[0],
                &[&key.reason.name, &key.l4.name()],
                Value::Counter(count),
            );
            if key.reason.name == "NETFILTER_DROP" {
                netns.counter(&METRICS[1], count);
            }
        }
        Ok(())
    }
}

impl EventSource for PacketLoss {
    fn drain(&mut self, out: &mut EventBatch) {
        for drop in self.drain_events() {
            let message = format!(
                "location={} ifindex={}",
                drop.location.as_deref().unwrap_or("unknown"),
                drop.ifindex
            );
            let mut event = kernel_event(
                EventType::PacketLoss,
                drop.netns,
                drop.time,
                drop.tuple,
                message,
            )
            .with_reason(drop.reason.name);
            if !drop.stack.is_empty() {
                event = event.with_stack(drop.stack);
            }
            out.push(event);
        }
    }
}
