//! The inventory: what a snapshot will be made of, before the netns state is read.
//!
//! Whoever knows a cluster's layout (the lab, the agent, a Kubernetes API reader) writes an
//! [`Inventory`]; the collector turns it into a [`crate::Snapshot`] by reading each listed network
//! namespace. This keeps the collector ignorant of where the layout came from and the lab ignorant
//! of how state is read.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::snapshot::{ClusterInfo, KubeObjects, NetnsOwner, SnapshotSource};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub source: SnapshotSource,
    #[serde(default)]
    pub cluster: ClusterInfo,
    #[serde(default)]
    pub kubernetes: KubeObjects,
    pub netns: Vec<NetnsLocation>,
}

/// Where to find one network namespace and whom it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsLocation {
    /// Snapshot id (see [`crate::NetnsRecord::id`]).
    pub id: String,
    pub node: String,
    pub owner: NetnsOwner,
    /// A path that can be opened and passed to setns(2): `/run/netns/NAME`, `/proc/PID/ns/net`.
    pub path: PathBuf,
}
