//! The /proc fallback of the pod map with real parts: processes in network namespaces of their
//! own (`unshare --net`), moved into real cgroup v2 directories shaped like the kubelet's (under
//! the machine's cgroup2 mount), and a pod log directory like the kubelet's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::podmap::{netns_inode, CriState, Owner, PodMap, PodMapSources, ProcRoots, Source};
use agent::status::Status;

/// The cgroup2 mount point (`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on
/// a hybrid one).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("this test needs a cgroup2 mount")
}

/// A process asleep in a netns of its own, in a cgroup directory of ours; killed and its
/// cgroup directories removed on drop.
struct PodProcess {
    child: Child,
    netns: u64,
    /// Deepest first, for removal.
    cgroup_dirs: Vec<PathBuf>,
}

impl PodProcess {
    /// `cgroup` relative to the test's own cgroup root, e.g. `kubepods.slice/…/pod….slice`.
    fn start(root: &Path, cgroup: &str, hostname: Option<&str>) -> PodProcess {
        let mut command = Command::new("unshare");
        command
            .args(["--net", "sleep", "600"])
            .env_remove("HOSTNAME")
            .stdin(Stdio::null());
        if let Some(hostname) = hostname {
            command.env("HOSTNAME", hostname);
        }
        let child = command.spawn().expect("run unshare");
        let mut process = PodProcess {
            child,
            netns: 0,
            cgroup_dirs: Vec::new(),
        };
        let mut dir = root.to_path_buf();
        for part in cgroup.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                process.cgroup_dirs.insert(0, dir.clone());
            }
        }
        std::fs::write(dir.join("cgroup.procs"), process.child.id().to_string()).unwrap();
        // unshare execs sleep once the netns is made: wait for the pid to leave ours.
        let ours = netns_inode(Path::new("/proc/self/ns/net")).unwrap();
        let path = process.netns_path();
        let deadline = Instant::now() + Duration::from_secs(10);
        while netns_inode(&path).unwrap() == ours {
            assert!(
                Instant::now() < deadline,
                "unshare never entered a new netns"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process.netns = netns_inode(&path).unwrap();
        process
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.child.id()))
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in &self.cgroup_dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The test's own cgroup directory, removed on drop (after the processes' directories).
struct CgroupRoot(PathBuf);

