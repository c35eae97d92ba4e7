//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to list the names of
//! an enum (the drop reasons of `enum skb_drop_reason`, the reset reasons of `enum
//! sk_rst_reason`) and to check that a BTF-typed tracepoint (`btf_trace_<name>`) exists.
//!
//! Why not aya-obj's parser: it does not expose enum members. The format is documented in the
//! kernel's Documentation/bpf/btf.rst; only native byte order is accepted (the kernel always
//! writes its own BTF in native order). Nothing here loads into the kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not BTF (magic {magic:#06x} at offset 0, expected 0xeb9f in native byte order)"
    )]
    BadMagic { path: PathBuf, magic: u16 },
    #[error("{path}: truncated at byte {offset} while reading {what}")]
    Truncated {
        path: PathBuf,
        offset: usize,
        what: &'static str,
    },
    #[error("{path}: type #{type_id} at byte {offset} has unknown kind {kind}")]
    UnknownKind {
        path: PathBuf,
        type_id: u32,
        offset: usize,
        kind: u32,
    },
    #[error("{path}: enum {name} not found")]
    EnumNotFound { path: PathBuf, name: String },
}

/// The parsed type section of one BTF file, kept as raw bytes plus the offset of each type.
pub struct KernelBtf {
    path: PathBuf,
    data: Vec<u8>,
    strings: (usize, usize),
    /// Byte offset of each type record; index 0 is type id 1.
    type_offsets: Vec<usize>,
}

/// Enumerator names by value, with the common prefix (e.g. `SKB_DROP_REASON_`) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnumNames {
    names: BTreeMap<u64, String>,
}

impl EnumNames {
    /// The name of `value`, or `None` for a value this kernel does not define.
    pub fn name(&self, value: u64) -> Option<&str> {
        self.names.get(&value).map(String::as_str)
    }

    /// The value named `name` (prefix removed), for tests and filters.
    pub fn value(&self, name: &str) -> Option<u64> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path.to_owned(), data)
    }

    fn parse(path: PathBuf, data: Vec<u8>) -> Result<Self, BtfError> {
        let truncated = |offset, what| BtfError::Truncated {
            path: path.clone(),
            offset,
            what,
        };
        if data.len() < HEADER_LEN {
            return Err(truncated(data.len(), "the header"));
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic { path, magic });
        }
        let word =
            |at: usize| u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let header_len = word(4);
        let (type_off, type_len, str_off, str_len) = (word(8), word(12), word(16), word(20));
        let types_start = header_len + type_off;
        let types_end = types_start + type_len;
        let strings = (header_len + str_off, header_len + str_off + str_len);
        if types_end > data.len() {
            return Err(truncated(data.len(), "the type section"));
        }
        if strings.1 > data.len() {
            return Err(truncated(data.len(), "the string section"));
        }
        let mut type_offsets = Vec::new();
        let mut offset = types_start;
        while offset < types_end {
            if offset + 12 > types_end {
                return Err(truncated(offset, "a type record"));
            }
            let info = word(offset + 4) as u32;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                0 | 2 | 7..=12 | 16 | 18 => 0,
                _ => {
                    let type_id = type_offsets.len() as u32 + 1;
                    return Err(BtfError::UnknownKind {
                        path,
                        type_id,
                        offset,
                        kind,
                    });
                }
            };
            debug_assert!(kind <= KIND_MAX);
            type_offsets.push(offset);
            offset += 12 + extra;
        }
        if offset != types_end {
            return Err(truncated(types_end, "the last type record"));
        }
        Ok(Self {
            path,
            data,
            strings,
            type_offsets,
        })
    }

    fn word(&self, at: usize) -> u32 {
        u32::from_ne_bytes(
            self.data[at..at + 4]
                .try_into()
                .expect("offsets checked at parse"),
        )
    }

    fn string(&self, name_off: u32) -> &str {
        let start = self.strings.0 + name_off as usize;
        if start >= self.strings.1 {
            return "";
        }
        let bytes = &self.data[start..self.strings.1];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    fn kind_and_name(&self, offset: usize) -> (u32, &str) {
        let info = self.word(offset + 4);
        ((info >> 24) & 0x1f, self.string(self.word(offset)))
    }

    /// Whether `tracepoint` can be attached as tp_btf: the kernel emits a `btf_trace_<name>`
    /// typedef for every tracepoint it has.
    pub fn has_tracepoint(&self, tracepoint: &str) -> bool {
        let wanted = format!("btf_trace_{tracepoint}");
        self.type_offsets.iter().any(|&offset| {
            let (kind, name) = self.kind_and_name(offset);
            kind == KIND_TYPEDEF && name == wanted
        })
    }

    /// Names of `enum <name>` (ENUM or ENUM64), with `prefix` removed where present:
    /// `SKB_DROP_REASON_NO_SOCKET` becomes `NO_SOCKET`, while `SKB_CONSUMED` stays as it is.
    pub fn enum_names(&self, name: &str, prefix: &str) -> Result<EnumNames, BtfError> {
        let offset = self
            .type_offsets
            .iter()
            .copied()
            .find(|&offset| {
                let (kind, type_name) = self.kind_and_name(offset);
                (kind == KIND_ENUM || kind == KIND_ENUM64) && type_name == name
            })
            .ok_or_else(|| BtfError::EnumNotFound {
                path: self.path.clone(),
                name: name.to_owned(),
            })?;
        let (kind, _) = self.kind_and_name(offset);
        let vlen = (self.word(offset + 4) & 0xffff) as usize;
        let mut names = BTreeMap::new();
        for i in 0..vlen {
            let (member_name, value) = if kind == KIND_ENUM {
                let at = offset + 12 + i * 8;
                (self.word(at), u64::from(self.word(at + 4)))
            } else {
                let at = offset + 12 + i * 12;
                (
                    self.word(at),
                    u64::from(self.word(at + 4)) | u64::from(self.word(at + 8)) << 32,
                )
            };
            let member = self.string(member_name);
            names.insert(
                value,
                member.strip_prefix(prefix).unwrap_or(member).to_owned(),
            );
        }
        Ok(EnumNames { names })
    }

    #[cfg(test)]
    fn type_count(&self) -> usize {
        self.type_offsets.len()
    }
}

