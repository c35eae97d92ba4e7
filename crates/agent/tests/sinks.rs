//! Sinks against a recording HTTP(S) server (no Loki runs here; the server records what a Loki
//! push endpoint would receive): push format and labels, batching, retry on 500 with backoff,
//! bounded buffer with the loss counted; https with basic or bearer auth against a CA made
//! here, and a certificate from the wrong CA failing (retried, counted, logged with its cause);
//! the file sink writes JSON lines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::config::{Config, SinkConfig};
use agent::events::{Event, EventBatch, EventBus, EventType};
use agent::health::AgentMetrics;
use agent::podmap::PodMap;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// One push the server received.
struct Pushed {
    path: String,
    tenant: Option<String>,
    authorization: Option<String>,
    body: serde_json::Value,
    at: Instant,
}

#[derive(Default)]
struct Recorder {
    requests: Vec<Pushed>,
    /// Status to answer, in order; then 204.
    script: Vec<u16>,
    /// Why each TLS handshake that failed did.
    failed_handshakes: Vec<String>,
}

type Recording = Arc<Mutex<Recorder>>;

/// Records every push to the Loki path or to `/events` (the http sink's test URL).
fn recording_app(rec: &Recording) -> Router {
    let state = rec.clone();
    let record = move |uri: Uri, headers: HeaderMap, body: String| {
        let state = state.clone();
        async move {
            let mut r = state.lock().unwrap();
            let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
            let pushed = Pushed {
                path: uri.path().to_string(),
                tenant: header("x-scope-orgid"),
                authorization: header("authorization"),
                body: serde_json::from_str(&body).unwrap(),
                at: Instant::now(),
            };
            r.requests.push(pushed);
            let code = if r.script.is_empty() {
                204
            } else {
                r.script.remove(0)
            };
            StatusCode::from_u16(code).unwrap()
        }
    };
    Router::new()
        .route("/loki/api/v1/push", post(record.clone()))
        .route("/events", post(record))
}

fn recorder(script: Vec<u16>) -> Recording {
    Arc::new(Mutex::new(Recorder {
        script,
        ..Recorder::default()
    }))
}

/// Plain http on loopback: (`127.0.0.1:port`, recording).
async fn recording_server(script: Vec<u16>) -> (String, Recording) {
    let rec = recorder(script);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = recording_app(&rec);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rec)
}

/// The same server behind TLS with `cert` (`https://127.0.0.1:port`, recording).
async fn recording_tls_server(script: Vec<u16>, cert: ServerCert) -> (String, Recording) {
    let rec = recorder(script);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let config =
        rustls::ServerConfig::builder_with_provider(agent::sinks::transport::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der.into()], cert.key)
            .unwrap();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        rec: rec.clone(),
    };
    let app = recording_app(&rec);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rec)
}

/// Accepts TLS connections, recording the handshakes that fail.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    rec: Recording,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(e) => self
                    .rec
                    .lock()
                    .unwrap()
                    .failed_handshakes
                    .push(e.to_string()),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A test certificate authority.
