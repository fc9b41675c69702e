//! Reading every file that decides where packages come from.

use crate::{Client, Context, Index, Inputs, Locked, Options, Role, relative, trust_of};
use pickguard_index::normalize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use toml::Value;

const PYPI: &str = "https://pypi.org/simple/";

fn index(name: Option<&str>, url: &str, role: Role, opts: &Options) -> Index {
    let trust = trust_of(url, opts);
    Index {
        name: name.map(str::to_owned),
        url: url.to_owned(),
        role,
        public: trust.is_public(),
        trust,
        include: vec![],
        exclude: vec![],
    }
}

fn ctx(client: Client, origin: String) -> Context {
    Context {
        client,
        file: origin.clone(),
        line: None,
        origin,
        indexes: vec![],
        strategy: None,
        source_order: false,
        pins: BTreeMap::new(),
        hashes_required: false,
        no_index: false,
        packages: BTreeSet::new(),
    }
}

/// The project name at the start of a requirement string (`acme-internal>=1; ...`).
fn req_name(s: &str) -> Option<String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(s.len());
    let n = &s[..end];
    (!n.is_empty() && n.as_bytes()[0].is_ascii_alphanumeric()).then(|| normalize(n))
}

/// pip settings from configuration files and environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct PipSettings {
    index_url: Option<(String, String)>,
    extra: Vec<(String, String)>,
    find_links: Vec<(String, String)>,
    no_index: bool,
}

fn read_pip_conf(path: &Path, s: &mut PipSettings, files: &mut Vec<String>) {
    // Not UTF-8 (a Latin-1 comment) must not hide a file: read lossily.
    let Ok(text) = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()) else {
        return;
    };
    files.push(path.display().to_string());
    let mut section = String::new();
    let mut key: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with(';') || t.is_empty() {
            continue;
        }
        if t.starts_with('[') {
            section = t.trim_matches(['[', ']']).to_lowercase();
            key = None;
            continue;
        }
        if !matches!(
            section.as_str(),
            "global" | "install" | "download" | "wheel"
        ) {
            continue;
        }
        let (k, vals) = match t.split_once(['=', ':']) {
            Some((k, v)) if !line.starts_with(char::is_whitespace) => {
                key = Some(k.trim().to_lowercase());
                (k.trim().to_lowercase(), v.trim().to_owned())
            }
            _ => match &key {
                Some(k) => (k.clone(), t.to_owned()),
                None => continue,
            },
        };
        let origin = path.display().to_string();
        for v in vals.split_whitespace() {
            match k.as_str() {
                "index-url" | "index_url" => s.index_url = Some((v.to_owned(), origin.clone())),
                "extra-index-url" | "extra_index_url" => {
                    s.extra.push((v.to_owned(), origin.clone()))
                }
                "find-links" | "find_links" => s.find_links.push((v.to_owned(), origin.clone())),
                "no-index" | "no_index" => s.no_index = matches!(v, "true" | "yes" | "1" | "on"),
                _ => {}
            }
        }
    }
}

fn host_pip_settings(dir: &Path, opts: &Options, files: &mut Vec<String>) -> PipSettings {
    let mut s = PipSettings::default();
    // A pip.conf kept in the project (used through PIP_CONFIG_FILE in CI).
    for f in ["pip.conf", "pip.ini"] {
        read_pip_conf(&dir.join(f), &mut s, files);
    }
    if !opts.host_config {
        return s;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"));
    let mut paths = vec![
        PathBuf::from("/etc/pip.conf"),
        PathBuf::from("/etc/xdg/pip/pip.conf"),
        home.join(".pip/pip.conf"),
        xdg.join("pip/pip.conf"),
    ];
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        paths.push(PathBuf::from(v).join("pip.conf"));
    }
    if let Some(p) = std::env::var_os("PIP_CONFIG_FILE") {
        paths.push(PathBuf::from(p));
    }
    for p in paths {
        read_pip_conf(&p, &mut s, files);
    }
    if let Ok(v) = std::env::var("PIP_INDEX_URL") {
        s.index_url = Some((v, "PIP_INDEX_URL".into()));
    }
    if let Ok(v) = std::env::var("PIP_EXTRA_INDEX_URL") {
        s.extra.extend(
            v.split_whitespace()
                .map(|u| (u.to_owned(), "PIP_EXTRA_INDEX_URL".into())),
        );
    }
    if let Ok(v) = std::env::var("PIP_FIND_LINKS") {
        s.find_links.extend(
            v.split_whitespace()
                .map(|u| (u.to_owned(), "PIP_FIND_LINKS".into())),
        );
    }
    s
}

