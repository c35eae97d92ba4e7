//! The metrics side of a scrape: [`Samples`] (what probes write into), the per-scrape
//! [`ScrapeOutput`] it fills, and its OpenMetrics encoding through prometheus-client.
//!
//! Every series carries the standard labels `k8s_node`, `k8s_namespace`, `k8s_pod` (empty for
//! the host netns), then the config's `additionalLabels`, then the metric's own labels. A series
//! written twice with the same labels is summed, never emitted twice (KubeSkoop's fd probe
//! emitted a duplicate and turned every `/metrics` into HTTP 500).
//!
//! Must not read the kernel: probes do, through `Samples`.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType as PromType;

use crate::netns_files::NetnsFileReader;
use crate::probe::{MetricDesc, MetricType, ProbeError};

/// The label names and values of one entity (node or pod), standard + additional labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityLabels {
    /// Netns inode: identifies the entity within one scrape.
    pub netns: u64,
    pub labels: Vec<(String, String)>,
}

/// A histogram read from a probe: per-bucket (not cumulative) counts with upper bounds in
/// ascending order, the last one `f64::INFINITY`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
}

impl HistogramValue {
    fn merge(&mut self, other: &HistogramValue) {
        if self.buckets.len() != other.buckets.len() {
            // Different layouts cannot be added bucket by bucket; keep the first (a probe
            // bug, not a runtime condition).
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        self.sum += other.sum;
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, c)| c).sum()
    }
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(HistogramValue),
}

impl Value {
    fn merge(&mut self, other: Value) {
        match (self, other) {
            (Value::Counter(a), Value::Counter(b)) => *a += b,
            (Value::Gauge(a), Value::Gauge(b)) => *a += b,
            (Value::Histogram(a), Value::Histogram(b)) => a.merge(&b),
            // A desc has one type, so mismatches cannot come from a correct probe.
            _ => {}
        }
    }
}

#[derive(Debug)]
struct Series {
    entity: Arc<EntityLabels>,
    extra: Vec<String>,
    value: Value,
}

#[derive(Debug)]
struct FamilyOut {
    desc: &'static MetricDesc,
    series: Vec<Series>,
    index: HashMap<(u64, Vec<String>), usize>,
}

/// Everything one scrape collected, in first-seen order of metrics.
#[derive(Debug, Default)]
pub struct ScrapeOutput {
    families: Vec<FamilyOut>,
    /// Keyed by the desc's address: descs are `&'static`, so the address identifies one.
    index: HashMap<usize, usize>,
}

impl ScrapeOutput {
    /// Move another output's series after this one's (a scrape thread's share of the netns).
    pub(crate) fn append(&mut self, other: ScrapeOutput) {
        for family in other.families {
            for series in family.series {
                self.add_series(family.desc, series);
            }
        }
    }

    /// Declare a metric so its HELP/TYPE appear even without series.
    pub fn declare(&mut self, desc: &'static MetricDesc) {
        self.family(desc);
    }

    fn family(&mut self, desc: &'static MetricDesc) -> &mut FamilyOut {
        let key = desc as *const MetricDesc as usize;
        let idx = *self.index.entry(key).or_insert_with(|| {
            self.families.push(FamilyOut {
                desc,
                series: Vec::new(),
                index: HashMap::new(),
            });
            self.families.len() - 1
        });
        &mut self.families[idx]
    }

    fn add(
        &mut self,
        desc: &'static MetricDesc,
        entity: &Arc<EntityLabels>,
        extra: &[&str],
        value: Value,
    ) {
        let series = Series {
            entity: entity.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            value,
        };
        self.add_series(desc, series);
    }

    fn add_series(&mut self, desc: &'static MetricDesc, series: Series) {
        let family = self.family(desc);
        let key = (series.entity.netns, series.extra);
        match family.index.get(&key) {
            Some(&i) => family.series[i].value.merge(series.value),
            None => {
                family.index.insert(key.clone(), family.series.len());
                family.series.push(Series {
                    entity: series.entity,
                    extra: key.1,
                    value: series.value,
                });
            }
        }
    }

    /// The value of one series, for tests and benchmarks: `labels` must match every label.
    pub fn value(&self, family_suffix: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        self.families
            .iter()
            .filter(|f| format!("{}_{}", f.desc.probe, f.desc.name) == family_suffix)
            .flat_map(|f| f.series.iter().map(move |s| (f.desc, s)))
            .find(|(desc, s)| {
                labels.iter().all(|(k, v)| {
                    s.entity.labels.iter().any(|(ek, ev)| ek == k && ev == v)
                        || desc
                            .labels
                            .iter()
                            .zip(&s.extra)
                            .any(|(ek, ev)| ek == k && ev == v)
                })
            })
            .map(|(_, s)| &s.value)
    }

    /// Number of series in the output.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }
}

