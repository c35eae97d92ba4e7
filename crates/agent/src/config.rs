//! The agent's YAML config: KubeSkoop's `config.yaml` keys, accepted unchanged.
//!
//! ```yaml
//! address: ":9102"            # [tcp://]host:port | unix:///path   (port: 9102 is the old form)
//! metrics:
//!   additionalLabels: ["app=${labels:app}", "env=prod"]
//!   podLimit: 256             # ours: per-pod series up to this many pods (node-level always)
//!   probes: [{name: netdev}, {name: flow, args: {enablePortInLabel: false}}]
//! event:
//!   probes: [{name: packetloss, args: {enableStack: true}}]
//!   sinks: [{name: stderr}, {name: file, args: {path: /var/log/events.log}}, {name: loki, args: {addr: loki}}]
//! ```
//!
//! KubeSkoop keys we do not use (`enableController`, `controllerAddr`, `debugMode`, Helm's
//! `debugmode`) are accepted with a warning; any other unknown key is an error naming it with
//! its path and line. Probe and sink args are checked the same way. Must not start anything.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::probe::{ProbeArgs, ProbeKind};
use crate::probes;

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or schema error: names the field path and the line.
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// Default pod limit for per-pod series (Kubernetes' default max pods per node is 110).
pub const DEFAULT_POD_LIMIT: usize = 256;

/// Where the HTTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddress::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// One `additionalLabels` entry: `name=expr`, where expr may use `${labels:PODLABEL}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdditionalLabel {
    pub name: String,
    parts: Vec<LabelPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelPart {
    Text(String),
    PodLabel(String),
}

impl AdditionalLabel {
    /// The value for a pod with these labels (`""` for a missing pod label, as KubeSkoop).
    pub fn value(&self, pod_labels: &BTreeMap<String, String>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                LabelPart::Text(t) => t.as_str(),
                LabelPart::PodLabel(l) => pod_labels.get(l).map(String::as_str).unwrap_or(""),
            })
            .collect()
    }
}

/// A probe as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub name: String,
    pub args: ProbeArgs,
}

/// A sink as configured, args checked.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    Stderr,
    File(FileSinkArgs),
    Loki(LokiSinkArgs),
    Http(HttpSinkArgs),
}

impl SinkConfig {
    pub fn name(&self) -> &'static str {
        match self {
            SinkConfig::Stderr => "stderr",
            SinkConfig::File(_) => "file",
            SinkConfig::Loki(_) => "loki",
            SinkConfig::Http(_) => "http",
        }
    }
}

/// `file` sink: JSON lines, rotated by size (`path` → `path.1` … `path.<maxBackups>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileSinkArgs {
    pub path: PathBuf,
    #[serde(default = "default_max_size")]
    pub max_size_bytes: u64,
    #[serde(default = "default_max_backups")]
    pub max_backups: u32,
}

fn default_max_size() -> u64 {
    64 << 20
}

fn default_max_backups() -> u32 {
    3
}

/// `loki` sink: KubeSkoop's `addr` (host, host:port or URL; port 3100 when absent), an optional
/// `tenant` (X-Scope-OrgID), and the [`DeliveryArgs`] and [`TransportArgs`] keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiSinkArgs {
    pub addr: String,
    pub tenant: Option<String>,
    pub delivery: DeliveryArgs,
    pub transport: TransportArgs,
}

#[derive(Deserialize)]
struct LokiOwnArgs {
    addr: String,
    #[serde(default)]
    tenant: Option<String>,
}

/// `http` sink: a JSON array of events POSTed to `url`, with the [`DeliveryArgs`] and
/// [`TransportArgs`] keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSinkArgs {
    pub url: String,
    pub delivery: DeliveryArgs,
    pub transport: TransportArgs,
}

#[derive(Deserialize)]
struct HttpOwnArgs {
    url: String,
}

/// The keys every network sink takes besides its own: [`DeliveryArgs`] then [`TransportArgs`],
/// for the unknown-key check.
const NETWORK_SINK_KEYS: &[&str] = &[
    "batchSize",
    "batchWaitMs",
    "bufferSize",
    "maxRetries",
    "retryBackoffMs",
    "caFile",
    "username",
    "password",
    "passwordFile",
    "passwordEnv",
    "bearerToken",
    "bearerTokenFile",
    "bearerTokenEnv",
];

/// Where a credential comes from. It is read for every push, so a rotated Kubernetes secret
/// mounted as a file is picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the config itself (visible to whoever reads the ConfigMap).
    Inline(String),
    /// The file's content, trailing newline removed.
    File(PathBuf),
    /// The value of this environment variable.
    Env(String),
}

/// How a network sink authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Basic …` (Grafana Cloud: instance id and API token).
    Basic { username: String, password: Secret },
    /// `Authorization: Bearer …`.
    Bearer(Secret),
}

