//! The `iptables-save` text parser.
//!
//! Grammar (as `iptables-save` and `iptables-restore` use it): `*TABLE`, then `:CHAIN POLICY
//! [pkts:bytes]` declarations, `-A CHAIN options…` rules (optionally prefixed by `[pkts:bytes]`
//! with `-c`), and `COMMIT`. `#` starts a comment line. Options are split on blanks; double quotes
//! group (`--comment "a b"`) with `\"` as an escaped quote. `!` before an option inverts it.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use super::*;

/// Why a dump could not be read; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

pub(super) fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// Dumps smaller than this are read on one thread: starting threads costs more than it saves.
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Parse a whole `iptables-save` (or `ip6tables-save`) dump, reading every rule: the first bad
/// line (in file order) is the error.
pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
    let index::Indexed { ruleset, error } = index::index(Arc::from(text));
    read_every_chain(&ruleset);
    let unreadable = ruleset
        .tables
        .iter()
        .flat_map(|t| &t.chains)
        .flat_map(|c| c.rules())
        .filter_map(|r| match &r.target {
            Target::Unreadable { message } => Some(ParseError {
                line: r.line,
                message: message.clone(),
            }),
            _ => None,
        })
        .min_by_key(|e| e.line);
    match (error, unreadable) {
        (Some(structural), Some(rule)) if rule.line < structural.noticed_at => Err(rule),
        (Some(structural), _) => Err(structural.error),
        (None, Some(rule)) => Err(rule),
        (None, None) => Ok(ruleset),
    }
}

/// Read a dump's structure (tables, chain declarations, which lines hold which chain's rules)
/// and leave the rules to be read when [`Chain::rules`] is first called for their chain, which
/// the evaluator does as a packet enters it. Errors are structural only; a rule that turns out
/// to be unreadable becomes a [`Target::Unreadable`] rule, which the evaluator skips and reports.
pub fn parse_lazy(text: &str) -> Result<Ruleset, ParseError> {
    parse_lazy_shared(&Arc::from(text))
}

/// [`parse_lazy`] over text the caller already shares (a snapshot's dump): the ruleset keeps a
/// reference to it instead of copying megabytes of rules.
pub fn parse_lazy_shared(text: &Arc<str>) -> Result<Ruleset, ParseError> {
    let index::Indexed { ruleset, error } = index::index(Arc::clone(text));
    match error {
        Some(structural) => Err(structural.error),
        None => Ok(ruleset),
    }
}

/// Read every chain's rules, split over the available cores by bytes of rule text (chains are
/// independent, and `iptables-save` output is 90% rules of a few thousand big tables' chains).
fn read_every_chain(ruleset: &Ruleset) {
    let chains: Vec<&Chain> = ruleset
        .tables
        .iter()
        .flat_map(|t| &t.chains)
        .filter(|c| !c.segments.is_empty())
        .collect();
    let total: usize = chains.iter().map(|c| c.rule_bytes()).sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    if workers < 2 || total < PARALLEL_MIN_BYTES {
        read_chains(&chains);
        return;
    }
    let share = total.div_ceil(workers);
    let mut groups: Vec<&[&Chain]> = Vec::with_capacity(workers);
    let (mut from, mut bytes) = (0, 0);
    for (i, chain) in chains.iter().enumerate() {
        bytes += chain.rule_bytes();
        if bytes >= share {
            groups.push(&chains[from..=i]);
            (from, bytes) = (i + 1, 0);
        }
    }
    groups.push(&chains[from..]);
    std::thread::scope(|scope| {
        let (mine, others) = groups.split_first().expect("at least one group");
        for group in others {
            scope.spawn(move || read_chains(group));
        }
        read_chains(mine);
    });
}

fn read_chains(chains: &[&Chain]) {
    for chain in chains {
        chain.rules();
    }
}

pub(super) fn strip_counters(line: &str) -> &str {
    if line.starts_with('[') {
        if let Some(end) = line.find(']') {
            return line[end + 1..].trim_start();
        }
    }
    line
}

/// Read the rules of one chain from its segments of the dump. A rule that cannot be read is kept
/// (as [`Target::Unreadable`]) so that the positions of the rules after it stay right.
pub(super) fn read_rules(table: &TableText, segments: &[Segment]) -> Vec<Rule> {
    let source: &str = &table.source;
    let mut rules = Vec::with_capacity(segments.iter().map(|s| s.rules as usize).sum());
    let mut tokens = Vec::with_capacity(32);
    for segment in segments {
        let bytes = segment.start as usize..segment.end as usize;
        for (i, line) in line_ranges(source, bytes).enumerate() {
            let line = source[line].trim_ascii();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line_no = segment.line as usize + i;
            let rule_text = strip_counters(line);
            let (matches, target) = match read_rule(rule_text, line_no, table, &mut tokens) {
                Ok(rule) => rule,
                Err(e) => (Vec::new(), Target::Unreadable { message: e.message }),
            };
            rules.push(Rule {
                line: line_no,
                span: span_of(source, rule_text),
                matches,
                target,
            });
        }
    }
    rules
}

