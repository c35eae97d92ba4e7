//! tcpreset: TCP resets sent and received (`tcp:tcp_send_reset`, `tcp:tcp_receive_reset`,
//! tp_btf), counted per network namespace, direction and socket state, with sampled events
//! naming the connection (src = this host's end) and, for sent resets, the kernel's reason
//! (`enum sk_rst_reason` names from BTF, e.g. `NO_SOCKET`).

use std::collections::HashMap;
use std::time::SystemTime;

use crate::btf::{probe_enum_names, EnumNames};
use crate::error::Error;
use crate::net::{
    monotonic_ns_to_system_time, Netns, NetnsInode, RawNetns, RawTuple, TcpState, Tuple,
};
use crate::object::{impl_probe_common, Attachment, ObjectSpec, ProbeObject};
use crate::options::Options;

const PROBE: &str = "tcpreset";

/// Which way the reset went (`enum ns_reset_kind` in tcpreset.bpf.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResetKind {
    /// Sent in answer to a segment no socket wanted (e.g. connect to a closed port).
    SentNoSocket,
    /// Sent by a socket (abort, SO_LINGER 0 close, unexpected segment).
    Sent,
    Received,
}

impl ResetKind {
    fn from_raw(kind: u16) -> Option<Self> {
        match kind {
            0 => Some(Self::SentNoSocket),
            1 => Some(Self::Sent),
            2 => Some(Self::Received),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResetKey {
    pub netns: Netns,
    pub kind: ResetKind,
    pub state: TcpState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetEvent {
    pub time: SystemTime,
    pub netns: NetnsInode,
    pub kind: ResetKind,
    pub state: TcpState,
    /// The kernel's reason for a sent reset (`NO_SOCKET`, `NOT_SPECIFIED`, ...); `None` for
    /// received resets.
    pub reason: Option<String>,
    /// src = this host's end of the connection, dst = the peer.
    pub tuple: Option<Tuple>,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RawResetKey {
    netns: RawNetns,
    kind: u16,
    state: u16,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawResetEvent {
    timestamp_ns: u64,
    netns: u32,
    kind: u16,
    state: u16,
    reason: u32,
    pad: u32,
    tuple: RawTuple,
}

// SAFETY: mirrors of the .bpf.c structs: integers only, padding explicit.
unsafe impl aya::Pod for RawResetKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawResetEvent {}

pub struct TcpReset {
    object: ProbeObject,
    reasons: EnumNames,
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        program: "on_tcp_send_reset",
        tracepoint: "tcp_send_reset",
    },
    Attachment {
        program: "on_tcp_receive_reset",
        tracepoint: "tcp_receive_reset",
    },
];

impl_probe_common!(TcpReset);

impl TcpReset {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let reasons =
            probe_enum_names(PROBE, &options.btf_path, "sk_rst_reason", "SK_RST_REASON_")?;
        let object = ProbeObject::load(
            ObjectSpec {
                probe: PROBE,
                bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpreset.bpf.o")),
                attachments: ATTACHMENTS,
                globals: &[],
                maps: &["reset_counts"],
            },
            options,
        )?;
        Ok(Self { object, reasons })
    }

    /// Reset counts since load, summed over CPUs.
    pub fn counts(&self) -> Result<HashMap<ResetKey, u64>, Error> {
        let raw = self.object.counters::<RawResetKey>("reset_counts")?;
        Ok(raw
            .into_iter()
            .filter_map(|(key, count)| {
                let kind = ResetKind::from_raw(key.kind)?;
                Some((
                    ResetKey {
                        netns: key.netns.decode(),
                        kind,
                        state: TcpState::from(u32::from(key.state)),
                    },
                    count,
                ))
            })
            .collect())
    }

    /// Deletes the counts of the network namespaces `is_dead` picks (a dead namespace's
    /// entries: see [`Netns`]); returns how many entries went.
    pub fn forget_netns(&mut self, is_dead: impl Fn(Netns) -> bool) -> Result<usize, Error> {
        self.object
            .forget::<RawResetKey, u64>("reset_counts", |key| is_dead(key.netns.decode()))
    }

    pub fn drain_events(&mut self) -> Vec<ResetEvent> {
        let mut raw_events = Vec::new();
        self.object
            .drain_events(|event: RawResetEvent| raw_events.push(event));
        raw_events
            .into_iter()
            .filter_map(|event| {
                let kind = ResetKind::from_raw(event.kind)?;
                let reason = (kind != ResetKind::Received).then(|| {
                    self.reasons
                        .name(u64::from(event.reason))
                        .map_or_else(|| format!("UNKNOWN_{}", event.reason), str::to_owned)
                });
                Some(ResetEvent {
                    time: monotonic_ns_to_system_time(event.timestamp_ns),
                    netns: NetnsInode(event.netns),
                    kind,
                    state: TcpState::from(u32::from(event.state)),
                    reason,
                    tuple: event.tuple.decode(),
                })
            })
            .collect()
    }
}
