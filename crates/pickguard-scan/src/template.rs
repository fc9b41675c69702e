/*!
Chat templates (Jinja programs in GGUF metadata, rendered by llama.cpp
front-ends) judged statically, for what they can reach when a front-end
renders them with an unsandboxed `jinja2.Environment` (CVE-2024-34359,
llama-cpp-python ≤ 0.2.71).

The judgement looks at the *sinks* — the places where a template turns a
name into an attribute — rather than at how names are spelled, because a
template can build any string at render time (slicing, `format`, `join`,
`replace`, characters of the messages themselves):

- attribute or item access to a name starting with `_` (`x.__class__`,
  `x['__globals__']`, `self._TemplateReference__context`), as jinja2's own
  sandbox refuses them; any string or name containing `__`; escapes that
  spell `_` (`\x5f`, `\u005f`, `\U0000005f`, `\137`, `\N{…}`);
- **a subscript whose key is not a literal and not provably a number**
  (`x[name]`): jinja2 falls back from items to attributes, so a computed
  key reaches any attribute. Keys that are arithmetic on integers, on
  `loop.index0`-style counters, on `|length`, on variables only ever set to
  such values, or slices of those, are indexes and fine (`messages[0]`,
  `messages[loop.index0 - 1]`, `messages[1:]`);
- `|attr(…)`, `map(attribute=…)`, `selectattr`, `rejectattr`, `sort`,
  `groupby`, `sum`, `unique`, `min`, `max` with an attribute name that is
  computed or starts with `_`, and `map('attr', …)`;
- `.format(…)` on a computed string, or on a literal whose replacement
  fields read attributes or items (`'{0.__class__}'`, `'{0[x]}'`);
- jinja2's global objects (`cycler`, `joiner`, `lipsum`, `namespace`,
  `self`, `config`, `request`, `url_for`, `get_flashed_messages`, `range`,
  `dict`) followed by `.`, `[` or `|` — unless the name is the template's
  own variable (`set`, `for`, macro parameter, `with`);
- `include`/`import`/`extends`/`from` load another template: inconclusive.

A template minijinja's parser refuses is inconclusive (with any malicious
finding still reported). Nesting is bounded before parsing (the parser
recurses): an expression block longer than `MAX_BLOCK_TOKENS` tokens or
brackets deeper than `MAX_NESTING` is inconclusive, and the parser runs on
a thread with a large stack.
*/

use minijinja::machinery::{Token, parse, tokenize};
use minijinja::syntax::SyntaxConfig;
use std::collections::BTreeSet;

/// Templates longer than this are not judged (inconclusive).
pub const MAX_TEMPLATE: usize = 1 << 20;
/// Tokens in one `{{ }}` or `{% %}` block.
pub const MAX_BLOCK_TOKENS: usize = 2048;
/// Brackets, parentheses and braces open at once.
pub const MAX_NESTING: usize = 64;
const PARSER_STACK: usize = 64 << 20;

const GADGETS: &[&str] = &[
    "cycler",
    "joiner",
    "lipsum",
    "namespace",
    "self",
    "config",
    "request",
    "url_for",
    "get_flashed_messages",
    "range",
    "dict",
];

/// Filters whose result is an integer.
const INT_FILTERS: &[&str] = &["length", "count", "int", "abs", "round"];
/// Filters that look attributes up by a name argument.
const ATTRIBUTE_FILTERS: &[&str] = &[
    "map",
    "selectattr",
    "rejectattr",
    "sort",
    "groupby",
    "sum",
    "unique",
    "min",
    "max",
];
const LOOP_COUNTERS: &[&str] = &[
    "index",
    "index0",
    "revindex",
    "revindex0",
    "length",
    "depth",
    "depth0",
];

#[derive(Debug, Default, PartialEq)]
pub struct Judgement {
    /// Constructs that reach Python internals, with the line they are on.
    pub malicious: Vec<(u32, String)>,
    /// Why the template could not be (fully) judged.
    pub inconclusive: Option<String>,
}