/// Requirements files, following `-r`/`-c` includes.
fn read_requirements(
    path: &Path,
    s: &mut PipSettings,
    pkgs: &mut BTreeSet<String>,
    hashed: &mut (usize, usize, bool),
    files: &mut Vec<String>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    // Not UTF-8 (a Latin-1 comment) must not hide a file: read lossily.
    let Ok(text) = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()) else {
        return;
    };
    files.push(path.display().to_string());
    let joined = text.replace("\\\n", " ");
    for line in joined.lines() {
        let line = line.split(" #").next().unwrap_or(line).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        let mut i = 0;
        let val = |i: &mut usize, t: &str, long: &str| -> Option<String> {
            if let Some(v) = t.strip_prefix(&format!("{long}=")) {
                return Some(v.to_owned());
            }
            *i += 1;
            toks.get(*i).map(|v| v.to_string())
        };
        let origin = path.display().to_string();
        if !toks[0].starts_with('-') {
            if let Some(n) = req_name(toks[0]) {
                pkgs.insert(n);
                hashed.0 += 1;
                if toks.iter().any(|t| t.starts_with("--hash")) {
                    hashed.1 += 1;
                }
            }
            continue;
        }
        while i < toks.len() {
            let t = toks[i];
            match t.split('=').next().unwrap_or(t) {
                "-i" | "--index-url" => {
                    if let Some(v) = val(&mut i, t, "--index-url") {
                        s.index_url = Some((v, origin.clone()));
                    }
                }
                "--extra-index-url" => {
                    if let Some(v) = val(&mut i, t, "--extra-index-url") {
                        s.extra.push((v, origin.clone()));
                    }
                }
                "-f" | "--find-links" => {
                    if let Some(v) = val(&mut i, t, "--find-links") {
                        s.find_links.push((v, origin.clone()));
                    }
                }
                "--no-index" => s.no_index = true,
                "--require-hashes" => hashed.2 = true,
                "-r" | "--requirement" | "-c" | "--constraint" => {
                    let long = if t.starts_with("-c") || t.starts_with("--constraint") {
                        "--constraint"
                    } else {
                        "--requirement"
                    };
                    if let Some(v) = val(&mut i, t, long) {
                        let p = path.parent().unwrap_or(Path::new(".")).join(v);
                        read_requirements(&p, s, pkgs, hashed, files, depth + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn pip_context(client: Client, origin: String, s: &PipSettings, opts: &Options) -> Context {
    let mut c = ctx(client, origin);
    let (primary, _) = s
        .index_url
        .clone()
        .unwrap_or_else(|| (PYPI.to_owned(), "default".into()));
    c.indexes.push(index(None, &primary, Role::Primary, opts));
    for (u, _) in &s.extra {
        c.indexes.push(index(None, u, Role::Extra, opts));
    }
    for (u, _) in &s.find_links {
        c.indexes.push(index(None, u, Role::FindLinks, opts));
    }
    c.no_index = s.no_index;
    c
}

fn is_requirements_file(name: &str) -> bool {
    let n = name.to_lowercase();
    (n.ends_with(".txt") || n.ends_with(".in"))
        && (n.contains("requirements") || n.contains("constraints") || n.starts_with("requires"))
}

fn toml_file(path: &Path, files: &mut Vec<String>, warnings: &mut Vec<String>) -> Option<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if path.exists() => {
            warnings.push(format!("{}: {e}{}", path.display(), crate::UNREAD));
            return None;
        }
        Err(_) => return None,
    };
    files.push(path.display().to_string());
    match toml::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!("{}: {e}{}", path.display(), crate::UNREAD));
            None
        }
    }
}

fn strs(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

fn project_deps(doc: &Value) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = strs(doc.get("project").and_then(|p| p.get("dependencies")))
        .iter()
        .filter_map(|d| req_name(d))
        .collect();
    if let Some(groups) = doc.get("dependency-groups").and_then(Value::as_table) {
        for g in groups.values() {
            out.extend(strs(Some(g)).iter().filter_map(|d| req_name(d)));
        }
    }
    out
}

/// `[tool.uv]` or `uv.toml`.
fn uv_context(uv: &Value, origin: String, deps: BTreeSet<String>, opts: &Options) -> Context {
    let mut c = ctx(Client::Uv, origin);
    c.packages = deps;
    let mut has_default = false;
    for i in uv
        .get("index")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let url = i.get("url").and_then(Value::as_str).unwrap_or("");
        let name = i.get("name").and_then(Value::as_str);
        let role = if i.get("default").and_then(Value::as_bool) == Some(true) {
            has_default = true;
            Role::Primary
        } else if i.get("explicit").and_then(Value::as_bool) == Some(true) {
            Role::Explicit
        } else {
            Role::Ordered
        };
        c.indexes.push(index(name, url, role, opts));
    }
    if let Some(u) = uv.get("index-url").and_then(Value::as_str) {
        has_default = true;
        c.indexes.push(index(None, u, Role::Primary, opts));
    }
    for u in strs(uv.get("extra-index-url")) {
        c.indexes.push(index(None, &u, Role::Extra, opts));
    }
    if !has_default {
        c.indexes
            .push(index(Some("pypi"), PYPI, Role::Primary, opts));
    }
    c.strategy = uv
        .get("index-strategy")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(src) = uv.get("sources").and_then(Value::as_table) {
        for (pkg, v) in src {
            // A table, or a list of tables with markers (uv's PyTorch guide:
            // one index per platform). Pinned when any branch names an index.
            let branches: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            if let Some(ix) = branches
                .iter()
                .find_map(|b| b.get("index").and_then(Value::as_str))
            {
                c.pins.insert(normalize(pkg), ix.to_owned());
            }
        }
    }
    c
}

