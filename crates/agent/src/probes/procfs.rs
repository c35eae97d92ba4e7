//! The procfs probes' common parts: [`ProcfsProbe`] (a probe is its metric table and its
//! collect function; one generic [`MetricProbe`] and one factory serve them all), reading the
//! per-netns files under `/proc/thread-self/net` (the calling thread has entered the netns being
//! collected), and the parsers several probes share: hex/decimal column rows and the
//! `Name: keys… / Name: values…` MIB format of `snmp` and `netstat`. Knows no metric.

use std::io;
use std::marker::PhantomData;

use crate::probe::{
    MetricDesc, MetricProbe, Overhead, ProbeArgs, ProbeContext, ProbeError, ProbeSpec, Scope,
};
use crate::registry::Samples;

/// A probe over procfs (or a netlink dump) that takes no args.
pub(crate) trait ProcfsProbe: Send + Sync + 'static {
    /// The probe's KubeSkoop name.
    const NAME: &'static str;
    /// Every metric it exports.
    const METRICS: &'static [MetricDesc];
    /// [`Scope::Node`] for node-global files.
    const SCOPE: Scope = Scope::PerNetns;
    /// `false` when it reads only through [`Samples::netns_file`] (see
    /// [`MetricProbe::needs_thread_in_netns`]).
    const NEEDS_THREAD_IN_NETNS: bool = true;

    /// Refuse to start where the kernel lacks what the probe reads (a module not loaded), so
    /// `/status` says so instead of every scrape failing.
    fn supported() -> Result<(), ProbeError> {
        Ok(())
    }

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError>;
}

/// The [`MetricProbe`] of any [`ProcfsProbe`].
struct Procfs<P>(PhantomData<fn() -> P>);

impl<P: ProcfsProbe> MetricProbe for Procfs<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn scope(&self) -> Scope {
        P::SCOPE
    }

    fn metrics(&self) -> &'static [MetricDesc] {
        P::METRICS
    }

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), ProbeError> {
        P::collect(out)
    }

    fn needs_thread_in_netns(&self) -> bool {
        P::NEEDS_THREAD_IN_NETNS
    }
}

fn create<P: ProcfsProbe>(
    args: &ProbeArgs,
    _: &ProbeContext,
) -> Result<Box<dyn MetricProbe>, ProbeError> {
    args.expect_none()?;
    P::supported()?;
    Ok(Box::new(Procfs::<P>(PhantomData)))
}

/// The catalogue entry of a procfs probe (metrics only).
pub(crate) const fn spec<P: ProcfsProbe>(summary: &'static str, overhead: Overhead) -> ProbeSpec {
    ProbeSpec {
        name: P::NAME,
        summary,
        overhead,
        metrics: Some(create::<P>),
        event: None,
    }
}

/// `Ok(None)` for a file that does not exist (no IPv6, no IPVS in this netns); every other
/// error stays an error.
pub(crate) fn unless_absent<T>(read: Result<T, ProbeError>) -> Result<Option<T>, ProbeError> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(ProbeError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Add the columns `at` of one whitespace-separated `row`, numbers in `radix`, to `sums`.
pub(crate) fn add_row<const N: usize>(
    sums: &mut [u64; N],
    row: &str,
    at: &[usize; N],
    radix: u32,
) -> Result<(), String> {
    let columns: Vec<&str> = row.split_whitespace().collect();
    for (sum, &i) in sums.iter_mut().zip(at) {
        let text = columns
            .get(i)
            .ok_or_else(|| format!("short row `{}`", row.trim()))?;
        *sum += u64::from_str_radix(text, radix)
            .map_err(|_| format!("`{text}` is not a base-{radix} number"))?;
    }
    Ok(())
}

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
    fn only_an_absent_file_is_none() {
        let absent = ProbeError::read("sock", "sockstat6", io::ErrorKind::NotFound.into());
        assert!(unless_absent::<()>(Err(absent)).unwrap().is_none());
        let denied = ProbeError::read("sock", "sockstat6", io::ErrorKind::PermissionDenied.into());
        let err = unless_absent::<()>(Err(denied)).unwrap_err();
        assert!(err.to_string().contains("sockstat6"), "{err}");
        assert_eq!(unless_absent(Ok(3)).unwrap(), Some(3));
    }

    #[test]
    fn rows_add_the_chosen_columns() {
        let mut sums = [0u64; 2];
        add_row(&mut sums, " 0a 1 ff", &[0, 2], 16).unwrap();
        add_row(&mut sums, "01 0 01", &[0, 2], 16).unwrap();
        assert_eq!(sums, [11, 256]);
        assert!(add_row(&mut sums, "1", &[0, 2], 16)
            .unwrap_err()
            .contains("short row"));
        assert!(add_row(&mut sums, "1 2 x", &[0, 2], 10)
            .unwrap_err()
            .contains("`x` is not a base-10 number"));
    }

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
