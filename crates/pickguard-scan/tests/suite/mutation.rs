//! Bounded mutation testing over the committed corpus: no input may panic
//! the scanner, and no analysis may exceed its budgets. (The unbounded
//! version is the cargo-fuzz targets in fuzz/.)

use pickguard_pickle::{Limits, Options, ReadView, run_stream};
use pickguard_scan::{ScanOptions, Scanner, Verdict};
use std::path::Path;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = &[
    0x00, 0xff, 0x7f, 0x80, b'(', b'.', b'0', b'2', b'R', b'b', b'c', b'q', b'h', 0x93, 0x94, 0x95,
    b'\n',
];

fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        if d.is_empty() {
            d.push(rng.next() as u8);
        }
        let i = rng.below(d.len());
        match rng.below(6) {
            0 => d[i] = rng.next() as u8,
            1 => d[i] = INTERESTING[rng.below(INTERESTING.len())],
            2 => {
                d.remove(i);
            }
            3 => d.insert(i, INTERESTING[rng.below(INTERESTING.len())]),
            4 => d.truncate(i),
            _ => {
                // Duplicate a slice (repeats opcodes, headers, members).
                let j = (i + 1 + rng.below(64)).min(d.len());
                let chunk = d[i..j].to_vec();
                let at = rng.below(d.len());
                d.splice(at..at, chunk);
            }
        }
    }
    d
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/corpus");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "manifest.json")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn mutated_corpus_never_panics_and_stays_in_budget() {
    let limits = Limits {
        max_ops: 20_000,
        max_nodes: 20_000,
        max_memo: 2_000,
        max_stack: 5_000,
        ..Limits::default()
    };
    let opts = Options {
        limits: limits.clone(),
        ..Options::default()
    };
    let scanner = Scanner::new(
        Default::default(),
        ScanOptions {
            pickle: opts.clone(),
            max_members: 500,
            max_decompressed: 1 << 22,
            ..ScanOptions::default()
        },
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut scans = 0;
    let mut verdicts = std::collections::BTreeMap::new();
    let mut mal_scans = 0;
    for (name, data) in corpus() {
        for _ in 0..60 {
            let m = mutate(&mut rng, &data);
            for view in [ReadView::Linear, ReadView::FileNoPeek] {
                let s = run_stream(&m, 0, 0, view, &opts);
                assert!(s.ops <= limits.max_ops, "{name}: {} ops", s.ops);
                assert!(
                    s.nodes.len() <= limits.max_nodes,
                    "{name}: {} nodes",
                    s.nodes.len()
                );
                assert!(s.end as usize <= m.len(), "{name}: read past the end");
            }
            let r = scanner.scan_bytes(&name, &m);
            assert_ne!(
                r.verdict,
                Verdict::Error,
                "{name}: bytes in memory never give a read error"
            );
            if name.starts_with("mal-") {
                *verdicts.entry(r.verdict).or_insert(0) += 1;
                mal_scans += 1;
            }
            scans += 1;
        }
    }
    assert!(scans > 3000);
    // Mutations of malicious files keep being caught often enough to show
    // the test exercised real analysis, not early rejection.
    assert!(
        verdicts.get(&Verdict::Malicious).copied().unwrap_or(0) > mal_scans / 4,
        "verdicts of mutated malicious fixtures: {verdicts:?}"
    );
}

#[test]
fn deep_nesting_and_member_floods_are_bounded() {
    // A zip holding itself many levels deep.
    let mut inner = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/corpus/mal-zip-in-zip.zip"),
    )
    .unwrap();
    for _ in 0..8 {
        inner = store_zip("x.zip", &inner);
    }
    let r = Scanner::default().scan_bytes("deep.zip", &inner);
    assert_eq!(r.verdict, Verdict::Inconclusive, "{:?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule.id() == "PG301-budget-exceeded")
    );
}

/// A one-member stored zip, written by hand for the test.
fn store_zip(name: &str, data: &[u8]) -> Vec<u8> {
    store_zip_many(&[(name, data)])
}

