//! Batching, retry and bounded buffering for the network sinks (`loki`, `http`).
//!
//! Events are collected into a batch until `batchSize` or `batchWaitMs`; a batch is POSTed and,
//! on a connection error, HTTP 429 or 5xx, retried up to `maxRetries` times with exponential
//! backoff from `retryBackoffMs`. Meanwhile new events wait in a buffer of `bufferSize`; when
//! it is full the oldest are dropped. Every event given up on is counted in
//! `<prefix>_agent_sink_failed_total{sink}`, so none disappears silently. A TLS failure (an
//! untrusted certificate, say) is a connection error like any other.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Uri};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, timeout_at, Instant};

use super::transport::Transport;
use crate::config::DeliveryArgs;
use crate::events::Event;
use crate::health::AgentMetrics;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how a network sink sends a batch.
pub trait Target: Send + Sync + 'static {
    /// Sink name, as in the config and the loss metrics.
    fn name(&self) -> &'static str;
    fn uri(&self) -> &Uri;
    /// Extra headers (tenant id).
    fn headers(&self) -> Vec<(&'static str, String)>;
    /// The request body for one batch.
    fn encode(&self, batch: &[Arc<Event>]) -> Vec<u8>;
}

enum SendError {
    /// Worth another try: unreachable, timeout, 429, 5xx.
    Retryable(String),
    /// The server refused the batch (other 4xx): retrying would not help.
    Rejected(String),
}

async fn send<T: Target>(
    transport: &Transport,
    target: &T,
    batch: &[Arc<Event>],
) -> Result<(), SendError> {
    let mut request =
        Request::post(target.uri().clone()).header("content-type", "application/json");
    for (name, value) in target.headers() {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(target.encode(batch))))
        .map_err(|e| SendError::Rejected(e.to_string()))?;
    match timeout(REQUEST_TIMEOUT, transport.send(request)).await {
        Err(_) => Err(SendError::Retryable("timed out".into())),
        Ok(Err(why)) => Err(SendError::Retryable(why)),
        Ok(Ok(response)) => {
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else if status.as_u16() == 429 || status.is_server_error() {
                Err(SendError::Retryable(format!("HTTP {status}")))
            } else {
                Err(SendError::Rejected(format!("HTTP {status}")))
            }
        }
    }
}

/// Buffer `event`, dropping the oldest buffered event if full.
fn buffer_event(
    buffer: &mut VecDeque<Arc<Event>>,
    event: Arc<Event>,
    cap: usize,
    metrics: &AgentMetrics,
    sink: &str,
) {
    if buffer.len() >= cap.max(1) {
        buffer.pop_front();
        metrics.sink_failed(sink, 1);
    }
    buffer.push_back(event);
}

pub async fn run<T: Target>(
    target: T,
    transport: Transport,
    args: DeliveryArgs,
    mut events: mpsc::Receiver<Arc<Event>>,
    metrics: Arc<AgentMetrics>,
) {
    let sink = target.name();
    let batch_size = args.batch_size.max(1);
    let mut buffer: VecDeque<Arc<Event>> = VecDeque::new();
    let mut closed = false;
    loop {
        if buffer.is_empty() {
            match events.recv().await {
                Some(e) => buffer.push_back(e),
                None => return,
            }
        }
        let deadline = Instant::now() + Duration::from_millis(args.batch_wait_ms);
        while !closed && buffer.len() < batch_size {
            match timeout_at(deadline, events.recv()).await {
                Ok(Some(e)) => buffer_event(&mut buffer, e, args.buffer_size, &metrics, sink),
                Ok(None) => closed = true,
                Err(_) => break,
            }
        }
        let batch: Vec<Arc<Event>> = buffer.drain(..batch_size.min(buffer.len())).collect();
        let mut attempt = 0;
        loop {
            match send(&transport, &target, &batch).await {
                Ok(()) => {
                    metrics.sink_delivered(sink, batch.len() as u64);
                    break;
                }
                Err(SendError::Retryable(why)) if attempt < args.max_retries => {
                    let backoff = Duration::from_millis(
                        args.retry_backoff_ms.saturating_mul(1 << attempt.min(16)),
                    );
                    attempt += 1;
                    tracing::warn!(
                        "{sink} sink: {why}; retry {attempt}/{} in {backoff:?}",
                        args.max_retries
                    );
                    sleep(backoff).await;
                    // Keep the bus queue moving while we wait; the buffer bound applies.
                    while let Ok(e) = events.try_recv() {
                        buffer_event(&mut buffer, e, args.buffer_size, &metrics, sink);
                    }
                }
                Err(SendError::Retryable(why)) | Err(SendError::Rejected(why)) => {
                    tracing::warn!("{sink} sink: giving up on {} events: {why}", batch.len());
                    metrics.sink_failed(sink, batch.len() as u64);
                    break;
                }
            }
        }
        if closed && buffer.is_empty() {
            return;
        }
    }
}
