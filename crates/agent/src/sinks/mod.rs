//! Event sinks: each consumes its own bounded queue from the [`crate::events::EventBus`] on a
//! tokio task. `stderr` and `file` write JSON lines; `loki` and `http` batch, retry with
//! backoff and keep a bounded buffer (see [`delivery`]). Every event a sink cannot deliver is
//! counted (`<prefix>_agent_sink_failed_total`). Must not block the bus or read the kernel.

pub mod delivery;
pub mod file;
pub mod http;
pub mod loki;
pub mod stderr;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::SinkConfig;
use crate::events::Event;
use crate::health::AgentMetrics;

/// Why a sink could not start (bad URL, unwritable file).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{sink}`: {message}")]
    Setup { sink: &'static str, message: String },
}

/// Start the sink's task on the current tokio runtime.
pub fn spawn(
    config: &SinkConfig,
    events: mpsc::Receiver<Arc<Event>>,
    metrics: Arc<AgentMetrics>,
) -> Result<JoinHandle<()>, SinkError> {
    Ok(match config {
        SinkConfig::Stderr => tokio::spawn(stderr::run(events, metrics)),
        SinkConfig::File(args) => {
            let writer = file::RotatingFile::open(args)?;
            tokio::spawn(file::run(writer, events, metrics))
        }
        SinkConfig::Loki(args) => {
            let target = loki::LokiTarget::new(args)?;
            tokio::spawn(delivery::run(
                target,
                args.delivery.clone(),
                events,
                metrics,
            ))
        }
        SinkConfig::Http(args) => {
            let target = http::HttpTarget::new(args)?;
            tokio::spawn(delivery::run(
                target,
                args.delivery.clone(),
                events,
                metrics,
            ))
        }
    })
}
