//! `packetloss-bench`: what the packetloss probe costs per drop during a drop storm, side by
//! side in one run with no probe and with `bpftrace` counting the same tracepoint
//! (`tracepoint:skb:kfree_skb { @drops = count(); }`, i.e. the tracepoint plus one per-CPU
//! counter update: SPEC §4's ceiling). Figures go to docs/benchmarks.md.
//!
//! The storm: threads inside a throw-away network namespace write raw Ethernet frames with
//! sendmmsg (64 per call) on an AF_PACKET socket with PACKET_QDISC_BYPASS into one end of a veth
//! pair. The frames are addressed to a MAC the other end does not have, so the peer marks them
//! PACKET_OTHERHOST and `ip_rcv` frees each one at its first check: one `kfree_skb` with reason
//! OTHERHOST per frame, with no routing, netfilter or socket lookup on the way, and nothing
//! answers back. Per variant we take the storm threads' own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`; the veth hands the frame to the per-CPU backlog and the softirq
//! that drops it runs when the sender re-enables bottom halves) per drop, the wall-clock drop
//! rate, and in a separate pass with BPF run-time accounting on, the programs' own time per run.
//!
//! Usage (root): `packetloss-bench [--drops N] [--threads T] [--runs R]`.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bpf::packetloss::PacketLoss;
use bpf::Options;

type BoxError = Box<dyn std::error::Error>;

const BATCH: usize = 64;
/// The veth end the storm writes to; its peer (`STORM_PEER`) drops what arrives.
const STORM_DEV: &str = "storm0";
const STORM_PEER: &str = "storm1";
/// A locally administered unicast MAC that neither veth end has.
const ELSEWHERE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];
/// Minimum Ethernet frame without FCS: 14-byte header + 46 bytes of (ignored) IPv4 payload.
const FRAME_LEN: usize = 60;
const PACKET_QDISC_BYPASS: libc::c_int = 20;

struct Config {
    drops: u64,
    threads: usize,
    runs: usize,
}

fn parse_args() -> Result<Config, BoxError> {
    let mut config = Config {
        drops: 2_000_000,
        threads: 2,
        runs: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> Result<u64, BoxError> {
            let text = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            text.parse::<u64>()
                .map_err(|e| format!("{name} {text}: {e}").into())
        };
        match flag.as_str() {
            "--drops" => config.drops = value("--drops")?,
            "--threads" => config.threads = value("--threads")?.max(1) as usize,
            "--runs" => config.runs = value("--runs")?.max(1) as usize,
            "-h" | "--help" => {
                println!(
                    "usage: packetloss-bench [--drops N] [--threads T] [--runs R]  (root; bpftrace for the peer column)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)").into()),
        }
    }
    Ok(config)
}

/// The storm's namespace, removed on drop.
struct StormNetns {
    name: String,
}

