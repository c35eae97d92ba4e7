//! `netsleuth netfilter …`: look at rulesets on their own, outside a diagnosis.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use netstack::iptables::{MatchKind, Ruleset, Target};
use serde::Serialize;

use super::ExitError;

#[derive(clap::Subcommand)]
pub enum NetfilterCommand {
    /// Parse an iptables-save (or ip6tables-save) dump and summarise it.
    ///
    /// Prints the rule count of every chain in every table and lists, per rule, the matches and
    /// targets the simulator does not model (they are assumed to match / to continue during a
    /// diagnosis, and reported). Use it to check a real node's dump before trusting a diagnosis.
    /// A malformed dump exits 2 with FILE:LINE and what is wrong.
    Parse {
        /// The dump, as written by `iptables-save > FILE`.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Summary {
    file: String,
    rules: usize,
    tables: Vec<TableSummary>,
    unsupported: Vec<UnsupportedRule>,
}

#[derive(Serialize)]
struct TableSummary {
    table: String,
    chains: BTreeMap<String, ChainSummary>,
}

#[derive(Serialize)]
struct ChainSummary {
    /// `ACCEPT`/`DROP` for built-in chains, absent for user chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    rules: usize,
}

#[derive(Serialize)]
struct UnsupportedRule {
    table: String,
    chain: String,
    position: usize,
    line: usize,
    features: Vec<String>,
}

pub fn run(command: NetfilterCommand) -> anyhow::Result<ExitCode> {
    match command {
        NetfilterCommand::Parse { file, json } => {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {name}"))?;
            let ruleset = netstack::iptables::parse(&text)
                .map_err(|e| ExitError::bad_input(format!("{name}:{}: {}", e.line, e.message)))?;
            let summary = summarise(&name, &ruleset);
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
                    for (i, rule) in chain.rules().iter().enumerate() {
                        let mut features: Vec<String> = rule
                            .matches
                            .iter()
                            .filter_map(|m| match &m.kind {
                                MatchKind::Unknown { module, .. } => Some(format!("-m {module}")),
                                MatchKind::Assumed { module, .. } => {
                                    Some(format!("-m {module} (assumed to match)"))
                                }
                                _ => None,
                            })
                            .collect();
                        if let Target::Unknown { name, .. } = &rule.target {
                            features.push(format!("-j {name}"));
                        }
                        if !features.is_empty() {
                            unsupported.push(UnsupportedRule {
                                table: table.name.to_string(),
                                chain: chain.name().to_string(),
                                position: i + 1,
                                line: rule.line,
                                features,
                            });
                        }
                    }
                    let policy = chain.policy.map(|p| format!("{p:?}").to_uppercase());
                    (
                        chain.name().to_string(),
                        ChainSummary {
                            policy,
                            rules: chain.rules().len(),
                        },
                    )
                })
                .collect();
            TableSummary {
                table: table.name.to_string(),
                chains,
            }
        })
        .collect();
    Summary {
        file: file.to_string(),
        rules: ruleset.rule_count(),
        tables,
        unsupported,
    }
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
            match &chain.policy {
                Some(p) => println!("  {name:<40} {:>7} rules  policy {p}", chain.rules),
                None => println!("  {name:<40} {:>7} rules", chain.rules),
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
            println!(
                "  line {:>6}  {}/{} #{}: {}",
                u.line,
                u.table,
                u.chain,
                u.position,
                u.features.join(", ")
            );
        }
    }
}
