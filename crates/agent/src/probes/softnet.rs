//! `softnet`: `/proc/net/softnet_stat` summed over CPUs. The file is node-global (not per
//! netns), so it is exported on the node only (KubeSkoop repeated it on every pod).

use crate::probe::{MetricDesc, MetricProbe, ProbeArgs, ProbeContext, ProbeError, Scope};
use crate::registry::Samples;

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

struct Softnet;

pub(crate) fn parse(text: &str) -> Result<[u64; 3], String> {
    let mut sums = [0u64; 3];
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        for (i, sum) in sums.iter_mut().enumerate() {
            let v = cols.get(i).ok_or_else(|| format!("short line `{line}`"))?;
            *sum += u64::from_str_radix(v, 16).map_err(|_| format!("`{v}` is not hex"))?;
        }
    }
    Ok(sums)
}

impl MetricProbe for Softnet {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn metrics(&self) -> &'static [MetricDesc] {
        &SOFTNET
    }

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let text =
            std::fs::read_to_string(PATH).map_err(|e| ProbeError::read("softnet", PATH, e))?;
        let sums = parse(&text).map_err(|m| ProbeError::parse("softnet", PATH, m))?;
        out.counters(&SOFTNET, sums);
        Ok(())
    }
}

pub(crate) fn create(
    args: &ProbeArgs,
    _: &ProbeContext,
) -> Result<Box<dyn MetricProbe>, ProbeError> {
    args.expect_none()?;
    Ok(Box::new(Softnet))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_hex_columns_over_cpus() {
        let text = "00000012 00000001 00000002 00000000\n00001985 00000000 00000001 00000000\n";
        assert_eq!(super::parse(text).unwrap(), [0x12 + 0x1985, 1, 3]);
    }
}
