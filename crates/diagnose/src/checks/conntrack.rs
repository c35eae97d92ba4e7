//! Conntrack on the path. Exhaustion: with `nf_conntrack_count` at `nf_conntrack_max`, a packet
//! that needs a new entry is dropped ("nf_conntrack: table full, dropping packet") in every
//! netns where conntrack runs, whatever the rules say. INVALID: a reply crossing a node the
//! request never crossed (asymmetric routing) finds no entry there; a SYN-ACK without one is
//! INVALID, and kube-proxy's `--ctstate INVALID -j DROP` drops it.

use model::{Evidence, Finding, FindingCode, Level, NetnsRecord, Owner};
use netstack::conntrack::ConntrackTable;
use netstack::netfilter::RuleRef;
use netstack::packet::{CtState, Packet};

pub const INVALID_HINT: &str = "Conntrack here never saw the connection's first packet, so the reply is INVALID: the reply takes another path than the request (asymmetric routing). Make the route back to the client go the way the request came (check the routes for the client's address on the nodes the reply crosses).";

/// The conntrack state `packet` gets in `record` when this netns did not see the request:
/// conntrack runs where iptables rules exist; `None` where it does not or the state is not
/// INVALID.
pub fn state_without_request(record: &NetnsRecord, packet: &Packet) -> Option<CtState> {
    let rules = record.state.iptables.as_ref()?.ipv4.as_deref()?;
    if rules.trim().is_empty() {
        return None;
    }
    let lookup = ConntrackTable::of_netns(&record.state).lookup(packet);
    (lookup.state == CtState::Invalid).then_some(CtState::Invalid)
}

/// A drop decided by a `ctstate INVALID` rule on an INVALID packet is a conntrack finding, not a
/// rule someone added against this traffic.
pub fn drop_code(code: FindingCode, packet: &Packet, rule: Option<&RuleRef>) -> FindingCode {
    let invalid_rule = rule.is_some_and(|r| r.text.contains("INVALID"));
    if code == FindingCode::NetfilterDrop && packet.ct_state == CtState::Invalid && invalid_rule {
        FindingCode::ConntrackInvalid
    } else {
        code
    }
}

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