/// TLS trust and authentication of the network sinks. An `https://` address is verified against
/// the system's roots, or only against `caFile`'s certificates when given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportArgs {
    pub ca_file: Option<PathBuf>,
    pub auth: Option<Auth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTransport {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    bearer_token: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    bearer_token_env: Option<String>,
}

/// At most one of the three ways to give one secret.
fn secret(
    name: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Option<Secret>, String> {
    match (inline, file, env) {
        (None, None, None) => Ok(None),
        (Some(value), None, None) => Ok(Some(Secret::Inline(value))),
        (None, Some(path), None) => Ok(Some(Secret::File(path))),
        (None, None, Some(var)) => Ok(Some(Secret::Env(var))),
        _ => Err(format!(
            "give one of `{name}`, `{name}File`, `{name}Env`, not several"
        )),
    }
}

impl RawTransport {
    fn check(self) -> Result<TransportArgs, String> {
        let password = secret(
            "password",
            self.password,
            self.password_file,
            self.password_env,
        )?;
        let token = secret(
            "bearerToken",
            self.bearer_token,
            self.bearer_token_file,
            self.bearer_token_env,
        )?;
        let auth = match (self.username, password, token) {
            (None, None, None) => None,
            (Some(username), Some(password), None) => Some(Auth::Basic { username, password }),
            (None, None, Some(token)) => Some(Auth::Bearer(token)),
            (Some(_), None, None) => {
                return Err("`username` needs `password`, `passwordFile` or `passwordEnv`".into())
            }
            (None, Some(_), None) => return Err("a password needs `username`".into()),
            (_, _, Some(_)) => {
                return Err("basic auth (`username`) and a bearer token exclude each other".into())
            }
        };
        Ok(TransportArgs {
            ca_file: self.ca_file,
            auth,
        })
    }
}

/// Batching, retry and buffering shared by the network sinks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryArgs {
    /// Events per push at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Push a partial batch after this long.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Events held while the server is unreachable; older ones are dropped (and counted).
    #[serde(default = "default_buffer_size")]
    pub buffer_size: usize,
    /// Retries of one batch (exponential backoff from `retryBackoffMs`), then it is counted lost.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
}

fn default_batch_size() -> usize {
    1000
}
fn default_batch_wait_ms() -> u64 {
    1000
}
fn default_buffer_size() -> usize {
    10_000
}
fn default_max_retries() -> u32 {
    5
}
fn default_retry_backoff_ms() -> u64 {
    500
}

/// A checked config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub address: ListenAddress,
    pub additional_labels: Vec<AdditionalLabel>,
    pub pod_limit: usize,
    pub metric_probes: Vec<ProbeConfig>,
    pub event_probes: Vec<ProbeConfig>,
    pub sinks: Vec<SinkConfig>,
    /// Accepted-but-unused keys, worded for the log.
    pub warnings: Vec<String>,
}

