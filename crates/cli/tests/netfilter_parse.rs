//! `netsleuth netfilter parse` on recorded real dumps: `node.json` is the `nft -j list ruleset`
//! of a real netns (nftables 1.0.6) and `node.iptables` its `iptables-nft-save` (see
//! `crates/netstack/testdata/nft/README.md`).

use std::path::PathBuf;
use std::process::{Command, Output};

fn testdata(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../netstack/testdata/nft")
        .join(name)
        .display()
        .to_string()
}

fn netsleuth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(args)
        .output()
        .expect("run netsleuth")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nft_json_dump_is_summarised_with_base_chains_sets_and_unmodelled_rules() {
    let out = netsleuth(&["netfilter", "parse", &testdata("node.json"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(summary["format"], "nft-json");
    assert_eq!(summary["rules"], 46);
    let tables: Vec<&str> = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        ["ip kube-proxy", "inet filter", "ip portmap", "ip filter"]
    );

    let inet_filter = &summary["tables"][1];
    let forward = &inet_filter["chains"]["forward"];
    assert_eq!(forward["policy"], "DROP");
    assert_eq!(forward["base"]["type"], "filter");
    assert_eq!(forward["base"]["hook"], "FORWARD");
    assert_eq!(forward["base"]["priority"], 0);
    assert_eq!(forward["rules"], 7);
    assert_eq!(inet_filter["sets"]["blocked"], 2);

    let kube_proxy = &summary["tables"][0];
    assert_eq!(
        kube_proxy["chains"]["nat-prerouting"]["base"]["priority"],
        -100
    );
    // A regular chain has no hook and no policy.
    assert!(kube_proxy["chains"]["services"].get("base").is_none());
    assert!(kube_proxy["chains"]["services"].get("policy").is_none());
    assert_eq!(kube_proxy["sets"]["service-ips"], 2);

    // iptables-nft's `-m statistic` shows up in nft JSON as an opaque `xt` expression: named
    // with the rule's table, chain and handle.
    let unsupported = summary["unsupported"].as_array().unwrap();
    assert_eq!(unsupported.len(), 1, "{unsupported:?}");
    assert_eq!(unsupported[0]["table"], "ip filter");
    assert_eq!(unsupported[0]["chain"], "FORWARD");
    assert_eq!(unsupported[0]["handle"], 3);
    let feature = unsupported[0]["features"][0].as_str().unwrap();
    assert!(feature.contains("statistic"), "{feature}");
}

#[test]
fn nft_json_text_output_names_hook_priority_policy_and_unmodelled_rule_handle() {
    let out = netsleuth(&["netfilter", "parse", &testdata("node.json")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("46 rules"), "{text}");
    assert!(text.contains("*inet filter  (2 chains, 7 rules)"), "{text}");
    let forward = text
        .lines()
        .find(|l| l.trim_start().starts_with("forward "))
        .unwrap_or_else(|| panic!("no forward chain line in\n{text}"));
    assert!(
        forward.contains("policy DROP") && forward.contains("hook FORWARD priority 0"),
        "{forward}"
    );
    assert!(text.contains("@blocked"), "{text}");
    let unmodelled = text
        .lines()
        .find(|l| l.contains("ip filter/FORWARD"))
        .unwrap_or_else(|| panic!("unmodelled rule not listed in\n{text}"));
    assert!(
        unmodelled.contains("handle    3") && unmodelled.contains("statistic"),
        "{unmodelled}"
    );
}

#[test]
fn iptables_save_dump_is_still_read_as_iptables() {
    let out = netsleuth(&["netfilter", "parse", &testdata("node.iptables"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(summary["format"], "iptables-save");
    assert_eq!(summary["tables"][0]["table"], "filter");
}

#[test]
fn malformed_nft_json_exits_2_naming_file_line_and_json_path() {
    let dir = std::env::temp_dir().join(format!("netsleuth-nfparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    // The chain's priority is an object: valid JSON, not an nft ruleset.
    std::fs::write(
        &file,
        "{\"nftables\": [\n  {\"table\": {\"family\": \"inet\", \"name\": \"filter\"}},\n  {\"chain\": {\"family\": \"inet\", \"table\": \"filter\", \"name\": \"forward\",\n    \"type\": \"filter\", \"hook\": \"forward\", \"prio\": {\"x\": 1}, \"policy\": \"drop\"}}\n]}\n",
    )
    .unwrap();
    let out = netsleuth(&["netfilter", "parse", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json:4:"), "{err}");
    assert!(err.contains("nftables[1].chain.prio"), "{err}");
}
