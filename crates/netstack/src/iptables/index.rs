//! The first pass over an `iptables-save` dump: tables, chain declarations, and which lines hold
//! each chain's rules. It checks everything but the rule options, which `parse.rs` reads per chain
//! when asked; so this pass is a line scan, about a tenth of the cost of reading every rule. On a
//! large dump another thread pre-reads the last three quarters meanwhile, grouping rule lines into
//! runs per chain name, so that this pass looks up a chain per run there rather than per line.
//!
//! Must not interpret rule options: a rule line is only attributed to its chain here.

use std::ops::Range;

use super::parse::{
    blank_from, err, first_word, line_ranges, strip_counters, tokenize, ParseError,
};
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
    /// Attribute `rules` rule lines in `bytes`, the first on line `line`, to chain `chain`.
    fn append(&mut self, chain: usize, bytes: Range<usize>, line: usize, rules: u32) {
        match self.segments.last_mut() {
            Some((_, last)) if self.current == Some(chain) => {
                last.end = bytes.end as u32;
                last.rules += rules;
            }
            _ => self.segments.push((
                chain as u32,
                Segment {
                    start: bytes.start as u32,
                    end: bytes.end as u32,
                    line: line as u32,
                    rules,
                },
            )),
        }
        self.current = Some(chain);
    }

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
                line: 0,
                rules: 0,
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

/// Dumps smaller than this are indexed on one thread: starting a thread costs more than it saves.
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// The index reads the first 1/PRESCAN_SPLIT of a large dump itself while another thread
/// pre-reads the rest: a kube-proxy dump declares its chains (60,000 for 10k Services) up there,
/// and a declaration costs this thread about twice what pre-reading a rule line costs the other.
const PRESCAN_SPLIT: usize = 4;

/// Index `source`, which the ruleset keeps (shared, not copied) to read rules from later.
pub(super) fn index(source: Arc<str>) -> Indexed {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = workers > 1 && source.len() >= PARALLEL_MIN_BYTES;
    index_with(source, parallel)
}

/// [`index`], on two threads when `parallel` (the result is the same either way).
pub(super) fn index_with(source: Arc<str>, parallel: bool) -> Indexed {
    let mut indexer = Indexer {
        source: &source,
        tables: Vec::new(),
        open: None,
    };
    let error = indexer.scan(parallel).err();
    let Indexer {
        mut tables, open, ..
    } = indexer;
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

/// The tables indexed so far, and the one still open.
struct Indexer<'s> {
    source: &'s Arc<str>,
    tables: Vec<Table>,
    open: Option<OpenTable>,
}

