//! /proc fallback (no CRI socket, or the runtime did not answer): find pod network namespaces
//! from processes.
//!
//! For every `<proc>/<pid>/ns/net` whose inode is neither the host's nor already mapped, the
//! pod is the kubelet pod UID in one of its processes' cgroup paths (`kubepods-burstable-pod
//! <uid with _>.slice` with the systemd driver, `kubepods/burstable/pod<uid>` with cgroupfs),
//! named by the kubelet's log directory `<pods log dir>/<namespace>_<name>_<uid>/`. Without that
//! directory only the process's `HOSTNAME` (its environment) names the pod, and the namespace is
//! unknown ([`Found::name_from_hostname`]). A netns without a kubepods cgroup is not a pod (a
//! lab, a test, a VPN…) and is left unmapped.
//!
//! Reads only; must not enter any namespace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::netns_inode;

/// A pod netns found through /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub netns: u64,
    /// `<proc>/<pid>/ns/net` of one of its processes.
    pub path: PathBuf,
    pub uid: String,
    /// Empty when only `HOSTNAME` named the pod.
    pub namespace: String,
    pub name: String,
    /// The kubelet's log directory for this UID was missing: the name is the `HOSTNAME` env.
    pub name_from_hostname: bool,
}

/// Kubelet pod UID in a `/proc/<pid>/cgroup` file's paths, in either cgroup driver's spelling.
pub fn pod_uid_of_cgroup(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .find_map(|segment| {
            // systemd: kubepods-burstable-pod<uid>.slice (uid with '_' for '-');
            // cgroupfs: pod<uid>.
            let segment = segment.strip_suffix(".slice").unwrap_or(segment);
            let (_, uid) = segment.rsplit_once("pod")?;
            let uid = uid.replace('_', "-");
            is_uid(&uid).then_some(uid)
        })
}

/// A Kubernetes UID: 36 characters, hex digits and dashes in the 8-4-4-4-12 layout.
fn is_uid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `<namespace>_<name>_<uid>` directories of the kubelet's pod logs, by UID.
pub fn pods_by_uid(pods_log_dir: &Path) -> HashMap<String, (String, String)> {
    let Ok(read) = std::fs::read_dir(pods_log_dir) else {
        return HashMap::new();
    };
    read.flatten()
        .filter_map(|entry| {
            let dir = entry.file_name().into_string().ok()?;
            // Namespaces and pod names cannot contain '_', so the split is unambiguous.
            let mut parts = dir.splitn(3, '_');
            let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
            Some((uid.to_string(), (namespace.to_string(), name.to_string())))
        })
        .collect()
}

fn hostname_of(proc_dir: &Path) -> Option<String> {
    let environ = std::fs::read(proc_dir.join("environ")).ok()?;
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"HOSTNAME="))
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
        .filter(|v| !v.is_empty())
}

/// Walk `proc_root` for pod netns not in `skip` (the host's and those mapped already).
pub fn scan(proc_root: &Path, pods_log_dir: &Path, skip: impl Fn(u64) -> bool) -> Vec<Found> {
    let Ok(read) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let pods = pods_by_uid(pods_log_dir);
    let mut found: HashMap<u64, Found> = HashMap::new();
    for entry in read.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let proc_dir = entry.path();
        let path = proc_dir.join("ns/net");
        // Processes come and go during the walk: a vanished one is simply not there.
        let Ok(netns) = netns_inode(&path) else {
            continue;
        };
        if skip(netns) || found.contains_key(&netns) {
            continue;
        }
        let Some(uid) = std::fs::read_to_string(proc_dir.join("cgroup"))
            .ok()
            .as_deref()
            .and_then(pod_uid_of_cgroup)
        else {
            continue;
        };
        let (namespace, name, name_from_hostname) = match pods.get(&uid) {
            Some((namespace, name)) => (namespace.clone(), name.clone(), false),
            None => match hostname_of(&proc_dir) {
                Some(hostname) => (String::new(), hostname, true),
                // Another process of this netns may still carry HOSTNAME.
                None => continue,
            },
        };
        found.insert(
            netns,
            Found {
                netns,
                path,
                uid,
                namespace,
                name,
                name_from_hostname,
            },
        );
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uid_from_systemd_and_cgroupfs_paths() {
        let systemd = "0::/kubepods.slice/kubepods-burstable.slice/\
            kubepods-burstable-pod1c7e3f0a_55d2_4e8b_9c1a_0b2d3e4f5a6b.slice/cri-containerd-4f0c.scope\n";
        assert_eq!(
            pod_uid_of_cgroup(systemd).as_deref(),
            Some("1c7e3f0a-55d2-4e8b-9c1a-0b2d3e4f5a6b")
        );
        let cgroupfs =
            "12:memory:/kubepods/besteffort/pod1c7e3f0a-55d2-4e8b-9c1a-0b2d3e4f5a6b/4f0c\n";
        assert_eq!(
            pod_uid_of_cgroup(cgroupfs).as_deref(),
            Some("1c7e3f0a-55d2-4e8b-9c1a-0b2d3e4f5a6b")
        );
        assert_eq!(
            pod_uid_of_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
        assert_eq!(pod_uid_of_cgroup("0::/podman/pod-notauid\n"), None);
    }

    #[test]
    fn log_dirs_name_namespace_and_pod_by_uid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(
            dir.path()
                .join("kube-system_coredns-5d78c9869d-8xk2p_1c7e3f0a-55d2-4e8b-9c1a-0b2d3e4f5a6b"),
        )
        .unwrap();
        let pods = pods_by_uid(dir.path());
        assert_eq!(
            pods.get("1c7e3f0a-55d2-4e8b-9c1a-0b2d3e4f5a6b"),
            Some(&(
                "kube-system".to_string(),
                "coredns-5d78c9869d-8xk2p".to_string()
            ))
        );
    }
}
