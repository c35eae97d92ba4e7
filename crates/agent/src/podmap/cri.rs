//! CRI client: asks the container runtime (containerd, CRI-O) over its unix socket which pod
//! sandboxes are ready and where their network namespaces are.
//!
//! One query is `Version`, `ListPodSandbox(state=READY)`, then `PodSandboxStatus(verbose)` per
//! sandbox, all under one deadline ([`CRI_TIMEOUT`]), on a thread of its own with a
//! current-thread tokio runtime so that callers may be sync or inside a runtime. A socket that
//! does not answer gives [`CriError::Timeout`], never a hang.
//!
//! Where the netns is: the verbose `info["info"]` JSON, which containerd (`pkg/cri/server/
//! sandbox_status.go`) and CRI-O (`server/sandbox_status.go`) both fill with the sandbox's
//! `pid` and its OCI `runtimeSpec`, whose `linux.namespaces[type=network].path` is the netns
//! bind mount (`/var/run/netns/cni-…` for containerd, `/var/run/netns/<uuid>` for CRI-O). The
//! path is preferred (it outlives a restarting pause process); the pid is the fallback. A
//! sandbox whose status says network mode NODE is a hostNetwork pod: it shares the node's netns.
//!
//! Must not change anything in the runtime: read-only calls only.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, NamespaceMode, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest, PodSandboxStatusResponse, VersionRequest,
};
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint, Uri};

/// Deadline for one whole query (connect, version, list, every status).
pub const CRI_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the runtime could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{call} on {socket}: {status}")]
    Call {
        call: &'static str,
        socket: PathBuf,
        status: Box<tonic::Status>,
    },
    #[error("{socket} did not answer within {after:?}")]
    Timeout { socket: PathBuf, after: Duration },
    #[error("starting the CRI client thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The runtime behind the socket, as `Version` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub name: String,
    pub version: String,
}

/// A ready pod sandbox and where its network namespace is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub netns: SandboxNetns,
}

/// Where a sandbox's netns is, from its verbose status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxNetns {
    /// hostNetwork: the node's own netns.
    Node,
    /// The netns bind mount, with the sandbox pid as a fallback if the path cannot be opened.
    Path { path: PathBuf, pid: Option<u32> },
    /// Only the sandbox pid is known: `/proc/<pid>/ns/net`.
    Pid(u32),
    /// The status said neither; why, for `/status`.
    Unknown(String),
}

/// What one query found.
#[derive(Debug, Clone)]
pub struct Answer {
    pub runtime: Runtime,
    pub sandboxes: Vec<Sandbox>,
}

/// Ask the runtime at `socket`, within `timeout`.
pub fn query(socket: &Path, timeout: Duration) -> Result<Answer, CriError> {
    let socket = socket.to_path_buf();
    std::thread::Builder::new()
        .name("cri-query".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CriError::Thread)?;
            runtime.block_on(async {
                tokio::time::timeout(timeout, query_async(&socket))
                    .await
                    .unwrap_or_else(|_| {
                        Err(CriError::Timeout {
                            socket: socket.clone(),
                            after: timeout,
                        })
                    })
            })
        })
        .map_err(CriError::Thread)?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A RuntimeService client on the unix socket `socket` (without a deadline: callers bound it).
