//! `sock`: TCP socket counts from the netns's `/proc/net/sockstat` (+ `sockstat6` TCP6 `inuse`).
//! Per netns (KubeSkoop read the host only, so its pod panels were empty).

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::procfs::{unless_absent, ProcfsProbe};

const fn g(name: &'static str, help: &'static str) -> MetricDesc {
    MetricDesc::gauge("sock", name, help)
}

pub static SOCK: [MetricDesc; 5] = [
    g("inuse", "TCP sockets in use (IPv4 + IPv6)"),
    g("orphan", "TCP sockets not attached to a file"),
    g("tw", "TCP sockets in TIME_WAIT"),
    g("alloc", "TCP sockets allocated"),
    g("mem", "Pages used by TCP socket buffers"),
];

pub(crate) struct Sock;

/// `TCP: inuse 3 orphan 0 tw 0 alloc 5 mem 1` → the value of `key` on the line `proto:`.
fn field(text: &str, proto: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(proto))?;
    let mut words = line[proto.len()..].split_whitespace();
    while let Some(k) = words.next() {
        let v = words.next()?;
        if k == key {
            return v.parse().ok();
        }
    }
    None
}

impl ProcfsProbe for Sock {
    const NAME: &'static str = "sock";
    const METRICS: &'static [MetricDesc] = &SOCK;
    const NEEDS_THREAD_IN_NETNS: bool = false;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let v4 = out.netns_file("sock", "/proc/thread-self/net/sockstat")?;
        // No IPv6 in this netns/kernel: v4 only (KubeSkoop skipped the whole netns). Only an
        // absent file means that; failing to read one that is there is this probe's error.
        let v6 = unless_absent(out.netns_file("sock", "/proc/thread-self/net/sockstat6"))?
            .unwrap_or_else(|| "".into());
        for desc in &SOCK {
            let Some(mut v) = field(&v4, "TCP:", desc.name) else {
                continue;
            };
            if desc.name == "inuse" {
                v += field(&v6, "TCP6:", "inuse").unwrap_or(0);
            }
            out.gauge(desc, v as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sockstat_fields() {
        let text =
            "sockets: used 120\nTCP: inuse 3 orphan 1 tw 2 alloc 5 mem 7\nUDP: inuse 1 mem 0\n";
        assert_eq!(super::field(text, "TCP:", "tw"), Some(2));
        assert_eq!(super::field(text, "TCP:", "mem"), Some(7));
        assert_eq!(super::field("TCP6: inuse 4\n", "TCP6:", "inuse"), Some(4));
    }
}
