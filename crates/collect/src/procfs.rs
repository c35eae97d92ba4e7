//! The procfs half of a namespace: sysctls, listening sockets, conntrack and IPVS.
//!
//! Must run on the namespace's own thread: `/proc/sys/net` shows the namespace of the task that
//! opens the file, and `/proc/thread-self/net` that of the calling thread (`/proc/net` and
//! `/proc/self/net` would show the main thread's). `/sys/class/net` is not used: it shows the
//! namespace sysfs was mounted in, not the thread's.
//!
//! The parsers take text so that they are tested on recorded kernel output too.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use netstack::state::{
    ConntrackEntry, ConntrackState, ConntrackTuple, ListeningSocket, MissingPart, NetnsState,
    StatePart,
};

/// The `/proc/sys/net` subtrees that matter to the datapath.
const SYSCTL_TREES: [&str; 5] = ["ipv4", "ipv6", "core", "bridge", "netfilter"];

/// Fills sysctls, sockets, conntrack and IPVS of the current thread's namespace.
pub fn read(state: &mut NetnsState) {
    match read_sysctls(Path::new("/proc/sys")) {
        Ok(sysctls) => state.sysctls = sysctls,
        Err(reason) => state.missing.push(MissingPart {
            part: StatePart::Sysctls,
            reason,
        }),
    }
    let net = Path::new("/proc/thread-self/net");
    let mut sockets = Vec::new();
    let mut socket_errors = Vec::new();
    for (file, protocol) in [("tcp", 6), ("tcp6", 6), ("udp", 17), ("udp6", 17)] {
        let path = net.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_sockets(&text, protocol) {
                Ok(found) => sockets.extend(found),
                Err(e) => socket_errors.push(format!("{}: {e}", path.display())),
            },
            // No IPv6 in this kernel: nothing can listen there.
            Err(e) if e.kind() == ErrorKind::NotFound && file.ends_with('6') => {}
            Err(e) => socket_errors.push(format!("{}: {e}", path.display())),
        }
    }
    if socket_errors.is_empty() {
        state.sockets = Some(sockets);
    } else {
        state.missing.push(MissingPart {
            part: StatePart::Sockets,
            reason: socket_errors.join("; "),
        });
    }
    match read_conntrack(net, &state.sysctls) {
        Ok(conntrack) => state.conntrack = Some(conntrack),
        Err(reason) => state.missing.push(MissingPart {
            part: StatePart::Conntrack,
            reason,
        }),
    }
    match std::fs::read_to_string(net.join("ip_vs")) {
        Ok(text) => state.ipvs = Some(text),
        Err(e) if e.kind() == ErrorKind::NotFound => state.missing.push(MissingPart {
            part: StatePart::Ipvs,
            reason: "the ip_vs module is not loaded (no /proc/net/ip_vs)".into(),
        }),
        Err(e) => state.missing.push(MissingPart {
            part: StatePart::Ipvs,
            reason: format!("/proc/net/ip_vs: {e}"),
        }),
    }
}

/// Every readable sysctl under `root/net/{ipv4,ipv6,core,bridge,netfilter}`, keyed by its path
/// below `root` (`net/ipv4/conf/eth0/rp_filter`). Write-only entries (`route/flush`: EACCES) and
/// entries the kernel refuses to show while unset (`stable_secret`: EIO) have no value and are
/// skipped; any other read error makes the whole part missing.
pub fn read_sysctls(root: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut sysctls = BTreeMap::new();
    let mut stack = Vec::new();
    for tree in SYSCTL_TREES {
        let dir = root.join("net").join(tree);
        if dir.is_dir() {
            stack.push(dir);
        }
    }
    if stack.is_empty() {
        return Err(format!("{} has no net/ sysctls", root.display()));
    }
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = entry.path();
            // The directory entry's type, not a stat: one syscall less on ~1000 files.
            let is_dir = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?
                .is_dir();
            if is_dir {
                stack.push(path);
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(value) => {
                    let key = path
                        .strip_prefix(root)
                        .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?
                        .to_string_lossy()
                        .into_owned();
                    sysctls.insert(key, value.trim().to_string());
                }
                // Write-only entries (`route/flush`) refuse reading even to root; `stable_secret`
                // refuses it with EIO until it is set. Neither has a value to record.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EIO)) => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    }
    Ok(sysctls)
}

/// `/proc/net/{tcp,tcp6,udp,udp6}` → listening TCP sockets and bound, unconnected UDP sockets.
pub fn parse_sockets(text: &str, protocol: u8) -> Result<Vec<ListeningSocket>, String> {
    // TCP_LISTEN; for UDP TCP_CLOSE (7) is the state of a bound, unconnected socket.
    let wanted_state = if protocol == 6 { "0A" } else { "07" };
    let mut sockets = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            return Err(format!("line {}: too few fields: {line:?}", number + 1));
        }
        if fields[3] != wanted_state {
            continue;
        }
        let (address, port) = parse_hex_endpoint(fields[1])
            .ok_or_else(|| format!("line {}: bad local address {:?}", number + 1, fields[1]))?;
        if port == 0 {
            continue;
        }
        sockets.push(ListeningSocket {
            protocol,
            address,
            port,
            dev: None,
            process: None,
        });
    }
    Ok(sockets)
}

