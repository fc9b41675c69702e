//! The restricted builder: turn a clean checkpoint pickle into plain values
//! and tensor descriptions. It understands only the constructors torch and
//! the plain-data profile use; anything else is an error. It runs after the
//! scanner has judged the file clean, so it never meets a foreign callable.

use crate::{ConvertError, TensorSpec};
use pickguard_formats::dtype::DType;
use pickguard_pickle::{CallKind, Node, NodeId, Stream};
use std::collections::HashMap;

/// A plain value, or a tensor by index.
#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Obj>),
    Dict(Vec<(String, Obj)>),
    Tensor(usize),
    /// A value that is plain data but has no JSON form (bytes, complex,
    /// numpy arrays, datetimes): described, not reconstructed.
    Opaque(String),
}

/// What a persistent id resolves to.
#[derive(Clone, Debug)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    /// Bytes in the (root) storage.
    pub nbytes: u64,
    /// Element offset of a legacy storage view into its root storage.
    pub view_offset: u64,
}

pub struct Builder<'s, F> {
    s: &'s Stream,
    storage_of: F,
    /// Calls that mutate a value (SETITEM on an OrderedDict...), by receiver.
    mutations: HashMap<NodeId, Vec<usize>>,
    /// One tensor per rebuild call, so shared tensors stay shared.
    tensor_of_call: HashMap<usize, usize>,
    pub tensors: Vec<TensorSpec>,
    depth: usize,
    /// Values built so far (see `MAX_VALUES`).
    built: usize,
}

/// Most values one checkpoint may rebuild to; real state dicts and
/// training checkpoints have thousands to a few hundred thousand.
pub const MAX_VALUES: usize = 2_000_000;

/// Insert as a Python dict does: a key seen before keeps its position and
/// takes the new value (the last one wins).
fn put(out: &mut Vec<(String, Obj)>, k: String, v: Obj) {
    match out.iter_mut().find(|(n, _)| *n == k) {
        Some(slot) => slot.1 = v,
        None => out.push((k, v)),
    }
}

/// A tensor materialised from a view larger than this many times its
/// storage (stride-0 expansions) is refused above [`MAX_EXPANDED`] bytes:
/// torch keeps the view, a safetensors file must hold every element.
const MAX_EXPANSION: u64 = 64;
const MAX_EXPANDED: u64 = 256 << 20;

fn unsupported(what: impl Into<String>, offset: u64) -> ConvertError {
    ConvertError::Unsupported {
        what: what.into(),
        offset,
    }
}

