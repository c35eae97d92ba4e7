//! `netdev`: the netns's `/proc/net/dev`, summed over every device except `lo` (KubeSkoop's
//! semantics; on the node this includes veths and bridges, so pod traffic is counted there too).

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::procfs::{add_row, ProcfsProbe};

const fn c(name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::counter("netdev", name, help)
}

/// In `/proc/net/dev` column order of what we export: (desc, column after the `:`).
pub static NETDEV: [MetricDesc; 8] = [
    c("rxbytes", "Bytes received (all devices but lo)"),
    c("rxpackets", "Packets received"),
    c("rxerrors", "Receive errors"),
    c("rxdropped", "Packets dropped on receive"),
    c("txbytes", "Bytes sent"),
    c("txpackets", "Packets sent"),
    c("txerrors", "Send errors"),
    c("txdropped", "Packets dropped on send"),
];

/// Columns of the fields above: rx bytes packets errs drop … (8 rx) then tx bytes packets errs drop.
const COLUMNS: [usize; 8] = [0, 1, 2, 3, 8, 9, 10, 11];

pub(crate) struct Netdev;

/// Sum of the exported columns over devices other than `lo`.
pub(crate) fn parse(text: &str) -> Result<[u64; 8], String> {
    let mut sums = [0u64; 8];
    // Two header lines, then `  name: v v v …`.
    for line in text.lines().skip(2) {
        let (name, values) = line
            .split_once(':')
            .ok_or_else(|| format!("no `:` in `{line}`"))?;
        if name.trim() == "lo" {
            continue;
        }
        add_row(&mut sums, values, &COLUMNS, 10).map_err(|e| format!("`{}`: {e}", name.trim()))?;
    }
    Ok(sums)
}

impl ProcfsProbe for Netdev {
    const NAME: &'static str = "netdev";
    const METRICS: &'static [MetricDesc] = &NETDEV;
    const NEEDS_THREAD_IN_NETNS: bool = false;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let text = out.netns_file("netdev", "/proc/thread-self/net/dev")?;
        let sums = parse(&text).map_err(|m| ProbeError::parse("netdev", "/proc/net/dev", m))?;
        out.counters(&NETDEV, sums);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lo_is_excluded_and_devices_summed() {
        // Recorded /proc/net/dev layout (Linux 6.18).
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    1000      10    1    2    0     0          0         0     2000      20    3    4    0     0       0          0
  eth1:       5       1    0    0    0     0          0         0        7       1    0    0    0     0       0          0
";
        assert_eq!(
            super::parse(text).unwrap(),
            [1005, 11, 1, 2, 2007, 21, 3, 4]
        );
    }
}
