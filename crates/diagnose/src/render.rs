//! Renderers: the text report people read, JSON for machines (schema in `docs/diagnosis.md`),
//! and the path as a graph in DOT, Mermaid and SVG (laid out in-process, see `svg.rs`).

use std::fmt::Write;

use model::diagnosis::{Diagnosis, Direction, Verdict};
use model::{Evidence, Level, Place};

/// Output formats of `netsleuth diagnose -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
    Svg,
}

pub fn render(d: &Diagnosis, format: Format) -> String {
    match format {
        Format::Text => text(d),
        Format::Json => {
            serde_json::to_string_pretty(d).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        }
        Format::Dot => dot(d),
        Format::Mermaid => mermaid(d),
        Format::Svg => crate::svg::svg(d),
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Delivered => "DELIVERED",
        Verdict::Blocked => "BLOCKED",
        Verdict::Incomplete => "INCOMPLETE",
    }
}

/// The readable report.
pub fn text(d: &Diagnosis) -> String {
    let mut out = String::new();
    let q = &d.query;
    let port = if q.protocol == "icmp" {
        String::new()
    } else {
        format!(" port {}", q.dport)
    };
    let _ = writeln!(
        out,
        "{} -> {} ({} {} -> {}{port})",
        q.src, q.dst, q.protocol, q.src_ip, q.dst_ip
    );
    let _ = writeln!(out, "verdict: {}", verdict_word(d.verdict));
    if let Some(dp) = &d.datapath {
        let _ = writeln!(
            out,
            "datapath: CNI {} ({}); kube-proxy {} ({})",
            dp.cni,
            dp.cni_detected_from,
            crate::cni::kube_proxy_name(dp.kube_proxy_mode),
            dp.kube_proxy_detected_from
        );
    }
    let _ = writeln!(out);
    for (i, path) in d.paths.iter().enumerate() {
        let dir = match path.direction {
            Direction::Forward => "forward",
            Direction::Reply => "reply",
        };
        let share = if (path.probability - 1.0).abs() > 1e-9 {
            format!(", {:.1}% of flows", path.probability * 100.0)
        } else {
            String::new()
        };
        let state = if path.delivered { "arrives" } else { "STOPPED" };
        let _ = writeln!(out, "path {} ({dir}{share}): {state}", i + 1);
        for hop in &path.hops {
            let iif = hop
                .iif
                .as_deref()
                .map(|i| format!(" in {i}"))
                .unwrap_or_default();
            let oif = hop
                .oif
                .as_deref()
                .map(|o| format!(" out {o}"))
                .unwrap_or_default();
            let mark = if hop.level.is_some_and(|l| l >= Level::Error) {
                "  ✗ "
            } else {
                "  • "
            };
            let _ = writeln!(out, "{mark}{}{iif}{oif}", hop.netns);
            if hop.packet_in != hop.packet_out {
                let _ = writeln!(out, "      {}  =>  {}", hop.packet_in, hop.packet_out);
            } else {
                let _ = writeln!(out, "      {}", hop.packet_in);
            }
            for step in &hop.steps {
                let _ = writeln!(out, "      - {step}");
            }
        }
        if let Some(f) = path.stopped_by.and_then(|i| d.findings.get(i)) {
            let _ = writeln!(out, "  stopped by: [{}] {}", f.code, f.message);
        }
        out.push('\n');
    }
    if d.findings.is_empty() {
        out.push_str("findings: none\n");
    } else {
        out.push_str("findings:\n");
    }
    for f in &d.findings {
        let place = place_text(&f.place);
        let _ = writeln!(
            out,
            "  {:<7} {}  {}",
            f.level.as_str().to_uppercase(),
            f.code,
            if place.is_empty() { "" } else { &place }
        );
        let _ = writeln!(out, "          {}", f.message);
        for e in &f.evidence {
            let _ = writeln!(out, "          evidence: {}", evidence_text(e));
        }
        if let Some(owner) = &f.owner {
            let _ = writeln!(out, "          owner: {owner}");
        }
        if let Some(hint) = &f.hint {
            let _ = writeln!(out, "          fix: {hint}");
        }
    }
    out
}

/// Where a finding is, as "node / netns / device" with the unknown parts left out.
pub(crate) fn place_text(place: &Place) -> String {
    [
        place.node.as_deref(),
        place.netns.as_deref(),
        place.device.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" / ")
}

