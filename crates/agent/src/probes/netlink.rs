//! A minimal blocking netlink dump: open a socket (in the calling thread's netns), send one
//! request with `NLM_F_REQUEST|NLM_F_DUMP`, and return every answer message's payload until
//! `NLMSG_DONE`. Used by `qdisc` (NETLINK_ROUTE) and `tcpsummary` (NETLINK_SOCK_DIAG); the
//! callers parse the payloads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Dump request of `message_type` with `body` (the family header, already encoded).
pub(crate) fn dump(protocol: i32, message_type: u16, body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let len = NLMSG_HDRLEN + body.len();
    let mut request = Vec::with_capacity(len);
    request.extend_from_slice(&(len as u32).to_ne_bytes());
    request.extend_from_slice(&message_type.to_ne_bytes());
    request.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel assigns
    request.extend_from_slice(body);
    // SAFETY: the kernel's netlink address (all zero but the family) and a valid buffer.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }

    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reading into our own buffer of the given length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let mut chunk = &buf[..n as usize];
        while chunk.len() >= NLMSG_HDRLEN {
            let msg_len = u32::from_ne_bytes(chunk[0..4].try_into().expect("4 bytes")) as usize;
            let msg_type = u16::from_ne_bytes(chunk[4..6].try_into().expect("2 bytes"));
            if msg_len < NLMSG_HDRLEN || msg_len > chunk.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            let payload = &chunk[NLMSG_HDRLEN..msg_len];
            match msg_type {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = payload
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                        .unwrap_or(0);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    return Ok(out);
                }
                _ => out.push(payload.to_vec()),
            }
            let aligned = (msg_len + 3) & !3;
            chunk = &chunk[aligned.min(chunk.len())..];
        }
    }
}
