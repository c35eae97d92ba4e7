//! Conntrack exhaustion: with `nf_conntrack_count` at `nf_conntrack_max`, a packet that needs a
//! new entry is dropped ("nf_conntrack: table full, dropping packet") in every netns where
//! conntrack runs, whatever the rules say.

use model::{Evidence, Finding, FindingCode, Level, NetnsRecord, Owner};
use netstack::conntrack::ConntrackTable;
use netstack::packet::Packet;

use crate::endpoint::describe;
use crate::walk::finding;

/// The first packet of a new connection entering `record`.
pub fn table_full(record: &NetnsRecord, packet: &Packet) -> Option<Finding> {
    record.state.conntrack.as_ref()?;
    let table = ConntrackTable::of_netns(&record.state);
    let lookup = table.lookup(packet);
    if !lookup.table_full {
        return None;
    }
    let stats = table.stats();
    let mut evidence = Vec::new();
    for (name, value) in [
        ("nf_conntrack_count", stats.count),
        ("nf_conntrack_max", stats.max),
        ("drop", stats.drop),
        ("early_drop", stats.early_drop),
        ("insert_failed", stats.insert_failed),
    ] {
        if let Some(value) = value {
            evidence.push(Evidence::Counter {
                name: name.into(),
                value,
            });
        }
    }
    let max = stats.max.unwrap_or_default();
    Some(finding(
        FindingCode::ConntrackFull,
        Level::Error,
        record,
        None,
        format!(
            "the conntrack table of {} is full ({} of {max} entries): the kernel drops {packet}, which needs a new entry",
            describe(record),
            stats.count.unwrap_or_default()
        ),
        evidence,
        Some(Owner::Kernel),
        Some(&format!(
            "Raise the limit (sysctl -w net.netfilter.nf_conntrack_max={}) and find what fills the table (conntrack -S; conntrack -L | sort by source)",
            max.saturating_mul(2).max(262144)
        )),
    ))
}