/// The lines in bytes `bytes` of `text`, as byte ranges without their `\n` (an empty line after
/// a final `\n` is not one), found with `memchr`'s vector scan since lines are 100+ bytes.
pub(super) fn line_ranges(
    text: &str,
    bytes: Range<usize>,
) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut pos = bytes.start;
    std::iter::from_fn(move || {
        if pos >= bytes.end {
            return None;
        }
        let end =
            memchr::memchr(b'\n', &text.as_bytes()[pos..bytes.end]).map_or(bytes.end, |i| pos + i);
        let line = pos..end;
        pos = end + 1;
        Some(line)
    })
}

/// One `-A CHAIN options…` line (the index has checked the chain).
fn read_rule<'a>(
    rule_text: &'a str,
    line: usize,
    table: &TableText,
    tokens: &mut Vec<Cow<'a, str>>,
) -> Result<(Vec<Match>, Target), ParseError> {
    let rest = rule_text.strip_prefix("-A ").unwrap_or(rule_text);
    tokenize(rest, line, tokens)?;
    let options = tokens.get(1..).unwrap_or_default();
    parse_rule(options, line, table)
}

/// Split a rule into `tokens` (cleared first; reused across lines to spare an allocation per
/// rule), honouring double quotes.
pub(super) fn tokenize<'a>(
    text: &'a str,
    line: usize,
    tokens: &mut Vec<Cow<'a, str>>,
) -> Result<(), ParseError> {
    tokens.clear();
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        while bytes.get(i).is_some_and(|&b| is_blank(b)) {
            i += 1;
        }
        let Some(&first) = bytes.get(i) else {
            return Ok(());
        };
        if first == b'"' {
            let start = i + 1;
            let Some(len) = memchr::memchr(b'"', &bytes[start..]) else {
                return err(line, "unterminated double quote");
            };
            let end = start + len;
            if bytes[end - 1] == b'\\' {
                let (value, end) = unescape_quoted(text, start, line)?;
                tokens.push(Cow::Owned(value));
                i = end + 1;
            } else {
                tokens.push(Cow::Borrowed(&text[start..end]));
                i = end + 1;
            }
        } else {
            // Both ends are at ASCII bytes (a blank, the start, or the end): char boundaries.
            let end = blank_from(bytes, i + 1);
            tokens.push(Cow::Borrowed(&text[i..end]));
            i = end;
        }
    }
}

/// A quoted token holding an escaped quote (rare): its unescaped text, and where its closing
/// quote is.
fn unescape_quoted(text: &str, start: usize, line: usize) -> Result<(String, usize), ParseError> {
    let bytes = text.as_bytes();
    let mut value = String::new();
    let mut j = start;
    loop {
        match bytes.get(j) {
            None => return err(line, "unterminated double quote"),
            Some(b'\\') if bytes.get(j + 1) == Some(&b'"') => {
                value.push('"');
                j += 2;
            }
            Some(b'"') => return Ok((value, j)),
            Some(_) => {
                let ch_len = text[j..].chars().next().map_or(1, char::len_utf8);
                value.push_str(&text[j..j + ch_len]);
                j += ch_len;
            }
        }
    }
}

/// The position of the first blank byte at or after `from`, or the length of `bytes`. Tokens
/// are most of a dump's bytes, so this looks at 8 bytes per step: every blank is below `!`
/// (0x21), and `(word - 0x21…) & !word & 0x80…` flags the bytes below 0x21; the lowest flag is
/// exact (a borrow only runs towards higher bytes, from a byte that is flagged itself).
pub(super) fn blank_from(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let below_bang = word.wrapping_sub(ONES * 0x21) & !word & HIGHS;
        if below_bang == 0 {
            i += 8;
            continue;
        }
        let at = i + (below_bang.trailing_zeros() / 8) as usize;
        if is_blank(bytes[at]) {
            return at;
        }
        // A control byte that is not blank belongs to the token.
        i = at + 1;
    }
    while bytes.get(i).is_some_and(|&b| !is_blank(b)) {
        i += 1;
    }
    i
}

/// The first blank-separated word of `text` (empty if none), and the rest after it.
pub(super) fn first_word(text: &str) -> (&str, &str) {
    let text = text.trim_ascii_start();
    text.split_at(blank_from(text.as_bytes(), 0))
}

/// ASCII whitespace, tested cheaply for the common case of a printable byte.
fn is_blank(b: u8) -> bool {
    b <= b' ' && b.is_ascii_whitespace()
}

