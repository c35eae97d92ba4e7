//! `nft -j list ruleset` JSON → [`Ruleset`].
//!
//! The outer shape (tables, chains, sets, rules and their fields) is read with serde, through
//! `serde_path_to_error` so that a malformed dump is reported with the JSON path of the bad
//! field (`nftables[12].chain.prio`). Rule expressions and set elements are read by hand from
//! `serde_json::Value`: there are dozens of expression kinds and a ruleset may use any of them,
//! so one we do not model must become an unsupported statement of that rule, not an error for
//! the whole dump.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::text::{compact, rule_text};
use super::types::{data_scalar, DataType};
use super::*;

/// A dump that is not an nft ruleset: names the JSON path and, for syntax errors, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// JSON path of the offending value, e.g. `nftables[12].chain.prio` (`.` for the root).
    pub path: String,
    /// 1-based line in the text, when the JSON itself is bad; 0 otherwise.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.path, self.message)
    }
}

#[derive(Deserialize)]
struct Dump {
    nftables: Vec<Item>,
}

/// One entry of the `nftables` array: an object with one key saying what it is. Kinds we do not
/// read (`metainfo`, `flowtable`, `counter`, `ct helper` …) are skipped.
#[derive(Deserialize)]
struct Item {
    table: Option<RawTable>,
    chain: Option<RawChain>,
    rule: Option<RawRule>,
    set: Option<RawSet>,
    map: Option<RawSet>,
}

#[derive(Deserialize)]
struct RawTable {
    family: Family,
    name: String,
}

#[derive(Deserialize)]
struct RawChain {
    family: Family,
    table: String,
    name: String,
    #[serde(default)]
    handle: u64,
    #[serde(rename = "type")]
    kind: Option<RawChainType>,
    hook: Option<String>,
    prio: Option<RawPriority>,
    policy: Option<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawChainType {
    Filter,
    Nat,
    Route,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawPolicy {
    Accept,
    Drop,
}

/// nft prints priorities as numbers; hand-written JSON may use the standard names.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPriority {
    Number(i32),
    Name(String),
}

#[derive(Deserialize)]
struct RawRule {
    family: Family,
    table: String,
    chain: String,
    #[serde(default)]
    handle: u64,
    comment: Option<String>,
    expr: Vec<Value>,
}

#[derive(Deserialize)]
struct RawSet {
    family: Family,
    table: String,
    name: String,
    #[serde(rename = "type")]
    key_type: RawType,
    /// Data type, for maps (`"verdict"`, `"ipv4_addr . inet_service"`).
    map: Option<RawType>,
    #[serde(default)]
    elem: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawType {
    One(String),
    Concat(Vec<String>),
}

impl RawType {
    fn data_type(&self) -> DataType {
        match self {
            RawType::One(s) => {
                let names: Vec<&str> = s.split(" . ").collect();
                DataType::from_names(&names)
            }
            RawType::Concat(list) => {
                let names: Vec<&str> = list.iter().map(String::as_str).collect();
                DataType::from_names(&names)
            }
        }
    }