fn poetry_context(doc: &Value, origin: String, opts: &Options) -> Option<Context> {
    let poetry = doc.get("tool")?.get("poetry")?;
    let mut c = ctx(Client::Poetry, origin);
    c.packages = project_deps(doc);
    let mut primary_seen = false;
    for s in poetry
        .get("source")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        let url =
            s.get("url")
                .and_then(Value::as_str)
                .unwrap_or(if name.eq_ignore_ascii_case("pypi") {
                    PYPI
                } else {
                    ""
                });
        // poetry 1.x spellings: `secondary = true` / priority "secondary"
        // (searched after the primaries; the implicit PyPI stays primary),
        // `default = true` / priority "default" (replaces PyPI).
        let legacy_secondary = s.get("secondary").and_then(Value::as_bool) == Some(true);
        let priority = s
            .get("priority")
            .and_then(Value::as_str)
            .unwrap_or(if legacy_secondary {
                "secondary"
            } else {
                "primary"
            });
        let role = match priority {
            "supplemental" | "secondary" => Role::Supplemental,
            "explicit" => Role::Explicit,
            _ => {
                primary_seen = true;
                Role::Primary
            }
        };
        c.indexes.push(index(Some(name), url, role, opts));
    }
    // Any primary source disables the implicit PyPI (poetry 2.x).
    if !primary_seen {
        c.indexes
            .insert(0, index(Some("PyPI"), PYPI, Role::Primary, opts));
    }
    let groups = poetry.get("group").and_then(Value::as_table);
    let tables = ["dependencies", "dev-dependencies"]
        .iter()
        .filter_map(|t| poetry.get(*t))
        .chain(
            groups
                .into_iter()
                .flat_map(|g| g.values().filter_map(|g| g.get("dependencies"))),
        );
    for deps in tables.filter_map(Value::as_table) {
        // `python` is the interpreter constraint, not a package.
        for (pkg, v) in deps.iter().filter(|(p, _)| *p != "python") {
            c.packages.insert(normalize(pkg));
            if let Some(src) = v.get("source").and_then(Value::as_str) {
                c.pins.insert(normalize(pkg), src.to_owned());
            }
        }
    }
    Some(c)
}

