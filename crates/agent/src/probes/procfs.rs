//! Reading and parsing the per-netns files under `/proc/thread-self/net` (the calling thread
//! has entered the netns being collected) and the `Name: keys… / Name: values…` MIB format of
//! `snmp` and `netstat`. Shared by the procfs probes; knows no metric.

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

/// The `section` of a MIB file of `Section: key key…` / `Section: value value…` line pairs:
/// (key as the kernel spells it, value). Values are signed (`Tcp: MaxConn` is -1). Borrows
/// from `text`: a scrape parses one section per probe and netns, so nothing is allocated for
/// the keys.
pub(crate) fn mib_section<'t>(
    probe: &str,
    file: &str,
    text: &'t str,
    section: &str,
) -> Result<Vec<(&'t str, i64)>, ProbeError> {
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
        if name != section {
            continue;
        }
        return keys
            .split_whitespace()
            .zip(vals.split_whitespace())
            .map(|(k, v)| {
                let v: i64 = v.parse().map_err(|_| {
                    ProbeError::parse(probe, file, format!("{name}.{k}: `{v}` is not a number"))
                })?;
                Ok((k, v))
            })
            .collect();
    }
    Err(ProbeError::parse(
        probe,
        file,
        format!("no `{section}` section"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_pairs_parse_with_negative_values() {
        // Recorded from Linux 6.18 /proc/net/snmp (trimmed).
        let text = "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens\nTcp: 1 200 120000 -1 42\nUdp: InDatagrams NoPorts\nUdp: 7 1\n";
        let tcp = mib_section("tcp", "snmp", text, "Tcp").unwrap();
        assert_eq!(tcp[3], ("MaxConn", -1));
        assert_eq!(tcp[4], ("ActiveOpens", 42));
        let udp = mib_section("udp", "snmp", text, "Udp").unwrap();
        assert_eq!(udp, [("InDatagrams", 7), ("NoPorts", 1)]);
        let err = mib_section("udp", "snmp", "Tcp: A\nUdp: 1\n", "Udp").unwrap_err();
        assert!(err.to_string().contains("followed by"), "{err}");
        let err = mib_section("ip", "snmp", text, "Ip").unwrap_err();
        assert!(err.to_string().contains("no `Ip` section"), "{err}");
    }
}
