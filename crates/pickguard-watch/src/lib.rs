/*!
`pickguard watch`: an eBPF sensor for the sequence "a Python process loads the
pickle module, opens a model file, then it or anything below it executes
something suspicious" (a shell by name or identity, a network tool, an
interpreter given inline code, an anonymous or freshly written executable).

The BPF program (`src/bpf/watch.bpf.c`, compiled by clang at build time,
CO-RE against the kernel's BTF) keeps per-process state on the
`sys_enter_openat`, `sched_process_exec`, `sched_process_fork` and
`sched_process_exit` tracepoints and reports through a ring buffer. With
enforcement, the program is killed by the BPF program at exec, before its
first instruction, and the programs stay pinned (enforcing) if the user-space
sensor is killed.
*/

use serde::{Deserialize, Serialize};
use std::path::Path;

pub mod exposure;

/// The default rule file (documented in itself).
pub const DEFAULT_RULES: &str = include_str!("default-rules.toml");

/// One interpreter that can be given code on its command line.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Interpreter {
    /// Executable name; a trailing `*` matches as a prefix (`perl*` for perl5.36).
    pub name: String,
    /// Short options whose argument is code.
    #[serde(default)]
    pub inline: String,
    /// Short options that take some other value.
    #[serde(default)]
    pub value: String,
    /// Long options whose argument is code (at most two).
    #[serde(default)]
    pub long: Vec<String>,
}

/// What counts as suspicious (the rule file, TOML).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub window: u64,
    pub models: Vec<String>,
    pub shells: Vec<String>,
    pub network_tools: Vec<String>,
    pub launchers: Vec<String>,
    pub anonymous: bool,
    pub fresh: bool,
    pub interpreter_scripts: bool,
    /// Report torch.distributed listeners reachable beyond the host.
    pub distributed_exposure: bool,
    #[serde(rename = "interpreter")]
    pub interpreters: Vec<Interpreter>,
}

/// The same keys, all optional, for a user's file layered on the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    window: Option<u64>,
    models: Option<Vec<String>>,
    shells: Option<Vec<String>>,
    network_tools: Option<Vec<String>>,
    launchers: Option<Vec<String>>,
    anonymous: Option<bool>,
    fresh: Option<bool>,
    interpreter_scripts: Option<bool>,
    distributed_exposure: Option<bool>,
    #[serde(rename = "interpreter")]
    interpreters: Option<Vec<Interpreter>>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::parse(DEFAULT_RULES).expect("the default rule file parses")
    }
}

/// Limits of the kernel-side tables (watch.bpf.c).
pub const MAX_NAMES: usize = 64;
pub const MAX_MODELS: usize = 32;
pub const MAX_INTERPRETERS: usize = 16;

impl Rules {
    fn parse_layer(text: &str, base: Option<Rules>) -> Result<Rules, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let b = match base {
            Some(b) => b,
            None => Rules {
                window: f.window.ok_or("window is missing")?,
                models: Vec::new(),
                shells: Vec::new(),
                network_tools: Vec::new(),
                launchers: Vec::new(),
                anonymous: true,
                fresh: true,
                interpreter_scripts: true,
                distributed_exposure: true,
                interpreters: Vec::new(),
            },
        };
        let r = Rules {
            window: f.window.unwrap_or(b.window),
            models: f.models.unwrap_or(b.models),
            shells: f.shells.unwrap_or(b.shells),
            network_tools: f.network_tools.unwrap_or(b.network_tools),
            launchers: f.launchers.unwrap_or(b.launchers),
            anonymous: f.anonymous.unwrap_or(b.anonymous),
            fresh: f.fresh.unwrap_or(b.fresh),
            interpreter_scripts: f.interpreter_scripts.unwrap_or(b.interpreter_scripts),
            distributed_exposure: f.distributed_exposure.unwrap_or(b.distributed_exposure),
            interpreters: f.interpreters.unwrap_or(b.interpreters),
        };
        r.validate()?;
        Ok(r)
    }

    /// A complete rule file (the default).
    pub fn parse(text: &str) -> Result<Rules, String> {
        Rules::parse_layer(text, None)
    }

    /// A user's rule file: keys it sets replace the default's.
    pub fn load(path: &Path) -> Result<Rules, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Rules::parse_layer(&text, Some(Rules::default()))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 {
            return Err("window must be at least 1 second".into());
        }
        if self.shells.len() + self.network_tools.len() + self.launchers.len() > MAX_NAMES {
            return Err(format!(
                "at most {MAX_NAMES} shells, network tools and launchers together"
            ));
        }
        for n in self
            .shells
            .iter()
            .chain(&self.network_tools)
            .chain(&self.launchers)
        {
            let bare = n.strip_suffix('*').unwrap_or(n);
            if bare.is_empty() || bare.len() > 15 || bare.contains('/') {
                return Err(format!(
                    "program name {n:?}: 1 to 15 bytes, a name, not a path"
                ));
            }
        }
        if self.models.len() > MAX_MODELS {
            return Err(format!("at most {MAX_MODELS} model suffixes"));
        }
        for m in &self.models {
            if m.is_empty() || m.len() > 31 || m.contains('/') {
                return Err(format!("model suffix {m:?}: 1 to 31 bytes, no '/'"));
            }
        }
        if self.interpreters.len() > MAX_INTERPRETERS {
            return Err(format!("at most {MAX_INTERPRETERS} interpreters"));
        }
        for i in &self.interpreters {
            let bare = i.name.strip_suffix('*').unwrap_or(&i.name);
            if bare.is_empty() || bare.len() > 15 || bare.contains('/') {
                return Err(format!("interpreter name {:?}: 1 to 15 bytes", i.name));
            }
            if i.inline.len() > 7 || i.value.len() > 15 {
                return Err(format!(
                    "interpreter {:?}: at most 7 inline and 15 value options",
                    i.name
                ));
            }
            if i.long.len() > 2
                || i.long
                    .iter()
                    .any(|l| !l.starts_with("--") || l.len() > 15 || l.len() < 3)
            {
                return Err(format!(
                    "interpreter {:?}: at most two long options, each --NAME of up to 15 bytes",
                    i.name
                ));
            }
            if i.inline.is_empty() && i.long.is_empty() && !self.interpreter_scripts {
                return Err(format!(
                    "interpreter {:?}: no inline or long option, and interpreter_scripts = false: it would never match",
                    i.name
                ));
            }
        }
        Ok(())
    }
}

