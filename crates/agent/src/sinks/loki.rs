//! `loki` sink: Grafana Loki's JSON push API (`POST /loki/api/v1/push`), one stream per label
//! set `{node, namespace, pod, type}` (plus `job="netsleuth"`), lines = the event JSON.
//! `addr` is KubeSkoop's: a host (port 3100 assumed), `host:port`, or an `http://` or `https://`
//! URL; names are resolved on every connection (KubeSkoop resolved once at start).

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::Uri;
use serde_json::json;

use super::delivery::Target;
use super::SinkError;
use crate::config::LokiSinkArgs;
use crate::events::Event;

pub struct LokiTarget {
    uri: Uri,
    tenant: Option<String>,
}

impl LokiTarget {
    pub fn new(args: &LokiSinkArgs) -> Result<LokiTarget, SinkError> {
        let base = if args.addr.contains("://") {
            args.addr.trim_end_matches('/').to_string()
        } else if args.addr.contains(':') && !args.addr.starts_with('[') {
            format!("http://{}", args.addr)
        } else {
            format!("http://{}:3100", args.addr)
        };
        let uri: Uri =
            format!("{base}/loki/api/v1/push")
                .parse()
                .map_err(|e| SinkError::Setup {
                    sink: "loki",
                    message: format!("`{}` is not a host, host:port or URL: {e}", args.addr),
                })?;
        Ok(LokiTarget {
            uri,
            tenant: args.tenant.clone(),
        })
    }
}

impl Target for LokiTarget {
    fn name(&self) -> &'static str {
        "loki"
    }

    fn uri(&self) -> &Uri {
        &self.uri
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        self.tenant
            .iter()
            .map(|t| ("x-scope-orgid", t.clone()))
            .collect()
    }

    fn encode(&self, batch: &[Arc<Event>]) -> Vec<u8> {
        let mut streams: BTreeMap<(String, String, String, &'static str), Vec<[String; 2]>> =
            BTreeMap::new();
        for event in batch {
            let (namespace, pod) = event
                .pod
                .as_ref()
                .map(|p| (p.namespace.clone(), p.name.clone()))
                .unwrap_or_default();
            streams
                .entry((event.node.clone(), namespace, pod, event.kind.as_str()))
                .or_default()
                .push([
                    event.timestamp.to_string(),
                    serde_json::to_string(&**event).unwrap_or_default(),
                ]);
        }
        let streams: Vec<_> = streams
            .into_iter()
            .map(|((node, namespace, pod, kind), values)| {
                json!({
                    "stream": {"job": "netsleuth", "node": node, "namespace": namespace, "pod": pod, "type": kind},
                    "values": values,
                })
            })
            .collect();
        serde_json::to_vec(&json!({ "streams": streams })).unwrap_or_default()
    }
}
