//! Any text: `/proc/net/ip_vs` and `/proc/net/ip_vs_stats` parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = netstack::ipvs::IpvsTable::parse(text);
        let _ = netstack::ipvs::IpvsStats::parse(text);
    }
});