pub fn evidence_text(e: &Evidence) -> String {
    match e {
        Evidence::Rule { rule } => {
            let pos = if rule.position == 0 {
                "policy".to_string()
            } else {
                format!("rule #{}", rule.position)
            };
            format!(
                "{} {}/{} {pos}, {}: {}",
                source_name(rule.source),
                rule.table,
                rule.chain,
                rule_location(rule),
                rule.text
            )
        }
        Evidence::Route { table, text } => format!("route (table {table}): {text}"),
        Evidence::RoutingRule { text } => format!("ip rule: {text}"),
        Evidence::Sysctl { key, value } => format!("sysctl {} = {value}", key.replace('/', ".")),
        Evidence::Link { name, detail } => format!("link {name}: {detail}"),
        Evidence::Object {
            kind,
            namespace,
            name,
            detail,
        } => {
            let ns = namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            let detail = detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            format!("{kind} {ns}{name}{detail}")
        }
        Evidence::Counter { name, value } => format!("{name} = {value}"),
        Evidence::Text { text } => text.clone(),
    }
}

fn source_name(s: netstack::netfilter::RuleSource) -> &'static str {
    match s {
        netstack::netfilter::RuleSource::Iptables => "iptables",
        netstack::netfilter::RuleSource::Ip6tables => "ip6tables",
        netstack::netfilter::RuleSource::Nftables => "nft",
    }
}

/// Where to find a rule again in its dump: `line N` of the iptables-save text, or the nft
/// handle (`handle N` of a rule, `chain handle N` for a base chain's policy: nft JSON has no
/// useful lines and handles survive relisting).
pub(crate) fn rule_location(rule: &netstack::netfilter::RuleRef) -> String {
    match (rule.handle, rule.position) {
        (Some(handle), 0) => format!("chain handle {handle}"),
        (Some(handle), _) => format!("handle {handle}"),
        (None, _) => format!("line {}", rule.line),
    }
}

fn colour(level: Option<Level>) -> &'static str {
    match level {
        Some(Level::Fatal) | Some(Level::Error) => "#d62728",
        Some(Level::Warning) => "#ff7f0e",
        _ => "#2ca02c",
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT: one node per netns visited, one edge per hop, coloured by the worst level.
pub fn dot(d: &Diagnosis) -> String {
    let mut out = String::from(
        "digraph netsleuth {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white];\n",
    );
    let mut nodes: Vec<(&str, Option<Level>)> = Vec::new();
    for hop in d.paths.iter().flat_map(|p| &p.hops) {
        match nodes.iter_mut().find(|(n, _)| *n == hop.netns) {
            Some((_, l)) => *l = (*l).max(hop.level),
            None => nodes.push((&hop.netns, hop.level)),
        }
    }
    for (n, level) in &nodes {
        let _ = writeln!(
            out,
            "  \"{}\" [color=\"{}\", penwidth=2];",
            escape(n),
            colour(*level)
        );
    }
    for (i, path) in d.paths.iter().enumerate() {
        let style = if path.direction == Direction::Reply {
            "dashed"
        } else {
            "solid"
        };
        for pair in path.hops.windows(2) {
            let label = pair[0].oif.as_deref().unwrap_or("");
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\", style={style}, tooltip=\"path {}\"];",
                escape(&pair[0].netns),
                escape(&pair[1].netns),
                escape(label),
                i + 1
            );
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart of the same graph.
pub fn mermaid(d: &Diagnosis) -> String {
    let id = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    };
    let mut out = String::from("flowchart LR\n");
    let mut seen: Vec<&str> = Vec::new();
    for hop in d.paths.iter().flat_map(|p| &p.hops) {
        if !seen.contains(&hop.netns.as_str()) {
            seen.push(&hop.netns);
            let _ = writeln!(
                out,
                "  {}[\"{}\"]",
                id(&hop.netns),
                hop.netns.replace('"', "'")
            );
            if hop.level.is_some_and(|l| l >= Level::Error) {
                let _ = writeln!(
                    out,
                    "  style {} stroke:#d62728,stroke-width:3px",
                    id(&hop.netns)
                );
            }
        }
    }
    for path in &d.paths {
        let arrow = if path.direction == Direction::Reply {
            "-.->"
        } else {
            "-->"
        };
        for pair in path.hops.windows(2) {
            let label = pair[0].oif.as_deref().unwrap_or("");
            let _ = writeln!(
                out,
                "  {} {arrow}|{label}| {}",
                id(&pair[0].netns),
                id(&pair[1].netns)
            );
        }
    }
    out
}
