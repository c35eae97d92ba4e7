//! packetloss: drops seen at `skb:kfree_skb` (tp_btf), counted in the kernel per network
//! namespace, drop reason, L3 and L4 protocol, plus token-bucket-sampled drop events with the
//! packet's 5-tuple, the dropping function and optionally the kernel stack.
//!
//! Reason names come from the running kernel's BTF (`enum skb_drop_reason`, read by this
//! crate's own BTF reader, [`crate::KernelBtf`]), so new kernels' reasons need no code change.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use crate::btf::{probe_enum_names, EnumNames};
use crate::error::Error;
use crate::kallsyms::KernelSymbols;
use crate::net::{
    monotonic_ns_to_system_time, L3Protocol, L4Protocol, Netns, NetnsInode, RawNetns, RawTuple,
    Tuple,
};
use crate::object::{impl_probe_common, Attachment, ObjectSpec, ProbeObject};
use crate::options::Options;

const PROBE: &str = "packetloss";
const STACK_DEPTH: usize = 16;

/// Why the kernel dropped a packet: the reason code and its name on this kernel
/// (`NETFILTER_DROP`, `NO_SOCKET`, ...; `UNKNOWN_<code>` if BTF has no name for it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropReason {
    pub code: u32,
    pub name: String,
}

/// One in-kernel counter's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub netns: Netns,
    pub reason: DropReason,
    pub l3: L3Protocol,
    pub l4: L4Protocol,
}

/// A sampled drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropEvent {
    pub time: SystemTime,
    pub netns: NetnsInode,
    pub reason: DropReason,
    /// Function that freed the skb (`nf_hook_slow+0x9c`), when kallsyms is readable.
    pub location: Option<String>,
    /// Interface index of the skb's device (0 when it had none), in `netns`.
    pub ifindex: u32,
    pub l3: L3Protocol,
    /// `None` when the packet had no readable IP header.
    pub tuple: Option<Tuple>,
    /// Kernel stack, innermost first, when `Options::capture_stack` is set.
    pub stack: Vec<String>,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RawDropKey {
    netns: RawNetns,
    reason: u32,
    l3_protocol: u16,
    l4_protocol: u8,
    pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawDropEvent {
    timestamp_ns: u64,
    location: u64,
    netns: u32,
    reason: u32,
    ifindex: u32,
    l3_protocol: u16,
    stack_depth: u16,
    tuple: RawTuple,
    stack: [u64; STACK_DEPTH],
}

// SAFETY: mirrors of `struct ns_drop_key` / `struct ns_drop_event`: integers only, padding explicit.
unsafe impl aya::Pod for RawDropKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawDropEvent {}

pub struct PacketLoss {
    object: ProbeObject,
    reasons: EnumNames,
    symbols: KernelSymbols,
}

const ATTACHMENTS: &[Attachment] = &[Attachment {
    program: "on_kfree_skb",
    tracepoint: "kfree_skb",
}];

impl_probe_common!(PacketLoss);

impl PacketLoss {
    pub fn load(options: &Options) -> Result<Self, Error> {
        let reasons = probe_enum_names(
            PROBE,
            &options.btf_path,
            "skb_drop_reason",
            "SKB_DROP_REASON_",
        )?;
        let object = ProbeObject::load(
            ObjectSpec {
                probe: PROBE,
                bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/packetloss.bpf.o")),
                attachments: ATTACHMENTS,
                globals: &[("capture_stack", u64::from(options.capture_stack))],
                maps: &["drop_counts"],
            },
            options,
        )?;
        // Without kallsyms events still carry everything but the symbol names.
        let symbols = KernelSymbols::load(Path::new("/proc/kallsyms")).unwrap_or_default();
        Ok(Self {
            object,
            reasons,
            symbols,
        })
    }

    /// Drop counts since load, summed over CPUs.
    pub fn counts(&self) -> Result<HashMap<DropKey, u64>, Error> {
        let raw = self.object.counters::<RawDropKey>("drop_counts")?;
        let mut counts = HashMap::with_capacity(raw.len());
        for (key, count) in raw {
            let key = DropKey {
                netns: key.netns.decode(),
                reason: self.reason(key.reason),
                l3: L3Protocol::from(key.l3_protocol),
                l4: L4Protocol::from(key.l4_protocol),
            };
            *counts.entry(key).or_insert(0) += count;
        }
        Ok(counts)
    }

    /// Deletes the counts of the network namespaces `is_dead` picks (a dead namespace's
    /// entries: see [`Netns`]); returns how many entries went.
    pub fn forget_netns(&mut self, is_dead: impl Fn(Netns) -> bool) -> Result<usize, Error> {
        self.object
            .forget::<RawDropKey, u64>("drop_counts", |key| is_dead(key.netns.decode()))
    }

    /// Takes the sampled drop events waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<DropEvent> {
        let mut raw_events = Vec::new();
        self.object
            .drain_events(|event: RawDropEvent| raw_events.push(event));
        raw_events
            .into_iter()
            .map(|event| self.decode(event))
            .collect()
    }

    /// Reason names this kernel defines.
    pub fn reason_names(&self) -> &EnumNames {
        &self.reasons
    }

    fn reason(&self, code: u32) -> DropReason {
        let name = self
            .reasons
            .name(u64::from(code))
            .map_or_else(|| format!("UNKNOWN_{code}"), str::to_owned);
        DropReason { code, name }
    }

    fn decode(&self, event: RawDropEvent) -> DropEvent {
        let depth = usize::from(event.stack_depth).min(STACK_DEPTH);
        DropEvent {
            time: monotonic_ns_to_system_time(event.timestamp_ns),
            netns: NetnsInode(event.netns),
            reason: self.reason(event.reason),
            location: self.symbols.resolve(event.location),
            ifindex: event.ifindex,
            l3: L3Protocol::from(event.l3_protocol),
            tuple: event.tuple.decode(),
            stack: event.stack[..depth]
                .iter()
                .map(|&address| {
                    self.symbols
                        .resolve(address)
                        .unwrap_or_else(|| format!("{address:#x}"))
                })
                .collect(),
        }
    }
}
