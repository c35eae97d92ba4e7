//! `flow` adapter: bytes and packets per netns, direction and 5-tuple (ports in host order;
//! KubeSkoop's were byte-swapped) from the bounded in-kernel LRU. Metrics only.

use bpf::flow::{Direction, Flow};

use super::ebpf::{for_live_netns, forget_dead_netns, forward_loader, MetricSource};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(Flow, "flow");

const LABELS: &[&str] = &["direction", "protocol", "src", "sport", "dst", "dport"];

static METRICS: [MetricDesc; 2] = [
    MetricDesc::counter("flow", "bytes", "IP bytes per flow").with_labels(LABELS),
    MetricDesc::counter(
        "flow",
        "packets",
        "Packets per flow (a GSO packet counts its segments)",
    )
    .with_labels(LABELS),
];

impl MetricSource for Flow {
    const METRICS: &'static [MetricDesc] = &METRICS;

    forget_dead_netns!();

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for (key, counters) in self.flows()? {
            let direction = match key.direction {
                Direction::Egress => "egress",
                Direction::Ingress => "ingress",
            };
            let (src, sport) = (
                key.tuple.src.ip().to_string(),
                key.tuple.src.port().to_string(),
            );
            let (dst, dport) = (
                key.tuple.dst.ip().to_string(),
                key.tuple.dst.port().to_string(),
            );
            let labels = [
                direction,
                &key.tuple.protocol.name(),
                &src,
                &sport,
                &dst,
                &dport,
            ];
            let Some(mut netns) = for_live_netns(out, key.netns) else {
                continue;
            };
            netns.add(&METRICS[0], &labels, Value::Counter(counters.bytes));
            netns.add(&METRICS[1], &labels, Value::Counter(counters.packets));
        }
        Ok(())
    }
}