impl<'s, F> Builder<'s, F>
where
    F: FnMut(&Stream, NodeId) -> Result<StorageRef, ConvertError>,
{
    pub fn new(s: &'s Stream, storage_of: F) -> Self {
        let mut mutations: HashMap<NodeId, Vec<usize>> = HashMap::new();
        for (i, c) in s.calls.iter().enumerate() {
            if matches!(
                c.kind,
                CallKind::SetItem | CallKind::Append | CallKind::AddItems | CallKind::Build
            ) {
                mutations.entry(c.callee).or_default().push(i);
            }
        }
        Builder {
            s,
            storage_of,
            mutations,
            tensor_of_call: HashMap::new(),
            tensors: Vec::new(),
            depth: 0,
            built: 0,
        }
    }

    pub fn build_root(&mut self) -> Result<Obj, ConvertError> {
        let root = self
            .s
            .result
            .ok_or_else(|| unsupported("the pickle has no result (no STOP)", self.s.end))?;
        self.eval(root)
    }

    fn int(&self, id: NodeId, what: &str, at: u64) -> Result<i64, ConvertError> {
        self.s.as_int(id).ok_or_else(|| {
            unsupported(
                format!("{what} is {}, not an integer", self.s.render(id)),
                at,
            )
        })
    }

    fn ints(&self, id: NodeId, what: &str, at: u64) -> Result<Vec<u64>, ConvertError> {
        let items = self
            .s
            .as_seq(id)
            .ok_or_else(|| unsupported(format!("{what} is not a tuple"), at))?;
        items
            .iter()
            .map(|&i| {
                let v = self.int(i, what, at)?;
                u64::try_from(v)
                    .map_err(|_| unsupported(format!("{what} has a negative entry"), at))
            })
            .collect()
    }

    fn key(&mut self, id: NodeId, at: u64) -> Result<String, ConvertError> {
        match self.s.node(id) {
            Some(Node::Str(t)) if !t.is_truncated() => Ok(t.text.to_string()),
            Some(Node::Int(i)) => i.as_i64().map(|v| v.to_string()).ok_or_else(|| {
                unsupported("a dictionary key is an integer wider than 64 bits", at)
            }),
            _ => Err(unsupported(
                format!(
                    "dictionary key {} is not a string or integer",
                    self.s.render(id)
                ),
                at,
            )),
        }
    }

    fn eval(&mut self, id: NodeId) -> Result<Obj, ConvertError> {
        // A value referenced twice (memo) is rebuilt twice: a small pickle
        // of nested shared lists would expand exponentially. Bound it.
        self.built += 1;
        if self.built > MAX_VALUES {
            return Err(unsupported(
                format!(
                    "the values expand to more than {MAX_VALUES} (shared values are rebuilt at each reference)"
                ),
                self.s.start,
            ));
        }
        self.depth += 1;
        if self.depth > 512 {
            return Err(unsupported(
                "values nested more than 512 deep",
                self.s.start,
            ));
        }
        let r = self.eval_inner(id);
        self.depth -= 1;
        r
    }

    fn eval_inner(&mut self, id: NodeId) -> Result<Obj, ConvertError> {
        let s = self.s;
        let Some(node) = s.node(id) else {
            return Err(unsupported("dangling value", s.start));
        };
        Ok(match node {
            Node::None => Obj::None,
            Node::Bool(b) => Obj::Bool(*b),
            Node::Int(i) => match i.as_i64() {
                Some(v) => Obj::Int(v),
                None => Obj::Opaque("integer wider than 64 bits".into()),
            },
            Node::Float(f) => Obj::Float(*f),
            Node::Str(t) => Obj::Str(t.text.to_string()),
            Node::Bytes(b) | Node::ByteArray(b) => Obj::Opaque(format!("{} bytes", b.len)),
            Node::Tuple(items) => Obj::List(
                items
                    .iter()
                    .map(|&i| self.eval(i))
                    .collect::<Result<_, _>>()?,
            ),
            Node::List(items) | Node::Set(items) | Node::FrozenSet(items) => {
                let mut v: Vec<Obj> = items
                    .iter()
                    .map(|&i| self.eval(i))
                    .collect::<Result<_, _>>()?;
                for ci in self.mutations.get(&id).cloned().unwrap_or_default() {
                    if let Some(args) = s.calls[ci].args.and_then(|a| s.as_seq(a)) {
                        for &a in args {
                            v.push(self.eval(a)?);
                        }
                    }
                }
                Obj::List(v)
            }
            Node::Dict(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                // Keys become strings: 1 and "1" would become one key and
                // lose a value, so refuse that rather than drop data.
                let mut kinds: HashMap<String, bool> = HashMap::new();
                for &(k, v) in pairs.iter() {
                    let name = self.key(k, s.start)?;
                    let is_int = matches!(s.node(k), Some(Node::Int(_)));
                    if kinds
                        .insert(name.clone(), is_int)
                        .is_some_and(|was| was != is_int)
                    {
                        return Err(unsupported(
                            format!(
                                "a dictionary has both the integer key {name} and the string key {name:?}"
                            ),
                            s.start,
                        ));
                    }
                    let v = self.eval(v)?;
                    put(&mut out, name, v);
                }
                Obj::Dict(out)
            }
            Node::Global(i) => Obj::Str(s.imports[*i].qualified()),
            Node::Persistent(p) => {
                return Err(unsupported(
                    "a storage outside a tensor",
                    s.persistent_ids[*p].offset,
                ));
            }
            Node::Buffer => return Err(unsupported("an out-of-band buffer", s.start)),
            Node::Call(ci) => self.call(id, *ci)?,
        })
    }

    fn call(&mut self, id: NodeId, ci: usize) -> Result<Obj, ConvertError> {
        let s = self.s;
        let c = &s.calls[ci];
        let at = c.offset;
        let Some(g) = s.as_global(c.callee) else {
            return Err(unsupported(format!("a call of {}", s.render(c.callee)), at));
        };
        let q = g.qualified();
        let args: Vec<NodeId> = c
            .args
            .and_then(|a| s.as_seq(a))
            .map(|v| v.to_vec())
            .unwrap_or_default();
        match q.as_str() {
            "collections.OrderedDict" | "builtins.dict" | "collections.defaultdict" => {
                let mut out = Vec::new();
                if q != "collections.defaultdict"
                    && let Some(&init) = args.first()
                    && let Some(items) = s.as_seq(init)
                {
                    for &pair in items {
                        let kv = s.as_seq(pair).filter(|kv| kv.len() == 2).ok_or_else(|| {
                            unsupported("an OrderedDict item that is not a pair", at)
                        })?;
                        let (k, v) = (self.key(kv[0], at)?, self.eval(kv[1])?);
                        put(&mut out, k, v);
                    }
                }
                for mi in self.mutations.get(&id).cloned().unwrap_or_default() {
                    let m = &s.calls[mi];
                    if m.kind != CallKind::SetItem {
                        continue; // BUILD of `_metadata` on a state dict: not data
                    }
                    if let Some(kv) = m.args.and_then(|a| s.as_seq(a)) {
                        for pair in kv.chunks(2) {
                            let (k, v) = (self.key(pair[0], m.offset)?, self.eval(pair[1])?);
                            put(&mut out, k, v);
                        }
                    }
                }
                Ok(Obj::Dict(out))
            }
            "torch._utils._rebuild_tensor"
            | "torch._utils._rebuild_tensor_v2"
            | "torch._utils._rebuild_tensor_v3" => {
                self.no_state_set(id, at)?;
                if let Some(&t) = self.tensor_of_call.get(&ci) {
                    return Ok(Obj::Tensor(t));
                }
                let t = self.tensor(&g.name, &args, at)?;
                self.tensor_of_call.insert(ci, t);
                Ok(Obj::Tensor(t))
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                self.no_state_set(id, at)?;
                // (data, requires_grad, backward_hooks[, state]): a state
                // may replace the data (`{'data': ...}`): not followed.
                if let Some(&st) = args.get(3)
                    && !self.is_empty_state(st)
                {
                    return Err(unsupported(
                        format!("a parameter with state {}", s.render(st)),
                        at,
                    ));
                }
                let data = *args
                    .first()
                    .ok_or_else(|| unsupported("_rebuild_parameter without data", at))?;
                match self.eval(data)? {
                    t @ Obj::Tensor(_) => Ok(t),
                    _ => Err(unsupported("a parameter whose data is not a tensor", at)),
                }
            }
            "torch._tensor._rebuild_from_type_v2" => {
                // (func, new_type, args, state): only plain tensors and parameters.
                let (Some(&func), Some(&ty), Some(&fargs)) =
                    (args.first(), args.get(1), args.get(2))
                else {
                    return Err(unsupported(
                        "_rebuild_from_type_v2 with too few arguments",
                        at,
                    ));
                };
                self.no_state_set(id, at)?;
                if let Some(&st) = args.get(3)
                    && !self.is_empty_state(st)
                {
                    return Err(unsupported(
                        format!("a tensor with state {}", s.render(st)),
                        at,
                    ));
                }
                let ty = s.as_global(ty).map(|g| g.qualified()).unwrap_or_default();
                if !matches!(
                    ty.as_str(),
                    "torch.Tensor" | "torch.nn.parameter.Parameter" | "torch.nn.parameter.Buffer"
                ) {
                    return Err(unsupported(format!("a tensor subclass {ty}"), at));
                }
                let f = s
                    .as_global(func)
                    .map(|g| (g.module.clone(), g.name.clone()));
                match f {
                    Some((m, n)) if m == "torch._utils" && n.starts_with("_rebuild_tensor") => {
                        let fa: Vec<NodeId> =
                            s.as_seq(fargs).map(|v| v.to_vec()).unwrap_or_default();
                        if let Some(&t) = self.tensor_of_call.get(&ci) {
                            return Ok(Obj::Tensor(t));
                        }
                        let t = self.tensor(&n, &fa, at)?;
                        self.tensor_of_call.insert(ci, t);
                        Ok(Obj::Tensor(t))
                    }
                    _ => Err(unsupported(
                        "_rebuild_from_type_v2 of something other than a tensor rebuild",
                        at,
                    )),
                }
            }
            "torch.Size" | "builtins.set" | "builtins.frozenset" | "builtins.list"
            | "builtins.tuple" => match args.first() {
                Some(&a) => self.eval(a),
                None => Ok(Obj::List(Vec::new())),
            },
            "torch.device" => Ok(Obj::Str(
                args.first()
                    .and_then(|&a| s.as_str(a))
                    .unwrap_or("?")
                    .to_owned(),
            )),
            q if q.starts_with("torch._utils._rebuild") => Err(unsupported(
                format!("tensor kind {q} (quantized, sparse, nested or meta)"),
                at,
            )),
            _ => Ok(Obj::Opaque(format!("{q}(...)"))),
        }
    }

    /// A BUILD on a tensor calls `__setstate__`, which can replace its
    /// storage, shape and data (`set_`): not followed.
    fn no_state_set(&self, id: NodeId, at: u64) -> Result<(), ConvertError> {
        let built = self
            .mutations
            .get(&id)
            .is_some_and(|ms| ms.iter().any(|&m| self.s.calls[m].kind == CallKind::Build));
        if built {
            return Err(unsupported("a tensor whose state is set by BUILD", at));
        }
        Ok(())
    }

    /// None, `{}`, `OrderedDict()`, or a pair of those: a state that sets
    /// nothing.
    fn is_empty_state(&self, id: NodeId) -> bool {
        let s = self.s;
        let unmutated = !self.mutations.contains_key(&id);
        match s.node(id) {
            Some(Node::None) => true,
            Some(Node::Dict(p)) => p.is_empty() && unmutated,
            Some(Node::Tuple(v)) => v.len() == 2 && v.iter().all(|&x| self.is_empty_state(x)),
            Some(Node::Call(ci)) => {
                let c = &s.calls[*ci];
                unmutated
                    && s.as_global(c.callee)
                        .is_some_and(|g| g.module == "collections" && g.name == "OrderedDict")
                    && c.args
                        .and_then(|a| s.as_seq(a))
                        .is_none_or(|a| a.is_empty())
            }
            _ => false,
        }
    }

    fn tensor(&mut self, func: &str, args: &[NodeId], at: u64) -> Result<usize, ConvertError> {
        let s = self.s;
        if args.len() < 4 {
            return Err(unsupported(
                format!("{func} with {} arguments", args.len()),
                at,
            ));
        }
        let Some(Node::Persistent(p)) = s.node(args[0]) else {
            return Err(unsupported(
                format!("{func} whose storage is not a persistent id"),
                at,
            ));
        };
        let pid = s.persistent_ids[*p].pid;
        let st = (self.storage_of)(s, pid)?;
        let offset = u64::try_from(self.int(args[1], "storage offset", at)?)
            .map_err(|_| unsupported("negative storage offset", at))?;
        let shape = self.ints(args[2], "size", at)?;
        let strides = self.ints(args[3], "stride", at)?;
        if shape.len() != strides.len() {
            return Err(unsupported("size and stride of different lengths", at));
        }
        // metadata (v2: argument 6, v3: 7): `{'neg': True}`, `{'conj':
        // True}` change what the values mean; only an empty one is followed.
        let meta_at = if func == "_rebuild_tensor_v3" { 7 } else { 6 };
        if let Some(&m) = args.get(meta_at)
            && !self.is_empty_state(m)
        {
            return Err(unsupported(
                format!(
                    "tensor metadata {} (a negated or conjugated view)",
                    s.render(m)
                ),
                at,
            ));
        }
        let dtype = if func == "_rebuild_tensor_v3" {
            let d = args
                .get(6)
                .and_then(|&d| s.as_global(d))
                .ok_or_else(|| unsupported("_rebuild_tensor_v3 without a dtype", at))?;
            DType::from_torch_name(&d.name)
                .ok_or_else(|| unsupported(format!("dtype torch.{}", d.name), at))?
        } else {
            st.dtype
        };
        let t = TensorSpec {
            dtype,
            shape,
            strides,
            offset: offset + st.view_offset,
            storage: st.key.clone(),
        };
        // The view must lie inside its storage (torch checks this too).
        let need = t
            .extent_bytes()
            .ok_or_else(|| unsupported("tensor size overflows", at))?;
        if need > st.nbytes {
            return Err(unsupported(
                format!(
                    "tensor needs {need} bytes of storage {:?}, which holds {}",
                    st.key, st.nbytes
                ),
                at,
            ));
        }
        let written = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |a, &n| a.checked_mul(n));
        if written.is_none_or(|w| w > MAX_EXPANDED && w / MAX_EXPANSION > st.nbytes.max(1)) {
            return Err(unsupported(
                format!(
                    "a view of {} bytes of storage {:?} expands to {} bytes (shape {:?}, strides {:?}) when written out",
                    st.nbytes,
                    st.key,
                    written.map_or("more than 2^64".into(), |w| w.to_string()),
                    t.shape,
                    t.strides
                ),
                at,
            ));
        }
        self.tensors.push(t);
        Ok(self.tensors.len() - 1)
    }
}
