//! Who put a netfilter rule there: kube-proxy, a NetworkPolicy (through the chains calico and
//! kube-router write, recognised by chain names and the comments they leave), Docker, Istio, a
//! CNI, or nobody we know; and how to remove a rule nobody we know owns. nft rules are also
//! recognised by their table (kube-proxy's nftables mode writes only `ip kube-proxy` /
//! `ip6 kube-proxy`, calico's nftables dataplane `calico`).

use model::{FindingCode, Owner};
use netstack::netfilter::{RuleRef, RuleSource, TraceStep};
use netstack::packet::Packet;

use crate::checks::conntrack;

/// The owner of the rule that decided, and, for NetworkPolicy enforcement, the more precise
/// finding code (ingress or egress denial).
pub fn owner_of_rule(
    rule: Option<&RuleRef>,
    trace: &[TraceStep],
) -> (Option<Owner>, Option<FindingCode>) {
    let Some(rule) = rule else {
        return (None, None);
    };
    let chain = rule.chain.as_str();
    if is_policy_chain(chain) {
        let policy = trace
            .iter()
            .rev()
            .find_map(|t| policy_named_in(&t.rule.text));
        let egress = trace
            .iter()
            .any(|t| t.rule.text.contains("sourced from") || t.rule.chain.starts_with("cali-fw-"))
            || chain.starts_with("cali-po-");
        let code = if egress {
            FindingCode::PolicyEgressDenied
        } else {
            FindingCode::PolicyIngressDenied
        };
        let owner = policy.map(|(namespace, name)| Owner::NetworkPolicy { namespace, name });
        return (
            owner.or(Some(Owner::Cni {
                name: "network policy enforcement".into(),
            })),
            Some(code),
        );
    }
    let owner = if let Some(owner) = nft_table_owner(rule) {
        owner
    } else if chain.starts_with("KUBE-") {
        Owner::KubeProxy
    } else if chain.starts_with("DOCKER") {
        Owner::Docker
    } else if chain.starts_with("ISTIO") {
        Owner::Istio
    } else if chain.starts_with("cali-") {
        Owner::Cni {
            name: "calico".into(),
        }
    } else if chain.starts_with("FLANNEL") {
        Owner::Cni {
            name: "flannel".into(),
        }
    } else {
        Owner::Unknown
    };
    (Some(owner), None)
}

/// What a netfilter drop is, asked once when the walk records it: the finding code (the
/// verdict's, refined to a NetworkPolicy denial for enforcement chains and to conntrack INVALID
/// for a `ctstate INVALID` rule on an INVALID packet) and who owns the cause.
pub fn classify_drop(
    verdict_code: FindingCode,
    rule: Option<&RuleRef>,
    trace: &[TraceStep],
    packet: &Packet,
) -> (FindingCode, Option<Owner>) {
    let (owner, policy_code) = owner_of_rule(rule, trace);
    let code = conntrack::drop_code(policy_code.unwrap_or(verdict_code), packet, rule);
    // The rule only enforces what conntrack decided: the kernel's state is the cause.
    if code == FindingCode::ConntrackInvalid {
        (code, Some(Owner::Kernel))
    } else {
        (code, owner)
    }
}

/// The owner an nft rule's table names: `ip kube-proxy` / `ip6 kube-proxy` (kube-proxy's
/// nftables mode), `calico` in any family (calico's nftables dataplane).
fn nft_table_owner(rule: &RuleRef) -> Option<Owner> {
    if rule.source != RuleSource::Nftables {
        return None;
    }
    // `RuleRef::table` is `family name` for nft.
    match rule.table.split_once(' ')? {
        ("ip" | "ip6", "kube-proxy") => Some(Owner::KubeProxy),
        (_, "calico") => Some(Owner::Cni {
            name: "calico".into(),
        }),
        _ => None,
    }
}

/// The command that removes `rule`: for iptables the rule's own text with `-A` turned into
/// `-D`, for nft `nft delete rule FAMILY TABLE CHAIN handle N`. `None` for a chain policy (or an
/// nft rule without a handle), which no single command removes.
pub(crate) fn removal_command(rule: &RuleRef) -> Option<String> {
    if rule.position == 0 {
        return None;
    }
    let delete = rule.text.replacen("-A ", "-D ", 1);
    match rule.source {
        RuleSource::Iptables => Some(format!("iptables -t {} {delete}", rule.table)),
        RuleSource::Ip6tables => Some(format!("ip6tables -t {} {delete}", rule.table)),
        RuleSource::Nftables => rule
            .handle
            .map(|h| format!("nft delete rule {} {} handle {h}", rule.table, rule.chain)),
    }
}

/// The fix for a rule (or policy) nobody we know owns.
pub(crate) fn hand_added_hint(rule: Option<&RuleRef>) -> String {
    match rule.and_then(removal_command) {
        Some(command) => format!("The rule was added by hand or by a tool netsleuth does not know; if it is not wanted: {command}"),
        None => "The rule was added by hand or by a tool netsleuth does not know: remove it if it is not wanted.".to_string(),
    }
}

