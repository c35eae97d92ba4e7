//! The SHA-256-derived names kube-proxy and the CNIs give chains and devices: the base32 prefix
//! of kube-proxy's `KUBE-SVC-…` chains and the hex suffixes of host veths.
//!
//! Only names depend on the hash (no security property); they must be byte-identical to what the
//! real components write, so a lab's rules read exactly like a real cluster's.

use sha2::{Digest, Sha256};

/// kube-proxy's chain-name hash: the first 16 characters of the standard base32 encoding of
/// SHA-256(`input`) (`KUBE-SVC-` + this is exactly what kube-proxy writes).
pub fn kube_proxy_hash(input: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(input.as_bytes());
    // 16 base32 characters are exactly 80 bits = the first 10 bytes.
    let bits = digest[..10]
        .iter()
        .fold(0u128, |acc, byte| (acc << 8) | u128::from(*byte));
    (0..16)
        .map(|i| ALPHABET[((bits >> (75 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// Lower-case hex of SHA-256(`input`), cut to `len` characters (device-name suffixes).
pub fn hex_prefix(input: &str, len: usize) -> String {
    let mut hex: String = Sha256::digest(input.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex.truncate(len);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_prefix_is_sha256_in_hex() {
        assert_eq!(
            hex_prefix("abc", 64),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex_prefix("", 16), "e3b0c44298fc1c14");
    }

    #[test]
    fn kube_proxy_hash_is_base32_of_sha256() {
        // echo -n abc | sha256sum | xxd -r -p | base32 | cut -c1-16
        assert_eq!(kube_proxy_hash("abc"), "XJ4BNP4PAHH6UQKB");
        // The chain every real cluster has for the `kubernetes` Service.
        assert_eq!(
            kube_proxy_hash("default/kubernetes:httpstcp"),
            "NPX46M4PTMTKRN6Y"
        );
    }
}
