//! `softnet`: `/proc/net/softnet_stat` summed over CPUs. The file is node-global (not per
//! netns), so it is exported on the node only (KubeSkoop repeated it on every pod).

use crate::probe::{MetricDesc, ProbeError, Scope};
use crate::registry::Samples;

use super::procfs::{add_row, ProcfsProbe};

const fn c(name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::counter("softnet", name, help)
}

pub static SOFTNET: [MetricDesc; 3] = [
    c("processed", "Packets processed by the NET_RX softirq"),
    c(
        "dropped",
        "Packets dropped: input backlog (netdev_max_backlog) full",
    ),
    c(
        "timesqueeze",
        "NET_RX runs that ran out of budget or time with work left",
    ),
];

const PATH: &str = "/proc/net/softnet_stat";

pub(crate) struct Softnet;

pub(crate) fn parse(text: &str) -> Result<[u64; 3], String> {
    let mut sums = [0u64; 3];
    for line in text.lines() {
        add_row(&mut sums, line, &[0, 1, 2], 16)?;
    }
    Ok(sums)
}

impl ProcfsProbe for Softnet {
    const NAME: &'static str = "softnet";
    const METRICS: &'static [MetricDesc] = &SOFTNET;
    const SCOPE: Scope = Scope::Node;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let text =
            std::fs::read_to_string(PATH).map_err(|e| ProbeError::read("softnet", PATH, e))?;
        let sums = parse(&text).map_err(|m| ProbeError::parse("softnet", PATH, m))?;
        out.counters(&SOFTNET, sums);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_hex_columns_over_cpus() {
        let text = "00000012 00000001 00000002 00000000\n00001985 00000000 00000001 00000000\n";
        assert_eq!(super::parse(text).unwrap(), [0x12 + 0x1985, 1, 3]);
    }
}
