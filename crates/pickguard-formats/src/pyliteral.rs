//! Python literals as `ast.literal_eval` reads them, for the `.npy` header.
//!
//! Why hand-written: numpy parses the header with `literal_eval`, so both
//! quote styles, escapes (`'\x4f'` is `'O'`), implicit concatenation
//! (`'O' ''`), tuples, lists and dicts must be read exactly as Python does;
//! a string search for `'O` is what scanner-evasion files defeat. Bounded:
//! nesting depth and input length (the header) are limited.

/// A Python literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Bytes(Vec<u8>),
    Int(i128),
    Float(f64),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

const MAX_DEPTH: usize = 64;

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len()
            && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
        {
            self.i += 1;
        }
        // A line continuation inside brackets is whitespace too.
        if self.s.get(self.i) == Some(&b'\\') && self.s.get(self.i + 1) == Some(&b'\n') {
            self.i += 2;
            self.ws();
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(b'}') {
                        return Ok(Lit::Dict(items));
                    }
                    let k = self.value(depth + 1)?;
                    if !self.eat(b':') {
                        return self.err("expected ':'");
                    }
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    if !self.eat(b',') {
                        if self.eat(b'}') {
                            return Ok(Lit::Dict(items));
                        }
                        return self.err("expected ',' or '}'");
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                Ok(Lit::List(self.seq(b']', depth)?.0))
            }
            Some(b'(') => {
                self.i += 1;
                let (items, trailing_comma) = self.seq(b')', depth)?;
                // `(x)` is x; `(x,)` and `()` are tuples.
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().unwrap_or(Lit::None))
                } else {
                    Ok(Lit::Tuple(items))
                }
            }
            Some(c)
                if c == b'\'' || c == b'"' || c.is_ascii_alphabetic() && self.string_prefix() =>
            {
                self.strings()
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    _ => self.err("not a literal name"),
                }
            }
            _ => self.err("expected a literal"),
        }
    }

    /// Items up to `close`; whether the last one had a trailing comma.
    fn seq(&mut self, close: u8, depth: usize) -> Result<(Vec<Lit>, bool), String> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok((items, true));
            }
            items.push(self.value(depth + 1)?);
            if !self.eat(b',') {
                if self.eat(close) {
                    return Ok((items, false));
                }
                return self.err("expected ',' or a closing bracket");
            }
        }
    }

    /// Is there a string prefix (r, b, u, rb, br, any case) then a quote here?
    fn string_prefix(&self) -> bool {
        let mut j = self.i;
        while j < self.s.len() && j - self.i < 2 && matches!(self.s[j] | 0x20, b'r' | b'b' | b'u') {
            j += 1;
        }
        j > self.i && matches!(self.s.get(j), Some(b'\'' | b'"'))
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self) -> Result<Lit, String> {
        let mut text = String::new();
        let mut bytes: Option<Vec<u8>> = None;
        let mut any_str = false;
        loop {
            self.ws();
            let save = self.i;
            let mut raw = false;
            let mut is_bytes = false;
            while let Some(c) = self.peek() {
                match c | 0x20 {
                    b'r' if c.is_ascii_alphabetic() => raw = true,
                    b'b' if c.is_ascii_alphabetic() => is_bytes = true,
                    b'u' if c.is_ascii_alphabetic() => {}
                    _ => break,
                }
                self.i += 1;
            }
            let Some(q) = self.peek().filter(|c| *c == b'\'' || *c == b'"') else {
                self.i = save;
                break;
            };
            let triple = self.s.get(self.i..self.i + 3) == Some(&[q, q, q][..]);
            self.i += if triple { 3 } else { 1 };
            let mut out: Vec<u8> = Vec::new();
            loop {
                let Some(c) = self.peek() else {
                    return self.err("unterminated string");
                };
                if c == q && (!triple || self.s.get(self.i..self.i + 3) == Some(&[q, q, q][..])) {
                    self.i += if triple { 3 } else { 1 };
                    break;
                }
                if c == b'\n' && !triple {
                    return self.err("newline in string");
                }
                if c == b'\\' && !raw {
                    self.i += 1;
                    let Some(e) = self.peek() else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    match e {
                        b'\n' => {}
                        b'\\' | b'\'' | b'"' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'0'..=b'7' => {
                            let mut v = (e - b'0') as u32;
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + (d - b'0') as u32;
                                        self.i += 1;
                                    }
                                    _ => break,
                                }
                            }
                            push_char(&mut out, v, is_bytes)?;
                        }
                        b'x' | b'u' | b'U' if !(is_bytes && e != b'x') => {
                            let n = match e {
                                b'x' => 2,
                                b'u' => 4,
                                _ => 8,
                            };
                            let h = self
                                .s
                                .get(self.i..self.i + n)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok());
                            let Some(v) = h else {
                                return self.err("bad escape");
                            };
                            self.i += n;
                            push_char(&mut out, v, is_bytes)?;
                        }
                        b'a' => out.push(7),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'v' => out.push(11),
                        // \N{NAME} needs Unicode's name table: refuse rather than guess.
                        b'N' if !is_bytes => return self.err("\\N{...} escape not supported"),
                        other => {
                            out.push(b'\\');
                            out.push(other);
                        }
                    }
                    continue;
                }
                out.push(c);
                self.i += 1;
            }
            if is_bytes {
                bytes.get_or_insert_with(Vec::new).extend_from_slice(&out);
            } else {
                any_str = true;
                text.push_str(
                    &String::from_utf8(out).map_err(|_| "string is not UTF-8".to_string())?,
                );
            }
            if bytes.is_some() && any_str {
                return self.err("cannot mix bytes and str literals");
            }
        }
        Ok(match bytes {
            Some(b) => Lit::Bytes(b),
            None => Lit::Str(text),
        })
    }

    fn number(&mut self) -> Result<Lit, String> {
        let start = self.i;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.i += 1;
            self.ws();
        }
        let digits = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
        {
            self.i += 1;
        }
        let t: String = String::from_utf8_lossy(&self.s[digits..self.i]).replace('_', "");
        let neg = self.s[start] == b'-';
        let int = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            i128::from_str_radix(h, 16).ok()
        } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
            i128::from_str_radix(o, 8).ok()
        } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
            i128::from_str_radix(b, 2).ok()
        } else {
            t.parse::<i128>().ok()
        };
        if let Some(v) = int {
            return Ok(Lit::Int(if neg { -v } else { v }));
        }
        match t.parse::<f64>() {
            Ok(v) => Ok(Lit::Float(if neg { -v } else { v })),
            Err(_) => self.err("bad number"),
        }
    }
}

