//! Pickles wherever a loader would unpickle them: whole files, regions,
//! pickles embedded in other formats, polyglots.

use super::*;

impl Scanner {
    /// A file sniffed as something else that `pickle.load` would still read
    /// as a pickle which imports or calls something: a polyglot, and the
    /// pickle is analysed like any other. (A pickle reading that only builds
    /// data, or errors at once, runs nothing and is not reported.)
    pub(super) fn check_pickle_at_start(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        kind: Sniffed,
    ) {
        if !pickguard_pickle::is_plausible_start(data) {
            return;
        }
        let first = pk::run_stream(data, 0, 0, ReadView::Linear, &self.options.pickle);
        if first.imports.is_empty() && first.calls.is_empty() {
            return;
        }
        let what = format!("{kind:?}").to_lowercase();
        ctx.push(Finding::new(
            Rule::Polyglot,
            format!(
                "the file sniffs as {what}, but read from its first byte it is also a pickle that imports or calls code: pickle.load (and torch.load's legacy path) run it"
            ),
            loc(member, None, Some(0), ReadView::Linear),
        ));
        self.scan_pickle_region(ctx, data, 0, member, Role::Generic, true);
    }

    /// A zip central directory in a file that does not start as a zip.
    pub(super) fn check_polyglot(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        depth: usize,
        what: &str,
    ) -> bool {
        if zip::find_eocd(data).is_none() {
            return false;
        }
        let ar = match zip::read(data, self.options.max_members) {
            Ok(ar) if !ar.entries.is_empty() => ar,
            Ok(_) => return false,
            Err(_) => {
                // Too many members to read is still an archive from its end.
                let Some(n) =
                    zip::declared_entries(data).filter(|&n| n > self.options.max_members as u64)
                else {
                    return false;
                };
                ctx.push(Finding::new(
                    Rule::Polyglot,
                    format!(
                        "the file reads as {what} from its start and as a zip archive of {n} members from its end; loaders that check the end (Python zipfile, numpy.load of .npz) see the archive"
                    ),
                    loc(member, None, Some(0), ReadView::Linear),
                ));
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!(
                        "its zip archive has {n} members, more than the limit of {} (raise it with --max-members or [limits] max_members)",
                        self.options.max_members
                    ),
                    loc(member, None, None, ReadView::Linear),
                ));
                return true;
            }
        };
        ctx.push(Finding::new(
            Rule::Polyglot,
            format!(
                "the file reads as {what} from its start and as a zip archive of {} members from its end; loaders that check the end (Python zipfile, numpy.load of .npz) see the archive",
                ar.entries.len()
            ),
            loc(member, None, Some(0), ReadView::Linear),
        ));
        self.scan_zip_members(ctx, data, &ar, member, depth, ZipKind::Plain);
        true
    }

    pub(super) fn scan_pickle_file(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: Option<String>,
        depth: usize,
    ) {
        let top = depth == 0 && member.is_none();
        // Legacy torch checkpoints start with the magic number stream.
        let first = pk::run_stream(data, 0, 0, ReadView::Linear, &self.options.pickle);
        let is_legacy = is_legacy_magic(&first);
        if is_legacy {
            if top {
                ctx.set_format("torch-legacy");
            }
            self.scan_torch_legacy(ctx, data, &member);
            self.check_polyglot(ctx, data, &member, depth, "a legacy torch checkpoint");
            return;
        }
        if first.is_junk() {
            // Not a pickle after all.
            self.check_polyglot(ctx, data, &member, depth, "other");
            return;
        }
        if top {
            ctx.set_format("pickle");
        }
        self.scan_pickle_region(ctx, data, 0, &member, Role::Generic, true);
        self.check_polyglot(ctx, data, &member, depth, "a pickle");
    }

    /// Analyse every stream in `data` (offsets reported as `base + i`).
    pub(super) fn scan_pickle_region(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        base: u64,
        member: &Option<String>,
        role: Role,
        report_trailing: bool,
    ) {
        let (streams, trailing) =
            pk::analyze_all(data, base, &self.options.pickle, self.options.max_streams);
        let mut idx = 0usize;
        let mut n_linear = 0;
        // joblib.load reads object arrays as inner pickles, inline, each with
        // a fresh unpickler (its own memo). pickle.load reads the same bytes
        // with the outer memo, so a name built from memo entries there mixes
        // the two pickles (`joblib.numpy_pickle.dtype`): a lookup that fails,
        // not a callable the file names. Such names are told apart below.
        let mut inner_streams: Vec<(usize, Vec<Stream>)> = Vec::new();
        for (si, s) in streams.iter().enumerate() {
            for &off in &s.inline_pickles {
                let start = (off - base) as usize;
                inner_streams.push((
                    si,
                    pk::analyze_views(data, start, base, &self.options.pickle),
                ));
            }
        }
        ctx.joblib_inner = inner_streams
            .iter()
            .filter_map(|(_, views)| views.iter().find(|v| v.view == ReadView::Linear))
            .map(|v| {
                let names = v
                    .imports
                    .iter()
                    .map(|i| (i.offset, i.qualified()))
                    .collect();
                (v.start, v.end, names)
            })
            .collect();
        for (si, s) in streams.iter().enumerate() {
            if s.view == ReadView::Linear {
                idx = n_linear;
                n_linear += 1;
            }
            self.evaluate(ctx, s, member, idx, role);
            for (_, views) in inner_streams.iter().filter(|(i, _)| *i == si) {
                for inner in views {
                    self.evaluate(ctx, inner, member, idx, role);
                }
            }
        }
        ctx.joblib_inner.clear();
        self.scan_embedded_pickles(ctx, data, base, member, &streams);
        if n_linear > 1 {
            ctx.push(Finding::new(
                Rule::MultipleStreams,
                format!("{n_linear} pickle streams; each runs if the loader calls load() again"),
                loc(member, None, Some(base), ReadView::Linear),
            ));
        }
        if let Some(t) = trailing {
            if n_linear >= self.options.max_streams {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!(
                        "more than {} pickle streams; the rest was not analysed",
                        self.options.max_streams
                    ),
                    loc(member, None, Some(t), ReadView::Linear),
                ));
            } else if report_trailing {
                ctx.push(Finding::new(
                    Rule::TrailingData,
                    format!(
                        "{} bytes after the last pickle stream are not a pickle",
                        base + data.len() as u64 - t
                    ),
                    loc(member, None, Some(t), ReadView::Linear),
                ));
            }
        }
    }

    /// Byte strings passed to calls that are pickles themselves (the argument
    /// of `pickle.loads`, `torch.storage._load_from_bytes`...): scanned as
    /// nested members named `<pickle@OFFSET>`, a few levels deep.
    pub(super) fn scan_embedded_pickles(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        base: u64,
        member: &Option<String>,
        streams: &[Stream],
    ) {
        if ctx.nested >= 3 {
            return;
        }
        let mut seen = HashSet::new();
        for s in streams {
            for c in &s.calls {
                let Some(args) = c.args.and_then(|a| s.as_seq(a)) else {
                    continue;
                };
                for &a in args {
                    let Some(Node::Bytes(b) | Node::ByteArray(b)) = s.node(a) else {
                        continue;
                    };
                    let is_pickle = matches!(b.head.as_slice(), [0x80, p, ..] if *p <= 5);
                    if !is_pickle || !seen.insert(b.offset) {
                        continue;
                    }
                    let Some(start) = b.offset.checked_sub(base).map(|x| x as usize) else {
                        continue;
                    };
                    let Some(inner) = data.get(start..start + b.len as usize) else {
                        continue;
                    };
                    let m = join_member(member, &format!("<pickle@{}>", b.offset));
                    ctx.nested += 1;
                    self.scan_pickle_region(ctx, inner, 0, &m, Role::Generic, true);
                    ctx.nested -= 1;
                }
            }
        }
    }
}