impl StormNetns {
    fn new() -> Result<Self, BoxError> {
        let name = format!("nsbpf-bench-{}", std::process::id());
        sh(&format!("ip netns add {name}"))?;
        let ns = Self { name };
        // No IPv6 on the pair, so neighbour discovery adds no frames of its own.
        sh(&format!(
            "ip netns exec {0} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && \
             ip -n {0} link add {STORM_DEV} type veth peer name {STORM_PEER} && \
             ip -n {0} link set {STORM_DEV} up && ip -n {0} link set {STORM_PEER} up",
            ns.name
        ))?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for StormNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(command: &str) -> Result<(), BoxError> {
    let output = Command::new("sh").args(["-c", command]).output()?;
    if !output.status.success() {
        return Err(format!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Storm {
    drops: u64,
    wall: Duration,
    thread_cpu: Duration,
}

impl Storm {
    fn cpu_ns_per_drop(&self) -> f64 {
        self.thread_cpu.as_nanos() as f64 / self.drops as f64
    }

    fn drops_per_second(&self) -> f64 {
        self.drops as f64 / self.wall.as_secs_f64()
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into our timespec; the clock exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// An AF_PACKET socket that only sends (protocol 0: no receive hook) and skips the qdisc.
fn packet_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) and setsockopt(2) with a valid int option; the fd is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let on: libc::c_int = 1;
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// One sender: enters the namespace, then sends `frames` in sendmmsg batches.
fn sender(netns_path: String, frames: u64) -> std::io::Result<Duration> {
    let netns = std::fs::File::open(&netns_path)?;
    // SAFETY: setns on this thread only, with a valid netns fd.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let socket = packet_socket()?;
    let name = std::ffi::CString::new(STORM_DEV).expect("no NUL in the device name");
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
    let mut target: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    target.sll_family = libc::AF_PACKET as u16;
    target.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    target.sll_ifindex = ifindex as i32;
    let mut frame = [0u8; FRAME_LEN];
    frame[..6].copy_from_slice(&ELSEWHERE_MAC);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x41]);
    frame[12..14].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
    let mut iov = libc::iovec {
        iov_base: frame.as_mut_ptr().cast(),
        iov_len: frame.len(),
    };
    // SAFETY: an all-zero mmsghdr is valid; the pointers set below outlive every sendmmsg call.
    let mut messages: Vec<libc::mmsghdr> =
        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for message in &mut messages {
        message.msg_hdr.msg_name = (&mut target as *mut libc::sockaddr_ll).cast();
        message.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        message.msg_hdr.msg_iov = &mut iov;
        message.msg_hdr.msg_iovlen = 1;
    }
    let start = thread_cpu_time();
    let mut sent = 0u64;
    while sent < frames {
        let batch = (frames - sent).min(BATCH as u64) as u32;
        // SAFETY: `messages` holds at least `batch` initialised headers.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), batch, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        sent += n as u64;
    }
    Ok(thread_cpu_time() - start)
}

fn storm(ns: &StormNetns, config: &Config) -> Result<Storm, BoxError> {
    let per_thread = config.drops / config.threads as u64;
    let start = Instant::now();
    let handles: Vec<_> = (0..config.threads)
        .map(|_| {
            let path = ns.path();
            std::thread::spawn(move || sender(path, per_thread))
        })
        .collect();
    let mut thread_cpu = Duration::ZERO;
    for handle in handles {
        thread_cpu += handle.join().map_err(|_| "sender thread panicked")??;
    }
    Ok(Storm {
        drops: per_thread * config.threads as u64,
        wall: start.elapsed(),
        thread_cpu,
    })
}

/// bpftrace counting the same tracepoint; killed (SIGINT) to print its count.
struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    fn start() -> Result<Self, BoxError> {
        let mut child = Command::new("bpftrace")
            .args(["-e", "tracepoint:skb:kfree_skb { @drops = count(); }"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("bpftrace: {e} (install it with scripts/install-deps.sh)"))?;
        let stdout = child.stdout.as_mut().ok_or("bpftrace stdout")?;
        // "Attaching 1 probe..." comes first; read byte-wise so nothing after it is buffered away.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        if !line.starts_with(b"Attaching") {
            return Err(format!(
                "bpftrace did not attach: {}",
                String::from_utf8_lossy(&line)
            )
            .into());
        }
        // bpftrace prints that line just before attaching; give it time to finish.
        std::thread::sleep(Duration::from_secs(1));
        Ok(Self { child })
    }

    /// Stops bpftrace and returns the drops it counted.
    fn stop(mut self) -> Result<u64, BoxError> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let stdout = self.child.stdout.take().ok_or("bpftrace stdout")?;
        let mut count = None;
        for line in BufReader::new(stdout).lines() {
            if let Some(value) = line?.strip_prefix("@drops: ") {
                count = Some(value.trim().parse::<u64>()?);
            }
        }
        self.child.wait()?;
        count.ok_or_else(|| "bpftrace printed no @drops".into())
    }
}

/// Run count and time of every loaded program, by id (ours and bpftrace's alike).
fn program_runs() -> std::collections::HashMap<u32, (String, u64, Duration)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|info| {
            let name = info.name_as_str().unwrap_or("?").to_owned();
            (info.id(), (name, info.run_count(), info.run_time()))
        })
        .collect()
}

