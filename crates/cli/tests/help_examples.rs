//! The example command in `netsleuth diagnose --help` must run as printed (from the repository
//! root, where `examples/` is) and show what the example is about, so the help never points at
//! a snapshot that does not exist.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn diagnose_help_example_runs_on_a_real_example_snapshot() {
    let help = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(["diagnose", "--help"])
        .output()
        .expect("run netsleuth");
    let help = String::from_utf8_lossy(&help.stdout);
    // clap wraps long lines: the example is the rest of its paragraph.
    let example: String = help
        .split("\n\n")
        .find_map(|paragraph| paragraph.trim_start().strip_prefix("Example: "))
        .unwrap_or_else(|| panic!("no example in\n{help}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let args: Vec<&str> = example
        .strip_prefix("netsleuth ")
        .unwrap_or_else(|| panic!("example does not start with netsleuth: {example}"))
        .split(' ')
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(&args)
        .current_dir(&root)
        .output()
        .expect("run the example");
    let report = String::from_utf8_lossy(&out.stdout);
    // The example is a NetworkPolicy denial: exit 1 (blocked) with the policy named.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{example}\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("verdict: BLOCKED"), "{report}");
    assert!(report.contains("policy.ingress_denied"), "{report}");
}
