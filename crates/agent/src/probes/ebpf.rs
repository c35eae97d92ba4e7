//! Glue between the `bpf` crate's loaders and the probe framework, shared by the eBPF adapters
//! (`packetloss.rs`, `tcpreset.rs`, ...): args → `bpf::Options`, one loader shared by a probe's
//! metric and event halves, loader errors → `ProbeError` (so `/status` says why a probe is
//! `Failed`), histograms → Prometheus buckets, and event accounting (what the kernel's token
//! bucket sampled away and what a full ring buffer lost), and the netns identity check: maps key
//! a netns by inode and cookie, an entry whose inode the scrape holds under another cookie is a
//! dead namespace's, reported for no one and deleted from the map before it is read.
//!
//! Each adapter only says how its loader's values become samples and events; nothing here
//! knows a particular probe. Must not touch the kernel except through `bpf`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::events::{Event, EventBatch, FiveTuple, Protocol};
use crate::probe::{
    EventProbe, MapFill, MetricDesc, MetricProbe, Overhead, ProbeArgs, ProbeContext, ProbeError,
    ProbeHealth, ProbeSpec, ProgramStats, Scope,
};
use crate::registry::{HistogramValue, Samples, Value};

/// `args:` every eBPF probe accepts (KubeSkoop's `enableStack` spelling kept). Options a probe
/// does not use are accepted and ignored, so one args block can serve both halves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EbpfArgs {
    /// packetloss: attach the kernel stack to drop events.
    #[serde(alias = "EnableStack")]
    enable_stack: Option<bool>,
    /// Events per second and CPU the in-kernel token bucket lets through (0: no events).
    events_per_second: Option<u64>,
    /// Token-bucket capacity.
    event_burst: Option<u64>,
    /// Latency probes: samples slower than this become events.
    slow_threshold_ms: Option<u64>,
    /// Entries of each aggregation map (flow LRU, counters, histograms).
    max_entries: Option<u32>,
    /// flow: count the host netns too.
    include_host_netns: Option<bool>,
}

fn options(args: &ProbeArgs) -> Result<bpf::Options, ProbeError> {
    let args: EbpfArgs = if args.is_empty() {
        EbpfArgs::default()
    } else {
        args.decode()?
    };
    let defaults = bpf::Options::default();
    Ok(bpf::Options {
        capture_stack: args.enable_stack.unwrap_or(defaults.capture_stack),
        events_per_second: args.events_per_second.unwrap_or(defaults.events_per_second),
        event_burst: args.event_burst.unwrap_or(defaults.event_burst),
        slow_threshold: args
            .slow_threshold_ms
            .map_or(defaults.slow_threshold, Duration::from_millis),
        max_entries: args.max_entries.unwrap_or(defaults.max_entries),
        include_host_netns: args
            .include_host_netns
            .unwrap_or(defaults.include_host_netns),
        ..defaults
    })
}

/// A host that lacks what the probe needs is `Unsupported` (the probe shows `Failed` with the
/// reason); anything else is the loader's own wording.
pub(crate) fn probe_error(err: bpf::Error) -> ProbeError {
    if err.is_unsupported_here() {
        ProbeError::unsupported(err.probe(), &err)
    } else {
        ProbeError::other(err.probe(), &err)
    }
}

/// What an adapter implements for its `bpf` loader.
pub(crate) trait Loader: Sized + Send + 'static {
    /// The catalogue name (`softirq` for the netsoftirq loader).
    const NAME: &'static str;
    fn load(options: &bpf::Options) -> Result<Self, bpf::Error>;
    fn stats(&self) -> Result<bpf::ProbeStats, bpf::Error>;
    fn map_fills(&self) -> Result<Vec<bpf::MapFill>, bpf::Error>;
    fn program_runtimes(&self) -> Result<Vec<bpf::ProgramRuntime>, bpf::Error>;
}

/// The metric half: how in-kernel aggregates become samples.
pub(crate) trait MetricSource: Loader {
    const METRICS: &'static [MetricDesc];
    /// Whole-node data (softirq, block I/O) uses `Scope::Node` without `for_netns`; netns-keyed
    /// data goes through [`for_live_netns`].
    fn collect(&self, out: &mut Samples<'_>) -> Result<(), bpf::Error>;

    /// Deletes the entries of dead netns ([`Samples::is_dead_netns`]) from the probe's
    /// netns-keyed maps, so they do not fill them; [`forget_dead_netns`] writes it.
    fn forget_dead_netns(&mut self, _out: &Samples<'_>) -> Result<(), bpf::Error> {
        Ok(())
    }
}

/// Samples of the netns the kernel counted `netns` for; `None` when that namespace is dead (its
/// inode names a newer one now).
pub(crate) fn for_live_netns<'s>(
    out: &'s mut Samples<'_>,
    netns: bpf::Netns,
) -> Option<Samples<'s>> {
    out.for_live_netns(u64::from(netns.inode.0), netns.cookie.0)
}

