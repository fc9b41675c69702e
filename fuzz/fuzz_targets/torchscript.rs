//! The TorchScript source reader: no panic on any text, and every call it
//! reports names a line of the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_scan::torchscript;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let lines = src.lines().count().max(1) + src.matches('\r').count() + 1;
    for c in torchscript::host_calls(&src) {
        assert!(c.line >= 1 && c.line <= lines + 1, "{c:?}");
    }
});
