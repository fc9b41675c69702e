//! The symbolic unpickler against CPython's semantics, opcode by opcode.
//! Expected behaviours are CPython 3.11's `_pickle.c` (checked by the live
//! fixture tests against the real interpreter for the attack shapes).

use pickguard_pickle::{
    Anomaly, CallKind, Limits, Node, Op, Options, ReadView, StopReason, Stream, analyze_all,
    analyze_views, run_stream,
};

fn run(b: &[u8]) -> Stream {
    run_stream(b, 0, 0, ReadView::Linear, &Options::default())
}

fn result(s: &Stream) -> String {
    s.render(s.result.expect("STOP"))
}

fn err(s: &Stream) -> String {
    match &s.stop {
        StopReason::Error { message, .. } => message.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn imports(s: &Stream) -> Vec<String> {
    s.imports.iter().map(|i| i.qualified()).collect()
}

fn calls(s: &Stream) -> Vec<String> {
    s.calls.iter().map(|c| s.render_call(c)).collect()
}

#[test]
fn scalars_of_every_width() {
    assert_eq!(result(&run(b"I42\n.")), "42");
    assert_eq!(result(&run(b"I01\n.")), "True");
    assert_eq!(result(&run(b"I00\n.")), "False");
    assert_eq!(result(&run(b"I0x10\n.")), "16");
    assert_eq!(result(&run(b"J\xff\xff\xff\xff.")), "-1");
    assert_eq!(result(&run(b"K\xff.")), "255");
    assert_eq!(result(&run(b"M\xff\xff.")), "65535");
    assert_eq!(result(&run(b"L123L\n.")), "123");
    assert_eq!(result(&run(b"\x8a\x01\xff.")), "-1");
    assert_eq!(result(&run(b"\x8a\x00.")), "0");
    assert_eq!(result(&run(b"\x8b\x02\x00\x00\x00\x00\x01.")), "256");
    assert_eq!(result(&run(b"\x8a\x20\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01.")), "<32-byte int>");
    assert_eq!(result(&run(b"F1.5\n.")), "1.5");
    assert_eq!(result(&run(b"G?\xf8\x00\x00\x00\x00\x00\x00.")), "1.5");
    assert_eq!(result(&run(b"N.")), "None");
    assert_eq!(result(&run(b"\x88.")), "True");
    assert_eq!(result(&run(b"\x89.")), "False");
}

#[test]
fn strings_and_bytes() {
    assert_eq!(result(&run(b"S'a\\nb'\n.")), "'a\\nb'");
    assert_eq!(result(&run(b"S\"q\"\n.")), "'q'");
    assert!(err(&run(b"Sabc\n.")).contains("quoted"));
    assert_eq!(result(&run(b"T\x02\x00\x00\x00hi.")), "'hi'");
    assert_eq!(result(&run(b"U\x02hi.")), "'hi'");
    assert_eq!(result(&run(b"Vh\\u00e9\n.")), "'hé'");
    assert_eq!(result(&run(b"X\x03\x00\x00\x00abc.")), "'abc'");
    assert_eq!(result(&run(b"\x8c\x03abc.")), "'abc'");
    assert_eq!(
        result(&run(b"\x8d\x03\x00\x00\x00\x00\x00\x00\x00abc.")),
        "'abc'"
    );
    assert_eq!(result(&run(b"B\x02\x00\x00\x00\x00\x01.")), "b'\\x00\\x01'");
    assert_eq!(result(&run(b"C\x01z.")), "b'z'");
    assert_eq!(
        result(&run(b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00z.")),
        "b'z'"
    );
    assert_eq!(
        result(&run(b"\x96\x01\x00\x00\x00\x00\x00\x00\x00z.")),
        "bytearray(b'z')"
    );
    assert!(err(&run(b"X\xff\x00\x00\x00ab.")).contains("truncated"));
}

#[test]
fn containers() {
    assert_eq!(result(&run(b"(K\x01K\x02t.")), "(1, 2)");
    assert_eq!(result(&run(b").")), "()");
    assert_eq!(result(&run(b"K\x01\x85.")), "(1,)");
    assert_eq!(result(&run(b"K\x01K\x02\x86.")), "(1, 2)");
    assert_eq!(result(&run(b"K\x01K\x02K\x03\x87.")), "(1, 2, 3)");
    assert_eq!(result(&run(b"(K\x01l.")), "[1]");
    assert_eq!(result(&run(b"]K\x01a.")), "[1]");
    assert_eq!(result(&run(b"](K\x01K\x02e.")), "[1, 2]");
    assert_eq!(result(&run(b"(K\x01K\x02d.")), "{1: 2}");
    assert_eq!(result(&run(b"}K\x01K\x02s.")), "{1: 2}");
    assert_eq!(result(&run(b"}(K\x01K\x02K\x03K\x04u.")), "{1: 2, 3: 4}");
    assert_eq!(result(&run(b"\x8f(K\x01\x90.")), "{1}");
    assert_eq!(result(&run(b"(K\x01\x91.")), "frozenset({1})");
    assert!(err(&run(b"(K\x01d.")).contains("odd number"));
    assert!(err(&run(b"}(K\x01u.")).contains("odd number"));
}

#[test]
fn stack_mark_and_fence() {
    assert!(err(&run(b"0.")).contains("underflow"));
    // POP right after MARK pops the mark (C unpickler), not a value.
    assert_eq!(result(&run(b"K\x01(0.")), "1");
    // Values below a mark are fenced off.
    assert!(err(&run(b"K\x01(\x85.")).contains("underflow"));
    assert!(err(&run(b"t.")).contains("MARK"));
    assert_eq!(result(&run(b"K\x01(K\x02K\x031.")), "1");
    assert_eq!(result(&run(b"K\x072\x86.")), "(7, 7)");
    assert!(err(&run(b"(2.")).contains("underflow"));
    assert!(err(&run(b"(.")).contains("underflow"));
}

#[test]
fn memo_semantics() {
    // MEMOIZE stores at len(memo), whatever keys PUT used.
    let s = run(b"\x80\x04K\x0aq\x05\x94K\x0b\x94h\x01h\x02\x86.");
    assert_eq!(result(&s), "(10, 11)");
    assert_eq!(result(&run(b"K\x07p3\n0g3\n.")), "7");
    assert_eq!(
        result(&run(b"K\x07r\x00\x00\x01\x000j\x00\x00\x01\x00.")),
        "7"
    );
    assert!(err(&run(b"h\x09.")).contains("Memo value not found"));
    assert!(err(&run(b"K\x01p-1\n.")).contains("negative"));
    // Aliasing: a list appended through a memo alias is the same list.
    assert_eq!(result(&run(b"]q\x00K\x01ah\x00K\x02a.")), "[1, 2]");
}

#[test]
fn globals_and_name_resolution() {
    assert_eq!(imports(&run(b"cos\nsystem\n.")), ["os.system"]);
    // Protocol < 3 maps Python 2 names like CPython's fix_imports.
    let s = run(b"\x80\x02c__builtin__\neval\n.");
    assert_eq!(imports(&s), ["builtins.eval"]);
    assert_eq!(s.imports[0].written.as_ref().unwrap().0, "__builtin__");
    assert_eq!(
        imports(&run(b"\x80\x02c__builtin__\nxrange\n.")),
        ["builtins.range"]
    );
    assert_eq!(
        imports(&run(b"\x80\x02ccopy_reg\n_reconstructor\n.")),
        ["copyreg._reconstructor"]
    );
    // ... but not at protocol 3+.
    assert_eq!(
        imports(&run(b"\x80\x03c__builtin__\neval\n.")),
        ["__builtin__.eval"]
    );
    // No PROTO means protocol 0: mapped.
    assert_eq!(imports(&run(b"c__builtin__\neval\n.")), ["builtins.eval"]);
    assert_eq!(
        imports(&run(b"\x80\x04\x8c\x02os\x8c\x06system\x93.")),
        ["os.system"]
    );
    assert_eq!(
        imports(&run(b"\x80\x04\x8c\x09posixpath\x8c\x09os.system\x93.")),
        ["posixpath.os.system"]
    );
    assert!(err(&run(b"\x80\x04K\x01\x8c\x01a\x93.")).contains("requires str"));
    assert!(err(&run(b"cos\n\n.")).contains("empty"));
    assert!(err(&run(b"c\xf8\nx\n.")).contains("UnicodeDecodeError"));
    // INST: mark, two ASCII lines, a call with the marked values.
    let s = run(b"(S'x'\nios\nsystem\n.");
    assert_eq!(calls(&s), ["os.system('x')"]);
    assert_eq!(s.calls[0].kind, CallKind::Inst);
}

#[test]
fn every_call_opcode() {
    let s = run(b"cos\nsystem\n(S'id'\ntR.");
    assert_eq!(calls(&s), ["os.system('id')"]);
    let s = run(b"(cos\nsystem\nS'id'\no0N.");
    assert_eq!(calls(&s), ["os.system('id')"]);
    assert_eq!(s.calls[0].kind, CallKind::Obj);
    let s = run(b"\x80\x02csubprocess\nPopen\n)\x81.");
    assert_eq!(calls(&s), ["subprocess.Popen.__new__(subprocess.Popen)"]);
    let s = run(b"\x80\x04csubprocess\nPopen\n)}\x92.");
    assert_eq!(s.calls[0].kind, CallKind::NewObjEx);
    let s = run(b"\x80\x02cos\npath\n}b.");
    assert_eq!(s.calls[0].kind, CallKind::Build);
    // Container opcodes on something that is not the pickle's own container are method calls.
    let s = run(b"\x80\x02csys\npath\nS'x'\na.");
    assert_eq!(s.calls[0].kind, CallKind::Append);
    let s = run(b"\x80\x02cos\nenviron\nS'k'\nS'v'\ns.");
    assert_eq!(s.calls[0].kind, CallKind::SetItem);
    let s = run(b"\x80\x04cbuiltins\nset\n)R(K\x01\x90.");
    assert_eq!(s.calls[1].kind, CallKind::AddItems);
    // ... and data operations on its own containers.
    assert!(run(b"]K\x01a}K\x01K\x02s\x8f(K\x01\x90.").calls.is_empty());
}

#[test]
fn persistent_ids_and_extensions() {
    let s = run(b"P42\n.");
    assert_eq!(s.persistent_ids.len(), 1);
    assert_eq!(result(&s), "persistent_load('42')");
    let s = run(b"(S'storage'\nK\x01tQ.");
    assert_eq!(s.persistent_ids[0].op, Op::BinPersId);
    for (b, code) in [
        (&b"\x82\x07."[..], 7),
        (b"\x83\x00\x01.", 256),
        (b"\x84\x00\x00\x01\x00.", 65536),
    ] {
        let s = run(b);
        assert_eq!(s.imports[0].ext_code, Some(code));
    }
    assert!(err(&run(b"\x82\x00.")).contains("code <= 0"));
    assert!(err(&run(b"\x84\x00\x00\x00\x80.")).contains("code <= 0"));
}

#[test]
fn protocol_and_buffers() {
    assert!(err(&run(b"\x80\x06N.")).contains("unsupported pickle protocol"));
    let s = run(b"\x80\x02\x80\x04N.");
    assert!(
        s.anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::LateProto { .. }))
    );
    let s = run(b"\x80\x02\x8c\x01aN.");
    assert!(
        s.anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::OpcodeAboveProtocol { .. }))
    );
    assert_eq!(result(&run(b"\x80\x05\x97\x98.")), "<out-of-band buffer>");
    assert!(err(&run(b"\xff")).contains("invalid load key"));
}

