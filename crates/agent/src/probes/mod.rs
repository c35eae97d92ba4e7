//! One module per probe, and the catalogue that maps KubeSkoop's probe names to factories.
//!
//! A probe module reads the kernel and writes samples or events; it must not know about HTTP,
//! sinks or other probes. eBPF probes (crate `bpf`) have their adapter module here too: add the
//! module and one [`ProbeSpec`] line to [`CATALOGUE`].

use crate::probe::{ProbeKind, ProbeSpec};

/// Every probe this agent knows, by KubeSkoop name. `/status` lists these as available.
pub static CATALOGUE: &[ProbeSpec] = &[];

/// KubeSkoop's old or mis-cased names → ours.
const ALIASES: &[(&str, &str)] = &[
    ("net_softirq", "softirq"),
    ("netsoftirq", "softirq"),
    ("netiftxlatency", "netiftxlat"),
    ("virtcmdLatency", "virtcmdlatency"),
];

/// The catalogue name for a configured name (aliases resolved).
pub fn canonical_name(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(old, _)| *old == name)
        .map(|(_, new)| *new)
        .unwrap_or(name)
}

/// The catalogue entry for a probe name.
pub fn spec(name: &str) -> Option<&'static ProbeSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// Names of the probes of one kind, in catalogue order.
pub fn names(kind: ProbeKind) -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .filter(|s| match kind {
            ProbeKind::Metrics => s.metrics.is_some(),
            ProbeKind::Event => s.event.is_some(),
        })
        .map(|s| s.name)
        .collect()
}
