//! The GGUF reader and the chat-template judge: no panic, every size checked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_formats::gguf;

fuzz_target!(|data: &[u8]| {
    let mut f = b"GGUF".to_vec();
    f.extend_from_slice(data);
    if let Ok(g) = gguf::read(&f) {
        for t in &g.tensors {
            if let Some(b) = t.bytes {
                let _ = t.offset.checked_add(b);
            }
        }
        for (_, src) in &g.templates {
            let _ = pickguard_scan::template::judge(src);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = pickguard_scan::template::judge(s);
    }
});
