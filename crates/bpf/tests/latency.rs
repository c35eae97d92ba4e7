//! Latency probes on the real kernel: a slow reader (socketlatency, kernellatency), segments
//! held in a locked socket's backlog (kernellatency's receive-to-TCP stage), a rate-limited qdisc (netiftxlat), loopback traffic (netsoftirq) and direct block reads
//! (biolatency) must land in the right histogram buckets and exact threshold counters (over
//! 1 ms / the slow threshold / 100 ms; fast samples in none of them), and slow samples must come
//! out as events with the right namespace and 5-tuple.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use bpf::biolatency::{BioLatency, BlockDevice, BlockOp};
use bpf::kernellatency::{KernelLatency, RxStage};
use bpf::netiftxlat::{NetifTxLatency, TxStage};
use bpf::netsoftirq::{NetSoftirq, SoftirqPhase, SoftirqVector};
use bpf::socketlatency::SocketLatency;
use bpf::{L4Protocol, Options, SlowCounts};
use support::{options, veth_pair, Netns};

fn with_threshold(threshold: Duration) -> Options {
    Options {
        slow_threshold: threshold,
        ..options()
    }
}

/// Client connects to a listener in `server_ns` at `server`, the server writes, the client
/// waits `delay` before reading. Returns (client local address, server address).
fn slow_tcp_reader(
    client_ns: &Netns,
    server_ns: &Netns,
    server: SocketAddr,
    delay: Duration,
) -> (SocketAddr, SocketAddr) {
    let listener = server_ns.run(move || TcpListener::bind(server).unwrap());
    let server_addr = listener.local_addr().unwrap();
    let mut client = client_ns.run(move || TcpStream::connect(server_addr).unwrap());
    let (mut accepted, _) = listener.accept().unwrap();
    accepted.write_all(&[7u8; 100]).unwrap();
    std::thread::sleep(delay);
    let mut buf = [0u8; 100];
    client.read_exact(&mut buf).unwrap();
    (client.local_addr().unwrap(), server_addr)
}

#[test]
fn slow_tcp_and_udp_readers_show_socket_queue_latency() {
    let ns = Netns::new("sock");
    let mut probe = SocketLatency::load(&with_threshold(Duration::from_millis(100)))
        .expect("socketlatency loads");
    let (client, server) = slow_tcp_reader(
        &ns,
        &ns,
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(200),
    );
    let udp_waited = ns.run(|| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(b"queued", receiver.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let waited = receiver.recv(&mut [0u8; 16]).unwrap();
        // Then one read of data that was waited for: not slow.
        sender
            .send_to(b"fast", receiver.local_addr().unwrap())
            .unwrap();
        receiver.recv(&mut [0u8; 16]).unwrap();
        waited
    });
    assert_eq!(udp_waited, 6);

    let histograms = probe.histograms().unwrap();
    let tcp = &histograms[&(ns.id(), L4Protocol::Tcp)];
    assert!(
        tcp.count_at_least(Duration::from_millis(128)) >= 1,
        "{tcp:?}"
    );
    let udp = &histograms[&(ns.id(), L4Protocol::Udp)];
    assert_eq!(udp.count(), 2, "{udp:?}");
    assert_eq!(
        udp.count_at_least(Duration::from_millis(128)),
        1,
        "150 ms lands in the 128–256 ms bucket"
    );
    let slow = probe.slow_counts().unwrap();
    let tcp_slow = slow[&(ns.id(), L4Protocol::Tcp)];
    assert!(tcp_slow.over_100ms >= 1, "{tcp_slow:?}");
    assert!(
        tcp_slow.over_1ms >= tcp_slow.over_100ms,
        "cumulative: {tcp_slow:?}"
    );
    assert_eq!(
        slow[&(ns.id(), L4Protocol::Udp)],
        SlowCounts {
            over_1ms: 1,
            over_slow_threshold: 1,
            over_100ms: 1
        },
        "the 150 ms read counts over every threshold, the fast read over none"
    );

    let events: Vec<_> = probe
        .drain_events()
        .into_iter()
        .filter(|e| e.netns == ns.inode())
        .collect();
    let tcp_event = events
        .iter()
        .find(|e| e.tuple.is_some_and(|t| t.protocol == L4Protocol::Tcp))
        .expect("slow TCP read event");
    assert_eq!(
        tcp_event.tuple.map(|t| (t.src, t.dst)),
        Some((client, server)),
        "src = reading socket"
    );
    assert!(
        tcp_event.latency >= Duration::from_millis(200),
        "{tcp_event:?}"
    );
    assert_eq!(tcp_event.pid, std::process::id());
    assert_eq!(
        events.len(),
        2,
        "only reads slower than 100 ms are events: {events:#?}"
    );
}

