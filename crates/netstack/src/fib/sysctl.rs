//! Typed readings of the sysctls the datapath depends on, combined the way the kernel combines
//! them (`IN_DEV_MAXCONF`, `IN_DEV_ORCONF`, per-device only).
//!
//! A key the snapshot lacks is *unknown*, never a default: every accessor returns `None` when
//! the answer cannot be derived from what was collected (a value that is not a number counts as
//! missing too). Each reading names the keys it came from, for evidence.

use serde::{Deserialize, Serialize};

use crate::state::NetnsState;

/// A sysctl-derived value and the keys (with their values) it was derived from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlReading<T> {
    pub value: T,
    /// `(key, raw value)` pairs, e.g. `("net/ipv4/conf/all/rp_filter", "1")`.
    pub from: Vec<(String, String)>,
}

/// `arp_ignore` modes (Documentation/networking/ip-sysctl.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArpIgnore {
    /// 0: answer for any local address, on any device.
    AnyDevice,
    /// 1: only if the target address is configured on the incoming device.
    TargetOnDevice,
    /// 2: as 1, and the sender must be in the target address's subnet.
    TargetAndSenderSubnet,
    /// 3: do not answer for host-scope addresses.
    NotHostScope,
    /// 8: never answer (4–7 and above 8 are reserved and behave as 0).
    Never,
}

impl ArpIgnore {
    fn from_value(value: u32) -> ArpIgnore {
        match value {
            1 => ArpIgnore::TargetOnDevice,
            2 => ArpIgnore::TargetAndSenderSubnet,
            3 => ArpIgnore::NotHostScope,
            8 => ArpIgnore::Never,
            _ => ArpIgnore::AnyDevice,
        }
    }
}

impl NetnsState {
    fn sysctl_u32(&self, key: &str) -> Option<(u32, (String, String))> {
        let raw = self.sysctl(key)?;
        let value = raw.trim().parse().ok()?;
        Some((value, (key.to_string(), raw.to_string())))
    }

    fn sysctl_flag(&self, key: &str) -> Option<SysctlReading<bool>> {
        self.sysctl_u32(key).map(|(v, from)| SysctlReading {
            value: v != 0,
            from: vec![from],
        })
    }

    /// `IN_DEV_MAXCONF`: the larger of `conf/all/NAME` and `conf/DEV/NAME`. Known when both
    /// are, or when one already holds `ceiling` (nothing can exceed it).
    fn max_conf(&self, dev: &str, name: &str, ceiling: u32) -> Option<SysctlReading<u32>> {
        let all = self.sysctl_u32(&format!("net/ipv4/conf/all/{name}"));
        let per_dev = self.sysctl_u32(&format!("net/ipv4/conf/{dev}/{name}"));
        match (all, per_dev) {
            (Some((a, fa)), Some((d, fd))) => Some(SysctlReading {
                value: a.max(d),
                from: vec![fa, fd],
            }),
            (Some((v, from)), None) | (None, Some((v, from))) if v >= ceiling => {
                Some(SysctlReading {
                    value: v,
                    from: vec![from],
                })
            }
            _ => None,
        }
    }

    /// `IN_DEV_ORCONF`: on if either `conf/all/NAME` or `conf/DEV/NAME` is on.
    fn or_conf(&self, dev: &str, name: &str) -> Option<SysctlReading<bool>> {
        let all = self.sysctl_flag(&format!("net/ipv4/conf/all/{name}"));
        let per_dev = self.sysctl_flag(&format!("net/ipv4/conf/{dev}/{name}"));
        match (all, per_dev) {
            (Some(a), Some(d)) => Some(SysctlReading {
                value: a.value || d.value,
                from: a.from.into_iter().chain(d.from).collect(),
            }),
            (Some(known), None) | (None, Some(known)) if known.value => Some(known),
            _ => None,
        }
    }

    /// `net/ipv4/ip_forward`.
    pub fn ip_forward(&self) -> Option<SysctlReading<bool>> {
        self.sysctl_flag("net/ipv4/ip_forward")
    }

    /// Whether IPv4 packets arriving on `dev` may be forwarded: the kernel reads only the
    /// input device's `net/ipv4/conf/DEV/forwarding` (`ip_forward` merely sets every device's).
    pub fn ipv4_forwarding(&self, dev: &str) -> Option<SysctlReading<bool>> {
        self.sysctl_flag(&format!("net/ipv4/conf/{dev}/forwarding"))
    }

    /// IPv6 forwarding: `net/ipv6/conf/all/forwarding` governs forwarding between devices.
    pub fn ipv6_forwarding(&self) -> Option<SysctlReading<bool>> {
        self.sysctl_flag("net/ipv6/conf/all/forwarding")
    }

    /// Effective `rp_filter` for packets arriving on `dev`: max(all, dev).
    pub fn rp_filter(&self, dev: &str) -> Option<SysctlReading<super::RpFilterMode>> {
        self.max_conf(dev, "rp_filter", 2).map(|r| SysctlReading {
            value: super::RpFilterMode::from_sysctl(u8::try_from(r.value).unwrap_or(u8::MAX)),
            from: r.from,
        })
    }

    /// `src_valid_mark` (the reverse-path lookup then uses the packet's mark): all OR dev.
    pub fn src_valid_mark(&self, dev: &str) -> Option<SysctlReading<bool>> {
        self.or_conf(dev, "src_valid_mark")
    }

    /// Effective `arp_ignore` on `dev`: max(all, dev).
    pub fn arp_ignore(&self, dev: &str) -> Option<SysctlReading<ArpIgnore>> {
        self.max_conf(dev, "arp_ignore", 8).map(|r| SysctlReading {
            value: ArpIgnore::from_value(r.value),
            from: r.from,
        })
    }

    /// Effective `arp_filter` on `dev`: all OR dev.
    pub fn arp_filter(&self, dev: &str) -> Option<SysctlReading<bool>> {
        self.or_conf(dev, "arp_filter")
    }

    /// Effective `proxy_arp` on `dev`: all OR dev.
    pub fn proxy_arp(&self, dev: &str) -> Option<SysctlReading<bool>> {
        self.or_conf(dev, "proxy_arp")
    }

    /// `net/bridge/bridge-nf-call-iptables`: bridged IPv4 traffic traverses iptables. The key
    /// only exists while `br_netfilter` is loaded.
    pub fn bridge_nf_call_iptables(&self) -> Option<SysctlReading<bool>> {
        self.sysctl_flag("net/bridge/bridge-nf-call-iptables")
    }

    /// `net/bridge/bridge-nf-call-ip6tables`.
    pub fn bridge_nf_call_ip6tables(&self) -> Option<SysctlReading<bool>> {
        self.sysctl_flag("net/bridge/bridge-nf-call-ip6tables")
    }

    /// `net/netfilter/nf_conntrack_tcp_loose`: conntrack picks up TCP flows mid-stream.
    pub fn conntrack_tcp_loose(&self) -> Option<SysctlReading<bool>> {
        self.sysctl_flag("net/netfilter/nf_conntrack_tcp_loose")
    }
}