/// Where a probe writes its samples; labels come from the entity being collected.
pub struct Samples<'a> {
    out: &'a mut ScrapeOutput,
    entity: Arc<EntityLabels>,
    /// For node-scope probes attributing samples to a netns by inode.
    resolve: &'a dyn Fn(u64) -> Arc<EntityLabels>,
    /// The netns being visited (per-netns probes); `None`: files are read where the thread is.
    visit: Option<&'a mut (dyn NetnsFileReader + 'a)>,
    /// Cookie of each netns the scrape holds open, by inode (see [`Self::is_dead_netns`]).
    cookies: Option<&'a NetnsCookies>,
}

/// The cookie (`SO_NETNS_COOKIE`, never reused) of each netns a scrape visited, by inode. While
/// the scrape holds those netns open their inodes cannot name another namespace.
pub type NetnsCookies = HashMap<u64, u64>;

impl<'a> Samples<'a> {
    pub fn new(
        out: &'a mut ScrapeOutput,
        entity: Arc<EntityLabels>,
        resolve: &'a dyn Fn(u64) -> Arc<EntityLabels>,
    ) -> Samples<'a> {
        Samples {
            out,
            entity,
            resolve,
            visit: None,
            cookies: None,
        }
    }

    /// Lets [`Self::is_dead_netns`] tell a netns from a dead one that had its inode.
    #[must_use]
    pub fn with_netns_cookies(mut self, cookies: &'a NetnsCookies) -> Samples<'a> {
        self.cookies = Some(cookies);
        self
    }

    /// Samples of a per-netns probe during the visit of one netns.
    pub(crate) fn in_netns(
        out: &'a mut ScrapeOutput,
        entity: Arc<EntityLabels>,
        resolve: &'a dyn Fn(u64) -> Arc<EntityLabels>,
        visit: &'a mut (dyn NetnsFileReader + 'a),
    ) -> Samples<'a> {
        Samples {
            out,
            entity,
            resolve,
            visit: Some(visit),
            cookies: None,
        }
    }

    /// A file of the netns being visited (`path` absolute: `/proc/thread-self/net/…`,
    /// `/proc/sys/net/…`), read once per visit however many probes ask, from a file kept open
    /// across scrapes (see `netns_files`). Outside a visit: read where the thread is.
    pub fn netns_file(&mut self, probe: &str, path: &'static str) -> Result<Arc<str>, ProbeError> {
        match &mut self.visit {
            Some(visit) => visit.read(probe, path),
            None => std::fs::read_to_string(path)
                .map(Arc::from)
                .map_err(|e| ProbeError::read(probe, path, e)),
        }
    }

    /// Inode of the netns the samples are attributed to.
    pub fn netns(&self) -> u64 {
        self.entity.netns
    }

    /// A monotonic counter with no labels besides the entity's.
    pub fn counter(&mut self, desc: &'static MetricDesc, value: u64) {
        self.add(desc, &[], Value::Counter(value));
    }

    /// One counter per desc, in order: a probe's parsed row against its metric table.
    pub fn counters(
        &mut self,
        descs: &'static [MetricDesc],
        values: impl IntoIterator<Item = u64>,
    ) {
        for (desc, value) in descs.iter().zip(values) {
            self.counter(desc, value);
        }
    }

    /// A gauge with no labels besides the entity's.
    pub fn gauge(&mut self, desc: &'static MetricDesc, value: f64) {
        self.add(desc, &[], Value::Gauge(value));
    }

    /// Any value with the metric's own label values (in `desc.labels` order).
    pub fn add(&mut self, desc: &'static MetricDesc, extra: &[&str], value: Value) {
        debug_assert_eq!(
            extra.len(),
            desc.labels.len(),
            "{}_{}",
            desc.probe,
            desc.name
        );
        self.out.add(desc, &self.entity, extra, value);
    }

    /// Samples attributed to the netns with this inode (node-scope probes reading maps keyed
    /// by netns). A netns that maps to no pod (or was cut by the pod limit) counts as the node.
    pub fn for_netns(&mut self, netns_inode: u64) -> Samples<'_> {
        let entity = (self.resolve)(netns_inode);
        Samples {
            out: self.out,
            entity,
            resolve: self.resolve,
            visit: None,
            cookies: self.cookies,
        }
    }

    /// Whether the netns that had this inode and cookie is dead: the scrape holds the netns
    /// with this inode now and its cookie is another (the kernel gave a freed namespace's inode
    /// to a new one). Unknown inodes (unmapped netns, kernels without cookies) are not dead.
    pub fn is_dead_netns(&self, inode: u64, cookie: u64) -> bool {
        self.cookies
            .and_then(|cookies| cookies.get(&inode))
            .is_some_and(|&live| live != cookie)
    }

    /// [`Self::for_netns`] for samples the kernel keyed by inode and cookie; `None` when that
    /// netns is dead ([`Self::is_dead_netns`]): its counts belong to no one.
    pub fn for_live_netns(&mut self, inode: u64, cookie: u64) -> Option<Samples<'_>> {
        if self.is_dead_netns(inode, cookie) {
            return None;
        }
        Some(self.for_netns(inode))
    }
}

