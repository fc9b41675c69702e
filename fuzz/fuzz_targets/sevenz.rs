//! 7z members: no panic, and the decoded output and member count never pass
//! the bounds given (an archive declaring huge sizes or counts is stopped).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_formats::sevenz;

fuzz_target!(|data: &[u8]| {
    let mut f = b"7z\xbc\xaf\x27\x1c".to_vec();
    f.extend_from_slice(data);
    for input in [&f[..], data] {
        let budget = std::cell::Cell::new(1 << 20);
        let deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(5));
        let mut total = 0u64;
        let mut n = 0usize;
        let _ = sevenz::for_each(input, 64, &budget, deadline, |_, b| {
            total += b.len() as u64;
            n += 1;
            sevenz::Flow::Continue
        });
        assert!(total <= 1 << 20 && n <= 64);
    }
});
