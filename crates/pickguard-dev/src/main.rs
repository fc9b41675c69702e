//! `cargo dev` (an alias in .cargo/config.toml): maintainer tasks.
//!
//! - `cargo dev docs` writes docs/rules.md from the rule tables;
//! - `cargo dev docs --check` fails, showing the first difference, when the
//!   committed file is not what the tables make (scripts/test.sh runs it).

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cargo dev: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo dev docs [--check]";

fn run(args: Vec<String>) -> Result<()> {
    let (task, rest) = args.split_first().context(USAGE)?;
    match (task.as_str(), rest) {
        ("docs", []) => docs(false),
        ("docs", [flag]) if flag == "--check" => docs(true),
        ("help" | "--help" | "-h", _) => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn docs(check: bool) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("docs/rules.md");
    let want = pickguard::api::rules_markdown();
    if !check {
        std::fs::write(&path, &want).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote docs/rules.md");
        return Ok(());
    }
    let have =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if have == want {
        return Ok(());
    }
    let (n, (h, w)) = have
        .lines()
        .chain(std::iter::repeat("<end of file>"))
        .zip(want.lines().chain(std::iter::repeat("<end of file>")))
        .enumerate()
        .find(|(_, (h, w))| h != w)
        .unwrap_or((0, ("", "")));
    bail!(
        "docs/rules.md is not what the rule tables make (run `cargo dev docs`): \
         line {}:\n  file:   {h}\n  tables: {w}",
        n + 1
    )
}
