//! `netsleuth bench agent`: the node agent against its peers, side by side in one run (SPEC §4):
//! - scrape latency and CPU per scrape vs `prometheus-node-exporter` on the same procfs
//!   collectors (netdev, snmp/netstat, sockstat, softnet, conntrack), with N pod netns;
//! - idle CPU and RSS of the agent process;
//! - events/s through a sink (file) with loss accounted;
//! - per-drop overhead of the packetloss eBPF probe vs a `bpftrace` program counting the same
//!   tracepoint, during a UDP drop storm in a throw-away netns.
//!
//! Needs root. Every netns it creates is named `nsl-bagent-*` and removed on exit.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::bench::{median, ms};

/// Removes the bench's namespaces and kills its children, whatever happens.
#[derive(Default)]
struct Cleanup {
    netns: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.netns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ip")
        .args(args)
        .status()
        .context("running ip")?;
    if !status.success() {
        bail!("ip {} failed (needs root)", args.join(" "));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET over HTTP/1.0; returns the body length.
fn get(addr: &str, path: &str) -> anyhow::Result<usize> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\nAccept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    if !body.starts_with(b"HTTP/1.0 200") && !body.starts_with(b"HTTP/1.1 200") {
        bail!(
            "{addr}{path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    Ok(body.len())
}

fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if get(addr, "/metrics").is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr} did not answer /metrics within 20 s")
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`; utime and stime are fields 14 and 15 (1-based).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kb / 1024.0)
}

struct ScrapeResult {
    median: Duration,
    p95: Duration,
    cpu_per_scrape_ms: f64,
    bytes: usize,
}

fn time_scrapes(addr: &str, pid: u32, scrapes: usize) -> anyhow::Result<ScrapeResult> {
    let cpu_before = cpu_seconds(pid)?;
    let mut times = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let started = Instant::now();
        bytes = get(addr, "/metrics")?;
        times.push(started.elapsed());
    }
    let cpu = cpu_seconds(pid)? - cpu_before;
    let mut sorted = times.clone();
    sorted.sort();
    Ok(ScrapeResult {
        median: median(times),
        p95: sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)],
        cpu_per_scrape_ms: cpu * 1000.0 / scrapes as f64,
        bytes,
    })
}

/// `pods` netns `nsl-bagent-p<i>`, each with a veth into `nsl-bagent-node`, listed as pods in an
/// inventory under `dir`.
fn make_pods(pods: usize, dir: &Path, cleanup: &mut Cleanup) -> anyhow::Result<PathBuf> {
    let node = "nsl-bagent-node".to_string();
    let _ = Command::new("ip")
        .args(["netns", "del", &node])
        .stderr(Stdio::null())
        .status();
    ip(&["netns", "add", &node])?;
    cleanup.netns.push(node.clone());
    let mut netns = Vec::new();
    for i in 0..pods {
        let name = format!("nsl-bagent-p{i}");
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name])?;
        cleanup.netns.push(name.clone());
        ip(&[
            "-n",
            &name,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &format!("v{i}"),
            "netns",
            &node,
        ])?;
        ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        netns.push(serde_json::json!({
            "id": name, "node": "bench-node",
            "owner": {"kind": "pod", "namespace": "bench", "name": format!("pod-{i}")},
            "path": format!("/run/netns/{name}"),
        }));
    }
    let inventory_dir = dir.join("labs");
    std::fs::create_dir_all(inventory_dir.join("bench"))?;
    std::fs::write(
        inventory_dir.join("bench/inventory.json"),
        serde_json::to_vec(
            &serde_json::json!({"source": {"kind": "synthetic", "name": "bench"}, "netns": netns}),
        )?,
    )?;
    Ok(inventory_dir)
}

fn start_agent(
    config: &Path,
    inventory_dir: &Path,
    cleanup: &mut Cleanup,
) -> anyhow::Result<(String, u32)> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(std::env::current_exe()?)
        .args(["agent", "--node", "bench-node", "--address", &addr])
        .arg("--config")
        .arg(config)
        .arg("--inventory-dir")
        .arg(inventory_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting netsleuth agent")?;
    let pid = child.id();
    cleanup.children.push(child);
    wait_ready(&addr)?;
    Ok((addr, pid))
}

pub fn run(pods: usize, scrapes: usize, storm_secs: u64) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let mut cleanup = Cleanup::default();
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        "metrics:\n  probes: [{name: netdev}, {name: ip}, {name: tcp}, {name: udp}, {name: tcpext}, {name: sock}, {name: softnet}, {name: conntrack}]\n",
    )?;
    let empty_inventory = dir.join("none");
    eprintln!("creating {pods} pod network namespaces…");
    let inventory_dir = make_pods(pods, &dir, &mut cleanup)?;

    let (agent_host_addr, agent_host_pid) = start_agent(&config, &empty_inventory, &mut cleanup)?;
    let (agent_addr, agent_pid) = start_agent(&config, &inventory_dir, &mut cleanup)?;
    let ne_port = free_port()?;
    let ne_addr = format!("127.0.0.1:{ne_port}");
    let ne = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address={ne_addr}"))
        .args([
            "--collector.disable-defaults",
            "--collector.netdev",
            "--collector.netstat",
            "--collector.sockstat",
            "--collector.softnet",
            "--collector.conntrack",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting prometheus-node-exporter (Debian package)")?;
    let ne_pid = ne.id();
    cleanup.children.push(ne);
    wait_ready(&ne_addr)?;

    // Warm up, then alternate so load from elsewhere falls on all alike.
    for addr in [&agent_host_addr, &agent_addr, &ne_addr] {
        get(addr, "/metrics")?;
    }
    let mut rows = Vec::new();
    for (label, addr, pid) in [
        (
            "netsleuth agent, node netns only",
            &agent_host_addr,
            agent_host_pid,
        ),
        ("netsleuth agent, node + pods", &agent_addr, agent_pid),
        (
            "prometheus-node-exporter (node netns only)",
            &ne_addr,
            ne_pid,
        ),
    ] {
        rows.push((label, time_scrapes(addr, pid, scrapes)?));
    }
    println!("scrapes: {scrapes} sequential GET /metrics, {pods} pod netns");
    println!("| exporter | median | p95 | CPU per scrape | body |");
    println!("|---|---|---|---|---|");
    for (label, r) in &rows {
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {} KiB |",
            ms(r.median),
            ms(r.p95),
            r.cpu_per_scrape_ms,
            r.bytes / 1024
        );
    }

    // Idle: no scrapes for 10 s.
    let idle = Duration::from_secs(10);
    let before = [cpu_seconds(agent_pid)?, cpu_seconds(ne_pid)?];
    std::thread::sleep(idle);
    let after = [cpu_seconds(agent_pid)?, cpu_seconds(ne_pid)?];
    println!("\nidle over {} s (after the scrapes):", idle.as_secs());
    println!("| process | CPU (% of one core) | RSS |");
    println!("|---|---|---|");
    println!(
        "| netsleuth agent ({pods} pods mapped) | {:.2} % | {:.1} MiB |",
        (after[0] - before[0]) * 100.0 / idle.as_secs_f64(),
        rss_mib(agent_pid)?
    );
    println!(
        "| prometheus-node-exporter | {:.2} % | {:.1} MiB |",
        (after[1] - before[1]) * 100.0 / idle.as_secs_f64(),
        rss_mib(ne_pid)?
    );
    drop(cleanup);

    events_through_sink(&dir)?;
    drop_storm(storm_secs, &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("nsl-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Publish 1,000,000 events as fast as possible into the bus with a file sink; report the
/// rate and what was delivered vs dropped (queue full), which must add up.
fn events_through_sink(dir: &Path) -> anyhow::Result<()> {
    use agent::events::{Event, EventBatch, EventBus, EventType};
    let total: u64 = 1_000_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let path = dir.join("events.log");
    let (delivered, dropped, elapsed) = runtime.block_on(async {
        let metrics = Arc::new(agent::health::AgentMetrics::new());
        let bus = EventBus::new("bench-node", Arc::new(agent::podmap::PodMap::host_only("bench-node")), metrics.clone());
        let yaml = format!("event:\n  sinks:\n    - name: file\n      args: {{path: {}, maxSizeBytes: 1073741824}}\n", path.display());
        let config = agent::config::Config::parse("bench", &yaml)?.sinks.remove(0);
        let receiver = bus.set_sinks(&["file".into()], 4096).remove(0);
        let task = agent::sinks::spawn(&config, receiver, metrics.clone())?;
        let started = Instant::now();
        let producer = {
            let bus = bus.clone();
            tokio::task::spawn_blocking(move || {
                for _ in 0..total / 1000 {
                    let mut batch = EventBatch::default();
                    for i in 0..1000 {
                        batch.push(Event::new(EventType::PacketLoss, 4026531840, format!("drop {i}")));
                    }
                    bus.publish("bench", batch);
                }
            })
        };
        producer.await?;
        // Closing the queues lets the sink drain and end.
        bus.set_sinks(&[], 1);
        task.await?;
        let elapsed = started.elapsed();
        anyhow::Ok((metrics.delivered_for_sink("file"), metrics.dropped_for_sink("file"), elapsed))
    })?;
    println!(
        "\nevents through the file sink: {total} published in {:.0} ms",
        ms(elapsed)
    );
    println!("| delivered | dropped (queue full, counted) | accounted | delivered/s |");
    println!("|---|---|---|---|");
    println!(
        "| {delivered} | {dropped} | {} | {:.0} |",
        if delivered + dropped == total {
            "all"
        } else {
            "MISSING"
        },
        delivered as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// UDP to a port DROPped by INPUT in a throw-away netns, from several threads for `secs`;
/// packets/s with no tracer, with the agent's packetloss probe, with bpftrace counting
/// skb:kfree_skb by reason.
fn drop_storm(secs: u64, dir: &Path) -> anyhow::Result<()> {
    let mut cleanup = Cleanup::default();
    let ns = "nsl-bagent-storm".to_string();
    let _ = Command::new("ip")
        .args(["netns", "del", &ns])
        .stderr(Stdio::null())
        .status();
    ip(&["netns", "add", &ns])?;
    cleanup.netns.push(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    let status = Command::new("ip")
        .args([
            "netns", "exec", &ns, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j",
            "DROP",
        ])
        .status()?;
    if !status.success() {
        bail!("iptables in {ns} failed");
    }
    let rate = |label: &str| -> anyhow::Result<f64> {
        let sent = storm(&ns, Duration::from_secs(secs))?;
        let rate = sent as f64 / secs as f64;
        eprintln!("{label}: {rate:.0} drops/s");
        Ok(rate)
    };
    let baseline = rate("no tracer")?;

    let config = dir.join("storm.yaml");
    std::fs::write(
        &config,
        "metrics:\n  probes: [{name: packetloss}]\nevent:\n  probes: [{name: packetloss}]\n",
    )?;
    let (addr, _) = start_agent(&config, &dir.join("none"), &mut cleanup)?;
    let with_agent = rate("agent packetloss")?;
    let agent_metrics = {
        let mut s = TcpStream::connect(&addr)?;
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        text
    };
    let lost_line = |name: &str| {
        agent_metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("probe=\"packetloss\""))
            .map(|l| l.rsplit(' ').next().unwrap_or("0").to_string())
            .next()
            .unwrap_or_else(|| "0".into())
    };
    let sampled = lost_line("netsleuth_agent_events_sampled_away_total");
    let received = lost_line("netsleuth_agent_events_received_total");
    for child in &mut cleanup.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    cleanup.children.clear();

    let bpftrace = Command::new("bpftrace")
        .args([
            "-e",
            "tracepoint:skb:kfree_skb { @[args->reason] = count(); }",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace")?;
    cleanup.children.push(bpftrace);
    // bpftrace compiles and attaches in the background.
    std::thread::sleep(Duration::from_secs(3));
    let with_bpftrace = rate("bpftrace")?;
    drop(cleanup);

    let per_drop_ns = |r: f64| (1.0 / r - 1.0 / baseline) * 1e9;
    println!(
        "\ndrop storm: UDP to an INPUT DROP in a netns, {secs} s each, one sender thread per core"
    );
    println!("| tracer | drops/s | overhead per drop |");
    println!("|---|---|---|");
    println!("| none | {baseline:.0} | — |");
    println!("| netsleuth packetloss (events {received} emitted, {sampled} sampled away) | {with_agent:.0} | {:.0} ns |", per_drop_ns(with_agent));
    println!(
        "| bpftrace `@[args->reason] = count()` | {with_bpftrace:.0} | {:.0} ns |",
        per_drop_ns(with_bpftrace)
    );
    Ok(())
}

/// Send UDP datagrams to 127.0.0.1:9 inside `ns` from one thread per core; count them.
fn storm(ns: &str, duration: Duration) -> anyhow::Result<u64> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let path = format!("/run/netns/{ns}");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let f = std::fs::File::open(&path)?;
                // SAFETY: setns on an fd we hold; only this thread changes netns.
                if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }
                    != 0
                {
                    return Err(std::io::Error::last_os_error().into());
                }
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                let payload = [0u8; 64];
                let deadline = Instant::now() + duration;
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    for _ in 0..256 {
                        if socket.send_to(&payload, "127.0.0.1:9").is_ok() {
                            sent += 1;
                        }
                    }
                }
                Ok(sent)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    }
    Ok(total)
}
