//! netsoftirq: NET_RX / NET_TX softirq latency from `irq:softirq_raise` → `softirq_entry`
//! (waiting to run) and `softirq_entry` → `softirq_exit` (running), as log2 histograms per
//! vector and phase, plus sampled events above `Options::slow_threshold`. Softirqs are per
//! CPU and carry no network namespace: results are node-wide.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::net::monotonic_ns_to_system_time;
use crate::object::{
    impl_probe_common, slow_threshold_global, Attachment, ObjectSpec, ProbeObject, Scope,
};
use crate::options::Options;
use crate::stats::{Log2Histogram, SlowCounts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SoftirqVector {
    NetTx,
    NetRx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SoftirqPhase {
    /// Raised → started.
    Wait,
    /// Started → finished.
    Run,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftirqEvent {
    pub time: SystemTime,
    pub cpu: u32,
    pub vector: SoftirqVector,
    pub phase: SoftirqPhase,
    pub latency: Duration,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawSoftirqEvent {
    timestamp_ns: u64,
    latency_ns: u64,
    cpu: u32,
    vector: u16,
    phase: u16,
}

// SAFETY: mirror of `struct ns_softirq_event`: integers only, no implicit padding.
unsafe impl aya::Pod for RawSoftirqEvent {}

fn vector(raw: u32) -> Option<SoftirqVector> {
    match raw {
        2 => Some(SoftirqVector::NetTx),
        3 => Some(SoftirqVector::NetRx),
        _ => None,
    }
}

fn phase(raw: u16) -> Option<SoftirqPhase> {
    match raw {
        0 => Some(SoftirqPhase::Wait),
        1 => Some(SoftirqPhase::Run),
        _ => None,
    }
}

fn key(Scope { id: vec, .. }: Scope, ph: u16) -> Option<(SoftirqVector, SoftirqPhase)> {
    Some((vector(vec)?, phase(ph)?))
}

pub struct NetSoftirq {
    object: ProbeObject,
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        program: "on_softirq_raise",
        tracepoint: "softirq_raise",
    },
    Attachment {
        program: "on_softirq_entry",
        tracepoint: "softirq_entry",
    },
    Attachment {
        program: "on_softirq_exit",
        tracepoint: "softirq_exit",
    },
];

impl_probe_common!(NetSoftirq);

impl NetSoftirq {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let object = ProbeObject::load(
            ObjectSpec {
                probe: "netsoftirq",
                bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netsoftirq.bpf.o")),
                attachments: ATTACHMENTS,
                globals: &[slow_threshold_global(options)],
                maps: &["softirq_latency", "softirq_slow"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Latency histograms since load, per vector and phase.
    pub fn histograms(
        &self,
    ) -> Result<HashMap<(SoftirqVector, SoftirqPhase), Log2Histogram>, Error> {
        self.object.histograms("softirq_latency", key)
    }

    /// Softirqs over 1 ms, over `Options::slow_threshold` and over 100 ms since load, keyed
    /// like [`Self::histograms`].
    pub fn slow_counts(&self) -> Result<HashMap<(SoftirqVector, SoftirqPhase), SlowCounts>, Error> {
        self.object.slow_counts("softirq_slow", key)
    }

    pub fn drain_events(&mut self) -> Vec<SoftirqEvent> {
        let mut events = Vec::new();
        self.object.drain_events(|event: RawSoftirqEvent| {
            if let (Some(vector), Some(phase)) =
                (vector(u32::from(event.vector)), phase(event.phase))
            {
                events.push(SoftirqEvent {
                    time: monotonic_ns_to_system_time(event.timestamp_ns),
                    cpu: event.cpu,
                    vector,
                    phase,
                    latency: Duration::from_nanos(event.latency_ns),
                });
            }
        });
        events
    }
}
