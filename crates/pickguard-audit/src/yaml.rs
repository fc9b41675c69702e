/*!
YAML documents as trees of strings with the line each node starts on, for
reading CI workflows and Kubernetes manifests.

Built on yaml-rust2's event parser, driven iteratively (its own loader
recurses, and these files are input): nesting depth, node count (aliases
expanded included, against billion-laughs documents) and file size are
bounded, and a document over a bound is an error the caller reports, never
a silently partial tree. Anchors and aliases are resolved and the `<<` merge
key is honoured by `get`, since GitLab CI and GitHub Actions files use both;
tags (`!reference`, `!!str`) are kept as plain values. Scalars are kept as
written (`on` stays the string "on", as Actions reads it).
*/

use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};

/// Bytes read from one YAML file.
pub const MAX_BYTES: usize = 4 << 20;
const MAX_DEPTH: usize = 128;
const MAX_NODES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum V {
    Str(String),
    Map(Vec<(String, Y)>),
    Seq(Vec<Y>),
}

/// A node and the physical line (1-based) it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Y {
    pub line: usize,
    pub v: V,
}

static NULL: Y = Y {
    line: 0,
    v: V::Str(String::new()),
};

impl Y {
    /// The value of `key` in a mapping, following `<<` merges; None otherwise.
    pub fn get(&self, key: &str) -> Option<&Y> {
        let V::Map(m) = &self.v else { return None };
        if let Some((_, v)) = m.iter().rev().find(|(k, _)| k == key) {
            return Some(v);
        }
        for (k, v) in m {
            if k == "<<" {
                let found = match &v.v {
                    V::Seq(s) => s.iter().find_map(|x| x.get(key)),
                    _ => v.get(key),
                };
                if found.is_some() {
                    return found;
                }
            }
        }
        None
    }
    /// `get`, or an empty scalar, for chained lookups.
    pub fn at(&self, key: &str) -> &Y {
        self.get(key).unwrap_or(&NULL)
    }
    pub fn str(&self) -> Option<&str> {
        match &self.v {
            V::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The scalar, or "".
    pub fn s(&self) -> &str {
        self.str().unwrap_or("")
    }
    pub fn is_true(&self) -> bool {
        matches!(self.s(), "true" | "True" | "TRUE" | "yes" | "on")
    }
    pub fn seq(&self) -> &[Y] {
        match &self.v {
            V::Seq(s) => s,
            _ => &[],
        }
    }
    /// Entries of a mapping, merges included (own keys win).
    pub fn entries(&self) -> Vec<(&str, &Y)> {
        let V::Map(m) = &self.v else { return vec![] };
        let mut out: Vec<(&str, &Y)> = Vec::new();
        for (k, v) in m {
            if k == "<<" {
                let merged: Vec<&Y> = match &v.v {
                    V::Seq(s) => s.iter().collect(),
                    _ => vec![v],
                };
                for src in merged {
                    for (mk, mv) in src.entries() {
                        if !m.iter().any(|(ok, _)| ok == mk) && !out.iter().any(|(ok, _)| *ok == mk)
                        {
                            out.push((mk, mv));
                        }
                    }
                }
            } else if let Some(slot) = out.iter_mut().find(|(ok, _)| *ok == k.as_str()) {
                slot.1 = v;
            } else {
                out.push((k.as_str(), v));
            }
        }
        out
    }
    pub fn is_map(&self) -> bool {
        matches!(self.v, V::Map(_))
    }
    /// A scalar, or each scalar of a sequence.
    pub fn strs(&self) -> Vec<&str> {
        match &self.v {
            V::Str(s) if !s.is_empty() => vec![s.as_str()],
            V::Seq(s) => s.iter().filter_map(Y::str).collect(),
            _ => vec![],
        }
    }
    /// Every scalar below this node, with its line.
    pub fn scalars(&self) -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            match &n.v {
                V::Str(s) => out.push((n.line, s.as_str())),
                V::Seq(s) => stack.extend(s.iter().rev()),
                V::Map(m) => stack.extend(m.iter().rev().map(|(_, v)| v)),
            }
        }
        out
    }
}

