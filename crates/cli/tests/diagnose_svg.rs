//! `netsleuth diagnose … -o svg --output FILE` on a recorded example writes an SVG report and
//! keeps the exit status contract (1: blocked).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Removes the directory when the test ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn diagnose_writes_an_svg_report_to_the_output_file() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("netsleuth-cli-svg-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let report = dir.0.join("report.svg");
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/flannel-host-gw/forward-drop-hand-added.json");
    let out = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(["diagnose", "--snapshot"])
        .arg(&example)
        .args([
            "-s",
            "default/web-1-1",
            "-d",
            "default/web-2-1",
            "-p",
            "8080",
            "-o",
            "svg",
            "--output",
        ])
        .arg(&report)
        .output()
        .expect("run netsleuth");
    assert_eq!(
        out.status.code(),
        Some(1),
        "blocked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the report goes to the file only");
    let svg = std::fs::read_to_string(&report).expect("report written");
    assert!(svg.starts_with("<?xml"));
    assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains("data-code=\"netfilter.drop\""));
    assert!(svg.trim_end().ends_with("</svg>"));
}
