//! kernellatency: receive-path latency inside the kernel per network namespace, from
//! `net:netif_receive_skb` to TCP socket processing (`tcp:tcp_probe`) and to the first copy to
//! user space (`skb:skb_copy_datagram_iovec`), as log2 histograms, plus sampled events for
//! packets slower than `Options::slow_threshold`. These are the points tracepoints offer: no
//! tracepoint marks UDP socket enqueue, so UDP is covered only up to the user copy.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::net::{monotonic_ns_to_system_time, Netns, NetnsInode, RawTuple, Tuple};
use crate::object::{
    impl_probe_common, slow_threshold_global, Attachment, ObjectSpec, ProbeObject, Scope,
};
use crate::options::Options;
use crate::stats::{Log2Histogram, SlowCounts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RxStage {
    /// netif_receive_skb → TCP established-state processing.
    ToTcp,
    /// netif_receive_skb → copied to the reading application (includes socket queueing).
    ToUserCopy,
}

impl RxStage {
    fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::ToTcp),
            1 => Some(Self::ToUserCopy),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxLatencyEvent {
    pub time: SystemTime,
    pub netns: NetnsInode,
    pub stage: RxStage,
    pub latency: Duration,
    pub tuple: Option<Tuple>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawRxEvent {
    timestamp_ns: u64,
    latency_ns: u64,
    netns: u32,
    stage: u32,
    tuple: RawTuple,
}

// SAFETY: mirror of `struct ns_rx_event`: integers only, no implicit padding.
unsafe impl aya::Pod for RawRxEvent {}

pub struct KernelLatency {
    object: ProbeObject,
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        program: "on_netif_receive_skb",
        tracepoint: "netif_receive_skb",
    },
    Attachment {
        program: "on_tcp_probe",
        tracepoint: "tcp_probe",
    },
    Attachment {
        program: "on_skb_copy_datagram_iovec",
        tracepoint: "skb_copy_datagram_iovec",
    },
];

impl_probe_common!(KernelLatency);

impl KernelLatency {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let object = ProbeObject::load(
            ObjectSpec {
                probe: "kernellatency",
                bytes: aya::include_bytes_aligned!(concat!(
                    env!("OUT_DIR"),
                    "/kernellatency.bpf.o"
                )),
                attachments: ATTACHMENTS,
                globals: &[slow_threshold_global(options)],
                maps: &["rx_in_flight", "rx_latency", "rx_slow"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Latency histograms since load, per receiving netns and stage.
    pub fn histograms(&self) -> Result<HashMap<(Netns, RxStage), Log2Histogram>, Error> {
        self.object.histograms("rx_latency", key)
    }

    /// Samples over 1 ms, over `Options::slow_threshold` and over 100 ms since load, keyed
    /// like [`Self::histograms`].
    pub fn slow_counts(&self) -> Result<HashMap<(Netns, RxStage), SlowCounts>, Error> {
        self.object.slow_counts("rx_slow", key)
    }

    /// Deletes the histograms and slow counts of the network namespaces `is_dead` picks (a
    /// dead namespace's entries: see [`Netns`]); returns how many entries went.
    pub fn forget_netns(&mut self, is_dead: impl Fn(Netns) -> bool) -> Result<usize, Error> {
        self.object
            .forget_latency_netns("rx_latency", "rx_slow", is_dead)
    }

    pub fn drain_events(&mut self) -> Vec<RxLatencyEvent> {
        let mut events = Vec::new();
        self.object.drain_events(|event: RawRxEvent| {
            if let Some(stage) = RxStage::from_raw(event.stage) {
                events.push(RxLatencyEvent {
                    time: monotonic_ns_to_system_time(event.timestamp_ns),
                    netns: NetnsInode(event.netns),
                    stage,
                    latency: Duration::from_nanos(event.latency_ns),
                    tuple: event.tuple.decode(),
                });
            }
        });
        events
    }
}

fn key(scope: Scope, stage: u16) -> Option<(Netns, RxStage)> {
    Some((scope.netns(), RxStage::from_raw(u32::from(stage))?))
}
