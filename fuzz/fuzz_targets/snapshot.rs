//! Any bytes: snapshot decoding (JSON or zstd) returns a snapshot or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = model::Snapshot::from_bytes("fuzz", data);
});
