//! Sinks against a recording HTTP server (no Loki runs here; the server records what a Loki
//! push endpoint would receive): push format and labels, batching, retry on 500 with backoff,
//! bounded buffer with the loss counted; the file sink writes JSON lines.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::config::{Config, SinkConfig};
use agent::events::{Event, EventBatch, EventBus, EventType};
use agent::health::AgentMetrics;
use agent::podmap::PodMap;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

#[derive(Default)]
struct Recorder {
    /// (path, tenant header, body, time) of every request.
    requests: Vec<(String, Option<String>, serde_json::Value, Instant)>,
    /// Status to answer, in order; then 204.
    script: Vec<u16>,
}

async fn recording_server(script: Vec<u16>) -> (String, Arc<Mutex<Recorder>>) {
    let rec = Arc::new(Mutex::new(Recorder {
        requests: vec![],
        script,
    }));
    let state = rec.clone();
    let app = Router::new().route(
        "/loki/api/v1/push",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut r = state.lock().unwrap();
                let tenant = headers
                    .get("x-scope-orgid")
                    .map(|v| v.to_str().unwrap().to_string());
                r.requests.push((
                    "/loki/api/v1/push".into(),
                    tenant,
                    serde_json::from_str(&body).unwrap(),
                    Instant::now(),
                ));
                let code = if r.script.is_empty() {
                    204
                } else {
                    r.script.remove(0)
                };
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rec)
}

fn loki_config(addr: &str, extra: &str) -> SinkConfig {
    let yaml = format!(
        "event:\n  sinks:\n    - name: loki\n      args: {{addr: \"{addr}\", tenant: t1{extra}}}\n"
    );
    Config::parse("t.yaml", &yaml).unwrap().sinks.remove(0)
}

fn events(n: usize, kind: EventType) -> EventBatch {
    let mut batch = EventBatch::default();
    for i in 0..n {
        batch.push(Event::new(kind, 0, format!("event {i}")));
    }
    batch
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn loki_push_batches_by_label_set_and_retries_500_with_backoff() {
    let (addr, rec) = recording_server(vec![500, 500]).await;
    let metrics = Arc::new(AgentMetrics::new());
    let bus = EventBus::new(
        "node-1",
        Arc::new(PodMap::host_only("node-1")),
        metrics.clone(),
    );
    let config = loki_config(
        &addr,
        ", batchSize: 5, batchWaitMs: 200, retryBackoffMs: 100",
    );
    let receiver = bus.set_sinks(&["loki".into()], 100).remove(0);
    let _task = agent::sinks::spawn(&config, receiver, metrics.clone()).unwrap();
    bus.publish("packetloss", events(3, EventType::PacketLoss));
    bus.publish("tcpreset", events(2, EventType::TcpResetNoSock));
    wait_for(|| metrics.delivered_for_sink("loki") == 5).await;

    let r = rec.lock().unwrap();
    assert_eq!(r.requests.len(), 3, "two 500s then success");
    // Backoff doubles: ≥100 ms then ≥200 ms.
    assert!(r.requests[1].3 - r.requests[0].3 >= Duration::from_millis(100));
    assert!(r.requests[2].3 - r.requests[1].3 >= Duration::from_millis(200));
    let (_, tenant, body, _) = &r.requests[2];
    assert_eq!(tenant.as_deref(), Some("t1"));
    let streams = body["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "one stream per label set: {body}");
    let loss = streams
        .iter()
        .find(|s| s["stream"]["type"] == "PacketLoss")
        .unwrap();
    assert_eq!(
        loss["stream"],
        serde_json::json!({"job": "netsleuth", "node": "node-1", "namespace": "", "pod": "", "type": "PacketLoss"})
    );
    assert_eq!(loss["values"].as_array().unwrap().len(), 3);
    let line: serde_json::Value =
        serde_json::from_str(loss["values"][0][1].as_str().unwrap()).unwrap();
    assert_eq!(line["type"], "PacketLoss");
    assert_eq!(
        loss["values"][0][0].as_str().unwrap(),
        line["timestamp"].to_string()
    );
    assert_eq!(metrics.failed_for_sink("loki"), 0);
}

#[tokio::test]
async fn loki_down_fills_the_bounded_buffer_and_counts_every_lost_event() {
    // Always 500: every batch is retried then given up; the buffer holds at most 4.
    let (addr, rec) = recording_server(vec![500; 1000]).await;
    let metrics = Arc::new(AgentMetrics::new());
    let bus = EventBus::new(
        "node-1",
        Arc::new(PodMap::host_only("node-1")),
        metrics.clone(),
    );
    let config = loki_config(
        &addr,
        ", batchSize: 2, batchWaitMs: 10, bufferSize: 4, maxRetries: 1, retryBackoffMs: 300",
    );
    let receiver = bus.set_sinks(&["loki".into()], 1000).remove(0);
    let _task = agent::sinks::spawn(&config, receiver, metrics.clone()).unwrap();
    bus.publish("packetloss", events(2, EventType::PacketLoss));
    tokio::time::sleep(Duration::from_millis(100)).await; // first batch in flight
    bus.publish("packetloss", events(20, EventType::PacketLoss));
    // Every event is either delivered (never here) or counted as failed.
    wait_for(|| metrics.failed_for_sink("loki") == 22).await;
    assert_eq!(metrics.delivered_for_sink("loki"), 0);
    assert!(!rec.lock().unwrap().requests.is_empty());
    let r = rec.lock().unwrap();
    // Overflow dropped 16 buffered events without sending them: only a few batches went out.
    assert!(r.requests.len() <= 8, "{} requests", r.requests.len());
}

#[tokio::test]
async fn file_sink_writes_one_json_event_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.log");
    let yaml = format!(
        "event:\n  sinks:\n    - name: file\n      args: {{path: {}}}\n",
        path.display()
    );
    let config = Config::parse("t.yaml", &yaml).unwrap().sinks.remove(0);
    let metrics = Arc::new(AgentMetrics::new());
    let bus = EventBus::new(
        "node-1",
        Arc::new(PodMap::host_only("node-1")),
        metrics.clone(),
    );
    let receiver = bus.set_sinks(&["file".into()], 100).remove(0);
    let _task = agent::sinks::spawn(&config, receiver, metrics.clone()).unwrap();
    bus.publish("tcpreset", events(3, EventType::TcpResetActive));
    wait_for(|| metrics.delivered_for_sink("file") == 3).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["type"], "TCPRESET_ACTIVE");
    assert_eq!(lines[2]["node"], "node-1");
}
