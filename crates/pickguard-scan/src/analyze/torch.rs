//! torch checkpoints: storage references against records, tensor extents,
//! the legacy stacked-pickle and tar formats.

use super::*;

impl Scanner {
    /// data.pkl of a torch zip: persistent ids and tensor extents.
    pub(super) fn check_torch_data(
        &self,
        ctx: &mut Ctx,
        s: &Stream,
        member: &Option<String>,
        idx: usize,
        layout: &TorchLayout,
    ) {
        let at = |off: u64| loc(member, Some(idx), Some(off), s.view);
        let mut pid_info: Vec<Option<StorageRef>> = vec![None; s.persistent_ids.len()];
        for (pi, p) in s.persistent_ids.iter().enumerate() {
            let pid = match parse_storage_pid(s, p.pid) {
                Ok(pid) => pid,
                Err(e) => {
                    ctx.push(Finding::new(
                        Rule::TorchBadPersistentId,
                        format!("persistent id {} {e}", s.render(p.pid)),
                        at(p.offset),
                    ));
                    continue;
                }
            };
            let (key, element_size, numel) = (pid.key, pid.element_size, pid.numel);
            match layout.storage(&key).map(|e| e.size).as_ref() {
                None => ctx.push(Finding::new(
                    Rule::TorchStorageMismatch,
                    format!("storage key {key:?} names no data/{key} record in the archive"),
                    at(p.offset),
                )),
                Some(&size) => {
                    if let (Some(es), Some(n)) = (element_size, numel) {
                        let need = (n as i128) * (es as i128);
                        if n < 0 || need > size as i128 {
                            ctx.push(Finding::new(
                                Rule::TorchStorageMismatch,
                                format!("storage {key:?} declares {n} elements of {es} bytes ({need} bytes) but data/{key} holds {size} bytes"),
                                at(p.offset),
                            ));
                        }
                    }
                }
            }
            let r = StorageRef {
                key,
                element_size,
                numel,
            };
            ctx.storages.push(r.clone());
            pid_info[pi] = Some(r);
        }
        // Tensor extents: _rebuild_tensor_v2(storage, offset, size, stride, ...).
        let mut tensors = 0u64;
        for c in &s.calls {
            let Some(g) = s.as_global(c.callee) else {
                continue;
            };
            if g.module != "torch._utils" || !g.name.starts_with("_rebuild_tensor") {
                continue;
            }
            tensors += 1;
            let Some(args) = c.args.and_then(|a| s.as_seq(a)) else {
                continue;
            };
            if args.len() < 4 {
                continue;
            }
            let Some(Node::Persistent(pi)) = s.node(args[0]) else {
                continue;
            };
            let Some(Some(sr)) = pid_info.get(*pi) else {
                continue;
            };
            let (Some(off), Some(sizes), Some(strides)) =
                (s.as_int(args[1]), s.as_seq(args[2]), s.as_seq(args[3]))
            else {
                continue;
            };
            let sizes: Option<Vec<i64>> = sizes.iter().map(|&i| s.as_int(i)).collect();
            let strides: Option<Vec<i64>> = strides.iter().map(|&i| s.as_int(i)).collect();
            let (Some(sizes), Some(strides)) = (sizes, strides) else {
                continue;
            };
            let bad = |why: String| Finding::new(Rule::TorchStorageMismatch, why, at(c.offset));
            if sizes.len() != strides.len()
                || off < 0
                || sizes.iter().any(|&x| x < 0)
                || strides.iter().any(|&x| x < 0)
            {
                ctx.push(bad(format!("tensor with storage offset {off}, sizes {sizes:?}, strides {strides:?} is malformed")));
                continue;
            }
            if sizes.contains(&0) {
                continue;
            }
            // Bytes the view needs against bytes the storage holds. With
            // _rebuild_tensor_v3 the storage is untyped (bytes) and the dtype
            // is argument 6; otherwise elements are the storage's.
            let v3_dtype = (g.name == "_rebuild_tensor_v3")
                .then(|| args.get(6).and_then(|&d| s.as_global(d)))
                .flatten()
                .and_then(|d| DType::from_torch_name(&d.name));
            let elem = v3_dtype.map(DType::size).or(sr.element_size);
            let extent: i128 = off as i128
                + sizes
                    .iter()
                    .zip(&strides)
                    .map(|(&n, &st)| (n as i128 - 1) * st as i128)
                    .sum::<i128>()
                + 1;
            if let (Some(numel), Some(es), Some(elem)) = (sr.numel, sr.element_size, elem) {
                let have = numel as i128 * es as i128;
                let need = extent * elem as i128;
                if need > have {
                    ctx.push(bad(format!(
                        "tensor needs {need} bytes of storage {:?}, which holds {have} (offset {off}, sizes {sizes:?}, strides {strides:?})",
                        sr.key
                    )));
                }
            }
        }
        *ctx.tensors.get_or_insert(0) += tensors;
        // weights_only compatibility, for information.
        let bad_ops: Vec<&str> = s
            .op_counts
            .iter()
            .filter(|(o, _)| !pk::op::WEIGHTS_ONLY_OPCODES.contains(o))
            .map(|(o, _)| o.name())
            .collect();
        if !bad_ops.is_empty() && s.view == ReadView::Linear {
            ctx.push(Finding::new(
                Rule::NotWeightsOnly,
                format!(
                    "uses opcodes the weights-only unpickler refuses: {}",
                    bad_ops.join(", ")
                ),
                at(s.start),
            ));
        }
    }

