//! Jupyter notebooks (`.ipynb`): where data scientists run `!pip install`,
//! `%pip install --extra-index-url …`, `%env PIP_INDEX_URL=…` and
//! `!torchrun …`. A notebook is read as the text of its code cells laid
//! over the notebook file's own lines: each source line sits on the line of
//! the `.ipynb` file where Jupyter wrote it (nbformat writes one JSON string
//! per source line), so findings point into the file a reviewer opens. Lines
//! that cannot be placed (a notebook written on one line) follow the file's
//! last line, one per line, never joined.

use serde_json::Value;

/// Searches for a line's place that may fail before lines are no longer placed.
const MAX_MISSES: usize = 64;

/// A notebook's code, line-aligned with the file.
pub(crate) struct Cells {
    /// Every code cell's source.
    pub code: String,
    /// The shell commands among them: `!cmd` and `%cmd` lines (prefix
    /// removed) and the bodies of `%%bash`/`%%sh`/`%%script bash` cells.
    pub shell: String,
}

/// The code cells of a notebook (nbformat 4, or 3's worksheets).
pub(crate) fn read(text: &str) -> Result<Cells, String> {
    let nb: Value = serde_json::from_str(text).map_err(|e| format!("not a notebook: {e}"))?;
    let mut cells: Vec<&Value> = Vec::new();
    match (nb.get("cells"), nb.get("worksheets")) {
        (Some(Value::Array(c)), _) => cells.extend(c),
        (None, Some(Value::Array(ws))) => {
            for w in ws {
                if let Some(Value::Array(c)) = w.get("cells") {
                    cells.extend(c);
                }
            }
        }
        _ => return Err("not a notebook: no cells".into()),
    }
    let file_lines = text.lines().count();
    let mut code: Vec<String> = vec![String::new(); file_lines];
    let mut shell: Vec<String> = vec![String::new(); file_lines];
    let mut extra: Vec<(String, String)> = Vec::new();
    // Line starts, to turn a byte offset into a line index.
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let line_of = |off: usize| starts.partition_point(|&s| s <= off).saturating_sub(1);
    let mut cursor = 0usize;
    let mut misses = 0usize;
    for cell in cells {
        if cell.get("cell_type").and_then(Value::as_str) != Some("code") {
            continue;
        }
        let src = cell.get("source").or_else(|| cell.get("input"));
        let lines: Vec<String> = match src {
            Some(Value::String(s)) => s.split_inclusive('\n').map(str::to_owned).collect(),
            // Items are joined first: nbformat allows a line split across
            // items without a newline between them.
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<String>()
                .split_inclusive('\n')
                .map(str::to_owned)
                .collect(),
            _ => continue,
        };
        let first = lines.first().map(|l| l.trim()).unwrap_or("");
        let shell_cell = ["%%bash", "%%sh", "%%script bash", "%%script sh"]
            .iter()
            .any(|m| first.starts_with(m));
        for (k, raw) in lines.iter().enumerate() {
            let line = raw.trim_end_matches(['\n', '\r']);
            let t = line.trim_start();
            let sh = if shell_cell {
                (k > 0).then(|| line.to_owned())
            } else {
                t.strip_prefix('!')
                    .or_else(|| t.strip_prefix('%').filter(|r| !r.starts_with('%')))
                    .map(str::to_owned)
            };
            // Where Jupyter wrote this line: its JSON string, after the last one placed.
            // Each failed search reads to the end of the file: after
            // MAX_MISSES of them, lines are no longer placed (bounded work
            // for a notebook built to make every search fail).
            let enc = serde_json::to_string(raw.as_str()).unwrap_or_default();
            let at = (misses < MAX_MISSES)
                .then(|| text.get(cursor..).and_then(|rest| rest.find(&enc)))
                .flatten()
                .map(|p| cursor + p);
            if at.is_none() {
                misses += 1;
            }
            let slot = at
                .map(line_of)
                .filter(|&l| l < file_lines && code[l].is_empty());
            match slot {
                Some(l) => {
                    cursor = at.unwrap_or(cursor) + enc.len();
                    code[l] = line.to_owned();
                    shell[l] = sh.unwrap_or_default();
                }
                None => extra.push((line.to_owned(), sh.unwrap_or_default())),
            }
        }
    }
    for (c, s) in extra {
        code.push(c);
        shell.push(s);
    }
    Ok(Cells {
        code: code.join("\n"),
        shell: shell.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stay_where_jupyter_wrote_them() {
        let nb = r#"{
 "cells": [
  {
   "cell_type": "markdown",
   "source": ["!pip install not-code\n"]
  },
  {
   "cell_type": "code",
   "source": [
    "import os\n",
    "%pip install --extra-index-url https://x.example/simple acme\n",
    "!torchrun --master_addr=0.0.0.0 t.py"
   ]
  },
  {
   "cell_type": "code",
   "source": "%%bash\npip install y\n"
  }
 ]
}"#;
        let c = read(nb).unwrap();
        let code: Vec<&str> = c.code.lines().collect();
        let shell: Vec<&str> = c.shell.lines().collect();
        assert_eq!(code[9], "import os");
        assert_eq!(
            shell[10],
            "pip install --extra-index-url https://x.example/simple acme"
        );
        assert_eq!(shell[11], "torchrun --master_addr=0.0.0.0 t.py");
        assert!(!c.code.contains("not-code"));
        // A string source written on one line: after the file's lines, one each.
        assert!(shell.contains(&"pip install y"), "{shell:?}");
        assert!(!shell.contains(&"%%bash"));
        // One line, no newlines: nothing joined.
        let flat =
            r#"{"cells":[{"cell_type":"code","source":["!pip install a\n","!pip install b"]}]}"#;
        let c = read(flat).unwrap();
        let shell: Vec<&str> = c.shell.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(shell, ["pip install a", "pip install b"]);
        assert!(read("{\"nope\": 1}").is_err());
        // A line split across items without a newline is one line.
        let split = r#"{"cells":[{"cell_type":"code","source":["!pip ","install a\n"]}]}"#;
        assert!(
            read(split)
                .unwrap()
                .shell
                .lines()
                .any(|l| l == "pip install a")
        );
        // Lines whose JSON is escaped so that none can be placed: every line
        // is still read (after the file's own), and the work stays bounded.
        let lines: Vec<String> = (0..5000).map(|i| format!("\"\\u0023 {i}\\n\"")).collect();
        let nb = format!(
            "{{\"cells\":[{{\"cell_type\":\"code\",\"source\":[{},\"!pip install z\"]}}]}}",
            lines.join(",")
        );
        let c = read(&nb).unwrap();
        assert!(c.code.lines().any(|l| l == "# 4999"));
        assert!(c.shell.lines().any(|l| l == "pip install z"));
    }
}
