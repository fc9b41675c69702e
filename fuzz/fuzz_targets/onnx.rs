//! The ONNX walker: no panic, bounded depth and items, lengths never past the end.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_formats::onnx;

fuzz_target!(|data: &[u8]| {
    let _ = onnx::looks_like_onnx(data);
    if let Ok(m) = onnx::read(data) {
        for t in &m.tensors {
            assert!(t.raw_len.is_none_or(|l| l <= data.len() as u64));
        }
    }
});
