//! The HTTP surface served for real: the Debian `prometheus` binary scrapes the agent on
//! loopback and the series come back through Prometheus's query API; `/status`, `/healthz`,
//! `/snapshot` (read by the collector) and the `/events` stream answer as documented.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::events::{Event, EventBatch, EventType};
use agent::run::{serve, Listener};

/// Kills the Prometheus we started, whatever happens to the test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plain HTTP/1.0 GET on loopback: (status line, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_agent(yaml: &str) -> (agent::agent::Agent, String) {
    let agent = common::agent_with(
        yaml,
        std::sync::Arc::new(agent::podmap::PodMap::host_only("node-1")),
    );
    let listener = Listener::bind(&agent::config::parse_address("127.0.0.1:0").unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(serve(agent.clone(), listener));
    (agent, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_agent_and_the_series_are_queryable() {
    let (_agent, addr) =
        start_agent("metrics:\n  probes: [{name: tcp}, {name: netdev}, {name: softnet}]\n").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: agent\n    static_configs: [{{targets: ['{addr}']}}]\n"),
    )
    .unwrap();
    let port = free_port();
    let prom_addr = format!("127.0.0.1:{port}");
    let _prometheus = ChildGuard(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/bin/prometheus (Debian package) is installed"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = "/api/v1/query?query=netsleuth_tcp_activeopens_total";
    let body = loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned the series"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let prom = prom_addr.clone();
        let Ok((status, body)) = tokio::task::spawn_blocking(move || {
            TcpStream::connect(&prom).map(|_| get(&prom, query))
        })
        .await
        .unwrap() else {
            continue;
        };
        if status.contains("200") && body.contains("\"k8s_node\":\"node-1\"") {
            break body;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let metric = &json["data"]["result"][0]["metric"];
    assert_eq!(metric["__name__"], "netsleuth_tcp_activeopens_total");
    assert_eq!(
        metric["k8s_pod"],
        serde_json::Value::Null,
        "empty labels are dropped by Prometheus: {json}"
    );
    // The target is healthy: no scrape error recorded by Prometheus.
    let prom = prom_addr.clone();
    let (_, targets) = tokio::task::spawn_blocking(move || get(&prom, "/api/v1/targets"))
        .await
        .unwrap();
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_healthz_snapshot_and_the_live_event_stream() {
    let (agent, addr) = start_agent("metrics:\n  probes: [{name: netdev}]\n").await;
    let a = addr.clone();
    let (status_line, body) = tokio::task::spawn_blocking(move || get(&a, "/status"))
        .await
        .unwrap();
    assert!(status_line.contains("200"), "{status_line}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["inuse_probes"]["metrics"][0]["state"], "Running");
    let a = addr.clone();
    let (line, body) = tokio::task::spawn_blocking(move || get(&a, "/healthz"))
        .await
        .unwrap();
    assert!(line.contains("200") && body == "ok\n");
    let a = addr.clone();
    let (line, body) = tokio::task::spawn_blocking(move || get(&a, "/snapshot"))
        .await
        .unwrap();
    assert!(line.contains("200"), "{line} {body}");
    let snapshot: model::Snapshot = serde_json::from_str(&body).unwrap();
    let node = snapshot.netns("node/node-1").expect("the node's own netns");
    assert!(node.state.links.iter().any(|l| l.name == "lo"));

    // /events: subscribe, then publish, and read the SSE frame.
    let a = addr.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("data: {") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    });
    // The subscriber registers when the request is handled; publish until it sees one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        let mut batch = EventBatch::default();
        batch.push(Event::new(EventType::TcpRetrans, 0, "retransmit"));
        agent.bus().publish("tcpretrans", batch);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = reader.await.unwrap();
    assert!(seen.contains("event: TCPRetrans"), "{seen}");
    assert!(seen.contains("\"node\":\"node-1\""), "{seen}");
}
