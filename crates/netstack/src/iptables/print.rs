//! Printing a ruleset back as `iptables-save` text, from the parsed structure (not from the kept
//! source text), so that parse → print → parse checks the parser.

use std::fmt::{self, Display, Write};

use super::*;

impl Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for table in &self.tables {
            writeln!(f, "*{}", table.name)?;
            for chain in &table.chains {
                let policy = match chain.policy {
                    Some(Policy::Accept) => "ACCEPT",
                    Some(Policy::Drop) => "DROP",
                    None => "-",
                };
                writeln!(f, ":{} {policy} [0:0]", chain.name())?;
            }
            for chain in &table.chains {
                for rule in chain.rules() {
                    if let Target::Unreadable { .. } = rule.target {
                        // Nothing was read from it to print: keep the dump's own text.
                        writeln!(f, "{}", self.rule_text(rule))?;
                        continue;
                    }
                    writeln!(
                        f,
                        "{}",
                        RuleLine {
                            chain: chain.name(),
                            rule
                        }
                    )?;
                }
            }
            writeln!(f, "COMMIT")?;
        }
        Ok(())
    }
}

struct RuleLine<'a> {
    chain: &'a str,
    rule: &'a Rule,
}

impl Display for RuleLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {}", self.chain)?;
        // Port options belong to the module named after the rule's protocol.
        let port_module = self
            .rule
            .matches
            .iter()
            .find_map(|m| match m.kind {
                MatchKind::Protocol(17) => Some("udp"),
                MatchKind::Protocol(132) => Some("sctp"),
                _ => None,
            })
            .unwrap_or("tcp");
        for m in &self.rule.matches {
            f.write_char(' ')?;
            write_match(f, m, port_module)?;
        }
        match &self.rule.target {
            Target::None => Ok(()),
            target => write!(f, " {}", TargetText(target)),
        }
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"') {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\\\""))
    }
}

fn iface(p: &IfacePattern) -> String {
    if p.wildcard {
        format!("{}+", p.name)
    } else {
        p.name.clone()
    }
}

fn ports(r: &PortRange) -> String {
    if r.lo == r.hi {
        r.lo.to_string()
    } else {
        format!("{}:{}", r.lo, r.hi)
    }
}

fn mark(value: u32, mask: u32) -> String {
    format!("{value:#x}/{mask:#x}")
}

