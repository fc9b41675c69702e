//! The symbolic unpickler, both read views: no panic, budgets hold.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pickguard_pickle::{Limits, Options, ReadView, run_stream};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_ops: 100_000, max_nodes: 100_000, ..Limits::default() };
    let opts = Options { limits: limits.clone(), ..Options::default() };
    for view in [ReadView::Linear, ReadView::FileNoPeek] {
        let s = run_stream(data, 0, 0, view, &opts);
        assert!(s.ops <= limits.max_ops);
        assert!(s.nodes.len() <= limits.max_nodes);
        assert!(s.end as usize <= data.len());
        if let Some(r) = s.result {
            let _ = s.render(r);
        }
        for c in &s.calls {
            let _ = s.render_call(c);
        }
    }
});
