//! One scrape: visit every mapped netns (the node's first, then pods up to the pod limit) on
//! short-lived threads (one per CPU, each a contiguous share of the netns) that run the
//! per-netns probes there, run the node-scope probes in the host netns, and add the agent's own
//! per-scrape gauges.
//!
//! A visit re-reads the netns's procfs files kept open from earlier scrapes (`netns_files`)
//! and enters the netns with setns(2) only when a file is not open yet or a probe needs the
//! thread inside (netlink, `/proc/<pid>`). The visiting threads end with the scrape, so no
//! thread is ever left in a pod's netns; the only state kept between scrapes is those files,
//! and only for the netns this scrape visited.
//!
//! Every scrape goes by the inode each entity's netns path names now, not the one the pod map
//! read: the kernel reuses a freed netns inode at once, so a pod whose netns is gone (its path
//! with it) is left out rather than lending its labels to whatever namespace got its inode, and
//! samples keyed by inode (eBPF maps) of that namespace count as the node's until it is mapped.
//! eBPF maps also key by the netns cookie: every visit learns its netns's cookie, and the
//! node-scope probes run while the scrape still holds the visited netns open, so an inode seen
//! with another cookie than its netns's is a dead namespace's (`Samples::is_dead_netns`).
//! Must not render text (see `http`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::AdditionalLabel;
use crate::health::AgentMetrics;
use crate::netns_files::{NetnsFileCache, NetnsFiles, NetnsVisit, ThreadNetns};
use crate::podmap::{netns_inode, Entity, PodMap};
use crate::probe::{MetricDesc, MetricProbe, ProbeError, Scope};
use crate::registry::{EntityLabels, NetnsCookies, Samples, ScrapeOutput, Value};

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

/// One entity to visit, with the inode its netns path named when the scrape started.
struct Visit {
    entity: Arc<Entity>,
    inode: u64,
    labels: Arc<EntityLabels>,
}

/// What one scrape needs besides the probes.
pub struct ScrapeSettings<'a> {
    pub podmap: &'a PodMap,
    pub netns_files: &'a NetnsFileCache,
    pub additional_labels: &'a [AdditionalLabel],
    pub pod_limit: usize,
    pub metrics: &'a AgentMetrics,
}

