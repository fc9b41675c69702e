/*!
Distributed exposure: where a project starts torch.distributed (torchrun,
`python -m torch.distributed.run|launch`, `init_process_group`, `TCPStore`,
`rpc.init_rpc`) and whether its rendezvous or store is reachable by anyone.

PyTorch's security policy: c10d, RPC and TCPStore accept connections from
anywhere and execute what they are sent. What the checks rest on, measured
with torch 2.15 (the live tests' venv): a `TCPStore` master listens on every
interface (`[::]`, dual stack) whatever host it is given, with both the libuv
and the legacy backend; only `master_listen_fd` (a socket the caller bound)
narrows it. So `MASTER_ADDR=127.0.0.1` does not make a store private: what
keeps it private is the network around it. The findings are therefore the
signals that the network lets others in: an endpoint of `0.0.0.0`/`::` or a
public address, the rendezvous port published by a Kubernetes Service of type
LoadBalancer/NodePort, a `hostPort`, `docker run -p` or a compose `ports:`
entry without a loopback address, pods on the host network, and TCPStore
masters created in code without `master_listen_fd`. Every launch site found is
listed in the report (`distributed.sites`), exposed or not.
*/

use crate::Rule;
use crate::parse::{is_command_file, logical_lines};
use crate::yaml::{self, Y};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

/// torchrun's default master port and c10d rendezvous port.
const DEFAULT_PORTS: &[u16] = &[29500, 29400];
const MAX_FILE: u64 = 4 << 20;

/// What an address lets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// `0.0.0.0`, `::`: every interface.
    Any,
    Loopback,
    /// RFC 1918, CGNAT, link-local, unique-local.
    Private,
    Public,
    /// A host name or a variable: not known from the file.
    Unknown,
}

pub fn reach(host: &str) -> Reach {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() || h.contains('$') || h.contains("{{") {
        return Reach::Unknown;
    }
    if h == "*" {
        return Reach::Any;
    }
    if h.eq_ignore_ascii_case("localhost") {
        return Reach::Loopback;
    }
    let Ok(ip) = h.parse::<IpAddr>() else {
        return Reach::Unknown;
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip.is_unspecified() {
        return Reach::Any;
    }
    if ip.is_loopback() {
        return Reach::Loopback;
    }
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_private() || a.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                Reach::Private
            } else {
                Reach::Public
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments()[0];
            if (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80 {
                Reach::Private
            } else {
                Reach::Public
            }
        }
    }
}

/// One place torch.distributed is started or configured.
#[derive(Clone, Debug, Serialize)]
pub struct Site {
    pub file: String,
    pub line: usize,
    /// `torchrun`, `init_process_group`, `TCPStore`, `init_rpc`, `MASTER_ADDR`...
    pub what: String,
    /// The endpoint host as written, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub reach: Reach,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Distributed {
    pub files_read: usize,
    pub sites: Vec<Site>,
    /// Files that may configure distributed jobs but could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

/// A finding before the context fields are filled in.
pub(crate) struct Hit {
    pub rule: Rule,
    pub file: String,
    pub line: usize,
    pub message: String,
}

fn split_host_port(ep: &str) -> (String, Option<u16>) {
    let ep = ep.trim_matches(['"', '\'']);
    let ep = ep.split("://").nth(1).unwrap_or(ep);
    let ep = ep.split('/').next().unwrap_or(ep);
    if let Some(rest) = ep.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').unwrap_or((rest, ""));
        return (
            h.to_owned(),
            tail.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    // A bare IPv6 address has several colons and no port.
    if ep.matches(':').count() > 1 {
        return (ep.to_owned(), None);
    }
    match ep.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().ok()),
        None => (ep.to_owned(), None),
    }
}

fn tokens(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|t| t.trim_matches(['"', '\'', ',', '[', ']']).to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn flag_value(toks: &[String], i: usize, names: &[&str]) -> Option<(String, usize)> {
    let t = &toks[i];
    for n in names {
        if t == n {
            return toks.get(i + 1).map(|v| (v.clone(), 2));
        }
        if let Some(v) = t.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
            return Some((v.to_owned(), 1));
        }
    }
    None
}