    fn is_verdict(&self) -> bool {
        matches!(self, RawType::One(s) if s == "verdict")
    }
}

/// Parse `nft -j list ruleset` output.
pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let dump: Dump = serde_path_to_error::deserialize(de).map_err(|e| ParseError {
        path: e.path().to_string(),
        line: e.inner().line(),
        message: e.inner().to_string(),
    })?;
    let mut rs = Ruleset::default();
    let at = |i: usize, what: &str| format!("nftables[{i}].{what}");
    // Chains before sets (verdict maps name chains) and sets before rules (rules name both),
    // whatever order the array has.
    for item in &dump.nftables {
        if let Some(t) = &item.table {
            if rs.table(t.family, &t.name).is_none() {
                rs.tables.push(Table::new(t.family, t.name.clone()));
            }
        }
    }
    for (i, item) in dump.nftables.iter().enumerate() {
        let Some(c) = &item.chain else { continue };
        let table = table_mut(&mut rs, c.family, &c.table, || at(i, "chain.table"))?;
        if table.chain_index.contains_key(&c.name) {
            return Err(error(
                at(i, "chain.name"),
                format!("chain {:?} declared twice", c.name),
            ));
        }
        let base = base_chain(c).map_err(|m| error(at(i, "chain"), m))?;
        table.chain_index.insert(c.name.clone(), table.chains.len());
        table.chains.push(Chain {
            name: c.name.clone(),
            handle: c.handle,
            base,
            rules: Vec::new(),
        });
    }
    for (i, item) in dump.nftables.iter().enumerate() {
        let (raw, is_map) = match (&item.set, &item.map) {
            (Some(s), _) => (s, false),
            (None, Some(m)) => (m, true),
            (None, None) => continue,
        };
        let what = if is_map { "map" } else { "set" };
        let table = table_mut(&mut rs, raw.family, &raw.table, || {
            at(i, &format!("{what}.table"))
        })?;
        let set = named_set(table, raw);
        table.set_index.insert(raw.name.clone(), table.sets.len());
        table.sets.push(set);
    }
    for (i, item) in dump.nftables.iter().enumerate() {
        let Some(r) = &item.rule else { continue };
        let table = table_mut(&mut rs, r.family, &r.table, || at(i, "rule.table"))?;
        let Some(&chain) = table.chain_index.get(&r.chain) else {
            return Err(error(
                at(i, "rule.chain"),
                format!(
                    "rule in chain {:?}, which table {} does not declare",
                    r.chain,
                    table.display_name()
                ),
            ));
        };
        let stmts = r.expr.iter().map(|v| statement(table, v)).collect();
        let rule = Rule {
            handle: r.handle,
            comment: r.comment.clone(),
            stmts,
            text: rule_text(&r.expr, r.comment.as_deref()),
        };
        table.chains[chain].rules.push(rule);
    }
    Ok(rs)
}

fn error(path: String, message: String) -> ParseError {
    ParseError {
        path,
        line: 0,
        message,
    }
}

fn table_mut<'a>(
    rs: &'a mut Ruleset,
    family: Family,
    name: &str,
    path: impl Fn() -> String,
) -> Result<&'a mut Table, ParseError> {
    rs.tables
        .iter_mut()
        .find(|t| t.family == family && t.name == name)
        .ok_or_else(|| {
            error(
                path(),
                format!("table {} {name} is not declared", family.as_str()),
            )
        })
}

fn base_chain(c: &RawChain) -> Result<Option<BaseChain>, String> {
    let Some(hook_name) = &c.hook else {
        return Ok(None);
    };
    let hook = match hook_name.as_str() {
        "prerouting" => Some(Hook::Prerouting),
        "input" => Some(Hook::Input),
        "forward" => Some(Hook::Forward),
        "output" => Some(Hook::Output),
        "postrouting" => Some(Hook::Postrouting),
        "ingress" | "egress" => None,
        other => return Err(format!("unknown hook {other:?}")),
    };
    let kind = match c.kind {
        Some(RawChainType::Filter) | None => ChainType::Filter,
        Some(RawChainType::Nat) => ChainType::Nat,
        Some(RawChainType::Route) => ChainType::Route,
    };
    let priority = match &c.prio {
        None => 0,
        Some(RawPriority::Number(n)) => *n,
        Some(RawPriority::Name(name)) => standard_priority(name)
            .ok_or_else(|| format!("unknown priority {name:?} (expected a number or raw, mangle, dstnat, filter, security, srcnat)"))?,
    };
    let policy = match c.policy {
        Some(RawPolicy::Drop) => Policy::Drop,
        Some(RawPolicy::Accept) | None => Policy::Accept,
    };
    Ok(Some(BaseChain {
        kind,
        hook,
        priority,
        policy,
    }))
}

/// The standard priority names of the ip/ip6/inet families (nft(8), "CHAINS").
fn standard_priority(name: &str) -> Option<i32> {
    Some(match name {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => return None,
    })
}

fn named_set(table: &Table, raw: &RawSet) -> Set {
    let key = raw.key_type.data_type();
    let verdicts = raw.map.as_ref().is_some_and(RawType::is_verdict);
    let elements: Result<Vec<Element>, String> = raw
        .elem
        .iter()
        .map(|e| match &raw.map {
            None => Ok(Element {
                key: key.key(e)?,
                data: None,
            }),
            Some(_) => map_element(table, &key, e, verdicts),
        })
        .collect();
    match elements {
        Ok(elements) => Set::new(raw.name.clone(), key, elements, None),
        Err(message) => {
            let what = if raw.map.is_some() { "map" } else { "set" };
            let why = format!("{what} {}: {message}", raw.name);
            Set::new(raw.name.clone(), key, Vec::new(), Some(why))
        }
    }
}

