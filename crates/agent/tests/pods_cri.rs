//! The pod map's CRI client against a real containerd (Debian's, CRI plugin built in) started
//! with a private config, root, state and socket, running a real pod sandbox (a pause image
//! built here from a static binary, CNI `bridge` on a private 10.231.x subnet); and against
//! sockets that do not speak CRI. containerd, runc, the CNI plugins or clang missing is a
//! failure, not a skip: `scripts/install-deps.sh` installs them.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agent::podmap::{cri, netns_inode, CriState, Owner, PodMap, PodMapSources, ProcRoots, Source};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

/// The sandbox image containerd is told to use; imported from a tarball, never pulled.
const PAUSE_IMAGE: &str = "netsleuth.invalid/pause:1";

/// A containerd of our own, killed on drop with its CNI bridge (its temp dir goes with it).
struct Containerd {
    child: Child,
    socket: PathBuf,
    bridge: String,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("hpb-ctd")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        // One bridge name per containerd: each guard deletes its own on drop.
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let bridge = format!(
            "hpb{}-{}",
            std::process::id() % 1_000_000,
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::create_dir(dir.path().join("cni")).unwrap();
        std::fs::write(
            dir.path().join("cni/10-hpb.conflist"),
            format!(
                r#"{{"cniVersion": "0.4.0", "name": "hpb-net", "plugins": [{{"type": "bridge",
                "bridge": "{bridge}", "isGateway": false, "ipMasq": false, "ipam": {{
                "type": "host-local", "subnet": "10.231.0.0/24", "dataDir": "{root}/ipam"}}}}]}}"#,
                root = dir.path().display(),
            ),
        )
        .unwrap();
        std::fs::write(
            &config,
            format!(
                "version = 2\n\
                 root = \"{root}/root\"\n\
                 state = \"{root}/state\"\n\
                 [grpc]\n  address = \"{socket}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n\
                 \x20 netns_mounts_under_state_dir = true\n\
                 \x20 restrict_oom_score_adj = true\n\
                 \x20 sandbox_image = \"{PAUSE_IMAGE}\"\n\
                 \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
                 \x20   bin_dir = \"/usr/lib/cni\"\n\
                 \x20   conf_dir = \"{root}/cni\"\n",
                root = dir.path().display(),
                socket = socket.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is needed for this test (scripts/install-deps.sh installs it)");
        let mut containerd = Containerd {
            child,
            socket,
            bridge,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !containerd.socket.exists() {
            if let Some(status) = containerd.child.try_wait().unwrap() {
                panic!("containerd exited ({status}): {}", containerd.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd never made its socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Build a one-layer image holding a static `/pause` (sleeps until SIGTERM) and import it.
    fn import_pause_image(&self) {
        let work = self.dir.path().join("image");
        std::fs::create_dir_all(work.join("rootfs")).unwrap();
        std::fs::write(
            work.join("pause.c"),
            "#include <signal.h>\n#include <unistd.h>\n\
             static void bye(int s) { (void)s; _exit(0); }\n\
             int main(void) { signal(SIGTERM, bye); signal(SIGINT, bye); for (;;) pause(); }\n",
        )
        .unwrap();
        run(Command::new("clang")
            .args(["-static", "-O2", "-o", "rootfs/pause", "pause.c"])
            .current_dir(&work));
        run(Command::new("tar")
            .args(["-C", "rootfs", "-cf", "layer.tar", "pause"])
            .current_dir(&work));
        let layer = sha256(&work.join("layer.tar"));
        let config = format!(
            r#"{{"architecture": "amd64", "os": "linux", "config": {{"Entrypoint": ["/pause"]}},
            "rootfs": {{"type": "layers", "diff_ids": ["sha256:{layer}"]}}}}"#
        );
        std::fs::write(work.join("config.json"), config).unwrap();
        let config_name = format!("{}.json", sha256(&work.join("config.json")));
        std::fs::rename(work.join("config.json"), work.join(&config_name)).unwrap();
        std::fs::write(
            work.join("manifest.json"),
            format!(
                r#"[{{"Config": "{config_name}", "RepoTags": ["{PAUSE_IMAGE}"], "Layers": ["layer.tar"]}}]"#
            ),
        )
        .unwrap();
        run(Command::new("tar")
            .args([
                "-cf",
                "image.tar",
                "manifest.json",
                &config_name,
                "layer.tar",
            ])
            .current_dir(&work));
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(work.join("image.tar")));
    }

    /// Run `f` with a CRI client on this containerd.
    fn with_client<T>(&self, f: impl AsyncFnOnce(&mut RuntimeServiceClient<Channel>) -> T) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut client = cri::connect(&self.socket).await.unwrap();
                f(&mut client).await
            })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// A pod sandbox, stopped and removed on drop (before its containerd goes).
struct RunningSandbox<'a> {
    containerd: &'a Containerd,
    id: String,
}

