//! Checks along the walked path that the kernel's forwarding decision alone does not show:
//! link-layer resolution (vxlan neighbour and FDB, bridge ports, ARP answers), MTU with
//! encapsulation overhead, bridged traffic bypassing iptables, conntrack exhaustion, node
//! health and cluster DNS.
//!
//! Every check is a pure function from snapshot state to an optional finding; the walker
//! decides where to call it and stops the path when one fires. Nothing here walks packets or
//! touches the snapshot.

pub mod conntrack;
pub mod devices;
pub mod dns;
pub mod mtu;
pub mod node;
pub mod sysctl;

use model::Evidence;
use netstack::fib::sysctl::SysctlReading;

/// Evidence lines for a sysctl reading (one per key it was derived from).
fn sysctl_evidence<T>(reading: &SysctlReading<T>) -> Vec<Evidence> {
    reading
        .from
        .iter()
        .map(|(key, value)| Evidence::Sysctl {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}
