//! The HDF5 attribute reader: no panic, every address and count checked, and
//! every string it returns lies inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_formats::hdf5;

fuzz_target!(|data: &[u8]| {
    let mut f = hdf5::SIGNATURE.to_vec();
    f.extend_from_slice(data);
    for input in [&f[..], data] {
        if let Ok(attrs) = hdf5::attributes(input, true) {
            let range = input.as_ptr_range();
            for (_, a) in &attrs {
                if let hdf5::Value::Strings(v) = &a.value {
                    for s in v {
                        assert!(s.is_empty() || range.contains(&s.as_ptr()));
                        let _ = hdf5::readings(s).count();
                    }
                }
            }
        }
    }
});