/// The labels of `entity`, whose netns has this `inode` now.
fn labels_of(entity: &Entity, inode: u64, additional: &[AdditionalLabel]) -> Arc<EntityLabels> {
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
        netns: inode,
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
    let mut visit: Vec<Visit> = Vec::new();
    for entity in &entities {
        if !entity.is_host() {
            pods_seen += 1;
            if pods_seen > settings.pod_limit {
                pods_cut += 1;
                continue;
            }
        }
        let inode = match netns_inode(&entity.path) {
            Ok(inode) => inode,
            Err(e) => {
                tracing::debug!("skipping netns {}: {e}", entity.path.display());
                continue;
            }
        };
        visit.push(Visit {
            labels: labels_of(entity, inode, settings.additional_labels),
            entity: entity.clone(),
            inode,
        });
    }
    let host_labels = labels_of(&host, host.netns, settings.additional_labels);
    let by_inode: HashMap<u64, Arc<EntityLabels>> =
        visit.iter().map(|v| (v.inode, v.labels.clone())).collect();
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
    // Visited even without per-netns probes: the visit holds the netns and learns its cookie.
    let open_before = settings.netns_files.take();
    let visited = visit_all(
        &visit,
        &per_netns,
        &resolve,
        &mut out,
        open_before,
        settings,
    );
    let cookies: NetnsCookies = visited
        .iter()
        .filter_map(|(&inode, files)| Some((inode, files.cookie()?)))
        .collect();

    for p in probes.iter().filter(|p| p.probe.scope() == Scope::Node) {
        let mut samples =
            Samples::new(&mut out, host_labels.clone(), &resolve).with_netns_cookies(&cookies);
        record(p, p.probe.collect(&mut samples), settings.metrics);
    }
    // Files of netns not visited this time (gone, unmapped, cut) close here, after the
    // node-scope probes: until then no visited netns's inode can go to another namespace.
    settings.netns_files.keep(visited);

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

/// Fewest netns worth a scrape thread of their own (a thread costs about as much as a few
/// netns visits).
const NETNS_PER_THREAD: usize = 16;

/// Run the per-netns probes in every netns of `visit`, split in contiguous shares over the
/// CPUs (one thread each, ended with the scrape), and put their samples into `out` in `visit`
/// order. Returns the open files of the netns visited.
fn visit_all(
    visit: &[Visit],
    per_netns: &[&Arc<ActiveMetricProbe>],
    resolve: &(dyn Fn(u64) -> Arc<EntityLabels> + Sync),
    out: &mut ScrapeOutput,
    open_before: HashMap<u64, NetnsFiles>,
    settings: &ScrapeSettings<'_>,
) -> HashMap<u64, NetnsFiles> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (visit.len() / NETNS_PER_THREAD).clamp(1, cpus);
    let share = visit.len().div_ceil(threads);
    let open_before = Mutex::new(open_before);
    let visited = Mutex::new(HashMap::new());
    let shares: Vec<std::thread::Result<ScrapeOutput>> = std::thread::scope(|s| {
        let handles: Vec<_> = visit
            .chunks(share.max(1))
            .map(|entities| {
                let (open_before, visited) = (&open_before, &visited);
                s.spawn(move || {
                    let mut share_out = ScrapeOutput::default();
                    visit_share(
                        entities,
                        per_netns,
                        resolve,
                        &mut share_out,
                        open_before,
                        visited,
                        settings,
                    );
                    share_out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    for share in shares {
        match share {
            Ok(share_out) => out.append(share_out),
            Err(_) => tracing::error!(
                "a per-netns probe panicked; this scrape's per-netns samples are partial"
            ),
        }
    }
    visited.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// One scrape thread's share of the netns.
fn visit_share(
    entities: &[Visit],
    per_netns: &[&Arc<ActiveMetricProbe>],
    resolve: &(dyn Fn(u64) -> Arc<EntityLabels> + Sync),
    out: &mut ScrapeOutput,
    open_before: &Mutex<HashMap<u64, NetnsFiles>>,
    visited: &Mutex<HashMap<u64, NetnsFiles>>,
    settings: &ScrapeSettings<'_>,
) {
    let mut thread = match ThreadNetns::current() {
        Ok(thread) => thread,
        Err(e) => {
            tracing::error!("cannot tell the scrape thread's netns: {e}");
            return;
        }
    };
    let must_enter = per_netns.iter().any(|p| p.probe.needs_thread_in_netns());
    for Visit {
        entity,
        inode,
        labels,
    } in entities
    {
        let inode = *inode;
        let cached = lock(open_before).remove(&inode);
        let mut files = match cached.map_or_else(|| NetnsFiles::open(&entity.path, inode), Ok) {
            Ok(files) => files,
            Err(e) => {
                tracing::debug!("skipping netns {}: {e}", entity.path.display());
                continue;
            }
        };
        let mut visit = NetnsVisit::new(&entity.path, inode, &mut thread, &mut files);
        if let Err(e) = visit.learn_cookie() {
            // Kernels before 5.14: eBPF counts of this netns go by inode alone.
            tracing::debug!("no cookie for netns {}: {e}", entity.path.display());
        }
        if must_enter {
            if let Err(e) = visit.enter() {
                tracing::debug!("skipping netns {}: {e}", entity.path.display());
                continue;
            }
        }
        for p in per_netns {
            let mut samples = Samples::in_netns(out, labels.clone(), resolve, &mut visit);
            record(p, p.probe.collect(&mut samples), settings.metrics);
        }
        lock(visited).insert(inode, files);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
