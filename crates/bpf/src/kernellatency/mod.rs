//! kernellatency: receive-path latency inside the kernel per network namespace, from
//! `net:netif_receive_skb` to TCP socket processing (`tcp:tcp_probe`) and to the first copy to
//! user space (`skb:skb_copy_datagram_iovec`), as log2 histograms, plus sampled events for
//! packets slower than `Options::slow_threshold`. These are the points tracepoints offer: no
//! tracepoint marks UDP socket enqueue, so UDP is covered only up to the user copy.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::net::{monotonic_ns_to_system_time, NetnsInode, RawTuple, Tuple};
use crate::object::{impl_probe_common, Attachment, ObjectSpec, ProbeObject};
use crate::options::Options;
use crate::stats::Log2Histogram;

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

impl_probe_common!(KernelLatency, ATTACHMENTS, ["rx_in_flight", "rx_latency"]);

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
                globals: &[(
                    "slow_threshold_ns",
                    options.slow_threshold.as_nanos() as u64,
                )],
                sized_maps: &["rx_in_flight", "rx_latency"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Latency histograms since load, per receiving netns and stage.
    pub fn histograms(&self) -> Result<HashMap<(NetnsInode, RxStage), Log2Histogram>, Error> {
        Ok(self
            .object
            .histograms("rx_latency")?
            .into_iter()
            .filter_map(|((netns, stage), h)| {
                Some(((NetnsInode(netns), RxStage::from_raw(u32::from(stage))?), h))
            })
            .collect())
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