enum Frame {
    Map(usize, usize, Vec<(String, Y)>, Option<String>),
    Seq(usize, usize, Vec<Y>),
}

fn key_text(y: Y) -> String {
    match y.v {
        V::Str(s) => s,
        // Complex keys: never used by the files read here.
        _ => String::new(),
    }
}

/// Every document of a YAML stream.
pub fn parse(text: &str) -> Result<Vec<Y>, String> {
    if text.len() > MAX_BYTES {
        return Err(format!("larger than {} MiB", MAX_BYTES >> 20));
    }
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Y, usize)> = HashMap::new();
    let mut nodes = 0usize;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| e.to_string())?;
        let line = mark.line();
        let done: Option<(Y, usize, usize)> = match ev {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => None,
            Event::Scalar(s, _, aid, _) => {
                nodes += 1;
                Some((Y { line, v: V::Str(s) }, aid, 1))
            }
            Event::Alias(id) => {
                let (y, size) = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| format!("line {line}: alias of an unknown anchor"))?;
                nodes += size;
                Some((y, 0, size))
            }
            Event::SequenceStart(aid, _) | Event::MappingStart(aid, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("line {line}: nested deeper than {MAX_DEPTH}"));
                }
                nodes += 1;
                stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map(line, aid, Vec::new(), None)
                } else {
                    Frame::Seq(line, aid, Vec::new())
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(l, aid, m, _)) => Some((
                    Y {
                        line: l,
                        v: V::Map(m),
                    },
                    aid,
                    0,
                )),
                Some(Frame::Seq(l, aid, s)) => Some((
                    Y {
                        line: l,
                        v: V::Seq(s),
                    },
                    aid,
                    0,
                )),
                None => return Err(format!("line {line}: unbalanced document")),
            },
        };
        if nodes > MAX_NODES {
            return Err(format!(
                "more than {MAX_NODES} nodes (aliases expanded): refused"
            ));
        }
        let Some((y, aid, _)) = done else { continue };
        if aid != 0 {
            // The size of a node is what an alias to it adds.
            anchors.insert(aid, (y.clone(), count(&y)));
        }
        match stack.last_mut() {
            None => docs.push(y),
            Some(Frame::Seq(_, _, s)) => s.push(y),
            Some(Frame::Map(_, _, m, key)) => match key.take() {
                None => *key = Some(key_text(y)),
                Some(k) => m.push((k, y)),
            },
        }
    }
    Ok(docs)
}

fn count(y: &Y) -> usize {
    match &y.v {
        V::Str(_) => 1,
        V::Seq(s) => 1 + s.iter().map(count).sum::<usize>(),
        V::Map(m) => 1 + m.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_merges_and_anchors() {
        let docs = parse(
            "base: &b\n  image: python:3.11\n  tags: [gpu]\njob:\n  <<: *b\n  script:\n    - twine upload dist/*\n---\nkind: Service\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        let job = docs[0].at("job");
        assert_eq!(job.at("image").s(), "python:3.11");
        assert_eq!(job.at("tags").strs(), vec!["gpu"]);
        assert_eq!(job.at("script").seq()[0].line, 7);
        assert_eq!(docs[1].at("kind").s(), "Service");
        assert!(job.entries().iter().any(|(k, _)| *k == "image"));
    }

    #[test]
    fn bounded_against_hostile_documents() {
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            laughs.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        assert!(parse(&laughs).unwrap_err().contains("nodes"));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(parse(&deep).is_err());
        assert!(parse("a: *nope\n").is_err());
        assert!(parse("a: [unclosed\n").is_err());
    }

    #[test]
    fn on_is_a_string_key() {
        let d = &parse("on:\n  push:\n    tags: ['v*']\n").unwrap()[0];
        assert_eq!(d.at("on").at("push").at("tags").strs(), vec!["v*"]);
    }
}