struct SeriesLabels<'a> {
    entity: &'a EntityLabels,
    names: &'static [&'static str],
    values: &'a [String],
}

impl EncodeLabelSet for SeriesLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let pairs: Vec<(&str, &str)> = self
            .entity
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(
                self.names
                    .iter()
                    .copied()
                    .zip(self.values.iter().map(String::as_str)),
            )
            .collect();
        pairs.as_slice().encode(encoder)
    }
}

/// Encodes one [`ScrapeOutput`] as a prometheus-client collector.
#[derive(Debug)]
pub struct ScrapeCollector(pub ScrapeOutput);

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0.families {
            let desc = family.desc;
            let name = if desc.kind == MetricType::Counter && desc.name == "total" {
                desc.probe.to_string()
            } else {
                format!("{}_{}", desc.probe, desc.name)
            };
            let kind = match desc.kind {
                MetricType::Counter => PromType::Counter,
                MetricType::Gauge => PromType::Gauge,
                MetricType::Histogram => PromType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(&name, desc.help, None, kind)?;
            for series in &family.series {
                let labels = SeriesLabels {
                    entity: &series.entity,
                    names: desc.labels,
                    values: &series.extra,
                };
                let mut one = metric.encode_family(&labels)?;
                match &series.value {
                    Value::Counter(v) => one.encode_counter::<NoLabelSet, u64, f64>(v, None)?,
                    Value::Gauge(v) => one.encode_gauge(v)?,
                    Value::Histogram(h) => {
                        one.encode_histogram::<NoLabelSet>(h.sum, h.count(), &h.buckets, None)?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    static OPENS: MetricDesc = MetricDesc {
        probe: "tcp",
        name: "activeopens",
        help: "Active TCP opens",
        kind: MetricType::Counter,
        labels: &[],
    };
    static DROPS: MetricDesc = MetricDesc {
        probe: "packetloss",
        name: "total",
        help: "Packets dropped",
        kind: MetricType::Counter,
        labels: &["reason"],
    };
    static LATENCY: MetricDesc = MetricDesc {
        probe: "netiftxlat",
        name: "qdisc_seconds",
        help: "Time in qdisc",
        kind: MetricType::Histogram,
        labels: &[],
    };

    fn entity(netns: u64, pod: &str) -> Arc<EntityLabels> {
        Arc::new(EntityLabels {
            netns,
            labels: vec![
                ("k8s_node".into(), "n1".into()),
                (
                    "k8s_namespace".into(),
                    if pod.is_empty() { "" } else { "default" }.into(),
                ),
                ("k8s_pod".into(), pod.into()),
            ],
        })
    }

    #[test]
    fn duplicate_series_are_summed_and_counters_get_total() {
        let host = entity(1, "");
        let pod = entity(2, "web-0");
        let resolve = {
            let pod = pod.clone();
            let host = host.clone();
            move |inode: u64| {
                if inode == 2 {
                    pod.clone()
                } else {
                    host.clone()
                }
            }
        };
        let mut out = ScrapeOutput::default();
        {
            let mut s = Samples::new(&mut out, host.clone(), &resolve);
            s.counter(&OPENS, 3);
            s.counter(&OPENS, 4);
            s.for_netns(2)
                .add(&DROPS, &["NETFILTER_DROP"], Value::Counter(5));
            s.for_netns(99)
                .add(&DROPS, &["NETFILTER_DROP"], Value::Counter(1));
            s.add(
                &LATENCY,
                &[],
                Value::Histogram(HistogramValue {
                    buckets: vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 0)],
                    sum: 0.012,
                }),
            );
        }
        let mut registry = Registry::with_prefix("kubeskoop");
        registry.register_collector(Box::new(ScrapeCollector(out)));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains(
            "kubeskoop_tcp_activeopens_total{k8s_node=\"n1\",k8s_namespace=\"\",k8s_pod=\"\"} 7\n"
        ), "{text}");
        assert!(text.contains("kubeskoop_packetloss_total{k8s_node=\"n1\",k8s_namespace=\"default\",k8s_pod=\"web-0\",reason=\"NETFILTER_DROP\"} 5\n"), "{text}");
        assert!(text.contains("kubeskoop_packetloss_total{k8s_node=\"n1\",k8s_namespace=\"\",k8s_pod=\"\",reason=\"NETFILTER_DROP\"} 1\n"), "{text}");
        assert!(text.contains("kubeskoop_netiftxlat_qdisc_seconds_bucket{le=\"0.01\",k8s_node=\"n1\",k8s_namespace=\"\",k8s_pod=\"\"} 3\n"), "{text}");
        assert!(
            text.contains("# TYPE kubeskoop_tcp_activeopens counter"),
            "{text}"
        );
    }
}