    /// Object stream of a legacy checkpoint: ('storage', type, key, location, numel, view) or ('module', ...).
    pub(super) fn check_legacy_pids(
        &self,
        ctx: &mut Ctx,
        s: &Stream,
        member: &Option<String>,
        idx: usize,
    ) {
        for p in &s.persistent_ids {
            let ok = s.as_seq(p.pid).is_some_and(|items| {
                matches!(
                    items.first().and_then(|&i| s.as_str(i)),
                    Some("storage") | Some("module")
                )
            });
            if !ok {
                ctx.push(Finding::new(
                    Rule::TorchBadPersistentId,
                    format!(
                        "persistent id {} is not a legacy storage or module reference",
                        s.render(p.pid)
                    ),
                    loc(member, Some(idx), Some(p.offset), s.view),
                ));
            }
        }
        let storages = s
            .persistent_ids
            .iter()
            .filter_map(|p| {
                let pid = parse_storage_pid(s, p.pid).ok()?;
                // A storage id whose type is not a global is no storage.
                pid.storage_type.as_ref()?;
                Some(StorageRef {
                    key: pid.key,
                    element_size: pid.element_size,
                    numel: pid.numel,
                })
            })
            .collect::<Vec<_>>();
        ctx.storages.extend(storages);
        let tensors = s
            .calls
            .iter()
            .filter(|c| {
                s.as_global(c.callee).is_some_and(|g| {
                    g.module == "torch._utils" && g.name.starts_with("_rebuild_tensor")
                })
            })
            .count() as u64;
        *ctx.tensors.get_or_insert(0) += tensors;
    }

