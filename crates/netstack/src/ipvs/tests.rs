//! The fixture is recorded text, not a live read: the IPVS kernel module cannot be loaded where
//! these tests run, so `testdata/proc_net_ip_vs` reproduces the kernel's format strings exactly
//! (see testdata/README.md).

use std::net::IpAddr;

use super::*;
use crate::packet::{Packet, Protocol};

pub(super) const IP_VS: &str = include_str!("../../testdata/proc_net_ip_vs");
const IP_VS_STATS: &str = include_str!("../../testdata/proc_net_ip_vs_stats");

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn table() -> IpvsTable {
    IpvsTable::parse(IP_VS).expect("recorded /proc/net/ip_vs parses")
}

#[test]
fn parses_header_services_and_real_servers() {
    let table = table();
    assert_eq!(table.version.as_deref(), Some("1.2.1"));
    assert_eq!(table.conn_table_size, Some(4096));
    assert_eq!(table.services.len(), 7);
    let api = table
        .service(&IpvsProtocol::Tcp, ip("10.96.0.1"), 443)
        .expect("API service");
    assert_eq!(api.scheduler, "rr");
    assert_eq!(api.line, 4);
    assert_eq!(
        api.real_servers,
        vec![RealServer {
            address: ip("172.18.0.2"),
            port: 6443,
            forward: ForwardMethod::Masq,
            weight: 1,
            active_conns: 3,
            inactive_conns: 0,
            line: 5,
        }]
    );
}

#[test]
fn distinguishes_protocols_flags_and_persistence() {
    let table = table();
    let dns_tcp = table
        .service(&IpvsProtocol::Tcp, ip("10.96.0.10"), 53)
        .expect("dns tcp");
    let dns_udp = table
        .service(&IpvsProtocol::Udp, ip("10.96.0.10"), 53)
        .expect("dns udp");
    assert!(!dns_tcp.one_packet);
    assert!(dns_udp.one_packet);
    assert_eq!(dns_udp.real_servers[0].inactive_conns, 12);
    let sticky = table
        .service(&IpvsProtocol::Tcp, ip("10.96.45.7"), 80)
        .expect("sticky");
    assert_eq!(
        sticky.persistence,
        Some(Persistence {
            timeout: 10800,
            netmask: 0xFFFF_FFFF
        })
    );
    assert!(table
        .service(&IpvsProtocol::Udp, ip("10.96.0.1"), 443)
        .is_none());
}

#[test]
fn parses_ipv6_and_fwmark_services() {
    let table = table();
    let v6 = table
        .service(&IpvsProtocol::Tcp, ip("fd00:10:96::a"), 80)
        .expect("v6 service");
    assert_eq!(v6.real_servers[0].address, ip("fd00:10:244::5"));
    assert_eq!(v6.real_servers[1].forward, ForwardMethod::Local);
    let fwm = table.fwmark_service(1).expect("fwmark service");
    assert_eq!(fwm.scheduler, "wrr");
    assert_eq!(fwm.real_servers[0].forward, ForwardMethod::Route);
    assert_eq!(fwm.real_servers[1].forward, ForwardMethod::Tunnel);
}

#[test]
fn packet_lookup_prefers_fwmark_then_destination() {
    let table = table();
    let mut packet = Packet::new(ip("10.244.0.9"), ip("10.96.0.10"), Protocol::Udp, 40000, 53);
    let found = table.service_for(&packet).expect("dns udp");
    assert_eq!(
        found.key,
        ServiceKey::Address {
            protocol: IpvsProtocol::Udp,
            address: ip("10.96.0.10"),
            port: 53
        }
    );
    packet.mark = 1;
    assert_eq!(
        table.service_for(&packet).map(|s| &s.key),
        Some(&ServiceKey::Fwmark { mark: 1 })
    );
    packet.mark = 7;
    assert_eq!(table.service_for(&packet).map(|s| s.line), Some(found.line));
}

#[test]
fn weighted_schedule_splits_by_weight_and_skips_quiesced() {
    let table = table();
    let sticky = table
        .service(&IpvsProtocol::Tcp, ip("10.96.45.7"), 80)
        .expect("sticky");
    let schedule = sticky.schedule();
    let shares: Vec<(IpAddr, f64)> = schedule
        .branches
        .iter()
        .map(|b| (b.server.address, b.probability))
        .collect();
    assert_eq!(
        shares,
        vec![(ip("10.244.1.5"), 0.75), (ip("10.244.2.6"), 0.25)]
    );
    assert_eq!(schedule.quiesced.len(), 1);
    assert_eq!(schedule.quiesced[0].address, ip("10.244.2.7"));
}

