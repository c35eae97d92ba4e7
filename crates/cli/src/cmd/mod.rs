//! One module per subcommand: its clap arguments and the glue that calls the libraries.

pub mod agent;
pub mod bench;
pub mod bench_agent;
pub mod bench_lab;
pub mod collect;
pub mod demo;
pub mod diagnose;
pub mod lab;
pub mod netfilter;

use std::process::ExitCode;

/// Exit status per the CLI contract (SPEC §2).
pub mod exit {
    /// Diagnosis complete, delivered, no error-level finding.
    pub const OK: u8 = 0;
    /// Complete, and the packet is blocked or an error-level finding exists.
    pub const BLOCKED: u8 = 1;
    /// Bad usage or bad input.
    pub const BAD_INPUT: u8 = 2;
    /// Diagnosis incomplete: state missing or unreadable.
    pub const INCOMPLETE: u8 = 3;
}

/// An error that already knows its exit status (bad input → 2, incomplete → 3).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub code: u8,
    pub message: String,
}

impl ExitError {
    pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(ExitError {
            code: exit::BAD_INPUT,
            message: message.into(),
        })
    }
}

/// Errors are bad input (2) unless they say otherwise.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<ExitError>() {
        Some(e) => ExitCode::from(e.code),
        None => ExitCode::from(exit::BAD_INPUT),
    }
}
