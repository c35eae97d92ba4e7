//! The result of one diagnosis: the query, the verdict, every path the packet can take (one per
//! load-balancing branch, forward and reply) hop by hop, and the findings.
//!
//! Part of the public JSON schema (`docs/diagnosis.md`): add fields freely, never rename.

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Level};
use crate::snapshot::{CniMode, KubeProxyMode};

/// Overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every branch gets there and back, and no finding is at error level or above.
    Delivered,
    /// At least one branch is stopped, or an error-level finding exists.
    Blocked,
    /// State the walk needed is missing; nothing certain can be said.
    Incomplete,
}

/// What was asked, as resolved against the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySummary {
    /// As given on the command line.
    pub src: String,
    pub dst: String,
    pub protocol: String,
    #[serde(default)]
    pub sport: u16,
    #[serde(default)]
    pub dport: u16,
    /// The addresses they resolved to.
    pub src_ip: String,
    pub dst_ip: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Forward,
    Reply,
}

/// One way through the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Path {
    pub direction: Direction,
    /// Share of flows that take this path (load balancing fans out).
    pub probability: f64,
    /// Whether the packet arrived.
    pub delivered: bool,
    pub hops: Vec<Hop>,
    /// Index into [`Diagnosis::findings`] of the finding that stopped this path, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<usize>,
}

/// What happened in one network namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// Snapshot netns id.
    pub netns: String,
    pub node: String,
    /// Device the packet came in on (`None` where it originated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    /// Device it left on (`None` where it was delivered or stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    /// The packet as it arrived and as it left (`tcp 10.0.0.1:4000 -> 10.96.0.10:80`).
    pub packet_in: String,
    pub packet_out: String,
    /// What the kernel did, in order: netfilter hooks, routing, device handling.
    pub steps: Vec<String>,
    /// Worst level of the findings placed in this netns, for colouring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
}

/// Which datapath the engine assumed, and what in the snapshot told it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathSummary {
    pub cni: CniMode,
    /// The evidence, in words (`node annotation flannel.alpha.coreos.com/backend-type=vxlan`).
    pub cni_detected_from: String,
    pub kube_proxy_mode: KubeProxyMode,
    pub kube_proxy_detected_from: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub query: QuerySummary,
    pub verdict: Verdict,
    /// The CNI and kube-proxy mode the checks were made against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<DatapathSummary>,
    pub paths: Vec<Path>,
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// The most severe finding level, if any finding exists.
    pub fn worst_level(&self) -> Option<Level> {
        self.findings.iter().map(|f| f.level).max()
    }
}
