//! A parsed ruleset at a glance: rule counts per chain (with nft base chains' registration and
//! the element counts of nft sets), and the rules holding something the evaluators do not model.
//! `netsleuth netfilter parse` prints it, to check a real node's dump before trusting a
//! diagnosis; the shape is that command's JSON output, so change it only together with it.
//!
//! Reads parsed rulesets only; the evaluators are not involved.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::iptables::{self, MatchKind, Target};
use crate::nft;

/// Which tool wrote the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpFormat {
    IptablesSave,
    NftJson,
}

/// The summary of one dump.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesetSummary {
    pub format: DumpFormat,
    pub rules: usize,
    pub tables: Vec<TableSummary>,
    pub unsupported: Vec<UnsupportedRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableSummary {
    /// `filter`, `nat`, … for iptables; `family name` (`inet filter`) for nft.
    pub table: String,
    pub chains: BTreeMap<String, ChainSummary>,
    /// nft only: named sets and maps, with their element counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sets: Option<BTreeMap<String, usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainSummary {
    /// `ACCEPT`/`DROP` for built-in chains and nft base chains, absent for user chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// nft base chains only: where the chain is registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseChainSummary>,
    pub rules: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaseChainSummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `PREROUTING` … `POSTROUTING`, or `null` for hooks a diagnosis does not walk
    /// (`ingress`, `egress`).
    pub hook: Option<&'static str>,
    pub priority: i32,
}

/// A rule with features a diagnosis cannot evaluate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnsupportedRule {
    pub table: String,
    pub chain: String,
    /// 1-based position in the chain.
    pub position: usize,
    /// iptables-save only: line in the dump.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// nft only: the rule handle (`nft delete rule … handle N` names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    pub features: Vec<String>,
}

impl RulesetSummary {
    /// Summary of an `iptables-save` dump. Reads every chain's rules.
    pub fn of_iptables(ruleset: &iptables::Ruleset) -> RulesetSummary {
        let mut unsupported = Vec::new();
        let tables = ruleset
            .tables
            .iter()
            .map(|table| {
                let chains = table
                    .chains
                    .iter()
                    .map(|chain| {
                        note_unsupported(
                            &mut unsupported,
                            (table.name.to_string(), chain.name().to_string()),
                            chain.rules(),
                            iptables_unmodelled,
                            |rule| (Some(rule.line), None),
                        );
                        let policy = chain.policy.map(|p| format!("{p:?}").to_uppercase());
                        (
                            chain.name().to_string(),
                            ChainSummary {
                                policy,
                                base: None,
                                rules: chain.rules().len(),
                            },
                        )
                    })
                    .collect();
                TableSummary {
                    table: table.name.to_string(),
                    chains,
                    sets: None,
                }
            })
            .collect();
        RulesetSummary {
            format: DumpFormat::IptablesSave,
            rules: ruleset.rule_count(),
            tables,
            unsupported,
        }
    }

    /// Summary of an `nft -j list ruleset` dump.
    pub fn of_nft(ruleset: &nft::Ruleset) -> RulesetSummary {
        let mut unsupported = Vec::new();
        let tables = ruleset
            .tables
            .iter()
            .map(|table| {
                let chains = table
                    .chains
                    .iter()
                    .map(|chain| {
                        note_unsupported(
                            &mut unsupported,
                            (table.display_name(), chain.name.clone()),
                            &chain.rules,
                            |rule| nft_unmodelled(table, rule),
                            |rule| (None, Some(rule.handle)),
                        );
                        let summary = ChainSummary {
                            policy: chain.base.as_ref().map(|b| {
                                match b.policy {
                                    nft::Policy::Accept => "ACCEPT",
                                    nft::Policy::Drop => "DROP",
                                }
                                .to_string()
                            }),
                            base: chain.base.as_ref().map(|b| BaseChainSummary {
                                kind: b.kind.as_str(),
                                hook: b.hook.map(|h| h.as_str()),
                                priority: b.priority,
                            }),
                            rules: chain.rules.len(),
                        };
                        (chain.name.clone(), summary)
                    })
                    .collect();
                let sets = table
                    .sets
                    .iter()
                    .map(|set| (set.name.clone(), set.elements().len()))
                    .collect();
                TableSummary {
                    table: table.display_name(),
                    chains,
                    sets: Some(sets),
                }
            })
            .collect();
        RulesetSummary {
            format: DumpFormat::NftJson,
            rules: ruleset.rule_count(),
            tables,
            unsupported,
        }
    }
}

/// Adds to `out` the rules of one chain (`table`, `chain` names) that have features a diagnosis
/// cannot evaluate, each with its position and where the dump puts it: `(line, handle)`.
fn note_unsupported<R>(
    out: &mut Vec<UnsupportedRule>,
    (table, chain): (String, String),
    rules: &[R],
    unmodelled: impl Fn(&R) -> Vec<String>,
    place: impl Fn(&R) -> (Option<usize>, Option<u64>),
) {
    for (i, rule) in rules.iter().enumerate() {
        let features = unmodelled(rule);
        if features.is_empty() {
            continue;
        }
        let (line, handle) = place(rule);
        out.push(UnsupportedRule {
            table: table.clone(),
            chain: chain.clone(),
            position: i + 1,
            line,
            handle,
            features,
        });
    }
}

/// What a diagnosis cannot evaluate in one iptables rule: unknown match modules and targets,
/// and modules assumed to match (their state is not in the dump).
fn iptables_unmodelled(rule: &iptables::Rule) -> Vec<String> {
    let mut features: Vec<String> = rule
        .matches
        .iter()
        .filter_map(|m| match &m.kind {
            MatchKind::Unknown { module, .. } => Some(format!("-m {module}")),
            MatchKind::Assumed { module, .. } => Some(format!("-m {module} (assumed to match)")),
            _ => None,
        })
        .collect();
    if let Target::Unknown { name, .. } = &rule.target {
        features.push(format!("-j {name}"));
    }
    features
}

/// What a diagnosis cannot evaluate in one nft rule: unknown expressions and statements, ones
/// that depend on runtime state, and lookups in sets whose type is not modelled.
fn nft_unmodelled(table: &nft::Table, rule: &nft::Rule) -> Vec<String> {
    let unreadable_set = |set: &nft::SetRef| {
        let (name, set) = match set {
            nft::SetRef::Named(i) => (format!("@{}", table.sets[*i].name), &table.sets[*i]),
            nft::SetRef::Anonymous(set) => ("anonymous set".to_string(), set.as_ref()),
        };
        set.unreadable
            .as_ref()
            .map(|why| format!("lookup in {name} ({why})"))
    };
    rule.stmts
        .iter()
        .filter_map(|stmt| match stmt {
            nft::Stmt::Unsupported(what) => Some(what.clone()),
            nft::Stmt::Assumed(what) => Some(format!("{what} (assumed to match)")),
            nft::Stmt::Match {
                right: nft::Operand::Set(set),
                ..
            }
            | nft::Stmt::VerdictMap { map: set, .. } => unreadable_set(set),
            _ => None,
        })
        .collect()
}