fn push_char(out: &mut Vec<u8>, v: u32, bytes: bool) -> Result<(), String> {
    if bytes {
        out.push(u8::try_from(v).map_err(|_| "byte escape out of range".to_string())?);
    } else {
        let c = char::from_u32(v).ok_or("escape is not a character")?;
        let mut b = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    Ok(())
}

/// Parse `text` as one literal (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Lit, String> {
    let mut p = P {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return p.err("trailing characters");
    }
    Ok(v)
}

/// Does numpy's `descr_to_dtype` (numpy.lib.format) make a dtype holding
/// Python objects from this descr? `Err` when numpy's answer cannot be told
/// (a caller must then not call the array safe).
pub fn descr_has_object(descr: &Lit) -> Result<bool, String> {
    descr_has_object_at(descr, 0)
}

fn descr_has_object_at(descr: &Lit, depth: usize) -> Result<bool, String> {
    if depth > MAX_DEPTH {
        return Err("descr nested too deeply".into());
    }
    match descr {
        Lit::Str(s) => Ok(dtype_string_has_object(s)),
        Lit::Bytes(b) => Ok(dtype_string_has_object(&String::from_utf8_lossy(b))),
        // (base, shape): a subarray of base.
        Lit::Tuple(items) => match items.first() {
            Some(base) => descr_has_object_at(base, depth + 1),
            None => Err("empty descr tuple".into()),
        },
        // [(name, descr[, shape]), ...]: a structured dtype.
        Lit::List(fields) => {
            let mut any = false;
            for f in fields {
                let parts = match f {
                    Lit::Tuple(p) | Lit::List(p) => p,
                    _ => return Err("structured descr field is not a tuple".into()),
                };
                let Some(d) = parts.get(1) else {
                    return Err("structured descr field without a type".into());
                };
                any |= descr_has_object_at(d, depth + 1)?;
            }
            Ok(any)
        }
        other => Err(format!("descr {other:?} is not one numpy reads")),
    }
}

/// A dtype string (`'<f4'`, `'|O'`, `'object'`, a comma list `'i4,O'`,
/// with subarray shapes `'(2,3)O'` or counts `'3O'`): is any part an object?
fn dtype_string_has_object(s: &str) -> bool {
    // Commas inside a shape `(2,3)` do not separate fields.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().any(|part| {
        let mut t = part.trim();
        // A leading subarray shape or repeat count.
        if t.starts_with('(')
            && let Some(end) = t.find(')')
        {
            t = &t[end + 1..];
        }
        let t = t.trim_start_matches(|c: char| c.is_ascii_digit());
        let t = t.trim_start_matches(['<', '>', '=', '|']);
        let base = t.trim_end_matches(|c: char| c.is_ascii_digit());
        matches!(base, "O" | "object" | "object_" | "O_") || t == "object0"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(header_descr: &str) -> Result<bool, String> {
        descr_has_object(&parse(header_descr)?)
    }

    #[test]
    fn every_object_spelling_numpy_accepts() {
        for d in [
            "'O'",
            "'|O'",
            "'<O'",
            "'O8'",
            "\"O\"",
            "'object'",
            "'\\x4f'",
            "'\\117'",
            "'O' ''",
            "u'O'",
            "'\\u004f'",
            "[('a', '<f4'), ('b', '|O')]",
            "[('a', [('x', 'O')])]",
            "[(('title', 'a'), 'O', (2,))]",
            "('O', (3,))",
            "'i4, O'",
            "'(2,3)O'",
            "'3O'",
            "'''O'''",
            "b'O'",
        ] {
            assert_eq!(obj(d), Ok(true), "{d}");
        }
        for d in [
            "'<f4'",
            "'|u1'",
            "'<U10'",
            "[('a', '<f8'), ('b', '<i4', (2,))]",
            "'bool'",
            "'c16'",
        ] {
            assert_eq!(obj(d), Ok(false), "{d}");
        }
        assert!(obj("{'names': ['a'], 'formats': ['O']}").is_err());
        assert!(obj("'\\N{LATIN CAPITAL LETTER O}'").is_err());
    }

    #[test]
    fn headers_parse_as_python_does() {
        let h =
            parse("{\"descr\": '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n").unwrap();
        let Lit::Dict(items) = h else { panic!() };
        assert_eq!(items[0].0, Lit::Str("descr".into()));
        assert_eq!(items[2].1, Lit::Tuple(vec![Lit::Int(3), Lit::Int(4)]));
        assert_eq!(parse("(1,)").unwrap(), Lit::Tuple(vec![Lit::Int(1)]));
        assert_eq!(parse("(1)").unwrap(), Lit::Int(1));
        assert!(parse("{'a': __import__('os')}").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
    }
}