fn text(t: &Token) -> Option<String> {
    match t {
        Token::Str(s) => Some((*s).to_owned()),
        Token::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Whether a literal's source spells `_` with an escape (Python's rules:
/// `\x`, `\u`, `\U` with hex digits in either case, three octal digits,
/// `\N{NAME}`). The letters are case-sensitive: `\n{` is a newline.
fn hides_underscore(raw: &str) -> bool {
    let b = raw.as_bytes();
    let hex =
        |s: &[u8]| -> Option<u32> { u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok() };
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let spelled = match b[i + 1] {
            b'x' => b.get(i + 2..i + 4).and_then(hex),
            b'u' => b.get(i + 2..i + 6).and_then(hex),
            b'U' => b.get(i + 2..i + 10).and_then(hex),
            b'0'..=b'7' => b
                .get(i + 1..i + 4)
                .and_then(|s| u32::from_str_radix(std::str::from_utf8(s).ok()?, 8).ok()),
            b'N' => return b.get(i + 2) == Some(&b'{'),
            _ => None,
        };
        if spelled == Some(0x5f) {
            return true;
        }
        i += 2;
    }
    false
}

type Tok<'a> = (Token<'a>, u32, String);

/// Variables the template binds, and which of them only ever hold integers.
#[derive(Default)]
struct Bindings {
    bound: BTreeSet<String>,
    numeric: BTreeSet<String>,
    not_numeric: BTreeSet<String>,
}

impl Bindings {
    fn is_numeric(&self, name: &str) -> bool {
        self.numeric.contains(name) && !self.not_numeric.contains(name)
    }
    fn assign(&mut self, name: String, numeric: bool) {
        if numeric {
            self.numeric.insert(name.clone());
        } else {
            self.not_numeric.insert(name.clone());
        }
        self.bound.insert(name);
    }
}

/// Whether an expression certainly evaluates to an integer.
fn numeric(toks: &[Tok], b: &Bindings) -> bool {
    let mut k = 0;
    if toks.is_empty() {
        return false;
    }
    while k < toks.len() {
        match &toks[k].0 {
            Token::Int(_)
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::FloorDiv
            | Token::Mod
            | Token::Pow
            | Token::ParenOpen
            | Token::ParenClose => k += 1,
            Token::Pipe => match toks.get(k + 1).map(|t| &t.0) {
                Some(Token::Ident(f)) if INT_FILTERS.contains(f) => k += 2,
                _ => return false,
            },
            Token::Ident(n) => {
                // `x|length` is an integer whatever x is.
                if matches!(toks.get(k + 1).map(|t| &t.0), Some(Token::Pipe))
                    && matches!(toks.get(k + 2).map(|t| &t.0), Some(Token::Ident(f)) if INT_FILTERS.contains(f))
                {
                    k += 3;
                    continue;
                }
                if let (Some(Token::Dot), Some(Token::Ident(attr))) =
                    (toks.get(k + 1).map(|t| &t.0), toks.get(k + 2).map(|t| &t.0))
                {
                    let ok = (*n == "loop" && LOOP_COUNTERS.contains(attr))
                        || b.is_numeric(&format!("{n}.{attr}"));
                    if !ok {
                        return false;
                    }
                    k += 3;
                    continue;
                }
                if !b.is_numeric(n) {
                    return false;
                }
                k += 1;
            }
            _ => return false,
        }
    }
    true
}

/// For each opening bracket, the index of the token that closes it (one
/// pass; brackets never span blocks).
fn closings(toks: &[Tok]) -> Vec<Option<usize>> {
    let mut out = vec![None; toks.len()];
    let mut open: Vec<usize> = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        match t.0 {
            Token::BracketOpen | Token::ParenOpen | Token::BraceOpen => open.push(k),
            Token::BracketClose | Token::ParenClose | Token::BraceClose => {
                if let Some(o) = open.pop() {
                    out[o] = Some(k);
                }
            }
            Token::VariableEnd | Token::BlockEnd => open.clear(),
            _ => {}
        }
    }
    out
}