/// Names of a kernel enum for a probe, with the probe's error for a missing or bad BTF file.
pub(crate) fn probe_enum_names(
    probe: &'static str,
    btf_path: &Path,
    enum_name: &str,
    prefix: &str,
) -> Result<EnumNames, crate::Error> {
    if let Err(source) = std::fs::metadata(btf_path) {
        return Err(crate::Error::BtfMissing {
            probe,
            path: btf_path.to_owned(),
            source,
        });
    }
    KernelBtf::load(btf_path)
        .and_then(|btf| btf.enum_names(enum_name, prefix))
        .map_err(|source| crate::Error::BtfInvalid {
            probe,
            path: btf_path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

    #[test]
    fn running_kernel_drop_reasons_have_their_names_without_prefix() {
        let btf = KernelBtf::load(Path::new(KERNEL_BTF)).expect("this kernel has BTF");
        assert!(btf.type_count() > 10_000);
        let reasons = btf
            .enum_names("skb_drop_reason", "SKB_DROP_REASON_")
            .unwrap();
        assert_eq!(reasons.name(0), Some("SKB_NOT_DROPPED_YET"));
        // Values from this kernel's own tracefs format string (skb:kfree_skb print fmt).
        assert_eq!(reasons.name(2), Some("NOT_SPECIFIED"));
        assert_eq!(reasons.name(3), Some("NO_SOCKET"));
        assert_eq!(reasons.value("NETFILTER_DROP"), Some(12));
        assert!(reasons.len() > 100);
    }

    #[test]
    fn tracepoints_are_found_by_their_btf_typedef() {
        let btf = KernelBtf::load(Path::new(KERNEL_BTF)).unwrap();
        assert!(btf.has_tracepoint("kfree_skb"));
        assert!(btf.has_tracepoint("tcp_retransmit_skb"));
        assert!(!btf.has_tracepoint("no_such_tracepoint"));
    }

    #[test]
    fn non_btf_file_is_rejected_naming_the_file_and_magic() {
        let err = KernelBtf::parse(
            PathBuf::from("/etc/hostname"),
            b"not btf at all, just text....".to_vec(),
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "/etc/hostname: not BTF (magic 0x6f6e at offset 0, expected 0xeb9f in native byte order)"
        );
    }

    #[test]
    fn truncated_btf_names_the_offset() {
        let mut data = std::fs::read(KERNEL_BTF).unwrap();
        data.truncate(1000);
        let err = KernelBtf::parse(PathBuf::from("cut.btf"), data)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("cut.btf: truncated at byte 1000 while reading the type section"),
            "{err}"
        );
    }

    #[test]
    fn missing_enum_is_named() {
        let btf = KernelBtf::load(Path::new(KERNEL_BTF)).unwrap();
        let err = btf.enum_names("no_such_enum", "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/sys/kernel/btf/vmlinux: enum no_such_enum not found"
        );
    }
}