fn pdm_context(doc: &Value, origin: String, opts: &Options) -> Option<Context> {
    let pdm = doc.get("tool")?.get("pdm")?;
    let mut c = ctx(Client::Pdm, origin);
    c.packages = project_deps(doc);
    let mut replaced_pypi = false;
    for s in pdm
        .get("source")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        let url = s.get("url").and_then(Value::as_str).unwrap_or("");
        if s.get("type").and_then(Value::as_str) == Some("find_links") {
            c.indexes
                .push(index(Some(name), url, Role::FindLinks, opts));
            continue;
        }
        if name == "pypi" {
            replaced_pypi = true;
        }
        let mut i = index(Some(name), url, Role::Primary, opts);
        i.include = strs(s.get("include_packages"));
        i.exclude = strs(s.get("exclude_packages"));
        c.indexes.push(i);
    }
    if !replaced_pypi {
        c.indexes
            .insert(0, index(Some("pypi"), PYPI, Role::Primary, opts));
    }
    c.source_order = pdm
        .get("resolution")
        .and_then(|r| r.get("respect-source-order"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(c)
}

fn pipenv_context(doc: &Value, origin: String, opts: &Options) -> Context {
    let mut c = ctx(Client::Pipenv, origin);
    for s in doc
        .get("source")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = s.get("name").and_then(Value::as_str);
        let url = s.get("url").and_then(Value::as_str).unwrap_or("");
        c.indexes.push(index(name, url, Role::Primary, opts));
    }
    if c.indexes.is_empty() {
        c.indexes
            .push(index(Some("pypi"), PYPI, Role::Primary, opts));
    }
    for table in ["packages", "dev-packages"] {
        if let Some(t) = doc.get(table).and_then(Value::as_table) {
            for (pkg, v) in t {
                c.packages.insert(normalize(pkg));
                if let Some(ix) = v.get("index").and_then(Value::as_str) {
                    c.pins.insert(normalize(pkg), ix.to_owned());
                }
            }
        }
    }
    c
}

/// `pip install` / `uv pip install` command lines in scripts, Dockerfiles, Makefiles and CI files.
/// Logical lines (backslash continuations joined) with the physical line
/// number each starts on.
pub(crate) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let (body, cont) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        match &mut cur {
            Some((_, acc)) => {
                acc.push(' ');
                acc.push_str(body);
            }
            None => cur = Some((i + 1, body.to_owned())),
        }
        if !cont && let Some(c) = cur.take() {
            out.push(c);
        }
    }
    out.extend(cur);
    out
}

/// pip/uv options that take a value (so the value is never read as a package).
const VALUE_FLAGS: &[&str] = &[
    "-r",
    "-c",
    "--requirement",
    "--constraint",
    "-e",
    "--editable",
    "-t",
    "--target",
    "--python",
    "-p",
    "--python-version",
    "--platform",
    "--abi",
    "--implementation",
    "--root",
    "--prefix",
    "--src",
    "--upgrade-strategy",
    "--progress-bar",
    "--cache-dir",
    "--log",
    "--proxy",
    "--retries",
    "--timeout",
    "--exists-action",
    "--trusted-host",
    "--cert",
    "--client-cert",
    "--global-option",
    "--config-settings",
    "-C",
    "--report",
    "--only-binary",
    "--no-binary",
    "--build-constraint",
    "--overrides",
    "--override",
    "--extra",
    "--group",
    "--resolution",
    "--prerelease",
    "--keyring-provider",
    "--link-mode",
    "--config-file",
    "--exclude-newer",
    "--python-platform",
    "--torch-backend",
    "--color",
    "--directory",
];

fn install_commands(
    path: &Path,
    rel: &str,
    base: &PipSettings,
    opts: &Options,
    out: &mut Vec<Context>,
    files: &mut Vec<String>,
) {
    // Not UTF-8 (a Latin-1 comment) must not hide a file: read lossily.
    let Ok(text) = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()) else {
        return;
    };
    if install_commands_in(&text, rel, base, opts, out) {
        files.push(path.display().to_string());
    }
}

