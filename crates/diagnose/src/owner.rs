//! Who put a netfilter rule there: kube-proxy, a NetworkPolicy (through the chains calico and
//! kube-router write, recognised by chain names and the comments they leave), Docker, Istio, a
//! CNI, or nobody we know.

use model::{FindingCode, Owner};
use netstack::netfilter::{RuleRef, TraceStep};

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
    let owner = if chain.starts_with("KUBE-") {
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
        let step = TraceStep { rule: rule("KUBE-POD-FW-X", "-A KUBE-POD-FW-X -m comment --comment \"run through nw policy default/deny-all\" -j KUBE-NWPLCY-Y"), action: "jump".into() };
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
}