impl Default for Config {
    /// No file: KubeSkoop's Helm default procfs probes, stderr sink, :9102.
    fn default() -> Self {
        let probe = |name: &str| ProbeConfig {
            name: name.to_string(),
            args: ProbeArgs::new(name, Default::default()),
        };
        Config {
            address: ListenAddress::Tcp(SocketAddr::from(([0, 0, 0, 0], 9102))),
            additional_labels: Vec::new(),
            pod_limit: DEFAULT_POD_LIMIT,
            metric_probes: [
                "conntrack",
                "qdisc",
                "netdev",
                "sock",
                "tcpsummary",
                "tcp",
                "tcpext",
                "udp",
            ]
            .into_iter()
            .map(probe)
            .collect(),
            event_probes: Vec::new(),
            sinks: vec![SinkConfig::Stderr],
            warnings: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default, rename = "debugMode")]
    debug_mode: Option<serde_yaml_ng::Value>,
    #[serde(default, rename = "debugmode")]
    debug_mode_helm: Option<serde_yaml_ng::Value>,
    #[serde(default, rename = "enableController")]
    enable_controller: Option<serde_yaml_ng::Value>,
    #[serde(default, rename = "controllerAddr")]
    controller_addr: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    event: RawEvent,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetrics {
    #[serde(default)]
    additional_labels: Vec<String>,
    #[serde(default)]
    pod_limit: Option<usize>,
    #[serde(default)]
    probes: Vec<RawEntry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    #[serde(default)]
    probes: Vec<RawEntry>,
    #[serde(default)]
    sinks: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    #[serde(default)]
    args: Option<serde_yaml_ng::Mapping>,
}

impl Config {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// Check config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let invalid = |path: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            path,
            message,
        };
        // An empty file is an empty mapping (KubeSkoop starts with nothing enabled).
        let raw: RawConfig = if text.trim().is_empty() {
            serde_yaml_ng::from_str("{}").expect("empty mapping")
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                invalid(
                    if path == "." { "(top)".into() } else { path },
                    e.into_inner().to_string(),
                )
            })?
        };

        let mut warnings = Vec::new();
        for (key, value, why) in [
            ("debugMode", &raw.debug_mode, "use RUST_LOG=debug"),
            ("debugmode", &raw.debug_mode_helm, "use RUST_LOG=debug"),
            (
                "enableController",
                &raw.enable_controller,
                "there is no controller link in this agent",
            ),
            (
                "controllerAddr",
                &raw.controller_addr,
                "there is no controller link in this agent",
            ),
        ] {
            if value.is_some() {
                warnings.push(format!(
                    "{file}: `{key}` is a KubeSkoop key this agent does not use ({why}); ignored"
                ));
            }
        }

        let address = match (&raw.address, raw.port) {
            (Some(a), _) if !a.is_empty() => {
                parse_address(a).map_err(|m| invalid("address".into(), m))?
            }
            (_, Some(port)) => {
                warnings.push(format!(
                    "{file}: `port` is deprecated; use `address: \":{port}\"`"
                ));
                ListenAddress::Tcp(SocketAddr::from(([0, 0, 0, 0], port)))
            }
            _ => Config::default().address,
        };

        let mut additional_labels = Vec::new();
        for (i, entry) in raw.metrics.additional_labels.iter().enumerate() {
            let label = parse_additional_label(entry)
                .map_err(|m| invalid(format!("metrics.additionalLabels[{i}]"), m))?;
            if additional_labels
                .iter()
                .any(|l: &AdditionalLabel| l.name == label.name)
            {
                return Err(invalid(
                    format!("metrics.additionalLabels[{i}]"),
                    format!("label `{}` given twice", label.name),
                ));
            }
            additional_labels.push(label);
        }

        let metric_probes = probe_list(&raw.metrics.probes, ProbeKind::Metrics, "metrics.probes")
            .map_err(|(p, m)| invalid(p, m))?;
        let event_probes = probe_list(&raw.event.probes, ProbeKind::Event, "event.probes")
            .map_err(|(p, m)| invalid(p, m))?;

        let mut sinks = Vec::new();
        for (i, entry) in raw.event.sinks.iter().enumerate() {
            let path = format!("event.sinks[{i}]");
            let args = entry.args.clone().unwrap_or_default();
            let value = serde_yaml_ng::Value::Mapping(args.clone());
            let decode_err =
                |e: serde_yaml_ng::Error| invalid(format!("{path}.args"), e.to_string());
            let sink = match entry.name.as_str() {
                "stderr" => {
                    if let Some(key) = args.keys().next() {
                        return Err(invalid(
                            format!("{path}.args"),
                            format!("sink `stderr` takes no args, got `{}`", yaml_key(key)),
                        ));
                    }
                    SinkConfig::Stderr
                }
                "file" => SinkConfig::File(serde_yaml_ng::from_value(value).map_err(decode_err)?),
                "loki" => {
                    check_keys(&args, &["addr", "tenant"])
                        .map_err(|m| invalid(format!("{path}.args"), m))?;
                    let own: LokiOwnArgs =
                        serde_yaml_ng::from_value(value.clone()).map_err(decode_err)?;
                    let (delivery, transport) =
                        network_args(value).map_err(|m| invalid(format!("{path}.args"), m))?;
                    SinkConfig::Loki(LokiSinkArgs {
                        addr: own.addr,
                        tenant: own.tenant,
                        delivery,
                        transport,
                    })
                }
                "http" => {
                    check_keys(&args, &["url"]).map_err(|m| invalid(format!("{path}.args"), m))?;
                    let own: HttpOwnArgs =
                        serde_yaml_ng::from_value(value.clone()).map_err(decode_err)?;
                    let (delivery, transport) =
                        network_args(value).map_err(|m| invalid(format!("{path}.args"), m))?;
                    SinkConfig::Http(HttpSinkArgs {
                        url: own.url,
                        delivery,
                        transport,
                    })
                }
                other => {
                    return Err(invalid(
                        format!("{path}.name"),
                        format!("unknown sink `{other}` (known: stderr, file, loki, http)"),
                    ))
                }
            };
            sinks.push(sink);
        }

        Ok(Config {
            address,
            additional_labels,
            pod_limit: raw.metrics.pod_limit.unwrap_or(DEFAULT_POD_LIMIT),
            metric_probes,
            event_probes,
            sinks,
            warnings,
        })
    }
}

/// The delivery and transport args of a network sink (its own keys are decoded by the caller).
fn network_args(value: serde_yaml_ng::Value) -> Result<(DeliveryArgs, TransportArgs), String> {
    let delivery = serde_yaml_ng::from_value(value.clone()).map_err(|e| e.to_string())?;
    let transport: RawTransport = serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?;
    Ok((delivery, transport.check()?))
}

