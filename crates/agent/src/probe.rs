//! The probe framework: what a probe is, how it reports, and the states `/status` shows.
//!
//! Two kinds, as in KubeSkoop (a name may exist in both):
//! - a [`MetricProbe`] is asked for samples on every scrape (`/metrics` is synchronous, no
//!   cache), either once per network namespace ([`Scope::PerNetns`]: the calling thread has
//!   already entered that netns, so `/proc/thread-self/net/*` and new netlink sockets are the
//!   netns's own) or once per scrape from the host netns ([`Scope::Node`]: node-global files,
//!   or eBPF maps keyed by netns inode);
//! - an [`EventProbe`] is polled by the agent on its own thread and hands over the events that
//!   arrived since the last poll, with what the kernel lost or sampled away.
//!
//! eBPF probes (crate `bpf`) plug in here through adapters in `probes/<name>.rs`; a loader
//! shared by the metric and the event half of one probe goes through [`SharedLoaders`], which
//! loads once and tears down when neither half holds it any more.
//!
//! This module must not know any particular probe, sink or HTTP.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::events::EventBatch;
use crate::podmap::PodMap;
use crate::registry::Samples;

/// Why a probe could not be created or could not collect.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe's `args:` did not decode; the message names the field.
    #[error("probe `{probe}`: bad args: {message}")]
    BadArgs { probe: String, message: String },
    /// The kernel or host lacks what the probe needs (a /proc file, a module, BTF, tracefs).
    #[error("probe `{probe}`: not supported here: {reason}")]
    Unsupported { probe: String, reason: String },
    /// Reading a file the probe depends on failed.
    #[error("probe `{probe}`: cannot read {path}: {source}")]
    Read {
        probe: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel's text or netlink answer did not have the expected shape.
    #[error("probe `{probe}`: cannot parse {what}: {message}")]
    Parse {
        probe: String,
        what: String,
        message: String,
    },
    /// Anything else a probe (typically an eBPF loader) reports, already worded.
    #[error("probe `{probe}`: {message}")]
    Other { probe: String, message: String },
}

impl ProbeError {
    pub fn read(probe: &str, path: impl fmt::Display, source: std::io::Error) -> Self {
        ProbeError::Read {
            probe: probe.to_string(),
            path: path.to_string(),
            source,
        }
    }

    pub fn parse(probe: &str, what: impl fmt::Display, message: impl fmt::Display) -> Self {
        ProbeError::Parse {
            probe: probe.to_string(),
            what: what.to_string(),
            message: message.to_string(),
        }
    }

    pub fn unsupported(probe: &str, reason: impl fmt::Display) -> Self {
        ProbeError::Unsupported {
            probe: probe.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn other(probe: &str, message: impl fmt::Display) -> Self {
        ProbeError::Other {
            probe: probe.to_string(),
            message: message.to_string(),
        }
    }
}

/// The two registries a probe name can appear in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Metrics,
    Event,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Metrics => "metrics",
            ProbeKind::Event => "event",
        })
    }
}

/// A probe's state as `/status` shows it. Unlike KubeSkoop (where Failed printed as `""`),
/// a failed probe says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    Running,
    Failed { error: String },
}

/// Where a metric probe's `collect` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Once per mapped network namespace, with the calling thread inside it.
    PerNetns,
    /// Once per scrape, in the host netns (node-global data, or maps keyed by netns inode).
    Node,
}

/// Prometheus metric types our probes export. Monotonic kernel counters are counters
/// (KubeSkoop exported them as gauges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

/// One metric a probe exports: `<prefix>_<probe>_<name>` (plus `_total` for counters, added by
/// the OpenMetrics encoder; a counter named `total` is exported as `<prefix>_<probe>_total`).
#[derive(Debug, PartialEq, Eq)]
pub struct MetricDesc {
    pub probe: &'static str,
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    /// Labels this metric carries besides the standard ones (`k8s_node`, `k8s_namespace`,
    /// `k8s_pod`, additional labels), in the order they are passed to [`Samples`].
    pub labels: &'static [&'static str],
}

impl MetricDesc {
    pub const fn counter(
        probe: &'static str,
        name: &'static str,
        help: &'static str,
    ) -> MetricDesc {
        MetricDesc {
            probe,
            name,
            help,
            kind: MetricType::Counter,
            labels: &[],
        }
    }

    pub const fn gauge(probe: &'static str, name: &'static str, help: &'static str) -> MetricDesc {
        MetricDesc {
            probe,
            name,
            help,
            kind: MetricType::Gauge,
            labels: &[],
        }
    }

    /// The same metric with its own labels (after the standard ones).
    pub const fn with_labels(self, labels: &'static [&'static str]) -> MetricDesc {
        MetricDesc { labels, ..self }
    }

    /// The family name under `prefix`, without the `_total` the encoder adds to counters.
    pub fn family_name(&self, prefix: &str) -> String {
        if self.kind == MetricType::Counter && self.name == "total" {
            format!("{prefix}_{}", self.probe)
        } else {
            format!("{prefix}_{}_{}", self.probe, self.name)
        }
    }
}

/// Run statistics of one eBPF program (from `bpf_prog_info`; zero unless
/// `kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProgramStats {
    pub program: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// How full one eBPF map is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapFill {
    pub map: String,
    pub entries: u64,
    pub capacity: u64,
}

/// A probe's own cost, exported as agent health metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeHealth {
    pub programs: Vec<ProgramStats>,
    pub maps: Vec<MapFill>,
}

