//! TorchScript source (`code/**/*.py` of a `torch.jit.save` archive):
//! the calls that reach the host.
//!
//! TorchScript can touch the host through two builtins (checked with torch
//! 2.15 by loading hand-written and compiled archives): `aten::save`
//! (`torch.save(obj, path)`) writes a file, `aten::from_file` reads one and,
//! with `shared=True` and an in-place op, writes any bytes to any path. In a
//! scripted `__setstate__` they run inside `torch.jit.load` itself. Ops of a
//! namespace torch does not ship (`ops.myns.op`) need a native library the
//! process loads. Nothing else scriptable opens files, sockets or processes.
//!
//! The loader resolves names, so so does this reader: `torch` and `ops`,
//! local aliases of them (`_a = ops.aten`, `_f = torch.save`),
//! `getattr(X, "save")` with a literal name (octal escapes decoded: the
//! TorchScript lexer accepts them), at any nesting. Arguments do not matter
//! (paths are often constants or built at run time). A method named `save`
//! on a user object (`(d[0]).save(x)`) is not a host call.

use std::collections::HashMap;

/// One host-reaching call in a source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCall {
    /// 1-based line.
    pub line: usize,
    /// The call as resolved (`torch.save`, `ops.aten.from_file`, `ops.myns.op`).
    pub what: String,
    pub kind: Kind,
    /// The function it is in (`__setstate__` runs at load).
    pub function: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Writes a file (`aten::save`).
    Save,
    /// Reads a file, or writes one through a shared mapping (`aten::from_file`).
    FromFile,
    /// An op of a namespace torch does not ship: native code from a library.
    CustomOp,
}

/// Operator namespaces torch itself registers.
const STOCK: &[&str] = &[
    "aten",
    "prim",
    "quantized",
    "_quantized",
    "c10d",
    "cuda",
    "mkldnn",
    "mkl",
    "prepacked",
    "profiler",
    "xnnpack",
    "vulkan_prepack",
    "onednn",
    "sparse",
    "_c10d_functional",
    "_dtensor",
    "fbgemm",
    "torchvision",
];

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Op(char),
    Other,
}

struct Lexed {
    toks: Vec<(Tok, usize)>,
    /// (line, indent) of each logical line's first token index.
    line_starts: Vec<(usize, usize, usize)>,
}