impl CgroupRoot {
    fn new(tag: &str) -> CgroupRoot {
        let dir = cgroup2_mount().join(format!("hpb-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create a cgroup (needs root and cgroup2)");
        CgroupRoot(dir)
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

const UID_WEB: &str = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const UID_API: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4e";
const UID_LATE: &str = "11111111-2222-4333-8444-555555555555";

fn systemd_cgroup(uid: &str) -> String {
    format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        uid.replace('-', "_")
    )
}

fn podmap(cri_socket: PathBuf, pods_log_dir: &Path) -> PodMap {
    PodMap::with_roots(
        PodMapSources {
            node: "node-1".into(),
            inventory_dir: None,
            cri_socket: Some(cri_socket),
        },
        ProcRoots {
            proc_root: "/proc".into(),
            pods_log_dir: pods_log_dir.to_path_buf(),
        },
    )
}

#[test]
fn pods_are_found_through_their_cgroups_and_the_kubelet_log_dirs() {
    let root = CgroupRoot::new("procfs");
    let logs = tempfile::tempdir().unwrap();
    std::fs::create_dir(logs.path().join(format!("shop_web-7c9d_{UID_WEB}"))).unwrap();
    // systemd driver, with its log dir: namespace and name from the dir.
    let web = PodProcess::start(&root.0, &systemd_cgroup(UID_WEB), Some("ignored"));
    // cgroupfs driver, no log dir: only HOSTNAME names it.
    let api = PodProcess::start(
        &root.0,
        &format!("kubepods/besteffort/pod{UID_API}"),
        Some("api-5f6b"),
    );
    // A netns that is no pod (no kubepods cgroup): left unmapped.
    let other = PodProcess::start(&root.0, "not-a-pod", Some("vpn"));

    let map = podmap(logs.path().join("no-cri.sock"), logs.path());
    let CriState::Absent { looked_at } = map.cri() else {
        panic!("no socket must be absent: {:?}", map.cri());
    };
    assert_eq!(looked_at, vec![logs.path().join("no-cri.sock")]);

    let web_entity = map.get(web.netns).expect("web pod mapped");
    assert_eq!(
        web_entity.owner,
        Owner::Pod {
            namespace: "shop".into(),
            name: "web-7c9d".into()
        }
    );
    assert_eq!(web_entity.source, Source::ProcCgroup);
    assert_eq!(web_entity.node, "node-1");
    // The path is one setns(2) can use: the same netns.
    assert_eq!(netns_inode(&web_entity.path).unwrap(), web.netns);

    let api_entity = map.get(api.netns).expect("api pod mapped by HOSTNAME");
    assert_eq!(
        api_entity.owner,
        Owner::Pod {
            namespace: String::new(),
            name: "api-5f6b".into()
        }
    );
    assert_eq!(api_entity.source, Source::ProcHostname);

    assert!(
        map.get(other.netns).is_none(),
        "a non-pod netns must stay unmapped"
    );
    assert!(map.get(map.host().netns).unwrap().is_host());

    // `/status` says which source mapped each pod and why there was no CRI.
    let status = serde_json::to_value(Status::new(Vec::new(), Vec::new(), &map, 256)).unwrap();
    let pods = &status["pods"];
    assert_eq!(pods["sources"]["shop/web-7c9d"], "proc_cgroup", "{pods}");
    assert_eq!(pods["sources"]["/api-5f6b"], "proc_hostname", "{pods}");
    assert_eq!(pods["cri"]["state"], "absent", "{pods}");
}

#[test]
fn an_unknown_netns_asks_for_a_refresh_that_maps_the_new_pod() {
    let root = CgroupRoot::new("late");
    let logs = tempfile::tempdir().unwrap();
    let map = Arc::new(podmap(logs.path().join("no-cri.sock"), logs.path()));
    // A slow timer far beyond the test: only the unknown netns can cause the refresh.
    map.spawn_refresher(Duration::from_secs(3600)).unwrap();

    std::fs::create_dir(logs.path().join(format!("default_late-1_{UID_LATE}"))).unwrap();
    let late = PodProcess::start(&root.0, &systemd_cgroup(UID_LATE), None);
    assert!(map.get(late.netns).is_none(), "not mapped before a refresh");
    let deadline = Instant::now() + Duration::from_secs(60);
    let entity = loop {
        if let Some(entity) = map.get(late.netns) {
            break entity;
        }
        assert!(
            Instant::now() < deadline,
            "the unknown netns never got mapped"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entity.pod(), "late-1");
    assert_eq!(entity.namespace(), "default");
}

#[test]
fn a_cri_socket_that_never_answers_is_failed_and_pods_come_from_proc() {
    let root = CgroupRoot::new("dead");
    let logs = tempfile::tempdir().unwrap();
    std::fs::create_dir(logs.path().join(format!("shop_web-7c9d_{UID_WEB}"))).unwrap();
    let web = PodProcess::start(&root.0, &systemd_cgroup(UID_WEB), None);
    // Connections queue in the backlog and are never accepted nor answered.
    let socket = logs.path().join("dead.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();

    let map = podmap(socket.clone(), logs.path());
    let CriState::Failed {
        socket: failed,
        error,
    } = map.cri()
    else {
        panic!("a dead socket must be failed: {:?}", map.cri());
    };
    assert_eq!(failed, socket);
    assert!(error.contains("did not answer"), "{error}");
    assert_eq!(map.get(web.netns).unwrap().pod(), "web-7c9d");
}