#[test]
fn receive_path_latency_is_attributed_to_the_receiving_netns() {
    let (client_ns, server_ns) = (Netns::new("krxa"), Netns::new("krxb"));
    let mut probe = KernelLatency::load(&with_threshold(Duration::from_millis(100)))
        .expect("kernellatency loads");
    veth_pair(&client_ns, &server_ns, 41);
    let (client, server) = slow_tcp_reader(
        &client_ns,
        &server_ns,
        "10.77.41.2:0".parse().unwrap(),
        Duration::from_millis(200),
    );
    let histograms = probe.histograms().unwrap();
    // The client receives the server's 100 bytes over veth, then reads them 200 ms later.
    let to_tcp = &histograms[&(client_ns.id(), RxStage::ToTcp)];
    assert!(to_tcp.count() >= 1, "{to_tcp:?}");
    assert_eq!(
        to_tcp.count_at_least(Duration::from_millis(100)),
        0,
        "kernel processing is fast: {to_tcp:?}"
    );
    let to_user = &histograms[&(client_ns.id(), RxStage::ToUserCopy)];
    assert!(
        to_user.count_at_least(Duration::from_millis(128)) >= 1,
        "{to_user:?}"
    );
    let slow = probe.slow_counts().unwrap();
    let to_tcp_slow = slow
        .get(&(client_ns.id(), RxStage::ToTcp))
        .copied()
        .unwrap_or_default();
    assert_eq!(to_tcp_slow.over_100ms, 0, "{to_tcp_slow:?}");
    let to_user_slow = slow[&(client_ns.id(), RxStage::ToUserCopy)];
    assert!(to_user_slow.over_100ms >= 1, "{to_user_slow:?}");
    assert!(
        to_user_slow.over_slow_threshold >= 1,
        "200 ms is over the 100 ms slow threshold: {to_user_slow:?}"
    );

    let events = probe.drain_events();
    let event = events
        .iter()
        .find(|e| e.netns == client_ns.inode() && e.stage == RxStage::ToUserCopy)
        .expect("slow user-copy event");
    let tuple = event.tuple.unwrap();
    assert_eq!(
        (tuple.protocol, tuple.src, tuple.dst),
        (L4Protocol::Tcp, server, client),
        "packet direction"
    );
}

/// A page whose first touch stalls: registered with userfaultfd, and the handler thread fills
/// it only `hold` after the fault. A `send(2)` from it holds the socket lock that long, since
/// `tcp_sendmsg` copies the user buffer with the socket locked; segments arriving meanwhile wait
/// in the socket backlog and reach TCP processing (`tcp_rcv_established`, where `tcp_probe`
/// fires) only when the lock is released — a real slow receive path, no kprobe needed.
struct StallingPage {
    page: *mut libc::c_void,
    faulted: std::sync::mpsc::Receiver<()>,
    handler: Option<std::thread::JoinHandle<()>>,
}

const PAGE: usize = 4096;

impl StallingPage {
    fn new(hold: Duration) -> Self {
        // <linux/userfaultfd.h>: _IOWR(0xAA, nr, size) and the structs they take.
        const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
        const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
        const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
        const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
        // SAFETY: plain syscalls on memory and fds this function owns; every struct matches the
        // kernel's layout (u64 fields) and outlives its ioctl.
        unsafe {
            let uffd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) as i32;
            assert!(
                uffd >= 0,
                "userfaultfd: {}",
                std::io::Error::last_os_error()
            );
            let mut api = [0xAAu64, 0, 0];
            assert_eq!(
                libc::ioctl(uffd, UFFDIO_API, api.as_mut_ptr()),
                0,
                "UFFDIO_API"
            );
            let page = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(page, libc::MAP_FAILED);
            let start = page as u64;
            let mut register = [start, PAGE as u64, 1 /* MODE_MISSING */, 0];
            assert_eq!(
                libc::ioctl(uffd, UFFDIO_REGISTER, register.as_mut_ptr()),
                0,
                "UFFDIO_REGISTER: {}",
                std::io::Error::last_os_error()
            );
            let (tell, faulted) = std::sync::mpsc::channel();
            let handler = std::thread::spawn(move || {
                let mut message = [0u8; 32];
                let read = libc::read(uffd, message.as_mut_ptr().cast(), message.len());
                assert_eq!((read, message[0]), (32, UFFD_EVENT_PAGEFAULT));
                tell.send(()).unwrap();
                std::thread::sleep(hold);
                let mut zero = [start, PAGE as u64, 0, 0];
                assert_eq!(libc::ioctl(uffd, UFFDIO_ZEROPAGE, zero.as_mut_ptr()), 0);
                libc::close(uffd);
            });
            Self {
                page,
                faulted,
                handler: Some(handler),
            }
        }
    }
}

