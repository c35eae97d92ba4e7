//! The running agent: starts the configured probes and sinks, applies a new config on reload
//! (only what changed is restarted; a bad config is refused and the running one kept), and
//! answers the questions the HTTP layer asks (scrape, status).
//!
//! Must not parse HTTP or know any probe by name.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;

use crate::config::{Config, ConfigError, ProbeConfig, SinkConfig};
use crate::events::{EventBatch, EventBus};
use crate::health::AgentMetrics;
use crate::netns_files::NetnsFileCache;
use crate::podmap::{Owner, PodMap, PodMapSources};
use crate::probe::{EventProbe, ProbeContext, ProbeState, SharedLoaders};
use crate::probes;
use crate::registry::ScrapeCollector;
use crate::scrape::{scrape, ActiveMetricProbe, ScrapeSettings};
use crate::status::{ProbeStatus, Status};

/// Per-sink queue length between the bus and the sink task.
const SINK_QUEUE: usize = 4096;

/// How the agent was started (CLI flags).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The YAML config; `None` runs KubeSkoop's default probe set.
    pub config_path: Option<PathBuf>,
    pub node: String,
    /// `netsleuth`, or `kubeskoop` for KubeSkoop's dashboards.
    pub metric_prefix: String,
    pub inventory_dir: Option<PathBuf>,
    pub cri_socket: Option<PathBuf>,
}

enum MetricSlot {
    Active(Arc<ActiveMetricProbe>),
    Failed(String),
}

struct EventRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Drop for EventRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread drops the probe (detaching it) when it ends.
            let _ = thread.join();
        }
    }
}

enum EventSlot {
    Running(EventRunner),
    Failed(String),
}

struct Running {
    config: Config,
    metric_probes: Vec<(ProbeConfig, MetricSlot)>,
    event_probes: Vec<(ProbeConfig, EventSlot)>,
    sink_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The agent; cheap to clone (all clones are the same agent).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    options: AgentOptions,
    podmap: Arc<PodMap>,
    /// Each visited netns's procfs files, open across scrapes.
    netns_files: NetnsFileCache,
    metrics: Arc<AgentMetrics>,
    self_registry: Registry,
    bus: EventBus,
    loaders: SharedLoaders,
    running: RwLock<Running>,
}

impl Agent {
    /// Load the config, map pods, start probes and sinks. Must run inside a tokio runtime.
    pub fn start(options: AgentOptions) -> Result<Agent, ConfigError> {
        let config = match &options.config_path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let podmap = Arc::new(PodMap::new(PodMapSources {
            node: options.node.clone(),
            inventory_dir: options.inventory_dir.clone(),
            cri_socket: options.cri_socket.clone(),
        }));
        Ok(Agent::with_config(options, config, podmap))
    }

    /// Start with an already checked config and pod map (tests build these directly).
    pub fn with_config(options: AgentOptions, config: Config, podmap: Arc<PodMap>) -> Agent {
        let metrics = Arc::new(AgentMetrics::new());
        let mut self_registry = Registry::with_prefix(options.metric_prefix.clone());
        metrics.register(&mut self_registry);
        let bus = EventBus::new(&options.node, podmap.clone(), metrics.clone());
        let agent = Agent {
            inner: Arc::new(Inner {
                options,
                podmap,
                netns_files: NetnsFileCache::default(),
                metrics,
                self_registry,
                bus,
                loaders: SharedLoaders::default(),
                running: RwLock::new(Running {
                    config: Config {
                        metric_probes: vec![],
                        event_probes: vec![],
                        sinks: vec![],
                        ..config.clone()
                    },
                    metric_probes: Vec::new(),
                    event_probes: Vec::new(),
                    sink_tasks: Vec::new(),
                }),
            }),
        };
        agent.apply(config, true);
        agent
    }