/// The end of the block that starts at `i` (its `%}` or `}}`).
fn block_end(toks: &[Tok], i: usize) -> usize {
    toks.iter()
        .skip(i)
        .position(|t| matches!(t.0, Token::BlockEnd | Token::VariableEnd))
        .map(|p| p + i)
        .unwrap_or(toks.len())
}

fn bindings(toks: &[Tok]) -> Bindings {
    let mut b = Bindings::default();
    let ident = |k: usize| match toks.get(k).map(|t| &t.0) {
        Some(Token::Ident(n)) => Some(*n),
        _ => None,
    };
    // Twice, so that variables set from variables defined later settle.
    for _ in 0..2 {
        let mut i = 0;
        while i < toks.len() {
            if !matches!(toks[i].0, Token::BlockStart) {
                i += 1;
                continue;
            }
            let end = block_end(toks, i);
            match ident(i + 1) {
                Some("set") | Some("with") => {
                    // set NAME = …, set NS.ATTR = …, set NAME (block), with a = …, b = …
                    let body = &toks[i + 2..end];
                    let mut k = 0;
                    while k < body.len() {
                        let Some(Token::Ident(n)) = body.get(k).map(|t| &t.0) else {
                            break;
                        };
                        let mut name = n.to_string();
                        let mut m = k + 1;
                        if let (Some(Token::Dot), Some(Token::Ident(a))) =
                            (body.get(m).map(|t| &t.0), body.get(m + 1).map(|t| &t.0))
                        {
                            name = format!("{n}.{a}");
                            m += 2;
                        }
                        if !matches!(body.get(m).map(|t| &t.0), Some(Token::Assign)) {
                            // A block set: its value is text.
                            b.assign(name, false);
                            break;
                        }
                        // The value runs to the next top-level comma (with) or the end.
                        let start = m + 1;
                        let mut depth = 0usize;
                        let mut stop = body.len();
                        for (q, t) in body.iter().enumerate().skip(start) {
                            match t.0 {
                                Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => {
                                    depth += 1
                                }
                                Token::ParenClose | Token::BracketClose | Token::BraceClose => {
                                    depth = depth.saturating_sub(1)
                                }
                                Token::Comma if depth == 0 => {
                                    stop = q;
                                    break;
                                }
                                _ => {}
                            }
                        }
                        let value = &body[start..stop];
                        // namespace(a=0, b='x'): its attributes, one by one.
                        if matches!(value.first().map(|t| &t.0), Some(Token::Ident("namespace"))) {
                            let start = 2.min(value.len());
                            let args = &value[start..value.len().saturating_sub(1).max(start)];
                            for part in args.split(|t| matches!(t.0, Token::Comma)) {
                                if let (Some(Token::Ident(a)), Some(Token::Assign)) =
                                    (part.first().map(|t| &t.0), part.get(1).map(|t| &t.0))
                                {
                                    b.assign(format!("{name}.{a}"), numeric(&part[2..], &b));
                                }
                            }
                            b.assign(name, false);
                        } else {
                            let num = numeric(value, &b);
                            b.assign(name, num);
                        }
                        k = stop + 1;
                    }
                }
                Some("for") => {
                    let body = &toks[i + 2..end];
                    let in_at = body
                        .iter()
                        .position(|t| matches!(t.0, Token::Ident("in")))
                        .unwrap_or(body.len());
                    let over_range = matches!(
                        body.get(in_at + 1).map(|t| &t.0),
                        Some(Token::Ident("range"))
                    );
                    for t in &body[..in_at] {
                        if let Token::Ident(n) = t.0 {
                            b.assign(n.to_owned(), over_range);
                        }
                    }
                }
                Some("macro") | Some("call") => {
                    for t in &toks[i + 2..end] {
                        if let Token::Ident(n) = t.0 {
                            b.assign(n.to_owned(), false);
                        }
                    }
                }
                _ => {}
            }
            i = end.max(i + 1);
        }
    }
    b
}