#[test]
fn errors_keep_what_ran_before() {
    let s = run(b"cos\nsystem\n(S'id'\ntR\xff");
    assert_eq!(calls(&s), ["os.system('id')"]);
    assert!(err(&s).contains("invalid load key"));
    let s = run(b"cos\nsystem\n(S'id'\ntRX\xff\xff\xff\x00");
    assert_eq!(calls(&s), ["os.system('id')"]);
}

#[test]
fn frames_in_both_readings() {
    // A well-formed frame: no anomaly, one reading.
    let good = b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00K\x01.";
    let v = analyze_views(good, 0, 0, &Options::default());
    assert_eq!(v.len(), 1);
    assert!(v[0].anomalies.is_empty());
    // An opcode straddling the frame end: the file reading drops the rest
    // of the frame and runs what pickle.loads sees as string data.
    let hidden = b"0cos\nsystem\n(Vid\ntR";
    let mut b = b"\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00\x8c\x06xx".to_vec();
    b.extend_from_slice(b"yyyyC");
    b.push(hidden.len() as u8);
    b.extend_from_slice(hidden);
    b.push(b'.');
    let v = analyze_views(&b, 0, 0, &Options::default());
    assert_eq!(v.len(), 2);
    assert!(v[0].calls.is_empty(), "pickle.loads runs nothing");
    assert!(
        v[0].anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::FrameStraddle { .. }))
    );
    assert_eq!(v[1].view, ReadView::FileNoPeek);
    assert_eq!(calls(&v[1]), ["os.system('id')"]);
    // A frame longer than the data is an error.
    assert!(err(&run(b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.")).contains("truncated"));
    // A FRAME inside a frame.
    let s =
        run(b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x95\x02\x00\x00\x00\x00\x00\x00\x00N..");
    assert!(
        s.anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::NestedFrame { .. }))
    );
}

#[test]
fn several_streams_and_trailing_junk() {
    let mut b = b"K\x01.".to_vec();
    b.extend_from_slice(b"cos\nsystem\n(S'id'\ntR.");
    b.extend_from_slice(b"\n\n\t\t");
    let (streams, trailing) = analyze_all(&b, 0, &Options::default(), 100);
    assert_eq!(streams.len(), 2);
    assert_eq!(calls(&streams[1]), ["os.system('id')"]);
    assert_eq!(trailing, Some(b.len() as u64 - 4));
}

#[test]
fn budgets_stop_and_say_so() {
    let limits = Limits {
        max_ops: 10,
        ..Limits::default()
    };
    let opts = Options {
        limits,
        ..Options::default()
    };
    let b = b"]"
        .iter()
        .chain([b'K', 1, b'a'].iter().cycle().take(60))
        .copied()
        .collect::<Vec<u8>>();
    let s = run_stream(&b, 0, 0, ReadView::Linear, &opts);
    assert!(matches!(s.stop, StopReason::Budget { .. }), "{:?}", s.stop);
    let limits = Limits {
        max_memo: 2,
        ..Limits::default()
    };
    let opts = Options {
        limits,
        ..Options::default()
    };
    let s = run_stream(b"K\x01q\x01q\x02q\x03.", 0, 0, ReadView::Linear, &opts);
    assert!(matches!(s.stop, StopReason::Budget { .. }));
    // DUP/GET expansion costs nothing: references, not copies.
    let mut b = b"]q\x00".to_vec();
    for _ in 0..1000 {
        b.extend_from_slice(b"(h\x00h\x00h\x00h\x00l");
    }
    b.push(b'.');
    let s = run(&b);
    assert!(matches!(s.stop, StopReason::Stop));
    assert!(s.nodes.len() < 2000);
    assert!(result(&s).len() < 2000, "rendering is bounded");
}

#[test]
fn long_literals_keep_a_prefix() {
    let mut b = b"X\x00\x00\x01\x00".to_vec();
    b.extend(std::iter::repeat_n(b'a', 65536));
    b.push(b'.');
    let s = run(&b);
    match s.node(s.result.unwrap()) {
        Some(Node::Str(t)) => {
            assert!(t.is_truncated());
            assert_eq!(t.len, 65536);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn buffered_files_can_mix_readings_per_frame() {
    // A straddling frame: harmless bytes to a linear reader, `hidden` run by
    // an exact (frame-sized) read.
    fn gadget(hidden: &[u8]) -> Vec<u8> {
        let mut g = b"\x95\x04\x00\x00\x00\x00\x00\x00\x00\x8c\x06xx".to_vec();
        g.extend_from_slice(b"yyyyC");
        g.push(hidden.len() as u8);
        g.extend_from_slice(hidden);
        g
    }
    // The call happens only when the first frame is read exactly and the
    // second through a peek window: neither pure reading sees it.
    let mut b = b"\x80\x04".to_vec();
    b.extend(gadget(b"0cos\nsystem\n(Vid\n"));
    b.extend(gadget(b"00"));
    b.extend_from_slice(b"00tR.");
    let v = analyze_views(&b, 0, 0, &Options::default());
    assert!(v[0].calls.is_empty() && v[0].view == ReadView::Linear);
    assert!(v[1].calls.is_empty() && v[1].view == ReadView::FileNoPeek);
    let with_call: Vec<&Stream> = v
        .iter()
        .filter(|s| {
            s.calls
                .iter()
                .any(|c| s.render_call(c) == "os.system('id')")
        })
        .collect();
    assert_eq!(
        with_call.len(),
        1,
        "{:?}",
        v.iter().map(|s| s.view).collect::<Vec<_>>()
    );
    assert_eq!(with_call[0].view, ReadView::Mixed(0b01));
    assert_eq!(with_call[0].view.name(), "file-mixed-1");
}

/// A joblib-style pickle: `NumpyArrayWrapper` whose BUILD is followed by
/// `tail` (the array's raw bytes for joblib.load), then `rest`.
fn joblib_pickle(dtype: &str, dims: &[u8], align: bool, tail: &[u8], rest: &[u8]) -> Vec<u8> {
    fn u(s: &str) -> Vec<u8> {
        let mut v = vec![0x8c, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }
    let mut b = b"\x80\x04".to_vec();
    b.extend(u("joblib.numpy_pickle"));
    b.extend(u("NumpyArrayWrapper"));
    b.extend_from_slice(b"\x93)\x81}(");
    b.extend(u("shape"));
    b.push(b'(');
    for d in dims {
        b.extend_from_slice(&[b'K', *d]);
    }
    b.push(b't');
    b.extend(u("dtype"));
    b.extend(u("numpy"));
    b.extend(u("dtype"));
    b.push(0x93);
    b.extend(u(dtype));
    b.extend_from_slice(b"\x89\x88\x87R(K\x03");
    b.extend(u("<"));
    b.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    if align {
        b.extend(u("numpy_array_alignment_bytes"));
        b.extend_from_slice(b"K\x10");
    }
    b.extend_from_slice(b"ub");
    b.extend_from_slice(tail);
    b.extend_from_slice(rest);
    b
}

#[test]
fn joblib_reads_array_bytes_inline() {
    // Three float32s whose bytes are opcodes to pickle.load: os.system import.
    let data = b"cos\nsystem\n)";
    assert_eq!(data.len(), 12);
    let b = joblib_pickle("f4", &[3], false, data, b"0N.");
    let v = analyze_views(&b, 0, 0, &Options::default());
    let joblib = v
        .iter()
        .find(|s| s.view == ReadView::Joblib)
        .expect("joblib view");
    assert!(matches!(joblib.stop, StopReason::Stop), "{:?}", joblib.stop);
    assert_eq!(joblib.end, b.len() as u64);
    assert!(!joblib.imports.iter().any(|i| i.module == "os"));
    // pickle.load reads the same bytes as code.
    let linear = &v[0];
    assert!(linear.imports.iter().any(|i| i.qualified() == "os.system"));

    // With joblib's alignment padding: a length byte, then that many bytes.
    let mut tail = vec![2u8, 0xff, 0xff];
    tail.extend_from_slice(data);
    let b = joblib_pickle("f4", &[3], true, &tail, b"0N.");
    let v = analyze_views(&b, 0, 0, &Options::default());
    let j = v.iter().find(|s| s.view == ReadView::Joblib).unwrap();
    assert!(matches!(j.stop, StopReason::Stop), "{:?}", j.stop);
    assert_eq!(j.end, b.len() as u64);

    // An array longer than the file: joblib.load fails there.
    let short = joblib_pickle("f8", &[200], false, b"", b".");
    let v = analyze_views(&short, 0, 0, &Options::default());
    let j = v.iter().find(|s| s.view == ReadView::Joblib).unwrap();
    assert!(matches!(&j.stop, StopReason::Error { message, .. } if message.contains("truncated")));

    // A dtype the engine cannot size is a budget stop (inconclusive), never an error.
    let odd = joblib_pickle("q7", &[1], false, b"xxxxxxx", b".");
    let v = analyze_views(&odd, 0, 0, &Options::default());
    let j = v.iter().find(|s| s.view == ReadView::Joblib).unwrap();
    assert!(matches!(j.stop, StopReason::Budget { .. }), "{:?}", j.stop);
}

#[test]
fn joblib_object_arrays_are_inner_pickles() {
    let inner = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.";
    let b = joblib_pickle("O8", &[1], false, inner, b"0N.");
    let v = analyze_views(&b, 0, 0, &Options::default());
    let j = v.iter().find(|s| s.view == ReadView::Joblib).unwrap();
    assert!(matches!(j.stop, StopReason::Stop), "{:?}", j.stop);
    assert_eq!(j.end, b.len() as u64);
    let start = (b.len() - inner.len() - 3) as u64;
    assert_eq!(j.inline_pickles, vec![start]);
    let s =
        pickguard_pickle::run_stream(&b, start as usize, 0, ReadView::Linear, &Options::default());
    assert!(
        s.calls
            .iter()
            .any(|c| s.render_call(c) == "os.system('id')")
    );
}
