//! Reading and writing snapshots as bytes: JSON, optionally zstd-compressed (detected by magic).
//!
//! No file system access here; callers pass bytes and a name to cite in errors.

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::snapshot::{Snapshot, FORMAT, VERSION};

/// zstd frame magic number, little endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why a snapshot could not be read. Every variant names the source and, where it can, the line
/// and the field path.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("{source_name}: not a valid zstd stream: {message}")]
    Decompress {
        source_name: String,
        message: String,
    },
    #[error("{source_name}:{line}:{column}: field `{path}`: {message}")]
    Json {
        source_name: String,
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    #[error("{source_name}: field `format` is {found:?}, expected {FORMAT:?}")]
    WrongFormat { source_name: String, found: String },
    #[error("{source_name}: snapshot version {found} is newer than this build understands ({VERSION}); upgrade netsleuth")]
    UnsupportedVersion { source_name: String, found: u32 },
    #[error("{source_name}: cannot encode snapshot: {message}")]
    Encode {
        source_name: String,
        message: String,
    },
}

/// Parse JSON into `T`, reporting line, column and the field path on error.
pub fn from_json_slice<T: DeserializeOwned>(
    source_name: &str,
    bytes: &[u8],
) -> Result<T, SnapshotError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        SnapshotError::Json {
            source_name: source_name.to_string(),
            line: inner.line(),
            column: inner.column(),
            path,
            message: inner.to_string(),
        }
    })
}

impl Snapshot {
    /// Decode a snapshot from JSON or zstd-compressed JSON and check its format and version.
    pub fn from_bytes(source_name: &str, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let decompressed;
        let json = if bytes.starts_with(&ZSTD_MAGIC) {
            decompressed = zstd::decode_all(bytes).map_err(|e| SnapshotError::Decompress {
                source_name: source_name.to_string(),
                message: e.to_string(),
            })?;
            &decompressed[..]
        } else {
            bytes
        };
        let snapshot: Snapshot = from_json_slice(source_name, json)?;
        if snapshot.format != FORMAT {
            return Err(SnapshotError::WrongFormat {
                source_name: source_name.to_string(),
                found: snapshot.format,
            });
        }
        if snapshot.version > VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                source_name: source_name.to_string(),
                found: snapshot.version,
            });
        }
        Ok(snapshot)
    }

    /// Encode as pretty JSON, or zstd-compressed JSON when `compress` is set.
    pub fn to_bytes(&self, compress: bool) -> Result<Vec<u8>, SnapshotError> {
        let encode_err = |message: String| SnapshotError::Encode {
            source_name: self.source.name.clone(),
            message,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| encode_err(e.to_string()))?;
        if compress {
            zstd::encode_all(&json[..], 3).map_err(|e| encode_err(e.to_string()))
        } else {
            Ok(json)
        }
    }
}
