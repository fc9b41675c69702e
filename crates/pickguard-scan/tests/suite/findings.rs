//! Verdict arithmetic, limits and finding caps, on bytes built in the test.

use pickguard_scan::{Rule, ScanOptions, Scanner, Verdict};

fn scan(b: &[u8]) -> pickguard_scan::FileReport {
    Scanner::default().scan_bytes("t", b)
}

#[test]
fn repeated_findings_are_capped_and_counted() {
    let mut b = b"\x80\x02".to_vec();
    for _ in 0..500 {
        b.extend_from_slice(b"cos\nsystem\n0");
    }
    b.extend_from_slice(b"N.");
    let r = scan(&b);
    assert_eq!(r.verdict, Verdict::Malicious);
    let n = r
        .findings
        .iter()
        .filter(|f| f.rule == Rule::DangerousGlobal)
        .count();
    assert_eq!(n, 101, "100 listed plus one summary");
    assert!(r.findings.iter().any(|f| f.message.starts_with("400 more")));
    assert_eq!(
        r.globals[0].imports, 500,
        "the globals table still counts all"
    );
}

#[test]
fn a_deadline_in_the_past_is_inconclusive_never_clean() {
    let mut opts = ScanOptions::default();
    opts.pickle.limits.deadline = Some(std::time::Instant::now());
    let s = Scanner::new(Default::default(), opts);
    // Benign but long enough to reach the first time check.
    let mut b = b"\x80\x02]".to_vec();
    for _ in 0..70_000 {
        b.extend_from_slice(b"K\x01a");
    }
    b.push(b'.');
    let r = s.scan_bytes("t", &b);
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert!(r.findings.iter().any(|f| f.rule == Rule::BudgetExceeded));
}

#[test]
fn worst_finding_decides() {
    // needs-trust + malicious in one file: malicious.
    let r = scan(b"\x80\x02cacme\nNet\n)\x81cos\nsystem\n0.");
    assert_eq!(r.verdict, Verdict::Malicious);
    // needs-trust alone.
    let r = scan(b"\x80\x02cacme\nNet\n)\x81.");
    assert_eq!(r.verdict, Verdict::NeedsTrust);
    // Informational findings never change a clean verdict.
    let r = scan(b"\x80\x02]K\x01a.\xff\xff");
    assert_eq!(r.verdict, Verdict::Clean);
    assert!(r.findings.iter().any(|f| f.rule == Rule::TrailingData));
}

#[test]
fn getattr_is_judged_by_its_target() {
    // getattr(torch.nn.Module, 'forward'): a library attribute, needs trust.
    let r = scan(b"\x80\x02cbuiltins\ngetattr\nctorch.nn\nModule\nX\x07\x00\x00\x00forward\x86R.");
    assert_eq!(r.verdict, Verdict::NeedsTrust, "{:?}", r.findings);
    // getattr(os, 'system'): the target is dangerous.
    let r =
        scan(b"\x80\x02cbuiltins\ngetattr\ncbuiltins\nobject\nX\x07\x00\x00\x00__class__\x86R.");
    assert_eq!(r.verdict, Verdict::Malicious, "{:?}", r.findings);
}

#[test]
fn unsupported_containers_are_inconclusive() {
    for magic in [
        &b"\xfd7zXZ\x00\x00\x04"[..],
        b"7z\xbc\xaf\x27\x1c\x00\x04",
        b"\x28\xb5\x2f\xfd\x00",
        b"BZh91AY&SY",
        b"\x04\x22\x4d\x18\x64\x40",
        b"\x89HDF\r\n\x1a\n\x00\x00",
    ] {
        let r = scan(magic);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{magic:?}");
    }
}

const EVIL: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.";

fn zlib(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(3));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_pickles_are_opened_by_content() {
    let mut lz = Vec::new();
    lzma_rs::lzma_compress(&mut &EVIL[..], &mut lz).unwrap();
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &EVIL[..], &mut xz).unwrap();
    // Python's zlib reader goes on to a second stream; so must the scan.
    let mut two = zlib(b"\x80\x02N.");
    two.extend(zlib(EVIL));
    for (what, b) in [
        ("zlib", zlib(EVIL)),
        ("lzma", lz),
        ("xz", xz),
        ("zlib x2", two),
    ] {
        let r = scan(&b);
        assert_eq!(r.verdict, Verdict::Malicious, "{what}: {:?}", r.findings);
        assert!(
            r.findings.iter().any(|f| f.rule == Rule::DangerousGlobal),
            "{what}"
        );
    }
}

