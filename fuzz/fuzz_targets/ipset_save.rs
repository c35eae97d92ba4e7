//! Any text: `ipset save` parsing returns sets or an error naming a line, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = netstack::ipset::IpSets::parse(text) {
            assert!(e.line >= 1);
        }
    }
});