/// Judge one template.
pub fn judge(src: &str) -> Judgement {
    let mut j = Judgement::default();
    if src.len() > MAX_TEMPLATE {
        j.inconclusive = Some(format!("template of {} bytes not judged", src.len()));
        return j;
    }
    let mut toks: Vec<Tok> = Vec::new();
    for t in tokenize(src, false, SyntaxConfig::default()) {
        match t {
            Ok((tok, span)) => {
                let raw = src
                    .get(span.start_offset as usize..span.end_offset as usize)
                    .unwrap_or("")
                    .to_owned();
                toks.push((tok, u32::from(span.start_line), raw));
            }
            Err(e) => {
                j.inconclusive = Some(format!("the Jinja lexer refuses the template: {e}"));
                break;
            }
        }
    }
    // Bound what the (recursive) parser is given.
    let (mut run, mut depth, mut deepest, mut longest) = (0usize, 0usize, 0usize, 0usize);
    for (t, _, _) in &toks {
        match t {
            Token::VariableStart | Token::BlockStart => run = 0,
            Token::BracketOpen | Token::ParenOpen | Token::BraceOpen => {
                depth += 1;
                deepest = deepest.max(depth)
            }
            Token::BracketClose | Token::ParenClose | Token::BraceClose => {
                depth = depth.saturating_sub(1)
            }
            _ => {}
        }
        run += 1;
        longest = longest.max(run);
    }
    if j.inconclusive.is_none() {
        if longest > MAX_BLOCK_TOKENS || deepest > MAX_NESTING {
            j.inconclusive = Some(format!(
                "an expression of {longest} tokens or {deepest} nested brackets: too large to parse safely"
            ));
        } else {
            let owned = src.to_owned();
            let parsed = std::thread::Builder::new()
                .stack_size(PARSER_STACK)
                .spawn(move || {
                    parse(&owned, "chat_template", SyntaxConfig::default())
                        .err()
                        .map(|e| e.to_string())
                })
                .map_err(|e| e.to_string())
                .and_then(|h| h.join().map_err(|_| "the parser failed".to_string()));
            match parsed {
                Ok(None) => {}
                Ok(Some(e)) => {
                    j.inconclusive = Some(format!("the Jinja parser refuses the template: {e}"))
                }
                Err(e) => j.inconclusive = Some(e),
            }
        }
    }
    let b = bindings(&toks);
    let close_of = closings(&toks);
    let closing = |_: &[Tok], k: usize| close_of.get(k).copied().flatten();
    let mut flags: Vec<(u32, String)> = Vec::new();
    let mut flag = |line: u32, why: String| {
        if !flags.iter().any(|(_, w)| *w == why) {
            flags.push((line, why));
        }
    };
    let at = |i: usize| toks.get(i).map(|t| &t.0);
    for (i, (tok, line, raw)) in toks.iter().enumerate() {
        let line = *line;
        if let Some(s) = text(tok) {
            if s.contains("__") {
                flag(
                    line,
                    format!("string {s:?} names a Python internal (dunder)"),
                );
            }
            if hides_underscore(raw) {
                flag(line, format!("string {raw} spells `_` with an escape"));
            }
        }
        match tok {
            Token::Ident(n) if n.contains("__") => {
                flag(line, format!("name {n} is a Python internal (dunder)"));
            }
            Token::Dot => match at(i + 1) {
                Some(Token::Ident(n)) if n.starts_with('_') => {
                    flag(line, format!("reads the private attribute .{n}"))
                }
                Some(Token::Ident("format")) if matches!(at(i + 2), Some(Token::ParenOpen)) => {
                    let receiver = i.checked_sub(1).and_then(|p| toks.get(p));
                    match receiver.and_then(|r| text(&r.0)) {
                        Some(s) if !fields_read_attributes(&s) => {}
                        Some(s) => flag(
                            line,
                            format!("str.format with {s:?} reads attributes or items of its arguments"),
                        ),
                        None => flag(
                            line,
                            "str.format on a string computed at render time (its fields can read any attribute)"
                                .into(),
                        ),
                    }
                }
                _ => {}
            },
            Token::BracketOpen => {
                // A subscript (after a value), not a list literal.
                let subscript = matches!(
                    i.checked_sub(1).and_then(at),
                    Some(
                        Token::Ident(_)
                            | Token::BracketClose
                            | Token::ParenClose
                            | Token::Str(_)
                            | Token::String(_)
                    )
                ) && !matches!(
                    i.checked_sub(1).and_then(at),
                    Some(Token::Ident(
                        "in" | "not" | "and" | "or" | "if" | "else" | "is"
                    ))
                );
                let Some(close) = closing(&toks, i) else {
                    continue;
                };
                let key = &toks[i + 1..close];
                if let [(t, _, _)] = key
                    && let Some(s) = text(t)
                {
                    if s.starts_with('_') {
                        flag(line, format!("reads the private item [{s:?}]"));
                    }
                    continue;
                }
                if !subscript {
                    continue;
                }
                let index = key
                    .split(|t| matches!(t.0, Token::Colon))
                    .all(|part| part.is_empty() || numeric(part, &b));
                if !index {
                    flag(
                        line,
                        format!(
                            "reads an item whose name is chosen at render time ([{}]): jinja2 falls back to attributes, so a computed key reaches any of them",
                            key.iter()
                                .map(|t| t.2.as_str())
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    );
                }
            }
            Token::Pipe => {
                let (Some(Token::Ident(f)), Some(Token::ParenOpen)) = (at(i + 1), at(i + 2)) else {
                    continue;
                };
                let Some(close) = closing(&toks, i + 2) else {
                    continue;
                };
                let args = &toks[i + 3..close];
                let lit = |part: &[Tok]| match part {
                    [(t, _, _)] => text(t),
                    _ => None,
                };
                let parts: Vec<&[Tok]> = args.split(|t| matches!(t.0, Token::Comma)).collect();
                let name_arg: Option<&[Tok]> = if *f == "attr" {
                    parts.first().copied()
                } else if ATTRIBUTE_FILTERS.contains(f) {
                    // attribute=NAME, or the first positional for the *attr filters.
                    parts
                        .iter()
                        .find_map(|p| match p {
                            [
                                (Token::Ident("attribute"), _, _),
                                (Token::Assign, _, _),
                                rest @ ..,
                            ] => Some(rest),
                            _ => None,
                        })
                        .or_else(|| {
                            matches!(*f, "selectattr" | "rejectattr" | "groupby")
                                .then(|| parts.first().copied())
                                .flatten()
                        })
                } else {
                    None
                };
                if *f == "map" && parts.first().and_then(|p| lit(p)).as_deref() == Some("attr") {
                    flag(
                        line,
                        "map('attr', …) reads attributes by a computed name".into(),
                    );
                }
                if let Some(arg) = name_arg {
                    match lit(arg) {
                        Some(s) if s.starts_with('_') => {
                            flag(line, format!("|{f} reads the private attribute {s:?}"))
                        }
                        Some(_) => {}
                        None if arg.is_empty() => {}
                        None => flag(
                            line,
                            format!(
                                "|{f} reads an attribute whose name is computed at render time"
                            ),
                        ),
                    }
                }
            }
            Token::Ident(n)
                if GADGETS.contains(n)
                    && !b.bound.contains(*n)
                    && matches!(
                        at(i + 1),
                        Some(Token::Dot | Token::BracketOpen | Token::Pipe)
                    )
                    && !matches!(i.checked_sub(1).and_then(at), Some(Token::Dot)) =>
            {
                flag(
                    line,
                    format!("uses the jinja2 object {n} as a gadget ({n} followed by an access)"),
                );
            }
            Token::BlockStart => {
                if let Some(Token::Ident(k)) = at(i + 1)
                    && matches!(*k, "include" | "import" | "extends" | "from")
                    && j.inconclusive.is_none()
                {
                    j.inconclusive = Some(format!(
                        "the template loads another template ({k}): what runs depends on the front-end's loader"
                    ));
                }
            }
            _ => {}
        }
    }
    j.malicious = flags;
    j
}

/// Whether a `str.format` pattern has a replacement field that reads an
/// attribute or an item (`{0.x}`, `{name[k]}`).
fn fields_read_attributes(s: &str) -> bool {
    let mut rest = s;
    while let Some(p) = rest.find('{') {
        rest = &rest[p + 1..];
        if rest.starts_with('{') {
            rest = &rest[1..];
            continue;
        }
        let field = rest.split(['}', ':', '!']).next().unwrap_or("");
        if field.contains('.') || field.contains('[') {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_shapes_are_clean() {
        for t in [
            // ChatML with the loop/namespace idioms real templates use.
            "{%- set ns = namespace(found=false, idx=0) -%}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% if message.tool_calls is defined %}{% for tc in message.tool_calls %}{{ tc['function']['name'] | tojson }}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}{{ messages[loop.index0 + 1] if false else '' }}{{ range(3)|list|length }}",
            // Index arithmetic, slices, counters set by the template.
            "{% set last = messages|length - 1 %}{% set ns = namespace(i=0) %}{% for m in messages[1:] %}{% set ns.i = ns.i + 1 %}{{ messages[loop.index0 - 1]['role'] }}{{ messages[last]['content'] }}{{ messages[ns.i] }}{% endfor %}{{ messages[-1] }}",
            // Qwen-style tool call strings with escapes that are newlines.
            "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{ '\\u00e9' }}",
            // snake_case tags built with ~ and a local variable named config.
            "{{ '<|' ~ message.role ~ '_end|>' }}{% for pname, config in props|items %}{{ config.type }}{% endfor %}{{ messages|map(attribute='content')|join }}",
        ] {
            assert_eq!(judge(t), Judgement::default(), "{t}");
        }
    }

    #[test]
    fn ssti_shapes_are_malicious() {
        for t in [
            "{{ self.__init__.__globals__.__builtins__.__import__('os').system('id') }}",
            "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
            "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
            "{{ joiner|attr('_'*2 ~ 'init' ~ '_'*2) }}",
            "{{ x|attr(name) }}",
            "{{ x['\\x5f\\x5fclass\\x5f\\x5f'] }}",
            "{{ lipsum|string|list }}",
            "{{ self._TemplateReference__context }}",
            "{{ x|map(attribute='__class__')|list }}",
            "{{ namespace.__init__ }}",
            // Names built at render time and used through a subscript.
            "{% set u = '_' %}{% set i = u ~ u ~ 'init' ~ u ~ u %}{% set c = cycler %}{{ c[i] }}",
            "{% set u = ('%' ~ 'c')|format(95) %}{% set d = u ~ u %}{{ ''[d ~ 'class' ~ d] }}",
            "{% set u = 'add_generation_prompt'[3] %}{{ x[u ~ u ~ 'class' ~ u ~ u] }}",
            "{{ [c]|map(attribute=i)|list }}",
            "{{ ('{0.' ~ a ~ '}').format(x) }}",
            "{{ '{0.__class__}'.format(x) }}",
            "{{ x|selectattr(k) }}",
        ] {
            let j = judge(t);
            assert!(!j.malicious.is_empty(), "{t}: {j:?}");
        }
        assert!(judge("{% include 'other' %}").inconclusive.is_some());
        assert!(judge("{% for %}").inconclusive.is_some());
        // Truncated statements never panic the judge.
        for t in [
            "{% set ns = namespace %}",
            "{% set ns = namespace( %}",
            "{% set %}",
            "{% for in %}",
            "{{ x[ }}",
            "{{ x|attr( }}",
        ] {
            let _ = judge(t);
        }
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        for t in [
            format!("{{{{ {}x }}}}", "-".repeat(20_000)),
            format!("{{{{ x{} }}}}", "|e".repeat(50_000)),
            format!("{{{{ {}1{} }}}}", "(".repeat(500), ")".repeat(500)),
        ] {
            let j = judge(&t);
            assert!(j.inconclusive.is_some(), "{j:?}");
        }
        // A payload before a parse error is still reported.
        let j = judge("{{ cycler.__init__ }}{% if %}");
        assert!(!j.malicious.is_empty() && j.inconclusive.is_some(), "{j:?}");
    }
}
