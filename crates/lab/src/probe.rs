//! Real traffic from a lab netns: the ground truth a diagnosis is checked against.
//!
//! TCP connect, UDP request/echo, ICMP echo (via `ping`), each from a thread inside the source
//! netns, reported as reachable or with the error the kernel gave ("connection refused",
//! "timed out", "no route to host", …).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use netstack::packet::Protocol;

use crate::LabError;

/// What to send: endpoints as the CLI accepts them (IP, `ns/pod`, `node/NAME`,
/// `service/ns/name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    pub src: String,
    pub dst: String,
    /// Ignored for ICMP.
    pub port: u16,
    pub protocol: Protocol,
    /// TCP: bytes to send after connecting that must come back from the echo listener (0:
    /// connecting is enough). UDP: the datagram size (0: a short datagram). Full-size packets
    /// find MTU faults a handshake never sees.
    pub payload: usize,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub reachable: bool,
    /// "connected", "echo received", or the observed error.
    pub detail: String,
    /// The netns the traffic left from and the address it went to.
    pub src_netns: String,
    pub dst_ip: Ipv4Addr,
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.reachable {
            "reachable"
        } else {
            "NOT reachable"
        };
        write!(f, "{verdict}: {}", self.detail)
    }
}

/// Sends one probe from `netns` to `dst` and waits at most `timeout` for an answer.
pub fn send_probe(
    netns: &str,
    dst: Ipv4Addr,
    request: &ProbeRequest,
    timeout: Duration,
) -> Result<(bool, String), LabError> {
    let port = request.port;
    match request.protocol {
        Protocol::Tcp => crate::sys::in_netns(netns, || {
            let stream = match TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout) {
                Ok(stream) => stream,
                Err(e) => return Ok((false, describe(&e))),
            };
            if request.payload == 0 {
                return Ok((true, "connected".to_string()));
            }
            Ok(match echo_round_trip(stream, request.payload, timeout) {
                Ok(()) => (true, format!("connected, {} bytes echoed", request.payload)),
                Err(e) => (
                    false,
                    format!(
                        "connected, but the {}-byte echo failed: {}",
                        request.payload,
                        describe(&e)
                    ),
                ),
            })
        }),
        Protocol::Udp => crate::sys::in_netns(netns, || {
            let io = |e| LabError::io("UDP probe socket", e);
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(io)?;
            socket.set_read_timeout(Some(timeout)).map_err(io)?;
            let payload: Vec<u8> = if request.payload == 0 {
                b"netsleuth-lab-probe".to_vec()
            } else {
                (0..request.payload).map(|i| (i % 251) as u8).collect()
            };
            let result = socket
                .connect((dst, port))
                .and_then(|()| socket.send(&payload))
                .and_then(|_| {
                    let mut buffer = vec![0u8; payload.len() + 1];
                    socket.recv(&mut buffer).map(|n| buffer[..n] == payload[..])
                });
            Ok(match result {
                Ok(true) => (true, "echo received".to_string()),
                Ok(false) => (false, "unexpected reply".to_string()),
                Err(e) => (false, describe(&e)),
            })
        }),
        Protocol::Sctp => Err(LabError::Invalid(
            "the lab sends tcp, udp or icmp probes, not sctp".into(),
        )),
        Protocol::Icmp => {
            let wait = timeout.as_secs_f64().max(0.2).to_string();
            let output = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    netns,
                    "ping",
                    "-n",
                    "-c",
                    "1",
                    "-W",
                    &wait,
                    &dst.to_string(),
                ])
                .output()
                .map_err(|e| LabError::io("running ping", e))?;
            let text = String::from_utf8_lossy(&output.stdout);
            // ping exits 1 both for silence and for ICMP errors; its output tells which.
            Ok(if output.status.success() {
                (true, "echo reply received".to_string())
            } else if text.contains("nreachable") {
                (false, "no route to host".to_string())
            } else {
                (false, "timed out".to_string())
            })
        }
    }
}

/// Sends `size` bytes and reads them all back.
fn echo_round_trip(mut stream: TcpStream, size: usize, timeout: Duration) -> std::io::Result<()> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    stream.write_all(&payload)?;
    let mut echoed = vec![0u8; size];
    stream.read_exact(&mut echoed)?;
    if echoed == payload {
        Ok(())
    } else {
        Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "echo differs from what was sent",
        ))
    }
}

fn describe(error: &std::io::Error) -> String {
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".into(),
        ErrorKind::HostUnreachable => "no route to host".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::PermissionDenied => {
            "operation not permitted (dropped by a local firewall rule)".into()
        }
        _ => error.to_string(),
    }
}