/// Nanoseconds per run of the program(s) that ran about once per drop during `run`.
fn program_ns_per_run(
    drops: u64,
    run: impl FnOnce() -> Result<(), BoxError>,
) -> Result<Option<(String, f64)>, BoxError> {
    let _accounting = bpf::enable_runtime_stats()?;
    let before = program_runs();
    run()?;
    let after = program_runs();
    Ok(after
        .into_iter()
        .filter_map(|(id, (name, count, time))| {
            let (_, count_before, time_before) = before.get(&id).cloned().unwrap_or_default();
            let runs = count - count_before;
            (runs >= drops * 9 / 10)
                .then(|| (name, (time - time_before).as_nanos() as f64 / runs as f64))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1)))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), BoxError> {
    let config = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("packetloss-bench needs root (network namespaces, eBPF, bpftrace)".into());
    }
    let ns = StormNetns::new()?;
    let reason_check = PacketLoss::load(&Options::default())?;
    storm(
        &ns,
        &Config {
            drops: 10_000,
            ..config
        },
    )?; // warm-up, and check the drop reason
    let otherhost = reason_check
        .counts()?
        .iter()
        .filter(|(k, _)| k.reason.name == "OTHERHOST")
        .map(|(_, c)| *c)
        .sum::<u64>();
    if otherhost < 10_000 {
        return Err(format!("storm produced {otherhost} OTHERHOST drops, expected 10000").into());
    }
    drop(reason_check);

    let (mut baseline, mut ours, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    let mut ours_rate = Vec::new();
    for run in 1..=config.runs {
        let none = storm(&ns, &config)?;
        let probe = PacketLoss::load(&Options::default())?;
        let with_probe = storm(&ns, &config)?;
        let stats = probe.stats()?;
        drop(probe);
        let bpftrace = Bpftrace::start()?;
        let with_bpftrace = storm(&ns, &config)?;
        let counted = bpftrace.stop()?;
        if counted < with_bpftrace.drops {
            return Err(
                format!("bpftrace counted {counted} < {} drops", with_bpftrace.drops).into(),
            );
        }
        eprintln!(
            "run {run}: no probe {:.0} ns/drop {:.2} Mdrops/s | packetloss {:.0} ns/drop {:.2} Mdrops/s \
             ({} events, {} sampled away, {} lost to the undrained ring buffer) | bpftrace {:.0} ns/drop {:.2} Mdrops/s",
            none.cpu_ns_per_drop(),
            none.drops_per_second() / 1e6,
            with_probe.cpu_ns_per_drop(),
            with_probe.drops_per_second() / 1e6,
            stats.events_emitted,
            stats.events_rate_limited,
            stats.events_ringbuf_full,
            with_bpftrace.cpu_ns_per_drop(),
            with_bpftrace.drops_per_second() / 1e6,
        );
        baseline.push(none.cpu_ns_per_drop());
        ours.push(with_probe.cpu_ns_per_drop());
        ours_rate.push(with_probe.drops_per_second());
        peer.push(with_bpftrace.cpu_ns_per_drop());
    }

    let short = Config {
        drops: config.drops / 4,
        ..config
    };
    let probe = PacketLoss::load(&Options::default())?;
    let ours_program = program_ns_per_run(short.drops, || storm(&ns, &short).map(drop))?;
    drop(probe);
    // bpftrace's program must still be loaded when the counts are read back.
    let bpftrace = Bpftrace::start()?;
    let peer_program = program_ns_per_run(short.drops, || storm(&ns, &short).map(drop))?;
    bpftrace.stop()?;

    let (base, ours, peer) = (median(baseline), median(ours), median(peer));
    println!(
        "drop storm: {} drops per run, {} sender threads, median of {} runs",
        config.drops, config.threads, config.runs
    );
    println!("| variant | CPU ns per drop | overhead vs no probe | program ns per run |");
    println!("|---|---|---|---|");
    println!("| no probe | {base:.0} | – | – |");
    let program = |p: &Option<(String, f64)>| {
        p.as_ref()
            .map_or("n/a".to_owned(), |(name, ns)| format!("{ns:.0} ({name})"))
    };
    println!(
        "| netsleuth packetloss | {ours:.0} | {:+.0} ns | {} |",
        ours - base,
        program(&ours_program)
    );
    println!(
        "| bpftrace `@drops = count()` | {peer:.0} | {:+.0} ns | {} |",
        peer - base,
        program(&peer_program)
    );
    println!(
        "packetloss storm rate (median): {:.2} M drops/s",
        median(ours_rate) / 1e6
    );
    Ok(())
}
