//! flow: bytes and packets per network namespace, direction and 5-tuple, counted at the device
//! layer (`net:net_dev_queue` egress, `net:netif_receive_skb` ingress) into a bounded per-CPU
//! LRU hash of `Options::max_entries` flows (least recently seen flows are evicted). Bytes are
//! IP bytes; ports are in host order. The host namespace (the loading process's own: the agent runs
//! with hostNetwork) is skipped unless `Options::include_host_netns`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use crate::error::Error;
use crate::net::{Netns, RawNetns, RawTuple, Tuple};
use crate::object::{impl_probe_common, Attachment, ObjectSpec, ProbeObject};
use crate::options::Options;

const PROBE: &str = "flow";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Egress,
    Ingress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub netns: Netns,
    pub direction: Direction,
    pub tuple: Tuple,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub packets: u64,
    pub bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawFlowKey {
    tuple: RawTuple,
    netns: RawNetns,
    direction: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawFlowValue {
    packets: u64,
    bytes: u64,
}

// SAFETY: mirrors of `struct ns_flow_key` / `struct ns_flow_value`: integers only, padding explicit.
unsafe impl aya::Pod for RawFlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawFlowValue {}

pub struct Flow {
    object: ProbeObject,
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        program: "on_net_dev_queue",
        tracepoint: "net_dev_queue",
    },
    Attachment {
        program: "on_netif_receive_skb",
        tracepoint: "netif_receive_skb",
    },
];

impl_probe_common!(Flow);

impl Flow {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let skip_netns = if options.include_host_netns {
            0
        } else {
            host_netns_inode()?
        };
        let object = ProbeObject::load(
            ObjectSpec {
                probe: PROBE,
                bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flow.bpf.o")),
                attachments: ATTACHMENTS,
                globals: &[("skip_netns", skip_netns)],
                maps: &["flows"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Deletes the counts of the network namespaces `is_dead` picks (a dead namespace's
    /// entries: see [`Netns`]); returns how many entries went.
    pub fn forget_netns(&mut self, is_dead: impl Fn(Netns) -> bool) -> Result<usize, Error> {
        self.object
            .forget::<RawFlowKey, RawFlowValue>("flows", |key| is_dead(key.netns.decode()))
    }

    /// Counters of the flows currently in the map, summed over CPUs.
    pub fn flows(&self) -> Result<HashMap<FlowKey, FlowCounters>, Error> {
        let mut flows = HashMap::new();
        for (key, values) in self
            .object
            .per_cpu_entries::<RawFlowKey, RawFlowValue>("flows")?
        {
            let Some(tuple) = key.tuple.decode() else {
                continue;
            };
            let direction = if key.direction == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let counters: &mut FlowCounters = flows
                .entry(FlowKey {
                    netns: key.netns.decode(),
                    direction,
                    tuple,
                })
                .or_default();
            for value in values.iter() {
                counters.packets += value.packets;
                counters.bytes += value.bytes;
            }
        }
        Ok(flows)
    }
}

/// The agent runs with hostNetwork, so its own namespace is the host's.
fn host_netns_inode() -> Result<u64, Error> {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|_| Error::InvalidOption {
            probe: PROBE,
            option: "include_host_netns",
            value: "false".into(),
            reason: "/proc/self/ns/net cannot be read, so the host netns cannot be excluded",
        })
}
