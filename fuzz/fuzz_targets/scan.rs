//! The whole scanner on arbitrary bytes: no panic, never an `error` verdict.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_scan::{Scanner, Verdict};

fuzz_target!(|data: &[u8]| {
    let r = Scanner::default().scan_bytes("fuzz", data);
    assert_ne!(r.verdict, Verdict::Error);
});