impl Indexer<'_> {
    /// The whole dump, line by line. When `parallel`, the dump after its first quarter is pre-read
    /// on another thread (into runs of rule lines per chain name, see [`prescan`]) while this
    /// one indexes the first quarter; the runs are then taken in order, a chain lookup per run
    /// instead of a line scan per rule, so the result and the first error are those of one
    /// top-to-bottom pass.
    fn scan(&mut self, parallel: bool) -> Result<(), StructuralError> {
        let source = self.source;
        let text: &str = source;
        if u32::try_from(text.len()).is_err() {
            // Rules keep 32-bit offsets into the dump (half the size of a pointer pair).
            return Err(at_line(ParseError {
                line: 1,
                message: "dump larger than 4 GiB".into(),
            }));
        }
        // This thread's share is the smaller: its lines cost more than pre-reading (chains are
        // declared and looked up here) and it takes the runs in afterwards.
        let split = text.len() / PRESCAN_SPLIT;
        let prescan_from = parallel
            .then(|| memchr::memchr(b'\n', &text.as_bytes()[split..]))
            .flatten()
            .map(|at| split + at + 1);
        let lines = match prescan_from {
            None => self.lines(0..text.len())?,
            Some(from) => {
                let (first, later) = std::thread::scope(|scope| {
                    let later = scope.spawn(|| prescan(text, from));
                    let first = self.lines(0..from);
                    let later = later
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (first, later)
                });
                let before = first?;
                for run in &later.runs {
                    match *run {
                        Prescanned::Rules {
                            chain,
                            start,
                            end,
                            line,
                            rules,
                        } => self.rules(chain, start..end, before + line, rules)?,
                        Prescanned::Other { start, end, line } => {
                            self.line(start as usize, end as usize, before + line)?;
                        }
                    }
                }
                before + later.lines
            }
        };
        match &self.open {
            Some(table) => Err(StructuralError {
                error: ParseError {
                    line: table.line,
                    message: format!("table *{} is never committed (missing COMMIT)", table.name),
                },
                noticed_at: lines + 1,
            }),
            None => Ok(()),
        }
    }

    /// Index the lines in `bytes`, which start the dump; the number of lines.
    fn lines(&mut self, bytes: Range<usize>) -> Result<usize, StructuralError> {
        let mut count = 0;
        for (i, line) in line_ranges(self.source, bytes).enumerate() {
            count = i + 1;
            self.line(line.start, line.end, count)?;
        }
        Ok(count)
    }

    /// Index one line: bytes `line_start..line_end`, line `line_no`.
    fn line(
        &mut self,
        line_start: usize,
        line_end: usize,
        line_no: usize,
    ) -> Result<(), StructuralError> {
        let source = self.source;
        let text: &str = source;
        let line = text[line_start..line_end].trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        if let Some(name) = line.strip_prefix('*') {
            if self.open.is_some() {
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
            if self.tables.iter().any(|t| t.name == table) {
                return Err(at_line(ParseError {
                    line: line_no,
                    message: format!("table *{name} appears twice"),
                }));
            }
            self.open = Some(OpenTable {
                name: table,
                line: line_no,
                chains: Vec::new(),
                names: ChainNames::default(),
                segments: Vec::new(),
                current: None,
            });
            return Ok(());
        }
        let table = self.open_table(line_no)?;
        if line == "COMMIT" {
            let done = self.open.take().expect("checked above");
            self.tables.push(done.close(source));
        } else if let Some(decl) = line.strip_prefix(':') {
            table.current = None;
            declare_chain(table, text, decl, line_no).map_err(at_line)?;
        } else {
            let chain = rule_chain(table, text, line, line_no).map_err(at_line)?;
            table.append(chain, line_start..line_end, line_no, 1);
        }
        Ok(())
    }

    /// Index `rules` rule lines of chain `chain` in bytes `bytes`, the first on line `line_no`.
    fn rules(
        &mut self,
        chain: &str,
        bytes: Range<u32>,
        line_no: usize,
        rules: u32,
    ) -> Result<(), StructuralError> {
        let text: &str = self.source;
        let table = self.open_table(line_no)?;
        let chain = chain_named(table, text, chain, line_no).map_err(at_line)?;
        table.append(
            chain,
            bytes.start as usize..bytes.end as usize,
            line_no,
            rules,
        );
        Ok(())
    }

    fn open_table(&mut self, line_no: usize) -> Result<&mut OpenTable, StructuralError> {
        self.open.as_mut().ok_or_else(|| {
            at_line(ParseError {
                line: line_no,
                message: "rule or chain outside a table (expected a `*table` line first)".into(),
            })
        })
    }
}

fn at_line(error: ParseError) -> StructuralError {
    StructuralError {
        noticed_at: error.line,
        error,
    }
}

/// A stretch of the dump read ahead on another thread: its lines (counted from the stretch's
/// start) as runs of rule lines of one chain and other lines for the index to read in order.
struct Prescan<'s> {
    runs: Vec<Prescanned<'s>>,
    lines: usize,
}

