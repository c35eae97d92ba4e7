//! Why a probe could not load or be read. Each variant names what is missing and how to get it,
//! because the agent shows these verbatim in `/status` for a `Failed` probe.

use std::path::PathBuf;

use crate::btf::BtfError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "loading eBPF programs needs root or CAP_BPF+CAP_PERFMON \
         (effective uid {uid}, effective capabilities {capabilities:#x})"
    )]
    NotPermitted {
        probe: &'static str,
        uid: u32,
        capabilities: u64,
    },

    #[error(
        "kernel BTF {path} is missing ({source}); the probes need a kernel built \
         with CONFIG_DEBUG_INFO_BTF=y, or point btf_path at a vmlinux BTF file for this kernel"
    )]
    BtfMissing {
        probe: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("kernel BTF {path} is unusable: {source}")]
    BtfInvalid {
        probe: &'static str,
        path: PathBuf,
        source: BtfError,
    },

    #[error("kernel BTF {path} cannot be used by the loader: {reason}")]
    BtfRejected {
        probe: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "tracepoint {tracepoint} does not exist on this kernel \
         (no btf_trace_{tracepoint} type in {btf_path})"
    )]
    TracepointMissing {
        probe: &'static str,
        tracepoint: &'static str,
        btf_path: PathBuf,
    },

    #[error("the verifier rejected program {program} ({source}); verifier log:\n{log}")]
    VerifierRejected {
        probe: &'static str,
        program: &'static str,
        source: std::io::Error,
        log: String,
    },

    #[error("attaching {program} to tracepoint {tracepoint}: {source}")]
    Attach {
        probe: &'static str,
        program: &'static str,
        tracepoint: &'static str,
        source: Box<aya::programs::ProgramError>,
    },

    #[error("creating maps or relocating the eBPF object: {source}")]
    Object {
        probe: &'static str,
        source: Box<aya::EbpfError>,
    },

    #[error("program {program} is missing from the eBPF object (build mismatch)")]
    ProgramMissing {
        probe: &'static str,
        program: &'static str,
    },

    #[error("map {map} is missing from the eBPF object (build mismatch)")]
    MapMissing {
        probe: &'static str,
        map: &'static str,
    },

    #[error("reading map {map}: {source}")]
    Map {
        probe: &'static str,
        map: &'static str,
        source: aya::maps::MapError,
    },

    #[error("option {option} = {value} is invalid: {reason}")]
    InvalidOption {
        probe: &'static str,
        option: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl Error {
    /// The probe this error belongs to.
    pub fn probe(&self) -> &'static str {
        match self {
            Error::NotPermitted { probe, .. }
            | Error::BtfMissing { probe, .. }
            | Error::BtfInvalid { probe, .. }
            | Error::BtfRejected { probe, .. }
            | Error::TracepointMissing { probe, .. }
            | Error::VerifierRejected { probe, .. }
            | Error::Attach { probe, .. }
            | Error::Object { probe, .. }
            | Error::ProgramMissing { probe, .. }
            | Error::MapMissing { probe, .. }
            | Error::Map { probe, .. }
            | Error::InvalidOption { probe, .. } => probe,
        }
    }

    /// Whether the host lacks something the probe needs (privileges, BTF, a tracepoint, a
    /// verifier that accepts the program), as opposed to a bad option or a build mismatch.
    pub fn is_unsupported_here(&self) -> bool {
        matches!(
            self,
            Error::NotPermitted { .. }
                | Error::BtfMissing { .. }
                | Error::BtfInvalid { .. }
                | Error::BtfRejected { .. }
                | Error::TracepointMissing { .. }
                | Error::VerifierRejected { .. }
                | Error::Attach { .. }
        )
    }
}
