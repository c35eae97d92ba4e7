//! `/status`: KubeSkoop's shape (`available_probes` / `inuse_probes`, each with `metrics` and
//! `event`; in-use entries `{name, state}`), with empty lists as `[]` (not `null`), a failed
//! probe's state `Failed` plus `error` (KubeSkoop printed `""`), a running probe's last scrape
//! error if any, and a `pods` section (mapping sources, pod limit, what was cut).

use serde::Serialize;

use std::collections::BTreeMap;

use crate::podmap::{CriState, PodMap, Source};
use crate::probe::{ProbeKind, ProbeState};
use crate::probes;

#[derive(Debug, Serialize)]
pub struct ProbeStatus {
    pub name: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ProbeStatus {
    pub fn new(name: &str, state: ProbeState, last_error: Option<String>) -> ProbeStatus {
        let (state, error) = match state {
            ProbeState::Running => ("Running", None),
            ProbeState::Failed { error } => ("Failed", Some(error)),
        };
        ProbeStatus {
            name: name.to_string(),
            state,
            error,
            last_error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Available {
    pub metrics: Vec<&'static str>,
    pub event: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct InUse {
    pub metrics: Vec<ProbeStatus>,
    pub event: Vec<ProbeStatus>,
}

#[derive(Debug, Serialize)]
pub struct Pods {
    pub mapped: usize,
    pub limit: usize,
    /// Pods beyond the limit (namespace/name): no per-pod series for them.
    pub cut: Vec<String>,
    /// Which source mapped each pod (namespace/name → `inventory`, `cri`, `proc_cgroup`, or
    /// `proc_hostname` when only the process's HOSTNAME named it).
    pub sources: BTreeMap<String, Source>,
    pub cri: CriState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_dir: Option<String>,
    /// Inventory files, CRI sandboxes and netns that could not be read.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub available_probes: Available,
    pub inuse_probes: InUse,
    pub pods: Pods,
}

impl Status {
    pub fn new(
        metrics: Vec<ProbeStatus>,
        event: Vec<ProbeStatus>,
        podmap: &PodMap,
        limit: usize,
    ) -> Status {
        let pod_entities: Vec<_> = podmap
            .entities()
            .into_iter()
            .filter(|e| !e.is_host())
            .collect();
        let pods: Vec<String> = pod_entities
            .iter()
            .map(|e| format!("{}/{}", e.namespace(), e.pod()))
            .collect();
        Status {
            available_probes: Available {
                metrics: probes::names(ProbeKind::Metrics),
                event: probes::names(ProbeKind::Event),
            },
            inuse_probes: InUse { metrics, event },
            pods: Pods {
                mapped: pods.len(),
                limit,
                cut: pods.iter().skip(limit).cloned().collect(),
                sources: pods
                    .iter()
                    .cloned()
                    .zip(pod_entities.iter().map(|e| e.source))
                    .collect(),
                cri: podmap.cri(),
                inventory_dir: podmap.inventory_dir().map(|p| p.display().to_string()),
                problems: podmap.problems(),
            },
        }
    }
}