/// Cursor over a rule's tokens.
struct Tokens<'a, 'b> {
    tokens: &'b [Cow<'a, str>],
    pos: usize,
    line: usize,
    /// Set when a module prints its `!` after its first option (`statistic --mode random !
    /// --probability P`): the inversion belongs to the match being parsed.
    inner_invert: bool,
}

impl<'a, 'b> Tokens<'a, 'b> {
    fn next(&mut self) -> Option<&'b str> {
        let t = self.tokens.get(self.pos)?;
        self.pos += 1;
        Some(t.as_ref())
    }

    fn peek(&self) -> Option<&'b str> {
        self.tokens.get(self.pos).map(|t| t.as_ref())
    }

    fn value(&mut self, option: &str) -> Result<&'b str, ParseError> {
        match self.next() {
            Some(v) => Ok(v),
            None => err(self.line, format!("option {option} needs a value")),
        }
    }

    /// Consume a `!` that stands right before `option`, remembering the inversion.
    fn skip_inner_invert(&mut self, option: &str) {
        if self.peek() == Some("!")
            && self.tokens.get(self.pos + 1).map(|t| t.as_ref()) == Some(option)
        {
            self.pos += 1;
            self.inner_invert = true;
        }
    }

    /// Tokens up to the next option, joined: arguments of options we keep opaque.
    fn rest_of_option(&mut self) -> String {
        let mut args = Vec::new();
        while let Some(t) = self.peek() {
            if t.starts_with('-') && t.len() > 1 || t == "!" {
                break;
            }
            args.push(t);
            self.pos += 1;
        }
        args.join(" ")
    }
}

