//! The diagnosis as a picture: an SVG laid out here, with no external tool.
//!
//! Hops are boxes (netns, devices, the packet, what the kernel did there), filled by the worst
//! finding level placed in that netns; arrows follow the packet. Forward paths share the hops
//! they have in common, so a Service's load balancing shows as a fan-out whose branches carry
//! their share of flows; reply paths are drawn below with dashed arrows. A legend and the
//! findings follow. The layout is a left-to-right tree per direction (a path is a chain of hops,
//! and paths differ only after a fan-out), which needs no general graph layout.
//!
//! Reads the [`Diagnosis`] only; must not walk or judge anything itself.

use std::fmt::Write;

use model::diagnosis::{Diagnosis, Direction, Hop, Verdict};
use model::Level;

use crate::render::{evidence_text, place_text};

/// Width of one character of the monospace font at `FONT_SIZE` (close for DejaVu Sans Mono and
/// the browsers' default monospace).
const CHAR_WIDTH: f64 = 6.6;
const FONT_SIZE: u32 = 11;
const LINE_HEIGHT: f64 = 14.0;
/// Longest text line in a box; longer ones are cut (the box's tooltip has them whole).
const BOX_CHARS: usize = 58;
/// Steps listed in a box before "… N more".
const BOX_STEPS: usize = 4;
/// Wrap width of the findings' text.
const FINDING_CHARS: usize = 130;
const MARGIN: f64 = 20.0;
const PADDING: f64 = 8.0;
const COLUMN_GAP: f64 = 90.0;
const ROW_GAP: f64 = 26.0;

/// Fill and stroke for a hop whose worst finding is `level` (`None`: no finding there).
fn colours(level: Option<Level>) -> (&'static str, &'static str) {
    match level {
        None => ("#eef7ee", "#2e7d32"),
        Some(Level::Info) => ("#e8f1fb", "#1f6fb5"),
        Some(Level::Warning) => ("#fff3e0", "#e07b00"),
        Some(Level::Error) => ("#fdecea", "#c62828"),
        Some(Level::Fatal) => ("#f3e0f5", "#6a1b9a"),
    }
}

fn level_name(level: Option<Level>) -> &'static str {
    level.map_or("no finding", Level::as_str)
}

/// Escape text for XML content and attribute values.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn cut(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(chars - 1).collect();
        out.push('…');
        out
    }
}

/// Greedy word wrap at `width` characters (a word longer than that gets its own line).
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// One box: a hop shared by every path through it.
struct Node<'a> {
    hop: &'a Hop,
    depth: usize,
    children: Vec<usize>,
    /// Share of flows through this hop.
    probability: f64,
    /// Code of the finding that stopped a path here.
    stopped_by: Option<String>,
    row: f64,
}

/// The paths of one direction merged into a forest: paths that begin with the same hops share
/// those boxes.
struct Tree<'a> {
    nodes: Vec<Node<'a>>,
    roots: Vec<usize>,
}

