//! `netsleuth bench …`: the speed claims of SPEC §4, measured side by side with a peer in the
//! same run. Results go to `docs/benchmarks.md`; nothing here is a pass/fail test.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diagnose::synthetic::{flannel_host_gw, ClusterSize};
use diagnose::Query;
use netstack::packet::Protocol;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Write a kube-proxy-style iptables-save ruleset of any size (10k Services × 5 endpoints
    /// is about 170k rules, what a large cluster's node carries).
    GenIptables {
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 5)]
        endpoints: usize,
        /// Output file (standard output when absent).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Time our iptables-save parser against `iptables-restore --test` on the same generated
    /// ruleset (run in a throw-away network namespace; needs root).
    Iptables {
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 5)]
        endpoints: usize,
        /// Parser runs to take the median of.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Time one diagnosis (pod → Service, with the fan-out to every endpoint and the replies)
    /// over a synthetic cluster.
    Diagnose {
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        #[arg(long, default_value_t = 30)]
        pods_per_node: usize,
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 3)]
        endpoints: usize,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Time the live path on a lab (needs root): a 3-node / 6-pod lab coming up, collecting one
    /// node (its host and pod namespaces), `diagnose --lab` end to end as a process, and
    /// `netsleuth demo`.
    Lab {
        /// Runs to take the median of (the demo runs at most 3 times).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value = "flannel-vxlan")]
        cni: model::CniMode,
    },
    /// The node agent vs prometheus-node-exporter (scrape latency, CPU per scrape, idle CPU
    /// and RSS, with pod netns), events/s through a sink, and the packetloss probe's cost per
    /// drop vs bpftrace during a drop storm (needs root; see docs/benchmarks.md).
    Agent {
        /// Pod network namespaces to create (110 is Kubernetes' default max pods per node).
        #[arg(long, default_value_t = 110)]
        pods: usize,
        /// Sequential scrapes per exporter.
        #[arg(long, default_value_t = 100)]
        scrapes: usize,
        /// Seconds of drop storm per tracer.
        #[arg(long, default_value_t = 5)]
        storm_secs: u64,
    },
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::GenIptables {
            services,
            endpoints,
            output,
        } => {
            let text = generate(services, endpoints);
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout().write_all(text.as_bytes())?,
            }
        }
        BenchCommand::Iptables {
            services,
            endpoints,
            runs,
        } => bench_iptables(services, endpoints, runs.max(1))?,
        BenchCommand::Diagnose {
            nodes,
            pods_per_node,
            services,
            endpoints,
            runs,
        } => bench_diagnose(
            ClusterSize {
                nodes,
                pods_per_node,
                services,
                endpoints_per_service: endpoints,
                rules_on_nodes: 2,
            },
            runs.max(1),
        )?,
        BenchCommand::Lab { runs, cni } => super::bench_lab::run(runs.max(1), cni)?,
        BenchCommand::Agent {
            pods,
            scrapes,
            storm_secs,
        } => super::bench_agent::run(pods, scrapes.max(1), storm_secs.max(1))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(services: usize, endpoints: usize) -> String {
    let mut input = lab::synthetic_services(services, endpoints);
    input.node_name = "node-1".into();
    lab::render_kube_proxy_iptables(&input)
}

pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_iptables(services: usize, endpoints: usize, runs: usize) -> anyhow::Result<()> {
    let text = generate(services, endpoints);
    let lines = text.lines().filter(|l| l.starts_with("-A")).count();
    eprintln!(
        "generated {lines} rules ({} bytes) for {services} Services × {endpoints} endpoints",
        text.len()
    );
    let netns = format!("nsbench-{}", std::process::id());
    let status = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .context("ip netns add (needs root)")?;
    if !status.success() {
        bail!("cannot create network namespace {netns} (needs root)");
    }
    let timed = (|| -> anyhow::Result<(Vec<Timing>, Vec<Timing>)> {
        let (mut ours, mut peer) = (Vec::new(), Vec::new());
        // Alternate the two, so that load from other processes falls on both alike.
        for _ in 0..runs {
            ours.push(time_our_parse(&text, lines)?);
            peer.push(time_iptables_restore(&netns, &text)?);
        }
        Ok((ours, peer))
    })();
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    let (ours, peer) = timed?;
    let wall = |t: &[Timing]| median(t.iter().map(|t| t.wall).collect());
    let cpu = |t: &[Timing]| median(t.iter().map(|t| t.cpu).collect());
    println!("iptables-save parse, {lines} rules, median of {runs} runs each:");
    // Other processes slow both sides, the peer's single thread differently from our two: a
    // ratio means little without the load it was measured under.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let averages: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("  load average (1, 5, 15 min): {}", averages.join(", "));
    }
    println!("                             wall clock    CPU time (all threads)");
    for (name, t) in [
        ("netsleuth parse", &ours),
        ("iptables-restore --test", &peer),
    ] {
        println!(
            "  {name:<24} {:>9.1} ms  {:>9.1} ms",
            ms(wall(t)),
            ms(cpu(t))
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  ratio: {:.1}× faster by the clock, {:.1}× less CPU",
        ratio(wall(&peer), wall(&ours)),
        ratio(cpu(&peer), cpu(&ours))
    );
    Ok(())
}

