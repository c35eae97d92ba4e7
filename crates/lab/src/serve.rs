//! The pod listener: TCP and UDP echo on the ports a pod declares.
//!
//! Run as `netsleuth lab serve --port 8080/tcp …` inside a pod's netns (the lab starts it detached
//! when the pod comes up). It binds every port first, then prints [`READY_LINE`] so the lab knows
//! probes will find it; after that it never writes to stdout again.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::str::FromStr;

use crate::LabError;

/// Printed once every socket is bound.
pub const READY_LINE: &str = "netsleuth-lab-serve ready";

/// Transport protocol of a listener or probe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// One `PORT/PROTO` a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenPort {
    pub port: u16,
    pub transport: Transport,
}

impl std::fmt::Display for ListenPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        write!(f, "{}/{proto}", self.port)
    }
}

impl FromStr for ListenPort {
    type Err = String;
    fn from_str(s: &str) -> Result<ListenPort, String> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let port = port
            .parse()
            .map_err(|_| format!("{s:?}: port must be a number 1-65535"))?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            other => return Err(format!("{s:?}: protocol {other:?} is neither tcp nor udp")),
        };
        Ok(ListenPort { port, transport })
    }
}

/// Binds all `ports` on 0.0.0.0, announces readiness on stdout and echoes forever.
pub fn serve(ports: &[ListenPort]) -> Result<(), LabError> {
    let mut workers = Vec::new();
    for port in ports {
        let address = (Ipv4Addr::UNSPECIFIED, port.port);
        let bind_error = |e| LabError::io(format!("binding {port}"), e);
        match port.transport {
            Transport::Tcp => {
                let listener = TcpListener::bind(address).map_err(bind_error)?;
                workers.push(std::thread::spawn(move || echo_tcp(listener)));
            }
            Transport::Udp => {
                let socket = UdpSocket::bind(address).map_err(bind_error)?;
                workers.push(std::thread::spawn(move || echo_udp(socket)));
            }
        }
    }
    println!("{READY_LINE}");
    // The reader closes the pipe after the ready line; a failed flush is therefore expected.
    let _ = std::io::stdout().flush();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

fn echo_tcp(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn echo_udp(socket: UdpSocket) {
    let mut buffer = [0u8; 65536];
    while let Ok((n, peer)) = socket.recv_from(&mut buffer) {
        let _ = socket.send_to(&buffer[..n], peer);
    }
}
