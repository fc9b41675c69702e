//! zip and tar archives: members in the order a loader reads them, zip
//! discrepancies, the Keras config.

use super::*;

/// A TorchScript source member (`code/…/x.py`); `.debug_pkl` beside it is a
/// pickle and is judged as one.
fn is_torchscript_source(rel: &str) -> bool {
    rel.starts_with("code/") && rel.ends_with(".py")
}

impl Scanner {
    pub(super) fn scan_zip(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: Option<String>,
        depth: usize,
    ) {
        let top = depth == 0 && member.is_none();
        let ar = match zip::read(data, self.options.max_members) {
            Ok(a) => a,
            Err(e) => {
                if top {
                    ctx.set_format("zip");
                }
                // Over the member budget is a budget, not a broken file.
                let over =
                    zip::declared_entries(data).filter(|&n| n > self.options.max_members as u64);
                ctx.push(match over {
                    Some(n) => Finding::new(
                        Rule::BudgetExceeded,
                        format!(
                            "zip archive of {n} members, more than the limit of {} (raise it with --max-members or [limits] max_members)",
                            self.options.max_members
                        ),
                        loc(&member, None, None, ReadView::Linear),
                    ),
                    None => Finding::new(
                        Rule::Unreadable,
                        format!("zip archive: {e}"),
                        loc(&member, None, None, ReadView::Linear),
                    ),
                });
                return;
            }
        };
        // torch: records under the first entry's folder (formats::torch).
        let torch = TorchLayout::of(&ar);
        let torchscript = torch.as_ref().is_some_and(|l| l.torchscript);
        let is_torch = torch.is_some();
        // Keras 3: config.json and metadata.json at the root; config.json is
        // judged when the member loop reads it.
        // Keras reads only config.json (metadata.json is optional), by the
        // name Python's zipfile gives it (cut at a NUL).
        let keras = !is_torch
            && ar
                .entries
                .iter()
                .any(|e| python_zip_name(&e.name) == "config.json");
        if top {
            ctx.set_format(if torchscript {
                "torchscript"
            } else if is_torch {
                "torch-zip"
            } else if keras {
                "keras"
            } else {
                "zip"
            });
        }
        if let Some(l) = torch.as_ref().filter(|l| l.torchscript) {
            let f = self.torchscript_code(ctx, data, &ar, l, &member);
            ctx.push(f);
        }
        self.scan_zip_members(
            ctx,
            data,
            &ar,
            &member,
            depth,
            match &torch {
                Some(l) => ZipKind::Torch(l),
                None if keras => ZipKind::Keras,
                None => ZipKind::Plain,
            },
        );
    }

    /// A Keras 3 `config.json`: Lambda bytecode and the modules it imports,
    /// and the checkpoints its TorchModuleWrapper layers carry (scanned as
    /// nested files, so the file is judged by what they contain).
    pub(super) fn check_keras(&self, ctx: &mut Ctx, json: &[u8], m: &Option<String>, depth: usize) {
        let at = loc(m, None, None, ReadView::Linear);
        match crate::keras::check_config(&self.policy, json) {
            Ok(judged) => {
                for (rule, message, global) in judged.hits {
                    let mut f = Finding::new(rule, message, at.clone());
                    f.global = global;
                    ctx.push(f);
                }
                for blob in judged.blobs {
                    let inner = join_member(m, &format!("<{}.module>", blob.layer));
                    match blob.bytes {
                        Ok(bytes) => {
                            ctx.push(Finding::new(
                                Rule::KerasTorchModule,
                                format!(
                                    "layer {} is a TorchModuleWrapper carrying a {}-byte torch.save checkpoint, which Keras loads with torch.load(weights_only=False) (safe_mode=False, and in any mode before Keras 3.11): scanned as {}",
                                    blob.layer,
                                    bytes.len(),
                                    inner.as_deref().unwrap_or("")
                                ),
                                at.clone(),
                            ));
                            ctx.inflated += bytes.len() as u64;
                            if ctx.inflated > self.options.max_decompressed {
                                ctx.push(Finding::new(
                                    Rule::BudgetExceeded,
                                    format!(
                                        "decoded TorchModuleWrapper checkpoints pass the {}-byte decompression budget: not scanned",
                                        self.options.max_decompressed
                                    ),
                                    loc(&inner, None, None, ReadView::Linear),
                                ));
                                continue;
                            }
                            // torch.load reads a zip, or else a pickle from
                            // byte 0; a torch.save checkpoint is one of them.
                            // Anything else is not what Keras wrote, so it is
                            // not called clean: Python may decode it otherwise.
                            if !matches!(sniff(&bytes), Sniffed::Zip | Sniffed::PickleLike) {
                                ctx.push(Finding::new(
                                    Rule::Unreadable,
                                    format!(
                                        "layer {}'s TorchModuleWrapper checkpoint decodes to neither a zip nor a pickle: not analysed",
                                        blob.layer
                                    ),
                                    loc(&inner, None, None, ReadView::Linear),
                                ));
                                continue;
                            }
                            self.explore(ctx, &bytes, inner, depth + 1);
                        }
                        Err(e) => ctx.push(Finding::new(
                            Rule::Unreadable,
                            format!(
                                "layer {}'s TorchModuleWrapper checkpoint is not readable base64 ({e}): not analysed",
                                blob.layer
                            ),
                            loc(&inner, None, None, ReadView::Linear),
                        )),
                    }
                }
            }
            Err(err) => ctx.push(Finding::new(
                Rule::Unreadable,
                format!("Keras config.json not analysed: {err}"),
                at,
            )),
        }
    }

