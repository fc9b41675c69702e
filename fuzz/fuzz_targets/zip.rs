//! The tolerant zip reader: no panic, every entry readable or refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_formats::zip;

fuzz_target!(|data: &[u8]| {
    if let Ok(ar) = zip::read(data, 10_000) {
        for e in &ar.entries {
            if let Ok((bytes, _)) = zip::entry_data(data, e, 1 << 20) {
                assert!(bytes.len() as u64 <= (1 << 20).max(e.size));
            }
        }
    }
});
