//! The TensorFlow graph reader and its judgement: no panic, bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for lead in [&b""[..], b"\x08\x01\x12", b"\x0a"] {
        let mut f = lead.to_vec();
        f.extend_from_slice(data);
        let _ = pickguard_formats::tfgraph::read(&f);
        let _ = pickguard_scan::Scanner::default().scan_bytes("saved_model.pb", &f);
    }
});
