//! `netsleuth netfilter …`: look at rulesets on their own, outside a diagnosis.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use netstack::iptables::{MatchKind, Rule, Ruleset, Target};
use netstack::nft;
use serde::Serialize;

use super::ExitError;

#[derive(clap::Subcommand)]
pub enum NetfilterCommand {
    /// Parse an iptables-save (or ip6tables-save) dump or an `nft -j list ruleset` dump and
    /// summarise it.
    ///
    /// Prints the rule count of every chain in every table (for nft also base chains' hook,
    /// priority and policy, and the sets and maps of each table) and lists, per rule, the
    /// matches, targets and expressions the simulator does not model (they are assumed to match
    /// / to continue during a diagnosis, and reported). Use it to check a real node's dump
    /// before trusting a diagnosis. A file starting with `{` is read as nft JSON. A malformed
    /// dump exits 2 with FILE:LINE (and for nft the JSON path) and what is wrong.
    Parse {
        /// The dump, as written by `iptables-save > FILE` or `nft -j list ruleset > FILE`.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Which tool wrote the dump.
#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum DumpFormat {
    IptablesSave,
    NftJson,
}

#[derive(Serialize)]
struct Summary {
    file: String,
    format: DumpFormat,
    rules: usize,
    tables: Vec<TableSummary>,
    unsupported: Vec<UnsupportedRule>,
}

#[derive(Serialize)]
struct TableSummary {
    /// `filter`, `nat`, … for iptables; `family name` (`inet filter`) for nft.
    table: String,
    chains: BTreeMap<String, ChainSummary>,
    /// nft only: named sets and maps, with their element counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    sets: Option<BTreeMap<String, usize>>,
}

#[derive(Serialize)]
struct ChainSummary {
    /// `ACCEPT`/`DROP` for built-in chains and nft base chains, absent for user chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    /// nft base chains only: where the chain is registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<BaseChainSummary>,
    rules: usize,
}

#[derive(Serialize)]
struct BaseChainSummary {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `PREROUTING` … `POSTROUTING`, or `null` for hooks a diagnosis does not walk
    /// (`ingress`, `egress`).
    hook: Option<&'static str>,
    priority: i32,
}

#[derive(Serialize)]
struct UnsupportedRule {
    table: String,
    chain: String,
    /// 1-based position in the chain.
    position: usize,
    /// iptables-save only: line in the dump.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    /// nft only: the rule handle (`nft delete rule … handle N` names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<u64>,
    features: Vec<String>,
}

pub fn run(command: NetfilterCommand) -> anyhow::Result<ExitCode> {
    match command {
        NetfilterCommand::Parse { file, json } => {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {name}"))?;
            let summary = if text.trim_start().starts_with('{') {
                let ruleset = netstack::nft::parse(&text).map_err(|e| {
                    ExitError::bad_input(format!("{name}:{}: not an nft -j ruleset: {e}", e.line))
                })?;
                summarise_nft(&name, &ruleset)
            } else {
                let ruleset = netstack::iptables::parse(&text).map_err(|e| {
                    ExitError::bad_input(format!("{name}:{}: {}", e.line, e.message))
                })?;
                summarise(&name, &ruleset)
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_text(&summary);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn summarise(file: &str, ruleset: &Ruleset) -> Summary {
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
    Summary {
        file: file.to_string(),
        format: DumpFormat::IptablesSave,
        rules: ruleset.rule_count(),
        tables,
        unsupported,
    }
}

fn summarise_nft(file: &str, ruleset: &nft::Ruleset) -> Summary {
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
    Summary {
        file: file.to_string(),
        format: DumpFormat::NftJson,
        rules: ruleset.rule_count(),
        tables,
        unsupported,
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
fn iptables_unmodelled(rule: &Rule) -> Vec<String> {
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

fn print_text(summary: &Summary) {
    println!("{}: {} rules", summary.file, summary.rules);
    for table in &summary.tables {
        let total: usize = table.chains.values().map(|c| c.rules).sum();
        println!(
            "\n*{}  ({} chains, {} rules)",
            table.table,
            table.chains.len(),
            total
        );
        for (name, chain) in &table.chains {
            let base = chain.base.as_ref().map(|b| {
                format!(
                    "  type {} hook {} priority {}",
                    b.kind,
                    b.hook.unwrap_or("(not walked)"),
                    b.priority
                )
            });
            match &chain.policy {
                Some(p) => println!(
                    "  {name:<40} {:>7} rules  policy {p}{}",
                    chain.rules,
                    base.unwrap_or_default()
                ),
                None => println!("  {name:<40} {:>7} rules", chain.rules),
            }
        }
        if let Some(sets) = &table.sets {
            for (name, elements) in sets {
                println!("  @{name:<39} {elements:>7} elements");
            }
        }
    }
    if summary.unsupported.is_empty() {
        println!("\nEvery match and target is modelled.");
    } else {
        println!(
            "\nNot modelled ({} rules; a diagnosis assumes they match / continue and says so):",
            summary.unsupported.len()
        );
        for u in &summary.unsupported {
            let at = match (u.line, u.handle) {
                (Some(line), _) => format!("line {line:>6}"),
                (None, Some(handle)) => format!("handle {handle:>4}"),
                (None, None) => String::new(),
            };
            println!(
                "  {at}  {}/{} #{}: {}",
                u.table,
                u.chain,
                u.position,
                u.features.join(", ")
            );
        }
    }
}
