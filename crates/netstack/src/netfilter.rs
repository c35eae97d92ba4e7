//! Netfilter as one thing: the verdict and trace shapes shared by the iptables and nftables
//! evaluators, and the composition that runs every table registered at a hook in kernel priority
//! order (iptables' raw/mangle/nat/filter/security tables and native nft base chains alike).
//!
//! The evaluators ([`crate::iptables`], [`crate::nft`]) fill these types; path building reads them.

use serde::{Deserialize, Serialize};

use crate::packet::Packet;

pub mod summary;

/// Netfilter hook points, in the order a forwarded packet meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }
}

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// `iptables-save` (IPv4).
    Iptables,
    /// `ip6tables-save`.
    Ip6tables,
    /// `nft -j list ruleset`.
    Nftables,
}

/// A rule (or a chain policy) cited as evidence: enough to find it again in the dump.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    pub source: RuleSource,
    /// `filter`, `nat`, … for iptables; `family name` (e.g. `inet filter`) for nft.
    pub table: String,
    pub chain: String,
    /// 1-based position of the rule in its chain; 0 means the chain's policy.
    pub position: usize,
    /// 1-based line in the dump text it was parsed from (0 when not from text, as for nft JSON
    /// where the rule `handle` is used instead).
    pub line: usize,
    /// nft rule handle, when the source is nftables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// The rule as it appears in the dump (`-A KUBE-SERVICES -d 10.96.0.1/32 … -j KUBE-SVC-…`), or
    /// `:FORWARD DROP` for a policy.
    pub text: String,
}

/// Final verdict of one hook for one packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum NetfilterVerdict {
    Accept,
    Drop,
    /// REJECT: dropped, and an ICMP error or TCP RST is sent back (`with` as iptables names it).
    Reject {
        with: String,
    },
    /// NFQUEUE: handed to userspace; we cannot know what it decides.
    Queue {
        num: u16,
    },
    /// TPROXY / REDIRECT to a local socket: delivered locally instead of forwarded.
    Redirect,
}

impl NetfilterVerdict {
    /// Whether the packet continues.
    pub fn passes(&self) -> bool {
        matches!(self, NetfilterVerdict::Accept | NetfilterVerdict::Redirect)
    }
}

/// One step of the evaluation trace: a rule that matched (or a policy that applied) and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceStep {
    pub rule: RuleRef,
    /// What the step did, as a short phrase: `jump KUBE-SERVICES`, `goto KUBE-SVC-X`, `return`,
    /// `DNAT to 10.244.1.5:8080`, `MARK set 0x4000`, `DROP`, `policy ACCEPT`.
    pub action: String,
}

/// A match or target the evaluator does not model. It affects only the rule it is on; the
/// evaluator assumed `assumed_match` for it and went on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Unsupported {
    pub rule: RuleRef,
    /// The module or expression, e.g. `-m bpf` or `-j CLASSIFY`.
    pub feature: String,
    pub assumed_match: bool,
}

/// One possible outcome of running a hook. Probabilistic rules (kube-proxy's `statistic` chains)
/// fan out: every branch is a separate outcome with its share of the probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookOutcome {
    pub verdict: NetfilterVerdict,
    /// The packet after every transformation on the way (NAT, marks).
    pub packet: Packet,
    /// Every rule that matched, in order, across all tables of the hook.
    pub trace: Vec<TraceStep>,
    /// The rule or policy that decided the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<RuleRef>,
    /// Share of flows that take this branch (1.0 when there is no fan-out).
    pub probability: f64,
    /// Unmodelled matches/targets met on the way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<Unsupported>,
}

/// A problem met while reading a netns's rulesets. The rest of the rules still work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetProblem {
    /// `iptables`, `ip6tables`, `ipset` or `nftables`.
    pub source: String,
    /// 1-based line in the dump; 0 when the problem has no line (an nft JSON path is then in
    /// the message).
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for RulesetProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: line {}: {}", self.source, self.line, self.message)
        }
    }
}