impl<'a> Tree<'a> {
    fn build(d: &'a Diagnosis, direction: Direction) -> Tree<'a> {
        let mut tree = Tree {
            nodes: Vec::new(),
            roots: Vec::new(),
        };
        for path in d.paths.iter().filter(|p| p.direction == direction) {
            let mut parent: Option<usize> = None;
            for (depth, hop) in path.hops.iter().enumerate() {
                let siblings = match parent {
                    Some(p) => &tree.nodes[p].children,
                    None => &tree.roots,
                };
                let idx = match siblings.iter().copied().find(|&i| tree.nodes[i].hop == hop) {
                    Some(i) => i,
                    None => {
                        tree.nodes.push(Node {
                            hop,
                            depth,
                            children: Vec::new(),
                            probability: 0.0,
                            stopped_by: None,
                            row: 0.0,
                        });
                        let i = tree.nodes.len() - 1;
                        match parent {
                            Some(p) => tree.nodes[p].children.push(i),
                            None => tree.roots.push(i),
                        }
                        i
                    }
                };
                tree.nodes[idx].probability += path.probability;
                parent = Some(idx);
            }
            if let (Some(last), Some(f)) = (parent, path.stopped_by.and_then(|i| d.findings.get(i)))
            {
                tree.nodes[last].stopped_by = Some(f.code.to_string());
            }
        }
        let mut next_row = 0.0;
        for root in tree.roots.clone() {
            tree.place(root, &mut next_row);
        }
        tree
    }

    /// Leaves take the next free row; a hop sits level with the middle of its branches.
    fn place(&mut self, node: usize, next_row: &mut f64) {
        let children = self.nodes[node].children.clone();
        if children.is_empty() {
            self.nodes[node].row = *next_row;
            *next_row += 1.0;
            return;
        }
        for &c in &children {
            self.place(c, next_row);
        }
        let (first, last) = (children[0], children[children.len() - 1]);
        self.nodes[node].row = (self.nodes[first].row + self.nodes[last].row) / 2.0;
    }

    fn rows(&self) -> f64 {
        self.nodes.iter().map(|n| n.row + 1.0).fold(0.0, f64::max)
    }

    fn depth(&self) -> usize {
        self.nodes.iter().map(|n| n.depth + 1).max().unwrap_or(0)
    }
}

/// The text lines of a hop's box, and the whole of them for its tooltip.
fn box_lines(node: &Node<'_>) -> (Vec<String>, String) {
    let hop = node.hop;
    let devices = match (&hop.iif, &hop.oif) {
        (Some(i), Some(o)) => format!("in {i} → out {o}"),
        (Some(i), None) => format!("in {i}"),
        (None, Some(o)) => format!("out {o}"),
        (None, None) => String::new(),
    };
    let mut full = vec![hop.netns.clone()];
    if !devices.is_empty() {
        full.push(devices);
    }
    full.push(hop.packet_in.clone());
    if hop.packet_out != hop.packet_in {
        full.push(format!("⇒ {}", hop.packet_out));
    }
    let head = full.len();
    full.extend(hop.steps.iter().map(|s| format!("· {s}")));
    if let Some(code) = &node.stopped_by {
        full.push(format!("✗ stopped: {code}"));
    }
    let tooltip = full.join("\n");
    let mut shown: Vec<String> = Vec::new();
    let steps = hop.steps.len();
    for (i, line) in full.iter().enumerate() {
        let is_step = i >= head && i < head + steps;
        if is_step && i - head == BOX_STEPS && steps > BOX_STEPS + 1 {
            shown.push(format!("· … {} more", steps - BOX_STEPS));
            continue;
        }
        if is_step && i - head > BOX_STEPS && steps > BOX_STEPS + 1 {
            continue;
        }
        shown.push(cut(line, BOX_CHARS));
    }
    (shown, tooltip)
}

/// Render the diagnosis as a standalone SVG document.
pub fn svg(d: &Diagnosis) -> String {
    let forward = Tree::build(d, Direction::Forward);
    let reply = Tree::build(d, Direction::Reply);
    let trees = [(&forward, "forward"), (&reply, "reply")];

    let lines_of =
        |t: &Tree<'_>| -> Vec<(Vec<String>, String)> { t.nodes.iter().map(box_lines).collect() };
    let texts: Vec<Vec<(Vec<String>, String)>> = trees.iter().map(|(t, _)| lines_of(t)).collect();
    let widest = texts
        .iter()
        .flatten()
        .flat_map(|(lines, _)| lines.iter().map(|l| l.chars().count()))
        .max()
        .unwrap_or(20);
    let box_width = widest as f64 * CHAR_WIDTH + 2.0 * PADDING;
    let box_height = |lines: usize| lines as f64 * LINE_HEIGHT + 2.0 * PADDING - 2.0;
    let row_height = texts
        .iter()
        .flatten()
        .map(|(lines, _)| box_height(lines.len()))
        .fold(0.0, f64::max)
        + ROW_GAP;

    let columns = forward.depth().max(reply.depth()).max(1);
    let graph_width = columns as f64 * (box_width + COLUMN_GAP) - COLUMN_GAP;
    let finding_width = FINDING_CHARS as f64 * CHAR_WIDTH + 40.0;
    let width = (2.0 * MARGIN + graph_width.max(finding_width)).ceil();

    let mut body = String::new();
    let mut y = MARGIN;
    // Title: the question and the answer.
    let q = &d.query;
    let port = if q.protocol == "icmp" {
        String::new()
    } else {
        format!(" port {}", q.dport)
    };
    let (verdict, verdict_colour) = match d.verdict {
        Verdict::Delivered => ("DELIVERED", colours(None).1),
        Verdict::Blocked => ("BLOCKED", colours(Some(Level::Error)).1),
        Verdict::Incomplete => ("INCOMPLETE", colours(Some(Level::Warning)).1),
    };
    y += 14.0;
    let _ = writeln!(
        body,
        r#"<text x="{MARGIN}" y="{y}" font-size="14" font-weight="bold">{}</text>"#,
        xml(&format!(
            "{} → {} ({} {} → {}{port})",
            q.src, q.dst, q.protocol, q.src_ip, q.dst_ip
        ))
    );
    y += 20.0;
    let _ = writeln!(
        body,
        r#"<text x="{MARGIN}" y="{y}" font-size="13">verdict: <tspan font-weight="bold" fill="{verdict_colour}">{verdict}</tspan></text>"#
    );
    y += 16.0;
    legend(&mut body, MARGIN, y);
    y += 34.0;

    for ((tree, name), texts) in trees.iter().zip(&texts) {
        if tree.nodes.is_empty() {
            continue;
        }
        let _ = writeln!(
            body,
            r##"<text x="{MARGIN}" y="{y}" font-size="12" font-weight="bold" fill="#555">{name} path</text>"##
        );
        y += 10.0;
        let dashed = *name == "reply";
        let top = y;
        let origin = |n: &Node<'_>| {
            (
                MARGIN + n.depth as f64 * (box_width + COLUMN_GAP),
                top + n.row * row_height,
            )
        };
        let _ = writeln!(body, r#"<g class="{name}">"#);
        // Arrows first, so that boxes are drawn over their ends.
        for (n, node) in tree.nodes.iter().enumerate() {
            let (x, y0) = origin(node);
            let from_height = box_height(texts[n].0.len());
            for &c in &node.children {
                let child = &tree.nodes[c];
                let (cx, cy) = origin(child);
                let to_height = box_height(texts[c].0.len());
                let (x1, y1) = (x + box_width, y0 + from_height / 2.0);
                let (x2, y2) = (cx - 4.0, cy + to_height / 2.0);
                let mid = (x1 + x2) / 2.0;
                let (_, stroke) = colours(child.hop.level);
                let dash = if dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                };
                let _ = writeln!(
                    body,
                    r#"<path d="M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="{stroke}" stroke-width="1.6"{dash} marker-end="url(#arrow)"/>"#
                );
                let mut label = node.hop.oif.clone().unwrap_or_default();
                if node.children.len() > 1 {
                    let share = format!("{:.1}%", child.probability * 100.0);
                    label = if label.is_empty() {
                        share
                    } else {
                        format!("{label} · {share}")
                    };
                }
                if !label.is_empty() {
                    let lx = mid;
                    let ly = (y1 + y2) / 2.0 - 4.0;
                    let _ = writeln!(
                        body,
                        r##"<text x="{lx:.1}" y="{ly:.1}" font-size="10" text-anchor="middle" fill="#333" class="edge">{}</text>"##,
                        xml(&label)
                    );
                }
            }
        }
        for (i, node) in tree.nodes.iter().enumerate() {
            let (x, y0) = origin(node);
            let (lines, tooltip) = &texts[i];
            let (fill, stroke) = colours(node.hop.level);
            let _ = writeln!(
                body,
                r#"<g class="hop" data-netns="{}" data-level="{}"><title>{}</title>"#,
                xml(&node.hop.netns),
                level_name(node.hop.level),
                xml(tooltip)
            );
            let _ = writeln!(
                body,
                r#"<rect x="{x:.1}" y="{y0:.1}" width="{box_width:.1}" height="{:.1}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="{}"/>"#,
                box_height(lines.len()),
                if node.stopped_by.is_some() { 3 } else { 2 }
            );
            for (l, line) in lines.iter().enumerate() {
                let ty = y0 + PADDING + 10.0 + l as f64 * LINE_HEIGHT;
                let weight = if l == 0 { r#" font-weight="bold""# } else { "" };
                let colour = if line.starts_with('✗') {
                    stroke
                } else {
                    "#222"
                };
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{ty:.1}"{weight} fill="{colour}">{}</text>"#,
                    x + PADDING,
                    xml(line)
                );
            }
            body.push_str("</g>\n");
        }
        body.push_str("</g>\n");
        y = top + tree.rows() * row_height + 10.0;
    }

