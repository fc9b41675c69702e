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
        &b"BZh91AY&SY"[..],
        b"\xfd7zXZ\x00\x00\x04",
        b"7z\xbc\xaf\x27\x1c\x00\x04",
        b"\x28\xb5\x2f\xfd\x00",
    ] {
        let r = scan(magic);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{magic:?}");
    }
}
