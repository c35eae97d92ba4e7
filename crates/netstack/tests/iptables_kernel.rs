//! The parser against the real tools' output: a ruleset covering every match and target we
//! model is loaded with `iptables-restore` (nft and legacy backends) into a throw-away network
//! namespace (`nsipt-…`), dumped again with `iptables-save`, and parsed. This proves we read what
//! the real `iptables-save` prints — its canonical option order, quoting, hex marks, `!` placement —
//! and not only what we print ourselves.
//!
//! Needs root (network namespaces) and the iptables package.

use std::io::Write;
use std::process::{Command, Stdio};

use netstack::iptables::{parse, MatchKind, TableName, Target};
use netstack::netfilter::{Hook, NetfilterVerdict};
use netstack::packet::{Packet, Protocol};

const RULES: &str = r#"*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A PREROUTING -i cali+ -j MARK --set-xmark 0x10000/0x10000
-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SEP-1 - [0:0]
:KUBE-SEP-2 - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m addrtype --dst-type LOCAL -j KUBE-SERVICES
-A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X -m comment --comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-1
-A KUBE-SVC-X -m comment --comment "default/web:http -> 10.244.2.6:8080" -j KUBE-SEP-2
-A KUBE-SEP-1 -s 10.244.1.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-1 -p tcp -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SEP-2 -p tcp -m tcp -j DNAT --to-destination 10.244.2.6:8080
-A PREROUTING -p tcp -m tcp --dport 15001 -j REDIRECT --to-ports 15006
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:POLICY - [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT
-A FORWARD -p tcp -m multiport --dports 22,80,8000:8100 -j POLICY
-A FORWARD -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A FORWARD -m iprange --src-range 10.9.0.1-10.9.0.9 -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -m length --length 0:64 -m limit --limit 5/min -j LOG --log-prefix "short "
-A DOCKER-USER -j RETURN
-A POLICY -s 10.244.0.0/16 -m comment --comment "policy default/deny-db" -g DOCKER-USER
-A POLICY -d 10.244.3.0/24 -p tcp -m tcp ! --dport 5432 -j REJECT --reject-with tcp-reset
-A POLICY -j ACCEPT
COMMIT
"#;

mod common;
use common::Namespaces;

/// One throw-away namespace to load and dump rulesets in.
struct Netns {
    name: String,
    _cleanup: Namespaces,
}

impl Netns {
    fn create() -> Netns {
        let name = format!("nsipt-{}", std::process::id());
        let cleanup = Namespaces::create([name.clone()]);
        Netns {
            name,
            _cleanup: cleanup,
        }
    }

    fn run(&self, cmd: &str, stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(input.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn check_dump(backend: &str, dump: &str) {
    let rs = parse(dump).unwrap_or_else(|e| panic!("{backend}: {e}\n{dump}"));
    assert_eq!(rs.tables.len(), 4, "{backend}");
    assert_eq!(
        rs.rule_count(),
        RULES.lines().filter(|l| l.starts_with("-A")).count(),
        "{backend}"
    );
    // No rule of ours may come back as unknown: every module in RULES is modelled (limit is
    // "assumed", which is a decision, not ignorance).
    for table in &rs.tables {
        for chain in &table.chains {
            for rule in chain.rules() {
                for m in &rule.matches {
                    assert!(
                        !matches!(m.kind, MatchKind::Unknown { .. }),
                        "{backend}: unknown match in {}",
                        rs.rule_text(rule)
                    );
                }
                assert!(
                    !matches!(rule.target, Target::Unknown { .. }),
                    "{backend}: unknown target in {}",
                    rs.rule_text(rule)
                );
            }
        }
    }
    let filter = rs.table(TableName::Filter).unwrap();
    let policy = filter.chain("POLICY").unwrap();
    assert_eq!(policy.rules()[0].comment(), Some("policy default/deny-db"));
    assert_eq!(
        policy.rules()[0].target,
        Target::Chain {
            name: "DOCKER-USER".into(),
            goto: true
        }
    );

    // Evaluate the real dump: a pod → service packet fans out to both endpoints; a forwarded
    // packet to the database network on another port is rejected by the POLICY chain.
    let ctx = NoContext;
    let mut p = Packet::new(
        "10.244.1.9".parse().unwrap(),
        "10.96.0.20".parse().unwrap(),
        Protocol::Tcp,
        41000,
        80,
    );
    p.iif = Some("cali123".into());
    let out = rs.run_hook(Hook::Prerouting, &p, &ctx);
    let mut dsts: Vec<String> = out
        .iter()
        .map(|o| format!("{}:{}", o.packet.dst, o.packet.dport))
        .collect();
    dsts.sort();
    assert_eq!(dsts, ["10.244.1.5:8080", "10.244.2.6:8080"], "{backend}");
    assert!(
        out.iter().all(|o| o.packet.mark & 0x10000 != 0),
        "{backend}: mangle MARK on cali+"
    );
    let mut q = Packet::new(
        "192.168.5.5".parse().unwrap(),
        "10.244.3.4".parse().unwrap(),
        Protocol::Tcp,
        41000,
        8080,
    );
    q.iif = Some("eth0".into());
    q.oif = Some("cali9".into());
    let out = rs.run_hook(Hook::Forward, &q, &ctx);
    assert_eq!(
        out[0].verdict,
        NetfilterVerdict::Reject {
            with: "tcp-reset".into()
        },
        "{backend}: {:#?}",
        out[0].trace
    );
    let decided = out[0].decided_by.as_ref().unwrap();
    assert_eq!((decided.chain.as_str(), decided.position), ("POLICY", 2));
}

struct NoContext;

impl netstack::iptables::EvalContext for NoContext {
    fn addr_type(&self, _: std::net::IpAddr) -> netstack::iptables::AddrType {
        netstack::iptables::AddrType::Unicast
    }
    fn device_address(&self, _: &str, _: std::net::IpAddr) -> Option<std::net::IpAddr> {
        None
    }
    fn in_set(&self, _: &str, _: &Packet, _: &[netstack::iptables::SetDirection]) -> Option<bool> {
        None
    }
    fn reverse_path_ok(&self, _: &Packet, _: bool, _: bool, _: bool) -> bool {
        true
    }
}

#[test]
fn parses_what_real_iptables_save_prints() {
    let ns = Netns::create();
    let mut checked = Vec::new();
    for backend in ["nft", "legacy"] {
        let restore = format!("iptables-{backend}-restore");
        if let Err(e) = ns.run(&restore, Some(RULES)) {
            // The legacy backend needs the ip_tables module; on kernels without it only nft runs.
            eprintln!("skipping {backend}: {e}");
            continue;
        }
        let dump = ns
            .run(&format!("iptables-{backend}-save"), None)
            .expect("save");
        check_dump(backend, &dump);
        checked.push(backend);
    }
    assert!(checked.contains(&"nft"), "the nft backend must work here");
}
