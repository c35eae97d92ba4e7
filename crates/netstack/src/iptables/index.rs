//! The first pass over an `iptables-save` dump: tables, chain declarations, and which lines hold
//! each chain's rules. It checks everything but the rule options, which `parse.rs` reads per chain
//! when asked; so this pass is a line scan, about a tenth of the cost of reading every rule.
//!
//! Must not interpret rule options: a rule line is only attributed to its chain here.

use std::borrow::Cow;

use super::parse::{err, is_blank, strip_counters, tokenize, ParseError};
use super::*;

/// A dump's structure, and its first structural error if there is one. With an error, the tables
/// read up to it are kept (the open one too) so that the caller can look for earlier errors
/// inside rules.
pub(super) struct Indexed {
    pub ruleset: Ruleset,
    pub error: Option<StructuralError>,
}

/// A structural error and the line at which a top-to-bottom reader notices it: its own line, or
/// the end of the dump for a missing `COMMIT`.
pub(super) struct StructuralError {
    pub error: ParseError,
    pub noticed_at: usize,
}

/// A table between its `*name` line and its `COMMIT`.
struct OpenTable {
    name: TableName,
    line: usize,
    chains: Vec<DeclaredChain>,
    names: ChainNames,
    /// (chain position, segment), in file order.
    segments: Vec<(u32, Segment)>,
    /// The chain the previous rule line was appended to, while no declaration came in between:
    /// the next rule of that chain extends its last segment.
    current: Option<usize>,
}

struct DeclaredChain {
    policy: Option<Policy>,
    line: usize,
}