impl Drop for StallingPage {
    fn drop(&mut self) {
        // SAFETY: the page was mapped by `new` and nothing refers to it any more.
        unsafe { libc::munmap(self.page, PAGE) };
    }
}

#[test]
fn segments_held_in_a_locked_socket_backlog_count_as_slow_receive_processing() {
    use std::os::fd::AsRawFd;

    let (client_ns, server_ns) = (Netns::new("kslowa"), Netns::new("kslowb"));
    let probe = KernelLatency::load(&with_threshold(Duration::from_millis(50)))
        .expect("kernellatency loads");
    veth_pair(&client_ns, &server_ns, 43);
    let listener = server_ns.run(|| TcpListener::bind("10.77.43.2:0").unwrap());
    let server = listener.local_addr().unwrap();
    let mut client = client_ns.run(move || TcpStream::connect(server).unwrap());
    let (mut accepted, _) = listener.accept().unwrap();
    // One fast exchange first: that one must not count as slow.
    accepted.write_all(b"fast").unwrap();
    client.read_exact(&mut [0u8; 4]).unwrap();

    let mut stalling = StallingPage::new(Duration::from_millis(300));
    let fd = client.as_raw_fd();
    let page = stalling.page as usize;
    // SAFETY: the page stays mapped until `stalling` drops, after this thread is joined.
    let sender =
        std::thread::spawn(move || unsafe { libc::send(fd, page as *const libc::c_void, PAGE, 0) });
    stalling
        .faulted
        .recv_timeout(Duration::from_secs(5))
        .expect("send(2) faulted on the page");
    // The client's socket is locked now: this segment waits in its backlog.
    accepted.write_all(b"held").unwrap();
    assert_eq!(sender.join().unwrap(), PAGE as isize);
    stalling.handler.take().unwrap().join().unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held");

    let slow = probe.slow_counts().unwrap()[&(client_ns.id(), RxStage::ToTcp)];
    assert!(slow.over_100ms >= 1, "{slow:?}");
    assert!(slow.over_slow_threshold >= slow.over_100ms, "{slow:?}");
    let to_tcp = &probe.histograms().unwrap()[&(client_ns.id(), RxStage::ToTcp)];
    assert!(
        to_tcp.count() > slow.over_slow_threshold,
        "the fast exchange and the handshake are not slow: {to_tcp:?} {slow:?}"
    );
}

#[test]
fn rate_limited_qdisc_shows_queueing_latency_on_its_netns() {
    let (a, b) = (Netns::new("txa"), Netns::new("txb"));
    let mut probe =
        NetifTxLatency::load(&with_threshold(Duration::from_millis(50))).expect("netiftxlat loads");
    let (veth_a, _) = veth_pair(&a, &b, 42);
    // 1 Mbit/s: each 1228-byte packet takes ~10 ms, so the 30th waits ~300 ms in the qdisc.
    a.exec(&format!(
        "tc qdisc add dev {veth_a} root tbf rate 1mbit burst 1600 latency 2s"
    ));
    b.exec("ip neigh flush all");
    let dst: SocketAddr = "10.77.42.2:9999".parse().unwrap();
    let src = a.run(move || {
        let socket = UdpSocket::bind("10.77.42.1:0").unwrap();
        for _ in 0..30 {
            socket.send_to(&[0u8; 1200], dst).unwrap();
        }
        std::thread::sleep(Duration::from_millis(600));
        socket.local_addr().unwrap()
    });
    let histograms = probe.histograms().unwrap();
    let qdisc = &histograms[&(a.id(), TxStage::Qdisc)];
    assert!(qdisc.count() >= 30, "{qdisc:?}");
    assert!(
        qdisc.count_at_least(Duration::from_millis(128)) >= 10,
        "{qdisc:?}"
    );
    assert!(histograms[&(a.id(), TxStage::Driver)].count() >= 30);
    let slow = probe.slow_counts().unwrap();
    let qdisc_slow = slow[&(a.id(), TxStage::Qdisc)];
    assert!(qdisc_slow.over_100ms >= 10, "{qdisc_slow:?}");
    assert!(
        qdisc_slow.over_slow_threshold >= qdisc_slow.over_100ms,
        "over 50 ms includes over 100 ms: {qdisc_slow:?}"
    );
    let driver_slow = slow
        .get(&(a.id(), TxStage::Driver))
        .copied()
        .unwrap_or_default();
    assert_eq!(
        driver_slow.over_100ms, 0,
        "veth transmits at once: {driver_slow:?}"
    );

    let events: Vec<_> = probe
        .drain_events()
        .into_iter()
        .filter(|e| e.netns == a.inode())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e.stage == TxStage::Qdisc && e.latency >= Duration::from_millis(50)),
        "{events:#?}"
    );
    // IPv6 neighbour discovery on the new veth queues behind our datagrams too; count ours.
    let ours = events
        .iter()
        .filter(|e| {
            e.tuple
                .is_some_and(|t| (t.protocol, t.src, t.dst) == (L4Protocol::Udp, src, dst))
        })
        .count();
    assert!(ours >= 10, "{events:#?}");
}