/// Everything netfilter will do in one netns: the iptables rulesets of both families, the
/// ipsets they use, and the nftables ruleset.
///
/// iptables-nft's tables (`ip filter`, `ip6 nat`, …) appear in both `iptables-save` and
/// `nft -j`. The rule: an nft table of family `ip`/`ip6` named `raw`, `mangle`, `nat`, `filter`
/// or `security` whose base chains all have iptables' built-in names (`INPUT`, `FORWARD`, …) is
/// iptables-nft's, and when the iptables-save dump of that family has a table of that name it
/// is evaluated through that text (iptables-save shows every match as iptables means it; nft
/// shows some as opaque `xt` expressions) and its nft copy is skipped. Every other nft table —
/// including a native `ip filter` with lowercase chains next to legacy iptables — is evaluated
/// natively, its base chains ordered with the iptables tables by hook priority.
///
/// [`Netfilter::from_state`] decides once which nft tables are such copies; set the rulesets
/// through it rather than changing the fields afterwards.
#[derive(Debug, Clone, Default)]
pub struct Netfilter {
    pub ipv4: Option<crate::iptables::Ruleset>,
    pub ipv6: Option<crate::iptables::Ruleset>,
    pub ipsets: crate::ipset::IpSets,
    pub nftables: Option<crate::nft::Ruleset>,
    /// Per table of `nftables` (by index): whether it is iptables-nft's copy of a table the
    /// iptables-save dump holds, and so skipped. Empty: no table is.
    pub(crate) iptables_copies: Vec<bool>,
}

/// Where a branch is in the chains of one table, with the kernel's rules for moving on, which
/// iptables (`ipt_do_table()`) and nft (`nft_do_chain()`) share: `jump` pushes a return point,
/// `goto` does not, and `return` — explicit, or the end of a chain that was jumped or gone to —
/// pops one; with none left, the base chain's policy applies.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    /// Index of the chain in its table.
    pub chain: usize,
    /// Index of the rule in its chain.
    pub rule: usize,
    /// Return points: (chain, rule to resume at).
    stack: Vec<(usize, usize)>,
    steps: usize,
}

impl Cursor {
    /// At the first rule of base chain `chain`.
    pub fn at(chain: usize) -> Cursor {
        Cursor {
            chain,
            rule: 0,
            stack: Vec::new(),
            steps: 0,
        }
    }

    /// Counts one more step of this branch and returns how many it took, to stop rule loops.
    pub fn step(&mut self) -> usize {
        self.steps += 1;
        self.steps
    }

    /// Return points pending (nested jumps).
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// On to the next rule of the chain.
    pub fn advance(&mut self) {
        self.rule += 1;
    }

    /// `jump chain`: its end comes back to the rule after this one.
    pub fn jump(&mut self, chain: usize) {
        self.stack.push((self.chain, self.rule + 1));
        self.goto(chain);
    }

    /// `goto chain`: its end returns where this chain would have.
    pub fn goto(&mut self, chain: usize) {
        self.chain = chain;
        self.rule = 0;
    }

    /// `return`: back to the latest return point; `false` when there is none, in the base chain
    /// or below a goto from it, where the base chain's policy applies.
    #[must_use]
    pub fn back(&mut self) -> bool {
        match self.stack.pop() {
            Some((chain, rule)) => {
                self.chain = chain;
                self.rule = rule;
                true
            }
            None => false,
        }
    }

    /// The rule under the cursor with its chain (of the table's `chains`, whose rules
    /// `rules_of` gives), returning out of chains that have ended; `None` when the base chain
    /// has ended and its policy applies.
    #[inline]
    pub fn current<'r, C, R>(
        &mut self,
        chains: &'r [C],
        rules_of: impl Fn(&'r C) -> &'r [R],
    ) -> Option<(&'r C, &'r R)> {
        let chain = &chains[self.chain];
        match rules_of(chain).get(self.rule) {
            Some(rule) => Some((chain, rule)),
            None => self.after_chain_end(chains, rules_of),
        }
    }