/// A notebook's `!pip`/`%pip` installs and `%env`/`os.environ` index
/// settings, at the notebook's own line numbers.
fn notebook_commands(
    path: &Path,
    rel: &str,
    base: &PipSettings,
    opts: &Options,
    out: &mut Vec<Context>,
    files: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let text = match std::fs::read(path) {
        Ok(b) if b.len() as u64 <= MAX_NOTEBOOK => String::from_utf8_lossy(&b).into_owned(),
        Ok(_) => {
            warnings.push(format!(
                "{rel}: a notebook larger than 16 MiB, not read for install commands{}",
                crate::UNREAD
            ));
            return;
        }
        Err(e) => {
            warnings.push(format!(
                "{rel}: {e}; not read for install commands{}",
                crate::UNREAD
            ));
            return;
        }
    };
    match crate::notebook::read(&text) {
        Ok(cells) => {
            files.push(path.display().to_string());
            install_commands_in(&cells.code, rel, base, opts, out);
        }
        Err(e) => warnings.push(format!("{rel}: {e}{}", crate::UNREAD)),
    }
}

/// Notebooks carry outputs (images): larger ones than this are not read.
pub(crate) const MAX_NOTEBOOK: u64 = 16 << 20;

/// The install commands of one file's text; whether there were any.
fn install_commands_in(
    text: &str,
    rel: &str,
    base: &PipSettings,
    opts: &Options,
    out: &mut Vec<Context>,
) -> bool {
    // The project's pip configuration applies to commands run in it.
    let mut env = base.clone();
    let mut any = false;
    for (ln, line) in logical_lines(text) {
        // Dockerfile ENV/ARG, shell export (VAR=value), and YAML (GitHub
        // Actions `env:`, GitLab CI `variables:`: VAR: value) settings of
        // the variables pip and uv read.
        for (var, slot) in [
            ("PIP_INDEX_URL", 0),
            ("PIP_EXTRA_INDEX_URL", 1),
            ("UV_EXTRA_INDEX_URL", 1),
            ("UV_INDEX_URL", 0),
            ("UV_DEFAULT_INDEX", 0),
            ("UV_INDEX", 1),
            ("PIP_FIND_LINKS", 2),
        ] {
            let t = line.trim_start().trim_start_matches("- ");
            // Python too (a notebook, a script): os.environ["VAR"] = "…",
            // os.environ.setdefault("VAR", "…").
            let after = [
                format!("{var}="),
                format!("{var}: "),
                format!("{var} "),
                format!("{var}\"] = "),
                format!("{var}'] = "),
                format!("{var}\"]="),
                format!("{var}']="),
                format!("{var}\", "),
                format!("{var}', "),
            ]
            .iter()
            .find_map(|pre| {
                line.find(pre.as_str())
                    .filter(|&p| {
                        // A whole word: start of the line, or after a space/ENV/export.
                        p == 0
                            || !line.as_bytes()[p - 1].is_ascii_alphanumeric()
                                && line.as_bytes()[p - 1] != b'_'
                    })
                    .map(|p| line[p + pre.len()..].to_owned())
            })
            .filter(|_| !t.starts_with('#'));
            if let Some(rest) = after {
                let v = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches(['"', '\'', ')', ',', ';'])
                    .to_owned();
                if v.contains("://") || v.starts_with('/') {
                    match slot {
                        0 => env.index_url = Some((v, rel.to_owned())),
                        1 => env.extra.push((v, rel.to_owned())),
                        _ => env.find_links.push((v, rel.to_owned())),
                    }
                }
            }
        }
        let line = line.as_str();
        // A commented-out install (`# !pip install …`, `# pip install …`)
        // runs nothing.
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some(pos) = line
            .find("pip install")
            .or_else(|| line.find("pip3 install"))
        else {
            continue;
        };
        let uv = line[..pos].trim_end().ends_with("uv");
        let toks: Vec<String> = line[pos..]
            .split_whitespace()
            .map(|t| t.trim_matches(['"', '\'']).to_owned())
            .collect();
        let mut s = env.clone();
        let mut pkgs = BTreeSet::new();
        let mut strategy = None;
        let mut hashes = false;
        let mut uv_default: Option<String> = None;
        let mut uv_index: Vec<String> = vec![];
        let mut i = 2;
        while i < toks.len() {
            let t = toks[i].as_str();
            if matches!(t, "&&" | ";" | "||" | "|") {
                break;
            }
            let (flag, inline) = match t.split_once('=') {
                Some((f, v)) if f.starts_with('-') => (f.to_owned(), Some(v.to_owned())),
                _ => (t.to_owned(), None),
            };
            let mut take = || -> Option<String> {
                if inline.is_some() {
                    return inline.clone();
                }
                i += 1;
                toks.get(i).cloned()
            };
            match flag.as_str() {
                "-i" | "--index-url" => s.index_url = take().map(|v| (v, rel.to_owned())),
                "--extra-index-url" => s.extra.extend(take().map(|v| (v, rel.to_owned()))),
                "-f" | "--find-links" => s.find_links.extend(take().map(|v| (v, rel.to_owned()))),
                "--default-index" => uv_default = take(),
                "--index" => uv_index.extend(take()),
                "--index-strategy" => strategy = take(),
                "--no-index" => s.no_index = true,
                "--require-hashes" => hashes = true,
                f if VALUE_FLAGS.contains(&f) => {
                    let _ = take();
                }
                // Combined short flags whose last letter takes a value (`-Ur requirements.txt`).
                f if f.len() > 2
                    && !f.starts_with("--")
                    && f.starts_with('-')
                    && f.ends_with(['r', 'c', 'e', 't', 'p', 'C']) =>
                {
                    let _ = take();
                }
                f if f.starts_with('-') => {}
                _ => {
                    if !t.contains('/') && !t.starts_with('.') && !t.contains('$') {
                        pkgs.extend(req_name(t));
                    }
                }
            }
            i += 1;
        }
        let has_index_opts = s.index_url.is_some()
            || !s.extra.is_empty()
            || !s.find_links.is_empty()
            || uv_default.is_some()
            || !uv_index.is_empty();
        // A plain `pip install NAME` is a context too: it installs from the
        // default index (PyPI, unless configuration says otherwise).
        if !has_index_opts && pkgs.is_empty() {
            continue;
        }
        any = true;
        let origin = format!("{rel}:{ln} (command)");
        let mut c = pip_context(
            if uv { Client::UvPip } else { Client::Pip },
            origin,
            &s,
            opts,
        );
        c.file = rel.to_owned();
        c.line = Some(ln);
        if uv && (uv_default.is_some() || !uv_index.is_empty()) {
            c.indexes.retain(|x| x.role != Role::Primary);
            for u in &uv_index {
                c.indexes.push(index(None, u, Role::Ordered, opts));
            }
            c.indexes.push(index(
                None,
                uv_default.as_deref().unwrap_or(PYPI),
                Role::Primary,
                opts,
            ));
        }
        c.strategy = strategy;
        c.hashes_required = hashes;
        c.packages = pkgs;
        out.push(c);
    }
    any
}

