//! What the CLI's lab tests share: `netsleuth diagnose --lab` on a probe's flow, read back as the
//! diagnosis it printed.

use std::process::Command;

use lab::ProbeRequest;
use model::diagnosis::Diagnosis;
use model::finding::Level;

/// What `netsleuth diagnose --lab -o json` said about one flow.
pub struct LabDiagnosis {
    pub status: Option<i32>,
    /// The report; `None` when diagnose refused the question or failed before writing one.
    pub report: Option<Diagnosis>,
    /// The last line of stderr: the error, when there is one.
    pub error: String,
}

impl LabDiagnosis {
    /// The distinct codes of error-level (and worse) findings, sorted.
    pub fn error_codes(&self) -> Vec<String> {
        let mut codes: Vec<String> = self
            .report
            .iter()
            .flat_map(|d| &d.findings)
            .filter(|f| f.level >= Level::Error)
            .map(|f| f.code.to_string())
            .collect();
        codes.sort();
        codes.dedup();
        codes
    }
}

/// `netsleuth diagnose --lab LAB` on the probe's flow.
pub fn diagnose_lab(lab: &str, probe: &ProbeRequest) -> LabDiagnosis {
    let out = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(["diagnose", "--lab", lab, "-s", &probe.src, "-d", &probe.dst])
        .args(["-p", &probe.port.to_string()])
        .args(["--protocol", &probe.protocol.to_string(), "-o", "json"])
        .output()
        .expect("run netsleuth diagnose");
    let report = (!out.stdout.is_empty())
        .then(|| serde_json::from_slice(&out.stdout).expect("diagnose -o json writes a diagnosis"));
    LabDiagnosis {
        status: out.status.code(),
        report,
        error: String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The pod listener the lab runs: this crate's `netsleuth lab serve`.
pub fn listener() -> Vec<String> {
    vec![
        env!("CARGO_BIN_EXE_netsleuth").into(),
        "lab".into(),
        "serve".into(),
    ]
}
