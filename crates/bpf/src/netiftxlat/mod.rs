//! netiftxlat: transmit latency per network namespace of the device, split into time in the
//! qdisc (`net:net_dev_queue` → `net:net_dev_start_xmit`) and in the driver
//! (`net_dev_start_xmit` → `net:net_dev_xmit`), as log2 histograms, plus sampled events for
//! packets slower than `Options::slow_threshold`.

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
pub enum TxStage {
    /// Queued → handed to the driver.
    Qdisc,
    /// Handed to the driver → driver returned.
    Driver,
}

impl TxStage {
    fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Qdisc),
            1 => Some(Self::Driver),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxLatencyEvent {
    pub time: SystemTime,
    pub netns: NetnsInode,
    pub ifindex: u32,
    pub stage: TxStage,
    pub latency: Duration,
    /// Known for qdisc events only (after the driver the skb may be gone).
    pub tuple: Option<Tuple>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawTxEvent {
    timestamp_ns: u64,
    latency_ns: u64,
    netns: u32,
    ifindex: u32,
    stage: u32,
    pad: u32,
    tuple: RawTuple,
}

// SAFETY: mirror of `struct ns_tx_event`: integers only, padding explicit.
unsafe impl aya::Pod for RawTxEvent {}

pub struct NetifTxLatency {
    object: ProbeObject,
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        program: "on_net_dev_queue",
        tracepoint: "net_dev_queue",
    },
    Attachment {
        program: "on_net_dev_start_xmit",
        tracepoint: "net_dev_start_xmit",
    },
    Attachment {
        program: "on_net_dev_xmit",
        tracepoint: "net_dev_xmit",
    },
];

impl_probe_common!(NetifTxLatency);

impl NetifTxLatency {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let object = ProbeObject::load(
            ObjectSpec {
                probe: "netiftxlat",
                bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netiftxlat.bpf.o")),
                attachments: ATTACHMENTS,
                globals: &[slow_threshold_global(options)],
                maps: &["tx_in_flight", "tx_latency", "tx_slow"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Latency histograms since load, per device netns and stage.
    pub fn histograms(&self) -> Result<HashMap<(Netns, TxStage), Log2Histogram>, Error> {
        self.object.histograms("tx_latency", key)
    }

    /// Samples over 1 ms, over `Options::slow_threshold` and over 100 ms since load, keyed
    /// like [`Self::histograms`].
    pub fn slow_counts(&self) -> Result<HashMap<(Netns, TxStage), SlowCounts>, Error> {
        self.object.slow_counts("tx_slow", key)
    }

    /// Deletes the histograms and slow counts of the network namespaces `is_dead` picks (a
    /// dead namespace's entries: see [`Netns`]); returns how many entries went.
    pub fn forget_netns(&mut self, is_dead: impl Fn(Netns) -> bool) -> Result<usize, Error> {
        self.object
            .forget_latency_netns("tx_latency", "tx_slow", is_dead)
    }

    pub fn drain_events(&mut self) -> Vec<TxLatencyEvent> {
        let mut events = Vec::new();
        self.object.drain_events(|event: RawTxEvent| {
            if let Some(stage) = TxStage::from_raw(event.stage) {
                events.push(TxLatencyEvent {
                    time: monotonic_ns_to_system_time(event.timestamp_ns),
                    netns: NetnsInode(event.netns),
                    ifindex: event.ifindex,
                    stage,
                    latency: Duration::from_nanos(event.latency_ns),
                    tuple: event.tuple.decode(),
                });
            }
        });
        events
    }
}

fn key(scope: Scope, stage: u16) -> Option<(Netns, TxStage)> {
    Some((scope.netns(), TxStage::from_raw(u32::from(stage))?))
}
