//! Emulated Kubernetes clusters built from Linux network namespaces on one host.
//!
//! A lab is nodes (netns with `eth0` on an underlay bridge or router), pods (netns with a veth to
//! their node), a CNI datapath programmed the way flannel or calico program it, kube-proxy's
//! iptables rules, NetworkPolicy rules, and a listener in every pod. Faults can be injected and
//! real traffic ([`Lab::probe`]) tells the ground truth a diagnosis is checked against.
//!
//! The lab writes a [`model::Inventory`] (`inventory.json` in its state dir) for the collector;
//! it never reads netns state itself: [`live`] hands the inventory to the collector and what was
//! collected to the engine. It must never touch anything outside the netns it created
//! (`nsl-<lab>-…`): no root-netns links, routes or rules. See `docs/lab.md`.

pub mod datapath;
mod error;
pub mod faults;
pub mod kube_proxy;
mod lab;
pub mod live;
pub mod objects;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod serve;
mod sha256;
pub mod status;
pub mod sys;
#[cfg(feature = "test-support")]
pub mod testing;

pub use error::LabError;
pub use faults::{Fault, Injected};
pub use kube_proxy::{render_kube_proxy_iptables, synthetic_services, KubeProxyInput};
pub use lab::{
    default_listener, state_root, validate_name, Lab, LabSpec, DEFAULT_NAME, EXTERNAL_TARGET,
    SUPPORTED_CNI,
};
pub use objects::{parse_objects, read_objects, LabObject};
pub use probe::{ProbeOutcome, ProbeRequest};
pub use serve::{ListenPort, Transport};
pub use status::LabStatus;

/// Prefix of every netns any lab creates.
pub const NETNS_PREFIX: &str = "nsl-";
