//! Reading and parsing the per-netns files under `/proc/thread-self/net` (the calling thread
//! has entered the netns being collected) and the `Name: keys… / Name: values…` MIB format of
//! `snmp` and `netstat`. Shared by the procfs probes; knows no metric.

use std::collections::HashMap;

use crate::probe::ProbeError;

/// Read `/proc/thread-self/<rel>` (e.g. `net/dev`, `sys/net/netfilter/nf_conntrack_count`),
/// which resolves in the calling thread's netns.
pub(crate) fn read_thread(probe: &str, rel: &str) -> Result<String, ProbeError> {
    let path = format!("/proc/thread-self/{rel}");
    std::fs::read_to_string(&path).map_err(|e| ProbeError::read(probe, path, e))
}

/// Fail at probe creation when a file the probe needs does not exist here, so `/status`
/// says so instead of every scrape failing.
pub(crate) fn require(probe: &str, rel: &str, why: &str) -> Result<(), ProbeError> {
    let path = format!("/proc/thread-self/{rel}");
    if std::path::Path::new(&path).exists() {
        Ok(())
    } else {
        Err(ProbeError::unsupported(
            probe,
            format!("{path} does not exist ({why})"),
        ))
    }
}

/// `Section: key key…` / `Section: value value…` line pairs → section → lower-cased key → value.
/// Values are signed (`Tcp: MaxConn` is -1).
pub(crate) fn parse_mib(
    probe: &str,
    file: &str,
    text: &str,
) -> Result<HashMap<String, HashMap<String, i64>>, ProbeError> {
    let mut sections = HashMap::new();
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let Some(values) = lines.next() else {
            return Err(ProbeError::parse(
                probe,
                file,
                format!("header `{header}` without values"),
            ));
        };
        let (name, keys) = header
            .split_once(':')
            .ok_or_else(|| ProbeError::parse(probe, file, format!("no `:` in `{header}`")))?;
        let (vname, vals) = values
            .split_once(':')
            .ok_or_else(|| ProbeError::parse(probe, file, format!("no `:` in `{values}`")))?;
        if name != vname {
            return Err(ProbeError::parse(
                probe,
                file,
                format!("section `{name}` followed by `{vname}`"),
            ));
        }
        let mut map = HashMap::new();
        for (k, v) in keys.split_whitespace().zip(vals.split_whitespace()) {
            let v: i64 = v.parse().map_err(|_| {
                ProbeError::parse(probe, file, format!("{name}.{k}: `{v}` is not a number"))
            })?;
            map.insert(k.to_ascii_lowercase(), v);
        }
        sections.insert(name.to_string(), map);
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_pairs_parse_with_negative_values() {
        // Recorded from Linux 6.18 /proc/net/snmp (trimmed).
        let text = "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens\nTcp: 1 200 120000 -1 42\nUdp: InDatagrams NoPorts\nUdp: 7 1\n";
        let mib = parse_mib("tcp", "snmp", text).unwrap();
        assert_eq!(mib["Tcp"]["maxconn"], -1);
        assert_eq!(mib["Tcp"]["activeopens"], 42);
        assert_eq!(mib["Udp"]["noports"], 1);
        let err = parse_mib("tcp", "snmp", "Tcp: A\nUdp: 1\n").unwrap_err();
        assert!(err.to_string().contains("followed by"), "{err}");
    }
}