/// `[KEY, DATA]` of a map.
fn map_element(
    table: &Table,
    key: &DataType,
    e: &Value,
    verdicts: bool,
) -> Result<Element, String> {
    let [k, d] = e.as_array().map(Vec::as_slice).unwrap_or_default() else {
        return Err(format!(
            "map element {} is not a [key, data] pair",
            compact(e)
        ));
    };
    let data = if verdicts {
        MapData::Verdict(
            verdict(table, d)?.ok_or_else(|| format!("{} is not a verdict", compact(d)))?,
        )
    } else {
        MapData::Value(data_values(d)?)
    };
    Ok(Element {
        key: key.key(k)?,
        data: Some(data),
    })
}

fn data_values(d: &Value) -> Result<Vec<u128>, String> {
    match d.get("concat").and_then(Value::as_array) {
        Some(parts) => parts.iter().map(data_scalar).collect(),
        None => Ok(vec![data_scalar(d)?]),
    }
}

/// A verdict object (`{"accept": null}`, `{"goto": {"target": "x"}}` …), `None` if `v` is not
/// one.
fn verdict(table: &Table, v: &Value) -> Result<Option<Verdict>, String> {
    let Some((name, body)) = single_key(v) else {
        return Ok(None);
    };
    let chain =
        || {
            let target = body
                .get("target")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{name} without a \"target\" chain"))?;
            table.chain_index.get(target).copied().ok_or_else(|| {
                format!("{name} to chain {target:?}, which the table does not declare")
            })
        };
    Ok(Some(match name {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "continue" => Verdict::Continue,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(chain()?),
        "goto" => Verdict::Goto(chain()?),
        "queue" => Verdict::Queue(queue_number(body)),
        _ => return Ok(None),
    }))
}