struct TestCa(CertifiedIssuer<'static, KeyPair>);

/// A server certificate for 127.0.0.1 and its key.
struct ServerCert {
    der: Vec<u8>,
    key: PrivateKeyDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        TestCa(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// The CA certificate as a PEM file in `dir` (what `caFile` names).
    fn pem_file(&self, dir: &tempfile::TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, self.0.pem()).unwrap();
        path
    }

    fn server_cert(&self) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.0)
            .unwrap();
        ServerCert {
            der: cert.der().to_vec(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// Log lines written while the returned guard lives (the test runtime is single-threaded, so
/// the sink task logs on this thread).
fn capture_log() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || LogWriter(writer.clone()))
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sink_config(yaml_args: &str, name: &str) -> SinkConfig {
    let yaml = format!("event:\n  sinks:\n    - name: {name}\n      args: {{{yaml_args}}}\n");
    Config::parse("t.yaml", &yaml).unwrap().sinks.remove(0)
}

fn bus(metrics: &Arc<AgentMetrics>) -> EventBus {
    EventBus::new(
        "node-1",
        Arc::new(PodMap::host_only("node-1")),
        metrics.clone(),
    )
}

fn loki_config(addr: &str, extra: &str) -> SinkConfig {
    sink_config(&format!("addr: \"{addr}\", tenant: t1{extra}"), "loki")
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
    let bus = bus(&metrics);
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
    assert!(r.requests[1].at - r.requests[0].at >= Duration::from_millis(100));
    assert!(r.requests[2].at - r.requests[1].at >= Duration::from_millis(200));
    let Pushed {
        path, tenant, body, ..
    } = &r.requests[2];
    assert_eq!(path, "/loki/api/v1/push");
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
    let bus = bus(&metrics);
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
    let config = sink_config(&format!("path: {}", path.display()), "file");
    let metrics = Arc::new(AgentMetrics::new());
    let bus = bus(&metrics);
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

#[tokio::test]
async fn loki_over_https_sends_basic_auth_with_the_password_from_a_file() {
    let ca = TestCa::new("netsleuth test CA");
    let (url, rec) = recording_tls_server(vec![], ca.server_cert()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.pem_file(&dir, "ca.pem");
    let password_file = dir.path().join("password");
    // As a Kubernetes secret volume writes it: with a trailing newline.
    std::fs::write(&password_file, "s3cret\n").unwrap();
    let metrics = Arc::new(AgentMetrics::new());
    let bus = bus(&metrics);
    let config = loki_config(
        &url,
        &format!(
            ", batchWaitMs: 50, caFile: {}, username: \"12345\", passwordFile: {}",
            ca_file.display(),
            password_file.display()
        ),
    );
    let receiver = bus.set_sinks(&["loki".into()], 100).remove(0);
    let _task = agent::sinks::spawn(&config, receiver, metrics.clone()).unwrap();
    bus.publish("tcpreset", events(3, EventType::TcpResetNoSock));
    wait_for(|| metrics.delivered_for_sink("loki") == 3).await;

    let r = rec.lock().unwrap();
    assert_eq!(r.requests.len(), 1);
    let pushed = &r.requests[0];
    // base64("12345:s3cret")
    assert_eq!(
        pushed.authorization.as_deref(),
        Some("Basic MTIzNDU6czNjcmV0")
    );
    assert_eq!(pushed.tenant.as_deref(), Some("t1"));
    assert_eq!(
        pushed.body["streams"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(r.failed_handshakes.is_empty(), "{:?}", r.failed_handshakes);
}

#[tokio::test]
async fn http_sink_over_https_sends_the_bearer_token_from_the_environment() {
    let ca = TestCa::new("netsleuth test CA");
    let (url, rec) = recording_tls_server(vec![], ca.server_cert()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.pem_file(&dir, "ca.pem");
    // A name no other test reads.
    std::env::set_var("HPD_SINK_TEST_TOKEN", "tok-42");
    let metrics = Arc::new(AgentMetrics::new());
    let bus = bus(&metrics);
    let config = sink_config(
        &format!(
            "url: \"{url}/events\", batchWaitMs: 50, caFile: {}, bearerTokenEnv: HPD_SINK_TEST_TOKEN",
            ca_file.display()
        ),
        "http",
    );
    let receiver = bus.set_sinks(&["http".into()], 100).remove(0);
    let _task = agent::sinks::spawn(&config, receiver, metrics.clone()).unwrap();
    bus.publish("packetloss", events(2, EventType::PacketLoss));
    wait_for(|| metrics.delivered_for_sink("http") == 2).await;

    let r = rec.lock().unwrap();
    let pushed = &r.requests[0];
    assert_eq!(pushed.path, "/events");
    assert_eq!(pushed.authorization.as_deref(), Some("Bearer tok-42"));
    assert_eq!(pushed.body.as_array().unwrap().len(), 2);
    assert_eq!(pushed.body[0]["type"], "PacketLoss");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_retried_counted_and_logged() {
    let (log, _log_guard) = capture_log();
    let server_ca = TestCa::new("server CA");
    let trusted_ca = TestCa::new("another CA");
    let (url, rec) = recording_tls_server(vec![], server_ca.server_cert()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = trusted_ca.pem_file(&dir, "other-ca.pem");
    let metrics = Arc::new(AgentMetrics::new());
    let bus = bus(&metrics);
    let config = loki_config(
        &url,
        &format!(
            ", batchWaitMs: 10, maxRetries: 2, retryBackoffMs: 20, caFile: {}, bearerToken: t",
            ca_file.display()
        ),
    );
    let receiver = bus.set_sinks(&["loki".into()], 100).remove(0);
    let _task = agent::sinks::spawn(&config, receiver, metrics.clone()).unwrap();
    bus.publish("packetloss", events(4, EventType::PacketLoss));
    // The server sees the client's alert of the last try on its own time.
    wait_for(|| {
        metrics.failed_for_sink("loki") == 4 && rec.lock().unwrap().failed_handshakes.len() >= 3
    })
    .await;

    assert_eq!(metrics.delivered_for_sink("loki"), 0);
    let r = rec.lock().unwrap();
    assert!(r.requests.is_empty(), "nothing may reach the server");
    // The first try and two retries, each refused by the client during the handshake.
    assert_eq!(r.failed_handshakes.len(), 3, "{:?}", r.failed_handshakes);
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("invalid peer certificate") && log.contains("UnknownIssuer"),
        "the log must say why: {log}"
    );
    assert!(log.contains("retry 2/2"), "{log}");
    assert!(log.contains("giving up on 4 events"), "{log}");
}

#[tokio::test]
async fn bad_tls_or_auth_settings_stop_the_sink_at_start_with_the_reason() {
    let metrics = Arc::new(AgentMetrics::new());
    let dir = tempfile::tempdir().unwrap();
    let start = |args: &str, name: &str| {
        let receiver = bus(&metrics).set_sinks(&[name.into()], 1).remove(0);
        agent::sinks::spawn(&sink_config(args, name), receiver, metrics.clone())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let missing = dir.path().join("missing");
    let err = start(
        &format!(
            "addr: \"http://127.0.0.1:1\", username: u, passwordFile: {}",
            missing.display()
        ),
        "loki",
    );
    assert!(
        err.contains("sink `loki`") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let err = start(
        &format!(
            "url: \"https://127.0.0.1:1/\", caFile: {}",
            not_pem.display()
        ),
        "http",
    );
    assert!(
        err.contains("caFile") && err.contains("no PEM certificate"),
        "{err}"
    );
    let err = start(
        &format!(
            "url: \"http://127.0.0.1:1/\", caFile: {}",
            not_pem.display()
        ),
        "http",
    );
    assert!(err.contains("`caFile` is for https"), "{err}");
    let err = start(
        "url: \"http://127.0.0.1:1/\", bearerTokenEnv: HPD_SINK_TEST_UNSET",
        "http",
    );
    assert!(err.contains("HPD_SINK_TEST_UNSET"), "{err}");
}

#[test]
fn auth_args_are_checked_with_the_sink_named() {
    let refused = |args: &str| {
        let yaml = format!(
            "event:\n  sinks:\n    - name: stderr\n    - name: loki\n      args: {{addr: loki, {args}}}\n"
        );
        Config::parse("t.yaml", &yaml).unwrap_err().to_string()
    };
    let err = refused("username: u");
    assert!(
        err.contains("event.sinks[1].args") && err.contains("`username` needs"),
        "{err}"
    );
    let err = refused("username: u, password: p, passwordFile: /p");
    assert!(err.contains("not several"), "{err}");
    let err = refused("username: u, password: p, bearerToken: t");
    assert!(err.contains("exclude each other"), "{err}");
    let err = refused("passwordEnv: P");
    assert!(err.contains("needs `username`"), "{err}");
    let err = refused("insecureSkipVerify: true");
    assert!(
        err.contains("unknown key `insecureSkipVerify`") && err.contains("caFile"),
        "{err}"
    );
}

#[tokio::test]
async fn without_ca_file_https_trusts_the_system_roots() {
    // The system trust store as rustls-native-certs finds it: SSL_CERT_FILE (and SSL_CERT_DIR)
    // when set. Only this test reads the system roots (the others give caFile), so setting
    // them here is safe.
    let ca = TestCa::new("system-like CA");
    let (url, rec) = recording_tls_server(vec![], ca.server_cert()).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(AgentMetrics::new());
    let bus = bus(&metrics);
    let config = loki_config(&url, ", batchWaitMs: 10");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("SSL_CERT_FILE", &empty);
    let receiver = bus.set_sinks(&["loki".into()], 100).remove(0);
    let err = agent::sinks::spawn(&config, receiver, metrics.clone())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("system CA certificates") && err.contains("caFile"),
        "{err}"
    );

    std::env::set_var("SSL_CERT_FILE", ca.pem_file(&dir, "roots.pem"));
    let receiver = bus.set_sinks(&["loki".into()], 100).remove(0);
    let _task = agent::sinks::spawn(&config, receiver, metrics.clone()).unwrap();
    bus.publish("tcpreset", events(1, EventType::TcpResetActive));
    wait_for(|| metrics.delivered_for_sink("loki") == 1).await;
    assert_eq!(rec.lock().unwrap().requests.len(), 1);
}