#[test]
fn round_robin_splits_evenly_and_empty_service_schedules_nothing() {
    let table = table();
    let dns = table
        .service(&IpvsProtocol::Tcp, ip("10.96.0.10"), 53)
        .expect("dns");
    let probabilities: Vec<f64> = dns
        .schedule()
        .branches
        .iter()
        .map(|b| b.probability)
        .collect();
    assert_eq!(probabilities, vec![0.5, 0.5]);
    let empty = table
        .service(&IpvsProtocol::Tcp, ip("10.96.99.9"), 8443)
        .expect("no endpoints");
    assert!(empty.schedule().is_empty());
}

#[test]
fn bad_text_names_line_and_field() {
    let cases = [
        ("TCP  0A60000G:0050 rr\n", 1, "address"),
        ("TCP  0A600001:50 rr\n", 1, "port"),
        ("TCP  0A600001:0050\n", 1, "scheduler"),
        ("TCP  0A600001:0050 rr bogus\n", 1, "flags"),
        (
            "TCP  0A600001:0050 rr persistent x FFFFFFFF\n",
            1,
            "persistent timeout",
        ),
        (
            "  -> 0AF40105:1F90      Masq    1      0          0\n",
            1,
            "service",
        ),
        (
            "TCP  0A600001:0050 rr\n  -> 0AF40105:1F90      Teleport 1 0 0\n",
            2,
            "forward",
        ),
        (
            "TCP  0A600001:0050 rr\n  -> 0AF40105:1F90      Masq    one 0 0\n",
            2,
            "weight",
        ),
        (
            "TCP  0A600001:0050 rr\n\n  -> 0AF40105:1F90 Masq 1 0\n",
            3,
            "real server",
        ),
        ("TCP  [fd00::zz]:0050 rr\n", 1, "address"),
        ("FWM  nothex wrr\n", 1, "fwmark"),
        ("IP Virtual Server version 1.2.1\n", 1, "header"),
    ];
    for (text, line, field) in cases {
        let error = IpvsTable::parse(text).expect_err(text);
        assert_eq!(
            (error.line, error.field),
            (line, field),
            "{text:?}: {error}"
        );
        assert!(error
            .to_string()
            .starts_with(&format!("/proc/net/ip_vs:{line}: {field}:")));
    }
}

#[test]
fn parses_stats() {
    let stats = IpvsStats::parse(IP_VS_STATS).expect("recorded ip_vs_stats parses");
    assert_eq!(stats.totals.conns, 500);
    assert_eq!(stats.totals.in_packets, 10000);
    assert_eq!(stats.totals.out_bytes, 3_000_000);
    assert_eq!(stats.rates.conns, 2);
    assert_eq!(stats.rates.out_bytes, 8000);
}

#[test]
fn bad_stats_name_line_and_field() {
    let bad_number = IP_VS_STATS.replace("2DC6C0", "2DC6CZ");
    let error = IpvsStats::parse(&bad_number).expect_err("bad hex");
    assert_eq!((error.line, error.field), (3, "out_bytes"));
    let truncated: String = IP_VS_STATS.lines().take(3).collect::<Vec<_>>().join("\n");
    let error = IpvsStats::parse(&truncated).expect_err("no rates row");
    assert_eq!(error.field, "rows");
}

mod generated {
    //! Random tables printed with the kernel's own format strings must parse back to what was
    //! printed; arbitrary text must give an error, never a panic.

    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::super::*;
    use super::IP_VS;

