//! `netsleuth netfilter …`: look at rulesets on their own, outside a diagnosis.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use netstack::netfilter::summary::RulesetSummary;
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

/// The command's output: the dump's name, then its summary.
#[derive(Serialize)]
struct Summary {
    file: String,
    #[serde(flatten)]
    ruleset: RulesetSummary,
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
                RulesetSummary::of_nft(&ruleset)
            } else {
                let ruleset = netstack::iptables::parse(&text).map_err(|e| {
                    ExitError::bad_input(format!("{name}:{}: {}", e.line, e.message))
                })?;
                RulesetSummary::of_iptables(&ruleset)
            };
            let summary = Summary {
                file: name,
                ruleset: summary,
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

fn print_text(Summary { file, ruleset }: &Summary) {
    println!("{file}: {} rules", ruleset.rules);
    for table in &ruleset.tables {
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
    if ruleset.unsupported.is_empty() {
        println!("\nEvery match and target is modelled.");
    } else {
        println!(
            "\nNot modelled ({} rules; a diagnosis assumes they match / continue and says so):",
            ruleset.unsupported.len()
        );
        for u in &ruleset.unsupported {
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
