//! `qdisc`: statistics of each device's root qdisc in the netns, from an `RTM_GETQDISC` dump
//! on a NETLINK_ROUTE socket opened inside the netns, with device names from an `RTM_GETLINK`
//! dump in the same netns (KubeSkoop looked names up in the host netns and summed `mq` children
//! with their parent). Label `interface`; `lo` and `noqueue` devices are left out.

use std::collections::HashMap;

use netlink_packet_core::Parseable;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcStats2};

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::{Samples, Value};

use super::procfs::ProcfsProbe;

const IFACE: &[&str] = &["interface"];

pub static QDISC: [MetricDesc; 6] = [
    MetricDesc::counter("qdisc", "bytes", "Bytes sent through the root qdisc").with_labels(IFACE),
    MetricDesc::counter("qdisc", "packets", "Packets sent through the root qdisc")
        .with_labels(IFACE),
    MetricDesc::counter("qdisc", "drops", "Packets the root qdisc dropped").with_labels(IFACE),
    MetricDesc::counter("qdisc", "overlimits", "Enqueues over the qdisc's limit")
        .with_labels(IFACE),
    MetricDesc::gauge("qdisc", "qlen", "Packets queued now").with_labels(IFACE),
    MetricDesc::gauge("qdisc", "backlog", "Bytes queued now").with_labels(IFACE),
];

const RTM_GETLINK: u16 = 18;
const RTM_GETQDISC: u16 = 38;

/// Root-qdisc counters of one device.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct QdiscStats {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub qlen: u64,
    pub backlog: u64,
}

pub(crate) struct Qdisc;

fn link_names() -> std::io::Result<HashMap<i32, String>> {
    // struct ifinfomsg: family, pad, type, index, flags, change (16 bytes).
    let answers = super::netlink::dump(libc::NETLINK_ROUTE, RTM_GETLINK, &[0u8; 16])?;
    let mut names = HashMap::new();
    for payload in answers {
        let Ok(link) = LinkMessage::parse(&payload[..]) else {
            continue;
        };
        if let Some(name) = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) {
            names.insert(link.header.index as i32, name);
        }
    }
    Ok(names)
}

/// Root qdiscs by ifindex, with their kind.
fn root_qdiscs() -> std::io::Result<Vec<(i32, String, QdiscStats)>> {
    // struct tcmsg: family, pad[3], ifindex, handle, parent, info (20 bytes).
    let answers = super::netlink::dump(libc::NETLINK_ROUTE, RTM_GETQDISC, &[0u8; 20])?;
    let mut out = Vec::new();
    for payload in answers {
        let msg = TcMessage::parse(&payload[..])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        if msg.header.parent != TcHandle::ROOT {
            continue;
        }
        let mut kind = String::new();
        let mut stats = QdiscStats::default();
        for attr in &msg.attributes {
            match attr {
                TcAttribute::Kind(k) => kind = k.clone(),
                TcAttribute::Stats2(parts) => {
                    for part in parts {
                        match part {
                            TcStats2::Basic(b) => {
                                stats.bytes = b.bytes;
                                stats.packets = b.packets as u64;
                            }
                            TcStats2::Queue(q) => {
                                stats.drops = q.drops as u64;
                                stats.overlimits = q.overlimits as u64;
                                stats.qlen = q.qlen as u64;
                                stats.backlog = q.backlog as u64;
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        out.push((msg.header.index, kind, stats));
    }
    Ok(out)
}

impl ProcfsProbe for Qdisc {
    const NAME: &'static str = "qdisc";
    const METRICS: &'static [MetricDesc] = &QDISC;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let netlink = |e: std::io::Error| ProbeError::other("qdisc", format!("netlink dump: {e}"));
        let names = link_names().map_err(netlink)?;
        for (index, kind, s) in root_qdiscs().map_err(netlink)? {
            let Some(name) = names.get(&index) else {
                continue;
            };
            if name == "lo" || kind == "noqueue" {
                continue;
            }
            let values = [
                Value::Counter(s.bytes),
                Value::Counter(s.packets),
                Value::Counter(s.drops),
                Value::Counter(s.overlimits),
                Value::Gauge(s.qlen as f64),
                Value::Gauge(s.backlog as f64),
            ];
            for (desc, value) in QDISC.iter().zip(values) {
                out.add(desc, &[name.as_str()], value);
            }
        }
        Ok(())
    }
}