fn parse_rule(
    tokens: &[Cow<'_, str>],
    line: usize,
    table: &TableText,
) -> Result<(Vec<Match>, Target), ParseError> {
    let mut t = Tokens {
        tokens,
        pos: 0,
        line,
        inner_invert: false,
    };
    let mut matches = Vec::with_capacity(tokens.len() / 3);
    let mut target = Target::None;
    let mut module: Option<&str> = None;
    let mut protocol: u8 = 0;
    let mut invert = false;
    while let Some(tok) = t.next() {
        if tok == "!" {
            invert = true;
            continue;
        }
        let kind = match tok {
            "-s" | "--source" => Some(MatchKind::Source(parse_net(t.value(tok)?, line)?)),
            "-d" | "--destination" => Some(MatchKind::Destination(parse_net(t.value(tok)?, line)?)),
            "-p" | "--protocol" => {
                protocol = parse_protocol(t.value(tok)?, line)?;
                Some(MatchKind::Protocol(protocol))
            }
            "-i" | "--in-interface" => Some(MatchKind::InInterface(parse_iface(t.value(tok)?))),
            "-o" | "--out-interface" => Some(MatchKind::OutInterface(parse_iface(t.value(tok)?))),
            "-f" | "--fragment" => Some(MatchKind::Fragment),
            "-m" | "--match" => {
                module = Some(t.value(tok)?);
                None
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let name = t.value(tok)?;
                let goto = tok.starts_with("-g") || tok == "--goto";
                target = parse_target(name, goto, &mut t, table)?;
                None
            }
            "-c" | "--set-counters" => {
                t.value(tok)?;
                t.value(tok)?;
                None
            }
            opt if opt.starts_with("--") => {
                // A module option; iptables accepts `-p tcp --dport` without `-m tcp`.
                let owner = module.unwrap_or(match protocol {
                    6 => "tcp",
                    17 => "udp",
                    132 => "sctp",
                    1 => "icmp",
                    58 => "icmp6",
                    _ => "",
                });
                parse_module_option(owner, opt, &mut t, &mut matches)?
            }
            other => return err(line, format!("unexpected token {other:?}")),
        };
        if let Some(kind) = kind {
            matches.push(Match {
                invert: invert || t.inner_invert,
                kind,
            });
        }
        invert = false;
        t.inner_invert = false;
    }
    Ok((matches, target))
}

/// One `--option …` of module `module`. Returns the match, or `None` when the option only
/// amends the previous match (as `--limit-iface-in` does for addrtype).
fn parse_module_option(
    module: &str,
    opt: &str,
    t: &mut Tokens<'_, '_>,
    matches: &mut [Match],
) -> Result<Option<MatchKind>, ParseError> {
    let line = t.line;
    let kind = match (module, opt) {
        ("tcp" | "udp" | "sctp" | "udplite" | "dccp", "--sport" | "--source-port") => {
            MatchKind::SourcePort(parse_port_range(t.value(opt)?, line)?)
        }
        ("tcp" | "udp" | "sctp" | "udplite" | "dccp", "--dport" | "--destination-port") => {
            MatchKind::DestinationPort(parse_port_range(t.value(opt)?, line)?)
        }
        ("tcp", "--tcp-flags") => {
            let mask = parse_tcp_flags(t.value(opt)?, line)?;
            let comp = parse_tcp_flags(t.value(opt)?, line)?;
            MatchKind::TcpFlags { mask, comp }
        }
        ("tcp", "--syn") => MatchKind::TcpFlags {
            mask: 0b10111,
            comp: 0b10,
        },
        (
            "multiport",
            "--sports" | "--source-ports" | "--dports" | "--destination-ports" | "--ports",
        ) => {
            let ports = t
                .value(opt)?
                .split(',')
                .map(|p| parse_port_range(p, line))
                .collect::<Result<Vec<_>, _>>()?;
            let (source, destination) = match opt {
                "--sports" | "--source-ports" => (true, false),
                "--dports" | "--destination-ports" => (false, true),
                _ => (true, true),
            };
            MatchKind::Multiport {
                source,
                destination,
                ports,
            }
        }
        ("icmp" | "icmp6", "--icmp-type" | "--icmpv6-type") => {
            parse_icmp_type(t.value(opt)?, line)?
        }
        ("mark", "--mark") => {
            let (value, mask) = parse_mark(t.value(opt)?, line)?;
            MatchKind::Mark { value, mask }
        }
        ("connmark", "--mark") => {
            let (value, mask) = parse_mark(t.value(opt)?, line)?;
            MatchKind::Connmark { value, mask }
        }
        ("conntrack", "--ctstate") | ("state", "--state") => MatchKind::CtState(
            t.value(opt)?
                .split(',')
                .map(|s| parse_ct_state(s, line))
                .collect::<Result<_, _>>()?,
        ),
        ("conntrack", "--ctdir") => MatchKind::CtDirection(match t.value(opt)? {
            "ORIGINAL" => CtDirMatch::Original,
            "REPLY" => CtDirMatch::Reply,
            other => {
                return err(
                    line,
                    format!("--ctdir: expected ORIGINAL or REPLY, found {other:?}"),
                )
            }
        }),
        ("comment", "--comment") => MatchKind::Comment(t.value(opt)?.to_string()),
        ("statistic", "--mode") => {
            let mode = t.value(opt)?;
            parse_statistic(mode, t)?
        }
        ("addrtype", "--src-type" | "--dst-type") => MatchKind::AddrType {
            source: opt == "--src-type",
            types: t
                .value(opt)?
                .split(',')
                .map(|s| parse_addr_type(s, line))
                .collect::<Result<_, _>>()?,
            limit_iface_in: false,
            limit_iface_out: false,
        },
        ("addrtype", "--limit-iface-in" | "--limit-iface-out") => {
            if let Some(Match {
                kind:
                    MatchKind::AddrType {
                        limit_iface_in,
                        limit_iface_out,
                        ..
                    },
                ..
            }) = matches.last_mut()
            {
                if opt == "--limit-iface-in" {
                    *limit_iface_in = true;
                } else {
                    *limit_iface_out = true;
                }
                return Ok(None);
            }
            return err(
                line,
                format!("{opt} without a preceding --src-type/--dst-type"),
            );
        }
        ("set", "--match-set") => {
            let name = t.value(opt)?.to_string();
            let directions = t
                .value(opt)?
                .split(',')
                .map(|d| match d {
                    "src" => Ok(SetDirection::Src),
                    "dst" => Ok(SetDirection::Dst),
                    other => err(
                        line,
                        format!("--match-set {name}: direction {other:?} is not src or dst"),
                    ),
                })
                .collect::<Result<_, _>>()?;
            MatchKind::Set { name, directions }
        }
        ("physdev", "--physdev-in") => MatchKind::PhysdevIn(parse_iface(t.value(opt)?)),
        ("physdev", "--physdev-out") => MatchKind::PhysdevOut(parse_iface(t.value(opt)?)),
        ("physdev", "--physdev-is-bridged") => MatchKind::PhysdevIsBridged,
        ("physdev", "--physdev-is-in") => MatchKind::PhysdevIsIn,
        ("physdev", "--physdev-is-out") => MatchKind::PhysdevIsOut,
        ("length", "--length") => {
            let v = t.value(opt)?;
            let (lo, hi) = v.split_once(':').unwrap_or((v, v));
            MatchKind::Length {
                lo: parse_num(lo, line, opt)?,
                hi: parse_num(hi, line, opt)?,
            }
        }
        ("iprange", "--src-range" | "--dst-range") => {
            let v = t.value(opt)?;
            let (from, to) = v.split_once('-').unwrap_or((v, v));
            MatchKind::IpRange {
                source: opt == "--src-range",
                from: parse_ip(from, line)?,
                to: parse_ip(to, line)?,
            }
        }
        ("rpfilter", "--loose" | "--validmark" | "--accept-local" | "--invert") => {
            if let Some(Match {
                kind:
                    MatchKind::RpFilter {
                        loose,
                        validmark,
                        accept_local,
                        invert,
                    },
                ..
            }) = matches.last_mut()
            {
                match opt {
                    "--loose" => *loose = true,
                    "--validmark" => *validmark = true,
                    "--accept-local" => *accept_local = true,
                    _ => *invert = true,
                }
                return Ok(None);
            }
            let mut kind = MatchKind::RpFilter {
                loose: false,
                validmark: false,
                accept_local: false,
                invert: false,
            };
            if let MatchKind::RpFilter {
                loose,
                validmark,
                accept_local,
                invert,
            } = &mut kind
            {
                match opt {
                    "--loose" => *loose = true,
                    "--validmark" => *validmark = true,
                    "--accept-local" => *accept_local = true,
                    _ => *invert = true,
                }
            }
            kind
        }
        (
            "limit" | "hashlimit" | "owner" | "socket" | "recent" | "connlimit" | "cgroup" | "time"
            | "quota",
            _,
        ) => {
            let args = t.rest_of_option();
            MatchKind::Assumed {
                module: module.to_string(),
                args: join_opt(opt, &args),
            }
        }
        _ => {
            let args = t.rest_of_option();
            let module = if module.is_empty() {
                "(no module)"
            } else {
                module
            };
            MatchKind::Unknown {
                module: module.to_string(),
                args: join_opt(opt, &args),
            }
        }
    };
    Ok(Some(kind))
}

fn join_opt(opt: &str, args: &str) -> String {
    if args.is_empty() {
        opt.to_string()
    } else {
        format!("{opt} {args}")
    }
}

fn parse_statistic(mode: &str, t: &mut Tokens<'_, '_>) -> Result<MatchKind, ParseError> {
    let line = t.line;
    match mode {
        "random" => {
            let mut probability = None;
            t.skip_inner_invert("--probability");
            while t.peek() == Some("--probability") {
                t.next();
                let v = t.value("--probability")?;
                let p: f64 = v.parse().map_err(|_| ParseError {
                    line,
                    message: format!("--probability: {v:?} is not a number"),
                })?;
                if !(0.0..=1.0).contains(&p) {
                    return err(line, format!("--probability {v} is outside 0..1"));
                }
                probability = Some(p);
            }
            let probability = probability.ok_or_else(|| ParseError {
                line,
                message: "statistic --mode random without --probability".into(),
            })?;
            Ok(MatchKind::Statistic(Statistic::Random { probability }))
        }
        "nth" => {
            let (mut every, mut packet) = (None, 0);
            t.skip_inner_invert("--every");
            while let Some(opt @ ("--every" | "--packet")) = t.peek() {
                t.next();
                let v: u32 = parse_num(t.value(opt)?, line, opt)?;
                if opt == "--every" {
                    every = Some(v);
                } else {
                    packet = v;
                }
            }
            let every = every.filter(|&e| e > 0).ok_or_else(|| ParseError {
                line,
                message: "statistic --mode nth needs --every N (N > 0)".into(),
            })?;
            Ok(MatchKind::Statistic(Statistic::Nth { every, packet }))
        }
        other => err(line, format!("statistic: unknown --mode {other:?}")),
    }
}

/// `table` tells chain jumps from extension targets: `-j NAME` is a user chain when the table
/// declares it, and otherwise an extension target we do not model (iptables-save never jumps to
/// an undeclared chain). A `-g` must name a chain.
fn parse_target(
    name: &str,
    goto: bool,
    t: &mut Tokens<'_, '_>,
    table: &TableText,
) -> Result<Target, ParseError> {
    let line = t.line;
    // Target options follow the target name up to the end of the rule (iptables-save prints
    // them last): `--option [value]…`, where only options start with `--`. They are looked up in
    // place rather than collected, since most rules' targets have none or one.
    let first = t.pos;
    while let Some(tok) = t.peek() {
        if !tok.starts_with("--") {
            break;
        }
        t.next();
        if t.peek().is_some_and(|v| !v.starts_with("--")) {
            t.next();
        }
    }
    let opts = &t.tokens[first..t.pos];
    let opt = |name: &str| {
        let at = opts.iter().position(|o| o == name)?;
        opts.get(at + 1)
            .map(|v| v.as_ref())
            .filter(|v| !v.starts_with("--"))
    };
    let has = |name: &str| opts.iter().any(|o| o == name);
    let args = || {
        opts.iter()
            .map(|o| o.as_ref())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if goto {
        return match table.find(name) {
            Some(chain) => Ok(Target::Chain {
                name: table.shared_name(chain),
                goto: true,
            }),
            None => err(
                line,
                format!("goto chain {name:?}, which is not declared in this table"),
            ),
        };
    }
    Ok(match name {
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        "RETURN" => Target::Return,
        "REJECT" => Target::Reject {
            with: opt("--reject-with")
                .unwrap_or("icmp-port-unreachable")
                .to_string(),
        },
        "DNAT" | "SNAT" => {
            let key = if name == "DNAT" {
                "--to-destination"
            } else {
                "--to-source"
            };
            let (addr, port) = match opt(key) {
                Some(v) => parse_nat_to(v, line)?,
                None => (None, None),
            };
            if name == "DNAT" {
                Target::Dnat { addr, port }
            } else {
                Target::Snat { addr, port }
            }
        }
        "MASQUERADE" | "REDIRECT" => {
            let port = opt("--to-ports")
                .map(|p| parse_port_range_split(p, b'-', line))
                .transpose()?;
            if name == "MASQUERADE" {
                Target::Masquerade { port }
            } else {
                Target::Redirect { port }
            }
        }
        "MARK" => {
            let op = if let Some(v) = opt("--set-xmark") {
                let (value, mask) = parse_mark(v, line)?;
                MarkOp { value, mask }
            } else if let Some(v) = opt("--set-mark") {
                let (value, mask) = parse_mark(v, line)?;
                MarkOp {
                    value,
                    mask: if v.contains('/') { mask } else { u32::MAX },
                }
            } else if let Some(v) = opt("--or-mark") {
                let bits = parse_mark(v, line)?.0;
                MarkOp {
                    value: bits,
                    mask: bits,
                }
            } else if let Some(v) = opt("--and-mark") {
                MarkOp {
                    value: 0,
                    mask: !parse_mark(v, line)?.0,
                }
            } else if let Some(v) = opt("--xor-mark") {
                MarkOp {
                    value: parse_mark(v, line)?.0,
                    mask: 0,
                }
            } else {
                return err(
                    line,
                    "MARK without --set-xmark/--set-mark/--or-mark/--and-mark/--xor-mark",
                );
            };
            Target::Mark(op)
        }
        "CONNMARK" => {
            let masks = |line| -> Result<(u32, u32), ParseError> {
                let nf = opt("--nfmask")
                    .or(opt("--mask"))
                    .map(|v| parse_mark(v, line))
                    .transpose()?;
                let ct = opt("--ctmask")
                    .or(opt("--mask"))
                    .map(|v| parse_mark(v, line))
                    .transpose()?;
                Ok((nf.map_or(u32::MAX, |m| m.0), ct.map_or(u32::MAX, |m| m.0)))
            };
            if let Some(v) = opt("--set-xmark").or(opt("--set-mark")) {
                let (value, mask) = parse_mark(v, line)?;
                Target::Connmark(ConnmarkOp::SetXmark(MarkOp { value, mask }))
            } else if has("--save-mark") {
                let (nfmask, ctmask) = masks(line)?;
                Target::Connmark(ConnmarkOp::Save { nfmask, ctmask })
            } else if has("--restore-mark") {
                let (nfmask, ctmask) = masks(line)?;
                Target::Connmark(ConnmarkOp::Restore { nfmask, ctmask })
            } else {
                Target::Unknown {
                    name: name.to_string(),
                    args: args(),
                }
            }
        }
        "NOTRACK" => Target::Notrack,
        "CT" if has("--notrack") => Target::Notrack,
        "TPROXY" => {
            let port = parse_num(opt("--on-port").unwrap_or("0"), line, "--on-port")?;
            let mark = opt("--tproxy-mark")
                .map(|v| parse_mark(v, line))
                .transpose()?;
            Target::Tproxy { port, mark }
        }
        "NFQUEUE" | "QUEUE" => Target::Queue {
            num: parse_num(opt("--queue-num").unwrap_or("0"), line, "--queue-num")?,
        },
        "LOG" | "NFLOG" | "ULOG" | "TRACE" | "CHECKSUM" | "TCPMSS" | "CLASSIFY" | "DSCP"
        | "TOS" | "TTL" | "HL" | "AUDIT" | "CT" => Target::Passive {
            name: name.to_string(),
            args: args(),
        },
        other if !opts.is_empty() => Target::Unknown {
            name: other.to_string(),
            args: args(),
        },
        other => match table.find(other) {
            Some(chain) => Target::Chain {
                name: table.shared_name(chain),
                goto: false,
            },
            None => Target::Unknown {
                name: other.to_string(),
                args: String::new(),
            },
        },
    })
}

fn parse_nat_to(v: &str, line: usize) -> Result<(Option<IpAddr>, Option<PortRange>), ParseError> {
    // Forms: A, A:P, A:P1-P2, A-B (address range: first), [V6]:P, :P, V6 (several colons).
    let (addr_part, port_part) = if let Some(rest) = v.strip_prefix('[') {
        let (a, p) = rest.split_once(']').ok_or_else(|| ParseError {
            line,
            message: format!("bad NAT address {v:?}"),
        })?;
        (a, p.strip_prefix(':'))
    } else {
        match split_at_byte(v, b':') {
            Some((a, p)) if !p.contains(':') => (a, Some(p)),
            _ => (v, None),
        }
    };
    let first = split_at_byte(addr_part, b'-').map_or(addr_part, |(a, _)| a);
    let addr = if first.is_empty() {
        None
    } else {
        Some(parse_ip(first, line)?)
    };
    let port = port_part
        .map(|p| parse_port_range_split(p, b'-', line))
        .transpose()?;
    Ok((addr, port))
}

fn parse_iface(v: &str) -> IfacePattern {
    match v.strip_suffix('+') {
        Some(prefix) => IfacePattern {
            name: prefix.to_string(),
            wildcard: true,
        },
        None => IfacePattern {
            name: v.to_string(),
            wildcard: false,
        },
    }
}

fn parse_ip(v: &str, line: usize) -> Result<IpAddr, ParseError> {
    match ipv4_fast(v) {
        Some(addr) => Ok(IpAddr::V4(addr)),
        None => parse_ip_general(v, line),
    }
}

pub(super) fn parse_ip_general(v: &str, line: usize) -> Result<IpAddr, ParseError> {
    v.parse().map_err(|_| ParseError {
        line,
        message: format!("{v:?} is not an IP address"),
    })
}

pub(super) fn parse_net(v: &str, line: usize) -> Result<IpNet, ParseError> {
    match ipv4_net_fast(v) {
        Some(net) => Ok(net),
        None => parse_net_general(v, line),
    }
}

pub(super) fn parse_net_general(v: &str, line: usize) -> Result<IpNet, ParseError> {
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Some((addr, mask)) = v.split_once('/') {
        // Dotted netmask form (`10.0.0.0/255.0.0.0`).
        if let (Ok(addr), Ok(IpAddr::V4(mask))) = (addr.parse::<IpAddr>(), mask.parse::<IpAddr>()) {
            let bits = u32::from(mask);
            if bits.leading_ones() + bits.trailing_zeros() == 32 {
                if let Ok(net) = IpNet::new(addr, bits.leading_ones() as u8) {
                    return Ok(net.trunc());
                }
            }
        }
        return err(line, format!("{v:?} is not an address/prefix"));
    }
    let addr = parse_ip_general(v, line)?;
    Ok(IpNet::from(addr))
}

/// `A.B.C.D` or `A.B.C.D/N` as iptables-save prints them, read without the general parsers'
/// cost (most rules of a large dump hold one); `None` for any other form, which the general
/// parsers then read or reject exactly as before.
pub(super) fn ipv4_net_fast(v: &str) -> Option<IpNet> {
    let (addr, len) = match split_at_byte(v, b'/') {
        Some((addr, len)) => (addr, small_decimal(len.as_bytes(), 32)?),
        None => (v, 32),
    };
    let net = ipnet::Ipv4Net::new(ipv4_fast(addr)?, len as u8).ok()?;
    Some(IpNet::V4(net.trunc()))
}

pub(super) fn ipv4_fast(v: &str) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut octet, mut value, mut digits) = (0, 0u32, 0);
    for &b in v.as_bytes() {
        match b {
            // A leading zero (`01`) is not the decimal form: left to the general parser.
            b'0'..=b'9' if !(digits == 1 && value == 0) => {
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && octet < 3 => {
                octets[octet] = value as u8;
                (octet, value, digits) = (octet + 1, 0, 0);
            }
            _ => return None,
        }
    }
    if octet != 3 || digits == 0 {
        return None;
    }
    octets[3] = value as u8;
    Some(octets.into())
}

/// One to three decimal digits without a leading zero, at most `max`.
fn small_decimal(digits: &[u8], max: u32) -> Option<u32> {
    if digits.is_empty() || digits.len() > 3 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut n = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(d - b'0');
    }
    (n <= max).then_some(n)
}