enum Prescanned<'s> {
    /// Rule lines appending to the chain named `chain` (blank and `#` lines may be among them):
    /// `rules` of them in bytes `start..end`, the first on line `line`.
    Rules {
        chain: &'s str,
        start: u32,
        end: u32,
        line: usize,
        rules: u32,
    },
    /// Any other line but a blank or `#` one: tables, declarations, `COMMIT`, quoted chain
    /// names and lines in error.
    Other { start: u32, end: u32, line: usize },
}

/// Read `text` from byte `from` (a line start) into runs; checks nothing.
fn prescan(text: &str, from: usize) -> Prescan<'_> {
    let mut runs: Vec<Prescanned<'_>> = Vec::new();
    let mut line_no = 0;
    for Range { start, end } in line_ranges(text, from..text.len()) {
        line_no += 1;
        let line = text[start..end].trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (start, end) = (start as u32, end as u32);
        let Some(name) = plain_rule_chain(line) else {
            runs.push(Prescanned::Other {
                start,
                end,
                line: line_no,
            });
            continue;
        };
        match runs.last_mut() {
            Some(Prescanned::Rules {
                chain,
                end: run_end,
                rules,
                ..
            }) if *chain == name => {
                *run_end = end;
                *rules += 1;
            }
            _ => runs.push(Prescanned::Rules {
                chain: name,
                start,
                end,
                line: line_no,
                rules: 1,
            }),
        }
    }
    Prescan {
        runs,
        lines: line_no,
    }
}

fn declare_chain(
    table: &mut OpenTable,
    source: &str,
    decl: &str,
    line: usize,
) -> Result<(), ParseError> {
    let (name, rest) = first_word(decl);
    if name.is_empty() {
        return err(line, "chain declaration without a name");
    }
    let policy = match first_word(rest).0 {
        "-" => None,
        "ACCEPT" => Some(Policy::Accept),
        "DROP" => Some(Policy::Drop),
        "" => return err(line, format!("chain {name}: missing policy")),
        other => {
            return err(
                line,
                format!("chain {name}: unknown policy {other:?} (expected ACCEPT, DROP or -)"),
            )
        }
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

/// The chain an `-A CHAIN …` line names when the name is written plainly (not quoted), as
/// iptables-save always writes it.
fn plain_rule_chain(line: &str) -> Option<&str> {
    let rest = strip_counters(line).strip_prefix("-A ")?.trim_ascii_start();
    let name = &rest[..blank_from(rest.as_bytes(), 0)];
    (!name.is_empty() && !name.starts_with('"')).then_some(name)
}

/// The declared chain an `-A CHAIN …` line appends to.
fn rule_chain(
    table: &OpenTable,
    source: &str,
    line: &str,
    line_no: usize,
) -> Result<usize, ParseError> {
    if let Some(name) = plain_rule_chain(line) {
        return chain_named(table, source, name, line_no);
    }
    let Some(rest) = strip_counters(line).strip_prefix("-A ") else {
        return err(
            line_no,
            format!("expected `-A CHAIN …`, `:CHAIN`, `COMMIT` or `*table`, found {line:?}"),
        );
    };
    // A quoted chain name (iptables-save never writes one, but hand-written files may).
    let mut tokens = Vec::new();
    tokenize(rest.trim_ascii_start(), line_no, &mut tokens)?;
    let name = tokens.into_iter().next().unwrap_or_default();
    if name.is_empty() {
        return err(line_no, "`-A` without a chain name");
    }
    chain_named(table, source, &name, line_no)
}

/// The declared chain `name` of `table`, which a rule on line `line_no` appends to.
fn chain_named(
    table: &OpenTable,
    source: &str,
    name: &str,
    line_no: usize,
) -> Result<usize, ParseError> {
    // Rules of one chain come together in a dump: try the previous rule's chain first.
    if let Some(c) = table
        .current
        .filter(|&c| table.names.name(source, c) == name)
    {
        return Ok(c);
    }
    table.names.find(source, name).ok_or_else(|| ParseError {
        line: line_no,
        message: format!(
            "rule appended to chain {name:?}, which is not declared in table {}",
            table.name
        ),
    })
}
