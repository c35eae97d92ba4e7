//! tcpretrans: retransmitted TCP segments (`tcp:tcp_retransmit_skb`, tp_btf) counted per
//! network namespace and socket state, with sampled events naming the connection
//! (src = local end, ports in host order).

use std::collections::HashMap;
use std::time::SystemTime;

use crate::error::Error;
use crate::net::{
    monotonic_ns_to_system_time, Netns, NetnsInode, RawNetns, RawTuple, TcpState, Tuple,
};
use crate::object::{impl_probe_common, Attachment, ObjectSpec, ProbeObject};
use crate::options::Options;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetransKey {
    pub netns: Netns,
    pub state: TcpState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetransEvent {
    pub time: SystemTime,
    pub netns: NetnsInode,
    pub state: TcpState,
    pub tuple: Option<Tuple>,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RawRetransKey {
    netns: RawNetns,
    state: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawRetransEvent {
    timestamp_ns: u64,
    netns: u32,
    state: u32,
    tuple: RawTuple,
}

// SAFETY: mirrors of the .bpf.c structs: integers only, no implicit padding.
unsafe impl aya::Pod for RawRetransKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawRetransEvent {}

pub struct TcpRetrans {
    object: ProbeObject,
}

const ATTACHMENTS: &[Attachment] = &[Attachment {
    program: "on_tcp_retransmit_skb",
    tracepoint: "tcp_retransmit_skb",
}];

impl_probe_common!(TcpRetrans);

impl TcpRetrans {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let object = ProbeObject::load(
            ObjectSpec {
                probe: "tcpretrans",
                bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpretrans.bpf.o")),
                attachments: ATTACHMENTS,
                globals: &[],
                maps: &["retrans_counts"],
            },
            options,
        )?;
        Ok(Self { object })
    }

    /// Retransmission counts since load, summed over CPUs.
    pub fn counts(&self) -> Result<HashMap<RetransKey, u64>, Error> {
        let raw = self.object.counters::<RawRetransKey>("retrans_counts")?;
        Ok(raw
            .into_iter()
            .map(|(key, count)| {
                (
                    RetransKey {
                        netns: key.netns.decode(),
                        state: TcpState::from(key.state),
                    },
                    count,
                )
            })
            .collect())
    }

    /// Deletes the counts of the network namespaces `is_dead` picks (a dead namespace's
    /// entries: see [`Netns`]); returns how many entries went.
    pub fn forget_netns(&mut self, is_dead: impl Fn(Netns) -> bool) -> Result<usize, Error> {
        self.object
            .forget::<RawRetransKey, u64>("retrans_counts", |key| is_dead(key.netns.decode()))
    }

    pub fn drain_events(&mut self) -> Vec<RetransEvent> {
        let mut events = Vec::new();
        self.object.drain_events(|event: RawRetransEvent| {
            events.push(RetransEvent {
                time: monotonic_ns_to_system_time(event.timestamp_ns),
                netns: NetnsInode(event.netns),
                state: TcpState::from(event.state),
                tuple: event.tuple.decode(),
            })
        });
        events
    }
}