/// [`MetricSource::forget_dead_netns`] for a loader with netns-keyed maps (`forget_netns`).
macro_rules! forget_dead_netns {
    () => {
        fn forget_dead_netns(
            &mut self,
            out: &$crate::registry::Samples<'_>,
        ) -> Result<(), bpf::Error> {
            self.forget_netns(|netns| out.is_dead_netns(u64::from(netns.inode.0), netns.cookie.0))
                .map(drop)
        }
    };
}
pub(crate) use forget_dead_netns;

/// The event half: how sampled kernel events become agent events.
pub(crate) trait EventSource: Loader {
    fn drain(&mut self, out: &mut EventBatch);
}

type Shared<P> = Arc<Mutex<P>>;

fn shared<P: Loader>(args: &ProbeArgs, ctx: &ProbeContext) -> Result<Shared<P>, ProbeError> {
    let options = options(args)?;
    ctx.shared.get_or_load(P::NAME, || {
        P::load(&options).map(Mutex::new).map_err(probe_error)
    })
}

fn lock<P>(loader: &Mutex<P>) -> MutexGuard<'_, P> {
    // A panic while holding the lock leaves counters readable: maps are the kernel's.
    loader
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn health<P: Loader>(loader: &Mutex<P>) -> ProbeHealth {
    let loader = lock(loader);
    let maps = loader
        .map_fills()
        .unwrap_or_default()
        .into_iter()
        .map(|fill| MapFill {
            map: fill.map.to_string(),
            entries: u64::from(fill.entries),
            capacity: u64::from(fill.capacity),
        })
        .collect();
    // Zero unless run-time accounting is on (kernel.bpf_stats_enabled=1).
    let programs = loader
        .program_runtimes()
        .unwrap_or_default()
        .into_iter()
        .map(|run| ProgramStats {
            program: run.program.to_string(),
            run_count: run.run_count,
            run_time_ns: run.run_time.as_nanos() as u64,
        })
        .collect();
    ProbeHealth { programs, maps }
}

struct EbpfMetrics<P> {
    loader: Shared<P>,
}

impl<P: MetricSource> MetricProbe for EbpfMetrics<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn scope(&self) -> Scope {
        // Maps are keyed by netns (or node-wide): read once per scrape.
        Scope::Node
    }

    fn metrics(&self) -> &'static [MetricDesc] {
        P::METRICS
    }

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let mut loader = lock(&self.loader);
        loader.forget_dead_netns(out).map_err(probe_error)?;
        loader.collect(out).map_err(probe_error)
    }

    fn health(&self) -> ProbeHealth {
        health(&self.loader)
    }
}

struct EbpfEvents<P> {
    loader: Shared<P>,
    /// Kernel counters are cumulative; the bus wants what happened since the last poll.
    seen: bpf::ProbeStats,
}

impl<P: EventSource> EventProbe for EbpfEvents<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn poll(&mut self, out: &mut EventBatch) -> Result<(), ProbeError> {
        let mut loader = lock(&self.loader);
        loader.drain(out);
        let stats = loader.stats().map_err(probe_error)?;
        out.lost_in_kernel(
            stats
                .events_ringbuf_full
                .saturating_sub(self.seen.events_ringbuf_full),
        );
        out.sampled_away(
            stats
                .events_rate_limited
                .saturating_sub(self.seen.events_rate_limited),
        );
        self.seen = stats;
        Ok(())
    }

    fn health(&self) -> ProbeHealth {
        health(&self.loader)
    }
}

/// `MetricFactory` for any eBPF adapter.
pub(crate) fn create_metrics<P: MetricSource>(
    args: &ProbeArgs,
    ctx: &ProbeContext,
) -> Result<Box<dyn MetricProbe>, ProbeError> {
    Ok(Box::new(EbpfMetrics::<P> {
        loader: shared(args, ctx)?,
    }))
}

/// `EventFactory` for any eBPF adapter. Sampling done before this half existed (by the
/// metric half's loader) is not reported as this half's loss.
pub(crate) fn create_events<P: EventSource>(
    args: &ProbeArgs,
    ctx: &ProbeContext,
) -> Result<Box<dyn EventProbe>, ProbeError> {
    let loader = shared::<P>(args, ctx)?;
    let seen = lock(&loader).stats().map_err(probe_error)?;
    Ok(Box::new(EbpfEvents::<P> { loader, seen }))
}