    pub fn podmap(&self) -> &Arc<PodMap> {
        &self.inner.podmap
    }

    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// The procfs files held open across scrapes (tests check a vanished pod leaves none).
    pub fn netns_files(&self) -> &NetnsFileCache {
        &self.inner.netns_files
    }

    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.inner.metrics
    }

    pub fn options(&self) -> &AgentOptions {
        &self.inner.options
    }

    pub fn config(&self) -> Config {
        self.read().config.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Running> {
        self.inner.running.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-read the config file; on error keep the running config and say why.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.inner.options.config_path else {
            return Ok(());
        };
        let config = Config::load(path)?;
        if self.read().config.address != config.address {
            tracing::warn!(
                "config: `address` changed to {}; it takes effect on restart",
                config.address
            );
        }
        self.apply(config, false);
        Ok(())
    }

    fn context(&self) -> ProbeContext {
        ProbeContext {
            node: self.inner.options.node.clone(),
            podmap: self.inner.podmap.clone(),
            shared: self.inner.loaders.clone(),
        }
    }

    /// Move to `config`, restarting only probes whose args changed and sinks if any changed.
    fn apply(&self, config: Config, first: bool) {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let ctx = self.context();
        let mut running = self
            .inner
            .running
            .write()
            .unwrap_or_else(|p| p.into_inner());

        let mut old_metrics = std::mem::take(&mut running.metric_probes);
        let mut metric_probes = Vec::new();
        for wanted in &config.metric_probes {
            let kept = old_metrics
                .iter()
                .position(|(c, _)| c == wanted)
                .map(|i| old_metrics.swap_remove(i));
            let slot = match kept {
                Some((_, slot)) => slot,
                None => start_metric_probe(wanted, &ctx),
            };
            metric_probes.push((wanted.clone(), slot));
        }
        running.metric_probes = metric_probes;

        let mut old_events = std::mem::take(&mut running.event_probes);
        let mut event_probes = Vec::new();
        for wanted in &config.event_probes {
            let kept = old_events
                .iter()
                .position(|(c, _)| c == wanted)
                .map(|i| old_events.swap_remove(i));
            let slot = match kept {
                Some((_, slot)) => slot,
                None => start_event_probe(wanted, &ctx, &self.inner.bus),
            };
            event_probes.push((wanted.clone(), slot));
        }
        running.event_probes = event_probes;
        // Removed probes stop here (EventRunner::drop joins its thread), and leave /status.
        drop(old_metrics);
        drop(old_events);

        if first || running.config.sinks != config.sinks {
            running.sink_tasks = self.start_sinks(&config.sinks);
        }
        running.config = config;
    }

    fn start_sinks(&self, sinks: &[SinkConfig]) -> Vec<tokio::task::JoinHandle<()>> {
        let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
        // Replacing the queues closes the old ones: old sink tasks flush and end.
        let receivers = self.inner.bus.set_sinks(&names, SINK_QUEUE);
        let mut tasks = Vec::new();
        for (config, receiver) in sinks.iter().zip(receivers) {
            match crate::sinks::spawn(config, receiver, self.inner.metrics.clone()) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::error!("{e}; events for it are counted as dropped"),
            }
        }
        tasks
    }

    /// Collect every metric probe and render OpenMetrics text.
    pub fn render_metrics(&self) -> String {
        let started = Instant::now();
        let (probes, labels, pod_limit) = {
            let running = self.read();
            let probes: Vec<Arc<ActiveMetricProbe>> = running
                .metric_probes
                .iter()
                .filter_map(|(_, slot)| match slot {
                    MetricSlot::Active(p) => Some(p.clone()),
                    MetricSlot::Failed(_) => None,
                })
                .collect();
            (
                probes,
                running.config.additional_labels.clone(),
                running.config.pod_limit,
            )
        };
        let output = scrape(
            &probes,
            &ScrapeSettings {
                podmap: &self.inner.podmap,
                netns_files: &self.inner.netns_files,
                additional_labels: &labels,
                pod_limit,
                metrics: &self.inner.metrics,
            },
        );
        let mut probe_registry = Registry::with_prefix(self.inner.options.metric_prefix.clone());
        probe_registry.register_collector(Box::new(ScrapeCollector(output)));
        self.inner
            .metrics
            .observe_scrape(started.elapsed().as_secs_f64());
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &probe_registry);
        let _ = encode_registry(&mut text, &self.inner.self_registry);
        let _ = encode_eof(&mut text);
        text
    }

    /// This node's network namespaces (node and mapped pods) read by the collector, in the
    /// engine's snapshot format (`docs/snapshot.md`). Blocking: reads every netns.
    pub fn snapshot(&self) -> Result<model::Snapshot, collect::CollectError> {
        let source = model::snapshot::SnapshotSource {
            kind: model::snapshot::SourceKind::Live,
            name: self.inner.options.node.clone(),
            collected_at: None,
        };
        let netns = self
            .inner
            .podmap
            .entities()
            .iter()
            .map(|e| model::NetnsLocation {
                id: match &e.owner {
                    Owner::Node => format!("node/{}", e.node),
                    Owner::Pod { namespace, name } => format!("pod/{namespace}/{name}"),
                },
                node: e.node.clone(),
                owner: match &e.owner {
                    Owner::Node => model::snapshot::NetnsOwner::Host,
                    Owner::Pod { namespace, name } => model::snapshot::NetnsOwner::Pod {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    },
                },
                path: e.path.clone(),
            })
            .collect();
        let inventory = model::Inventory {
            source,
            cluster: Default::default(),
            kubernetes: Default::default(),
            netns,
        };
        collect::collect_inventory(&inventory, &collect::NetnsFilter::All, &mut |_, _| {})
    }

    /// `/status`.
    pub fn status(&self) -> Status {
        let running = self.read();
        let metrics = running
            .metric_probes
            .iter()
            .map(|(c, slot)| match slot {
                MetricSlot::Active(p) => ProbeStatus::new(
                    &c.name,
                    ProbeState::Running,
                    p.last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                ),
                MetricSlot::Failed(e) => {
                    ProbeStatus::new(&c.name, ProbeState::Failed { error: e.clone() }, None)
                }
            })
            .collect();
        let event = running
            .event_probes
            .iter()
            .map(|(c, slot)| match slot {
                EventSlot::Running(r) => ProbeStatus::new(
                    &c.name,
                    ProbeState::Running,
                    r.last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                ),
                EventSlot::Failed(e) => {
                    ProbeStatus::new(&c.name, ProbeState::Failed { error: e.clone() }, None)
                }
            })
            .collect();
        Status::new(metrics, event, &self.inner.podmap, running.config.pod_limit)
    }
}