/// Decode a string literal's body (escapes as Python reads them).
fn unescape(body: &str, raw: bool) -> String {
    if raw {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut it = body.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(d @ '0'..='7') => {
                let mut v = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match it.peek().and_then(|c| c.to_digit(8)) {
                        Some(x) => {
                            v = v * 8 + x;
                            it.next();
                        }
                        None => break,
                    }
                }
                if let Some(c) = char::from_u32(v) {
                    out.push(c);
                }
            }
            Some('x') => {
                let h: String = it.by_ref().take(2).collect();
                if let Some(c) = u32::from_str_radix(&h, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// Tokens as they are made, with where logical lines start.
struct Out {
    toks: Vec<(Tok, usize)>,
    starts: Vec<(usize, usize, usize)>,
    /// The next token starts a logical line (after a newline outside brackets).
    new_line: bool,
    indent: usize,
}

impl Out {
    fn put(&mut self, t: Tok, line: usize) {
        if std::mem::take(&mut self.new_line) {
            self.starts.push((line, self.indent, self.toks.len()));
        }
        self.toks.push((t, line));
    }
}

fn lex(src: &str) -> Lexed {
    let b: Vec<char> = src.chars().collect();
    let mut o = Out {
        toks: Vec::new(),
        starts: Vec::new(),
        new_line: true,
        indent: 0,
    };
    let (mut i, mut line, mut depth) = (0usize, 1usize, 0usize);
    let mut at_line_start = true;
    while i < b.len() {
        let c = b[i];
        if at_line_start {
            o.indent = 0;
            while i < b.len() && (b[i] == ' ' || b[i] == '\t') {
                o.indent += 1;
                i += 1;
            }
            at_line_start = false;
            continue;
        }
        match c {
            '\n' => {
                line += 1;
                i += 1;
                if depth == 0 {
                    at_line_start = true;
                    o.new_line = true;
                }
            }
            ' ' | '\t' | '\r' | '\x0c' => i += 1,
            '\\' if b.get(i + 1) == Some(&'\n') => {
                line += 1;
                i += 2;
            }
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let s = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                let word: String = b[s..i].iter().collect();
                // String prefixes: r, b, u, f and pairs.
                if i < b.len()
                    && (b[i] == '"' || b[i] == '\'')
                    && word.len() <= 2
                    && word.chars().all(|c| "rRbBuUfF".contains(c))
                {
                    let raw = word.contains(['r', 'R']);
                    let (body, n, nl) = string_at(&b, i);
                    o.put(Tok::Str(unescape(&body, raw)), line);
                    i = n;
                    line += nl;
                    continue;
                }
                o.put(Tok::Name(word), line);
            }
            '"' | '\'' => {
                let (body, n, nl) = string_at(&b, i);
                o.put(Tok::Str(unescape(&body, false)), line);
                i = n;
                line += nl;
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '.' || b[i] == '_') {
                    i += 1;
                }
                o.put(Tok::Other, line);
            }
            c => {
                match c {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                o.put(Tok::Op(c), line);
                i += 1;
            }
        }
    }
    Lexed {
        toks: o.toks,
        line_starts: o.starts,
    }
}

/// The body of the string literal whose quote is at `i`, the index after
/// it, and the newlines inside.
fn string_at(b: &[char], i: usize) -> (String, usize, usize) {
    let q = b[i];
    let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    let mut body = String::new();
    let mut nl = 0;
    while j < b.len() {
        if b[j] == '\\' && j + 1 < b.len() {
            body.push(b[j]);
            body.push(b[j + 1]);
            if b[j + 1] == '\n' {
                nl += 1;
            }
            j += 2;
            continue;
        }
        if triple {
            if b[j] == q && b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q) {
                return (body, j + 3, nl);
            }
        } else if b[j] == q {
            return (body, j + 1, nl);
        } else if b[j] == '\n' {
            break;
        }
        if b[j] == '\n' {
            nl += 1;
        }
        body.push(b[j]);
        j += 1;
    }
    (body, j, nl)
}

/// Every host-reaching call in `src`.
pub fn host_calls(src: &str) -> Vec<HostCall> {
    let lx = lex(src);
    let toks = &lx.toks;
    // The function each token is in, from `def NAME` lines and indentation.
    let mut func_of: Vec<(Option<String>, bool)> = vec![(None, false); toks.len()];
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (k, &(_, indent, start)) in lx.line_starts.iter().enumerate() {
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        let end = lx.line_starts.get(k + 1).map_or(toks.len(), |s| s.2);
        if let (Some((Tok::Name(d), _)), Some((Tok::Name(n), _))) =
            (toks.get(start), toks.get(start + 1))
            && d == "def"
        {
            for f in func_of.iter_mut().take(end).skip(start) {
                f.0 = Some(n.clone());
            }
            func_of[start].1 = true;
            stack.push((indent, n.clone()));
            continue;
        }
        let current = stack.last().map(|(_, n)| n.clone());
        for f in func_of.iter_mut().take(end).skip(start) {
            f.0 = current.clone();
        }
        if let Some(f) = func_of.get_mut(start) {
            f.1 = true;
        }
    }
    let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
    let mut out: Vec<HostCall> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        // `NAME = primary`: an alias when the primary resolves to torch/ops.
        let assign = matches!(toks.get(i), Some((Tok::Name(_), _)))
            && matches!(toks.get(i + 1), Some((Tok::Op('='), _)))
            && !matches!(toks.get(i + 2), Some((Tok::Op('='), _)))
            && (i == 0 || !matches!(toks[i - 1].0, Tok::Op('.')));
        let starts_primary = matches!(toks[i].0, Tok::Name(_) | Tok::Op('('))
            && (i == 0 || !matches!(toks[i - 1].0, Tok::Op('.')));
        if assign {
            // `a = b = ... = primary`: every target takes the value. An
            // alias is never forgotten: a reassignment may sit in a branch
            // the compiler drops (`if False:`).
            let mut targets = Vec::new();
            let mut k = i;
            while let (Some((Tok::Name(t), _)), Some((Tok::Op('='), _))) =
                (toks.get(k), toks.get(k + 1))
            {
                if matches!(toks.get(k + 2), Some((Tok::Op('='), _))) {
                    break;
                }
                targets.push(t.clone());
                k += 2;
            }
            let (path, _next) = primary(toks, k, &aliases, &func_of, &mut out);
            if let Some(p) = path {
                for t in targets {
                    aliases.insert(t, p.clone());
                }
            }
            i = k;
            continue;
        }
        if starts_primary {
            let (_, next) = primary(toks, i, &aliases, &func_of, &mut out);
            i = next.max(i + 1);
            continue;
        }
        i += 1;
    }
    out.sort_by_key(|c| c.line);
    out.dedup();
    out
}