/// A probe that contributes samples to every scrape.
pub trait MetricProbe: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn scope(&self) -> Scope;
    /// Every metric this probe can export (declared even when it has no series, so HELP/TYPE
    /// are stable and docs can be checked against it).
    fn metrics(&self) -> &'static [MetricDesc];
    /// Add this scrape's samples. For [`Scope::PerNetns`] the thread is inside the netns and
    /// `out` labels samples with that netns's entity; for [`Scope::Node`], samples go to the
    /// node entity unless attributed to a netns with [`Samples::for_netns`].
    fn collect(&self, out: &mut Samples<'_>) -> Result<(), ProbeError>;
    /// Whether `collect` needs the calling thread inside the netns ([`Scope::PerNetns`]):
    /// netlink sockets, `/proc/<pid>` walks. A probe that reads only through
    /// [`Samples::netns_file`] says `false`, so a scrape can skip setns(2) for a netns whose
    /// files are already open.
    fn needs_thread_in_netns(&self) -> bool {
        true
    }
    /// eBPF programs and maps behind this probe, if any.
    fn health(&self) -> ProbeHealth {
        ProbeHealth::default()
    }
}

/// A probe that produces events. The agent polls it on a thread of its own; `poll` must not
/// block for long (drain what is there and return). Dropping the probe stops it (detach).
pub trait EventProbe: Send + 'static {
    fn name(&self) -> &'static str;
    /// Move the events that arrived since the last call into `out`, and record there what the
    /// kernel lost (ring buffer full) or sampled away (rate limit).
    fn poll(&mut self, out: &mut EventBatch) -> Result<(), ProbeError>;
    /// How long the agent sleeps between polls.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
    fn health(&self) -> ProbeHealth {
        ProbeHealth::default()
    }
}

/// A probe's `args:` from the config, decoded by the probe into its own struct (unknown keys
/// are errors naming the key: give the struct `#[serde(deny_unknown_fields)]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeArgs {
    probe: String,
    map: serde_yaml_ng::Mapping,
}

impl ProbeArgs {
    pub fn new(probe: impl Into<String>, map: serde_yaml_ng::Mapping) -> Self {
        ProbeArgs {
            probe: probe.into(),
            map,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Decode into `T`; errors name the offending key.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ProbeError> {
        serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(self.map.clone())).map_err(|e| {
            ProbeError::BadArgs {
                probe: self.probe.clone(),
                message: e.to_string(),
            }
        })
    }

    /// Refuse any args: for probes that take none, so a typo is not ignored silently.
    pub fn expect_none(&self) -> Result<(), ProbeError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => Err(ProbeError::BadArgs {
                probe: self.probe.clone(),
                message: format!(
                    "takes no args, got `{}`",
                    serde_yaml_ng::to_string(key).unwrap_or_default().trim_end()
                ),
            }),
        }
    }
}

/// What a probe factory gets besides its args.
#[derive(Clone)]
pub struct ProbeContext {
    /// This node's name (`k8s_node`).
    pub node: String,
    pub podmap: Arc<PodMap>,
    pub shared: SharedLoaders,
}

/// Loaders shared between the metric and the event half of one probe (e.g. packetloss loads
/// and attaches its eBPF program once). Held weakly: when both halves are dropped the loader
/// is dropped (detached), and the next `get_or_load` loads again.
#[derive(Clone, Default)]
pub struct SharedLoaders {
    inner: Arc<Mutex<HashMap<&'static str, Weak<dyn Any + Send + Sync>>>>,
}

impl SharedLoaders {
    /// The loader registered under `key`, loading it with `load` if nobody holds one.
    pub fn get_or_load<T, E>(
        &self,
        key: &'static str,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(key).and_then(Weak::upgrade) {
            if let Ok(typed) = existing.downcast::<T>() {
                return Ok(typed);
            }
        }
        let loaded = Arc::new(load()?);
        let erased: Arc<dyn Any + Send + Sync> = loaded.clone();
        map.insert(key, Arc::downgrade(&erased));
        Ok(loaded)
    }
}

/// Creates a metric probe from its args.
pub type MetricFactory = fn(&ProbeArgs, &ProbeContext) -> Result<Box<dyn MetricProbe>, ProbeError>;
/// Creates an event probe from its args (loading and attaching whatever it needs).
pub type EventFactory = fn(&ProbeArgs, &ProbeContext) -> Result<Box<dyn EventProbe>, ProbeError>;

/// How expensive a probe is, as KubeSkoop's docs classify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overhead {
    Low,
    Medium,
    High,
}

/// One entry of the probe catalogue (`registry::CATALOGUE`).
pub struct ProbeSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub overhead: Overhead,
    pub metrics: Option<MetricFactory>,
    pub event: Option<EventFactory>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_loader_is_loaded_once_and_reloaded_after_both_halves_drop() {
        let shared = SharedLoaders::default();
        let mut loads = 0;
        let a = shared
            .get_or_load::<u32, ()>("packetloss", || {
                loads += 1;
                Ok(7)
            })
            .unwrap();
        let b = shared
            .get_or_load::<u32, ()>("packetloss", || {
                loads += 1;
                Ok(8)
            })
            .unwrap();
        assert_eq!((*a, *b, loads), (7, 7, 1));
        drop(a);
        drop(b);
        let c = shared
            .get_or_load::<u32, ()>("packetloss", || {
                loads += 1;
                Ok(9)
            })
            .unwrap();
        assert_eq!((*c, loads), (9, 2));
    }

    #[test]
    fn args_with_unknown_key_name_it() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct FlowArgs {
            #[serde(rename = "enablePortInLabel", default)]
            enable_port_in_label: bool,
        }
        let map: serde_yaml_ng::Mapping =
            serde_yaml_ng::from_str("enablePortInLabels: true").unwrap();
        let err = ProbeArgs::new("flow", map)
            .decode::<FlowArgs>()
            .unwrap_err();
        assert!(err.to_string().contains("enablePortInLabels"), "{err}");
        assert!(err.to_string().contains("flow"), "{err}");
    }
}