pub(crate) fn is_command_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let lower = name.to_lowercase();
    lower.starts_with("dockerfile")
        || lower.ends_with(".dockerfile")
        || lower.ends_with(".sh")
        || lower == "makefile"
        || lower.ends_with(".mk")
        || lower == "jenkinsfile"
        || lower == ".gitlab-ci.yml"
        || lower == "tox.ini"
        || (rel.contains(".github/workflows/")
            && (lower.ends_with(".yml") || lower.ends_with(".yaml")))
        || (rel.contains(".circleci/") && lower.ends_with(".yml"))
}

fn locked_from_uv(v: &Value, file: &str, out: &mut Vec<Locked>) {
    for p in v
        .get("package")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let registry = p
            .get("source")
            .and_then(|s| s.get("registry"))
            .and_then(Value::as_str);
        if let Some(r) = registry {
            out.push(Locked {
                line: None,
                file: file.to_owned(),
                package: normalize(name),
                version: p.get("version").and_then(Value::as_str).map(str::to_owned),
                source: Some(r.to_owned()),
            });
        }
    }
}

fn locked_from_poetry(v: &Value, file: &str, out: &mut Vec<Locked>) {
    for p in v
        .get("package")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let src = p.get("source");
        let kind = src.and_then(|s| s.get("type")).and_then(Value::as_str);
        if matches!(kind, Some("git" | "directory" | "file" | "url")) {
            continue;
        }
        let url = src
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        out.push(Locked {
            line: None,
            file: file.to_owned(),
            package: normalize(name),
            version: p.get("version").and_then(Value::as_str).map(str::to_owned),
            source: url,
        });
    }
}