/// Who may run suspicious programs after loading a model: every key given
/// must match (`--allow origin=/opt/app/bin/python,model=/srv/models/*`).
/// Never by the executed program's name: an allowance is about where the
/// model load came from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AllowRule {
    /// Glob on the origin's executable path (`/proc/PID/exe`).
    pub origin: Option<String>,
    /// Substring of the origin's command line.
    pub cmdline: Option<String>,
    /// Glob on the model's absolute path.
    pub model: Option<String>,
    /// Substring of the origin's cgroup path (a container id, a systemd unit).
    pub cgroup: Option<String>,
}

impl AllowRule {
    pub fn parse(s: &str) -> Result<AllowRule, String> {
        let mut r = AllowRule::default();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!(
                    "--allow {s:?}: expected KEY=VALUE[,KEY=VALUE...] with keys origin, cmdline, model, cgroup \
                     (an allowance names where the model load came from, never just the program it runs)"
                )
            })?;
            if v.is_empty() {
                return Err(format!("--allow {s:?}: {k} has an empty value"));
            }
            let slot = match k {
                "origin" => &mut r.origin,
                "cmdline" => &mut r.cmdline,
                "model" => &mut r.model,
                "cgroup" => &mut r.cgroup,
                _ => {
                    return Err(format!(
                        "--allow {s:?}: unknown key {k:?} (origin, cmdline, model, cgroup)"
                    ));
                }
            };
            if slot.is_some() {
                return Err(format!("--allow {s:?}: {k} given twice"));
            }
            *slot = Some(v.to_owned());
        }
        for g in [&r.origin, &r.model].into_iter().flatten() {
            globset::Glob::new(g).map_err(|e| format!("--allow {s:?}: {e}"))?;
        }
        Ok(r)
    }

    fn glob(p: &str, s: &str) -> bool {
        globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .is_ok_and(|g| g.compile_matcher().is_match(s))
    }

    /// Does this rule allow an origin (given its facts and a model path)?
    pub fn matches(&self, o: &OriginInfo, model: &str) -> bool {
        self.origin
            .as_deref()
            .is_none_or(|g| o.exe.as_deref().is_some_and(|e| Self::glob(g, e)))
            && self
                .cmdline
                .as_deref()
                .is_none_or(|c| o.cmdline.as_deref().is_some_and(|l| l.contains(c)))
            && self.model.as_deref().is_none_or(|g| Self::glob(g, model))
            && self
                .cgroup
                .as_deref()
                .is_none_or(|c| o.cgroup.as_deref().is_some_and(|l| l.contains(c)))
    }

    pub fn depends_on_model(&self) -> bool {
        self.model.is_some()
    }
}

/// Options for a watch session.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub enforce: bool,
    pub rules: Rules,
    /// Also report pickle-module loads, model opens and allowed execs.
    pub verbose: bool,
    pub allow: Vec<AllowRule>,
    /// Keep the programs attached (enforcing) if this process is killed.
    pub pin: bool,
    /// `distributed-exposure` only for listeners on a public address (not
    /// loopback, RFC 1918, CGNAT, link-local or unique-local).
    pub public_only: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            enforce: false,
            rules: Rules::default(),
            verbose: false,
            allow: Vec::new(),
            pin: true,
            public_only: false,
        }
    }
}

