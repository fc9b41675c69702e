//! Judging one pickle stream: how it stopped, what it imports and calls,
//! and what each global would do.

use super::*;

/// Where and how a global is used, for [`Scanner::judge_global`].
pub(super) struct GlobalSite<'a> {
    pub(super) module: &'a str,
    pub(super) name: &'a str,
    /// Its calls, rendered.
    pub(super) rendered: &'a [String],
    pub(super) ncalls: u64,
    pub(super) at: Location,
    pub(super) role: Role<'a>,
    /// How it was reached, when not by a plain import (`via getattr`).
    pub(super) via: Option<&'a str>,
}

impl Scanner {
    /// Judge one stream.
    pub(super) fn evaluate(
        &self,
        ctx: &mut Ctx,
        s: &Stream,
        member: &Option<String>,
        idx: usize,
        role: Role,
    ) {
        ctx.streams += (s.view == ReadView::Linear) as u64;
        let at = |off: u64| loc(member, Some(idx), Some(off), s.view);
        match &s.stop {
            StopReason::Stop => {}
            StopReason::Error { offset, message } => {
                if s.view == ReadView::Linear {
                    let joblib = s.imports.iter().any(pk::Import::is_joblib_array_wrapper);
                    ctx.push(Finding::new(
                        Rule::PickleError,
                        if joblib {
                            format!(
                                "pickle.load fails here ({message}); joblib.load reads array data here instead (see the joblib reading)"
                            )
                        } else {
                            format!(
                                "unpickling fails here ({message}); nothing after this offset runs"
                            )
                        },
                        at(*offset),
                    ));
                }
            }
            StopReason::Budget { offset, limit } => {
                ctx.push(Finding::new(
                    Rule::BudgetExceeded,
                    format!("limit {limit} reached; the rest of this stream was not analysed"),
                    at(*offset),
                ));
            }
        }
        let mut framed = false;
        let mut odd = 0;
        for a in &s.anomalies {
            match a {
                pk::Anomaly::FrameStraddle { offset, frame_end }
                | pk::Anomaly::NestedFrame { offset, frame_end } => {
                    if !framed && s.view == ReadView::Linear {
                        ctx.push(Finding::new(
                            Rule::FrameTamper,
                            format!(
                                "an opcode at {offset} crosses the frame that ends at {frame_end}: pickle.loads and the C unpickler reading a file (as torch.load does) execute different opcodes, and a buffered file (open(f, 'rb')) mixes the two per frame; every reading is analysed"
                            ),
                            at(*offset),
                        ));
                    }
                    framed = true;
                }
                _ => odd += 1,
            }
        }
        if odd > 0 && s.view == ReadView::Linear && !matches!(role, Role::TorchData(_)) {
            let first = s.anomalies.iter().find_map(|a| match a {
                pk::Anomaly::LateProto { offset, .. }
                | pk::Anomaly::OpcodeAboveProtocol { offset, .. }
                | pk::Anomaly::UnparsedLiteral { offset, .. } => Some(*offset),
                _ => None,
            });
            ctx.push(Finding::new(
                Rule::OddStructure,
                format!("{odd} opcode(s) a standard pickler does not write"),
                at(first.unwrap_or(s.start)),
            ));
        }

        // Calls grouped by the import they call, and getattr resolution.
        let mut calls_of: Vec<Vec<usize>> = vec![Vec::new(); s.imports.len()];
        for (ci, c) in s.calls.iter().enumerate() {
            if let Some(Node::Global(gi)) = s.node(c.callee) {
                calls_of[*gi].push(ci);
            }
        }
        // getattr(G, 'attr') calls whose target can be named.
        let resolved_getattr = |ci: usize| -> Option<(String, String)> {
            let c = &s.calls[ci];
            if c.kind != CallKind::Reduce {
                return None;
            }
            let imp = s.as_global(c.callee)?;
            if !(imp.module == "builtins" && imp.name == "getattr") {
                return None;
            }
            let args = s.as_seq(c.args?)?;
            if args.len() != 2 {
                return None;
            }
            let target = s.as_global(args[0])?;
            let attr = s.as_str(args[1])?;
            Some((target.module.clone(), format!("{}.{}", target.name, attr)))
        };

        // Code carried by value (cloudpickle, dill, types.CodeType): judged by
        // the names its code objects and globals use, not as a gadget.
        let family = code_by_value(s);
        if let Some(fam) = &family {
            let (rule, what) = if fam.danger.is_empty() {
                (
                    Rule::CodeByValue,
                    format!(
                        "rebuilds function(s) {} from bytecode; the code uses {}",
                        if fam.functions.is_empty() {
                            "(unnamed)".into()
                        } else {
                            fam.functions.join(", ")
                        },
                        if fam.names.is_empty() {
                            "no names".into()
                        } else {
                            fam.names.join(", ")
                        }
                    ),
                )
            } else {
                (
                    Rule::CodeByValueDangerous,
                    format!(
                        "rebuilds function(s) {} from bytecode whose code uses {}",
                        if fam.functions.is_empty() {
                            "(unnamed)".into()
                        } else {
                            fam.functions.join(", ")
                        },
                        fam.danger.join(", ")
                    ),
                )
            };
            let first = fam
                .imports
                .iter()
                .map(|&g| s.imports[g].offset)
                .min()
                .unwrap_or(s.start);
            ctx.push(Finding::new(rule, what, at(first)));
        }
        for (gi, imp) in s.imports.iter().enumerate() {
            if family.as_ref().is_some_and(|f| f.imports.contains(&gi)) {
                continue;
            }
            let calls: &[usize] = &calls_of[gi];
            let rendered: Vec<String> = calls
                .iter()
                .take(3)
                .map(|&ci| s.render_call(&s.calls[ci]))
                .collect();
            let q = imp.qualified();
            // builtins.getattr used only in resolvable form is judged by its targets.
            if imp.module == "builtins"
                && imp.name == "getattr"
                && !calls.is_empty()
                && calls.iter().all(|&ci| resolved_getattr(ci).is_some())
            {
                for &ci in calls {
                    let (m, n) = resolved_getattr(ci).unwrap_or_default();
                    self.judge_global(
                        ctx,
                        GlobalSite {
                            module: &m,
                            name: &n,
                            rendered: &[s.render_call(&s.calls[ci])],
                            ncalls: 0,
                            at: at(s.calls[ci].offset),
                            role,
                            via: Some("via getattr"),
                        },
                    );
                }
                continue;
            }
            // pickle.dumps(tensor) writes torch.storage._load_from_bytes(b'...')
            // with a legacy torch checkpoint as a literal: the checkpoint is
            // scanned (scan_embedded_pickles) and the file judged by it.
            if q == "torch.storage._load_from_bytes"
                // scan_embedded_pickles scans literals down to this depth.
                && ctx.nested < 3
                && !calls.is_empty()
                && calls.len() == s.calls.iter().filter(|c| s.as_global(c.callee).is_some_and(|g| g.qualified() == q)).count()
                && calls.iter().all(|&ci| {
                    let c = &s.calls[ci];
                    c.kind == CallKind::Reduce
                        && c.kwargs.is_none()
                        && c.args.and_then(|a| s.as_seq(a)).is_some_and(|args| {
                            args.len() == 1
                                && matches!(s.node(args[0]), Some(Node::Bytes(b)) if matches!(b.head.as_slice(), [0x80, p, ..] if *p <= 5))
                        })
                })
            {
                ctx.push(Finding::new(
                    Rule::NestedTorchData,
                    format!(
                        "{} nested torch checkpoint(s) loaded by torch.storage._load_from_bytes: scanned, judged by their own content",
                        calls.len()
                    ),
                    at(imp.offset),
                ));
                continue;
            }
            if let Some(code) = imp.ext_code {
                let mut f = Finding::new(
                    Rule::ExtensionCode,
                    format!(
                        "EXT opcode with code {code}: the global comes from copyreg's extension registry, which standard pickles never use, so the callable cannot be named from the file"
                    ),
                    at(imp.offset),
                );
                f.global = Some(q.clone());
                f.calls = rendered;
                ctx.push(f);
                continue;
            }
            // Inside a joblib inner pickle, read by a view that shares the
            // outer memo: a name the inner pickle's own reading does not make
            // is a memo mix-up of pickle.load, judged only if dangerous.
            if s.view != ReadView::Joblib
                && let Some((_, _, names)) = ctx
                    .joblib_inner
                    .iter()
                    .find(|(a, b, _)| (*a..*b).contains(&imp.offset))
                && names.get(&imp.offset).is_some_and(|n| *n != q)
                && matches!(
                    self.policy.classify(&imp.module, &imp.name),
                    crate::policy::Class::Library | crate::policy::Class::Allowed { .. }
                )
            {
                let own = names.get(&imp.offset).cloned().unwrap_or_default();
                ctx.push(Finding::new(
                    Rule::PickleError,
                    format!(
                        "pickle.load would look up {q} here: it reads joblib's inner pickle of an object array with the outer pickle's memo, while joblib.load reads it with its own and gets {own} (judged in the joblib reading); a third-party name made by that mix-up is not reported as code the file loads (standard-library and dangerous names still are)"
                    ),
                    at(imp.offset),
                ));
                continue;
            }
            if imp.truncated {
                let mut f = Finding::new(
                    Rule::ComputedGlobalName,
                    format!("global name {q:?} is computed at load time or too long to retain"),
                    at(imp.offset),
                );
                f.global = Some(q.clone());
                f.calls = rendered;
                ctx.push(f);
                continue;
            }
            self.judge_global(
                ctx,
                GlobalSite {
                    module: &imp.module,
                    name: &imp.name,
                    rendered: &rendered,
                    ncalls: calls.len() as u64,
                    at: at(imp.offset),
                    role,
                    via: None,
                },
            );
        }

        // Calls of things that are not named globals; mutations of globals.
        for c in &s.calls {
            let callee = s.node(c.callee);
            match c.kind {
                CallKind::Build | CallKind::Append | CallKind::SetItem | CallKind::AddItems => {
                    if let Some(Node::Global(gi)) = callee {
                        let imp = &s.imports[*gi];
                        let mut f = Finding::new(
                            Rule::MutatesGlobal,
                            format!(
                                "{} on the imported object {} changes its state for the whole process",
                                c.op.name(),
                                imp.qualified()
                            ),
                            at(c.offset),
                        );
                        f.global = Some(imp.qualified());
                        f.calls = vec![s.render_call(c)];
                        ctx.push(f);
                    }
                }
                _ => match callee {
                    Some(Node::Global(_)) => {}
                    Some(Node::Call(inner)) if resolved_getattr(*inner).is_some() => {}
                    // cloudpickle's _builtin_type('CodeType')(...) builds the code
                    // object (part of the code-by-value judgement above); calling
                    // a rebuilt *function* while loading stays a dynamic call.
                    Some(Node::Call(inner))
                        if family.is_some()
                            && s.as_global(s.calls[*inner].callee).is_some_and(|g| {
                                matches!(
                                    g.qualified().as_str(),
                                    "cloudpickle.cloudpickle._builtin_type"
                                        | "dill._dill._load_type"
                                )
                            }) => {}
                    Some(Node::Call(_)) | Some(Node::Persistent(_)) => {
                        let mut f = Finding::new(
                            Rule::DynamicCall,
                            "calls the result of another call; the callable is chosen at load time"
                                .to_string(),
                            at(c.offset),
                        );
                        f.calls = vec![s.render_call(c)];
                        ctx.push(f);
                    }
                    // CPython raises TypeError ("not callable"): nothing runs.
                    _ => {}
                },
            }
        }

        match role {
            Role::TorchData(layout) => self.check_torch_data(ctx, s, member, idx, layout),
            Role::TorchLegacy => self.check_legacy_pids(ctx, s, member, idx),
            Role::TorchScript => {}
            Role::TorchLegacyTar => {
                for p in &s.persistent_ids {
                    let ok = match s.node(p.pid) {
                        Some(Node::Str(_)) | Some(Node::Int(_)) => true,
                        Some(Node::Tuple(items)) => {
                            items.first().and_then(|&i| s.as_str(i)) == Some("module")
                        }
                        _ => false,
                    };
                    if !ok {
                        ctx.push(Finding::new(
                            Rule::TorchBadPersistentId,
                            format!(
                                "persistent id {} is not a legacy tar object key",
                                s.render(p.pid)
                            ),
                            loc(member, Some(idx), Some(p.offset), s.view),
                        ));
                    }
                }
            }
            Role::Generic => {
                if let Some(p) = s.persistent_ids.first() {
                    ctx.push(Finding::new(
                        Rule::PersistentId,
                        format!("{} persistent id(s); plain pickle.load refuses them, other loaders decide what they load", s.persistent_ids.len()),
                        at(p.offset),
                    ));
                }
            }
        }
    }

