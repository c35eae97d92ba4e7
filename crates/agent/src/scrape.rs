//! One scrape: visit every mapped netns (the node's first, then pods up to the pod limit) on a
//! short-lived thread that setns(2)s into each, run the per-netns probes there, run the
//! node-scope probes in the host netns, and add the agent's own per-scrape gauges.
//!
//! The visiting thread ends with the scrape, so no thread is ever left in a pod's netns.
//! Must not render text (see `http`) or keep state between scrapes.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use nix::sched::{setns, CloneFlags};

use crate::config::AdditionalLabel;
use crate::health::AgentMetrics;
use crate::podmap::{Entity, PodMap};
use crate::probe::{MetricDesc, MetricProbe, ProbeError, Scope};
use crate::registry::{EntityLabels, Samples, ScrapeOutput, Value};

/// A metric probe that started, with the last error a scrape gave (shown in `/status`).
pub struct ActiveMetricProbe {
    pub probe: Box<dyn MetricProbe>,
    pub last_error: Mutex<Option<String>>,
}

static AGENT_PODS: [MetricDesc; 2] = [
    MetricDesc::gauge(
        "agent",
        "pods_mapped",
        "Pods whose netns the agent maps (all sources)",
    ),
    MetricDesc::gauge(
        "agent",
        "pods_cut",
        "Pods left out of per-pod series by metrics.podLimit (their netns are not read)",
    ),
];

static AGENT_BPF: [MetricDesc; 4] = [
    MetricDesc::counter(
        "agent",
        "bpf_program_runs",
        "eBPF program invocations (kernel.bpf_stats_enabled=1)",
    )
    .with_labels(&["probe", "program"]),
    MetricDesc::counter(
        "agent",
        "bpf_program_run_ns",
        "Nanoseconds spent in an eBPF program (kernel.bpf_stats_enabled=1)",
    )
    .with_labels(&["probe", "program"]),
    MetricDesc::gauge("agent", "bpf_map_entries", "Entries in an eBPF map")
        .with_labels(&["probe", "map"]),
    MetricDesc::gauge("agent", "bpf_map_capacity", "Capacity of an eBPF map")
        .with_labels(&["probe", "map"]),
];

/// What one scrape needs besides the probes.
pub struct ScrapeSettings<'a> {
    pub podmap: &'a PodMap,
    pub additional_labels: &'a [AdditionalLabel],
    pub pod_limit: usize,
    pub metrics: &'a AgentMetrics,
}

fn labels_of(entity: &Entity, additional: &[AdditionalLabel]) -> Arc<EntityLabels> {
    let mut labels = vec![
        ("k8s_node".to_string(), entity.node.clone()),
        ("k8s_namespace".to_string(), entity.namespace().to_string()),
        ("k8s_pod".to_string(), entity.pod().to_string()),
    ];
    labels.extend(
        additional
            .iter()
            .map(|l| (l.name.clone(), l.value(&entity.labels))),
    );
    Arc::new(EntityLabels {
        netns: entity.netns,
        labels,
    })
}

fn record(probe: &ActiveMetricProbe, result: Result<(), ProbeError>, metrics: &AgentMetrics) {
    let mut last = probe.last_error.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(()) => *last = None,
        Err(e) => {
            metrics.probe_error(probe.probe.name());
            *last = Some(e.to_string());
        }
    }
}

/// Collect every probe once.
pub fn scrape(probes: &[Arc<ActiveMetricProbe>], settings: &ScrapeSettings<'_>) -> ScrapeOutput {
    let mut out = ScrapeOutput::default();
    for p in probes {
        for desc in p.probe.metrics() {
            out.declare(desc);
        }
    }
    let entities = settings.podmap.entities();
    let host = settings.podmap.host();
    let mut pods_seen = 0usize;
    let mut pods_cut = 0usize;
    let mut visit: Vec<(Arc<Entity>, Arc<EntityLabels>)> = Vec::new();
    for entity in &entities {
        if !entity.is_host() {
            pods_seen += 1;
            if pods_seen > settings.pod_limit {
                pods_cut += 1;
                continue;
            }
        }
        visit.push((
            entity.clone(),
            labels_of(entity, settings.additional_labels),
        ));
    }
    let host_labels = labels_of(&host, settings.additional_labels);
    let by_inode: HashMap<u64, Arc<EntityLabels>> =
        visit.iter().map(|(e, l)| (e.netns, l.clone())).collect();
    let resolve = |inode: u64| {
        by_inode
            .get(&inode)
            .cloned()
            .unwrap_or_else(|| host_labels.clone())
    };

    let per_netns: Vec<&Arc<ActiveMetricProbe>> = probes
        .iter()
        .filter(|p| p.probe.scope() == Scope::PerNetns)
        .collect();
    if !per_netns.is_empty() {
        let visit = &visit;
        let resolve_ref = &resolve;
        let host_netns = host.netns;
        let out_ref = &mut out;
        let visited = std::thread::scope(|s| {
            s.spawn(move || {
                for (entity, labels) in visit {
                    if entity.netns != host_netns {
                        if let Err(e) = enter(entity) {
                            tracing::debug!("skipping netns {}: {e}", entity.path.display());
                            continue;
                        }
                    }
                    out_ref.start_netns_visit();
                    for p in &per_netns {
                        let mut samples = Samples::new(out_ref, labels.clone(), resolve_ref);
                        record(p, p.probe.collect(&mut samples), settings.metrics);
                    }
                }
            })
            .join()
        });
        if visited.is_err() {
            tracing::error!(
                "a per-netns probe panicked; this scrape's per-netns samples are partial"
            );
        }
    }

    for p in probes.iter().filter(|p| p.probe.scope() == Scope::Node) {
        let mut samples = Samples::new(&mut out, host_labels.clone(), &resolve);
        record(p, p.probe.collect(&mut samples), settings.metrics);
    }

    let mut samples = Samples::new(&mut out, host_labels.clone(), &resolve);
    samples.gauge(&AGENT_PODS[0], pods_seen as f64);
    samples.gauge(&AGENT_PODS[1], pods_cut as f64);
    for p in probes {
        let health = p.probe.health();
        let name = p.probe.name();
        for prog in &health.programs {
            let labels = [name, prog.program.as_str()];
            samples.add(&AGENT_BPF[0], &labels, Value::Counter(prog.run_count));
            samples.add(&AGENT_BPF[1], &labels, Value::Counter(prog.run_time_ns));
        }
        for map in &health.maps {
            let labels = [name, map.map.as_str()];
            samples.add(&AGENT_BPF[2], &labels, Value::Gauge(map.entries as f64));
            samples.add(&AGENT_BPF[3], &labels, Value::Gauge(map.capacity as f64));
        }
    }
    out
}

/// Move the calling thread into the entity's netns.
fn enter(entity: &Entity) -> std::io::Result<()> {
    let file = File::open(&entity.path)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}