/// A port number: plain digits read here (most rules of a large dump hold one), anything else
/// by the general parser, which accepts and rejects what it always did.
pub(super) fn parse_port(v: &str, line: usize) -> Result<u16, ParseError> {
    let digits = v.as_bytes();
    if (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
        let value = digits
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        if let Ok(port) = u16::try_from(value) {
            return Ok(port);
        }
    }
    parse_num(v, line, "port")
}

/// `v` split around its first `sep`. Option values are a few bytes long: a plain scan beats
/// `memchr`'s set-up and `split_once`'s generic pattern.
fn split_at_byte(v: &str, sep: u8) -> Option<(&str, &str)> {
    let at = v.bytes().position(|b| b == sep)?;
    Some((&v[..at], &v[at + 1..]))
}

fn parse_num<T: std::str::FromStr>(v: &str, line: usize, what: &str) -> Result<T, ParseError> {
    v.parse().map_err(|_| ParseError {
        line,
        message: format!("{what}: {v:?} is not a valid number"),
    })
}

fn parse_port_range(v: &str, line: usize) -> Result<PortRange, ParseError> {
    parse_port_range_split(v, b':', line)
}

/// A port range written `LO<sep>HI` (matches use `:`, NAT targets `-`), or one port.
fn parse_port_range_split(v: &str, sep: u8, line: usize) -> Result<PortRange, ParseError> {
    let (lo, hi) = split_at_byte(v, sep).unwrap_or((v, v));
    let lo = if lo.is_empty() {
        0
    } else {
        parse_port(lo, line)?
    };
    let hi = if hi.is_empty() {
        u16::MAX
    } else {
        parse_port(hi, line)?
    };
    if lo > hi {
        return err(line, format!("port range {v:?} is reversed"));
    }
    Ok(PortRange { lo, hi })
}

