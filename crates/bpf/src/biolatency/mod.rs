//! biolatency: block request latency from issue to completion (`block:block_rq_issue` →
//! `block:block_rq_complete`) per device and operation, as log2 histograms, plus sampled
//! events for requests slower than `Options::slow_threshold` naming the issuing task.
//! Block I/O has no network namespace: results are node-wide.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::net::{comm_to_string, monotonic_ns_to_system_time};
use crate::object::{
    impl_probe_common, slow_threshold_global, Attachment, ObjectSpec, ProbeObject, Scope,
};
use crate::options::Options;
use crate::stats::{Log2Histogram, SlowCounts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockDevice {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockOp {
    Read,
    Write,
    /// Flush, discard, zone management, ...
    Other,
}

impl BlockOp {
    fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::Read,
            1 => Self::Write,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowIoEvent {
    pub time: SystemTime,
    pub device: BlockDevice,
    pub op: BlockOp,
    pub latency: Duration,
    pub bytes: u32,
    /// Negative kernel status on failure, 0 on success.
    pub error: i32,
    /// The task that issued the request (for queued I/O, whoever dispatched it).
    pub pid: u32,
    pub command: String,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawBioEvent {
    timestamp_ns: u64,
    latency_ns: u64,
    major: u32,
    minor: u32,
    op: u32,
    bytes: u32,
    tgid: u32,
    error: i32,
    comm: [u8; 16],
}

// SAFETY: mirror of `struct ns_bio_event`: integers and bytes only, no implicit padding.
unsafe impl aya::Pod for RawBioEvent {}

pub struct BioLatency {
    object: ProbeObject,
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        program: "on_block_rq_issue",
        tracepoint: "block_rq_issue",
    },
    Attachment {
        program: "on_block_rq_complete",
        tracepoint: "block_rq_complete",
    },
];

impl_probe_common!(BioLatency);

impl BioLatency {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let object = ProbeObject::load(
            ObjectSpec {
                probe: "biolatency",
                bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/biolatency.bpf.o")),
                attachments: ATTACHMENTS,
                globals: &[slow_threshold_global(options)],
                maps: &["bio_in_flight", "bio_latency", "bio_slow"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Latency histograms since load, per device and operation.
    pub fn histograms(&self) -> Result<HashMap<(BlockDevice, BlockOp), Log2Histogram>, Error> {
        self.object.histograms("bio_latency", key)
    }

    /// Requests over 1 ms, over `Options::slow_threshold` and over 100 ms since load, keyed
    /// like [`Self::histograms`].
    pub fn slow_counts(&self) -> Result<HashMap<(BlockDevice, BlockOp), SlowCounts>, Error> {
        self.object.slow_counts("bio_slow", key)
    }

    pub fn drain_events(&mut self) -> Vec<SlowIoEvent> {
        let mut events = Vec::new();
        self.object.drain_events(|event: RawBioEvent| {
            events.push(SlowIoEvent {
                time: monotonic_ns_to_system_time(event.timestamp_ns),
                device: BlockDevice {
                    major: event.major,
                    minor: event.minor,
                },
                op: BlockOp::from_raw(event.op),
                latency: Duration::from_nanos(event.latency_ns),
                bytes: event.bytes,
                error: event.error,
                pid: event.tgid,
                command: comm_to_string(&event.comm),
            })
        });
        events
    }
}

/// The kernel's scope is major:minor packed like a dev_t (12:20 bits).
fn key(Scope { id: dev, .. }: Scope, op: u16) -> Option<(BlockDevice, BlockOp)> {
    Some((
        BlockDevice {
            major: dev >> 20,
            minor: dev & 0xfffff,
        },
        BlockOp::from_raw(u32::from(op)),
    ))
}
