//! Kubernetes intent around the walk: the forward walk towards a Service (fanned out over a
//! headless Service's pod addresses, which is what its DNS name resolves to), then the Service
//! checks (`service`) and the NetworkPolicy comparison (`policy::check`) over the paths it found.
//! Owns no rule of its own: it only orders the calls and hands each the walk's results.

use model::diagnosis::Direction;
use model::NetnsRecord;
use netstack::packet::Packet;

use crate::endpoint::Index;
use crate::service::{self, Access, Frontend};
use crate::walk::{WalkEnd, Walker};
use crate::{PathEnd, Query};

/// The forward walk: one per address the destination stands for.
pub fn walk_forward<'a>(
    walker: &mut Walker<'a>,
    index: &Index<'a>,
    frontend: Option<&Frontend<'a>>,
    packet: Packet,
    src_ns: &NetnsRecord,
) -> Vec<WalkEnd> {
    let targets = match frontend {
        Some(f) if f.access == Access::Headless => {
            service::headless_addresses(f, &index.snapshot.kubernetes)
        }
        _ => Vec::new(),
    };
    if targets.is_empty() {
        return walker.walk(Direction::Forward, packet, &src_ns.id, Vec::new(), true);
    }
    let share = 1.0 / targets.len() as f64;
    let mut ends = Vec::new();
    for dst in targets {
        let packet = Packet {
            dst,
            ..packet.clone()
        };
        for mut end in walker.walk(Direction::Forward, packet, &src_ns.id, Vec::new(), true) {
            end.path.probability *= share;
            ends.push(end);
        }
    }
    ends
}

/// Service and NetworkPolicy intent against the forward paths.
pub fn check<'a>(
    walker: &mut Walker<'a>,
    query: &'a Query,
    frontend: Option<&Frontend<'a>>,
    original: &Packet,
    src_ns: &'a NetnsRecord,
    forward: &[WalkEnd],
) {
    // The walk's own lookups: the checks ask the same questions of the same snapshot.
    let (index, policies) = (walker.index, walker.policies);
    let ends: Vec<PathEnd<'_>> = forward
        .iter()
        .map(|e| PathEnd {
            path: &e.path,
            packet: &e.packet,
        })
        .collect();
    let mut findings = std::mem::take(&mut walker.findings);
    if let Some(frontend) = frontend {
        let ctx = service::Context {
            index,
            query,
            src_ip: original.src,
            dst_ip: original.dst,
            pods: policies,
            src_node: &src_ns.node,
            ends: &ends,
        };
        let host = service::translating_node(frontend, &src_ns.node)
            .and_then(|node| index.host_netns(&node));
        let netfilter = host.and_then(|h| walker.netfilter(&h.id));
        service::check(&ctx, frontend, netfilter, &mut findings);
    }
    if !policies.is_empty() {
        crate::policy::check::compare(index, policies, original, &ends, &mut findings);
    }
    // Parsing a netns for the checks may have reported unreadable state: keep it, after.
    findings.append(&mut walker.findings);
    walker.findings = findings;
}
