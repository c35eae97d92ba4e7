//! The lab's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A Kubernetes YAML document could not be used.
    #[error("{file}: document {document}{}: {message}", field.as_deref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Objects {
        file: String,
        document: usize,
        field: Option<String>,
        message: String,
    },
    /// An external command (`ip`, `iptables-restore`, …) failed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lab {name:?} does not exist (no state in {})", dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("lab {0:?} already exists; run `netsleuth lab down --name {0}` first")]
    AlreadyExists(String),
    /// A lab or object setting that cannot be built (bad name, unsupported mode, exhausted range).
    #[error("{0}")]
    Invalid(String),
    /// A probe or exec endpoint that names nothing in the lab.
    #[error("{0:?} names nothing in this lab (expected an IP, namespace/pod, node/NAME or service/namespace/name)")]
    UnknownEndpoint(String),
    #[error("lab state {}: {message}", path.display())]
    State { path: PathBuf, message: String },
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> LabError {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}