/// `queue num N` (or the first of a range); 0 when absent.
fn queue_number(body: &Value) -> u16 {
    let num = body.get("num");
    let n = num
        .and_then(Value::as_u64)
        .or_else(|| num?.get("range")?.get(0)?.as_u64())
        .unwrap_or(0);
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn single_key(v: &Value) -> Option<(&str, &Value)> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// One element of a rule's `expr` array. Never fails: what we cannot read becomes
/// [`Stmt::Unsupported`] naming it.
fn statement(table: &Table, v: &Value) -> Stmt {
    statement_checked(table, v)
        .unwrap_or_else(|why| Stmt::Unsupported(format!("{} ({why})", compact(v))))
}

fn statement_checked(table: &Table, v: &Value) -> Result<Stmt, String> {
    if let Some(verdict) = verdict(table, v)? {
        return Ok(Stmt::Verdict(verdict));
    }
    let (name, body) = single_key(v).ok_or("not a one-key statement object")?;
    Ok(match name {
        "match" => {
            let left = expr(table, body.get("left").ok_or("match without \"left\"")?)?;
            let right = body.get("right").ok_or("match without \"right\"")?;
            let ty = DataType::of(&left);
            let operand = operand(table, &ty, right)?;
            let op = match body.get("op").and_then(Value::as_str).unwrap_or("==") {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                ">" => CmpOp::Gt,
                "<=" => CmpOp::Le,
                ">=" => CmpOp::Ge,
                "in" if ty.is_bitmask() && matches!(operand, Operand::Value(_)) => CmpOp::Flags,
                "in" => CmpOp::Eq,
                other => return Err(format!("unknown operator {other:?}")),
            };
            Stmt::Match {
                op,
                left,
                right: operand,
            }
        }
        "vmap" => {
            let key = expr(table, body.get("key").ok_or("vmap without \"key\"")?)?;
            let data = body.get("data").ok_or("vmap without \"data\"")?;
            Stmt::VerdictMap {
                map: set_ref(table, &DataType::of(&key), data, Some(true))?,
                key,
            }
        }
        "counter" | "log" | "set" | "comment" => Stmt::Passive(name.to_string()),
        "limit" | "quota" | "ct count" | "connlimit" | "meter" => Stmt::Assumed(format!(
            "{} (depends on rates/counts a snapshot cannot hold)",
            compact(v)
        )),
        "notrack" => Stmt::Notrack,
        "mangle" => {
            let target = match expr(table, body.get("key").ok_or("mangle without \"key\"")?)? {
                Expr::Meta(MetaKey::Mark) => MarkTarget::Meta,
                Expr::Ct(CtKey::Mark) => MarkTarget::Ct,
                _ => return Err("only meta mark and ct mark are modelled".into()),
            };
            let value = expr(table, body.get("value").ok_or("mangle without \"value\"")?)?;
            Stmt::SetMark { target, value }
        }
        "dnat" | "snat" => {
            let kind = if name == "dnat" {
                NatKind::Dnat
            } else {
                NatKind::Snat
            };
            let literal = body.get("addr").and_then(Value::as_str);
            let ipv6 = match body.get("family").and_then(Value::as_str) {
                Some("ip6") => Some(true),
                Some("ip") => Some(false),
                _ => literal.map(|a| a.contains(':')),
            };
            let addr_type = if ipv6 == Some(true) {
                DataType::Ipv6Addr
            } else {
                DataType::Ipv4Addr
            };
            Stmt::Nat {
                kind,
                ipv6,
                addr: nat_operand(table, &addr_type, body.get("addr"))?,
                port: nat_operand(table, &DataType::InetService, body.get("port"))?,
            }
        }
        "masquerade" => Stmt::Masquerade {
            port: nat_operand(table, &DataType::InetService, body.get("port"))?,
        },
        "redirect" => Stmt::Redirect {
            port: nat_operand(table, &DataType::InetService, body.get("port"))?,
        },
        "reject" => {
            let kind = body.get("type").and_then(Value::as_str);
            let code = body.get("expr").and_then(Value::as_str);
            let with = match (kind, code) {
                (Some("tcp reset"), _) => "tcp reset".to_string(),
                (Some(k), Some(c)) => format!("{k} {c}"),
                (Some(k), None) => format!("{k} port-unreachable"),
                (None, _) => "icmp port-unreachable".to_string(),
            };
            Stmt::Reject { with }
        }
        "xt" => {
            let kind = body.get("type").and_then(Value::as_str).unwrap_or("?");
            let xt = body.get("name").and_then(Value::as_str).unwrap_or("?");
            if xt == "comment" {
                Stmt::Passive("comment".into())
            } else {
                Stmt::Unsupported(format!("xt {kind} {xt} (iptables-nft compat expression: read the rule from iptables-save)"))
            }
        }
        other => return Err(format!("statement {other:?} is not modelled")),
    })
}

/// The address or port of a NAT statement: a constant (the first of a range), an expression,
/// or a map lookup.
fn nat_operand(table: &Table, ty: &DataType, v: Option<&Value>) -> Result<Option<Expr>, String> {
    let Some(v) = v else { return Ok(None) };
    if v.is_string() || v.is_number() || v.get("range").is_some() || v.get("prefix").is_some() {
        return match ty.atom(v)? {
            Atom::Interval { lo, .. } => Ok(Some(Expr::Const(lo))),
            Atom::Name { .. } => Err("a NAT target is not a name".into()),
        };
    }
    expr(table, v).map(Some)
}

/// The right side of a match: `@set`, an anonymous `{"set": [...]}`, or a value.
fn operand(table: &Table, ty: &DataType, v: &Value) -> Result<Operand, String> {
    if v.as_str().is_some_and(|s| s.starts_with('@')) || v.get("set").is_some() {
        return set_ref(table, ty, v, None).map(Operand::Set);
    }
    ty.key(v).map(Operand::Value)
}

/// `"@name"` or an anonymous `{"set": [...]}`. `verdicts`: `Some(true)` for a verdict map,
/// `Some(false)` for a data map, `None` for a plain set.
fn set_ref(
    table: &Table,
    key: &DataType,
    v: &Value,
    verdicts: Option<bool>,
) -> Result<SetRef, String> {
    if let Some(name) = v.as_str().and_then(|s| s.strip_prefix('@')) {
        return table
            .set_index
            .get(name)
            .map(|&i| SetRef::Named(i))
            .ok_or_else(|| {
                format!(
                    "set @{name} is not declared in table {}",
                    table.display_name()
                )
            });
    }
    let items = v
        .get("set")
        .ok_or_else(|| format!("{} is neither @name nor an anonymous set", compact(v)))?;
    // A one-element anonymous set may be printed without the list.
    let items = match items {
        Value::Array(list) if verdicts.is_none() || list.first().is_some_and(Value::is_array) => {
            list.clone()
        }
        one => vec![one.clone()],
    };
    let elements = items
        .iter()
        .map(|e| match verdicts {
            None => Ok(Element {
                key: key.key(e)?,
                data: None,
            }),
            Some(v) => map_element(table, key, e, v),
        })
        .collect::<Result<_, String>>()?;
    Ok(SetRef::Anonymous(Box::new(Set::new(
        String::new(),
        key.clone(),
        elements,
        None,
    ))))
}

fn expr(table: &Table, v: &Value) -> Result<Expr, String> {
    if let Some(n) = v.as_u64() {
        return Ok(Expr::Const(u128::from(n)));
    }
    let (name, body) =
        single_key(v).ok_or_else(|| format!("{} is not an expression", compact(v)))?;
    let field = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or("");
    Ok(match name {
        "payload" => Expr::Payload(payload(field("protocol"), field("field"))?),
        "meta" => Expr::Meta(match field("key") {
            "l4proto" => MetaKey::L4proto,
            "nfproto" => MetaKey::Nfproto,
            "iifname" | "iif" => MetaKey::Iifname,
            "oifname" | "oif" => MetaKey::Oifname,
            "mark" => MetaKey::Mark,
            "length" => MetaKey::Length,
            other => return Err(format!("meta {other} is not modelled")),
        }),
        "ct" if body.get("dir").is_none() => Expr::Ct(match field("key") {
            "state" => CtKey::State,
            "status" => CtKey::Status,
            "direction" => CtKey::Direction,
            "mark" => CtKey::Mark,
            other => return Err(format!("ct {other} is not modelled")),
        }),
        "ct" => {
            return Err(format!(
                "ct {} {} is not modelled",
                field("dir"),
                field("key")
            ))
        }
        "fib" => {
            let flags: Vec<&str> = match body.get("flags") {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if field("result") != "type" || flags != ["daddr"] {
                return Err("only fib daddr type is modelled".into());
            }
            Expr::FibDaddrType
        }
        "concat" => Expr::Concat(
            body.as_array()
                .ok_or("concat is not a list")?
                .iter()
                .map(|e| expr(table, e))
                .collect::<Result<_, _>>()?,
        ),
        "&" | "|" | "^" | "<<" | ">>" => {
            let [l, r] = body.as_array().map(Vec::as_slice).unwrap_or_default() else {
                return Err(format!("{name} needs two operands"));
            };
            let left = expr(table, l)?;
            let right = DataType::of(&left).scalar(r)?;
            let op = match name {
                "&" => BitOp::And,
                "|" => BitOp::Or,
                "^" => BitOp::Xor,
                "<<" => BitOp::Shl,
                _ => BitOp::Shr,
            };
            Expr::Bitwise {
                op,
                left: Box::new(left),
                right,
            }
        }
        "numgen" | "jhash" | "symhash" => {
            let modulus = body
                .get("mod")
                .and_then(Value::as_u64)
                .ok_or(format!("{name} without \"mod\""))?;
            let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0);
            Expr::Spread {
                modulus: u32::try_from(modulus).map_err(|_| "mod out of range")?,
                offset: u32::try_from(offset).map_err(|_| "offset out of range")?,
            }
        }
        "map" => {
            let key = expr(table, body.get("key").ok_or("map without \"key\"")?)?;
            let data = body.get("data").ok_or("map without \"data\"")?;
            let map = set_ref(table, &DataType::of(&key), data, Some(false))?;
            Expr::Lookup {
                key: Box::new(key),
                map,
            }
        }
        other => return Err(format!("expression {other:?} is not modelled")),
    })
}

fn payload(protocol: &str, field: &str) -> Result<PayloadField, String> {
    use crate::packet::Protocol;
    use PayloadField::*;
    let ports = |p: Option<Protocol>| match field {
        "sport" => Ok(Sport(p)),
        "dport" => Ok(Dport(p)),
        _ => Err(()),
    };
    let found = match (protocol, field) {
        ("ip", "saddr") => Ok(Ip4Saddr),
        ("ip", "daddr") => Ok(Ip4Daddr),
        ("ip", "protocol") => Ok(Ip4Protocol),
        ("ip", "length") => Ok(Ip4Length),
        ("ip", "dscp") => Ok(Ip4Dscp),
        ("ip6", "saddr") => Ok(Ip6Saddr),
        ("ip6", "daddr") => Ok(Ip6Daddr),
        ("ip6", "nexthdr") => Ok(Ip6Nexthdr),
        ("ip6", "length") => Ok(Ip6Length),
        ("tcp", "flags") => Ok(TcpFlags),
        ("icmp", "type") => Ok(IcmpType),
        ("icmp", "code") => Ok(IcmpCode),
        ("icmpv6", "type") => Ok(Icmp6Type),
        ("icmpv6", "code") => Ok(Icmp6Code),
        ("tcp", _) => ports(Some(Protocol::Tcp)),
        ("udp", _) => ports(Some(Protocol::Udp)),
        ("sctp", _) => ports(Some(Protocol::Sctp)),
        ("th", _) => ports(None),
        _ => Err(()),
    };
    found.map_err(|()| format!("payload {protocol} {field} is not modelled"))
}
