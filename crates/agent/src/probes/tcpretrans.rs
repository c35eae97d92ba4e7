//! `tcpretrans` adapter: retransmitted segments per netns and socket state as a counter, and
//! as `TCPRetrans` events with the connection's tuple (src = local end).

use bpf::tcpretrans::TcpRetrans;

use super::ebpf::{
    for_live_netns, forget_dead_netns, forward_loader, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(TcpRetrans, "tcpretrans");

static METRICS: [MetricDesc; 1] = [MetricDesc::counter(
    "tcpretrans",
    "total",
    "Retransmitted TCP segments by socket state",
)
.with_labels(&["state"])];

impl MetricSource for TcpRetrans {
    const METRICS: &'static [MetricDesc] = &METRICS;

    forget_dead_netns!();

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for (key, count) in self.counts()? {
            let Some(mut netns) = for_live_netns(out, key.netns) else {
                continue;
            };
            netns.add(&METRICS[0], &[&key.state.name()], Value::Counter(count));
        }
        Ok(())
    }
}

impl EventSource for TcpRetrans {
    fn drain(&mut self, out: &mut EventBatch) {
        for retrans in self.drain_events() {
            let message = format!("state:{}", retrans.state.name());
            out.push(
                kernel_event(
                    EventType::TcpRetrans,
                    retrans.netns,
                    retrans.time,
                    retrans.tuple,
                    message,
                )
                .with_reason(retrans.state.name()),
            );
        }
    }
}
