//! joblib's `NumpyArrayWrapper`: its `read_array` reads the array's bytes
//! (or an object array's inner pickle) straight from the file, in the middle
//! of the stream, so the machine must skip exactly what numpy would read.
//! It lives in the machine because it moves the read position mid-run; the
//! sizing reads numpy's pickled dtype (type code and BUILD state), which is
//! not the safetensors dtype table of `pickguard-formats`.

use super::*;

impl Machine<'_, '_> {
    /// Is `id` an object made by calling `joblib.numpy_pickle.NumpyArrayWrapper`?
    pub(super) fn is_joblib_wrapper(&self, id: NodeId) -> bool {
        let Some(Node::Call(k)) = self.nodes.get(id as usize) else {
            return false;
        };
        let Some(c) = self.calls.get(*k) else {
            return false;
        };
        matches!(self.nodes.get(c.callee as usize), Some(Node::Global(g))
            if self.imports.get(*g).is_some_and(Import::is_joblib_array_wrapper))
    }

    /// `NumpyArrayWrapper.read_array`: skip the array's bytes, or analyse
    /// the inner pickle of an object array. What cannot be sized exactly
    /// stops the analysis as a budget (inconclusive), never as an error.
    pub(super) fn joblib_array(&mut self, state: NodeId) -> R<()> {
        let unknown = |why: &str| Err(Fail::Budget(format!("joblib array: {why}")));
        if self.src.frame_end.is_some_and(|fe| self.src.pos < fe) {
            return unknown("read inside a frame (not modelled)");
        }
        self.src.frame_end = None;
        let Some(Node::Dict(items)) = self.nodes.get(state as usize) else {
            return unknown("state is not a dict");
        };
        let field = |name: &str| {
            items
                .iter()
                .rev()
                .find_map(|&(k, v)| match self.nodes.get(k as usize) {
                    Some(Node::Str(t)) if &*t.text == name => Some(v),
                    _ => None,
                })
        };
        let (Some(dtype), Some(shape)) = (field("dtype"), field("shape")) else {
            return unknown("no dtype or shape");
        };
        let align = field("numpy_array_alignment_bytes");
        let Some((itemsize, object)) = self.dtype_size(dtype, 0) else {
            return unknown("dtype not understood");
        };
        if object {
            // A fresh pure-Python Unpickler on the file: one whole stream.
            let start = self.src.pos;
            let inner = run_stream(
                self.src.data,
                start,
                self.src.base,
                ReadView::Linear,
                self.opts,
            );
            match inner.stop {
                StopReason::Stop => {}
                StopReason::Error { message, .. } => {
                    return err(format!("object array: {message}"));
                }
                StopReason::Budget { limit, .. } => return Err(Fail::Budget(limit)),
            }
            self.inline_pickles.push(self.src.off(start));
            self.src.pos = (inner.end - self.src.base) as usize;
            return Ok(());
        }
        let Some(Node::Tuple(dims)) = self.nodes.get(shape as usize) else {
            return unknown("shape is not a tuple");
        };
        let mut count: u64 = 1;
        for &d in dims.iter() {
            let n = match self.nodes.get(d as usize) {
                Some(Node::Int(i)) => i.as_i128().and_then(|v| u64::try_from(v).ok()),
                _ => None,
            };
            let Some(n) = n else {
                return unknown("shape is not non-negative integers");
            };
            count = count.saturating_mul(n);
        }
        let size = count.saturating_mul(itemsize);
        let has_align = match align.map(|a| self.nodes.get(a as usize)) {
            None | Some(Some(Node::None)) => false,
            Some(Some(Node::Int(_))) => true,
            _ => return unknown("alignment is not an int"),
        };
        if has_align {
            let pad = *self.src.read(1)?.first().unwrap_or(&0) as usize;
            self.src.read(pad)?;
        }
        let avail = (self.src.data.len() - self.src.pos) as u64;
        if size > avail {
            return err(format!(
                "joblib array data truncated: {size} bytes wanted, {avail} left"
            ));
        }
        self.src.pos += size as usize;
        Ok(())
    }

    /// Item size and `hasobject` of a `numpy.dtype(str, ...)` value, with
    /// the state its BUILD gave it (which decides flexible sizes and fields).
    pub(super) fn dtype_size(&self, id: NodeId, depth: usize) -> Option<(u64, bool)> {
        if depth > 8 {
            return None;
        }
        let Some(Node::Call(k)) = self.nodes.get(id as usize) else {
            return None;
        };
        let c = self.calls.get(*k)?;
        let named = matches!(self.nodes.get(c.callee as usize), Some(Node::Global(g))
            if self.imports.get(*g).is_some_and(|i| i.module == "numpy" && i.name == "dtype"));
        if !named || c.kind != CallKind::Reduce {
            return None;
        }
        let Some(Node::Tuple(args)) = self.nodes.get(c.args? as usize) else {
            return None;
        };
        let Some(Node::Str(t)) = self.nodes.get(*args.first()? as usize) else {
            return None;
        };
        let code = t.text.trim_start_matches(['<', '>', '|', '=']);
        let (kind, digits) = code.split_at(code.find(|ch: char| ch.is_ascii_digit())?);
        let n: u64 = digits.parse().ok()?;
        // The last BUILD on this dtype: (version, order, subarray, names,
        // fields, elsize, alignment, flags[, metadata]).
        let st = self
            .calls
            .iter()
            .rev()
            .find(|b| b.kind == CallKind::Build && b.callee == id)
            .and_then(|b| b.args);
        let mut elsize = -1i128;
        if let Some(st) = st {
            let Some(Node::Tuple(v)) = self.nodes.get(st as usize) else {
                return None;
            };
            let node = |i: usize| v.get(i).and_then(|&f| self.nodes.get(f as usize));
            elsize = match node(5) {
                Some(Node::Int(i)) => i.as_i128()?,
                _ => return None,
            };
            if !matches!(node(2), Some(Node::None)) {
                return None; // subarray dtypes: not modelled
            }
            match node(4) {
                Some(Node::None) => {}
                // Structured: {name: (dtype, offset[, title])}; the record
                // holds objects if any field does; its size is elsize.
                Some(Node::Dict(fields)) if kind == "V" && elsize >= 0 => {
                    let mut object = false;
                    for &(_, f) in fields {
                        let Some(Node::Tuple(t)) = self.nodes.get(f as usize) else {
                            return None;
                        };
                        object |= self.dtype_size(*t.first()?, depth + 1)?.1;
                    }
                    return Some((elsize as u64, object));
                }
                _ => return None,
            }
        }
        match kind {
            "O" => Some((8, true)),
            "b" | "i" | "u" | "f" | "c" | "M" | "m" if elsize < 0 => Some((n, false)),
            "S" | "V" => Some((if elsize >= 0 { elsize as u64 } else { n }, false)),
            "U" => Some((
                if elsize >= 0 {
                    elsize as u64
                } else {
                    n.checked_mul(4)?
                },
                false,
            )),
            _ => None,
        }
    }
}
