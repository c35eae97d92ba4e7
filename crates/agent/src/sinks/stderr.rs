//! `stderr` sink: `event: <json>` per line, as KubeSkoop's.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::events::Event;
use crate::health::AgentMetrics;

pub async fn run(mut events: mpsc::Receiver<Arc<Event>>, metrics: Arc<AgentMetrics>) {
    while let Some(event) = events.recv().await {
        let line = serde_json::to_string(&*event).unwrap_or_default();
        let mut err = std::io::stderr().lock();
        match writeln!(err, "event: {line}") {
            Ok(()) => metrics.sink_delivered("stderr", 1),
            Err(_) => metrics.sink_failed("stderr", 1),
        }
    }
}