/// Facts about an origin process (the one that opened the model), read from
/// /proc when its first model open is seen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OriginInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// A container id found in the cgroup path (docker, containerd, cri-o, podman).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A model opened in the window before an alert.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// Absolute path (relative opens resolved against the origin's cwd).
    pub path: String,
    /// Kernel time of the open (ns since boot).
    pub opened_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Modification time, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// pickguard's own scan verdict of the file (filled by the CLI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<String>,
    /// Where `--quarantine` moved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined_to: Option<String>,
}

/// One report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Event {
    /// `alert`, `signal-sensor`, `events-lost`, `pickle-loaded`, `model-opened`.
    pub event: &'static str,
    /// For alerts: `shell`, `inline-code`, `interpreter`, `network-tool`,
    /// `launcher`, `anonymous-exec`, `fresh-binary`, ..., and
    /// `distributed-exposure` (a torch.distributed listener reachable
    /// beyond the host; never stopped, only reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Process that executed the program (or opened the file, or signalled).
    pub pid: u32,
    pub ppid: u32,
    /// The Python process that opened the model.
    pub origin_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// Executed file's name (alerts) or opened file's name.
    pub name: String,
    /// The path given to exec (alerts), as the kernel saw it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub program: String,
    /// The executed file's identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Arguments, captured by the kernel at exec (so a killed program's are recorded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The latest model opened (absolute where it could be resolved).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Every model the origin opened in the window, latest last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelInfo>,
    /// `argv` joined by spaces (kept for readers of earlier versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginInfo>,
    /// `denied` (exec refused by the LSM hook), `killed` (killed at exec),
    /// `detected`, `allowed` (an --allow rule matched; reported with --verbose).
    pub verdict: &'static str,
    /// For `signal-sensor`: the signal sent to the sensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<u32>,
    /// For `events-lost`: alerts (and untracked children) and model opens the
    /// kernel could not report because its ring was full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_alerts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_opens: Option<u64>,
    pub hostname: String,
    /// Kernel time of the event and of the latest model open (ns since boot).
    pub ts_ns: u64,
    pub model_ts_ns: u64,
    /// From the kernel event to user space, microseconds.
    pub latency_us: u64,
    /// Wall-clock time the event was read, seconds since the Unix epoch.
    pub unix_time: String,
    /// Recorded by the pinned programs while no sensor was reading (read
    /// back by a restarted sensor or by `watch --stop`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unattended: bool,
    /// For `distributed-exposure`: the listening process (exe, command
    /// line, cwd, cgroup, container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<OriginInfo>,
    /// The thread that called listen(2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// The listening address and port (the kernel's, not what the program asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `ipv4` or `ipv6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    /// Not loopback: other hosts can connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable_beyond_host: Option<bool>,
    /// Not a private range (RFC 1918, CGNAT, link-local, unique-local); a
    /// wildcard is public when the host has a public address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    /// For a wildcard address: the host's addresses it accepts on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_on: Vec<String>,
    /// The torch component, when a thread names it (`TCPStore`), else `torch.distributed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The code that called listen(2): library+offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// What the alert rests on, one fact a line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// Which enforcement mechanism a session uses.
#[derive(Clone, Debug, Serialize)]
pub struct Mechanism {
    pub name: &'static str,
    pub description: String,
}

/// The container id in a cgroup path, if it has one (64 hex digits after
/// docker-, cri-containerd-, crio-, libpod- or as a path component).
pub fn container_id(cgroup: &str) -> Option<String> {
    for part in cgroup.split(['/', '-', ':']) {
        let p = part.strip_suffix(".scope").unwrap_or(part);
        if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(p.to_owned());
        }
    }
    None
}

/// The fingerprint watch.bpf.c computes of an ELF's first 256 bytes (see
/// `fingerprint` there): the header fields the loader uses and up to three
/// program headers, without what the kernel's loader ignores: e_ident
/// padding, e_version, section headers, e_flags, e_ehsize and p_paddr. `None` for anything but a 64-bit ELF.
pub fn elf_fingerprint(head: &[u8]) -> Option<u64> {
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 {
        return None;
    }
    let mut buf = [0u8; 256];
    let n = head.len().min(256);
    buf[..n].copy_from_slice(&head[..n]);
    let mut phoff = u32::from_le_bytes([buf[32], buf[33], buf[34], buf[35]]);
    if !(64..=255).contains(&phoff) {
        phoff = 256;
    }
    let end = (phoff + 3 * 56).min(256);
    let mut h: u64 = 0xcbf29ce484222325;
    for k in 0..end {
        if k < 16 || (20..24).contains(&k) || (40..54).contains(&k) || (58..64).contains(&k) {
            continue;
        }
        if k >= 64 {
            if k < phoff {
                continue;
            }
            let r = (k - phoff) % 56;
            if (24..32).contains(&r) {
                continue;
            }
        }
        h ^= u64::from(buf[k as usize]);
        h = h.wrapping_mul(0x100000001b3);
    }
    Some(h)
}