#[test]
fn net_rx_softirq_wait_and_run_times_are_recorded() {
    let ns = Netns::new("sirq");
    let mut probe = NetSoftirq::load(&with_threshold(Duration::ZERO)).expect("netsoftirq loads");
    // Loopback sends go through netif_rx, which raises NET_RX on this CPU.
    ns.run(|| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            sender
                .send_to(b"x", receiver.local_addr().unwrap())
                .unwrap();
        }
    });
    let histograms = probe.histograms().unwrap();
    assert!(
        histograms[&(SoftirqVector::NetRx, SoftirqPhase::Wait)].count() >= 1,
        "{histograms:?}"
    );
    assert!(
        histograms[&(SoftirqVector::NetRx, SoftirqPhase::Run)].count() >= 1,
        "{histograms:?}"
    );
    // A zero threshold makes every softirq slow; none of them runs for 100 ms.
    let run = probe.slow_counts().unwrap()[&(SoftirqVector::NetRx, SoftirqPhase::Run)];
    assert!(run.over_slow_threshold >= 1, "{run:?}");
    assert_eq!(run.over_100ms, 0, "{run:?}");
    let events = probe.drain_events();
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert!(events
        .iter()
        .any(|e| e.vector == SoftirqVector::NetRx && e.phase == SoftirqPhase::Run));
    assert!(
        events.iter().all(|e| e.cpu < cpus),
        "cpu is filled in (KubeSkoop's was always 0)"
    );
}

/// The whole disk under the filesystem holding `path` (a partition's parent disk).
fn disk_of(path: &std::path::Path) -> BlockDevice {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let disk = if sys.join("partition").exists() {
        sys.join("..")
    } else {
        sys
    };
    let numbers = std::fs::read_to_string(disk.join("dev")).unwrap();
    let (major, minor) = numbers.trim().split_once(':').unwrap();
    BlockDevice {
        major: major.parse().unwrap(),
        minor: minor.parse().unwrap(),
    }
}

#[test]
fn direct_file_reads_are_timed_on_the_disk_below() {
    let mut probe = BioLatency::load(&with_threshold(Duration::ZERO)).expect("biolatency loads");
    // The raw disk is off limits in this sandbox; O_DIRECT file I/O reaches it all the same,
    // one request per 4 KiB block, bypassing the page cache.
    let file = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("biolatency-{}", std::process::id()));
    let path = file.display().to_string();
    support::sh(&format!(
        "dd if=/dev/zero of={path} bs=4k count=64 oflag=direct conv=fsync status=none"
    ));
    let device = disk_of(&file);
    support::sh(&format!(
        "dd if={path} of=/dev/null bs=4k count=64 iflag=direct status=none"
    ));
    std::fs::remove_file(&file).unwrap();

    let histograms = probe.histograms().unwrap();
    let reads = &histograms[&(device, BlockOp::Read)];
    assert!(reads.count() >= 64, "{reads:?}");
    assert!(histograms[&(device, BlockOp::Write)].count() >= 64);
    let slow = probe.slow_counts().unwrap();
    assert!(
        slow[&(device, BlockOp::Read)].over_slow_threshold >= 64,
        "a zero threshold makes every request slow: {slow:?}"
    );
    let events = probe.drain_events();
    // dd may also read file-system metadata of other sizes; its 64 direct 4 KiB reads must
    // all be there.
    let dd_reads: Vec<_> = events
        .iter()
        .filter(|e| e.command == "dd" && e.device == device && e.op == BlockOp::Read)
        .collect();
    let block_reads = dd_reads.iter().filter(|e| e.bytes == 4096).count();
    assert!(
        block_reads >= 64,
        "{block_reads} 4 KiB dd reads in {} events",
        events.len()
    );
    assert!(dd_reads.iter().all(|e| e.error == 0), "{dd_reads:#?}");
}