fn locked_from_pylock(v: &Value, file: &str, out: &mut Vec<Locked>) {
    for p in v
        .get("packages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        if let Some(ix) = p.get("index").and_then(Value::as_str) {
            out.push(Locked {
                line: None,
                file: file.to_owned(),
                package: normalize(name),
                version: p.get("version").and_then(Value::as_str).map(str::to_owned),
                source: Some(ix.to_owned()),
            });
        }
    }
}

fn locked_from_pipfile_lock(text: &str, file: &str, out: &mut Vec<Locked>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let sources: BTreeMap<String, String> = v["_meta"]["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some((
                        s["name"].as_str()?.to_owned(),
                        s["url"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let default_src = v["_meta"]["sources"][0]["url"].as_str().map(str::to_owned);
    for section in ["default", "develop"] {
        if let Some(pkgs) = v[section].as_object() {
            for (name, p) in pkgs {
                let src = p["index"]
                    .as_str()
                    .and_then(|n| sources.get(n).cloned())
                    .or_else(|| default_src.clone());
                out.push(Locked {
                    line: None,
                    file: file.to_owned(),
                    package: normalize(name),
                    version: p["version"]
                        .as_str()
                        .map(|s| s.trim_start_matches('=').to_owned()),
                    source: src,
                });
            }
        }
    }
}

/// Read everything under `dir` (and, with `host_config`, pip's host configuration).
/// `[tool.pickguard]` of the project's pyproject.toml: `private` (names and
/// globs), `private-indexes`, `public-indexes`.
pub(crate) fn project_settings(
    dir: &Path,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> (Options, Vec<String>) {
    let mut o = opts.clone();
    let mut names = Vec::new();
    let path = dir.join("pyproject.toml");
    if let Some(pg) = toml_file(&path, &mut Vec::new(), warnings)
        .and_then(|d| d.get("tool").and_then(|t| t.get("pickguard")).cloned())
    {
        names = strs(pg.get("private"));
        o.private_indexes.extend(strs(pg.get("private-indexes")));
        o.public_indexes.extend(strs(pg.get("public-indexes")));
    }
    (o, names)
}

/// Directories that hold tools' state, not the project's configuration.
/// Other hidden directories (`.github`, `.gitlab`, `.ci`, `.buildkite`,
/// `.devcontainer`...) are read: a launch script or pipeline there counts.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".cache",
    ".eggs",
    ".idea",
    ".vscode",
    ".ipynb_checkpoints",
    "node_modules",
    "target",
    "__pycache__",
    ".pixi",
    ".conda",
];

/// The project's files every audit reads, in a stable order: six levels deep,
/// without the directories of `SKIP_DIRS`. Symbolic links to files count (a
/// workflow linked from elsewhere); links to directories are not followed.
pub(crate) fn project_files(dir: &Path) -> Vec<(PathBuf, String)> {
    walkdir::WalkDir::new(dir)
        .max_depth(6)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let n = e.file_name().to_string_lossy();
            !(e.depth() > 0 && e.file_type().is_dir() && SKIP_DIRS.contains(&n.as_ref()))
        })
        .flatten()
        .filter(|e| e.file_type().is_file() || (e.path_is_symlink() && e.path().is_file()))
        .map(|e| {
            let rel = relative(dir, e.path());
            (e.into_path(), rel)
        })
        .collect()
}

