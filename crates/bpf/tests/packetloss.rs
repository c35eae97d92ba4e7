//! packetloss on the real kernel: drops caused in our own network namespaces must show up in
//! the in-kernel counters under that namespace's inode with the kernel's reason name, and as
//! events with the packet's 5-tuple in host byte order.

mod support;

use std::net::{SocketAddr, UdpSocket};

use bpf::packetloss::{DropKey, DropReason, PacketLoss};
use bpf::{L3Protocol, L4Protocol, Options};
use support::{options, Netns};

fn key(ns: &Netns, probe: &PacketLoss, reason: &str, l4: L4Protocol) -> DropKey {
    let code = probe
        .reason_names()
        .value(reason)
        .expect("reason exists on this kernel") as u32;
    DropKey {
        netns: ns.id(),
        reason: DropReason {
            code,
            name: reason.into(),
        },
        l3: L3Protocol::Ipv4,
        l4,
    }
}

/// Sends `count` datagrams from a bound socket inside `ns` to `dst`; returns the source address.
fn send_udp(ns: &Netns, dst: &'static str, count: usize) -> SocketAddr {
    ns.run(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..count {
            // iptables DROP in OUTPUT makes send fail with EPERM; the drop still happened.
            let _ = socket.send_to(b"netsleuth", dst);
        }
        socket.local_addr().unwrap()
    })
}

#[test]
fn udp_to_closed_port_and_iptables_drop_are_counted_per_netns_with_reason_names() {
    let ns = Netns::new("pl");
    let mut probe = PacketLoss::load(&options()).expect("packetloss loads");
    ns.exec("iptables -w -A OUTPUT -p udp --dport 7777 -j DROP");

    let closed_src = send_udp(&ns, "127.0.0.1:9", 5);
    let filtered_src = send_udp(&ns, "127.0.0.1:7777", 7);

    let counts = probe.counts().unwrap();
    assert_eq!(
        counts.get(&key(&ns, &probe, "NO_SOCKET", L4Protocol::Udp)),
        Some(&5),
        "{counts:#?}"
    );
    assert_eq!(
        counts.get(&key(&ns, &probe, "NETFILTER_DROP", L4Protocol::Udp)),
        Some(&7),
        "{counts:#?}"
    );

    let events = probe.drain_events();
    let ours = |reason: &str, src: SocketAddr, dst: &str| {
        events
            .iter()
            .filter(|e| e.netns == ns.inode() && e.reason.name == reason)
            .filter(|e| {
                e.tuple.is_some_and(|t| {
                    t.protocol == L4Protocol::Udp && t.src == src && t.dst == dst.parse().unwrap()
                })
            })
            .count()
    };
    assert_eq!(
        ours("NO_SOCKET", closed_src, "127.0.0.1:9"),
        5,
        "{events:#?}"
    );
    assert_eq!(
        ours("NETFILTER_DROP", filtered_src, "127.0.0.1:7777"),
        7,
        "{events:#?}"
    );
    let netfilter_event = events
        .iter()
        .find(|e| e.netns == ns.inode() && e.reason.name == "NETFILTER_DROP")
        .unwrap();
    assert!(
        // iptables-nft drops inside nft_do_chain, legacy iptables in nf_hook_slow.
        netfilter_event
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("nft_do_chain+") || l.starts_with("nf_hook_slow+")),
        "dropping function named from kallsyms: {:?}",
        netfilter_event.location
    );
    assert!(
        netfilter_event.stack.is_empty(),
        "no stack unless asked for"
    );
}

#[test]
fn stack_is_captured_when_asked() {
    let ns = Netns::new("plstack");
    let mut probe = PacketLoss::load(&Options {
        capture_stack: true,
        ..options()
    })
    .unwrap();
    let src = send_udp(&ns, "127.0.0.1:9", 1);
    let events = probe.drain_events();
    let event = events
        .iter()
        .find(|e| e.tuple.is_some_and(|t| t.src == src))
        .expect("our drop sampled");
    assert!(event.stack.len() > 3, "{:?}", event.stack);
    assert!(
        event
            .stack
            .iter()
            .any(|frame| frame.starts_with("__udp4_lib_rcv")),
        "{:?}",
        event.stack
    );
}

