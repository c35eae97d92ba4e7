//! The pod map's CRI client against a real containerd (Debian's, CRI plugin built in) started
//! with a private config, root, state and socket; and against sockets that do not speak CRI.
//! containerd missing is a failure, not a skip: `scripts/install-deps.sh` installs it.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::podmap::{CriState, PodMap, PodMapSources, ProcRoots};

/// A containerd of our own, killed on drop (its temp dir goes with the guard).
struct Containerd {
    child: Child,
    socket: PathBuf,
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
        std::fs::create_dir(dir.path().join("cni")).unwrap();
        std::fs::write(
            &config,
            format!(
                "version = 2\n\
                 root = \"{root}/root\"\n\
                 state = \"{root}/state\"\n\
                 [grpc]\n  address = \"{socket}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n\
                 \x20 netns_mounts_under_state_dir = true\n\
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
        let mut containerd = Containerd { child, socket, dir };
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
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
