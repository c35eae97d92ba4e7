//! The data contract of netsleuth: the snapshot (Kubernetes objects + per-netns state) that
//! collectors write and the engine reads, and the findings a diagnosis produces.
//!
//! No I/O here beyond encoding and decoding bytes; no decisions.

pub mod codec;
pub mod diagnosis;
pub mod finding;
pub mod inventory;
pub mod snapshot;

pub use codec::SnapshotError;
pub use finding::{Evidence, Finding, FindingCode, Level, Owner, Place};
pub use inventory::{Inventory, NetnsLocation};
pub use snapshot::{
    ClusterInfo, CniMode, KubeObjects, KubeProxyMode, NetnsOwner, NetnsRecord, Snapshot,
    SnapshotSource, SourceKind,
};