/// A command line that launches torch.distributed, as (launcher, endpoint host, port).
fn launch(line: &str) -> Option<(String, Option<String>, Option<u16>)> {
    let toks = tokens(line);
    let start = toks.iter().enumerate().find_map(|(i, t)| {
        let base = t.rsplit('/').next().unwrap_or(t);
        if base == "torchrun" {
            return Some((i + 1, "torchrun".to_owned()));
        }
        if base.starts_with("python") && toks.get(i + 1).map(String::as_str) == Some("-m") {
            let m = toks.get(i + 2)?;
            if m == "torch.distributed.run" || m == "torch.distributed.launch" {
                return Some((i + 3, format!("python -m {m}")));
            }
        }
        None
    })?;
    let (mut i, what) = start;
    let (mut host, mut port) = (None, None);
    // Environment assignments before the launcher (`MASTER_ADDR=… torchrun`).
    for t in &toks[..i] {
        if let Some(v) = t.strip_prefix("MASTER_ADDR=") {
            host = Some(v.to_owned());
        }
        if let Some(v) = t.strip_prefix("MASTER_PORT=") {
            port = v.parse().ok();
        }
    }
    while i < toks.len() {
        if matches!(toks[i].as_str(), "&&" | ";" | "||" | "|") {
            break;
        }
        if let Some((v, n)) = flag_value(&toks, i, &["--master_addr", "--master-addr"]) {
            host = Some(v);
            i += n;
        } else if let Some((v, n)) = flag_value(&toks, i, &["--master_port", "--master-port"]) {
            port = v.parse().ok().or(port);
            i += n;
        } else if let Some((v, n)) = flag_value(&toks, i, &["--rdzv_endpoint", "--rdzv-endpoint"]) {
            let (h, p) = split_host_port(&v);
            host = Some(h);
            port = p.or(port);
            i += n;
        } else {
            i += 1;
        }
    }
    Some((what, host, port))
}

/// `MASTER_ADDR` set in a shell, Dockerfile, Makefile or YAML line.
fn master_addr(line: &str) -> Option<String> {
    let p = line.find("MASTER_ADDR")?;
    if p > 0 {
        let b = line.as_bytes()[p - 1];
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'{' {
            return None;
        }
    }
    let rest = line[p + "MASTER_ADDR".len()..].trim_start_matches(['"', '\'', ']']);
    let rest = rest
        .strip_prefix('=')
        .or_else(|| rest.strip_prefix(':'))
        .or_else(|| rest.strip_prefix(' '))?;
    let v = rest
        .trim_start_matches([' ', '='])
        .split([' ', ';', ',', ')', '\t'])
        .next()?
        .trim_matches(['"', '\'']);
    (!v.is_empty()).then(|| v.to_owned())
}

/// String literals of a Python call's argument text.
fn literals(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = args.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            let s = i + 1;
            let mut j = s;
            while j < b.len() && b[j] != q {
                j += 1;
            }
            out.push(args[s..j.min(b.len())].to_owned());
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The text of the call's arguments, from the `(` after `pos`, bounded.
fn call_args(text: &str, pos: usize) -> &str {
    let Some(open) = text[pos..].find('(').map(|o| pos + o) else {
        return "";
    };
    let mut depth = 0usize;
    let mut last = open + 1;
    for (k, c) in text[open..].char_indices().take(4096) {
        last = open + k + c.len_utf8();
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + k];
                }
            }
            _ => {}
        }
    }
    // Unclosed within the bound: up to the last character read (a char
    // boundary, whatever the text holds).
    &text[open + 1..last.max(open + 1)]
}

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Module-level `NAME = "literal"` assignments, for f-strings that use them.
fn constants(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            if v.starts_with('=') || l.trim_start() != l {
                return None;
            }
            // `a = "x"` and `a, b = "x", 1`.
            let ks: Vec<&str> = k.split(',').map(str::trim).collect();
            let vs: Vec<&str> = v.split(',').map(str::trim).collect();
            if ks.len() != vs.len() {
                return None;
            }
            let pairs: Vec<(String, String)> = ks
                .iter()
                .zip(&vs)
                .filter_map(|(k, v)| {
                    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return None;
                    }
                    let q = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
                    let inner = v[1..].split(q).next()?;
                    Some((k.to_string(), inner.to_owned()))
                })
                .collect();
            Some(pairs)
        })
        .flatten()
        .collect()
}

