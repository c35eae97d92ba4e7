//! `ipvs`: the netns's `/proc/net/ip_vs_stats` totals (hex). `incomingpackets` is the packet
//! count (KubeSkoop filled it with bytes). Needs the `ip_vs` module, checked at start.

use crate::probe::{MetricDesc, MetricProbe, ProbeArgs, ProbeContext, ProbeError, Scope};
use crate::registry::Samples;

use super::procfs::{read_thread, require};

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

struct Ipvs;

/// Line 3 holds `Conns InPkts OutPkts InBytes OutBytes` in hex.
pub(crate) fn parse(text: &str) -> Result<[u64; 5], String> {
    let line = text.lines().nth(2).ok_or("fewer than 3 lines")?;
    let cols: Vec<&str> = line.split_whitespace().collect();
    let mut out = [0u64; 5];
    for (i, slot) in out.iter_mut().enumerate() {
        let v = cols.get(i).ok_or_else(|| format!("short line `{line}`"))?;
        *slot = u64::from_str_radix(v, 16).map_err(|_| format!("`{v}` is not hex"))?;
    }
    Ok(out)
}

impl MetricProbe for Ipvs {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn scope(&self) -> Scope {
        Scope::PerNetns
    }

    fn metrics(&self) -> &'static [MetricDesc] {
        &IPVS
    }

    fn collect(&self, out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let text = match read_thread("ipvs", FILE) {
            Ok(text) => text,
            // Only netns with IPVS in use have the file; others have nothing to report.
            Err(ProbeError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let values = parse(&text).map_err(|m| ProbeError::parse("ipvs", FILE, m))?;
        out.counters(&IPVS, values);
        Ok(())
    }
}

pub(crate) fn create(
    args: &ProbeArgs,
    _: &ProbeContext,
) -> Result<Box<dyn MetricProbe>, ProbeError> {
    args.expect_none()?;
    require("ipvs", FILE, "the ip_vs module is not loaded")?;
    Ok(Box::new(Ipvs))
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
