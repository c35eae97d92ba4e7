//! The parts only the kernel's own tools print: `iptables-save` / `ip6tables-save` (with the
//! backend they use), `nft -j list ruleset` and `ipset save`, kept verbatim.
//!
//! The tools are started from the namespace's own thread, so they run in that namespace (a child
//! inherits the namespaces of the thread that forks it). They are all started before the netlink
//! and procfs reading and waited for after it, so their start-up cost overlaps that work.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use netstack::state::{IptablesBackend, IptablesDump, MissingPart, NetnsState, StatePart};

/// The tools, started and running.
pub struct Running {
    iptables: Result<Child, String>,
    ip6tables: Result<Child, String>,
    nft: Result<Child, String>,
    ipset: Result<Child, String>,
}

fn spawn(program: &str, args: &[&str]) -> Result<Child, String> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))
}

/// Starts the tools in the calling thread's namespace.
pub fn start() -> Running {
    Running {
        iptables: spawn("iptables-save", &[]),
        ip6tables: spawn("ip6tables-save", &[]),
        nft: spawn("nft", &["-j", "list", "ruleset"]),
        ipset: spawn("ipset", &["save"]),
    }
}

/// Standard output of a finished tool, or why there is none.
fn finish(child: Result<Child, String>, what: &str) -> Result<String, String> {
    let output = child?
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("{what} printed invalid UTF-8"))
}

/// Which backend `iptables-save` uses, from `iptables -V` (`iptables v1.8.9 (nf_tables)`); the
/// binary is the same for every namespace, so it is asked once per process.
pub fn iptables_backend() -> Result<IptablesBackend, String> {
    static BACKEND: OnceLock<Result<IptablesBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let output = Command::new("iptables")
                .arg("-V")
                .output()
                .map_err(|e| format!("cannot run iptables -V: {e}"))?;
            parse_backend(&String::from_utf8_lossy(&output.stdout))
        })
        .clone()
}

fn parse_backend(version: &str) -> Result<IptablesBackend, String> {
    if version.contains("(nf_tables)") {
        Ok(IptablesBackend::Nft)
    } else if version.contains("(legacy)") || version.starts_with("iptables v1.4") {
        Ok(IptablesBackend::Legacy)
    } else {
        Err(format!(
            "cannot tell the iptables backend from `iptables -V`: {:?}",
            version.trim()
        ))
    }
}

impl Running {
    /// Waits for every tool and stores its output, or the reason it is missing.
    pub fn finish_into(self, state: &mut NetnsState) {
        let ipv4 = finish(self.iptables, "iptables-save");
        let ipv6 = finish(self.ip6tables, "ip6tables-save");
        match (iptables_backend(), ipv4, ipv6) {
            (Ok(backend), Ok(ipv4), ipv6) => {
                if let Err(reason) = &ipv6 {
                    // IPv4 alone is still useful; IPv6 rules are then unknown, and said so.
                    state.missing.push(MissingPart {
                        part: StatePart::Iptables,
                        reason: format!("IPv6 rules only: {reason}"),
                    });
                }
                state.iptables = Some(IptablesDump {
                    backend,
                    ipv4: Some(ipv4.into()),
                    ipv6: ipv6.ok().map(Into::into),
                });
            }
            (Err(reason), _, _) | (_, Err(reason), _) => state.missing.push(MissingPart {
                part: StatePart::Iptables,
                reason,
            }),
        }
        match finish(self.nft, "nft -j list ruleset") {
            Ok(json) => state.nftables = Some(json),
            Err(reason) => state.missing.push(MissingPart {
                part: StatePart::Nftables,
                reason,
            }),
        }
        match finish(self.ipset, "ipset save") {
            Ok(text) => state.ipsets = Some(text),
            Err(reason) => state.missing.push(MissingPart {
                part: StatePart::Ipsets,
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_comes_from_the_version_banner() {
        assert_eq!(
            parse_backend("iptables v1.8.9 (nf_tables)\n"),
            Ok(IptablesBackend::Nft)
        );
        assert_eq!(
            parse_backend("iptables v1.8.7 (legacy)\n"),
            Ok(IptablesBackend::Legacy)
        );
        assert!(parse_backend("something else").is_err());
    }
}
