//! socketlatency: how long received data waits in a socket until the application reads it
//! (`sock:sk_data_ready` → `sock:sock_recv_length`), as log2 histograms per network namespace
//! and transport protocol, plus sampled events for reads slower than `Options::slow_threshold`
//! naming the socket and the reading task.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::net::{
    comm_to_string, monotonic_ns_to_system_time, L4Protocol, Netns, NetnsInode, RawTuple, Tuple,
};
use crate::object::{
    impl_probe_common, slow_threshold_global, Attachment, ObjectSpec, ProbeObject, Scope,
};
use crate::options::Options;
use crate::stats::{Log2Histogram, SlowCounts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowReadEvent {
    pub time: SystemTime,
    pub netns: NetnsInode,
    /// How long the oldest unread data had waited when the read returned.
    pub latency: Duration,
    pub pid: u32,
    pub command: String,
    /// src = the reading socket's local end.
    pub tuple: Option<Tuple>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawSockEvent {
    timestamp_ns: u64,
    latency_ns: u64,
    netns: u32,
    tgid: u32,
    comm: [u8; 16],
    tuple: RawTuple,
}

// SAFETY: mirror of `struct ns_sock_event`: integers and bytes only, no implicit padding.
unsafe impl aya::Pod for RawSockEvent {}

pub struct SocketLatency {
    object: ProbeObject,
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        program: "on_sk_data_ready",
        tracepoint: "sk_data_ready",
    },
    Attachment {
        program: "on_sock_recv_length",
        tracepoint: "sock_recv_length",
    },
    Attachment {
        program: "on_inet_sock_set_state",
        tracepoint: "inet_sock_set_state",
    },
];

impl_probe_common!(SocketLatency);

impl SocketLatency {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let object = ProbeObject::load(
            ObjectSpec {
                probe: "socketlatency",
                bytes: aya::include_bytes_aligned!(concat!(
                    env!("OUT_DIR"),
                    "/socketlatency.bpf.o"
                )),
                attachments: ATTACHMENTS,
                globals: &[slow_threshold_global(options)],
                maps: &["unread_since", "read_latency", "read_slow"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Read-latency histograms since load, per netns and transport protocol.
    pub fn histograms(&self) -> Result<HashMap<(Netns, L4Protocol), Log2Histogram>, Error> {
        self.object.histograms("read_latency", key)
    }

    /// Reads over 1 ms, over `Options::slow_threshold` and over 100 ms since load, keyed like
    /// [`Self::histograms`].
    pub fn slow_counts(&self) -> Result<HashMap<(Netns, L4Protocol), SlowCounts>, Error> {
        self.object.slow_counts("read_slow", key)
    }

    /// Deletes the histograms and slow counts of the network namespaces `is_dead` picks (a
    /// dead namespace's entries: see [`Netns`]); returns how many entries went.
    pub fn forget_netns(&mut self, is_dead: impl Fn(Netns) -> bool) -> Result<usize, Error> {
        self.object
            .forget_latency_netns("read_latency", "read_slow", is_dead)
    }

    pub fn drain_events(&mut self) -> Vec<SlowReadEvent> {
        let mut events = Vec::new();
        self.object.drain_events(|event: RawSockEvent| {
            events.push(SlowReadEvent {
                time: monotonic_ns_to_system_time(event.timestamp_ns),
                netns: NetnsInode(event.netns),
                latency: Duration::from_nanos(event.latency_ns),
                pid: event.tgid,
                command: comm_to_string(&event.comm),
                tuple: event.tuple.decode(),
            })
        });
        events
    }
}

/// The kernel keys by `sk_protocol`, an IP protocol number.
fn key(scope: Scope, protocol: u16) -> Option<(Netns, L4Protocol)> {
    let protocol = u8::try_from(protocol).ok()?;
    Some((scope.netns(), L4Protocol::from(protocol)))
}