pub async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>, CriError> {
    let path = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector always dials the socket.
    let channel = Endpoint::from_static("http://cri.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|source| CriError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    Ok(RuntimeServiceClient::new(channel))
}

async fn query_async(socket: &Path) -> Result<Answer, CriError> {
    let call_error = |call| {
        move |status| CriError::Call {
            call,
            socket: socket.to_path_buf(),
            status: Box::new(status),
        }
    };
    let mut client = connect(socket).await?;
    let version = client
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(call_error("Version"))?
        .into_inner();
    let listed = client
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                state: Some(PodSandboxStateValue {
                    state: PodSandboxState::SandboxReady.into(),
                }),
                ..PodSandboxFilter::default()
            }),
        })
        .await
        .map_err(call_error("ListPodSandbox"))?
        .into_inner();
    let mut sandboxes = Vec::with_capacity(listed.items.len());
    for item in listed.items {
        let status = client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: item.id.clone(),
                verbose: true,
            })
            .await
            .map_err(call_error("PodSandboxStatus"))?
            .into_inner();
        let metadata = item.metadata.unwrap_or_default();
        sandboxes.push(Sandbox {
            netns: sandbox_netns(&status),
            id: item.id,
            namespace: metadata.namespace,
            name: metadata.name,
            uid: metadata.uid,
            labels: item.labels.into_iter().collect(),
        });
    }
    Ok(Answer {
        runtime: Runtime {
            name: version.runtime_name,
            version: version.runtime_version,
        },
        sandboxes,
    })
}

/// The part of the verbose `info["info"]` JSON that containerd and CRI-O share.
#[derive(Debug, Deserialize)]
struct VerboseInfo {
    #[serde(default)]
    pid: u32,
    #[serde(rename = "runtimeSpec")]
    runtime_spec: Option<RuntimeSpec>,
}

#[derive(Debug, Deserialize)]
struct RuntimeSpec {
    linux: Option<LinuxSpec>,
}

#[derive(Debug, Deserialize)]
struct LinuxSpec {
    #[serde(default)]
    namespaces: Vec<LinuxNamespace>,
}

#[derive(Debug, Deserialize)]
struct LinuxNamespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

/// Where the sandbox of this verbose status keeps its netns.
pub fn sandbox_netns(status: &PodSandboxStatusResponse) -> SandboxNetns {
    let network_mode = status
        .status
        .as_ref()
        .and_then(|s| s.linux.as_ref())
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network);
    if network_mode == Some(NamespaceMode::Node.into()) {
        return SandboxNetns::Node;
    }
    netns_of_info(&status.info)
}

