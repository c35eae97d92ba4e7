//! Everything that touches the host: netns creation, `ip -batch`, `iptables-restore`, sysctls,
//! detached listeners.
//!
//! All changes go into network namespaces the lab created (named `nsl-<lab>-…`); nothing here may
//! touch the root namespace's links, addresses, routes or rules. Commands are batched (one `ip`
//! process per netns) because process start-up is what makes a lab slow.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::LabError;

/// Where `ip netns add` puts its bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

pub fn netns_path(netns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns)
}

/// Runs `program args…`, feeding `stdin`; errors carry the command line and its stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
    let command_line = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::io(format!("starting `{}`", command_line()), e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| LabError::io(format!("writing to `{}`", command_line()), e))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("waiting for `{}`", command_line()), e))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: command_line(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a batch of `ip` commands (one per line) inside `netns` (`None`: the caller's netns, only
/// for `netns add/del`).
pub fn ip_batch(netns: Option<&str>, commands: &[String]) -> Result<(), LabError> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut script = commands.join("\n");
    script.push('\n');
    match netns {
        Some(ns) => run("ip", &["-n", ns, "-batch", "-"], Some(&script)),
        None => run("ip", &["-batch", "-"], Some(&script)),
    }
    .map(drop)
}

/// Runs a batch of `bridge` commands (FDB entries) inside `netns`.
pub fn bridge_batch(netns: &str, commands: &[String]) -> Result<(), LabError> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut script = commands.join("\n");
    script.push('\n');
    run("bridge", &["-n", netns, "-batch", "-"], Some(&script)).map(drop)
}

/// Runs `command` inside `netns` via `ip netns exec`.
pub fn netns_exec(netns: &str, command: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
    let mut args = vec!["netns", "exec", netns];
    args.extend_from_slice(command);
    run("ip", &args, stdin)
}

/// Replaces the iptables tables named in `rules` inside `netns` (`noflush`: add to them).
pub fn iptables_restore(netns: &str, rules: &str, noflush: bool) -> Result<(), LabError> {
    let command: &[&str] = if noflush {
        &["iptables-restore", "--noflush"]
    } else {
        &["iptables-restore"]
    };
    netns_exec(netns, command, Some(rules)).map(drop)
}

/// Runs `work` on a thread that has joined `netns`, so sockets it opens and `/proc/sys/net` files
/// it writes belong to that netns. The calling thread's namespace is never changed.
pub fn in_netns<T: Send>(
    netns: &str,
    work: impl FnOnce() -> Result<T, LabError> + Send,
) -> Result<T, LabError> {
    let path = netns_path(netns);
    let handle =
        File::open(&path).map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| LabError::io(format!("entering netns {netns}"), e.into()))?;
                work()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(LabError::Invalid(format!(
                    "worker thread in netns {netns} panicked"
                )))
            })
    })
}

/// Writes sysctls (`net/ipv4/ip_forward` style keys, relative to `/proc/sys`) inside `netns`.
/// Keys whose file does not exist are skipped when `optional` is set on them (e.g. br_netfilter's
/// `net/bridge/…` when the module is absent).
pub fn write_sysctls(netns: &str, settings: &[Sysctl]) -> Result<(), LabError> {
    in_netns(netns, || {
        for setting in settings {
            let path = Path::new("/proc/sys").join(&setting.key);
            if setting.optional && !path.exists() {
                continue;
            }
            std::fs::write(&path, &setting.value).map_err(|e| {
                LabError::io(format!("setting {} in netns {netns}", setting.key), e)
            })?;
        }
        Ok(())
    })
}

/// One sysctl to write.
#[derive(Debug, Clone)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
    pub optional: bool,
}

impl Sysctl {
    pub fn new(key: impl Into<String>, value: impl ToString) -> Sysctl {
        Sysctl {
            key: key.into(),
            value: value.to_string(),
            optional: false,
        }
    }
    pub fn optional(key: impl Into<String>, value: impl ToString) -> Sysctl {
        Sysctl {
            optional: true,
            ..Sysctl::new(key, value)
        }
    }
}

/// Lists the netns whose names start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Kills every process inside the given netns (the lab's listeners and anything a user started
/// with `lab exec … &`), then deletes the netns; their devices go with them.
pub fn delete_netns(names: &[String]) -> Result<(), LabError> {
    for name in names {
        // `ip netns pids` only lists processes whose netns is exactly this one: never anything else.
        if let Ok(pids) = run("ip", &["netns", "pids", name], None) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // A process that exited since `ip netns pids` ran is fine to miss.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let commands: Vec<String> = names.iter().map(|n| format!("netns del {n}")).collect();
    // One batch; -force keeps going past a netns that another `down` removed concurrently.
    let mut script = commands.join("\n");
    script.push('\n');
    run("ip", &["-force", "-batch", "-"], Some(&script))
        .map(drop)
        .or_else(|err| {
            let left: Vec<&String> = names.iter().filter(|n| netns_path(n).exists()).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(err)
            }
        })
}

/// Starts `program args…` inside `netns`, detached (own process group, no stdin/stderr). Its
/// stdout is piped so the caller can wait for its readiness line ([`wait_ready`]). It lives until
/// killed (`down` kills every process in the lab's netns).
pub fn spawn_detached(
    netns: &str,
    program: &Path,
    args: &[String],
) -> Result<std::process::Child, LabError> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(program)
        .args(args);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            LabError::io(
                format!("starting listener {} in netns {netns}", program.display()),
                e,
            )
        })?;
    Ok(child)
}

/// Blocks until a process from [`spawn_detached`] prints its first line (a listener prints it once
/// its sockets are bound), so probes never race the listener — and no sleep is needed.
pub fn wait_ready(child: &mut std::process::Child, what: &str) -> Result<(), LabError> {
    use std::io::BufRead;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| LabError::Invalid(format!("{what}: no stdout pipe")))?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| LabError::io(what.to_string(), e))?;
    if line.trim() == crate::serve::READY_LINE {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "{what} did not start (is the listener program a netsleuth build?)"
        )))
    }
}
