//! A running lab read and diagnosed as a live cluster: the collector reads the lab's namespaces
//! (for a question, only those on the nodes it involves — the `scope` submodule picks them) and
//! the engine diagnoses what was read. What `collect --lab`, `diagnose --lab`, `demo` and the
//! tests share.
//!
//! This module only reads the lab, through the collector: it must not change it. It prints
//! nothing; progress goes to the caller's callback and the result says what was read.

mod scope;

use std::time::{Duration, Instant};

use collect::{CollectError, NetnsFilter, Progress};
use diagnose::{DiagnoseError, EndpointSpec, Query};
use model::diagnosis::Diagnosis;
use model::{Inventory, Snapshot};

use crate::lab::Lab;
use crate::probe::ProbeRequest;

/// The simulated client's source port for a probe's question (what `diagnose` defaults to).
const QUERY_SOURCE_PORT: u16 = 40000;

/// Why a live lab could not be diagnosed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The question cannot be asked (an endpoint that does not parse, a source outside the lab).
    #[error(transparent)]
    Question(#[from] DiagnoseError),
    /// A namespace could not be read: any diagnosis would be incomplete.
    #[error(transparent)]
    Collect(#[from] CollectError),
}

/// What was read for a diagnosis, and the diagnosis.
#[derive(Debug, Clone)]
pub struct LiveDiagnosis {
    pub diagnosis: Diagnosis,
    /// Namespaces read: those of the nodes the question involves.
    pub namespaces_read: usize,
    /// Namespaces the lab has.
    pub namespaces_in_lab: usize,
    /// How long reading them took.
    pub collect_took: Duration,
}

impl Lab {
    /// The lab's namespaces and Kubernetes objects as the collector takes them (the content of
    /// `inventory.json`).
    pub fn inventory(&self) -> Inventory {
        self.state().inventory()
    }

    /// Reads the selected namespaces into a snapshot.
    pub fn collect(
        &self,
        filter: &NetnsFilter,
        progress: Progress<'_>,
    ) -> Result<Snapshot, CollectError> {
        collect::collect_inventory(&self.inventory(), filter, progress)
    }

    /// Reads the namespaces `query` involves and diagnoses it.
    pub fn diagnose(
        &self,
        query: &Query,
        progress: Progress<'_>,
    ) -> Result<LiveDiagnosis, LiveError> {
        let inventory = self.inventory();
        let src: EndpointSpec = query.src.parse().map_err(DiagnoseError::Source)?;
        let dst: EndpointSpec = query.dst.parse().map_err(DiagnoseError::Destination)?;
        let filter = scope::netns_for_query(&inventory, &src, &dst, query.dport);
        let started = Instant::now();
        let snapshot = collect::collect_inventory(&inventory, &filter, progress)?;
        let collect_took = started.elapsed();
        Ok(LiveDiagnosis {
            diagnosis: diagnose::diagnose(&snapshot, query)?,
            namespaces_read: snapshot.netns.len(),
            namespaces_in_lab: inventory.netns.len(),
            collect_took,
        })
    }
}

impl ProbeRequest {
    /// The diagnosis question about this probe's flow.
    pub fn query(&self) -> Query {
        Query {
            src: self.src.clone(),
            dst: self.dst.clone(),
            protocol: self.protocol,
            dport: self.port,
            sport: QUERY_SOURCE_PORT,
        }
    }
}