impl Drop for RunningSandbox<'_> {
    fn drop(&mut self) {
        let id = self.id.clone();
        self.containerd.with_client(async |client| {
            let _ = client
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            let _ = client
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await;
        });
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sha256(file: &Path) -> String {
    let output = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

fn podmap_on(socket: &Path) -> PodMap {
    let nothing = tempfile::tempdir().unwrap();
    PodMap::with_roots(
        PodMapSources {
            node: "node-1".into(),
            inventory_dir: None,
            cri_socket: Some(socket.to_path_buf()),
        },
        // No /proc fallback in play: only the CRI side is under test here.
        ProcRoots {
            proc_root: nothing.path().join("proc"),
            pods_log_dir: nothing.path().join("pods"),
        },
    )
}

#[test]
fn real_containerd_answers_version_and_list_through_the_client() {
    let version = Command::new("containerd")
        .arg("--version")
        .output()
        .expect("containerd is needed for this test (scripts/install-deps.sh installs it)");
    // "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
    let version = String::from_utf8(version.stdout).unwrap();
    let expected_version = version.split_whitespace().nth(2).unwrap().to_string();
    let containerd = Containerd::start();

    let map = podmap_on(&containerd.socket);
    assert_eq!(
        map.cri(),
        CriState::Connected {
            socket: containerd.socket.clone(),
            runtime: "containerd".into(),
            version: expected_version,
            sandboxes: 0,
        },
        "containerd log: {}",
        containerd.log()
    );
    assert_eq!(map.entities().len(), 1, "only the node: no sandbox runs");
    assert!(map.problems().is_empty(), "{:?}", map.problems());
}

#[test]
fn a_real_pod_sandbox_maps_to_its_pod_with_labels() {
    let containerd = Containerd::start();
    containerd.import_pause_image();
    let logs = containerd.dir.path().join("pods/shop_web-1_hpb");
    std::fs::create_dir_all(&logs).unwrap();
    let id = containerd.with_client(async |client| {
        client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: "web-1".into(),
                        uid: "2b9a7c1e-0d4f-4e8a-9b6c-1f2e3d4c5b6a".into(),
                        namespace: "shop".into(),
                        attempt: 0,
                    }),
                    hostname: "web-1".into(),
                    log_directory: logs.display().to_string(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                    linux: Some(LinuxPodSandboxConfig::default()),
                    ..PodSandboxConfig::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    });
    let id = id.unwrap_or_else(|status| {
        panic!(
            "RunPodSandbox: {status}\ncontainerd log: {}",
            containerd.log()
        )
    });
    let _sandbox = RunningSandbox {
        containerd: &containerd,
        id,
    };

    let map = PodMap::with_roots(
        PodMapSources {
            node: "node-1".into(),
            inventory_dir: None,
            cri_socket: Some(containerd.socket.clone()),
        },
        ProcRoots::default(),
    );
    assert!(
        matches!(map.cri(), CriState::Connected { sandboxes: 1, .. }),
        "{:?}",
        map.cri()
    );
    let pod = map
        .entities()
        .into_iter()
        .find(|e| !e.is_host())
        .unwrap_or_else(|| panic!("sandbox not mapped; problems: {:?}", map.problems()));
    assert_eq!(
        pod.owner,
        Owner::Pod {
            namespace: "shop".into(),
            name: "web-1".into()
        }
    );
    assert_eq!(pod.source, Source::Cri);
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
    // The netns containerd made (the only one under its state dir) is the one mapped.
    let netns_dir = containerd
        .dir
        .path()
        .join("state/io.containerd.grpc.v1.cri/netns");
    let made: Vec<PathBuf> = std::fs::read_dir(&netns_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(pod.path, made[0]);
    assert_eq!(pod.netns, netns_inode(&made[0]).unwrap());
    assert_ne!(pod.netns, map.host().netns);
}

#[test]
fn a_socket_that_hangs_up_is_failed_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hangup.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accept and close at once, forever (the thread ends with the test process).
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let map = podmap_on(&socket);
    let CriState::Failed {
        socket: failed,
        error,
    } = map.cri()
    else {
        panic!("a socket that hangs up must be failed: {:?}", map.cri());
    };
    assert_eq!(failed, socket);
    assert!(error.contains(&socket.display().to_string()), "{error}");
    assert_eq!(map.entities().len(), 1, "only the node");
}

#[test]
fn a_path_that_is_no_socket_is_absent_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("containerd.sock");
    std::fs::write(&file, "").unwrap();
    assert_eq!(
        podmap_on(&file).cri(),
        CriState::Absent {
            looked_at: vec![file]
        }
    );
}
