//! Reads the state of Linux network namespaces into the snapshot format, deciding nothing.
//!
//! Every namespace is read on its own OS thread, which enters the namespace with `setns(2)` and
//! exits when the reading is done (a thread that has switched namespace must never serve anything
//! else). On that thread:
//! - links, addresses, routes of every table, policy-routing rules, neighbours and the bridge /
//!   vxlan FDB come from rtnetlink dumps ([`netlink`]);
//! - sysctls, listening sockets, conntrack and IPVS come from procfs ([`procfs`]), which shows the
//!   namespace of the reading thread (`/proc/sys/net`, `/proc/thread-self/net`);
//! - `iptables-save`, `ip6tables-save`, `nft -j list ruleset` and `ipset save` are run as child
//!   processes ([`tools`]), which inherit the thread's namespace.
//!
//! A part that cannot be read is recorded in [`netstack::state::NetnsState::missing`] with the
//! reason; nothing is silently left empty. Only failing to enter a namespace at all is an error.
//! Veth peers are resolved across the namespaces collected together ([`snapshot`]). Which
//! namespaces to read is the caller's choice ([`NetnsFilter`]): choosing them for a diagnosis
//! question is interpreting it, which `lab::live` does.
//!
//! This crate must not interpret state (that is `diagnose`'s job) nor change it: it only reads.

pub mod netlink;
pub mod procfs;
pub mod snapshot;
mod thread;
pub mod tools;

use std::path::PathBuf;

use thiserror::Error;

pub use snapshot::{collect_inventory, collect_netns, NetnsFilter, Progress};

/// Why a namespace could not be read at all.
#[derive(Debug, Error)]
pub enum CollectError {
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot enter network namespace {path} (setns needs CAP_SYS_ADMIN, i.e. root): {source}"
    )]
    EnterNetns { path: PathBuf, source: nix::Error },
    #[error("cannot start a collector thread for {path}: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the collector thread for {path} panicked")]
    ThreadPanicked { path: PathBuf },
    #[error("cannot open a netlink socket in {path}: {source}")]
    Netlink {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Inventory { path: PathBuf, message: String },
}