/// Read a project; `opts` already holds its `[tool.pickguard]` settings.
pub fn discover(dir: &Path, opts: &Options) -> Inputs {
    let mut inputs = Inputs::default();
    let mut files = Vec::new();
    let pip = host_pip_settings(dir, opts, &mut files);
    let mut req_files = Vec::new();
    for (path, rel) in project_files(dir) {
        let path = path.as_path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match name.as_str() {
            "pyproject.toml" => {
                if let Some(doc) = toml_file(path, &mut files, &mut inputs.warnings) {
                    if let Some(uv) = doc.get("tool").and_then(|t| t.get("uv")) {
                        inputs
                            .contexts
                            .push(uv_context(uv, rel.clone(), project_deps(&doc), opts));
                    } else if path.with_file_name("uv.lock").exists()
                        && !path.with_file_name("uv.toml").exists()
                    {
                        // A uv project with no index settings: PyPI only.
                        inputs.contexts.push(uv_context(
                            &Value::Table(Default::default()),
                            rel.clone(),
                            project_deps(&doc),
                            opts,
                        ));
                    }
                    inputs
                        .contexts
                        .extend(poetry_context(&doc, rel.clone(), opts));
                    inputs.contexts.extend(pdm_context(&doc, rel.clone(), opts));
                }
            }
            "uv.toml" => {
                if let Some(doc) = toml_file(path, &mut files, &mut inputs.warnings) {
                    let deps = toml_file(
                        &path.with_file_name("pyproject.toml"),
                        &mut Vec::new(),
                        &mut Vec::new(),
                    )
                    .map(|d| project_deps(&d))
                    .unwrap_or_default();
                    inputs
                        .contexts
                        .push(uv_context(&doc, rel.clone(), deps, opts));
                }
            }
            "Pipfile" => {
                if let Some(doc) = toml_file(path, &mut files, &mut inputs.warnings) {
                    inputs
                        .contexts
                        .push(pipenv_context(&doc, rel.clone(), opts));
                }
            }
            "uv.lock" => {
                if let Some(doc) = toml_file(path, &mut files, &mut inputs.warnings) {
                    locked_from_uv(&doc, &rel, &mut inputs.locked);
                }
            }
            "poetry.lock" => {
                if let Some(doc) = toml_file(path, &mut files, &mut inputs.warnings) {
                    locked_from_poetry(&doc, &rel, &mut inputs.locked);
                }
            }
            "Pipfile.lock" => {
                if let Ok(t) = std::fs::read_to_string(path) {
                    files.push(path.display().to_string());
                    locked_from_pipfile_lock(&t, &rel, &mut inputs.locked);
                }
            }
            n if n == "pylock.toml" || (n.starts_with("pylock.") && n.ends_with(".toml")) => {
                if let Some(doc) = toml_file(path, &mut files, &mut inputs.warnings) {
                    locked_from_pylock(&doc, &rel, &mut inputs.locked);
                }
            }
            n if is_requirements_file(n) => req_files.push((path.to_path_buf(), rel.clone())),
            n if n.ends_with(".ipynb") => notebook_commands(
                path,
                &rel,
                &pip,
                opts,
                &mut inputs.contexts,
                &mut files,
                &mut inputs.warnings,
            ),
            _ if is_command_file(&rel) => {
                install_commands(path, &rel, &pip, opts, &mut inputs.contexts, &mut files)
            }
            _ => {}
        }
    }
    // Requirements: each file is one pip context (with the files it includes folded in).
    for (path, rel) in &req_files {
        let mut s = pip.clone();
        let mut pkgs = BTreeSet::new();
        let mut hashed = (0, 0, false);
        read_requirements(path, &mut s, &mut pkgs, &mut hashed, &mut files, 0);
        let mut c = pip_context(Client::Pip, rel.clone(), &s, opts);
        c.packages = pkgs;
        c.hashes_required = hashed.2 || (hashed.0 > 0 && hashed.0 == hashed.1);
        inputs.contexts.push(c);
    }
    // pip configuration alone (no requirements file): still a context.
    if req_files.is_empty()
        && (pip.index_url.is_some() || !pip.extra.is_empty() || !pip.find_links.is_empty())
    {
        let origin = pip
            .index_url
            .as_ref()
            .map(|(_, o)| o.clone())
            .or_else(|| pip.extra.first().map(|(_, o)| o.clone()))
            .unwrap_or_else(|| "pip configuration".into());
        inputs
            .contexts
            .push(pip_context(Client::Pip, origin, &pip, opts));
    }
    // Where each locked package's entry starts, for reports.
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for l in &mut inputs.locked {
        let text = texts
            .entry(l.file.clone())
            .or_insert_with(|| std::fs::read_to_string(dir.join(&l.file)).unwrap_or_default());
        let needles = [
            format!("name = \"{}\"", l.package),
            format!("\"{}\": {{", l.package),
        ];
        l.line = text
            .lines()
            .position(|t| {
                needles
                    .iter()
                    .any(|n| t.trim_start().starts_with(n.as_str()))
            })
            .map(|i| i + 1);
    }
    files.sort();
    files.dedup();
    inputs.files = files;
    inputs
}
