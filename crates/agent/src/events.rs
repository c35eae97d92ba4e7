//! Events: the [`Event`] type every event probe produces, and the [`EventBus`] that fans them out
//! to the sinks and to live `/events` subscribers.
//!
//! The bus never blocks a probe: each sink has a bounded queue and a full queue drops the event
//! and counts it (`<prefix>_agent_events_dropped_total{sink}`); a live subscriber that falls
//! behind loses events and is told how many. What the kernel lost before the agent saw it
//! (ring buffer full) and what a probe sampled away are counted too, so every event is either
//! delivered or accounted for.
//!
//! Must not know any sink's transport or any probe's kernel side.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::health::AgentMetrics;
use crate::podmap::PodMap;

/// What happened. Serialized with KubeSkoop's type strings so Loki queries keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    /// A packet was freed on a drop path (`skb:kfree_skb` with a drop reason).
    PacketLoss,
    #[serde(rename = "TCPRESET_NOSOCK")]
    TcpResetNoSock,
    #[serde(rename = "TCPRESET_PROCESS")]
    TcpResetProcess,
    #[serde(rename = "TCPRESET_ACTIVE")]
    TcpResetActive,
    #[serde(rename = "TCPRESET_RECEIVE")]
    TcpResetReceive,
    #[serde(rename = "TCPRetrans")]
    TcpRetrans,
    #[serde(rename = "NETIFTXLAT_QDISC")]
    NetifTxLatQdisc,
    #[serde(rename = "NETIFTXLAT_XMIT")]
    NetifTxLatXmit,
    #[serde(rename = "SOCKETLAT_READSLOW")]
    SocketLatReadSlow,
    #[serde(rename = "SOCKETLAT_SENDSLOW")]
    SocketLatSendSlow,
    #[serde(rename = "RXKERNEL_SLOW")]
    RxKernelSlow,
    #[serde(rename = "TXKERNEL_SLOW")]
    TxKernelSlow,
    #[serde(rename = "SOFTIRQ_SCHED_SLOW")]
    SoftirqSchedSlow,
    #[serde(rename = "SOFTIRQ_SCHED_100MS")]
    SoftirqSched100ms,
    #[serde(rename = "SOFTIRQ_EXCUTE_SLOW")]
    SoftirqExecuteSlow,
    #[serde(rename = "SOFTIRQ_EXCUTE_100MS")]
    SoftirqExecute100ms,
    #[serde(rename = "ConntrackNew")]
    ConntrackNew,
    #[serde(rename = "ConntrackDestroy")]
    ConntrackDestroy,
    #[serde(rename = "BIOLAT_10MS")]
    BioLatency10ms,
}

impl EventType {
    /// The wire name (as in KubeSkoop).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PacketLoss => "PacketLoss",
            EventType::TcpResetNoSock => "TCPRESET_NOSOCK",
            EventType::TcpResetProcess => "TCPRESET_PROCESS",
            EventType::TcpResetActive => "TCPRESET_ACTIVE",
            EventType::TcpResetReceive => "TCPRESET_RECEIVE",
            EventType::TcpRetrans => "TCPRetrans",
            EventType::NetifTxLatQdisc => "NETIFTXLAT_QDISC",
            EventType::NetifTxLatXmit => "NETIFTXLAT_XMIT",
            EventType::SocketLatReadSlow => "SOCKETLAT_READSLOW",
            EventType::SocketLatSendSlow => "SOCKETLAT_SENDSLOW",
            EventType::RxKernelSlow => "RXKERNEL_SLOW",
            EventType::TxKernelSlow => "TXKERNEL_SLOW",
            EventType::SoftirqSchedSlow => "SOFTIRQ_SCHED_SLOW",
            EventType::SoftirqSched100ms => "SOFTIRQ_SCHED_100MS",
            EventType::SoftirqExecuteSlow => "SOFTIRQ_EXCUTE_SLOW",
            EventType::SoftirqExecute100ms => "SOFTIRQ_EXCUTE_100MS",
            EventType::ConntrackNew => "ConntrackNew",
            EventType::ConntrackDestroy => "ConntrackDestroy",
            EventType::BioLatency10ms => "BIOLAT_10MS",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IP protocol of a 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    /// Any other IP protocol number.
    #[serde(untagged)]
    Other(u8),
}

/// Source and destination of the packet or socket an event is about. Ports are in host byte
/// order (KubeSkoop showed some byte-swapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FiveTuple {
    pub protocol: Protocol,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// The pod a netns belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// One anomaly. `node` and `pod` are filled by the bus from the netns (probes set `netns`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Nanoseconds since the Unix epoch, taken in user space when the agent received it.
    pub timestamp: u64,
    pub node: String,
    /// Inode of the network namespace the event happened in; 0 when the kernel did not say.
    pub netns: u64,
    /// `None` for the host netns and for netns that map to no pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuple: Option<FiveTuple>,
    /// The kernel's reason, when it gives one (drop reason, TCP state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message: String,
    /// Kernel stack, innermost first, as `symbol+0xoff`; only when the probe's `enableStack`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
}