pub(super) fn parse_protocol(v: &str, line: usize) -> Result<u8, ParseError> {
    // iptables-save writes names in lower case; other spellings are rare enough to copy.
    match protocol_number(v) {
        Some(n) => Ok(n),
        None if v.bytes().any(|b| b.is_ascii_uppercase()) => {
            protocol_number(&v.to_ascii_lowercase()).map_or_else(|| parse_num(v, line, "-p"), Ok)
        }
        None => parse_num(v, line, "-p"),
    }
}

fn protocol_number(name: &str) -> Option<u8> {
    Some(match name {
        "all" => 0,
        "icmp" => 1,
        "igmp" => 2,
        "ipip" | "ipencap" => 4,
        "tcp" => 6,
        "udp" => 17,
        "ipv6" => 41,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        _ => return None,
    })
}

fn parse_tcp_flags(v: &str, line: usize) -> Result<u8, ParseError> {
    let mut bits = 0;
    for flag in v.split(',') {
        bits |= match flag {
            "FIN" => 1,
            "SYN" => 2,
            "RST" => 4,
            "PSH" => 8,
            "ACK" => 16,
            "URG" => 32,
            "ALL" => 63,
            "NONE" => 0,
            other => return err(line, format!("--tcp-flags: unknown flag {other:?}")),
        };
    }
    Ok(bits)
}