    /// Legacy stacked pickles: magic, protocol, sys_info, object, keys, then raw storages.
    pub(super) fn scan_torch_legacy(&self, ctx: &mut Ctx, data: &[u8], member: &Option<String>) {
        let mut pos = 0usize;
        let mut keys: Option<Vec<String>> = None;
        for i in 0..5 {
            let views = pk::analyze_views(data, pos, 0, &self.options.pickle);
            let role = if i == 3 {
                Role::TorchLegacy
            } else {
                Role::Generic
            };
            for v in &views {
                self.evaluate(ctx, v, member, i, role);
            }
            let s = &views[0];
            if !matches!(s.stop, StopReason::Stop) {
                return;
            }
            if i == 4 {
                keys = s.result.and_then(|r| s.as_seq(r)).map(|items| {
                    items
                        .iter()
                        .filter_map(|&k| s.as_str(k).map(str::to_owned))
                        .collect()
                });
            }
            pos = (s.end) as usize;
        }
        let Some(keys) = keys else {
            ctx.push(Finding::new(
                Rule::Unreadable,
                "the storage-key list of the legacy checkpoint is not a list of strings",
                loc(member, Some(4), Some(pos as u64), ReadView::Linear),
            ));
            return;
        };
        // torch's legacy persistent_load keeps the first storage made for a
        // key; later ids with another type reuse it, so the first decides the
        // element size the raw section is read with.
        let mut sizes: HashMap<&str, Option<u64>> = HashMap::new();
        for r in &ctx.storages {
            sizes.entry(r.key.as_str()).or_insert(r.element_size);
        }
        let walked = torch_legacy::walk(data, pos, &keys, |k| sizes.get(k).copied().flatten());
        let pos = match walked {
            Ok((_, end)) => end,
            Err(torch_legacy::WalkError::UnknownElementSize { key, at }) => {
                ctx.push(Finding::new(
                    Rule::Unreadable,
                    format!("storage {key:?} has no known element size; the raw data after it was not walked"),
                    loc(member, None, Some(at), ReadView::Linear),
                ));
                return;
            }
            Err(torch_legacy::WalkError::Truncated { key, at }) => {
                ctx.push(Finding::new(
                    Rule::PickleError,
                    format!(
                        "storage {key:?} runs past the end of the file; torch.load fails there"
                    ),
                    loc(member, None, Some(at), ReadView::Linear),
                ));
                return;
            }
        };
        if pos < data.len() {
            let rest = &data[pos..];
            if pk::is_plausible_start(rest) {
                let probe =
                    pk::run_stream(rest, 0, pos as u64, ReadView::Linear, &self.options.pickle);
                if !probe.is_junk() {
                    self.scan_pickle_region(ctx, rest, pos as u64, member, Role::Generic, true);
                    return;
                }
            }
            ctx.push(Finding::new(
                Rule::TrailingData,
                format!(
                    "{} bytes after the last storage that torch.load never reads",
                    rest.len()
                ),
                loc(member, None, Some(pos as u64), ReadView::Linear),
            ));
        }
    }

    /// `storages` / `tensors` members of the legacy tar format: pickles
    /// interleaved with raw records whose lengths the pickles give.
    pub(super) fn scan_legacy_tar_records(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        storages: bool,
    ) {
        let mut pos = 0usize;
        let mut idx = 0usize;
        let mut next = |ctx: &mut Ctx, pos: &mut usize| -> Option<Stream> {
            let views = pk::analyze_views(data, *pos, 0, &self.options.pickle);
            for v in &views {
                self.evaluate(ctx, v, member, idx, Role::Generic);
            }
            idx += 1;
            let s = views.into_iter().next()?;
            if !matches!(s.stop, StopReason::Stop) {
                return None;
            }
            *pos = s.end as usize;
            Some(s)
        };
        let Some(first) = next(ctx, &mut pos) else {
            return;
        };
        let count = first.result.and_then(|r| first.as_int(r)).unwrap_or(-1);
        if !(0..=self.options.max_members as i64).contains(&count) {
            ctx.push(Finding::new(
                Rule::Unreadable,
                format!("record count {count} is not a plausible number"),
                loc(member, Some(0), Some(0), ReadView::Linear),
            ));
            return;
        }
        for _ in 0..count {
            let Some(s) = next(ctx, &mut pos) else { return };
            let raw_len: Option<u64> = if storages {
                // (key, location, storage_type) then int64 numel and the bytes.
                let es = s
                    .result
                    .and_then(|r| s.as_seq(r))
                    .and_then(|t| t.get(2).copied())
                    .and_then(|g| s.as_global(g))
                    .and_then(storage_element_size);
                let n = data
                    .get(pos..pos + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                match (es, n) {
                    (Some(es), Some(n)) => n.checked_mul(es).and_then(|x| x.checked_add(8)),
                    _ => None,
                }
            } else {
                // int32 ndim, 4 pad bytes, sizes, strides, int64 offset.
                data.get(pos..pos + 4).and_then(|b| {
                    let nd = i32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
                    (nd >= 0).then(|| 8 + 16 * nd as u64 + 8)
                })
            };
            match raw_len.filter(|&l| l <= (data.len() - pos) as u64) {
                Some(l) => pos += l as usize,
                None => {
                    ctx.push(Finding::new(Rule::Unreadable, "a raw record's length could not be determined; the rest of this member was not analysed", loc(member, None, Some(pos as u64), ReadView::Linear)));
                    return;
                }
            }
        }
        if storages {
            let _ = next(ctx, &mut pos);
        }
        if pos < data.len() {
            ctx.push(Finding::new(
                Rule::TrailingData,
                format!("{} bytes after the last record", data.len() - pos),
                loc(member, None, Some(pos as u64), ReadView::Linear),
            ));
        }
    }
}