    /// A member of the file itself (not of a nested archive) whose bytes
    /// were not fetched: asked for, and reported unread until they are.
    fn not_fetched(&self, ctx: &mut Ctx, data: &[u8], e: &zip::Entry, m: &Option<String>) -> bool {
        let start = e.local_header_offset;
        // Without a local header the data's place is unknown: ask for the
        // most the header's lengths allow. A stored member is read for its
        // uncompressed size, whatever its compressed size says.
        let end = e
            .data_offset
            .unwrap_or(start.saturating_add(30 + 2 * 0xffff))
            .saturating_add(e.compressed_size.max(e.size));
        self.unfetched(ctx, data, start, end, m, "member")
    }

    /// Bytes `start..end` of the file itself that were not fetched (a
    /// remote file read sparsely): asked for, and reported unread until
    /// they are.
    pub(super) fn unfetched(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        start: u64,
        end: u64,
        m: &Option<String>,
        what: &str,
    ) -> bool {
        let Some(absent) = &self.options.absent else {
            return false;
        };
        if ctx.top != (data.as_ptr() as usize, data.len()) {
            return false;
        }
        let end = end.min(data.len() as u64);
        if !absent.iter().any(|&(a, b)| a < end && start < b) {
            return false;
        }
        ctx.missing.push((start, end));
        ctx.push(Finding::new(
            Rule::Unreadable,
            format!("{what} not fetched from the remote file; its content was not analysed"),
            loc(m, None, None, ReadView::Linear),
        ));
        true
    }