    y += 6.0;
    let _ = writeln!(
        body,
        r##"<text x="{MARGIN}" y="{y}" font-size="12" font-weight="bold" fill="#555">findings</text>"##
    );
    y += 8.0;
    if d.findings.is_empty() {
        y += LINE_HEIGHT;
        let _ = writeln!(body, r#"<text x="{MARGIN}" y="{y}">none</text>"#);
    }
    for f in &d.findings {
        let (fill, stroke) = colours(Some(f.level));
        let place = place_text(&f.place);
        let mut lines = wrap(&f.message, FINDING_CHARS);
        for e in &f.evidence {
            lines.extend(wrap(
                &format!("evidence: {}", evidence_text(e)),
                FINDING_CHARS,
            ));
        }
        if let Some(owner) = &f.owner {
            lines.push(format!("owner: {owner}"));
        }
        if let Some(hint) = &f.hint {
            lines.extend(wrap(&format!("fix: {hint}"), FINDING_CHARS));
        }
        y += 6.0;
        let height = (lines.len() + 1) as f64 * LINE_HEIGHT + 8.0;
        let _ = writeln!(
            body,
            r#"<g class="finding" data-code="{}" data-level="{}">"#,
            xml(&f.code.to_string()),
            f.level.as_str()
        );
        let _ = writeln!(
            body,
            r#"<rect x="{MARGIN}" y="{y:.1}" width="{:.1}" height="{height:.1}" rx="4" fill="{fill}" stroke="{stroke}"/>"#,
            width - 2.0 * MARGIN
        );
        let mut ty = y + LINE_HEIGHT;
        let _ = writeln!(
            body,
            r#"<text x="{:.1}" y="{ty:.1}" font-weight="bold" fill="{stroke}">{}</text>"#,
            MARGIN + 8.0,
            xml(&format!(
                "{}  {}  {place}",
                f.level.as_str().to_uppercase(),
                f.code
            ))
        );
        for line in &lines {
            ty += LINE_HEIGHT;
            let _ = writeln!(
                body,
                r##"<text x="{:.1}" y="{ty:.1}" fill="#222">{}</text>"##,
                MARGIN + 8.0,
                xml(line)
            );
        }
        body.push_str("</g>\n");
        y += height;
    }
    let height = (y + MARGIN).ceil();

    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT_SIZE}">"#
    );
    out.push_str(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n",
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

/// What the box colours mean.
fn legend(body: &mut String, x: f64, y: f64) {
    let mut lx = x;
    for level in [
        None,
        Some(Level::Info),
        Some(Level::Warning),
        Some(Level::Error),
        Some(Level::Fatal),
    ] {
        let (fill, stroke) = colours(level);
        let name = level_name(level);
        let _ = writeln!(
            body,
            r#"<g class="legend" data-level="{name}"><rect x="{lx:.1}" y="{y:.1}" width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text></g>"#,
            lx + 20.0,
            y + 11.0
        );
        lx += 20.0 + name.len() as f64 * CHAR_WIDTH + 24.0;
    }
    let _ = writeln!(
        body,
        r##"<text x="{lx:.1}" y="{:.1}" fill="#555">box colour: worst finding in that netns · solid arrows: forward · dashed: reply</text>"##,
        y + 11.0
    );
}