#[cfg(all(target_os = "linux", pickguard_bpf))]
mod bpf;

#[cfg(all(target_os = "linux", pickguard_bpf))]
mod listen;

#[cfg(all(target_os = "linux", pickguard_bpf))]
pub use bpf::{stop, watch};

/// Without the BPF program (built without clang, or not Linux).
#[cfg(not(all(target_os = "linux", pickguard_bpf)))]
pub fn watch(
    _opts: &WatchOptions,
    _ready: impl FnOnce(&Mechanism),
    _on_event: impl FnMut(Event) -> bool,
) -> Result<(), String> {
    Err(UNAVAILABLE.into())
}

#[cfg(not(all(target_os = "linux", pickguard_bpf)))]
pub fn stop(_on_event: impl FnMut(Event)) -> Result<usize, String> {
    Err(UNAVAILABLE.into())
}

#[cfg(not(all(target_os = "linux", pickguard_bpf)))]
const UNAVAILABLE: &str = "this pickguard was built without the eBPF program (without the `bpf` feature, or clang was not available at build time); rebuild on Linux with clang, libelf and zlib installed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_parse_and_fit_the_kernel_tables() {
        let r = Rules::default();
        assert!(r.shells.contains(&"dash".to_string()));
        assert!(r.models.contains(&".pth.tar".to_string()));
        assert!(r.interpreters.iter().any(|i| i.name == "perl*"));
        r.validate().unwrap();
    }

    #[test]
    fn a_user_rule_file_replaces_only_its_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.toml");
        std::fs::write(&p, "window = 10\nnetwork_tools = [\"curl\"]\n").unwrap();
        let r = Rules::load(&p).unwrap();
        assert_eq!(r.window, 10);
        assert_eq!(r.network_tools, vec!["curl"]);
        assert_eq!(r.shells, Rules::default().shells);
        std::fs::write(&p, "windw = 10\n").unwrap();
        assert!(Rules::load(&p).unwrap_err().contains("windw"));
        std::fs::write(&p, "shells = [\"/bin/sh\"]\n").unwrap();
        assert!(Rules::load(&p).is_err());
        std::fs::write(
            &p,
            "interpreter_scripts = false\n[[interpreter]]\nname = \"perl\"\n",
        )
        .unwrap();
        assert!(Rules::load(&p).unwrap_err().contains("never match"));
    }

    #[test]
    fn allow_rules_name_the_origin_never_only_the_program() {
        assert!(AllowRule::parse("sh").is_err());
        assert!(AllowRule::parse("program=sh").is_err());
        assert!(AllowRule::parse("origin=").is_err());
        let r = AllowRule::parse("origin=/opt/app/bin/*,model=/srv/models/**").unwrap();
        let o = OriginInfo {
            exe: Some("/opt/app/bin/python3".into()),
            ..Default::default()
        };
        assert!(r.matches(&o, "/srv/models/a/b.pt"));
        assert!(!r.matches(&o, "/tmp/evil.pt"));
        let other = OriginInfo {
            exe: Some("/usr/bin/python3".into()),
            ..Default::default()
        };
        assert!(!r.matches(&other, "/srv/models/a/b.pt"));
        // A key whose fact is unknown does not match.
        assert!(!r.matches(&OriginInfo::default(), "/srv/models/a.pt"));
        assert!(r.depends_on_model());
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("0::/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            container_id(&format!("0::/kubepods/burstable/pod1/{id}")),
            Some(id)
        );
        assert_eq!(container_id("0::/user.slice/user-1000.slice"), None);
    }

    #[test]
    fn fingerprint_ignores_what_the_loader_ignores() {
        let Ok(sh) = std::fs::read("/bin/dash").or_else(|_| std::fs::read("/bin/sh")) else {
            panic!("no /bin/sh to fingerprint");
        };
        let a = elf_fingerprint(&sh).unwrap();
        let mut copy = sh.clone();
        copy.extend_from_slice(b"appended");
        copy[9] = 0x55; // e_ident padding
        copy[60] ^= 1; // e_shnum
        copy[20] = 7; // e_version: the kernel does not check it
        assert_eq!(elf_fingerprint(&copy), Some(a));
        let mut changed = sh.clone();
        changed[24] ^= 1; // e_entry
        assert_ne!(elf_fingerprint(&changed), Some(a));
        assert_eq!(elf_fingerprint(b"#!/bin/sh\n"), None);
    }
}