    fn forward_name(forward: ForwardMethod) -> &'static str {
        match forward {
            ForwardMethod::Masq => "Masq",
            ForwardMethod::Local => "Local",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::Route => "Route",
        }
    }

    /// `%08X:%04X` for IPv4, `[%pI6]:%04X` (every group, zero-padded) for IPv6.
    fn endpoint(address: IpAddr, port: u16) -> String {
        match address {
            IpAddr::V4(a) => format!("{:08X}:{port:04X}", u32::from(a)),
            IpAddr::V6(a) => {
                let groups: Vec<String> = a.segments().iter().map(|g| format!("{g:04x}")).collect();
                format!("[{}]:{port:04X}", groups.join(":"))
            }
        }
    }

    /// `ip_vs_info_seq_show()`.
    fn kernel_text(services: &[VirtualService]) -> String {
        let mut out = String::from(
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
        );
        for service in services {
            let ops = if service.one_packet { "ops " } else { "" };
            match &service.key {
                ServiceKey::Address {
                    protocol,
                    address: address @ IpAddr::V4(_),
                    port,
                } => out.push_str(&format!(
                    "{protocol}  {} {} {ops} ",
                    endpoint(*address, *port),
                    service.scheduler
                )),
                // the IPv6 format has no `ops` field
                ServiceKey::Address {
                    protocol,
                    address,
                    port,
                } => out.push_str(&format!(
                    "{protocol}  {} {} ",
                    endpoint(*address, *port),
                    service.scheduler
                )),
                ServiceKey::Fwmark { mark } => {
                    out.push_str(&format!("FWM  {mark:08X} {} {ops}", service.scheduler))
                }
            }
            match service.persistence {
                Some(p) => out.push_str(&format!("persistent {} {:08X}\n", p.timeout, p.netmask)),
                None => out.push('\n'),
            }
            for server in &service.real_servers {
                out.push_str(&format!(
                    "  -> {}      {:<7} {:<6} {:<10} {:<10}\n",
                    endpoint(server.address, server.port),
                    forward_name(server.forward),
                    server.weight,
                    server.active_conns,
                    server.inactive_conns
                ));
            }
        }
        out
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    fn real_server() -> impl Strategy<Value = RealServer> {
        (
            address(),
            any::<u16>(),
            prop_oneof![
                Just(ForwardMethod::Masq),
                Just(ForwardMethod::Local),
                Just(ForwardMethod::Tunnel),
                Just(ForwardMethod::Route)
            ],
            0i32..1000,
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(address, port, forward, weight, active, inactive)| RealServer {
                    address,
                    port,
                    forward,
                    weight,
                    active_conns: active,
                    inactive_conns: inactive,
                    line: 0,
                },
            )
    }

    fn service() -> impl Strategy<Value = VirtualService> {
        let key = prop_oneof![
            (
                prop_oneof![
                    Just(IpvsProtocol::Tcp),
                    Just(IpvsProtocol::Udp),
                    Just(IpvsProtocol::Sctp)
                ],
                address(),
                any::<u16>()
            )
                .prop_map(|(protocol, address, port)| ServiceKey::Address {
                    protocol,
                    address,
                    port
                }),
            any::<u32>().prop_map(|mark| ServiceKey::Fwmark { mark }),
        ];
        (
            key,
            prop_oneof![Just("rr"), Just("wrr"), Just("lc"), Just("sh"), Just("mh")],
            any::<bool>(),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::collection::vec(real_server(), 0..4),
        )
            .prop_map(|(key, scheduler, one_packet, persistence, real_servers)| {
                VirtualService {
                    // IPv6 services have no `ops` field to print it in
                    one_packet: one_packet
                        && !matches!(
                            key,
                            ServiceKey::Address {
                                address: IpAddr::V6(_),
                                ..
                            }
                        ),
                    key,
                    scheduler: scheduler.to_string(),
                    persistence: persistence
                        .map(|(timeout, netmask)| Persistence { timeout, netmask }),
                    real_servers,
                    line: 0,
                }
            })
    }

    proptest! {
        #[test]
        fn kernel_formatted_tables_round_trip(services in proptest::collection::vec(service(), 0..5)) {
            let parsed = IpvsTable::parse(&kernel_text(&services)).expect("kernel text parses");
            let strip_lines = |mut s: VirtualService| {
                s.line = 0;
                s.real_servers.iter_mut().for_each(|r| r.line = 0);
                s
            };
            let parsed: Vec<VirtualService> = parsed.services.into_iter().map(strip_lines).collect();
            prop_assert_eq!(parsed, services);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
            let _ = IpvsTable::parse(&text);
            let _ = IpvsStats::parse(&text);
        }

        #[test]
        fn corrupted_fixture_never_panics(position in 0usize..2000, byte in any::<u8>()) {
            let mut bytes = IP_VS.as_bytes().to_vec();
            let position = position % bytes.len();
            bytes[position] = byte;
            let _ = IpvsTable::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
