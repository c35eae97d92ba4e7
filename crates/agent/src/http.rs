//! The HTTP surface on `:9102`: `/metrics` (OpenMetrics text when asked for, as Prometheus
//! does; else Prometheus text 0.0.4), `/status`, `/healthz`,
//! `/events` (server-sent events, live) and `/snapshot` (this node's netns state read by the
//! collector, in the snapshot format). Handlers only call into [`crate::agent::Agent`].

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::stream::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::agent::Agent;

/// OpenMetrics text, which Prometheus negotiates and prometheus-client renders.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, for clients that do not ask for OpenMetrics.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text → Prometheus text 0.0.4: a counter family `x` is named `x_total` in its
/// HELP/TYPE lines (its samples already are), and `# EOF` / `# UNIT` go away. What tools that
/// only read 0.0.4 (curl users, `promtool check metrics`) expect.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 1024);
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(help) = line.strip_prefix("# HELP ") {
            pending_help = Some(help);
            continue;
        }
        if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, kind) = ty.split_once(' ').unwrap_or((ty, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map(|(_, t)| t).unwrap_or("");
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/events", get(events))
        .route("/snapshot", get(snapshot))
        .with_state(agent)
}

async fn index() -> &'static str {
    "netsleuth agent: /metrics /status /healthz /events /snapshot\n"
}

async fn metrics(State(agent): State<Agent>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    // Scraping enters network namespaces on a thread of its own: keep it off the async workers.
    match tokio::task::spawn_blocking(move || agent.render_metrics()).await {
        Ok(text) if openmetrics => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Ok(text) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&text),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scrape failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn status(State(agent): State<Agent>) -> Response {
    Json(agent.status()).into_response()
}

async fn snapshot(State(agent): State<Agent>) -> Response {
    match tokio::task::spawn_blocking(move || agent.snapshot()).await {
        Ok(Ok(snapshot)) => Json(snapshot).into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("snapshot: {e}\n")).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("snapshot: {e}\n"),
        )
            .into_response(),
    }
}

async fn events(
    State(agent): State<Agent>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = agent.bus().subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let sse = match receiver.recv().await {
            Ok(event) => {
                let data = serde_json::to_string(&*event).unwrap_or_default();
                SseEvent::default().event(event.kind.as_str()).data(data)
            }
            // Fell behind: tell the client how many it missed instead of hiding it.
            Err(RecvError::Lagged(missed)) => {
                SseEvent::default().event("lost").data(missed.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(sse), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
