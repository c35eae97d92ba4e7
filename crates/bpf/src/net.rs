//! Network identities shared by the probes' results: netns inode and cookie, protocols and the 5-tuple
//! decoded from the kernel's `struct ns_tuple` (common.bpf.h), plus the clock conversion for
//! event timestamps. Ports are already in host byte order when they leave the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Inode number of a network namespace (`ls -Li /proc/<pid>/ns/net`); 0 when the kernel object
/// carried no namespace (an skb with neither device nor socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsInode(pub u32);

/// A network namespace's cookie (`SO_NETNS_COOKIE`): unlike the inode, never handed to another
/// namespace while the machine runs. 0 on kernels without one (before 5.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsCookie(pub u64);

impl NetnsCookie {
    /// The cookie of the calling thread's network namespace: `SO_NETNS_COOKIE` (Linux 5.14+) on
    /// a socket made there, the value the probes read from the kernel's `struct net`.
    pub fn of_current_thread() -> std::io::Result<NetnsCookie> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // Not in every libc build; the value is the same on every architecture that has it.
        const SO_NETNS_COOKIE: libc::c_int = 71;
        // SAFETY: socket(2) has no memory preconditions; the fd is owned (closed) right away.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut cookie = 0u64;
        let mut len = size_of::<u64>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` (8) bytes into `cookie`, which outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&raw mut cookie).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(NetnsCookie(cookie))
    }
}

/// The network namespace an in-kernel count belongs to. Two entries with the same inode and
/// different cookies belong to different namespaces: the kernel gave a dead one's inode to the
/// next namespace created, and only the one whose cookie the inode's namespace has now is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netns {
    pub inode: NetnsInode,
    pub cookie: NetnsCookie,
}

/// Mirror of `struct ns_netns` in common.bpf.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RawNetns {
    pub cookie: u64,
    pub inum: u32,
    pub pad: u32,
}

impl RawNetns {
    pub(crate) fn decode(self) -> Netns {
        Netns {
            inode: NetnsInode(self.inum),
            cookie: NetnsCookie(self.cookie),
        }
    }
}

/// Link-layer protocol of an skb (`skb->protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L3Protocol {
    Ipv4,
    Ipv6,
    Arp,
    /// Not set on the skb (yet).
    Unset,
    Other(u16),
}

impl From<u16> for L3Protocol {
    fn from(ethertype: u16) -> Self {
        match ethertype {
            0x0800 => Self::Ipv4,
            0x86dd => Self::Ipv6,
            0x0806 => Self::Arp,
            0 => Self::Unset,
            other => Self::Other(other),
        }
    }
}

/// IP protocol number of the transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Protocol {
    Tcp,
    Udp,
    Icmp,
    IcmpV6,
    /// No IP header could be read.
    Unknown,
    Other(u8),
}

impl From<u8> for L4Protocol {
    fn from(number: u8) -> Self {
        match number {
            6 => Self::Tcp,
            17 => Self::Udp,
            1 => Self::Icmp,
            58 => Self::IcmpV6,
            0 => Self::Unknown,
            other => Self::Other(other),
        }
    }
}

impl L4Protocol {
    /// Lower-case name as used in labels (`tcp`, `udp`, ...; `proto-<n>` for the rest).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Icmp => "icmp".into(),
            Self::IcmpV6 => "icmpv6".into(),
            Self::Unknown => "unknown".into(),
            Self::Other(n) => format!("proto-{n}").into(),
        }
    }
}

/// TCP socket state (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    /// No socket was involved (a reset answering a segment nothing listened for).
    NoSocket,
    Other(u32),
}

impl From<u32> for TcpState {
    fn from(state: u32) -> Self {
        match state {
            0 => Self::NoSocket,
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            other => Self::Other(other),
        }
    }
}

impl TcpState {
    /// Kernel-style name (`TCP_ESTABLISHED`), as KubeSkoop's events printed it.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Established => "TCP_ESTABLISHED".into(),
            Self::SynSent => "TCP_SYN_SENT".into(),
            Self::SynRecv => "TCP_SYN_RECV".into(),
            Self::FinWait1 => "TCP_FIN_WAIT1".into(),
            Self::FinWait2 => "TCP_FIN_WAIT2".into(),
            Self::TimeWait => "TCP_TIME_WAIT".into(),
            Self::Close => "TCP_CLOSE".into(),
            Self::CloseWait => "TCP_CLOSE_WAIT".into(),
            Self::LastAck => "TCP_LAST_ACK".into(),
            Self::Listen => "TCP_LISTEN".into(),
            Self::Closing => "TCP_CLOSING".into(),
            Self::NewSynRecv => "TCP_NEW_SYN_RECV".into(),
            Self::NoSocket => "NO_SOCKET".into(),
            Self::Other(n) => format!("TCP_STATE_{n}").into(),
        }
    }
}

/// A transport 5-tuple; `src` and `dst` follow the packet (or, for socket-derived tuples,
/// local and remote end), ports in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub protocol: L4Protocol,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Mirror of `struct ns_tuple` in common.bpf.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct RawTuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u8,
    pub pad: u8,
}

// SAFETY: plain integers and byte arrays with explicit padding; any bit pattern is valid.
unsafe impl aya::Pod for RawTuple {}
// SAFETY: as above.
unsafe impl aya::Pod for RawNetns {}

impl RawTuple {
    /// `None` when the kernel could not read an IP header (family unset).
    pub(crate) fn decode(&self) -> Option<Tuple> {
        let (src, dst) = match self.family {
            AF_INET => (
                IpAddr::V4(Ipv4Addr::new(
                    self.saddr[0],
                    self.saddr[1],
                    self.saddr[2],
                    self.saddr[3],
                )),
                IpAddr::V4(Ipv4Addr::new(
                    self.daddr[0],
                    self.daddr[1],
                    self.daddr[2],
                    self.daddr[3],
                )),
            ),
            AF_INET6 => (
                IpAddr::V6(Ipv6Addr::from(self.saddr)),
                IpAddr::V6(Ipv6Addr::from(self.daddr)),
            ),
            _ => return None,
        };
        Some(Tuple {
            protocol: L4Protocol::from(self.protocol),
            src: SocketAddr::new(src, self.sport),
            dst: SocketAddr::new(dst, self.dport),
        })
    }
}

/// A task's `comm` as the kernel fills it (`bpf_get_current_comm`): NUL-padded, up to 16 bytes.
pub(crate) fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Converts a `bpf_ktime_get_ns()` stamp (CLOCK_MONOTONIC) to wall-clock time.
pub fn monotonic_ns_to_system_time(monotonic_ns: u64) -> SystemTime {
    let now_wall = SystemTime::now();
    let now_mono = monotonic_now_ns();
    let age = Duration::from_nanos(now_mono.saturating_sub(monotonic_ns));
    now_wall.checked_sub(age).unwrap_or(now_wall)
}

pub(crate) fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_tuple_decodes_with_host_order_ports() {
        let mut raw = RawTuple {
            family: AF_INET,
            protocol: 17,
            sport: 40000,
            dport: 53,
            ..Default::default()
        };
        raw.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        raw.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let tuple = raw.decode().unwrap();
        assert_eq!(tuple.protocol, L4Protocol::Udp);
        assert_eq!(tuple.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(tuple.dst, "10.0.0.2:53".parse().unwrap());
    }

    #[test]
    fn tuple_without_family_is_none() {
        assert_eq!(RawTuple::default().decode(), None);
    }
}
