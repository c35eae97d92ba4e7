//! The agent's own health as metrics (`<prefix>_agent_*`): events received, lost in the kernel,
//! sampled away and dropped at a sink; sink deliveries and failures; scrape duration and probe
//! collection errors. eBPF run time / count and map fill come from probes at scrape time
//! (see `registry`), since only the probe can read them.
//!
//! Must not read anything itself: it only counts what others report.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type ProbeLabel = [(&'static str, String); 1];

fn probe_label(probe: &str) -> ProbeLabel {
    [("probe", probe.to_string())]
}

fn sink_label(sink: &str) -> ProbeLabel {
    [("sink", sink.to_string())]
}

/// Counters shared by the bus, the sinks and the scrape path.
#[derive(Debug)]
pub struct AgentMetrics {
    events_received: Family<ProbeLabel, Counter>,
    events_lost_in_kernel: Family<ProbeLabel, Counter>,
    events_sampled_away: Family<ProbeLabel, Counter>,
    events_dropped: Family<ProbeLabel, Counter>,
    sink_delivered: Family<ProbeLabel, Counter>,
    sink_failed: Family<ProbeLabel, Counter>,
    probe_errors: Family<ProbeLabel, Counter>,
    scrape_duration: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        AgentMetrics {
            events_received: Family::default(),
            events_lost_in_kernel: Family::default(),
            events_sampled_away: Family::default(),
            events_dropped: Family::default(),
            sink_delivered: Family::default(),
            sink_failed: Family::default(),
            probe_errors: Family::default(),
            // 1 ms … ~4 s: the SPEC target for 110 pods is 20 ms.
            scrape_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 4.0,
            ]),
        }
    }

    /// Register every family under `<registry prefix>_agent_…`.
    pub fn register(&self, registry: &mut Registry) {
        let agent = registry.sub_registry_with_prefix("agent");
        agent.register(
            "events_received",
            "Events handed to the agent by event probes",
            self.events_received.clone(),
        );
        agent.register(
            "events_lost_in_kernel",
            "Events the kernel could not hand over (ring buffer full)",
            self.events_lost_in_kernel.clone(),
        );
        agent.register(
            "events_sampled_away",
            "Events a probe deliberately did not emit (rate limit); still counted in its metrics",
            self.events_sampled_away.clone(),
        );
        agent.register(
            "events_dropped",
            "Events dropped because a sink's bounded queue was full",
            self.events_dropped.clone(),
        );
        agent.register(
            "sink_delivered",
            "Events a sink delivered",
            self.sink_delivered.clone(),
        );
        agent.register(
            "sink_failed",
            "Events a sink gave up on after its retries (or dropped from its bounded buffer)",
            self.sink_failed.clone(),
        );
        agent.register(
            "probe_errors",
            "Scrapes in which a metric probe failed to collect",
            self.probe_errors.clone(),
        );
        agent.register(
            "scrape_duration_seconds",
            "Time to collect and render /metrics",
            self.scrape_duration.clone(),
        );
    }

    pub fn events_received(&self, probe: &str, n: u64) {
        self.events_received
            .get_or_create(&probe_label(probe))
            .inc_by(n);
    }

    pub fn events_lost_in_kernel(&self, probe: &str, n: u64) {
        self.events_lost_in_kernel
            .get_or_create(&probe_label(probe))
            .inc_by(n);
    }

    pub fn events_sampled_away(&self, probe: &str, n: u64) {
        self.events_sampled_away
            .get_or_create(&probe_label(probe))
            .inc_by(n);
    }

    pub fn events_dropped(&self, sink: &str, n: u64) {
        self.events_dropped
            .get_or_create(&sink_label(sink))
            .inc_by(n);
    }

    pub fn sink_delivered(&self, sink: &str, n: u64) {
        self.sink_delivered
            .get_or_create(&sink_label(sink))
            .inc_by(n);
    }

    pub fn sink_failed(&self, sink: &str, n: u64) {
        self.sink_failed.get_or_create(&sink_label(sink)).inc_by(n);
    }

    pub fn probe_error(&self, probe: &str) {
        self.probe_errors.get_or_create(&probe_label(probe)).inc();
    }

    pub fn observe_scrape(&self, seconds: f64) {
        self.scrape_duration.observe(seconds);
    }

    pub fn received_for_probe(&self, probe: &str) -> u64 {
        self.events_received
            .get_or_create(&probe_label(probe))
            .get()
    }

    pub fn lost_in_kernel_for_probe(&self, probe: &str) -> u64 {
        self.events_lost_in_kernel
            .get_or_create(&probe_label(probe))
            .get()
    }

    pub fn dropped_for_sink(&self, sink: &str) -> u64 {
        self.events_dropped.get_or_create(&sink_label(sink)).get()
    }

    pub fn delivered_for_sink(&self, sink: &str) -> u64 {
        self.sink_delivered.get_or_create(&sink_label(sink)).get()
    }

    pub fn failed_for_sink(&self, sink: &str) -> u64 {
        self.sink_failed.get_or_create(&sink_label(sink)).get()
    }
}