    pub(super) fn scan_zip_members(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        ar: &zip::Archive,
        member: &Option<String>,
        depth: usize,
        kind: ZipKind,
    ) {
        let torch = match kind {
            ZipKind::Torch(l) => Some(l),
            _ => None,
        };
        for d in &ar.discrepancies {
            let rule = match d.kind {
                zip::DiscrepancyKind::Crc => Rule::ZipCrcMismatch,
                // miniz cannot read the entry: torch.load fails on it.
                zip::DiscrepancyKind::NoLocalHeader | zip::DiscrepancyKind::DataPastEnd => {
                    Rule::Unreadable
                }
                _ => Rule::ZipTamper,
            };
            let f = Finding::new(
                rule,
                format!(
                    "{}{}",
                    d.entry
                        .as_ref()
                        .map(|e| format!("{e}: "))
                        .unwrap_or_default(),
                    d.what
                ),
                loc(
                    &d.entry
                        .as_ref()
                        .map(|e| join_member(member, e).unwrap_or_default()),
                    None,
                    None,
                    ReadView::Linear,
                ),
            );
            ctx.push(f);
        }
        let torchscript = torch.is_some_and(|l| l.torchscript);
        // data.pkl first (every name torch takes for it: case is ignored),
        // so storage records it references are known.
        let mut order: Vec<&zip::Entry> = ar.entries.iter().collect();
        if let Some(l) = torch {
            order.sort_by_key(|e| l.relative_folded(&e.name).as_deref() != Some("data.pkl"));
        }
        let before = ctx.storages.len();
        let mut referenced: Option<HashSet<String>> = None;
        for e in order {
            ctx.members += 1;
            if self.out_of_time() {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    "time limit reached; remaining archive members were not analysed",
                    loc(member, None, None, ReadView::Linear),
                ));
                return;
            }
            if ctx.members > self.options.max_members {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!("more than {} archive members", self.options.max_members),
                    loc(member, None, None, ReadView::Linear),
                ));
                return;
            }
            let m = join_member(member, &e.name);
            if e.name.contains('\0') {
                ctx.push(Finding::new(
                    Rule::ZipTamper,
                    format!(
                        "member name holds a NUL byte: Python's zipfile (Keras, numpy, zipfile users) calls it {:?}, torch's reader sees the whole name",
                        python_zip_name(&e.name)
                    ),
                    loc(&m, None, None, ReadView::Linear),
                ));
            }
            // The name relative to the root as torch compares it (no case).
            let rel = torch.and_then(|l| l.relative_folded(&e.name));
            let rel = rel.as_deref();
            if let Some(key) = rel.and_then(|rel| rel.strip_prefix("data/")) {
                // data.pkl comes first, so the keys it references are known by now.
                let set = referenced.get_or_insert_with(|| {
                    ctx.storages[before..]
                        .iter()
                        .map(|s| s.key.to_ascii_lowercase())
                        .collect()
                });
                if set.contains(key) {
                    continue; // tensor bytes, never unpickled
                }
            }
            if e.name.ends_with('/') && e.size == 0 {
                continue;
            }
            // TorchScript source: compiled by torch.jit.load, never
            // unpickled; reported once by torchscript_code.
            if torchscript && rel.is_some_and(is_torchscript_source) {
                continue;
            }
            if e.flags & 1 != 0 {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    "member is encrypted; its content was not analysed",
                    loc(&m, None, None, ReadView::Linear),
                ));
                continue;
            }
            if self.not_fetched(ctx, data, e, &m) {
                continue;
            }
            let remaining = self.options.max_decompressed.saturating_sub(ctx.inflated);
            let bytes = match zip::entry_data(data, e, remaining) {
                Ok((b, crc_ok)) => {
                    if let std::borrow::Cow::Owned(v) = &b {
                        ctx.inflated += v.len() as u64;
                    }
                    if !crc_ok {
                        ctx.push(Finding::new(Rule::ZipCrcMismatch, "CRC-32 of the data does not match the central directory: torch loads it, Python's zipfile refuses it", loc(&m, None, None, ReadView::Linear)));
                    }
                    b
                }
                Err(err) => {
                    ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!("member not read: {err}"),
                        loc(&m, None, None, ReadView::Linear),
                    ));
                    continue;
                }
            };
            // Whatever else the archive is (a torch checkpoint, a polyglot's
            // zip), keras.saving.load_model reads a root config.json.
            if python_zip_name(&e.name) == "config.json" {
                self.check_keras(ctx, &bytes, &m, depth);
                continue;
            }
            let role = match rel {
                Some("data.pkl") if torchscript => Role::TorchScript,
                Some("data.pkl") => match torch {
                    Some(l) => Role::TorchData(l),
                    None => Role::Generic,
                },
                Some(_) if torchscript => Role::TorchScript,
                _ => Role::Generic,
            };
            if matches!(role, Role::TorchData(_)) {
                self.scan_pickle_region(ctx, &bytes, 0, &m, role, true);
                continue;
            }
            match sniff(&bytes) {
                Sniffed::PickleLike => {
                    let probe =
                        pk::run_stream(&bytes, 0, 0, ReadView::Linear, &self.options.pickle);
                    if !probe.is_junk() {
                        let legacy = is_legacy_magic(&probe);
                        if legacy {
                            self.scan_torch_legacy(ctx, &bytes, &m);
                        } else {
                            self.scan_pickle_region(ctx, &bytes, 0, &m, role, true);
                        }
                    }
                }
                // Everything else is read as a file of its own: a member
                // that sniffs as safetensors (or as nothing) may still be a
                // pickle from byte 0, or carry a zip at its end.
                _ => self.explore(ctx, &bytes, m, depth + 1),
            }
        }
    }

    /// A 7z archive: every member read as a file of its own, as `py7zr`
    /// or `7z x` hands it to a loader (the nullifAI models were torch
    /// checkpoints inside 7z). What cannot be decoded (encryption, a method
    /// not built in) is said, never skipped.
    pub(super) fn scan_7z(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        depth: usize,
    ) {
        use pickguard_formats::sevenz::{self, Ended, Flow};
        let max_members = self.options.max_members.saturating_sub(ctx.members);
        // What members decode counts at once, so that nested archives see
        // what is left of the file's budget.
        let budget =
            std::cell::Cell::new(self.options.max_decompressed.saturating_sub(ctx.inflated));
        let mut timed_out = None;
        let deadline = self.options.pickle.limits.deadline;
        let res = sevenz::for_each(data, max_members, &budget, deadline, |name, bytes| {
            ctx.members += 1;
            ctx.inflated += bytes.len() as u64;
            let m = join_member(member, name);
            if self.out_of_time() {
                timed_out = Some(m);
                return Flow::Stop;
            }
            self.explore_named(ctx, bytes, m, name, depth + 1);
            budget.set(self.options.max_decompressed.saturating_sub(ctx.inflated));
            Flow::Continue
        });
        if let Some(m) = timed_out {
            ctx.push(Finding::new(
                Rule::BudgetExceeded,
                "time limit reached; remaining 7z members were not analysed",
                loc(&m, None, None, ReadView::Linear),
            ));
        }
        let at = |m: Option<&str>| {
            loc(
                &m.map(|m| join_member(member, m).unwrap_or_default())
                    .or(member.clone()),
                None,
                None,
                ReadView::Linear,
            )
        };
        match res {
            Ok(()) => {}
            Err(Ended::TooManyMembers(n)) => ctx.push(Finding::new(
                Rule::BudgetExceeded,
                format!(
                    "7z archive of {n} members, more than the limit of {} (raise it with --max-members)",
                    self.options.max_members
                ),
                at(None),
            )),
            Err(Ended::TooLarge { member: m }) => ctx.push(Finding::new(
                Rule::BudgetExceeded,
                format!(
                    "7z members decompress past {} bytes (--max-decompressed); this one and the rest were not analysed",
                    self.options.max_decompressed
                ),
                at(Some(&m)),
            )),
            Err(Ended::OutOfTime { member: m }) => ctx.push(Finding::new(
                Rule::BudgetExceeded,
                "time limit reached while a 7z member decoded; it and the rest were not analysed",
                at(Some(&m)),
            )),
            Err(Ended::Unreadable { member: None, why }) => ctx.push(Finding::new(
                Rule::Unreadable,
                format!("7z archive not read: {why}"),
                at(None),
            )),
            Err(Ended::Unreadable { member: Some(m), why }) => ctx.push(Finding::new(
                Rule::Unreadable,
                format!("7z member not fully read: {why}; members after it were not analysed"),
                at(Some(&m)),
            )),
        }
    }

    pub(super) fn scan_tar(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: Option<String>,
        depth: usize,
    ) {
        let top = depth == 0 && member.is_none();
        let members = match tar::members(data, self.options.max_members) {
            Ok(m) => m,
            Err(e) => {
                if top {
                    ctx.set_format("tar");
                }
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("tar archive: {e}"),
                    loc(&member, None, None, ReadView::Linear),
                ));
                return;
            }
        };
        let names: HashSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let legacy = ["sys_info", "pickle", "storages", "tensors"]
            .iter()
            .all(|n| names.contains(n));
        if top {
            ctx.set_format(if legacy { "torch-legacy-tar" } else { "tar" });
        }
        for mem in &members {
            ctx.members += 1;
            if self.out_of_time() {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    "time limit reached; remaining archive members were not analysed",
                    loc(&member, None, None, ReadView::Linear),
                ));
                return;
            }
            if ctx.members > self.options.max_members {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!("more than {} archive members", self.options.max_members),
                    loc(&member, None, None, ReadView::Linear),
                ));
                return;
            }
            let bytes = &data[mem.offset..mem.offset + mem.size];
            let m = join_member(&member, &mem.name);
            if legacy && (mem.name == "storages" || mem.name == "tensors") {
                self.scan_legacy_tar_records(ctx, bytes, &m, mem.name == "storages");
                continue;
            }
            if legacy && (mem.name == "pickle" || mem.name == "sys_info") {
                self.scan_pickle_region(
                    ctx,
                    bytes,
                    0,
                    &m,
                    if mem.name == "pickle" {
                        Role::TorchLegacyTar
                    } else {
                        Role::Generic
                    },
                    true,
                );
                continue;
            }
            match sniff(bytes) {
                Sniffed::PickleLike => {
                    let probe = pk::run_stream(bytes, 0, 0, ReadView::Linear, &self.options.pickle);
                    if !probe.is_junk() {
                        self.scan_pickle_region(ctx, bytes, 0, &m, Role::Generic, true);
                    }
                }
                Sniffed::Unknown | Sniffed::Safetensors => {}
                _ => self.explore(ctx, bytes, m, depth + 1),
            }
        }
    }

    /// The PG202 finding of a TorchScript archive: its `code/` files and the
    /// classes they define (read as text, bounded by the decompression
    /// budget; the code itself is judged as trusted-or-not, not analysed).
    fn torchscript_code(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        ar: &zip::Archive,
        l: &TorchLayout,
        member: &Option<String>,
    ) -> Finding {
        const LISTED: usize = 12;
        let code: Vec<&zip::Entry> = ar
            .entries
            .iter()
            // Without ASCII case, as torch finds records (code/X.PY loads).
            .filter(|e| {
                l.relative_folded(&e.name)
                    .as_deref()
                    .is_some_and(is_torchscript_source)
            })
            .collect();
        let mut classes: Vec<String> = Vec::new();
        let mut unread = 0usize;
        for e in &code {
            let m = join_member(member, &e.name);
            if self.not_fetched(ctx, data, e, &m) {
                continue;
            }
            let remaining = self.options.max_decompressed.saturating_sub(ctx.inflated);
            let Ok((text, _)) = zip::entry_data(data, e, remaining) else {
                unread += 1;
                continue;
            };
            ctx.inflated += text.len() as u64;
            let file = python_zip_name(&e.name);
            for call in crate::torchscript::host_calls(&String::from_utf8_lossy(&text)) {
                use crate::torchscript::Kind;
                let when = match call.function.as_deref() {
                    Some("__setstate__") => {
                        "in __setstate__, which torch.jit.load runs".to_string()
                    }
                    Some(f) => format!("in {f}, which runs when the model is called"),
                    None => "at module level".to_string(),
                };
                let (rule, does) = match call.kind {
                    Kind::Save => (Rule::TorchScriptHostOp, "writes a file (aten::save)"),
                    Kind::FromFile => (
                        Rule::TorchScriptHostOp,
                        "reads a file, or with shared=True writes one (aten::from_file)",
                    ),
                    Kind::CustomOp => (
                        Rule::TorchScriptCustomOp,
                        "is a custom operator: a native library must be loaded for it",
                    ),
                };
                ctx.push(Finding::new(
                    rule,
                    format!("{file} line {}: {} {does}, {when}", call.line, call.what),
                    loc(&m, None, None, ReadView::Linear),
                ));
            }
            for line in text.split(|&b| b == b'\n') {
                let Some(rest) = line.strip_prefix(b"class ") else {
                    continue;
                };
                let end = rest
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                    .unwrap_or(rest.len());
                if end > 0 && classes.len() <= LISTED {
                    classes.push(String::from_utf8_lossy(&rest[..end]).into_owned());
                }
            }
        }
        // The lite interpreter (`_load_for_lite_interpreter`, .ptl) runs
        // bytecode.pkl's instructions, not code/: its op table names the ops.
        for e in ar
            .entries
            .iter()
            .filter(|e| l.relative_folded(&e.name).as_deref() == Some("bytecode.pkl"))
        {
            let m = join_member(member, &e.name);
            if self.not_fetched(ctx, data, e, &m) {
                continue;
            }
            let remaining = self.options.max_decompressed.saturating_sub(ctx.inflated);
            let Ok((bytes, _)) = zip::entry_data(data, e, remaining) else {
                continue;
            };
            for op in ["aten::save", "aten::from_file"] {
                // The op table's strings, as torch's C++ unpickler reads
                // them (BINUNICODE, SHORT_BINUNICODE, BINUNICODE8): the
                // whole string is the op name, not a constant naming it.
                let n = op.len();
                let forms: [Vec<u8>; 3] = [
                    [&[b'X'][..], &(n as u32).to_le_bytes(), op.as_bytes()].concat(),
                    [&[0x8c, n as u8][..], op.as_bytes()].concat(),
                    [&[0x8d][..], &(n as u64).to_le_bytes(), op.as_bytes()].concat(),
                ];
                if forms
                    .iter()
                    .any(|f| bytes.windows(f.len()).any(|w| w == f.as_slice()))
                {
                    ctx.push(Finding::new(
                        Rule::TorchScriptHostOp,
                        format!("bytecode.pkl's op table names {op}: the lite interpreter runs it (a file write or read)"),
                        loc(&m, None, None, ReadView::Linear),
                    ));
                }
            }
        }
        let mut defines = classes
            .iter()
            .take(LISTED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if classes.len() > LISTED {
            defines.push_str(", ...");
        }
        Finding::new(
            Rule::TorchScript,
            format!(
                "TorchScript archive with {} code file(s){}{}{}: torch.jit.load compiles and runs them, and torch.load(weights_only=True) refuses such files",
                code.len(),
                code.first()
                    .map(|c| format!(" (first: {})", python_zip_name(&c.name)))
                    .unwrap_or_default(),
                if defines.is_empty() {
                    String::new()
                } else {
                    format!(" defining {defines}")
                },
                if unread > 0 {
                    format!("; {unread} not readable")
                } else {
                    String::new()
                },
            ),
            loc(member, None, None, ReadView::Linear),
        )
    }
}
