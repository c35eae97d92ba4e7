//! `ipvs`: the netns's `/proc/net/ip_vs_stats` totals (hex). `incomingpackets` is the packet
//! count (KubeSkoop filled it with bytes). Needs the `ip_vs` module, checked at start.

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::procfs::{add_row, read_thread, require, unless_absent, ProcfsProbe};

const fn c(name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::counter("ipvs", name, help)
}

pub static IPVS: [MetricDesc; 5] = [
    c("connections", "IPVS connections scheduled"),
    c("incomingpackets", "Packets in (client → real server)"),
    c("outgoingpackets", "Packets out (real server → client)"),
    c("incomingbytes", "Bytes in"),
    c("outgoingbytes", "Bytes out"),
];

const FILE: &str = "net/ip_vs_stats";

pub(crate) struct Ipvs;

/// Line 3 holds `Conns InPkts OutPkts InBytes OutBytes` in hex.
pub(crate) fn parse(text: &str) -> Result<[u64; 5], String> {
    let line = text.lines().nth(2).ok_or("fewer than 3 lines")?;
    let mut out = [0u64; 5];
    add_row(&mut out, line, &[0, 1, 2, 3, 4], 16)?;
    Ok(out)
}

impl ProcfsProbe for Ipvs {
    const NAME: &'static str = "ipvs";
    const METRICS: &'static [MetricDesc] = &IPVS;

    fn supported() -> Result<(), ProbeError> {
        require("ipvs", FILE, "the ip_vs module is not loaded")
    }

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        // Only netns with IPVS in use have the file; others have nothing to report.
        let Some(text) = unless_absent(read_thread("ipvs", FILE))? else {
            return Ok(());
        };
        let values = parse(&text).map_err(|m| ProbeError::parse("ipvs", FILE, m))?;
        out.counters(&IPVS, values);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn third_line_hex_in_order() {
        // Recorded layout of /proc/net/ip_vs_stats.
        let text = "   Total Incoming Outgoing         Incoming         Outgoing
   Conns  Packets  Packets            Bytes            Bytes
       A       1F       1E             7D0              BB8

 Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s
       0        0        0                0                0
";
        assert_eq!(super::parse(text).unwrap(), [10, 31, 30, 2000, 3000]);
    }
}