fn parse_icmp_type(v: &str, line: usize) -> Result<MatchKind, ParseError> {
    if v == "any" {
        return Ok(MatchKind::IcmpType {
            icmp_type: None,
            code: None,
        });
    }
    let named = match v {
        "echo-reply" | "pong" => Some((0, None)),
        "destination-unreachable" => Some((3, None)),
        "port-unreachable" => Some((3, Some(3))),
        "echo-request" | "ping" => Some((8, None)),
        "time-exceeded" => Some((11, None)),
        _ => None,
    };
    let (icmp_type, code) = match named {
        Some(n) => n,
        None => {
            let (t, c) = v.split_once('/').map_or((v, None), |(t, c)| (t, Some(c)));
            (
                parse_num(t, line, "--icmp-type")?,
                c.map(|c| parse_num(c, line, "--icmp-type")).transpose()?,
            )
        }
    };
    Ok(MatchKind::IcmpType {
        icmp_type: Some(icmp_type),
        code,
    })
}

pub(super) fn parse_mark(v: &str, line: usize) -> Result<(u32, u32), ParseError> {
    let num = |s: &str| -> Result<u32, ParseError> {
        let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => s.parse(),
        };
        parsed.map_err(|_| ParseError {
            line,
            message: format!("mark {s:?} is not a number"),
        })
    };
    match v.split_once('/') {
        Some((value, mask)) => Ok((num(value)?, num(mask)?)),
        None => Ok((num(v)?, u32::MAX)),
    }
}

fn parse_ct_state(v: &str, line: usize) -> Result<CtStateBit, ParseError> {
    Ok(match v {
        "NEW" => CtStateBit::New,
        "ESTABLISHED" => CtStateBit::Established,
        "RELATED" => CtStateBit::Related,
        "INVALID" => CtStateBit::Invalid,
        "UNTRACKED" => CtStateBit::Untracked,
        "SNAT" => CtStateBit::Snat,
        "DNAT" => CtStateBit::Dnat,
        other => return err(line, format!("unknown conntrack state {other:?}")),
    })
}

fn parse_addr_type(v: &str, line: usize) -> Result<AddrType, ParseError> {
    Ok(match v {
        "UNSPEC" => AddrType::Unspec,
        "UNICAST" => AddrType::Unicast,
        "LOCAL" => AddrType::Local,
        "BROADCAST" => AddrType::Broadcast,
        "ANYCAST" => AddrType::Anycast,
        "MULTICAST" => AddrType::Multicast,
        "BLACKHOLE" => AddrType::Blackhole,
        "UNREACHABLE" => AddrType::Unreachable,
        "PROHIBIT" => AddrType::Prohibit,
        other => return err(line, format!("addrtype: unknown type {other:?}")),
    })
}
