//! The diagnosis engine: given a snapshot and a question ("can SRC reach DST on PORT?"), walk
//! the packet through every network namespace on the way with the kernel's own rules, walk the
//! reply back, check what Kubernetes intends against what the kernel will do, and say where and
//! why it stops, with evidence.
//!
//! Pure: no I/O, no clock. The same snapshot and query always give the same diagnosis.

mod checks;
pub mod cni;
pub mod endpoint;
mod intent;
mod owner;
mod policy;
pub mod render;
mod service;
mod svg;
pub mod synthetic;
mod walk;

use model::diagnosis::{Diagnosis, Direction, Path, QuerySummary, Verdict};
use model::{Level, Snapshot};
use netstack::packet::{Packet, Protocol};
use thiserror::Error;

pub use endpoint::{EndpointError, EndpointSpec, Index};
use policy::PolicyIndex;

/// The question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// As the user wrote them (IP, namespace/pod, node/NAME, service/namespace/name).
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    /// Destination port (ignored for ICMP).
    pub dport: u16,
    /// Source port the simulated client uses.
    pub sport: u16,
}

/// One forward path and the packet as it last was on it (after NAT), for the intent checks.
pub(crate) struct PathEnd<'p> {
    pub path: &'p Path,
    pub packet: &'p Packet,
}

/// The question cannot be asked of this snapshot (exit status 2).
#[derive(Debug, Error)]
pub enum DiagnoseError {
    #[error("source: {0}")]
    Source(EndpointError),
    #[error("destination: {0}")]
    Destination(EndpointError),
    #[error(
        "source {0} is not inside any network namespace of the snapshot, so nothing can be simulated from it"
    )]
    SourceOutside(String),
}

/// Diagnose one flow.
pub fn diagnose(snapshot: &Snapshot, query: &Query) -> Result<Diagnosis, DiagnoseError> {
    let index = Index::new(snapshot);
    let src_spec: EndpointSpec = query.src.parse().map_err(DiagnoseError::Source)?;
    let dst_spec: EndpointSpec = query.dst.parse().map_err(DiagnoseError::Destination)?;
    let (src_ip, src_ns) = index
        .resolve(&src_spec, &query.src)
        .map_err(DiagnoseError::Source)?;
    let (dst_ip, _) = index
        .resolve(&dst_spec, &query.dst)
        .map_err(DiagnoseError::Destination)?;
    let src_ns = src_ns.ok_or_else(|| DiagnoseError::SourceOutside(query.src.clone()))?;

    let policies = PolicyIndex::new(&index);
    let mut walker = walk::Walker::new(&index, &policies, src_ip);
    let frontend = service::frontend(&index, &dst_spec, dst_ip, query);
    let packet = Packet::new(src_ip, dst_ip, query.protocol, query.sport, query.dport);
    let forward = intent::walk_forward(
        &mut walker,
        &index,
        frontend.as_ref(),
        packet.clone(),
        src_ns,
    );
    intent::check(
        &mut walker,
        query,
        frontend.as_ref(),
        &packet,
        src_ns,
        &forward,
    );
    let mut paths: Vec<Path> = Vec::new();
    for end in &forward {
        paths.push(end.path.clone());
        if let Some((reply, netns, bindings)) = end.reply_start() {
            for back in walker.walk(Direction::Reply, reply, &netns, bindings, false) {
                let mut path = back.path;
                path.probability *= end.path.probability;
                paths.push(path);
            }
        }
    }

    let datapath = walker.datapath.summary();
    let path_nodes: Vec<&str> = paths
        .iter()
        .flat_map(|p| &p.hops)
        .map(|h| h.node.as_str())
        .collect();
    let not_ready = checks::node::not_ready(snapshot, path_nodes);
    walker.findings.extend(not_ready);
    let mut findings = walker.findings;
    let blocked =
        paths.iter().any(|p| !p.delivered) || findings.iter().any(|f| f.level >= Level::Error);
    let verdict = if walker.incomplete {
        Verdict::Incomplete
    } else if blocked {
        Verdict::Blocked
    } else {
        Verdict::Delivered
    };
    let dns = checks::dns::unreachable(
        snapshot,
        &query.src,
        &src_ns.node,
        &query.dst,
        dst_ip,
        query.dport,
        blocked,
    );
    findings.extend(dns);
    // Most severe first; the walk order is kept among equals (stable sort), and path indices
    // into the list are remapped.
    let mut order: Vec<usize> = (0..findings.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(findings[i].level));
    let mut new_index = vec![0; findings.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut sorted: Vec<_> = order.iter().map(|&i| findings[i].clone()).collect();
    std::mem::swap(&mut findings, &mut sorted);
    for p in &mut paths {
        p.stopped_by = p.stopped_by.map(|i| new_index[i]);
    }
    Ok(Diagnosis {
        query: QuerySummary {
            src: query.src.clone(),
            dst: query.dst.clone(),
            protocol: query.protocol.to_string(),
            sport: query.sport,
            dport: query.dport,
            src_ip: src_ip.to_string(),
            dst_ip: dst_ip.to_string(),
        },
        verdict,
        datapath: Some(datapath),
        paths,
        findings,
    })
}