impl OpenTable {
    fn close(self, source: &Arc<str>) -> Table {
        // Group the segments by chain (a counting sort, keeping file order within a chain).
        let mut starts = vec![0u32; self.chains.len() + 1];
        for &(chain, _) in &self.segments {
            starts[chain as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut grouped = vec![
            Segment {
                start: 0,
                end: 0,
                line: 0
            };
            self.segments.len()
        ];
        for (chain, segment) in self.segments {
            let slot = &mut next[chain as usize];
            grouped[*slot as usize] = segment;
            *slot += 1;
        }
        let text = Arc::new(TableText {
            source: Arc::clone(source),
            names: self.names,
            segments: grouped,
            shared_names: self.chains.iter().map(|_| OnceLock::new()).collect(),
        });
        let chains = self
            .chains
            .into_iter()
            .enumerate()
            .map(|(i, c)| Chain {
                policy: c.policy,
                line: c.line,
                position: i as u32,
                text: Arc::clone(&text),
                segments: starts[i]..starts[i + 1],
                rules: OnceLock::new(),
            })
            .collect();
        Table {
            name: self.name,
            chains,
            text,
        }
    }
}

/// Index `source`, which the ruleset keeps (shared, not copied) to read rules from later.
pub(super) fn index(source: Arc<str>) -> Indexed {
    let mut tables = Vec::new();
    let mut open = None;
    let error = scan(&source, &mut tables, &mut open).err();
    if let Some(table) = open {
        tables.push(table.close(&source));
    }
    Indexed {
        ruleset: Ruleset {
            tables,
            ipv6: false,
            source,
        },
        error,
    }
}

fn scan(
    source: &Arc<str>,
    tables: &mut Vec<Table>,
    open: &mut Option<OpenTable>,
) -> Result<(), StructuralError> {
    let text: &str = source;
    let at_line = |error: ParseError| StructuralError {
        noticed_at: error.line,
        error,
    };
    if u32::try_from(text.len()).is_err() {
        // Rules keep 32-bit offsets into the dump (half the size of a pointer pair).
        return Err(at_line(ParseError {
            line: 1,
            message: "dump larger than 4 GiB".into(),
        }));
    }
    let mut pos = 0;
    let mut line_no = 0;
    while pos < text.len() {
        let line_start = pos;
        let line_end =
            memchr::memchr(b'\n', &text.as_bytes()[pos..]).map_or(text.len(), |i| pos + i);
        pos = line_end + 1;
        line_no += 1;
        let line = text[line_start..line_end].trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if open.is_some() {
                return Err(at_line(ParseError {
                    line: line_no,
                    message: format!("table *{name} starts before the previous table's COMMIT"),
                }));
            }
            let table = TableName::from_name(name.trim()).ok_or_else(|| {
                at_line(ParseError {
                    line: line_no,
                    message: format!("unknown table {name:?}"),
                })
            })?;
            if tables.iter().any(|t| t.name == table) {
                return Err(at_line(ParseError {
                    line: line_no,
                    message: format!("table *{name} appears twice"),
                }));
            }
            *open = Some(OpenTable {
                name: table,
                line: line_no,
                chains: Vec::new(),
                names: ChainNames::default(),
                segments: Vec::new(),
                current: None,
            });
            continue;
        }
        let Some(table) = open.as_mut() else {
            return Err(at_line(ParseError {
                line: line_no,
                message: "rule or chain outside a table (expected a `*table` line first)".into(),
            }));
        };
        if line == "COMMIT" {
            let done = open.take().expect("checked above");
            tables.push(done.close(source));
        } else if let Some(decl) = line.strip_prefix(':') {
            table.current = None;
            declare_chain(table, text, decl, line_no).map_err(at_line)?;
        } else {
            let chain = rule_chain(table, text, line, line_no).map_err(at_line)?;
            match table.segments.last_mut() {
                Some((_, last)) if table.current == Some(chain) => last.end = line_end as u32,
                _ => table.segments.push((
                    chain as u32,
                    Segment {
                        start: line_start as u32,
                        end: line_end as u32,
                        line: line_no as u32,
                    },
                )),
            }
            table.current = Some(chain);
        }
    }
    match open {
        Some(table) => Err(StructuralError {
            error: ParseError {
                line: table.line,
                message: format!("table *{} is never committed (missing COMMIT)", table.name),
            },
            noticed_at: line_no + 1,
        }),
        None => Ok(()),
    }
}

fn declare_chain(
    table: &mut OpenTable,
    source: &str,
    decl: &str,
    line: usize,
) -> Result<(), ParseError> {
    let mut parts = decl.split_whitespace();
    let name = parts.next().ok_or_else(|| ParseError {
        line,
        message: "chain declaration without a name".into(),
    })?;
    let policy = match parts.next() {
        Some("-") => None,
        Some("ACCEPT") => Some(Policy::Accept),
        Some("DROP") => Some(Policy::Drop),
        Some(other) => {
            return err(
                line,
                format!("chain {name}: unknown policy {other:?} (expected ACCEPT, DROP or -)"),
            )
        }
        None => return err(line, format!("chain {name}: missing policy")),
    };
    if !table.names.insert(source, name) {
        return err(
            line,
            format!("chain {name} declared twice in table {}", table.name),
        );
    }
    table.chains.push(DeclaredChain { policy, line });
    Ok(())
}

/// The declared chain an `-A CHAIN …` line appends to.
fn rule_chain(
    table: &OpenTable,
    source: &str,
    line: &str,
    line_no: usize,
) -> Result<usize, ParseError> {
    let Some(rest) = strip_counters(line).strip_prefix("-A ") else {
        return err(
            line_no,
            format!("expected `-A CHAIN …`, `:CHAIN`, `COMMIT` or `*table`, found {line:?}"),
        );
    };
    let rest = rest.trim_ascii_start();
    let mut tokens = Vec::new();
    let name: Cow<'_, str> = if rest.starts_with('"') {
        // A quoted chain name (iptables-save never writes one, but hand-written files may).
        tokenize(rest, line_no, &mut tokens)?;
        tokens.into_iter().next().unwrap_or_default()
    } else {
        let end = rest.bytes().position(is_blank).unwrap_or(rest.len());
        Cow::Borrowed(&rest[..end])
    };
    if name.is_empty() {
        return err(line_no, "`-A` without a chain name");
    }
    // Rules of one chain come together in a dump: try the previous rule's chain first.
    if let Some(c) = table
        .current
        .filter(|&c| table.names.name(source, c) == name)
    {
        return Ok(c);
    }
    table.names.find(source, &name).ok_or_else(|| ParseError {
        line: line_no,
        message: format!(
            "rule appended to chain {name:?}, which is not declared in table {}",
            table.name
        ),
    })
}
