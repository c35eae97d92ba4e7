//! Event sinks: each consumes its own bounded queue from the [`crate::events::EventBus`] on a
//! tokio task. `stderr` and `file` write JSON lines; `loki` and `http` batch, retry with
//! backoff and keep a bounded buffer (see [`delivery`]) over http or https with optional auth
//! (see [`transport`]). Every event a sink cannot deliver is
//! counted (`<prefix>_agent_sink_failed_total`). Must not block the bus or read the kernel.

pub mod delivery;
pub mod file;
pub mod http;
pub mod loki;
pub mod stderr;
pub mod transport;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{DeliveryArgs, SinkConfig, TransportArgs};
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
            spawn_network(target, &args.transport, &args.delivery, events, metrics)?
        }
        SinkConfig::Http(args) => {
            let target = http::HttpTarget::new(args)?;
            spawn_network(target, &args.transport, &args.delivery, events, metrics)?
        }
    })
}

/// A `loki` or `http` sink: its client first (bad TLS or auth settings stop it here), then
/// the delivery loop.
fn spawn_network<T: delivery::Target>(
    target: T,
    transport_args: &TransportArgs,
    delivery: &DeliveryArgs,
    events: mpsc::Receiver<Arc<Event>>,
    metrics: Arc<AgentMetrics>,
) -> Result<JoinHandle<()>, SinkError> {
    let transport = transport::Transport::new(target.name(), target.uri(), transport_args)?;
    Ok(tokio::spawn(delivery::run(
        target,
        transport,
        delivery.clone(),
        events,
        metrics,
    )))
}