fn start_metric_probe(config: &ProbeConfig, ctx: &ProbeContext) -> MetricSlot {
    let factory = probes::spec(&config.name).and_then(|s| s.metrics);
    let Some(factory) = factory else {
        // The config checker only lets catalogue names through.
        return MetricSlot::Failed(format!("no metrics probe `{}`", config.name));
    };
    match factory(&config.args, ctx) {
        Ok(probe) => MetricSlot::Active(Arc::new(ActiveMetricProbe {
            probe,
            last_error: Mutex::new(None),
        })),
        Err(e) => {
            tracing::warn!("metrics probe {}: {e}", config.name);
            MetricSlot::Failed(e.to_string())
        }
    }
}

fn start_event_probe(config: &ProbeConfig, ctx: &ProbeContext, bus: &EventBus) -> EventSlot {
    let factory = probes::spec(&config.name).and_then(|s| s.event);
    let Some(factory) = factory else {
        return EventSlot::Failed(format!("no event probe `{}`", config.name));
    };
    match factory(&config.args, ctx) {
        Ok(probe) => match run_event_probe(probe, bus.clone()) {
            Ok(runner) => EventSlot::Running(runner),
            Err(e) => EventSlot::Failed(format!("cannot start its polling thread: {e}")),
        },
        Err(e) => {
            tracing::warn!("event probe {}: {e}", config.name);
            EventSlot::Failed(e.to_string())
        }
    }
}

/// Poll an event probe on its own thread until stopped.
fn run_event_probe(mut probe: Box<dyn EventProbe>, bus: EventBus) -> std::io::Result<EventRunner> {
    let stop = Arc::new(AtomicBool::new(false));
    let last_error = Arc::new(Mutex::new(None));
    let thread = {
        let stop = stop.clone();
        let last_error = last_error.clone();
        std::thread::Builder::new()
            .name(format!("probe-{}", probe.name()))
            .spawn(move || {
                let name = probe.name();
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = EventBatch::default();
                    let result = probe.poll(&mut batch);
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        result.err().map(|e| e.to_string());
                    bus.publish(name, batch);
                    std::thread::sleep(probe.poll_interval());
                }
            })?
    };
    Ok(EventRunner {
        stop,
        thread: Some(thread),
        last_error,
    })
}