    /// One global's use: its class, its finding, its `GlobalUse` entry.
    pub(super) fn judge_global(&self, ctx: &mut Ctx, site: GlobalSite) {
        let GlobalSite {
            module,
            name,
            rendered,
            ncalls,
            at,
            role,
            via,
        } = site;
        let q = format!("{module}.{name}");
        let via_s = via.map(|v| format!(" ({v})")).unwrap_or_default();
        let (class, finding) = if let Some((tm, tn)) = attribute_walk(name) {
            let cls = self.policy.classify(&tm, &tn);
            let cap = match &cls {
                Class::Dangerous {
                    capability: Some(c),
                    ..
                } => format!(": {}", c.describe()),
                _ => String::new(),
            };
            (
                "attribute-walk".to_string(),
                Some((
                    Rule::AttributeWalk,
                    format!("{q}{via_s} walks through module attributes to {tm}.{tn}{cap}"),
                )),
            )
        } else if role == Role::TorchScript
            && (module.starts_with("__torch__") || module.starts_with("torch.jit"))
        {
            let cls = self.policy.classify(module, name);
            match cls {
                Class::Allowed { .. } => ("allowed".into(), None),
                _ => ("torchscript".into(), None),
            }
        } else {
            let cls = self.policy.classify(module, name);
            let what = if ncalls > 0 { "calls" } else { "imports" };
            let finding = cls.rule().map(|rule| {
                let msg = match &cls {
                    Class::Dangerous { capability, why } => {
                        let cap = capability.map(|c| c.describe()).unwrap_or(why);
                        format!("{what} {q}{via_s}, which {cap}")
                    }
                    Class::StdlibGadget { .. } => format!(
                        "{what} {q}{via_s}: a standard-library object that is not plain data; such objects are code-execution gadgets"
                    ),
                    _ => format!(
                        "imports {q}{via_s}: third-party code that runs on load; trust it before loading"
                    ),
                };
                (rule, msg)
            });
            (cls.label().to_string(), finding)
        };
        let key = (module.to_owned(), name.to_owned());
        let entry = ctx.globals.entry(key).or_insert_with(|| GlobalUse {
            module: module.to_owned(),
            name: name.to_owned(),
            class: class.clone(),
            imports: 0,
            calls: 0,
            first: at.clone(),
        });
        entry.imports += 1;
        entry.calls += ncalls;
        if let Some((rule, msg)) = finding {
            // One finding per global and member for needs-trust noise; every
            // site for malicious ones.
            if rule == Rule::LibraryGlobal
                && ctx.findings.iter().any(|f| {
                    f.rule == rule
                        && f.global.as_deref() == Some(q.as_str())
                        && f.location.member == at.member
                })
            {
                return;
            }
            let mut f = Finding::new(rule, msg, at);
            if rule == Rule::DangerousGlobal
                && let Some(Capability::ScannerTampering) = crate::policy::capability(&q)
            {
                f.severity = crate::finding::Severity::High;
            }
            f.global = Some(q);
            f.calls = rendered.to_vec();
            ctx.push(f);
        }
    }
}