    /// [`Cursor::current`] once a chain has ended: rare, so kept out of the per-rule path.
    #[cold]
    fn after_chain_end<'r, C, R>(
        &mut self,
        chains: &'r [C],
        rules_of: impl Fn(&'r C) -> &'r [R],
    ) -> Option<(&'r C, &'r R)> {
        while self.back() {
            let chain = &chains[self.chain];
            if let Some(rule) = rules_of(chain).get(self.rule) {
                return Some((chain, rule));
            }
        }
        None
    }
}

/// One table (iptables) or base chain (nft) registered at a hook.
pub(crate) enum Stage<'a> {
    Iptables(&'a crate::iptables::Ruleset, &'a crate::iptables::Table),
    Nft(&'a crate::nft::Ruleset, crate::nft::BaseChainRef),
}

/// Kernel priority of an iptables table at a hook (`NF_IP_PRI_*`): raw -300, mangle -150,
/// nat -100 for DNAT (prerouting/output) and 100 for SNAT (input/postrouting), filter 0,
/// security 50.
fn iptables_priority(table: crate::iptables::TableName, hook: Hook) -> i32 {
    use crate::iptables::TableName;
    match table {
        TableName::Raw => -300,
        TableName::Mangle => -150,
        TableName::Nat if matches!(hook, Hook::Prerouting | Hook::Output) => -100,
        TableName::Nat => 100,
        TableName::Filter => 0,
        TableName::Security => 50,
    }
}

impl Netfilter {
    /// Parse what the state holds. A dump that cannot be parsed is reported and left out, so the
    /// caller can say the verdict is unknown rather than pretend there are no rules.
    pub fn from_state(state: &crate::state::NetnsState) -> (Netfilter, Vec<RulesetProblem>) {
        let mut problems = Vec::new();
        let mut nf = Netfilter::default();
        if let Some(dump) = &state.iptables {
            for (text, ipv6, source) in [
                (&dump.ipv4, false, "iptables"),
                (&dump.ipv6, true, "ip6tables"),
            ] {
                let Some(text) = text else { continue };
                // Lazily: only the chains a packet enters get read (a bad rule there is
                // reported by the evaluator); the structure is checked here.
                match crate::iptables::parse_lazy_shared(text) {
                    Ok(mut rs) => {
                        rs.ipv6 = ipv6;
                        if ipv6 {
                            nf.ipv6 = Some(rs);
                        } else {
                            nf.ipv4 = Some(rs);
                        }
                    }
                    Err(e) => problems.push(RulesetProblem {
                        source: source.into(),
                        line: e.line,
                        message: e.message,
                    }),
                }
            }
        }
        if let Some(text) = &state.nftables {
            match crate::nft::parse(text) {
                Ok(rs) => nf.nftables = Some(rs),
                Err(e) => problems.push(RulesetProblem {
                    source: "nftables".into(),
                    line: e.line,
                    message: e.to_string(),
                }),
            }
        }
        if let Some(text) = &state.ipsets {
            match crate::ipset::IpSets::parse(text) {
                Ok(sets) => nf.ipsets = sets,
                Err(e) => problems.push(RulesetProblem {
                    source: "ipset".into(),
                    line: e.line,
                    message: e.message,
                }),
            }
        }
        nf.find_iptables_copies();
        (nf, problems)
    }

    /// Netfilter of a netns that has only an nft ruleset (no iptables-save dump, no ipsets).
    pub fn with_nftables(nftables: crate::nft::Ruleset) -> Netfilter {
        let mut nf = Netfilter {
            nftables: Some(nftables),
            ..Netfilter::default()
        };
        nf.find_iptables_copies();
        nf
    }

    fn find_iptables_copies(&mut self) {
        self.iptables_copies = self.nftables.as_ref().map_or_else(Vec::new, |nft| {
            nft.tables
                .iter()
                .map(|table| self.is_iptables_copy(table))
                .collect()
        });
    }

    /// Whether an nft table is iptables-nft's view of a table the iptables-save dump of its
    /// family also holds (see [`Netfilter`]).
    fn is_iptables_copy(&self, table: &crate::nft::Table) -> bool {
        const BUILT_IN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
        let iptables = match table.family {
            crate::nft::Family::Ip => self.ipv4.as_ref(),
            crate::nft::Family::Ip6 => self.ipv6.as_ref(),
            _ => return false,
        };
        iptables.is_some_and(|rs| rs.tables.iter().any(|t| t.name.as_str() == table.name))
            && table
                .chains
                .iter()
                .filter(|c| c.base.is_some())
                .all(|c| BUILT_IN.contains(&c.name.as_str()))
    }

