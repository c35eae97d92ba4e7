//! `tcpreset` adapter: resets sent (with or without a socket) and received, counted per netns
//! by direction and socket state, and as `TCPRESET_*` events with the connection's tuple
//! (src = this host's end) and the socket state as reason.

use bpf::tcpreset::{ResetKind, TcpReset};

use super::ebpf::{
    for_live_netns, forget_dead_netns, forward_loader, kernel_event, EventSource, MetricSource,
};
use crate::events::{EventBatch, EventType};
use crate::probe::MetricDesc;
use crate::registry::{Samples, Value};

forward_loader!(TcpReset, "tcpreset");

static METRICS: [MetricDesc; 1] = [MetricDesc::counter(
    "tcpreset",
    "total",
    "TCP resets by direction (sent_nosock, sent, received) and socket state",
)
.with_labels(&["direction", "state"])];

fn direction(kind: ResetKind) -> &'static str {
    match kind {
        ResetKind::SentNoSocket => "sent_nosock",
        ResetKind::Sent => "sent",
        ResetKind::Received => "received",
    }
}

impl MetricSource for TcpReset {
    const METRICS: &'static [MetricDesc] = &METRICS;

    forget_dead_netns!();

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error> {
        for (key, count) in self.counts()? {
            let Some(mut netns) = for_live_netns(out, key.netns) else {
                continue;
            };
            netns.add(
                &METRICS[0],
                &[direction(key.kind), &key.state.name()],
                Value::Counter(count),
            );
        }
        Ok(())
    }
}

impl EventSource for TcpReset {
    fn drain(&mut self, out: &mut EventBatch) {
        for reset in self.drain_events() {
            let kind = match reset.kind {
                ResetKind::SentNoSocket => EventType::TcpResetNoSock,
                ResetKind::Sent => EventType::TcpResetProcess,
                ResetKind::Received => EventType::TcpResetReceive,
            };
            let message = match &reset.reason {
                Some(reason) => format!("state:{} reason:{reason}", reset.state.name()),
                None => format!("state:{}", reset.state.name()),
            };
            out.push(
                kernel_event(kind, reset.netns, reset.time, reset.tuple, message)
                    .with_reason(reset.state.name()),
            );
        }
    }
}