/// Wall-clock and CPU time of one run. On a shared machine the CPU time is the steadier figure:
/// it leaves out the time spent waiting for a core.
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// User + system CPU time of this process (`RUSAGE_SELF`, every thread) or of its waited-for
/// children (`RUSAGE_CHILDREN`).
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn time_our_parse(text: &str, rules: usize) -> anyhow::Result<Timing> {
    let (start, cpu) = (Instant::now(), cpu_time(libc::RUSAGE_SELF));
    let ruleset =
        netstack::iptables::parse(text).map_err(|e| anyhow::anyhow!("our parser failed: {e}"))?;
    let took = Timing {
        wall: start.elapsed(),
        cpu: cpu_time(libc::RUSAGE_SELF) - cpu,
    };
    if ruleset.rule_count() != rules {
        bail!("parsed {} rules, expected {rules}", ruleset.rule_count());
    }
    Ok(took)
}

fn time_iptables_restore(netns: &str, text: &str) -> anyhow::Result<Timing> {
    let (start, cpu) = (Instant::now(), cpu_time(libc::RUSAGE_CHILDREN));
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-restore", "--test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("iptables-restore")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "iptables-restore --test failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Timing {
        wall: start.elapsed(),
        cpu: cpu_time(libc::RUSAGE_CHILDREN) - cpu,
    })
}

fn bench_diagnose(size: ClusterSize, runs: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let snapshot = flannel_host_gw(size);
    eprintln!(
        "built a snapshot of {} nodes, {} pods, {} Services ({} netns) in {:.1} s",
        size.nodes,
        size.nodes * size.pods_per_node,
        size.services,
        snapshot.netns.len(),
        start.elapsed().as_secs_f64()
    );
    let query = Query {
        src: "default/web-1-1".into(),
        dst: "service/default/web-0".into(),
        protocol: Protocol::Tcp,
        dport: 80,
        sport: 40000,
    };
    let mut samples = Vec::new();
    let mut verdict = None;
    for _ in 0..runs {
        let start = Instant::now();
        let d = diagnose::diagnose(&snapshot, &query).map_err(|e| anyhow::anyhow!("{e}"))?;
        samples.push(start.elapsed());
        verdict = Some(d.verdict);
    }
    println!("one diagnosis (pod → Service, all endpoints, replies), snapshot in memory:");
    println!(
        "  verdict: {:?}",
        verdict.unwrap_or(model::diagnosis::Verdict::Incomplete)
    );
    print_spread(&mut samples);
    // The same from the bytes `netsleuth collect` writes (zstd JSON), as `diagnose --snapshot`
    // does after reading the file. Decoding dominates, so fewer runs.
    let bytes = snapshot.to_bytes(true)?;
    drop(snapshot);
    let mut samples = Vec::new();
    for _ in 0..runs.min(5) {
        let start = Instant::now();
        let decoded = model::Snapshot::from_bytes("synthetic", &bytes)?;
        diagnose::diagnose(&decoded, &query).map_err(|e| anyhow::anyhow!("{e}"))?;
        samples.push(start.elapsed());
    }
    println!(
        "the same including the snapshot decode ({:.1} MB zstd JSON):",
        bytes.len() as f64 / 1e6
    );
    print_spread(&mut samples);
    Ok(())
}

fn print_spread(samples: &mut [Duration]) {
    samples.sort();
    println!(
        "  {} runs: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}