fn write_match(f: &mut fmt::Formatter<'_>, m: &Match, port_module: &str) -> fmt::Result {
    let not = if m.invert { "! " } else { "" };
    match &m.kind {
        MatchKind::Source(n) => write!(f, "{not}-s {n}"),
        MatchKind::Destination(n) => write!(f, "{not}-d {n}"),
        MatchKind::Protocol(p) => write!(f, "{not}-p {p}"),
        MatchKind::InInterface(p) => write!(f, "{not}-i {}", iface(p)),
        MatchKind::OutInterface(p) => write!(f, "{not}-o {}", iface(p)),
        MatchKind::Fragment => write!(f, "{not}-f"),
        MatchKind::SourcePort(r) => write!(f, "-m {port_module} {not}--sport {}", ports(r)),
        MatchKind::DestinationPort(r) => write!(f, "-m {port_module} {not}--dport {}", ports(r)),
        MatchKind::TcpFlags { mask, comp } => {
            write!(
                f,
                "-m tcp {not}--tcp-flags {} {}",
                flag_names(*mask),
                flag_names(*comp)
            )
        }
        MatchKind::Multiport {
            source,
            destination,
            ports: list,
        } => {
            let opt = match (source, destination) {
                (true, false) => "--sports",
                (false, true) => "--dports",
                _ => "--ports",
            };
            let list: Vec<String> = list.iter().map(ports).collect();
            write!(f, "-m multiport {not}{opt} {}", list.join(","))
        }
        MatchKind::IcmpType { icmp_type, code } => match (icmp_type, code) {
            (None, _) => write!(f, "-m icmp {not}--icmp-type any"),
            (Some(t), None) => write!(f, "-m icmp {not}--icmp-type {t}"),
            (Some(t), Some(c)) => write!(f, "-m icmp {not}--icmp-type {t}/{c}"),
        },
        MatchKind::Mark { value, mask } => write!(f, "-m mark {not}--mark {}", mark(*value, *mask)),
        MatchKind::Connmark { value, mask } => {
            write!(f, "-m connmark {not}--mark {}", mark(*value, *mask))
        }
        MatchKind::CtState(bits) => {
            let names: Vec<&str> = bits
                .iter()
                .map(|b| match b {
                    CtStateBit::New => "NEW",
                    CtStateBit::Established => "ESTABLISHED",
                    CtStateBit::Related => "RELATED",
                    CtStateBit::Invalid => "INVALID",
                    CtStateBit::Untracked => "UNTRACKED",
                    CtStateBit::Snat => "SNAT",
                    CtStateBit::Dnat => "DNAT",
                })
                .collect();
            write!(f, "-m conntrack {not}--ctstate {}", names.join(","))
        }
        MatchKind::CtDirection(d) => write!(
            f,
            "-m conntrack {not}--ctdir {}",
            if *d == CtDirMatch::Original {
                "ORIGINAL"
            } else {
                "REPLY"
            }
        ),
        MatchKind::Comment(c) => write!(f, "-m comment --comment {}", quote(c)),
        MatchKind::Statistic(Statistic::Random { probability }) => {
            write!(
                f,
                "-m statistic --mode random {not}--probability {probability}"
            )
        }
        MatchKind::Statistic(Statistic::Nth { every, packet }) => {
            write!(
                f,
                "-m statistic --mode nth {not}--every {every} --packet {packet}"
            )
        }
        MatchKind::AddrType {
            source,
            types,
            limit_iface_in,
            limit_iface_out,
        } => {
            let names: Vec<&str> = types.iter().map(addr_type_name).collect();
            write!(
                f,
                "-m addrtype {not}{} {}",
                if *source { "--src-type" } else { "--dst-type" },
                names.join(",")
            )?;
            if *limit_iface_in {
                write!(f, " --limit-iface-in")?;
            }
            if *limit_iface_out {
                write!(f, " --limit-iface-out")?;
            }
            Ok(())
        }
        MatchKind::Set { name, directions } => {
            let dirs: Vec<&str> = directions
                .iter()
                .map(|d| {
                    if *d == SetDirection::Src {
                        "src"
                    } else {
                        "dst"
                    }
                })
                .collect();
            write!(f, "-m set {not}--match-set {name} {}", dirs.join(","))
        }
        MatchKind::PhysdevIn(p) => write!(f, "-m physdev {not}--physdev-in {}", iface(p)),
        MatchKind::PhysdevOut(p) => write!(f, "-m physdev {not}--physdev-out {}", iface(p)),
        MatchKind::PhysdevIsBridged => write!(f, "-m physdev {not}--physdev-is-bridged"),
        MatchKind::PhysdevIsIn => write!(f, "-m physdev {not}--physdev-is-in"),
        MatchKind::PhysdevIsOut => write!(f, "-m physdev {not}--physdev-is-out"),
        MatchKind::Length { lo, hi } => write!(f, "-m length {not}--length {lo}:{hi}"),
        MatchKind::IpRange { source, from, to } => {
            write!(
                f,
                "-m iprange {not}{} {from}-{to}",
                if *source {
                    "--src-range"
                } else {
                    "--dst-range"
                }
            )
        }
        MatchKind::RpFilter {
            loose,
            validmark,
            accept_local,
            invert,
        } => {
            write!(f, "-m rpfilter")?;
            for (on, opt) in [
                (loose, "--loose"),
                (validmark, "--validmark"),
                (accept_local, "--accept-local"),
                (invert, "--invert"),
            ] {
                if *on {
                    write!(f, " {opt}")?;
                }
            }
            Ok(())
        }
        MatchKind::Assumed { module, args } | MatchKind::Unknown { module, args } => {
            write!(f, "-m {module} {not}{args}")
        }
    }
}

