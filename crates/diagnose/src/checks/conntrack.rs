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

#[cfg(test)]
mod tests {
    use super::*;
    use model::NetnsOwner;
    use netstack::packet::Protocol;
    use netstack::state::{ConntrackState, NetnsState};

    fn node(count: u64, max: u64) -> NetnsRecord {
        NetnsRecord {
            id: "node-1".into(),
            node: "node-1".into(),
            owner: NetnsOwner::Host,
            state: NetnsState {
                conntrack: Some(ConntrackState {
                    count: Some(count),
                    max: Some(max),
                    ..ConntrackState::default()
                }),
                ..NetnsState::default()
            },
        }
    }

    #[test]
    fn only_a_full_table_drops_new_connections() {
        let syn = Packet::new(
            "10.244.0.2".parse().expect("valid"),
            "10.244.1.2".parse().expect("valid"),
            Protocol::Tcp,
            40000,
            8080,
        );
        assert!(table_full(&node(262_143, 262_144), &syn).is_none());
        let f = table_full(&node(262_144, 262_144), &syn).expect("full");
        assert_eq!(f.code, FindingCode::ConntrackFull);
        assert!(f.evidence.contains(&Evidence::Counter {
            name: "nf_conntrack_max".into(),
            value: 262_144
        }));
        // Replies belong to an existing connection: they need no new entry.
        assert!(table_full(&node(262_144, 262_144), &syn.reversed()).is_none());
    }
}
