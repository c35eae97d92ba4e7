//! `conntrack`: per-netns conntrack statistics from `/proc/net/stat/nf_conntrack` (per-CPU
//! rows, summed) plus `nf_conntrack_count` / `nf_conntrack_max`. Reading procfs instead of
//! ctnetlink keeps it free of netlink sockets; it needs the `nf_conntrack` module (checked at
//! start, so `/status` says so). The stat file is parsed by the collector's parser
//! (`collect::procfs`), so the agent and `netsleuth collect` read it alike. No event side
//! (KubeSkoop's conntrack event probe crashed).

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::procfs::{require, ProcfsProbe};

const fn c(name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::counter("conntrack", name, help)
}

/// Exported stats, with the `/proc/net/stat/nf_conntrack` column each comes from.
pub static CONNTRACK: [MetricDesc; 11] = [
    c("found", "Lookups that found an entry"),
    c("invalid", "Packets that could not be tracked (INVALID)"),
    c("ignore", "Packets already tracked or untracked (NOTRACK)"),
    c("insert", "Entries inserted"),
    c("insertfailed", "Entries that could not be inserted (clash)"),
    c(
        "drop",
        "Packets dropped: table full and no entry could be evicted",
    ),
    c("earlydrop", "Entries evicted early to make room"),
    c("error", "ICMP errors not matching a tracked connection"),
    c("searchrestart", "Lookups restarted (hash resize or race)"),
    MetricDesc::gauge("conntrack", "entries", "Entries in the table now"),
    MetricDesc::gauge(
        "conntrack",
        "maxentries",
        "Table size limit (nf_conntrack_max)",
    ),
];

const COLUMNS: [&str; 9] = [
    "found",
    "invalid",
    "ignore",
    "insert",
    "insert_failed",
    "drop",
    "early_drop",
    "icmp_error",
    "search_restart",
];

const STAT: &str = "/proc/thread-self/net/stat/nf_conntrack";
// /proc/sys/net is resolved in the netns of the thread that opens it (there is no
// /proc/thread-self/sys).
const COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";
const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

pub(crate) struct Conntrack;

/// Each of [`COLUMNS`] summed over the per-CPU rows.
pub(crate) fn parse_stat(text: &str) -> Result<[u64; 9], String> {
    let stats = collect::procfs::parse_conntrack_stats(text)?;
    let mut sums = [0u64; 9];
    for (sum, column) in sums.iter_mut().zip(COLUMNS) {
        *sum = *stats
            .get(column)
            .ok_or_else(|| format!("no `{column}` column"))?;
    }
    Ok(sums)
}

fn read_number(out: &mut Samples<'_>, path: &'static str) -> Result<u64, ProbeError> {
    let text = out.netns_file("conntrack", path)?;
    text.trim().parse().map_err(|_| {
        ProbeError::parse(
            "conntrack",
            path,
            format!("`{}` is not a number", text.trim()),
        )
    })
}

impl ProcfsProbe for Conntrack {
    const NAME: &'static str = "conntrack";
    const METRICS: &'static [MetricDesc] = &CONNTRACK;
    const NEEDS_THREAD_IN_NETNS: bool = false;

    fn supported() -> Result<(), ProbeError> {
        require(
            "conntrack",
            STAT.trim_start_matches("/proc/thread-self/"),
            "the nf_conntrack module is not loaded",
        )
    }

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let text = out.netns_file("conntrack", STAT)?;
        let sums = parse_stat(&text).map_err(|m| ProbeError::parse("conntrack", STAT, m))?;
        out.counters(&CONNTRACK, sums);
        let entries = read_number(out, COUNT)?;
        let max = read_number(out, MAX)?;
        out.gauge(&CONNTRACK[9], entries as f64);
        out.gauge(&CONNTRACK[10], max as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn per_cpu_rows_are_summed_by_column_name() {
        // Recorded header of Linux 6.18 /proc/net/stat/nf_conntrack, two CPUs.
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000003  00000000 00000001 00000000 00000002 00000000 00000000 00000000 00000004 00000000 00000001 00000000 00000000  00000000 00000000 00000000 00000000
00000003  00000000 00000010 00000000 00000001 00000000 00000000 00000000 00000001 00000002 00000000 00000000 00000001  00000000 00000000 00000000 00000005
";
        assert_eq!(
            super::parse_stat(text).unwrap(),
            [0x11, 3, 0, 5, 2, 1, 0, 1, 5]
        );
    }
}