/// Chains NetworkPolicy enforcers write: kube-router's per-pod and per-policy chains, calico's
/// policy (`cali-pi-`/`cali-po-`) and workload (`cali-tw-`/`cali-fw-`) chains.
pub(crate) fn is_policy_chain(chain: &str) -> bool {
    [
        "KUBE-POD-FW-",
        "KUBE-NWPLCY-",
        "KUBE-ROUTER-",
        "cali-pi-",
        "cali-po-",
        "cali-tw-",
        "cali-fw-",
    ]
    .iter()
    .any(|prefix| chain.starts_with(prefix))
}

/// `ns/name` from comments such as `run through nw policy default/deny` (kube-router) or
/// `Policy default/knp.default.deny` (calico).
fn policy_named_in(text: &str) -> Option<(String, String)> {
    let lower = text.to_ascii_lowercase();
    let at = ["nw policy ", "for policy ", "policy "]
        .iter()
        .find_map(|k| lower.find(k).map(|i| i + k.len()))?;
    let rest = &text[at..];
    let word: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    let (ns, name) = word.split_once('/')?;
    let name = name.strip_prefix("knp.default.").unwrap_or(name);
    (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstack::netfilter::RuleSource;

    fn rule(chain: &str, text: &str) -> RuleRef {
        RuleRef {
            source: RuleSource::Iptables,
            table: "filter".into(),
            chain: chain.into(),
            position: 1,
            line: 1,
            handle: None,
            text: text.into(),
        }
    }

    #[test]
    fn names_owners_from_chains_and_comments() {
        assert_eq!(
            owner_of_rule(Some(&rule("KUBE-SERVICES", "-A …")), &[]).0,
            Some(Owner::KubeProxy)
        );
        assert_eq!(
            owner_of_rule(Some(&rule("DOCKER-ISOLATION-STAGE-2", "-A …")), &[]).0,
            Some(Owner::Docker)
        );
        assert_eq!(
            owner_of_rule(Some(&rule("FORWARD", "-A FORWARD -j DROP")), &[]).0,
            Some(Owner::Unknown)
        );
        let step = TraceStep {
            rule: rule(
                "KUBE-POD-FW-X",
                "-A KUBE-POD-FW-X -m comment --comment \"run through nw policy default/deny-all\" -j KUBE-NWPLCY-Y",
            ),
            action: "jump".into(),
        };
        let (owner, code) = owner_of_rule(
            Some(&rule("KUBE-POD-FW-X", "-A KUBE-POD-FW-X -j REJECT")),
            &[step],
        );
        assert_eq!(
            owner,
            Some(Owner::NetworkPolicy {
                namespace: "default".into(),
                name: "deny-all".into()
            })
        );
        assert_eq!(code, Some(FindingCode::PolicyIngressDenied));
    }

    fn nft_rule(table: &str, chain: &str, handle: u64, text: &str) -> RuleRef {
        RuleRef {
            source: RuleSource::Nftables,
            table: table.into(),
            chain: chain.into(),
            position: 2,
            line: 0,
            handle: Some(handle),
            text: text.into(),
        }
    }

    #[test]
    fn nft_rules_are_owned_by_their_table() {
        // Chain names as kube-proxy's nftables proxier writes them.
        for (table, chain) in [
            ("ip kube-proxy", "service-ULMVA6XW-ns1/svc1/tcp/p80"),
            ("ip6 kube-proxy", "filter-forward"),
        ] {
            let r = nft_rule(table, chain, 7, "goto endpoint-…");
            assert_eq!(owner_of_rule(Some(&r), &[]).0, Some(Owner::KubeProxy));
        }
        let r = nft_rule("ip calico", "filter-FORWARD", 3, "drop");
        assert_eq!(
            owner_of_rule(Some(&r), &[]).0,
            Some(Owner::Cni {
                name: "calico".into()
            })
        );
        // A table of that name in another family is not kube-proxy's.
        let r = nft_rule("inet kube-proxy", "forward", 3, "drop");
        assert_eq!(owner_of_rule(Some(&r), &[]).0, Some(Owner::Unknown));
        let r = nft_rule("inet filter", "forward", 3, "ip daddr 10.244.1.0/24 drop");
        assert_eq!(owner_of_rule(Some(&r), &[]).0, Some(Owner::Unknown));
    }

    #[test]
    fn removal_commands_name_the_rule_exactly() {
        let r = nft_rule("inet filter", "forward", 3, "ip daddr 10.244.1.0/24 drop");
        assert_eq!(
            removal_command(&r).as_deref(),
            Some("nft delete rule inet filter forward handle 3")
        );
        let r = rule("FORWARD", "-A FORWARD -d 10.244.1.0/24 -j DROP");
        assert_eq!(
            removal_command(&r).as_deref(),
            Some("iptables -t filter -D FORWARD -d 10.244.1.0/24 -j DROP")
        );
        let r = RuleRef {
            source: RuleSource::Ip6tables,
            ..rule("FORWARD", "-A FORWARD -j DROP")
        };
        assert_eq!(
            removal_command(&r).as_deref(),
            Some("ip6tables -t filter -D FORWARD -j DROP")
        );
        let policy = RuleRef {
            position: 0,
            ..rule("FORWARD", ":FORWARD DROP")
        };
        assert_eq!(removal_command(&policy), None);
    }
}