fn crc32(d: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in d {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A stored zip of several members, written by hand for the test.
fn store_zip_many(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let (crc, sz, n, off) = (
            crc32(data),
            data.len() as u32,
            name.len() as u16,
            z.len() as u32,
        );
        z.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&sz.to_le_bytes());
        z.extend_from_slice(&sz.to_le_bytes());
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&sz.to_le_bytes());
        central.extend_from_slice(&sz.to_le_bytes());
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&[0u8; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd = z.len() as u32;
    z.extend_from_slice(&central);
    let count = (members.len() as u16).to_le_bytes();
    z.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    z.extend_from_slice(&count);
    z.extend_from_slice(&count);
    z.extend_from_slice(&(central.len() as u32).to_le_bytes());
    z.extend_from_slice(&cd.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

fn b64(d: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in d.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &b)| a | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A TorchModuleWrapper's `config.module` is unpickled by Keras: what it
/// holds judges the file, in either spelling; what cannot be decoded, or
/// decodes to no checkpoint, is inconclusive, never clean.
#[test]
fn keras_torch_module_payloads_are_scanned_and_fail_closed() {
    let payload: &[u8] = b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x02id\x85R.";
    let keras = |module: serde_json::Value| {
        let config = serde_json::json!({
            "module": "keras", "class_name": "Sequential", "config": {"layers": [
                {"module": "keras.layers", "class_name": "TorchModuleWrapper",
                 "config": {"name": "wrapped", "module": module}, "registered_name": null}
            ]}
        });
        let config = serde_json::to_vec(&config).unwrap();
        store_zip_many(&[
            ("metadata.json", br#"{"keras_version": "3.15.1"}"#),
            ("config.json", &config),
        ])
    };
    let rules = |r: &pickguard_scan::FileReport| -> Vec<&str> {
        r.findings.iter().map(|f| f.rule.id()).collect()
    };
    for module in [
        serde_json::json!(b64(payload)),
        // Line breaks and other characters b64decode discards.
        serde_json::json!(format!("{}\n", b64(payload).replace('A', "A\n"))),
        serde_json::json!({"class_name": "__bytes__", "config": {"value": b64(payload)}}),
    ] {
        let r = Scanner::default().scan_bytes("m.keras", &keras(module.clone()));
        assert_eq!(r.verdict, Verdict::Malicious, "{module}: {:?}", r.findings);
        let ids = rules(&r);
        assert!(ids.contains(&"PG409-keras-torch-module"), "{ids:?}");
        let f = r
            .findings
            .iter()
            .find(|f| f.rule.id() == "PG101-dangerous-global")
            .unwrap_or_else(|| panic!("{ids:?}"));
        assert!(
            f.location
                .member
                .as_deref()
                .is_some_and(|m| m.contains("<wrapped.module>")),
            "{:?}",
            f.location
        );
    }
    for (module, why) in [
        (serde_json::json!("abc"), "not base64"),
        (serde_json::json!(b64(b"\xff\xfeneither")), "no checkpoint"),
    ] {
        let r = Scanner::default().scan_bytes("m.keras", &keras(module));
        assert_eq!(r.verdict, Verdict::Inconclusive, "{why}: {:?}", r.findings);
        assert!(rules(&r).contains(&"PG303-unreadable"), "{why}");
    }
}

/// Bypasses an attacker review found (2026-12-03), each read as Keras
/// (Python's zipfile, Python's base64) reads it.
#[test]
fn keras_config_is_found_however_the_archive_is_dressed() {
    let payload: &[u8] = b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x02id\x85R.";
    let config = |module: String| {
        serde_json::to_vec(&serde_json::json!({
            "module": "keras.layers", "class_name": "TorchModuleWrapper",
            "config": {"name": "w", "module": module}
        }))
        .unwrap()
    };
    let cfg = config(b64(payload));
    let malicious = |what: &str, data: &[u8]| {
        let r = Scanner::default().scan_bytes("m.keras", data);
        assert_eq!(r.verdict, Verdict::Malicious, "{what}: {:?}", r.findings);
        r
    };
    // No metadata.json: Keras needs only config.json.
    malicious(
        "config.json alone",
        &store_zip_many(&[("config.json", &cfg)]),
    );
    // A torch-looking first member: torch's layout does not hide config.json.
    malicious(
        "torch layout",
        &store_zip_many(&[("x/data.pkl", b"\x80\x02}q\x00."), ("config.json", &cfg)]),
    );
    // A NUL in the name: Python's zipfile calls it config.json.
    let r = malicious(
        "NUL in the name",
        &store_zip_many(&[("config.json\0x", &cfg)]),
    );
    assert!(r.findings.iter().any(|f| f.rule.id() == "PG109-zip-tamper"));
    // `=` between whole groups: Python skips it and decodes the rest.
    let split = config(format!("{}={}", b64(&payload[..12]), b64(&payload[12..])));
    malicious(
        "= inside the base64",
        &store_zip_many(&[("config.json", &split)]),
    );
    // Data in front of the archive: Python's zipfile reads from the end.
    let zip = store_zip_many(&[("config.json", &cfg)]);
    let mut npy =
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (0,), }".to_vec();
    npy.resize(10 + 0x76 - 1, b' ');
    npy.push(b'\n');
    let mut gguf = b"GGUF".to_vec();
    gguf.extend_from_slice(&3u32.to_le_bytes());
    gguf.extend_from_slice(&[0u8; 16]);
    for (what, front) in [("npy", npy), ("gguf", gguf)] {
        let mut f = front.clone();
        f.extend_from_slice(&zip);
        let r = malicious(what, &f);
        assert!(
            r.findings.iter().any(|f| f.rule.id() == "PG110-polyglot"),
            "{what}: {:?}",
            r.findings
        );
    }
}

/// A one-member ustar archive, written by hand for the test.
fn tar_one(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut t = h.to_vec();
    t.extend_from_slice(data);
    t.resize(t.len().div_ceil(512) * 512 + 1024, 0);
    t
}

/// A zip stored as a tar member is that member (scanned as one), not a
/// second reading of the tar; a zip after the tar's members is.
#[test]
fn a_zip_inside_a_tar_is_a_member_and_one_after_it_is_a_polyglot() {
    let benign = store_zip_many(&[("a.txt", b"hello")]);
    let tar = tar_one("model.npz", &benign);
    let r = Scanner::default().scan_bytes("t.tar", &tar);
    assert_eq!(r.verdict, Verdict::Clean, "{:?}", r.findings);
    let mut after = tar_one("a.txt", b"hello");
    after.extend_from_slice(&benign);
    let r = Scanner::default().scan_bytes("t.tar", &after);
    assert!(
        r.findings.iter().any(|f| f.rule.id() == "PG110-polyglot"),
        "{:?}",
        r.findings
    );
}