/// Refuse keys that are neither the sink's own nor network-sink keys, naming them.
fn check_keys(args: &serde_yaml_ng::Mapping, own: &[&str]) -> Result<(), String> {
    for key in args.keys() {
        let key = yaml_key(key);
        if !own.contains(&key.as_str()) && !NETWORK_SINK_KEYS.contains(&key.as_str()) {
            let known: Vec<&str> = own.iter().chain(NETWORK_SINK_KEYS).copied().collect();
            return Err(format!("unknown key `{key}` (known: {})", known.join(", ")));
        }
    }
    Ok(())
}

fn yaml_key(key: &serde_yaml_ng::Value) -> String {
    match key {
        serde_yaml_ng::Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
}

fn probe_list(
    entries: &[RawEntry],
    kind: ProbeKind,
    at: &str,
) -> Result<Vec<ProbeConfig>, (String, String)> {
    let mut out: Vec<ProbeConfig> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let name = probes::canonical_name(&entry.name);
        let spec = probes::spec(name).ok_or_else(|| {
            (
                format!("{at}[{i}].name"),
                format!(
                    "unknown probe `{}` (known: {})",
                    entry.name,
                    probes::names(kind).join(", ")
                ),
            )
        })?;
        let supported = match kind {
            ProbeKind::Metrics => spec.metrics.is_some(),
            ProbeKind::Event => spec.event.is_some(),
        };
        if !supported {
            return Err((
                format!("{at}[{i}].name"),
                format!(
                    "probe `{name}` has no {kind} side (known {kind} probes: {})",
                    probes::names(kind).join(", ")
                ),
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err((
                format!("{at}[{i}].name"),
                format!("probe `{name}` listed twice"),
            ));
        }
        out.push(ProbeConfig {
            name: name.to_string(),
            args: ProbeArgs::new(name, entry.args.clone().unwrap_or_default()),
        });
    }
    Ok(out)
}

/// `[tcp://]host:port`, `:port` or `unix:///path`.
pub fn parse_address(text: &str) -> Result<ListenAddress, String> {
    if let Some(path) = text.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("`unix://` needs a path".into());
        }
        return Ok(ListenAddress::Unix(PathBuf::from(path)));
    }
    let hostport = text.strip_prefix("tcp://").unwrap_or(text);
    if hostport.contains("://") {
        return Err(format!("`{text}`: only tcp:// and unix:// are supported"));
    }
    let full = if hostport.starts_with(':') {
        format!("0.0.0.0{hostport}")
    } else {
        hostport.to_string()
    };
    full.parse::<SocketAddr>()
        .map(ListenAddress::Tcp)
        .map_err(|_| format!("`{text}` is not [tcp://]IP:PORT, :PORT or unix:///PATH"))
}

fn parse_additional_label(entry: &str) -> Result<AdditionalLabel, String> {
    let (name, expr) = entry
        .split_once('=')
        .ok_or_else(|| format!("`{entry}` is not `name=value`"))?;
    let valid_name = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.starts_with("__");
    if !valid_name {
        return Err(format!("`{name}` is not a Prometheus label name"));
    }
    if ["k8s_node", "k8s_namespace", "k8s_pod"].contains(&name) {
        return Err(format!(
            "`{name}` is a standard label and cannot be redefined"
        ));
    }
    let mut parts = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(LabelPart::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{entry}`: `${{` without `}}`"))?;
        let var = &after[..end];
        let label = var.strip_prefix("labels:").ok_or_else(|| {
            format!("`{entry}`: only `${{labels:NAME}}` is supported, got `${{{var}}}`")
        })?;
        parts.push(LabelPart::PodLabel(label.to_string()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(LabelPart::Text(rest.to_string()));
    }
    Ok(AdditionalLabel {
        name: name.to_string(),
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additional_label_substitutes_pod_labels() {
        let label = parse_additional_label("app=svc-${labels:app}").unwrap();
        let mut pod = BTreeMap::new();
        pod.insert("app".to_string(), "web".to_string());
        assert_eq!(label.value(&pod), "svc-web");
        assert_eq!(label.value(&BTreeMap::new()), "svc-");
        assert!(parse_additional_label("noequals")
            .unwrap_err()
            .contains("name=value"));
        assert!(parse_additional_label("k8s_pod=x")
            .unwrap_err()
            .contains("standard label"));
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            parse_address(":9102").unwrap(),
            ListenAddress::Tcp("0.0.0.0:9102".parse().unwrap())
        );
        assert_eq!(
            parse_address("tcp://127.0.0.1:1").unwrap(),
            ListenAddress::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            parse_address("unix:///run/a.sock").unwrap(),
            ListenAddress::Unix("/run/a.sock".into())
        );
        assert!(parse_address("http://x:1").is_err());
    }
}
