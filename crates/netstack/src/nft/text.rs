//! Rules rendered back to `nft list ruleset` syntax from their JSON, for evidence: a finding
//! should cite `ip daddr . meta l4proto . th dport vmap @service-ips`, not a JSON blob. Rendered
//! from the JSON rather than from the typed statements so that statements we do not model read
//! as naturally as the rest (falling back to compact JSON only for shapes we do not know).

use serde_json::Value;

/// The rule's statements in nft syntax, with its comment.
pub(super) fn rule_text(exprs: &[Value], comment: Option<&str>) -> String {
    let mut parts: Vec<String> = exprs.iter().map(statement).collect();
    if let Some(c) = comment {
        parts.push(format!("comment {c:?}"));
    }
    parts.join(" ")
}

/// Compact JSON of a value, cut at a readable length (for messages about unmodelled shapes).
pub(super) fn compact(v: &Value) -> String {
    const MAX: usize = 160;
    let s = v.to_string();
    if s.len() <= MAX {
        return s;
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &s[..cut])
}

fn statement(v: &Value) -> String {
    let Some((name, body)) = v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        return compact(v);
    };
    let field = |k: &str| body.get(k);
    match name.as_str() {
        "match" => {
            let left = field("left").map(expr).unwrap_or_default();
            let right = field("right").map(value).unwrap_or_default();
            match field("op").and_then(Value::as_str).unwrap_or("==") {
                "==" | "in" => format!("{left} {right}"),
                op => format!("{left} {op} {right}"),
            }
        }
        "accept" | "drop" | "continue" | "return" | "notrack" => name.clone(),
        "jump" | "goto" => format!(
            "{name} {}",
            field("target").and_then(Value::as_str).unwrap_or("?")
        ),
        "counter" => "counter".into(),
        "log" => match field("prefix").and_then(Value::as_str) {
            Some(p) => format!("log prefix {p:?}"),
            None => "log".into(),
        },
        "vmap" => format!(
            "{} vmap {}",
            field("key").map(expr).unwrap_or_default(),
            field("data").map(value).unwrap_or_default()
        ),
        "mangle" => format!(
            "{} set {}",
            field("key").map(expr).unwrap_or_default(),
            field("value").map(expr).unwrap_or_default()
        ),
        "dnat" | "snat" => {
            let family = field("family")
                .and_then(Value::as_str)
                .map(|f| format!(" {f}"))
                .unwrap_or_default();
            let addr = field("addr").map(expr).unwrap_or_default();
            let port = field("port")
                .map(|p| format!(":{}", expr(p)))
                .unwrap_or_default();
            format!("{name}{family} to {addr}{port}")
        }
        "masquerade" | "redirect" => {
            let port = field("port")
                .map(|p| format!(" to :{}", expr(p)))
                .unwrap_or_default();
            let flags = field("flags")
                .map(|f| format!(" {}", value(f)))
                .unwrap_or_default();
            format!("{name}{port}{flags}")
        }
        "reject" => match (
            field("type").and_then(Value::as_str),
            field("expr").and_then(Value::as_str),
        ) {
            (Some("tcp reset"), _) => "reject with tcp reset".into(),
            (Some(t), Some(e)) => format!("reject with {t} {e}"),
            _ => "reject".into(),
        },
        "limit" => format!(
            "limit rate {}/{}",
            field("rate").map(value).unwrap_or_default(),
            field("per").and_then(Value::as_str).unwrap_or("second")
        ),
        "xt" => format!(
            "xt {} {:?}",
            field("type").and_then(Value::as_str).unwrap_or("?"),
            field("name").and_then(Value::as_str).unwrap_or("?")
        ),
        _ => compact(v),
    }
}

/// An expression (left side, key, NAT operand).
fn expr(v: &Value) -> String {
    let Some((name, body)) = v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        return value(v);
    };
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("?");
    match name.as_str() {
        "payload" => match body.get("protocol") {
            Some(_) => format!("{} {}", s("protocol"), s("field")),
            None => format!(
                "@{},{},{}",
                s("base"),
                body.get("offset").map(value).unwrap_or_default(),
                body.get("len").map(value).unwrap_or_default()
            ),
        },
        "meta" => format!("meta {}", s("key")),
        "ct" => match body.get("dir").and_then(Value::as_str) {
            Some(dir) => format!("ct {dir} {}", s("key")),
            None => format!("ct {}", s("key")),
        },
        "fib" => format!(
            "fib {} {}",
            body.get("flags")
                .map(|f| list(f, " . "))
                .unwrap_or_default(),
            s("result")
        ),
        "concat" => list(body, " . "),
        "&" | "|" | "^" | "<<" | ">>" => match body.as_array().map(Vec::as_slice) {
            Some([l, r]) => format!("{} {name} {}", expr(l), value(r)),
            _ => compact(v),
        },
        "numgen" => format!(
            "numgen {} mod {}{}",
            s("mode"),
            body.get("mod").map(value).unwrap_or_default(),
            offset(body)
        ),
        "jhash" | "symhash" => format!(
            "{name} mod {}{}",
            body.get("mod").map(value).unwrap_or_default(),
            offset(body)
        ),
        "map" => format!(
            "{} map {}",
            body.get("key").map(expr).unwrap_or_default(),
            body.get("data").map(value).unwrap_or_default()
        ),
        // Not `value(v)`: `value` hands unknown objects to `expr`, which would loop.
        _ => compact(v),
    }
}

fn offset(body: &Value) -> String {
    match body.get("offset").and_then(Value::as_u64) {
        Some(o) if o != 0 => format!(" offset {o}"),
        _ => String::new(),
    }
}

fn list(v: &Value, sep: &str) -> String {
    match v {
        Value::Array(items) => items.iter().map(expr).collect::<Vec<_>>().join(sep),
        one => expr(one),
    }
}

/// A constant: value, prefix, range, set, concatenation, verdict.
fn value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(value).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.len() == 1 => {
            let (name, body) = o.iter().next().expect("one key");
            match name.as_str() {
                "prefix" => format!(
                    "{}/{}",
                    body.get("addr").map(value).unwrap_or_default(),
                    body.get("len").map(value).unwrap_or_default()
                ),
                "range" => match body.as_array().map(Vec::as_slice) {
                    Some([lo, hi]) => format!("{}-{}", value(lo), value(hi)),
                    _ => compact(v),
                },
                "set" => {
                    let items: Vec<String> = match body {
                        Value::Array(items) => items.iter().map(element).collect(),
                        one => vec![element(one)],
                    };
                    format!("{{ {} }}", items.join(", "))
                }
                "elem" => body.get("val").map(value).unwrap_or_default(),
                "concat" => list(body, " . "),
                "accept" | "drop" | "continue" | "return" | "jump" | "goto" => statement(v),
                _ => expr(v),
            }
        }
        Value::Object(_) => compact(v),
    }
}

/// A set element, or `key : data` for a map element.
fn element(v: &Value) -> String {
    match v.as_array().map(Vec::as_slice) {
        Some([k, d]) => format!("{} : {}", value(k), value(d)),
        _ => value(v),
    }
}