impl Event {
    /// An event of `kind` in netns `netns`, stamped now.
    pub fn new(kind: EventType, netns: u64, message: impl Into<String>) -> Event {
        Event {
            kind,
            timestamp: now_ns(),
            node: String::new(),
            netns,
            pod: None,
            tuple: None,
            reason: None,
            message: message.into(),
            stack: None,
        }
    }

    pub fn with_tuple(mut self, tuple: FiveTuple) -> Event {
        self.tuple = Some(tuple);
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Event {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_stack(mut self, stack: Vec<String>) -> Event {
        self.stack = Some(stack);
        self
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What one poll of an event probe produced.
#[derive(Debug, Default)]
pub struct EventBatch {
    pub(crate) events: Vec<Event>,
    pub(crate) lost_in_kernel: u64,
    pub(crate) sampled_away: u64,
}

impl EventBatch {
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Events the kernel could not hand over (ring buffer full, perf lost samples).
    pub fn lost_in_kernel(&mut self, count: u64) {
        self.lost_in_kernel += count;
    }

    /// Events deliberately not emitted (rate limit / sampling), still counted in metrics.
    pub fn sampled_away(&mut self, count: u64) {
        self.sampled_away += count;
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// How many events a live `/events` subscriber can fall behind before losing some.
const LIVE_BACKLOG: usize = 1024;

struct SinkQueue {
    name: String,
    sender: mpsc::Sender<Arc<Event>>,
}

/// Fan-out from probes to sinks and live subscribers; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    node: Arc<str>,
    podmap: Arc<PodMap>,
    metrics: Arc<AgentMetrics>,
    sinks: Arc<RwLock<Vec<SinkQueue>>>,
    live: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    pub fn new(node: &str, podmap: Arc<PodMap>, metrics: Arc<AgentMetrics>) -> EventBus {
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        EventBus {
            node: Arc::from(node),
            podmap,
            metrics,
            sinks: Arc::new(RwLock::new(Vec::new())),
            live,
        }
    }

    /// Replace the sink queues (on start and reload); returns one receiver per name, each with
    /// room for `capacity` events.
    pub fn set_sinks(&self, names: &[String], capacity: usize) -> Vec<mpsc::Receiver<Arc<Event>>> {
        let mut queues = Vec::with_capacity(names.len());
        let mut receivers = Vec::with_capacity(names.len());
        for name in names {
            let (sender, receiver) = mpsc::channel(capacity.max(1));
            queues.push(SinkQueue {
                name: name.clone(),
                sender,
            });
            receivers.push(receiver);
        }
        *self.sinks.write().unwrap_or_else(|p| p.into_inner()) = queues;
        receivers
    }

    /// A live stream of every event from now on (for `/events`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Deliver one probe poll's worth of events; never blocks.
    pub fn publish(&self, probe: &str, batch: EventBatch) {
        if batch.lost_in_kernel > 0 {
            self.metrics
                .events_lost_in_kernel(probe, batch.lost_in_kernel);
        }
        if batch.sampled_away > 0 {
            self.metrics.events_sampled_away(probe, batch.sampled_away);
        }
        if batch.events.is_empty() {
            return;
        }
        self.metrics
            .events_received(probe, batch.events.len() as u64);
        let sinks = self.sinks.read().unwrap_or_else(|p| p.into_inner());
        for mut event in batch.events {
            event.node = self.node.to_string();
            if event.pod.is_none() {
                event.pod = self.podmap.pod_of(event.netns);
            }
            let event = Arc::new(event);
            for sink in sinks.iter() {
                if sink.sender.try_send(event.clone()).is_err() {
                    self.metrics.events_dropped(&sink.name, 1);
                }
            }
            // No live subscriber is not a loss.
            let _ = self.live.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn event_json_names_type_like_kubeskoop_and_ports_in_host_order() {
        let event =
            Event::new(EventType::TcpResetNoSock, 4026531840, "no socket").with_tuple(FiveTuple {
                protocol: Protocol::Tcp,
                src: Ipv4Addr::new(10, 1, 0, 5).into(),
                sport: 80,
                dst: Ipv4Addr::new(10, 1, 0, 9).into(),
                dport: 41234,
            });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "TCPRESET_NOSOCK");
        assert_eq!(json["tuple"]["protocol"], "tcp");
        assert_eq!(json["tuple"]["sport"], 80);
        assert_eq!(json["tuple"]["dport"], 41234);
        assert!(json.get("pod").is_none());
    }

    #[tokio::test]
    async fn a_full_sink_queue_drops_and_counts_instead_of_blocking() {
        let metrics = Arc::new(AgentMetrics::new());
        let bus = EventBus::new("n1", Arc::new(PodMap::host_only("n1")), metrics.clone());
        let mut receivers = bus.set_sinks(&["slow".to_string()], 2);
        let mut batch = EventBatch::default();
        for _ in 0..5 {
            batch.push(Event::new(EventType::PacketLoss, 0, ""));
        }
        batch.lost_in_kernel(3);
        bus.publish("packetloss", batch);
        let mut delivered = 0;
        while receivers[0].try_recv().is_ok() {
            delivered += 1;
        }
        assert_eq!(delivered, 2);
        assert_eq!(metrics.dropped_for_sink("slow"), 3);
        assert_eq!(metrics.lost_in_kernel_for_probe("packetloss"), 3);
        assert_eq!(metrics.received_for_probe("packetloss"), 5);
    }
}