#[test]
fn truncated_compression_still_analyses_what_decoded() {
    // The decoder yields the payload before it meets the damage; a loader
    // reading through Python's zlib reader would run it.
    let mut body = EVIL[..EVIL.len() - 1].to_vec();
    body.extend(std::iter::repeat_n(b'N', 4096));
    let z = zlib(&body);
    let r = scan(&z[..z.len() - 6]);
    assert!(
        r.findings.iter().any(|f| f.rule == Rule::Unreadable),
        "{:?}",
        r.findings
    );
    assert!(r.findings.iter().any(|f| f.rule == Rule::DangerousGlobal));
    assert_eq!(r.verdict, Verdict::Malicious);
}

#[test]
fn decompression_is_bounded() {
    let bomb = zlib(&vec![b'N'; 8 << 20]);
    let opts = ScanOptions {
        max_decompressed: 1 << 20,
        ..Default::default()
    };
    let r = Scanner::new(Default::default(), opts).scan_bytes("t", &bomb);
    assert!(
        r.findings.iter().any(|f| f.rule == Rule::BudgetExceeded),
        "{:?}",
        r.findings
    );
    assert_eq!(r.verdict, Verdict::Inconclusive);
}

#[test]
fn text_that_looks_like_zlib_is_not_misread() {
    // 'x' then a byte making a valid FCHECK, but not deflate data.
    let r = scan(b"x\x9c hello, this is text");
    assert_ne!(r.verdict, Verdict::Inconclusive, "{:?}", r.findings);
    assert_eq!(r.format, "other");
}

#[test]
fn torchscript_source_is_reported_once_never_unpickled() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/corpus/trust-torchscript.pt"
    );
    let r = Scanner::default().scan_bytes("ts.pt", &std::fs::read(path).unwrap());
    assert_eq!(r.format, "torchscript");
    assert_eq!(r.verdict, Verdict::NeedsTrust);
    let rules: Vec<Rule> = r.findings.iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec![Rule::TorchScript], "{:?}", r.findings);
    let m = &r.findings[0].message;
    assert!(
        m.contains("1 code file(s)") && m.contains("defining Linear"),
        "{m}"
    );
}

#[test]
fn stdlib_enums_are_data_and_their_module_still_is_not() {
    // http.HTTPStatus(200): an enum member, as a benign pickle holds it.
    let r = scan(b"\x80\x02chttp\nHTTPStatus\nK\xc8\x85R.");
    assert_eq!(r.verdict, Verdict::Clean, "{:?}", r.findings);
    for evil in [
        &b"\x80\x02chttp.client\nHTTPConnection\nX\x09\x00\x00\x00127.0.0.1\x85R."[..],
        b"\x80\x02chttp\nHTTPStatus.__init__\n.",
        b"\x80\x02csignal\npthread_kill\n.",
    ] {
        let r = scan(evil);
        assert_eq!(r.verdict, Verdict::Malicious, "{evil:?}: {:?}", r.findings);
    }
}

#[test]
fn hdf5_string_attributes_are_read_whole_nuls_and_all() {
    // The pickle in this attribute holds NUL bytes (BINPUT 0) before its
    // call: a reader that stops at the first NUL sees an import, not the call.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/corpus/mal-hdf5-pickled-attribute.h5"
    );
    let r = Scanner::default().scan_bytes("a.h5", &std::fs::read(path).unwrap());
    assert_eq!(r.verdict, Verdict::Malicious);
    let g = r
        .globals
        .iter()
        .find(|g| g.name == "system")
        .expect("posix.system");
    assert_eq!(g.calls, 1, "{:?}", r.findings);
    assert!(
        r.findings.iter().all(|f| f.rule != Rule::PickleError),
        "attribute strings that PyTables would not unpickle are not pickles: {:?}",
        r.findings
    );
}

#[test]
fn savedmodels_real_tensorflow_wrote_are_judged_as_expected() {
    // fixtures/tf-real: real TensorFlow 2.21 output (fixtures/gen/tf_real),
    // benign saves and an attacker review's models whose effect was proven.
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/tf-real"
    ));
    let expected: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(expected.len() >= 25);
    let mut bad = Vec::new();
    for (rel, want) in &expected {
        let r = Scanner::default().scan_bytes(rel, &std::fs::read(dir.join(rel)).unwrap());
        if r.verdict.as_str() != want {
            bad.push(format!(
                "{rel}: {} (want {want}): {:?}",
                r.verdict.as_str(),
                r.findings
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