fn flag_names(bits: u8) -> String {
    if bits == 0 {
        return "NONE".into();
    }
    let names: Vec<&str> = [
        (1, "FIN"),
        (2, "SYN"),
        (4, "RST"),
        (8, "PSH"),
        (16, "ACK"),
        (32, "URG"),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect();
    names.join(",")
}

fn addr_type_name(t: &AddrType) -> &'static str {
    match t {
        AddrType::Unspec => "UNSPEC",
        AddrType::Unicast => "UNICAST",
        AddrType::Local => "LOCAL",
        AddrType::Broadcast => "BROADCAST",
        AddrType::Anycast => "ANYCAST",
        AddrType::Multicast => "MULTICAST",
        AddrType::Blackhole => "BLACKHOLE",
        AddrType::Unreachable => "UNREACHABLE",
        AddrType::Prohibit => "PROHIBIT",
    }
}

/// A target in `iptables-save` syntax (`-j DNAT --to-destination 10.0.0.1:80`).
pub struct TargetText<'a>(pub &'a Target);

impl Display for TargetText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nat_to = |addr: &Option<std::net::IpAddr>, port: &Option<PortRange>| {
            let a = addr
                .map(|a| {
                    if a.is_ipv6() {
                        format!("[{a}]")
                    } else {
                        a.to_string()
                    }
                })
                .unwrap_or_default();
            match port {
                Some(p) => format!("{a}:{}", ports(p).replace(':', "-")),
                None => a,
            }
        };
        match self.0 {
            // An unreadable rule has no target to print (`Ruleset` prints its dump text).
            Target::None | Target::Unreadable { .. } => Ok(()),
            Target::Accept => write!(f, "-j ACCEPT"),
            Target::Drop => write!(f, "-j DROP"),
            Target::Return => write!(f, "-j RETURN"),
            Target::Reject { with } => write!(f, "-j REJECT --reject-with {with}"),
            Target::Chain { name, goto } => write!(f, "{} {name}", if *goto { "-g" } else { "-j" }),
            Target::Dnat { addr, port } => {
                write!(f, "-j DNAT --to-destination {}", nat_to(addr, port))
            }
            Target::Snat { addr, port } => write!(f, "-j SNAT --to-source {}", nat_to(addr, port)),
            Target::Masquerade { port } => match port {
                Some(p) => write!(f, "-j MASQUERADE --to-ports {}", ports(p).replace(':', "-")),
                None => write!(f, "-j MASQUERADE"),
            },
            Target::Redirect { port } => match port {
                Some(p) => write!(f, "-j REDIRECT --to-ports {}", ports(p).replace(':', "-")),
                None => write!(f, "-j REDIRECT"),
            },
            Target::Mark(op) => write!(f, "-j MARK --set-xmark {}", mark(op.value, op.mask)),
            Target::Connmark(ConnmarkOp::SetXmark(op)) => {
                write!(f, "-j CONNMARK --set-xmark {}", mark(op.value, op.mask))
            }
            Target::Connmark(ConnmarkOp::Save { nfmask, ctmask }) => {
                write!(
                    f,
                    "-j CONNMARK --save-mark --nfmask {nfmask:#x} --ctmask {ctmask:#x}"
                )
            }
            Target::Connmark(ConnmarkOp::Restore { nfmask, ctmask }) => {
                write!(
                    f,
                    "-j CONNMARK --restore-mark --nfmask {nfmask:#x} --ctmask {ctmask:#x}"
                )
            }
            Target::Notrack => write!(f, "-j CT --notrack"),
            Target::Tproxy { port, mark: m } => {
                write!(f, "-j TPROXY --on-port {port}")?;
                if let Some((v, mask)) = m {
                    write!(f, " --tproxy-mark {}", mark(*v, *mask))?;
                }
                Ok(())
            }
            Target::Queue { num } => write!(f, "-j NFQUEUE --queue-num {num}"),
            Target::Passive { name, args } | Target::Unknown { name, args } => {
                if args.is_empty() {
                    write!(f, "-j {name}")
                } else {
                    write!(f, "-j {name} {args}")
                }
            }
        }
    }
}