/// `0100007F:1F90` (IPv4: one native-endian u32) or 32 hex digits (IPv6: four native-endian
/// u32 words), then the port in big-endian hex.
fn parse_hex_endpoint(field: &str) -> Option<(IpAddr, u16)> {
    let (address, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::swap_bytes);
    let address = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(address)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = word(&address[i * 8..i * 8 + 8])?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((address, port))
}

fn read_conntrack(
    net: &Path,
    sysctls: &BTreeMap<String, String>,
) -> Result<ConntrackState, String> {
    let table_path = net.join("nf_conntrack");
    let table = match std::fs::read_to_string(&table_path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err("the nf_conntrack module is not loaded (no /proc/net/nf_conntrack)".into())
        }
        Err(e) => return Err(format!("{}: {e}", table_path.display())),
    };
    let entries = parse_conntrack(&table).map_err(|e| format!("/proc/net/nf_conntrack: {e}"))?;
    let stats_path = net.join("stat/nf_conntrack");
    let stats = std::fs::read_to_string(&stats_path)
        .map_err(|e| format!("{}: {e}", stats_path.display()))
        .and_then(|text| {
            parse_conntrack_stats(&text)
                .map(|stats| {
                    stats
                        .into_iter()
                        .map(|(name, value)| (name.to_string(), value))
                        .collect()
                })
                .map_err(|e| format!("{}: {e}", stats_path.display()))
        })?;
    let number = |key: &str| sysctls.get(key).and_then(|v| v.parse().ok());
    Ok(ConntrackState {
        entries,
        count: number("net/netfilter/nf_conntrack_count"),
        max: number("net/netfilter/nf_conntrack_max"),
        stats,
    })
}