/// Catalogue entry of an eBPF probe with a metric and an event half.
pub(crate) const fn spec<P: MetricSource + EventSource>(
    summary: &'static str,
    overhead: Overhead,
) -> ProbeSpec {
    ProbeSpec {
        name: P::NAME,
        summary,
        overhead,
        metrics: Some(create_metrics::<P>),
        event: Some(create_events::<P>),
    }
}

/// Catalogue entry of an eBPF probe with only a metric half.
pub(crate) const fn metrics_spec<P: MetricSource>(
    summary: &'static str,
    overhead: Overhead,
) -> ProbeSpec {
    ProbeSpec {
        name: P::NAME,
        summary,
        overhead,
        metrics: Some(create_metrics::<P>),
        event: None,
    }
}

/// A histogram metric of an eBPF probe (seconds, log2 buckets).
pub(crate) const fn histogram(
    probe: &'static str,
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> MetricDesc {
    MetricDesc {
        probe,
        name,
        help,
        kind: crate::probe::MetricType::Histogram,
        labels,
    }
}

/// Buckets exported: upper bounds 2^(FIRST+1) ns (~2 µs) to 2^(LAST+1) ns (~17 s), then +Inf.
/// The kernel keeps 64 log2 slots; faster samples fold into the first bucket, slower into +Inf.
const FIRST_SLOT: usize = 10;
const LAST_SLOT: usize = 33;

pub(crate) fn histogram_value(histogram: &bpf::Log2Histogram) -> Value {
    let mut buckets: Vec<(f64, u64)> = (FIRST_SLOT..=LAST_SLOT)
        .map(|slot| (bpf::Log2Histogram::upper_bound(slot).as_secs_f64(), 0))
        .collect();
    buckets.push((f64::INFINITY, 0));
    for (slot, &count) in histogram.buckets.iter().enumerate() {
        let index = slot.saturating_sub(FIRST_SLOT).min(buckets.len() - 1);
        buckets[index].1 += count;
    }
    Value::Histogram(HistogramValue {
        buckets,
        sum: histogram.sum_ns as f64 / 1e9,
    })
}

pub(crate) fn protocol(protocol: bpf::L4Protocol) -> Protocol {
    match protocol {
        bpf::L4Protocol::Tcp => Protocol::Tcp,
        bpf::L4Protocol::Udp => Protocol::Udp,
        bpf::L4Protocol::Icmp => Protocol::Icmp,
        bpf::L4Protocol::IcmpV6 => Protocol::Other(58),
        bpf::L4Protocol::Unknown => Protocol::Other(0),
        bpf::L4Protocol::Other(number) => Protocol::Other(number),
    }
}

pub(crate) fn five_tuple(tuple: bpf::Tuple) -> FiveTuple {
    FiveTuple {
        protocol: protocol(tuple.protocol),
        src: tuple.src.ip(),
        sport: tuple.src.port(),
        dst: tuple.dst.ip(),
        dport: tuple.dst.port(),
    }
}

/// An event stamped with the kernel's time of the sample rather than the poll's.
pub(crate) fn kernel_event(
    kind: crate::events::EventType,
    netns: bpf::NetnsInode,
    time: SystemTime,
    tuple: Option<bpf::Tuple>,
    message: String,
) -> Event {
    let mut event = Event::new(kind, u64::from(netns.0), message);
    if let Ok(since_epoch) = time.duration_since(UNIX_EPOCH) {
        event.timestamp = since_epoch.as_nanos() as u64;
    }
    if let Some(tuple) = tuple {
        event = event.with_tuple(five_tuple(tuple));
    }
    event
}

/// Implements [`Loader`] for a `bpf` loader type by forwarding to its inherent methods.
macro_rules! forward_loader {
    ($loader:ty, $name:literal) => {
        impl $crate::probes::ebpf::Loader for $loader {
            const NAME: &'static str = $name;
            fn load(options: &bpf::Options) -> Result<Self, bpf::Error> {
                <$loader>::load(options)
            }
            fn stats(&self) -> Result<bpf::ProbeStats, bpf::Error> {
                <$loader>::stats(self)
            }
            fn map_fills(&self) -> Result<Vec<bpf::MapFill>, bpf::Error> {
                <$loader>::map_fills(self)
            }
            fn program_runtimes(&self) -> Result<Vec<bpf::ProgramRuntime>, bpf::Error> {
                <$loader>::program_runtimes(self)
            }
        }
    };
}
pub(crate) use forward_loader;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_folds_the_kernel_slots_into_exported_buckets() {
        let mut kernel = bpf::Log2Histogram::default();
        kernel.buckets[3] = 2; // 8 ns: below the first bucket
        kernel.buckets[20] = 5; // ~1 ms
        kernel.buckets[40] = 1; // ~18 min: +Inf
        kernel.sum_ns = 3_000_000_000;
        let Value::Histogram(value) = histogram_value(&kernel) else {
            panic!("histogram")
        };
        assert_eq!(value.buckets.len(), LAST_SLOT - FIRST_SLOT + 2);
        assert_eq!(value.buckets[0], (2048e-9, 2));
        assert_eq!(
            value.buckets[20 - FIRST_SLOT],
            ((1u64 << 21) as f64 * 1e-9, 5)
        );
        assert_eq!(value.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(value.sum, 3.0);
    }

    #[test]
    fn unknown_arg_is_named() {
        let map: serde_yaml_ng::Mapping = serde_yaml_ng::from_str("enableStacks: true").unwrap();
        let err = options(&ProbeArgs::new("packetloss", map)).unwrap_err();
        assert!(err.to_string().contains("enableStacks"), "{err}");
    }

    #[test]
    fn kubeskoop_enable_stack_arg_is_understood() {
        let map: serde_yaml_ng::Mapping =
            serde_yaml_ng::from_str("enableStack: true\nslowThresholdMs: 5").unwrap();
        let options = options(&ProbeArgs::new("packetloss", map)).unwrap();
        assert!(options.capture_stack);
        assert_eq!(options.slow_threshold, Duration::from_millis(5));
    }

    /// A named netns for the real-kernel test below, removed even if the test fails.
    struct TestNetns(String);

    impl TestNetns {
        fn new() -> Self {
            let name = format!("nsbpf-agent-{}", std::process::id());
            run(&format!(
                "ip netns add {name} && ip -n {name} link set lo up"
            ));
            TestNetns(name)
        }

        fn inode(&self) -> u64 {
            crate::podmap::netns_inode(std::path::Path::new(&format!("/run/netns/{}", self.0)))
                .unwrap()
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }

    fn run(command: &str) {
        let status = std::process::Command::new("bash")
            .args(["-c", command])
            .status()
            .unwrap();
        assert!(status.success(), "{command}");
    }

    /// Real kernel, root: both halves share one loaded program; drops caused in our netns
    /// show up as `packetloss_total{reason,protocol}` on that netns's entity, and the event
    /// half reports what the in-kernel token bucket sampled away.
    #[test]
    fn packetloss_halves_share_one_loader_and_account_for_sampled_events() {
        use crate::registry::{EntityLabels, ScrapeOutput};

        let ns = TestNetns::new();
        let ctx = ProbeContext {
            node: "n1".into(),
            podmap: Arc::new(crate::podmap::PodMap::host_only("n1")),
            shared: crate::probe::SharedLoaders::default(),
        };
        let map: serde_yaml_ng::Mapping =
            serde_yaml_ng::from_str("eventsPerSecond: 1\neventBurst: 1").unwrap();
        let args = ProbeArgs::new("packetloss", map);
        let metrics =
            create_metrics::<bpf::packetloss::PacketLoss>(&args, &ctx).expect("loads as root");
        let mut events = create_events::<bpf::packetloss::PacketLoss>(&args, &ctx).unwrap();

        // bash's /dev/udp: 20 datagrams to a closed port, each dropped with NO_SOCKET.
        run(&format!(
            "ip netns exec {} bash -c 'for i in $(seq 20); do echo x > /dev/udp/127.0.0.1/9; done'",
            ns.0
        ));

        let resolve = |inode: u64| {
            Arc::new(EntityLabels {
                netns: inode,
                labels: vec![("netns".into(), inode.to_string())],
            })
        };
        let mut out = ScrapeOutput::default();
        metrics
            .collect(&mut Samples::new(&mut out, resolve(0), &resolve))
            .unwrap();
        let inode = ns.inode().to_string();
        let labels = [
            ("netns", inode.as_str()),
            ("reason", "NO_SOCKET"),
            ("protocol", "udp"),
        ];
        assert_eq!(
            out.value("packetloss_total", &labels),
            Some(&Value::Counter(20))
        );

        let mut batch = EventBatch::default();
        events.poll(&mut batch).unwrap();
        let ours = batch
            .events
            .iter()
            .filter(|e| e.netns == ns.inode())
            .count() as u64;
        assert!(ours <= 2, "burst 1 and 1/s per CPU: {ours}");
        assert!(
            ours + batch.sampled_away >= 20,
            "every drop is an event or counted as sampled away"
        );
        assert!(batch.events.iter().all(|e| e.reason.is_some()));
        let health = metrics.health();
        assert_eq!(health.maps[0].map, "drop_counts");
        assert!(health.maps[0].entries >= 1);
    }
}