#[test]
fn token_bucket_samples_events_and_counts_what_it_dropped() {
    let ns = Netns::new("plrate");
    let mut probe = PacketLoss::load(&Options {
        events_per_second: 1,
        event_burst: 2,
        ..Options::default()
    })
    .unwrap();
    send_udp(&ns, "127.0.0.1:9", 200);

    let counted = probe.counts().unwrap()[&key(&ns, &probe, "NO_SOCKET", L4Protocol::Udp)];
    assert_eq!(counted, 200, "every drop is counted regardless of sampling");
    let stats = probe.stats().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        stats.events_emitted <= cpus * 3,
        "burst 2 + ~1/s per CPU: {stats:?}"
    );
    assert!(stats.events_rate_limited >= 200 - cpus * 3, "{stats:?}");
    assert_eq!(probe.drain_events().len() as u64, stats.events_emitted);
    let fills = probe.map_fills().unwrap();
    assert_eq!(fills[0].map, "drop_counts");
    assert!(
        fills[0].entries >= 1 && fills[0].capacity == Options::default().max_entries,
        "{fills:?}"
    );
}

#[test]
fn missing_btf_is_a_clear_error() {
    let options = Options {
        btf_path: "/nonexistent/vmlinux".into(),
        ..Options::default()
    };
    let err = PacketLoss::load(&options).err().expect("must fail");
    assert_eq!(err.probe(), "packetloss");
    assert!(err.is_unsupported_here());
    let message = err.to_string();
    assert!(
        message.starts_with("kernel BTF /nonexistent/vmlinux is missing"),
        "{message}"
    );
    assert!(message.contains("CONFIG_DEBUG_INFO_BTF"), "{message}");
}

#[test]
fn file_that_is_not_btf_is_a_clear_error() {
    let options = Options {
        btf_path: "/etc/os-release".into(),
        ..Options::default()
    };
    let message = PacketLoss::load(&options).err().unwrap().to_string();
    assert!(
        message.starts_with("kernel BTF /etc/os-release is unusable: /etc/os-release: not BTF"),
        "{message}"
    );
}

#[test]
fn program_run_time_is_accounted_while_stats_are_enabled() {
    let ns = Netns::new("plstats");
    let probe = PacketLoss::load(&options()).unwrap();
    let stats = bpf::enable_runtime_stats().expect("BPF_ENABLE_STATS as root");
    send_udp(&ns, "127.0.0.1:9", 50);
    let runtimes = probe.program_runtimes().unwrap();
    drop(stats);
    assert_eq!(runtimes.len(), 1);
    assert_eq!(runtimes[0].program, "on_kfree_skb");
    assert!(runtimes[0].run_count >= 50, "{runtimes:?}");
    assert!(
        runtimes[0].run_time > std::time::Duration::ZERO,
        "{runtimes:?}"
    );
}

/// tp_btf programs attach through BTF, not tracefs: the probe must load on a host where tracefs
/// is not mounted (bpftrace and classic tracepoints would fail there). The check runs this
/// binary's `loads_in_current_mount_namespace` in a private mount namespace with tracefs
/// unmounted, so the machine's own mount is untouched.
#[test]
fn loads_without_tracefs_mounted() {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "umount /sys/kernel/tracing && ! mountpoint -q /sys/kernel/tracing && \
         {} --exact loads_in_current_mount_namespace --ignored --quiet",
        exe.display()
    );
    assert_succeeds(std::process::Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
}

/// Runs `command` (which re-runs one ignored test of this binary in a changed environment) and
/// fails with its output unless it succeeds.
fn assert_succeeds(command: &mut std::process::Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "run by loads_without_tracefs_mounted inside a mount namespace without tracefs"]
fn loads_in_current_mount_namespace() {
    let probe = PacketLoss::load(&Options::default()).expect("loads without tracefs");
    assert!(probe.counts().is_ok());
}

/// Without root or CAP_BPF the loader must say so instead of failing somewhere in aya: this
/// binary's `not_permitted_in_current_process` runs as `nobody` with every capability dropped.
#[test]
fn unprivileged_load_is_a_clear_error() {
    let exe = std::env::current_exe().unwrap();
    assert_succeeds(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(exe)
            .args([
                "--exact",
                "not_permitted_in_current_process",
                "--ignored",
                "--quiet",
            ]),
    );
}

#[test]
#[ignore = "run by unprivileged_load_is_a_clear_error as an unprivileged user"]
fn not_permitted_in_current_process() {
    let err = PacketLoss::load(&Options::default())
        .err()
        .expect("must fail without privileges");
    assert!(
        err.to_string().starts_with(
            "loading eBPF programs needs root or CAP_BPF+CAP_PERFMON (effective uid 65534"
        ),
        "{err}"
    );
    assert!(err.is_unsupported_here());
}
