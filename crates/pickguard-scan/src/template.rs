/*!
Chat templates (Jinja programs in GGUF metadata, rendered by llama.cpp
front-ends) judged statically: parsed with minijinja's parser (a template it
refuses is inconclusive, never clean), then its tokens checked for the ways a
template reaches Python internals when a front-end renders it with an
unsandboxed `jinja2.Environment` (CVE-2024-34359, llama-cpp-python):

- an attribute or item whose name starts with `_` (`x.__class__`,
  `x['__globals__']`, `self._TemplateReference__context`), as jinja2's own
  sandbox refuses them;
- any string literal or name containing `__` (dunder names handed to
  `attr`, `map(attribute=…)`, `str.format`);
- `|attr(…)` with a name computed at render time;
- names built from underscores (`'_' * 2`, `'_' ~ '_'`), `%c`/`{:c}` formats
  and escapes (`\x5f`, `\137`, `\u005f`, `\U…`, `\N{…}`) that spell `_`;
- jinja2 objects used as gadgets: `cycler`, `joiner`, `lipsum`, `namespace`,
  `self`, `config`, `request`, `url_for`, `get_flashed_messages`, `range`
  followed by `.`, `[` or `|` (calling `namespace(…)` or `range(…)` is fine);
- `include`/`import`/`extends`/`from`: another template is loaded
  (inconclusive: what it is depends on the front-end's loader).

Limits: a name assembled by other means (characters sliced out of a string
the template obtains) and used through a plain subscript `x[name]` is not
recognised; such templates also need one of the constructs above to obtain
the characters in practice.
*/

use minijinja::machinery::{Token, parse, tokenize};
use minijinja::syntax::SyntaxConfig;

/// Templates longer than this are not judged (inconclusive).
pub const MAX_TEMPLATE: usize = 1 << 20;

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

#[derive(Debug, Default, PartialEq)]
pub struct Judgement {
    /// Constructs that reach Python internals, with the line they are on.
    pub malicious: Vec<(u32, String)>,
    /// Why the template could not be judged.
    pub inconclusive: Option<String>,
}

fn text(t: &Token) -> Option<String> {
    match t {
        Token::Str(s) => Some((*s).to_owned()),
        Token::String(s) => Some(s.to_string()),
        _ => None,
    }
}

fn hides_underscore(raw: &str) -> bool {
    let l = raw.to_ascii_lowercase();
    ["\\x5f", "\\137", "\\u005f", "\\U", "\\N{"]
        .iter()
        .any(|e| l.contains(&e.to_ascii_lowercase()))
}

/// Judge one template.
pub fn judge(src: &str) -> Judgement {
    let mut j = Judgement::default();
    if src.len() > MAX_TEMPLATE {
        j.inconclusive = Some(format!("template of {} bytes not judged", src.len()));
        return j;
    }
    if let Err(e) = parse(src, "chat_template", SyntaxConfig::default()) {
        j.inconclusive = Some(format!("the Jinja parser refuses the template: {e}"));
        return j;
    }
    let mut toks: Vec<(Token, u32, String)> = Vec::new();
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
                return j;
            }
        }
    }
    let mut flag = |line: u32, why: String| {
        if !j.malicious.iter().any(|(_, w)| *w == why) {
            j.malicious.push((line, why));
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
                flag(line, format!("string {raw} spells characters with escapes"));
            }
            let underscores = !s.is_empty() && s.chars().all(|c| c == '_');
            let joined_after = matches!(at(i + 1), Some(Token::Mul | Token::Tilde | Token::Plus));
            let joined_before = matches!(
                i.checked_sub(1).and_then(at),
                Some(Token::Tilde | Token::Plus)
            );
            if (underscores && joined_after) || (joined_before && s.starts_with('_')) {
                flag(line, format!("builds a name from underscores ({raw} …)"));
            }
            if s.contains("%c") || s.contains(":c}") {
                flag(line, format!("string {s:?} formats character codes"));
            }
        }
        match tok {
            Token::Ident(n) if n.contains("__") => {
                flag(line, format!("name {n} is a Python internal (dunder)"));
            }
            Token::Dot => {
                if let Some(Token::Ident(n)) = at(i + 1)
                    && n.starts_with('_')
                {
                    flag(line, format!("reads the private attribute .{n}"));
                }
            }
            Token::BracketOpen => {
                if let (Some(t), Some(Token::BracketClose)) = (at(i + 1), at(i + 2))
                    && let Some(s) = text(t)
                    && s.starts_with('_')
                {
                    flag(line, format!("reads the private item [{s:?}]"));
                }
            }
            Token::Pipe => {
                if let (Some(Token::Ident(f)), Some(Token::ParenOpen)) = (at(i + 1), at(i + 2))
                    && *f == "attr"
                {
                    match (at(i + 3).and_then(text), at(i + 4)) {
                        (Some(s), Some(Token::ParenClose)) if !s.starts_with('_') => {}
                        (Some(s), Some(Token::ParenClose)) => flag(
                            line,
                            format!("reads the private attribute {s:?} through |attr"),
                        ),
                        _ => flag(
                            line,
                            "reads an attribute whose name is computed at render time (|attr)"
                                .into(),
                        ),
                    }
                }
            }
            Token::Ident(n)
                if GADGETS.contains(n)
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
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_shapes_are_clean() {
        // ChatML, with the loop/namespace idioms real templates use.
        let chatml = "{%- set ns = namespace(found=false) -%}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% if message.tool_calls is defined %}{% for tc in message.tool_calls %}{{ tc['function']['name'] | tojson }}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}{{ messages[loop_index + 1] if false else '' }}{{ range(3)|list|length }}";
        assert_eq!(judge(chatml), Judgement::default());
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
            "{{ '%c%c'|format(95, 95) }}",
            "{{ x|map(attribute='__class__')|list }}",
            "{{ namespace.__init__ }}",
        ] {
            let j = judge(t);
            assert!(!j.malicious.is_empty(), "{t}: {j:?}");
        }
        assert!(judge("{% include 'other' %}").inconclusive.is_some());
        assert!(judge("{% for %}").inconclusive.is_some());
    }
}
