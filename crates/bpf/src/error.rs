//! Why a probe could not load or be read. Each variant names what is missing and how to get it,
//! because the agent shows these verbatim in `/status` for a `Failed` probe.

use std::path::PathBuf;

use crate::btf::BtfError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "probe {probe}: loading eBPF programs needs root or CAP_BPF+CAP_PERFMON \
         (effective uid {uid}, effective capabilities {capabilities:#x})"
    )]
    NotPermitted {
        probe: &'static str,
        uid: u32,
        capabilities: u64,
    },

    #[error(
        "probe {probe}: kernel BTF {path} is missing ({source}); the probes need a kernel built \
         with CONFIG_DEBUG_INFO_BTF=y, or point btf_path at a vmlinux BTF file for this kernel"
    )]
    BtfMissing {
        probe: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("probe {probe}: kernel BTF {path} is unusable: {source}")]
    BtfInvalid {
        probe: &'static str,
        path: PathBuf,
        source: BtfError,
    },

    #[error("probe {probe}: kernel BTF {path} cannot be used by the loader: {reason}")]
    BtfRejected {
        probe: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "probe {probe}: tracepoint {tracepoint} does not exist on this kernel \
         (no btf_trace_{tracepoint} type in {btf_path})"
    )]
    TracepointMissing {
        probe: &'static str,
        tracepoint: &'static str,
        btf_path: PathBuf,
    },

    #[error(
        "probe {probe}: the verifier rejected program {program} ({source}); verifier log:\n{log}"
    )]
    VerifierRejected {
        probe: &'static str,
        program: &'static str,
        source: std::io::Error,
        log: String,
    },

    #[error("probe {probe}: attaching {program} to tracepoint {tracepoint}: {source}")]
    Attach {
        probe: &'static str,
        program: &'static str,
        tracepoint: &'static str,
        source: aya::programs::ProgramError,
    },

    #[error("probe {probe}: creating maps or relocating the eBPF object: {source}")]
    Object {
        probe: &'static str,
        source: aya::EbpfError,
    },

    #[error("probe {probe}: program {program} is missing from the eBPF object (build mismatch)")]
    ProgramMissing {
        probe: &'static str,
        program: &'static str,
    },

    #[error("probe {probe}: map {map} is missing from the eBPF object (build mismatch)")]
    MapMissing {
        probe: &'static str,
        map: &'static str,
    },

    #[error("probe {probe}: reading map {map}: {source}")]
    Map {
        probe: &'static str,
        map: &'static str,
        source: aya::maps::MapError,
    },

    #[error("probe {probe}: option {option} = {value} is invalid: {reason}")]
    InvalidOption {
        probe: &'static str,
        option: &'static str,
        value: String,
        reason: &'static str,
    },
}
