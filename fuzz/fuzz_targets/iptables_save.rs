//! Any text: the parser returns a ruleset or an error, never panics; a ruleset prints back to
//! text that parses to the same rules.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rules) = netstack::iptables::parse(text) {
        let printed = rules.to_string();
        let again = netstack::iptables::parse(&printed).expect("printed ruleset parses");
        assert_eq!(rules.rule_count(), again.rule_count());
    }
});