/// Read `info["info"]` (both runtimes' shape) for the netns path and the sandbox pid.
pub fn netns_of_info(info: &HashMap<String, String>) -> SandboxNetns {
    let Some(json) = info.get("info") else {
        return SandboxNetns::Unknown("verbose status has no \"info\" entry".into());
    };
    let parsed: VerboseInfo = match serde_json::from_str(json) {
        Ok(parsed) => parsed,
        Err(e) => return SandboxNetns::Unknown(format!("verbose \"info\" is not its JSON: {e}")),
    };
    let pid = (parsed.pid != 0).then_some(parsed.pid);
    let path = parsed
        .runtime_spec
        .and_then(|spec| spec.linux)
        .and_then(|linux| {
            linux
                .namespaces
                .into_iter()
                .find(|ns| ns.kind == "network" && !ns.path.is_empty())
        })
        .map(|ns| PathBuf::from(ns.path));
    match (path, pid) {
        (Some(path), pid) => SandboxNetns::Path { path, pid },
        (None, Some(pid)) => SandboxNetns::Pid(pid),
        (None, None) => {
            SandboxNetns::Unknown("verbose \"info\" names neither a netns path nor a pid".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> HashMap<String, String> {
        HashMap::from([("info".to_string(), json.to_string())])
    }

    /// Trimmed from containerd 1.6/1.7 `crictl inspectp <id>` (`pkg/cri/server/
    /// sandbox_status.go` `SandboxInfo`): pid, processStatus, netNamespaceClosed, image,
    /// snapshotKey, snapshotter, runtimeHandler, runtimeType, runtimeOptions, config,
    /// runtimeSpec, cniResult; the fields read here are kept verbatim.
    const CONTAINERD_INFO: &str = r#"{
      "pid": 2741,
      "processStatus": "running",
      "netNamespaceClosed": false,
      "image": "registry.k8s.io/pause:3.8",
      "snapshotKey": "4f0c…",
      "snapshotter": "overlayfs",
      "runtimeHandler": "",
      "runtimeType": "io.containerd.runc.v2",
      "config": {"metadata": {"name": "coredns-5d78c9869d-8xk2p", "uid": "1c7e…",
                 "namespace": "kube-system"}, "hostname": "coredns-5d78c9869d-8xk2p"},
      "runtimeSpec": {"ociVersion": "1.0.2-dev", "process": {"args": ["/pause"]},
        "linux": {"namespaces": [
          {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
          {"type": "network", "path": "/var/run/netns/cni-9a3e5c1f-2d55-8b1e-6c0a-3f4e1b2d7a90"}
        ], "cgroupsPath": "kubepods-burstable-pod1c7e.slice:cri-containerd:4f0c"}},
      "cniResult": {"Interfaces": {"eth0": {"IPConfigs": [{"IP": "10.244.0.3"}]}}}
    }"#;

    /// Trimmed from CRI-O 1.29 `crictl inspectp <id>` (`server/sandbox_status.go`
    /// `createSandboxInfo`: image, pid, runtimeSpec; CRI-O manages the netns under
    /// `/var/run/netns/<uuid>`).
    const CRIO_INFO: &str = r#"{
      "image": "registry.k8s.io/pause:3.9",
      "pid": 10423,
      "runtimeSpec": {"ociVersion": "1.0.2-dev",
        "linux": {"namespaces": [
          {"type": "pid"},
          {"type": "network", "path": "/var/run/netns/7c0e54b7-07d4-4a33-a2b3-38fd7d8a2b2a"},
          {"type": "ipc", "path": "/var/run/ipcns/7c0e54b7-07d4-4a33-a2b3-38fd7d8a2b2a"},
          {"type": "uts", "path": "/var/run/utsns/7c0e54b7-07d4-4a33-a2b3-38fd7d8a2b2a"},
          {"type": "mount"}
        ]}}
    }"#;

    #[test]
    fn containerd_shape_gives_the_cni_netns_path_and_pid() {
        assert_eq!(
            netns_of_info(&info(CONTAINERD_INFO)),
            SandboxNetns::Path {
                path: "/var/run/netns/cni-9a3e5c1f-2d55-8b1e-6c0a-3f4e1b2d7a90".into(),
                pid: Some(2741)
            }
        );
    }

    #[test]
    fn crio_shape_gives_its_managed_netns_path_and_pid() {
        assert_eq!(
            netns_of_info(&info(CRIO_INFO)),
            SandboxNetns::Path {
                path: "/var/run/netns/7c0e54b7-07d4-4a33-a2b3-38fd7d8a2b2a".into(),
                pid: Some(10423)
            }
        );
    }

    #[test]
    fn a_spec_without_a_network_path_falls_back_to_the_pid() {
        let json =
            r#"{"pid": 77, "runtimeSpec": {"linux": {"namespaces": [{"type": "network"}]}}}"#;
        assert_eq!(netns_of_info(&info(json)), SandboxNetns::Pid(77));
    }

    #[test]
    fn missing_or_broken_info_is_unknown_with_the_reason() {
        let SandboxNetns::Unknown(why) = netns_of_info(&HashMap::new()) else {
            panic!("no info must be unknown");
        };
        assert!(why.contains("no \"info\""), "{why}");
        let SandboxNetns::Unknown(why) = netns_of_info(&info("{pid")) else {
            panic!("broken JSON must be unknown");
        };
        assert!(why.contains("not its JSON"), "{why}");
    }

    #[test]
    fn network_mode_node_is_the_node_whatever_info_says() {
        use k8s_cri::v1::{LinuxPodSandboxStatus, Namespace, NamespaceOption, PodSandboxStatus};
        let status = PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                linux: Some(LinuxPodSandboxStatus {
                    namespaces: Some(Namespace {
                        options: Some(NamespaceOption {
                            network: NamespaceMode::Node.into(),
                            ..NamespaceOption::default()
                        }),
                    }),
                }),
                ..PodSandboxStatus::default()
            }),
            info: info(CONTAINERD_INFO),
            ..PodSandboxStatusResponse::default()
        };
        assert_eq!(sandbox_netns(&status), SandboxNetns::Node);
    }
}