/// Parse a primary from `i` (a name or `getattr(primary, "lit")`, then
/// `.name` trailers, calls and subscripts); report host calls along the
/// way; the resolved path (rooted at `torch`/`ops`) and where it ends.
fn primary(
    toks: &[(Tok, usize)],
    i: usize,
    aliases: &HashMap<String, Vec<String>>,
    func_of: &[(Option<String>, bool)],
    out: &mut Vec<HostCall>,
) -> (Option<Vec<String>>, usize) {
    let mut j = i;
    let mut path: Option<Vec<String>> = match toks.get(j) {
        // `(primary)`: the parser drops the parentheses.
        Some((Tok::Op('('), _)) => {
            let (inner, k) = primary(toks, j + 1, aliases, func_of, out);
            if matches!(toks.get(k), Some((Tok::Op(')'), _))) {
                j = k + 1;
                inner
            } else {
                return (None, k);
            }
        }
        Some((Tok::Name(n), _))
            if n == "getattr" && matches!(toks.get(j + 1), Some((Tok::Op('('), _))) =>
        {
            let (inner, k) = primary(toks, j + 2, aliases, func_of, out);
            // `, "lit" "lit"... [,] )`: adjacent literals are one string.
            let mut name = String::new();
            let mut q = k + 1;
            while let Some((Tok::Str(s), _)) = toks.get(q) {
                name.push_str(s);
                q += 1;
            }
            if matches!(toks.get(q), Some((Tok::Op(','), _))) {
                q += 1;
            }
            let literal = matches!(toks.get(k), Some((Tok::Op(','), _))) && q > k + 1;
            if literal && matches!(toks.get(q), Some((Tok::Op(')'), _))) {
                j = q + 1;
                inner.map(|mut p| {
                    p.push(name);
                    p
                })
            } else {
                j = k;
                None
            }
        }
        Some((Tok::Name(n), _)) => {
            j += 1;
            match aliases.get(n) {
                Some(p) => Some(p.clone()),
                None if n == "torch" || n == "ops" => Some(vec![n.clone()]),
                None => None,
            }
        }
        _ => return (None, j + 1),
    };
    let mut seen = false;
    loop {
        if let Some(p) = &path
            && !seen
        {
            seen = judge(
                p,
                toks[j.saturating_sub(1)].1,
                func_of.get(i).and_then(|f| f.0.clone()),
                out,
            );
        }
        // A trailer never starts a logical line: `(` there is a new statement.
        if func_of.get(j).is_some_and(|f| f.1) {
            return (path, j);
        }
        match (toks.get(j), toks.get(j + 1)) {
            (Some((Tok::Op('.'), _)), Some((Tok::Name(a), _))) => {
                path = path.map(|mut p| {
                    p.push(a.clone());
                    p
                });
                seen = false;
                j += 2;
            }
            (Some((Tok::Op(o @ ('(' | '[')), _)), _) => {
                // A call or subscript: its result is a value, not torch.
                let close = if *o == '(' { ')' } else { ']' };
                let mut depth = 0usize;
                while let Some((t, _)) = toks.get(j) {
                    match t {
                        Tok::Op(c) if *c == *o => depth += 1,
                        Tok::Op(c) if *c == close => {
                            depth -= 1;
                            if depth == 0 {
                                j += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                path = None;
            }
            _ => return (path, j),
        }
    }
}

/// Report `path` if it names a host-reaching callable; whether it did.
fn judge(p: &[String], line: usize, function: Option<String>, out: &mut Vec<HostCall>) -> bool {
    let kind = if p.iter().skip(1).any(|s| s == "save") {
        Some(Kind::Save)
    } else if p.iter().skip(1).any(|s| s == "from_file") {
        Some(Kind::FromFile)
    } else if p[0] == "ops" && p.len() >= 3 && !STOCK.contains(&p[1].as_str()) {
        Some(Kind::CustomOp)
    } else {
        None
    };
    let Some(kind) = kind else { return false };
    out.push(HostCall {
        line,
        what: p.join("."),
        kind,
        function,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whats(src: &str) -> Vec<(String, Option<String>)> {
        host_calls(src)
            .into_iter()
            .map(|c| (c.what, c.function))
            .collect()
    }

    #[test]
    fn direct_aliased_and_getattr_calls() {
        let src = "class M(Module):\n  def __setstate__(self: __torch__.M, s: Tuple[Tensor, bool]) -> NoneType:\n    _0 = \"/tmp/x\"\n    self.w = (s)[0]\n    torch.save(self.w, _0)\n    return None\n  def forward(self, x):\n    _a = ops.aten\n    t = getattr(_a, \"from_file\")(\"p\", True, 6)\n    _f = torch.save\n    _f(x, \"q\")\n    y = getattr(getattr(ops, \"aten\"), \"\\163ave\")(x, \"r\")\n    return x\n";
        let w = whats(src);
        assert!(
            w.contains(&("torch.save".into(), Some("__setstate__".into()))),
            "{w:?}"
        );
        assert!(
            w.contains(&("ops.aten.from_file".into(), Some("forward".into()))),
            "{w:?}"
        );
        assert!(
            w.iter()
                .filter(|(p, f)| p == "torch.save" && f.as_deref() == Some("forward"))
                .count()
                >= 1,
            "{w:?}"
        );
        assert!(
            w.contains(&("ops.aten.save".into(), Some("forward".into()))),
            "{w:?}"
        );
    }

    #[test]
    fn forms_an_attacker_reached_the_loader_with() {
        for src in [
            "def __setstate__(self, s):\n  (torch).save(\"x\", \"p\")\n",
            "def __setstate__(self, s):\n  (ops.aten).save(\"x\", \"p\")\n",
            "def __setstate__(self, s):\n  getattr((torch), \"save\")(\"x\", \"p\")\n",
            "def __setstate__(self, s):\n  getattr(torch, \"sa\" \"ve\")(\"x\", \"p\")\n",
            "def __setstate__(self, s):\n  getattr(torch, \"save\",)(\"x\", \"p\")\n",
            "def __setstate__(self, s):\n  _t = torch\n  if False:\n    _t = 1\n  _t.save(\"x\", \"p\")\n",
            "def __setstate__(self, s):\n  _a = _b = torch\n  _a.save(\"x\", \"p\")\n",
            "def __setstate__(self, s):\n  t = (torch).from_file(\"p\", True, 4, dtype=0)\n",
        ] {
            let calls = host_calls(src);
            assert!(
                calls
                    .iter()
                    .any(|c| c.kind != Kind::CustomOp
                        && c.function.as_deref() == Some("__setstate__")),
                "{src}: {calls:?}"
            );
        }
    }

    #[test]
    fn user_methods_and_stock_ops_are_not_host_calls() {
        let src = "def forward(self, x):\n  d = self.d\n  y = (d[0]).save(x, )\n  z = ops.aten.relu(x)\n  w = torch.add(x, 1)\n  v = torch.relu(x).save\n  return ops.prim.Print(y)\n";
        assert_eq!(whats(src), vec![]);
        let custom = "def forward(self, x):\n  return ops.myns.myop(x)\n";
        assert_eq!(host_calls(custom)[0].kind, Kind::CustomOp);
    }
}