    /// The ruleset for the packet's family, if one was read.
    pub fn ruleset_for(&self, packet: &Packet) -> Option<&crate::iptables::Ruleset> {
        if packet.is_ipv6() {
            self.ipv6.as_ref()
        } else {
            self.ipv4.as_ref()
        }
    }

    /// Run `hook` for `packet`. With no ruleset for the family, the packet passes untouched.
    pub fn run_hook(
        &self,
        hook: Hook,
        packet: &Packet,
        ctx: &dyn crate::iptables::EvalContext,
    ) -> Vec<HookOutcome> {
        let iptables = self.ruleset_for(packet);
        let mut stages: Vec<(i32, Stage)> = Vec::new();
        if let Some(rs) = iptables {
            for &name in crate::iptables::TableName::at_hook(hook) {
                if let Some(table) = rs.table(name) {
                    stages.push((iptables_priority(name, hook), Stage::Iptables(rs, table)));
                }
            }
        }
        if let Some(nft) = &self.nftables {
            for at in nft.base_chains(hook, packet.is_ipv6()) {
                if !self.iptables_copies.get(at.table).copied().unwrap_or(false) {
                    stages.push((at.priority, Stage::Nft(nft, at)));
                }
            }
        }
        // Stable: at equal priority iptables' table runs first, then nft chains in table order.
        stages.sort_by_key(|(priority, _)| *priority);
        let stages: Vec<Stage> = stages.into_iter().map(|(_, stage)| stage).collect();
        run_stages(&stages, hook, packet, ctx)
    }
}

/// Passes `packet` through `stages` in order, as the kernel walks a hook's registered tables and
/// base chains: a branch that a stage accepts goes on to the next stage, any other verdict ends
/// it. Returns one outcome per branch.
pub(crate) fn run_stages(
    stages: &[Stage],
    hook: Hook,
    packet: &Packet,
    ctx: &dyn crate::iptables::EvalContext,
) -> Vec<HookOutcome> {
    let mut live = vec![crate::iptables::Branch {
        packet: packet.clone(),
        trace: Vec::new(),
        probability: 1.0,
        unsupported: Vec::new(),
        decided_by: None,
    }];
    let mut done = Vec::new();
    for stage in stages {
        let nat = match stage {
            Stage::Iptables(_, t) => t.name == crate::iptables::TableName::Nat,
            Stage::Nft(_, at) => at.kind == crate::nft::ChainType::Nat,
        };
        let mut next = Vec::new();
        for branch in live {
            // NAT rules see only the first packet of a connection; conntrack NATs the rest.
            if nat && branch.packet.ct_state != crate::packet::CtState::New {
                next.push(branch);
                continue;
            }
            let outcomes = match stage {
                Stage::Iptables(rs, t) => rs.run_table(t, hook, branch, ctx),
                Stage::Nft(rs, at) => {
                    let budget = crate::iptables::MAX_BRANCHES
                        .saturating_sub(next.len() + done.len())
                        .max(1);
                    rs.run_base_chain(*at, branch, ctx, budget)
                }
            };
            for outcome in outcomes {
                match outcome.verdict {
                    None | Some(NetfilterVerdict::Accept) => next.push(outcome.branch),
                    Some(verdict) => done.push(finish(outcome.branch, verdict)),
                }
            }
        }
        live = next;
    }
    done.extend(
        live.into_iter()
            .map(|b| finish(b, NetfilterVerdict::Accept)),
    );
    done
}

fn finish(branch: crate::iptables::Branch, verdict: NetfilterVerdict) -> HookOutcome {
    HookOutcome {
        verdict,
        packet: branch.packet,
        trace: branch.trace,
        decided_by: branch.decided_by,
        probability: branch.probability,
        unsupported: branch.unsupported,
    }
}