fn python_sites(text: &str, rel: &str, sites: &mut Vec<Site>, hits: &mut Vec<Hit>) {
    let consts = constants(text);
    // `from torch.distributed import TCPStore as S`: S is a TCPStore too.
    let mut names: Vec<(String, &str)> = [
        "init_process_group",
        "TCPStore",
        "init_rpc",
        "TensorPipeRpcBackendOptions",
    ]
    .iter()
    .map(|n| (n.to_string(), *n))
    .collect();
    for l in text.lines().filter(|l| l.contains("import")) {
        for (orig, _) in names.clone() {
            if let Some(p) = l.find(&format!("{orig} as ")) {
                let alias: String = l[p + orig.len() + 4..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !alias.is_empty() {
                    let canon = names
                        .iter()
                        .find(|(n, _)| *n == orig)
                        .map(|(_, c)| *c)
                        .unwrap_or("TCPStore");
                    names.push((alias, canon));
                }
            }
        }
    }
    for (name, call) in &names {
        let (name, call) = (name.as_str(), *call);
        let mut from = 0;
        while let Some(off) = text[from..].find(name) {
            let pos = from + off;
            from = pos + name.len();
            let after = &text[from..];
            let word_start = pos == 0 || {
                let b = text.as_bytes()[pos - 1];
                !(b.is_ascii_alphanumeric() || b == b'_')
            };
            if !word_start || !after.trim_start().starts_with('(') {
                continue;
            }
            // Skip definitions and comments.
            let line_start = text[..pos].rfind('\n').map(|p| p + 1).unwrap_or(0);
            let prefix = text[line_start..pos].trim_start();
            if prefix.starts_with('#') || prefix.starts_with("def ") || prefix.starts_with("class ")
            {
                continue;
            }
            let args = call_args(text, pos);
            let line = line_of(text, pos);
            let lits: Vec<String> = literals(args)
                .into_iter()
                .map(|l| {
                    let mut l = l;
                    for (k, v) in &consts {
                        l = l.replace(&format!("{{{k}}}"), v);
                    }
                    l
                })
                .collect();
            let endpoint = lits.iter().find(|l| l.starts_with("tcp://")).cloned();
            let (host, port) = match (&endpoint, call) {
                (Some(ep), _) => {
                    let (h, p) = split_host_port(ep);
                    (Some(h), p)
                }
                (None, "TCPStore") => {
                    // TCPStore(host_name, port, world_size, is_master, ...): the
                    // first argument when it is a literal.
                    let first = args.trim_start();
                    let host = if first.starts_with('"') || first.starts_with('\'') {
                        lits.first().cloned()
                    } else {
                        keyword_literal(args, "host_name")
                    };
                    let port = args
                        .split(',')
                        .nth(1)
                        .and_then(|p| p.trim().parse().ok())
                        .or_else(|| keyword_int(args, "port"));
                    (host, port)
                }
                _ => (None, None),
            };
            record(rel, line, call, host.as_deref(), port, sites, hits);
            if call == "TCPStore" && is_master(args) && !listen_fd_given(args) {
                hits.push(Hit {
                    rule: Rule::StoreListensEverywhere,
                    file: rel.to_owned(),
                    line,
                    message: format!(
                        "TCPStore master{} listens on every interface of this host ([::]:{}), whatever host it is given: anyone who can reach the port can read and write the store",
                        host.as_deref().map(|h| format!(" for {h}")).unwrap_or_default(),
                        port.map(|p| p.to_string()).unwrap_or_else(|| "PORT".into())
                    ),
                });
            }
        }
    }
    for (ln, line) in text.lines().enumerate() {
        if line.contains("MASTER_ADDR")
            && (line.contains("environ") || line.contains("putenv"))
            && let Some(v) = literals(
                line.split("MASTER_ADDR")
                    .nth(1)
                    .unwrap_or("")
                    .trim_start_matches(['\'', '"'])
                    .trim_start_matches([']', ')', ',', '=', ' ', '\t']),
            )
            .first()
        {
            record(rel, ln + 1, "MASTER_ADDR", Some(v), None, sites, hits);
        }
    }
}

/// `name="value"` in a call's arguments.
fn keyword_literal(args: &str, name: &str) -> Option<String> {
    let compact: String = args.chars().filter(|c| !c.is_whitespace()).collect();
    let p = compact.find(&format!("{name}="))?;
    literals(&compact[p + name.len() + 1..])
        .into_iter()
        .next()
        .filter(|_| compact[p + name.len() + 1..].starts_with(['"', '\'']))
}

/// `name=123` in a call's arguments.
fn keyword_int(args: &str, name: &str) -> Option<u16> {
    let compact: String = args.chars().filter(|c| !c.is_whitespace()).collect();
    let p = compact.find(&format!("{name}="))?;
    let digits: String = compact[p + name.len() + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether a TCPStore call may create the master: any `is_master` that is
/// not literally False (`rank == 0` is the master on one rank).
fn is_master(args: &str) -> bool {
    let compact: String = args.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some(p) = compact.find("is_master=") {
        let v = compact[p + "is_master=".len()..]
            .split([',', ')'])
            .next()
            .unwrap_or("");
        return v != "False" && v != "0";
    }
    if compact.contains("**") {
        return true;
    }
    // Positional: host, port, world_size, is_master.
    compact.split(',').nth(3).is_some_and(|a| {
        let keyword = a.split_once('=').is_some_and(|(_, v)| !v.starts_with('='))
            && !a.contains("==")
            && !a.contains("!=")
            && !a.contains("<=")
            && !a.contains(">=");
        !a.is_empty() && a != "False" && a != "0" && !keyword
    })
}

fn listen_fd_given(args: &str) -> bool {
    let compact: String = args.chars().filter(|c| !c.is_whitespace()).collect();
    compact
        .find("master_listen_fd=")
        .is_some_and(|p| !compact[p + "master_listen_fd=".len()..].starts_with("None"))
}

/// Record a launch site, and its finding when its endpoint lets others in.
fn record(
    rel: &str,
    line: usize,
    what: &str,
    host: Option<&str>,
    port: Option<u16>,
    sites: &mut Vec<Site>,
    hits: &mut Vec<Hit>,
) {
    let reach = host.map(self::reach).unwrap_or(Reach::Unknown);
    sites.push(Site {
        file: rel.to_owned(),
        line,
        what: what.to_owned(),
        host: host.map(str::to_owned),
        port,
        reach,
    });
    let Some(h) = host else { return };
    let ep = match port {
        Some(p) => format!("{h}:{p}"),
        None => h.to_owned(),
    };
    match reach {
        Reach::Any => hits.push(Hit {
            rule: Rule::DistributedAnyAddress,
            file: rel.to_owned(),
            line,
            message: format!(
                "{what} uses the rendezvous/store endpoint {ep}: every interface, so any host that can route to this one can join the job and run code in it"
            ),
        }),
        Reach::Public => hits.push(Hit {
            rule: Rule::DistributedPublicAddress,
            file: rel.to_owned(),
            line,
            message: format!(
                "{what} uses the rendezvous/store endpoint {ep}, a public address: the unauthenticated store is reachable from the internet unless a firewall stops it"
            ),
        }),
        _ => {}
    }
}

/// `$VAR` and `${VAR}` replaced by the file's plain assignments (`VAR=value`,
/// `export VAR=value`, Dockerfile `ENV VAR value`/`ARG VAR=value`).
fn expand(line: &str, vars: &[(String, String)]) -> String {
    let mut out = line.to_owned();
    for (k, v) in vars.iter().rev() {
        out = out.replace(&format!("${{{k}}}"), v);
        let mut from = 0;
        while let Some(p) = out[from..].find(&format!("${k}")).map(|p| p + from) {
            let end = p + 1 + k.len();
            if out[end..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                from = end;
                continue;
            }
            out.replace_range(p..end, v);
            from = p + v.len();
        }
    }
    out
}

fn assignment(line: &str) -> Option<(String, String)> {
    let t = line.trim();
    let t = t
        .strip_prefix("export ")
        .or_else(|| t.strip_prefix("ENV "))
        .or_else(|| t.strip_prefix("ARG "))
        .unwrap_or(t)
        .trim();
    let (k, v) = t.split_once('=').or_else(|| t.split_once(' '))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let v = v.split([';', ' ', '\t']).next()?.trim_matches(['"', '\'']);
    (!v.is_empty() && !v.contains('$') && !v.contains('`')).then(|| (k.to_owned(), v.to_owned()))
}

fn text_sites(text: &str, rel: &str, sites: &mut Vec<Site>, hits: &mut Vec<Hit>) {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (ln, line) in logical_lines(text) {
        let t = line.trim_start();
        if t.starts_with('#') && !t.starts_with("#SBATCH") {
            continue;
        }
        for seg in line.split([';', '&']) {
            if let Some(kv) = assignment(seg) {
                vars.push(kv);
            }
        }
        let line = expand(&line, &vars);
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "echo" | "printf" | "cat" | "print" | "@echo") {
            continue;
        }
        docker_host_network(&line, rel, ln, hits);
        if let Some((what, host, port)) = launch(&line) {
            record(rel, ln, &what, host.as_deref(), port, sites, hits);
        } else if let Some(v) = master_addr(&line) {
            record(rel, ln, "MASTER_ADDR", Some(&v), None, sites, hits);
        }
        docker_publish(&line, rel, ln, hits);
    }
}

/// `docker run --network host … torchrun`: the store on the host's interfaces.
fn docker_host_network(line: &str, rel: &str, ln: usize, hits: &mut Vec<Hit>) {
    let toks = tokens(line);
    let Some(run) = toks.windows(2).position(|w| {
        (w[0] == "docker" || w[0] == "podman") && (w[1] == "run" || w[1] == "create")
    }) else {
        return;
    };
    let host = toks[run..].windows(2).any(|w| {
        matches!(w[0].as_str(), "--network=host" | "--net=host")
            || (matches!(w[0].as_str(), "--network" | "--net") && w[1] == "host")
    });
    if host && launch(line).is_some() {
        hits.push(Hit {
            rule: Rule::DistributedHostNetwork,
            file: rel.to_owned(),
            line: ln,
            message: "a container running torch.distributed uses the host network (--network host): its store listens on every interface of the host".into(),
        });
    }
}

/// `docker run -p 29500:29500` (and `--publish`), on any interface.
fn docker_publish(line: &str, rel: &str, ln: usize, hits: &mut Vec<Hit>) {
    let toks = tokens(line);
    let Some(run) = toks.windows(2).position(|w| {
        (w[0] == "docker" || w[0] == "podman") && (w[1] == "run" || w[1] == "create")
    }) else {
        return;
    };
    let mut i = run + 2;
    while i < toks.len() {
        let spec = if let Some((v, n)) = flag_value(&toks, i, &["-p", "--publish"]) {
            i += n;
            v
        } else if let Some(v) = toks[i].strip_prefix("-p").filter(|v| !v.is_empty()) {
            i += 1;
            v.to_owned()
        } else {
            i += 1;
            continue;
        };
        if let Some((bind, container)) = publish_spec(&spec)
            && DEFAULT_PORTS.contains(&container)
            && !matches!(reach(&bind), Reach::Loopback | Reach::Private)
        {
            hits.push(Hit {
                rule: Rule::DistributedPortPublished,
                file: rel.to_owned(),
                line: ln,
                message: format!(
                    "`-p {spec}` publishes the distributed port {container} on {} of the host",
                    if bind.is_empty() {
                        "every interface".to_owned()
                    } else {
                        bind.clone()
                    }
                ),
            });
        }
    }
}

/// `[ip:]hostport:containerport[/proto]` → (ip, container port).
fn publish_spec(spec: &str) -> Option<(String, u16)> {
    let spec = spec.split('/').next().unwrap_or(spec);
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let container = parts.first()?.split('-').next()?.parse().ok()?;
    let bind = if parts.len() == 3 {
        parts[2].trim_matches(['[', ']']).to_owned()
    } else {
        String::new()
    };
    Some((bind, container))
}

fn port_of(y: &Y) -> Option<u16> {
    y.s().parse().ok()
}

/// Kubernetes manifests (Services, pods and workloads, Kubeflow PyTorchJobs)
/// and compose files.
fn manifest_sites(
    docs: &[Y],
    rel: &str,
    ports: &BTreeSet<u16>,
    sites: &mut Vec<Site>,
    hits: &mut Vec<Hit>,
) {
    // `kind: List` (kubectl get -o yaml) holds the objects in `items`.
    let mut all: Vec<&Y> = Vec::new();
    for d in docs {
        if d.at("kind").s() == "List" || d.at("kind").s().ends_with("List") {
            all.extend(d.at("items").seq());
        } else {
            all.push(d);
        }
    }
    for d in all {
        let kind = d.at("kind").s();
        if kind == "Service" {
            let ty = d.at("spec").at("type").s();
            let external = !d.at("spec").at("externalIPs").seq().is_empty();
            let ty = if external && ty != "LoadBalancer" && ty != "NodePort" {
                "ClusterIP with externalIPs"
            } else {
                ty
            };
            if ty == "LoadBalancer" || ty == "NodePort" || external {
                for p in d.at("spec").at("ports").seq() {
                    let nums = [p.at("port"), p.at("targetPort")];
                    if let Some(n) = nums
                        .iter()
                        .filter_map(|y| port_of(y))
                        .find(|n| ports.contains(n))
                    {
                        hits.push(Hit {
                            rule: Rule::DistributedPortPublished,
                            file: rel.to_owned(),
                            line: p.line,
                            message: format!(
                                "Service {} of type {ty} publishes the distributed port {n} outside the cluster",
                                d.at("metadata").at("name").s()
                            ),
                        });
                    }
                }
            }
        }
        // Pod specs anywhere in the document (Pod, Deployment, Job, PyTorchJob replicas...).
        let mut stack = vec![d];
        while let Some(n) = stack.pop() {
            for (k, v) in n.entries() {
                if k == "containers" || k == "initContainers" {
                    pod_containers(n, v, kind, rel, ports, sites, hits);
                }
                if v.is_map() || !v.seq().is_empty() {
                    stack.push(v);
                    stack.extend(v.seq().iter());
                }
            }
        }
        // compose: services.<name>.ports / network_mode
        if let Some(services) = d.get("services").filter(|s| s.is_map()) {
            for (name, svc) in services.entries() {
                let cmd = svc
                    .at("command")
                    .scalars()
                    .iter()
                    .map(|(_, s)| *s)
                    .collect::<Vec<_>>()
                    .join(" ");
                let launched = launch(&cmd);
                let runs_dist = launched.is_some();
                if let Some((what, host, port)) = launched {
                    let line = svc.at("command").line;
                    record(rel, line, &what, host.as_deref(), port, sites, hits);
                }
                for p in svc.at("ports").seq() {
                    let spec = if p.is_map() {
                        format!(
                            "{}:{}:{}",
                            p.at("host_ip").s(),
                            p.at("published").s(),
                            p.at("target").s()
                        )
                    } else {
                        p.s().to_owned()
                    };
                    if let Some((bind, container)) = publish_spec(&spec)
                        && ports.contains(&container)
                        && !matches!(reach(&bind), Reach::Loopback | Reach::Private)
                    {
                        hits.push(Hit {
                            rule: Rule::DistributedPortPublished,
                            file: rel.to_owned(),
                            line: p.line,
                            message: format!(
                                "compose service {name} publishes the distributed port {container} on {}",
                                if bind.is_empty() { "every interface of the host" } else { &bind }
                            ),
                        });
                    }
                }
                let env = svc.at("environment");
                let mut addr: Option<(usize, String)> =
                    env.get("MASTER_ADDR").map(|v| (v.line, v.s().to_owned()));
                for e in env.seq() {
                    if let Some(v) = e.s().strip_prefix("MASTER_ADDR=") {
                        addr = Some((e.line, v.to_owned()));
                    }
                }
                if let Some((line, v)) = addr.filter(|(_, v)| !v.is_empty()) {
                    record(rel, line, "MASTER_ADDR", Some(&v), None, sites, hits);
                }
                if runs_dist && svc.at("network_mode").s() == "host" {
                    hits.push(Hit {
                        rule: Rule::DistributedHostNetwork,
                        file: rel.to_owned(),
                        line: svc.at("network_mode").line,
                        message: format!(
                            "compose service {name} runs torch.distributed on the host network: its store listens on every interface of the host"
                        ),
                    });
                }
            }
        }
    }
}

fn pod_containers(
    pod: &Y,
    containers: &Y,
    kind: &str,
    rel: &str,
    ports: &BTreeSet<u16>,
    sites: &mut Vec<Site>,
    hits: &mut Vec<Hit>,
) {
    let mut runs_dist = kind == "PyTorchJob";
    for c in containers.seq() {
        let argv: Vec<&str> = c
            .at("command")
            .scalars()
            .into_iter()
            .chain(c.at("args").scalars())
            .map(|(_, s)| s)
            .collect();
        let cmdline = argv.join(" ");
        for (ln, line) in c
            .at("command")
            .scalars()
            .into_iter()
            .chain(c.at("args").scalars())
        {
            // Scripts given to `sh -c`: each of their lines.
            for l in line.lines() {
                if let Some((what, host, port)) = launch(l) {
                    runs_dist = true;
                    record(rel, ln, &what, host.as_deref(), port, sites, hits);
                }
            }
        }
        if launch(&cmdline).is_some() {
            runs_dist = true;
        }
        for e in c.at("env").seq() {
            if e.at("name").s() == "MASTER_ADDR" {
                runs_dist = true;
                let v = e.at("value").s();
                if !v.is_empty() {
                    record(rel, e.line, "MASTER_ADDR", Some(v), None, sites, hits);
                }
            }
        }
        for p in c.at("ports").seq() {
            if let Some(hp) = port_of(p.at("hostPort"))
                && (ports.contains(&hp)
                    || port_of(p.at("containerPort")).is_some_and(|c| ports.contains(&c)))
            {
                hits.push(Hit {
                    rule: Rule::DistributedPortPublished,
                    file: rel.to_owned(),
                    line: p.line,
                    message: format!(
                        "container {} maps the distributed port to hostPort {hp} on every node it runs on",
                        c.at("name").s()
                    ),
                });
            }
        }
    }
    if runs_dist && pod.at("hostNetwork").is_true() {
        hits.push(Hit {
            rule: Rule::DistributedHostNetwork,
            file: rel.to_owned(),
            line: pod.at("hostNetwork").line,
            message: format!(
                "a {} pod that runs torch.distributed uses hostNetwork: true: its store listens on every interface of the node, outside the cluster's network policies",
                if kind.is_empty() { "Kubernetes" } else { kind }
            ),
        });
    }
}

/// Build and task files read as command lines besides `is_command_file`'s.
fn is_build_file(name: &str) -> bool {
    name.starts_with("containerfile")
        || name.starts_with("makefile")
        || name == "gnumakefile"
        || name == "justfile"
        || name.ends_with(".just")
        || name == "procfile"
}

/// The interpreter line of a small file that has one.
fn shebang_of(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 128];
    let n = f.read(&mut head).ok()?;
    let head = &head[..n];
    if !head.starts_with(b"#!") {
        return None;
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    Some(String::from_utf8_lossy(line).into_owned())
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn is_script(name: &str) -> bool {
    [".slurm", ".sbatch", ".bash", ".zsh", ".job", ".pbs"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Check a project for distributed exposure.
pub(crate) fn check(
    files: &[(PathBuf, String)],
    warnings: &mut Vec<String>,
) -> (Distributed, Vec<Hit>) {
    let mut out = Distributed::default();
    let mut hits = Vec::new();
    let mut manifests: Vec<(String, Vec<Y>)> = Vec::new();
    for (path, rel) in files {
        let name = rel.rsplit('/').next().unwrap_or(rel).to_lowercase();
        let mut py = name.ends_with(".py");
        let yml = is_yaml(&name);
        let nb = name.ends_with(".ipynb");
        let known =
            py || yml || nb || is_script(&name) || is_command_file(rel) || is_build_file(&name);
        // Scripts without an extension are recognised by their #! line.
        let shebang = if known { None } else { shebang_of(path) };
        if !known && shebang.is_none() {
            continue;
        }
        if shebang.as_deref().is_some_and(|s| s.contains("python")) {
            py = true;
        }
        let limit = if nb {
            crate::parse::MAX_NOTEBOOK
        } else {
            MAX_FILE
        };
        if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > limit {
            warnings.push(format!(
                "{rel}: larger than {} MiB, not read for distributed launches",
                limit >> 20
            ));
            out.unread.push(rel.clone());
            continue;
        }
        // Bytes that are not UTF-8 (a Latin-1 comment) must not hide a file:
        // it is read with replacement characters.
        let text = match std::fs::read(path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                warnings.push(format!("{rel}: {e}; not read for distributed launches"));
                out.unread.push(rel.clone());
                continue;
            }
        };
        if nb {
            // Python in the code cells, shell in `!`/`%` lines and %%bash cells.
            match crate::notebook::read(&text) {
                Ok(cells) => {
                    out.files_read += 1;
                    python_sites(&cells.code, rel, &mut out.sites, &mut hits);
                    text_sites(&cells.shell, rel, &mut out.sites, &mut hits);
                }
                Err(e) => {
                    if text.contains("torch") || text.contains("MASTER_ADDR") {
                        warnings.push(format!(
                            "{rel}: {e}; its distributed settings were not checked"
                        ));
                        out.unread.push(rel.clone());
                    }
                }
            }
            continue;
        }
        if py {
            if text.contains("torch") || text.contains("MASTER_ADDR") {
                out.files_read += 1;
                python_sites(&text, rel, &mut out.sites, &mut hits);
            }
            continue;
        }
        out.files_read += 1;
        if yml && !rel.contains(".github/workflows/") && name != ".gitlab-ci.yml" {
            match yaml::parse(&text) {
                Ok(docs) => manifests.push((rel.clone(), docs)),
                Err(e) => {
                    if text.contains("torch")
                        || text.contains("29500")
                        || text.contains("MASTER_ADDR")
                    {
                        warnings.push(format!(
                            "{rel}: not read as YAML ({e}); its distributed settings were not checked"
                        ));
                        out.unread.push(rel.clone());
                    }
                }
            }
            continue;
        }
        text_sites(&text, rel, &mut out.sites, &mut hits);
    }
    let mut ports: BTreeSet<u16> = DEFAULT_PORTS.iter().copied().collect();
    ports.extend(out.sites.iter().filter_map(|s| s.port));
    for (rel, docs) in &manifests {
        manifest_sites(docs, rel, &ports, &mut out.sites, &mut hits);
    }
    (out, hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        for (h, r) in [
            ("0.0.0.0", Reach::Any),
            ("::", Reach::Any),
            ("[::]", Reach::Any),
            ("127.0.0.1", Reach::Loopback),
            ("::1", Reach::Loopback),
            ("::ffff:127.0.0.1", Reach::Loopback),
            ("localhost", Reach::Loopback),
            ("10.1.2.3", Reach::Private),
            ("172.16.0.1", Reach::Private),
            ("172.32.0.1", Reach::Public),
            ("192.168.1.1", Reach::Private),
            ("100.64.0.1", Reach::Private),
            ("100.128.0.1", Reach::Public),
            ("169.254.1.1", Reach::Private),
            ("fd00::1", Reach::Private),
            ("fe80::1", Reach::Private),
            ("8.8.8.8", Reach::Public),
            ("2001:db8::1", Reach::Public),
            ("$MASTER_ADDR", Reach::Unknown),
            ("node-0", Reach::Unknown),
        ] {
            assert_eq!(reach(h), r, "{h}");
        }
    }

    #[test]
    fn launch_lines() {
        let (w, h, p) =
            launch("torchrun --nnodes=2 --rdzv-endpoint=0.0.0.0:29400 train.py").unwrap();
        assert_eq!(
            (w.as_str(), h.as_deref(), p),
            ("torchrun", Some("0.0.0.0"), Some(29400))
        );
        let (_, h, p) = launch(
            "python3 -m torch.distributed.launch --master_addr 34.1.2.3 --master_port 1234 x.py",
        )
        .unwrap();
        assert_eq!((h.as_deref(), p), (Some("34.1.2.3"), Some(1234)));
        let (_, h, _) = launch("MASTER_ADDR=0.0.0.0 srun torchrun train.py").unwrap();
        assert_eq!(h.as_deref(), Some("0.0.0.0"));
        assert!(launch("pip install torchrun-helper").is_none());
        assert_eq!(
            master_addr("export MASTER_ADDR=0.0.0.0").as_deref(),
            Some("0.0.0.0")
        );
        assert_eq!(
            master_addr("ENV MASTER_ADDR 0.0.0.0").as_deref(),
            Some("0.0.0.0")
        );
        assert_eq!(master_addr("echo $MASTER_ADDR"), None);
        assert_eq!(publish_spec("29500:29500"), Some((String::new(), 29500)));
        assert_eq!(
            publish_spec("127.0.0.1:29500:29500/tcp"),
            Some(("127.0.0.1".into(), 29500))
        );
    }

    #[test]
    fn unclosed_calls_in_any_text_never_panic() {
        let (mut sites, mut hits) = (vec![], vec![]);
        let text = format!("import torch\ns = TCPStore({}", "é".repeat(3000));
        python_sites(&text, "u.py", &mut sites, &mut hits);
        assert_eq!(sites.len(), 1);
        python_sites("TCPStore(", "v.py", &mut sites, &mut hits);
    }

    #[test]
    fn tcpstore_calls() {
        let mut sites = vec![];
        let mut hits = vec![];
        python_sites(
            "import torch.distributed as dist\nstore = dist.TCPStore(\"127.0.0.1\", 29500, 2, True)\nsafe = dist.TCPStore('127.0.0.1', 29501, 2, is_master=True, master_listen_fd=s.fileno())\nclient = dist.TCPStore('10.0.0.1', 29500, 2, False)\ndist.init_process_group('gloo', init_method='tcp://0.0.0.0:23456')\n",
            "t.py",
            &mut sites,
            &mut hits,
        );
        let mut got: Vec<(Rule, usize)> = hits.iter().map(|h| (h.rule, h.line)).collect();
        got.sort();
        let mut want = vec![
            (Rule::StoreListensEverywhere, 2),
            (Rule::DistributedAnyAddress, 5),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(sites.len(), 4);
        let (mut sites, mut hits) = (vec![], vec![]);
        python_sites(
            "store = TCPStore(host_name = \"0.0.0.0\", port=29511, world_size=2, is_master=True)\n",
            "k.py",
            &mut sites,
            &mut hits,
        );
        assert_eq!(sites[0].host.as_deref(), Some("0.0.0.0"));
        assert_eq!(sites[0].port, Some(29511));
        assert!(hits.iter().any(|h| h.rule == Rule::DistributedAnyAddress));
    }
}