/// `/proc/net/nf_conntrack` lines:
/// `ipv4 2 tcp 6 431999 ESTABLISHED src=… dst=… sport=… dport=… src=… … [ASSURED] mark=0 zone=0 use=2`.
pub fn parse_conntrack(text: &str) -> Result<Vec<ConntrackEntry>, String> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let bad = |what: &str| format!("line {}: {what}: {line:?}", number + 1);
        let mut tokens = line.split_whitespace();
        let (Some(_l3), Some(_l3num), Some(_l4), Some(l4num), Some(timeout)) = (
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
        ) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(bad("too few fields"));
        };
        let protocol: u8 = l4num.parse().map_err(|_| bad("bad protocol number"))?;
        let mut entry = ConntrackEntry {
            protocol,
            original: empty_tuple(),
            reply: empty_tuple(),
            tcp_state: None,
            mark: 0,
            zone: 0,
            status: Vec::new(),
            timeout: Some(timeout.parse().map_err(|_| bad("bad timeout"))?),
        };
        // `src=` starts a tuple: the first is the original direction, the second the reply.
        let mut tuples_seen = 0;
        for token in tokens {
            if let Some(flag) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                entry.status.push(flag.to_string());
                continue;
            }
            let Some((key, value)) = token.split_once('=') else {
                entry.tcp_state = Some(token.to_string());
                continue;
            };
            if key == "src" {
                tuples_seen += 1;
            }
            let tuple = if tuples_seen <= 1 {
                &mut entry.original
            } else {
                &mut entry.reply
            };
            match key {
                "src" => tuple.src = value.parse().map_err(|_| bad("bad src"))?,
                "dst" => tuple.dst = value.parse().map_err(|_| bad("bad dst"))?,
                "sport" => tuple.sport = value.parse().map_err(|_| bad("bad sport"))?,
                "dport" => tuple.dport = value.parse().map_err(|_| bad("bad dport"))?,
                // ICMP: the id stands in for the port, as the state type documents.
                "id" => tuple.sport = value.parse().map_err(|_| bad("bad id"))?,
                "mark" => entry.mark = value.parse().map_err(|_| bad("bad mark"))?,
                "zone" => entry.zone = value.parse().map_err(|_| bad("bad zone"))?,
                _ => {}
            }
        }
        if tuples_seen != 2 {
            return Err(bad("expected an original and a reply tuple"));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn empty_tuple() -> ConntrackTuple {
    ConntrackTuple {
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
    }
}

/// `/proc/net/stat/nf_conntrack`: a header of column names, then one line of hex counters per
/// CPU; summed per column. `entries` is a global gauge repeated on every line, so it is taken
/// once rather than summed. The names borrow from `text`: the node agent parses this file for
/// every pod on every scrape.
pub fn parse_conntrack_stats(text: &str) -> Result<BTreeMap<&str, u64>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file")?
        .split_whitespace()
        .collect();
    let mut stats: BTreeMap<&str, u64> = BTreeMap::new();
    for (number, line) in lines.enumerate() {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != header.len() {
            return Err(format!(
                "line {}: {} values for {} columns",
                number + 2,
                values.len(),
                header.len()
            ));
        }
        for (name, value) in header.iter().zip(values) {
            let value = u64::from_str_radix(value, 16)
                .map_err(|_| format!("line {}: {name}: bad hex {value:?}", number + 2))?;
            let slot = stats.entry(*name).or_default();
            if *name == "entries" {
                *slot = value;
            } else {
                *slot += value;
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines in the layout the kernel prints (`tcp4_seq_show`, `udp6_sock_seq_show`): a TCP
    /// listener on 0.0.0.0:8080, an established connection, and `[::1]:53` bound for UDP. The
    /// live test (`tests/live.rs`) reads the real files.
    #[test]
    fn sockets_are_listeners_and_bound_udp_only() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0200F40A:9C40 0201F40A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 41240 1 0000000000000000 20 4 30 10 -1
";
        let sockets = parse_sockets(tcp, 6).unwrap();
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets[0].address, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(sockets[0].port, 8080);

        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  5: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5123 2 0000000000000000 0
";
        let sockets = parse_sockets(udp6, 17).unwrap();
        assert_eq!(sockets[0].address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(sockets[0].port, 53);
        assert!(parse_sockets("header\n 0: zz\n", 6).is_err());
    }

    #[test]
    fn conntrack_lines_give_both_directions_and_flags() {
        let text = "ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.2 dst=10.96.0.11 sport=40000 dport=80 src=10.244.1.2 dst=10.244.0.2 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 icmp     1 29 src=10.244.0.2 dst=10.244.1.2 type=8 code=0 id=7 src=10.244.1.2 dst=10.244.0.2 type=0 code=0 id=7 mark=16384 use=1
";
        let entries = parse_conntrack(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].tcp_state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(entries[0].original.dport, 80);
        assert_eq!(
            entries[0].reply.src,
            "10.244.1.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(entries[0].reply.sport, 8080);
        assert_eq!(entries[0].status, vec!["ASSURED".to_string()]);
        assert_eq!(entries[1].protocol, 1);
        assert_eq!(entries[1].original.sport, 7);
        assert_eq!(entries[1].mark, 16384);
        let err = parse_conntrack("ipv4 2 tcp 6 10 src=1.2.3.4\n").unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
    }

    #[test]
    fn conntrack_stats_sum_cpus_but_not_the_entries_gauge() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart found_bound
00000003  00000000 00000000 00000000 00000002 00000010 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000 00000000
00000003  00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000002 00000000 00000000 00000000  00000000 00000000 00000000 00000000 00000000
";
        let stats = parse_conntrack_stats(text).unwrap();
        assert_eq!(stats["entries"], 3);
        assert_eq!(stats["invalid"], 3);
        assert_eq!(stats["insert_failed"], 3);
        assert_eq!(stats["ignore"], 16);
    }
}
