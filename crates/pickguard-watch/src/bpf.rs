//! Loading the BPF program, filling its tables from the rules, pinning it,
//! and turning its events into reports.

// The generated skeleton is FFI glue over libbpf (raw pointers into the
// BPF object's mmap'd sections); it and the few libc calls below (clocks,
// mount, signal handlers) are the only unsafe code in this crate.
#[allow(unsafe_code, clippy::all, clippy::pedantic, dead_code, unused_imports)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/watch.skel.rs"));
}

use crate::{AllowRule, Event, Mechanism, ModelInfo, OriginInfo, Rules, WatchOptions};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBufferBuilder};
use skel::WatchSkelBuilder;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const EV_PICKLE: u32 = 1;
const EV_MODEL: u32 = 2;
const EV_ALERT: u32 = 3;
const EV_SIGNAL: u32 = 4;
const K_SHELL: u32 = 1;
const K_NETWORK: u32 = 3;
const K_PYTHON: u32 = 6;
const K_LAUNCHER: u32 = 7;
const NAME_LEN: usize = 64;
const PATH_LEN: usize = 256;
const ARGV_LEN: usize = 1024;
const FULL_PATH: usize = 4096;
const F_PYTHON: u32 = 1;
const F_PICKLE: u32 = 2;
const F_MODEL: u32 = 4;

/// Where an enforcing sensor pins its programs: one directory per sensor,
/// named with its pid (`/sys/fs/bpf/pickguard-watch-PID`).
pub const PIN_PREFIX: &str = "pickguard-watch-";

/// The per-process state, allowances and clock flag, pinned and shared by
/// every enforcing sensor: a sensor that takes over from one that was killed
/// (or from one still running) keeps every armed process armed.
pub const STATE_DIR: &str = "/sys/fs/bpf/pickguard-watch-state";

/// `struct event` in watch.bpf.c.
mod off {
    pub const KIND: usize = 0;
    pub const PID: usize = 4;
    pub const PPID: usize = 8;
    pub const ORIGIN: usize = 12;
    pub const VERDICT: usize = 16;
    pub const WHAT: usize = 20;
    pub const TS: usize = 24;
    pub const MODEL_TS: usize = 32;
    pub const UID: usize = 40;
    pub const GID: usize = 44;
    pub const CGROUP: usize = 48;
    pub const INO: usize = 56;
    pub const DEV: usize = 64;
    pub const ARGV_LEN: usize = 68;
    pub const COMM: usize = 72;
    pub const NAME: usize = 88;
    pub const FILENAME: usize = 152;
    pub const MODEL: usize = 408;
    pub const ARGV: usize = 664;
    pub const PATH: usize = 1688;
    pub const END: usize = 5784;
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

fn read_cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let s: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (!s.is_empty()).then(|| s.join(" "))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

pub(crate) fn unix_time() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A process's start time (clock ticks since boot), to tell a reused pid.
fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

pub(crate) fn origin_info(pid: u32) -> OriginInfo {
    let link = |what: &str| {
        std::fs::read_link(format!("/proc/{pid}/{what}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .map(|s| s.lines().collect::<Vec<_>>().join(";"));
    OriginInfo {
        exe: link("exe"),
        cmdline: read_cmdline(pid),
        cwd: link("cwd"),
        container: cgroup.as_deref().and_then(crate::container_id),
        cgroup,
    }
}

/// What user space remembers about origins: facts, and the models each
/// opened (bounded: a dataset loop opening thousands of files keeps the last
/// few per process and the few hundred most recent processes).
#[derive(Default)]
struct Origins {
    /// pid -> (start time, when it was last checked, facts).
    info: HashMap<u32, (Option<u64>, std::time::Instant, OriginInfo)>,
    models: HashMap<u32, VecDeque<(u64, String)>>,
    order: VecDeque<u32>,
}

const MODELS_PER_ORIGIN: usize = 64;
const MODELS_KEPT_FIRST: usize = 8;
const ORIGINS_KEPT: usize = 512;

impl Origins {
    fn info(&mut self, pid: u32) -> OriginInfo {
        // A dataset loop opens thousands of model-suffixed files: check that
        // a cached pid is still the same process at most once a second.
        let now = std::time::Instant::now();
        if let Some((_, checked, i)) = self.info.get(&pid)
            && now.duration_since(*checked) < Duration::from_secs(1)
        {
            return i.clone();
        }
        let st = start_time(pid);
        // Gone (st is None): what was read while it lived is the best there is.
        if let Some((t, checked, i)) = self.info.get_mut(&pid)
            && (st.is_none() || t.is_none() || *t == st)
        {
            *checked = now;
            return i.clone();
        }
        let i = origin_info(pid);
        self.info.insert(pid, (st, now, i.clone()));
        i
    }

    /// Read an interpreter's facts at its first event. Bounded apart from
    /// the origins that opened models: many interpreters that never open one
    /// cannot push out those that did.
    fn early(&mut self, pid: u32) {
        self.info(pid);
        if self.info.len() > 4 * ORIGINS_KEPT {
            let models = &self.models;
            self.info.retain(|p, _| models.contains_key(p));
            self.info(pid);
        }
    }

    /// Distinct paths, latest open last. When full, the first few models of
    /// the origin are kept (the one that armed it is among them) and the
    /// oldest of the rest goes: a payload that opens decoy "models" after
    /// the real one cannot push the real one out.
    fn opened(&mut self, pid: u32, ts: u64, path: String) {
        let q = self.models.entry(pid).or_default();
        if let Some(i) = q.iter().position(|(_, p)| *p == path) {
            if i < MODELS_KEPT_FIRST {
                q[i].0 = ts;
            } else {
                q.remove(i);
                q.push_back((ts, path));
            }
        } else {
            if q.len() == MODELS_PER_ORIGIN {
                q.remove(MODELS_KEPT_FIRST);
            }
            q.push_back((ts, path));
        }
        self.order.retain(|p| *p != pid);
        self.order.push_back(pid);
        while self.order.len() > ORIGINS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.models.remove(&old);
                self.info.remove(&old);
            }
        }
    }
}

/// Resolve a path as the process opened it (relative to its cwd or to the
/// directory descriptor it passed).
fn absolute(pid: u32, dirfd: i32, p: &str) -> String {
    if p.starts_with('/') {
        return p.to_owned();
    }
    let base = if dirfd == libc::AT_FDCWD {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
    } else {
        std::fs::read_link(format!("/proc/{pid}/fd/{dirfd}"))
    };
    match base {
        Ok(b) => b.join(p).to_string_lossy().into_owned(),
        Err(_) => p.to_owned(),
    }
}

/// Where the file system with kernel device `dev` is mounted (its root
/// mounted, from /proc/self/mountinfo).
fn mount_point(dev: u32) -> Option<String> {
    let want = format!("{}:{}", dev >> 20, dev & 0xf_ffff);
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && f[2] == want && f[3] == "/").then(|| f[4].replace("\\040", " "))
    })
}

/// A relative path resolved with the cwd the kernel recorded at the open
/// (dentry names leaf first, up to the root of the file system on `dev`),
/// for when the process is gone before /proc can be read.
fn absolute_from_kernel(cwd: &[String], dev: u32, p: &str) -> Option<String> {
    if cwd.is_empty() || dev == 0 {
        return None;
    }
    let mut base = mount_point(dev)?;
    for c in cwd.iter().rev() {
        if !base.ends_with('/') {
            base.push('/');
        }
        base.push_str(c);
    }
    Some(format!("{}/{p}", base.trim_end_matches('/')))
}

/// Size, mtime and SHA-256 of a model (the hash is skipped past 8 GiB).
pub fn model_facts(path: &str, opened_ns: u64) -> ModelInfo {
    use sha2::Digest;
    let mut m = ModelInfo {
        path: path.to_owned(),
        opened_ns,
        size: None,
        mtime: None,
        sha256: None,
        scan: None,
        quarantined_to: None,
    };
    if let Ok(md) = std::fs::metadata(path) {
        m.size = Some(md.len());
        m.mtime = Some(md.mtime());
        if md.is_file()
            && md.len() <= 8 << 30
            && let Ok(mut f) = std::fs::File::open(path)
        {
            let mut h = sha2::Sha256::new();
            if std::io::copy(&mut f, &mut h).is_ok() {
                m.sha256 = Some(
                    h.finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>(),
                );
            }
        }
    }
    m
}

fn kind_name(k: u32) -> &'static str {
    match k {
        1 => "shell",
        2 => "inline-code",
        3 => "network-tool",
        4 => "anonymous-exec",
        5 => "fresh-binary",
        7 => "launcher",
        8 => "interpreter",
        9 => "ptrace",
        10 => "clock-change",
        11 => "kernel-helper",
        _ => "unknown",
    }
}

fn verdict_name(v: u32) -> &'static str {
    match v {
        1 => "killed",
        2 => "denied",
        3 => "allowed",
        _ => "detected",
    }
}

/// The parts of an event the kernel wrote.
fn decode_raw(b: &[u8]) -> Option<(u32, Event, String, i32, u32)> {
    if b.len() < off::END {
        return None;
    }
    let kind = u32_at(b, off::KIND);
    let argv_len = (u32_at(b, off::ARGV_LEN) as usize).min(ARGV_LEN - 1);
    let argv: Vec<String> = b[off::ARGV..off::ARGV + argv_len]
        .split(|&c| c == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let ts = u64_at(b, off::TS);
    let what = u32_at(b, off::WHAT);
    let ev = Event {
        event: match kind {
            EV_ALERT => "alert",
            EV_SIGNAL => "signal-sensor",
            EV_PICKLE => "pickle-loaded",
            EV_MODEL => "model-opened",
            _ => "unknown",
        },
        kind: (kind == EV_ALERT).then(|| kind_name(what)),
        pid: u32_at(b, off::PID),
        ppid: u32_at(b, off::PPID),
        origin_pid: u32_at(b, off::ORIGIN),
        uid: u32_at(b, off::UID),
        gid: u32_at(b, off::GID),
        cgroup_id: u64_at(b, off::CGROUP),
        comm: cstr(&b[off::COMM..off::COMM + 16]),
        name: cstr(&b[off::NAME..off::NAME + NAME_LEN]),
        program: cstr(&b[off::FILENAME..off::FILENAME + PATH_LEN]),
        inode: (kind == EV_ALERT).then(|| u64_at(b, off::INO)),
        cmdline: (!argv.is_empty()).then(|| argv.join(" ")),
        argv,
        model: cstr(&b[off::MODEL..off::MODEL + PATH_LEN]),
        models: Vec::new(),
        parent_cmdline: None,
        origin_cmdline: None,
        origin: None,
        verdict: verdict_name(u32_at(b, off::VERDICT)),
        signal: (kind == EV_SIGNAL).then_some(what),
        lost_alerts: None,
        lost_opens: None,
        hostname: String::new(),
        ts_ns: ts,
        model_ts_ns: u64_at(b, off::MODEL_TS),
        latency_us: boot_ns().saturating_sub(ts) / 1000,
        unix_time: unix_time(),
        unattended: false,
        ..Event::default()
    };
    let path = cstr(&b[off::PATH..off::PATH + FULL_PATH]);
    Some((kind, ev, path, what as i32, u32_at(b, off::DEV)))
}

/// Turns raw events into reports: remembers model opens, grants
/// allowances, and fills alerts with what a responder needs.
struct Reporter<'a> {
    origins: Origins,
    allow: &'a [AllowRule],
    window_ns: u64,
    verbose: bool,
    host: String,
    /// TCP listens waiting to be judged (`distributed-exposure`).
    listens: crate::listen::Listens,
}

impl Reporter<'_> {
    /// `grant(pid, value)` records an allowance in the kernel's table.
    fn handle(&mut self, data: &[u8], grant: &dyn Fn(u32, u32), unattended: bool) -> Option<Event> {
        // A listen is judged later, from /proc (`tick`).
        if let Some(l) = crate::listen::decode(data) {
            self.listens.push(l, unattended);
            return None;
        }
        let (kind, mut ev, path, what, dev) = decode_raw(data)?;
        ev.hostname = self.host.clone();
        ev.unattended = unattended;
        match kind {
            EV_MODEL => {
                let mut abs = absolute(ev.pid, what, &path);
                if !abs.starts_with('/')
                    && what == libc::AT_FDCWD
                    && let Some(a) = absolute_from_kernel(&ev.argv, dev, &path)
                {
                    abs = a;
                }
                ev.argv.clear();
                ev.cmdline = None;
                // The tree's origin: the opener itself, or the armed ancestor
                // it descends from (the kernel keeps that attribution).
                let origin = if ev.origin_pid != 0 {
                    ev.origin_pid
                } else {
                    ev.pid
                };
                self.origins.opened(origin, ev.ts_ns, abs.clone());
                // Read the origin's facts now, while it is surely alive: an
                // alert may come after it has exited.
                let info = self.origins.info(origin);
                if let Some(r) = self.allow.iter().find(|r| r.matches(&info, &abs)) {
                    grant(origin, if r.depends_on_model() { 2 } else { 1 });
                }
                if !self.verbose {
                    return None;
                }
                ev.model = abs;
                Some(ev)
            }
            EV_PICKLE => {
                // The earliest event of an interpreter: its facts are read
                // here, before it can load, spawn and exit (a half torn-down
                // process has no exe or command line left to read).
                let origin = if ev.origin_pid != 0 {
                    ev.origin_pid
                } else {
                    ev.pid
                };
                self.origins.early(origin);
                self.verbose.then_some(ev)
            }
            _ => {
                if ev.origin_pid != 0 {
                    let info = self.origins.info(ev.origin_pid);
                    ev.origin_cmdline = info.cmdline.clone();
                    ev.origin = Some(info);
                    let from = ev.ts_ns.saturating_sub(self.window_ns);
                    if let Some(q) = self.origins.models.get(&ev.origin_pid) {
                        ev.models = q
                            .iter()
                            .filter(|(t, _)| *t >= from && *t <= ev.ts_ns)
                            .map(|(t, p)| model_facts(p, *t))
                            .collect();
                    }
                }
                if ev.models.is_empty() && !ev.model.is_empty() {
                    let p = absolute(ev.origin_pid, libc::AT_FDCWD, &ev.model);
                    ev.models.push(model_facts(&p, ev.model_ts_ns));
                }
                if let Some(last) = ev.models.last() {
                    ev.model = last.path.clone();
                }
                ev.parent_cmdline = read_cmdline(ev.ppid);
                Some(ev)
            }
        }
    }
}

/// Kernel dev_t of a file's device (MKDEV: major << 20 | minor).
fn kernel_dev(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (major << 20) | minor
}

fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/bin",
        "/usr/bin",
        "/sbin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/lib/busybox",
    ] {
        let d = PathBuf::from(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// Identities of the programs the rules name: (kernel dev, inode) and ELF
/// fingerprints, each with its kind.
/// (kernel dev, inode, kind), (fingerprint, kind), (path found, kind).
type Identities = (Vec<(u32, u64, u32)>, Vec<(u64, u32)>, Vec<(String, u32)>);

fn identities(rules: &Rules) -> Identities {
    let mut inodes = Vec::new();
    let mut prints = Vec::new();
    let mut found = Vec::new();
    let dirs = search_dirs();
    let pythons = vec!["python*".to_string()];
    let lists = [
        (&rules.shells, K_SHELL),
        (&rules.network_tools, K_NETWORK),
        (&rules.launchers, K_LAUNCHER),
        (&pythons, K_PYTHON),
    ];
    for (names, kind) in lists {
        for n in names {
            let bare = n.trim_end_matches('*');
            for d in &dirs {
                let Ok(rd) = std::fs::read_dir(d) else {
                    continue;
                };
                for e in rd.flatten() {
                    let fname = e.file_name();
                    let fname = fname.to_string_lossy();
                    let hit = if n.ends_with('*') {
                        fname.starts_with(bare)
                    } else {
                        fname == bare
                    };
                    if !hit {
                        continue;
                    }
                    let p = e.path();
                    let Ok(md) = std::fs::metadata(&p) else {
                        continue;
                    };
                    if !md.is_file() {
                        continue;
                    }
                    let id = (kernel_dev(md.dev()), md.ino(), kind);
                    if !inodes.iter().any(|(d, i, _)| (*d, *i) == (id.0, id.1)) {
                        inodes.push(id);
                        let real = std::fs::canonicalize(&p).unwrap_or(p);
                        found.push((real.to_string_lossy().into_owned(), kind));
                        let mut head = [0u8; 256];
                        if let Ok(mut f) = std::fs::File::open(&real) {
                            use std::io::Read;
                            let mut n = 0;
                            while n < 256 {
                                match f.read(&mut head[n..]) {
                                    Ok(0) | Err(_) => break,
                                    Ok(k) => n += k,
                                }
                            }
                            if let Some(fp) = crate::elf_fingerprint(&head[..n]) {
                                prints.push((fp, kind));
                            }
                        }
                    }
                }
            }
        }
    }
    (inodes, prints, found)
}

fn fill_tables(skel: &skel::WatchSkel<'_>, rules: &Rules) -> Result<Vec<(String, u32)>, String> {
    let put = |map: &libbpf_rs::MapMut, k: &[u8], v: &[u8], what: &str| {
        map.update(k, v, MapFlags::ANY)
            .map_err(|e| format!("filling the {what} table: {e}"))
    };
    let mut i = 0u32;
    for (names, kind) in [
        (&rules.shells, K_SHELL),
        (&rules.network_tools, K_NETWORK),
        (&rules.launchers, K_LAUNCHER),
    ] {
        for n in names {
            let bare = n.trim_end_matches('*');
            let mut v = [0u8; 24];
            v[..bare.len()].copy_from_slice(bare.as_bytes());
            v[16..20].copy_from_slice(&kind.to_ne_bytes());
            v[20..24].copy_from_slice(&u32::from(n.ends_with('*')).to_ne_bytes());
            put(&skel.maps.names, &i.to_ne_bytes(), &v, "program names")?;
            i += 1;
        }
    }
    for (i, m) in rules.models.iter().enumerate() {
        let mut v = [0u8; 32];
        v[..m.len()].copy_from_slice(m.as_bytes());
        put(
            &skel.maps.exts,
            &(i as u32).to_ne_bytes(),
            &v,
            "model suffixes",
        )?;
    }
    for (i, ip) in rules.interpreters.iter().enumerate() {
        // struct interp: name[16] inline[8] value[16] long1[16] long2[16] prefix pad
        let mut v = [0u8; 80];
        let bare = ip.name.trim_end_matches('*');
        v[..bare.len()].copy_from_slice(bare.as_bytes());
        v[16..16 + ip.inline.len()].copy_from_slice(ip.inline.as_bytes());
        v[24..24 + ip.value.len()].copy_from_slice(ip.value.as_bytes());
        for (j, l) in ip.long.iter().enumerate() {
            let o = 40 + 16 * j;
            v[o..o + l.len()].copy_from_slice(l.as_bytes());
        }
        v[72..76].copy_from_slice(&u32::from(ip.name.ends_with('*')).to_ne_bytes());
        put(
            &skel.maps.interps,
            &(i as u32).to_ne_bytes(),
            &v,
            "interpreters",
        )?;
    }
    let (inodes, prints, found) = identities(rules);
    for (dev, ino, kind) in inodes {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&ino.to_ne_bytes());
        k[8..12].copy_from_slice(&dev.to_ne_bytes());
        put(
            &skel.maps.inodes,
            &k,
            &kind.to_ne_bytes(),
            "program identities",
        )?;
    }
    for (fp, kind) in prints {
        put(
            &skel.maps.prints,
            &fp.to_ne_bytes(),
            &kind.to_ne_bytes(),
            "fingerprints",
        )?;
    }
    Ok(found)
}

fn has_model_suffix(p: &str, rules: &Rules) -> bool {
    let base = p.rsplit('/').next().unwrap_or(p);
    rules.models.iter().any(|m| base.ends_with(m.as_str()))
}

/// Arm interpreters that were already running when the sensor started: an
/// interpreter by its executable's name or a mapped libpython; conservatively
/// as having loaded pickle (a running program may have imported it long ago);
/// armed already when it holds a model file open.
fn prime_running(map: &libbpf_rs::MapMut, rules: &Rules) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut armed = 0;
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let by_name = exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("python"));
        let by_map = !by_name
            && std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .is_ok_and(|m| m.contains("/libpython"));
        if !by_name && !by_map {
            continue;
        }
        // struct state: flags origin model_ts armed_ts loading_left pad model[256]
        let mut st = vec![0u8; 4 + 4 + 8 + 8 + 4 + 4 + PATH_LEN];
        let mut flags = F_PYTHON | F_PICKLE;
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let t = target.to_string_lossy();
                if t.starts_with('/') && has_model_suffix(&t, rules) {
                    flags |= F_MODEL;
                    let now = boot_ns();
                    st[4..8].copy_from_slice(&pid.to_ne_bytes());
                    st[8..16].copy_from_slice(&now.to_ne_bytes());
                    st[16..24].copy_from_slice(&now.to_ne_bytes());
                    let tail = &t.as_bytes()[t.len().saturating_sub(PATH_LEN - 1)..];
                    st[32..32 + tail.len()].copy_from_slice(tail);
                    armed += 1;
                    break;
                }
            }
        }
        st[..4].copy_from_slice(&flags.to_ne_bytes());
        let _ = map.update(&pid.to_ne_bytes(), &st, MapFlags::NO_EXIST);
    }
    armed
}

fn open_and_load<'a>(
    object: &'a mut MaybeUninit<libbpf_rs::OpenObject>,
    opts: &WatchOptions,
    lsm: bool,
    share_state: bool,
) -> Result<skel::WatchSkel<'a>, String> {
    let mut open = WatchSkelBuilder::default()
        .open(object)
        .map_err(|e| format!("opening the BPF object: {e}"))?;
    if share_state {
        // libbpf reuses a compatible map pinned there, or pins a new one.
        let dir = Path::new(STATE_DIR);
        let maps = &mut open.maps;
        for (m, name) in [
            (&mut maps.states, "states"),
            (&mut maps.allowed, "allowed"),
            (&mut maps.tamper, "tamper"),
        ] {
            m.set_pin_path(dir.join(name))
                .map_err(|e| format!("pinning {name}: {e}"))?;
        }
    }
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.enforce = opts.enforce as u32;
        ro.window_ns = opts.rules.window.saturating_mul(1_000_000_000);
        ro.verbose = opts.verbose as u32;
        ro.lsm_deny = lsm as u32;
        ro.real_offset_ns =
            clock_ns(libc::CLOCK_REALTIME).saturating_sub(clock_ns(libc::CLOCK_BOOTTIME));
        ro.fresh_rule = opts.rules.fresh as u32;
        ro.anonymous_rule = opts.rules.anonymous as u32;
        ro.interp_scripts = opts.rules.interpreter_scripts as u32;
        ro.sensor_tgid = std::process::id();
    }
    open.progs.deny_exec.set_autoload(lsm);
    open.progs
        .on_listen
        .set_autoload(opts.rules.distributed_exposure);
    open.load().map_err(|e| {
        let hint = if e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
            " (pickguard watch needs root, or CAP_BPF and CAP_PERFMON, and a kernel with BTF; the verifier log above says more)"
        } else {
            ""
        };
        format!("loading the BPF program: {e}{hint}")
    })
}

/// mount(2) of a pseudo file system (its type is also its source).
fn mount_fs(fstype: &str, target: &str) -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (fs, t) = (c(fstype), c(target));
    // SAFETY: mount(2) with NUL-terminated strings we own and no data.
    #[allow(unsafe_code)]
    let r = unsafe { libc::mount(fs.as_ptr(), t.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn mount_if_missing(target: &str, fstype: &str, probe: &Path) -> Result<(), String> {
    if probe.exists() {
        return Ok(());
    }
    let r = mount_fs(fstype, target);
    if r.is_err() || !probe.exists() {
        return Err(format!(
            "{fstype} is not mounted at {target} and mounting it failed: {}",
            r.err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no effect".into())
        ));
    }
    eprintln!("pickguard watch: mounted {fstype} at {target}");
    Ok(())
}

/// Tracepoints are attached by id, read from tracefs: mount it when the
/// host has not (common in containers and minimal VMs).
fn ensure_tracefs() -> Result<(), String> {
    if Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    mount_if_missing(
        "/sys/kernel/tracing",
        "tracefs",
        Path::new("/sys/kernel/tracing/events"),
    )
}

fn is_bpffs(p: &str) -> bool {
    let c = std::ffi::CString::new(p).unwrap_or_default();
    // SAFETY: statfs writes the struct we own.
    #[allow(unsafe_code)]
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == 0xcafe4a11u32 as _
    }
}

fn ensure_bpffs() -> Result<(), String> {
    if is_bpffs("/sys/fs/bpf") {
        return Ok(());
    }
    let r = mount_fs("bpf", "/sys/fs/bpf");
    if r.is_err() || !is_bpffs("/sys/fs/bpf") {
        return Err(format!(
            "the BPF file system is not mounted at /sys/fs/bpf and mounting it failed: {} (--no-pin runs without it)",
            r.err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no effect".into())
        ));
    }
    eprintln!("pickguard watch: mounted the BPF file system at /sys/fs/bpf");
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);
static KEEP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        KEEP.store(true, Ordering::SeqCst);
    }
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end the session cleanly (unpinning). SIGHUP ends it
/// leaving the programs pinned and enforcing, for the next sensor to take
/// over (a restart with no gap); so does a kill the sensor cannot handle.
fn install_stop_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction with a handler that only stores to an atomic;
        // no SA_RESTART, so the ring-buffer poll returns EINTR.
        #[allow(unsafe_code)]
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Read what pinned programs recorded while nobody was reading.
fn drain_pinned(dir: &Path, report: &mut dyn FnMut(&[u8])) {
    let cell = RefCell::new(report);
    for ring in ["opens", "events"] {
        let Ok(map) = MapHandle::from_pinned_path(dir.join(ring)) else {
            continue;
        };
        let mut b = RingBufferBuilder::new();
        if b.add(&map, |data: &[u8]| {
            (cell.borrow_mut())(data);
            0
        })
        .is_err()
        {
            continue;
        }
        if let Ok(rb) = b.build() {
            let _ = rb.consume();
        }
    }
}

fn remove_pins(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Pin directories of sensors: (pid, directory, whether that sensor is alive).
fn pinned_sensors() -> Vec<(u32, PathBuf, bool)> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PIN_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            // Alive only if that pid is still a pickguard (not a reused pid).
            let alive = pid != std::process::id()
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                    std::env::current_exe().is_ok_and(|me| me == exe)
                        || exe.to_string_lossy().contains("pickguard")
                });
            v.push((pid, e.path(), alive));
        }
    }
    v.sort();
    v
}

/// `pickguard watch --stop`: stop every sensor on this host. Running ones
/// get SIGTERM (they unpin as they end); the pins of sensors that were
/// killed are drained (what they recorded is reported) and removed, which
/// detaches their programs. Returns how many sensors were stopped.
pub fn stop(mut on_event: impl FnMut(Event)) -> Result<usize, String> {
    if !is_bpffs("/sys/fs/bpf") {
        return Ok(0);
    }
    let sensors = pinned_sensors();
    let mut rep = Reporter {
        origins: Origins::default(),
        allow: &[],
        window_ns: 0,
        verbose: false,
        host: hostname(),
        listens: crate::listen::Listens::new(false),
    };
    for (pid, d, alive) in &sensors {
        if *alive {
            // SAFETY: kill(2) of a pid we just checked is a pickguard sensor.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGTERM);
            }
            for _ in 0..50 {
                if !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if d.exists() {
                return Err(format!(
                    "the sensor with pid {pid} did not stop within 5 s of SIGTERM"
                ));
            }
            continue;
        }
        drain_pinned(d, &mut |data| {
            if let Some(ev) = rep.handle(data, &|_, _| {}, true) {
                on_event(ev);
            }
        });
        remove_pins(d);
        if d.exists() {
            return Err(format!("could not remove {}", d.display()));
        }
    }
    let host = rep.host.clone();
    for ev in rep.listens.tick(&host, true) {
        on_event(ev);
    }
    remove_pins(Path::new(STATE_DIR));
    Ok(sensors.len())
}

fn lost_event(host: &str, alerts: u64, opens: u64) -> Event {
    Event {
        event: "events-lost",
        verdict: "detected",
        lost_alerts: Some(alerts),
        lost_opens: Some(opens),
        hostname: host.to_owned(),
        ts_ns: boot_ns(),
        unix_time: unix_time(),
        ..Event::default()
    }
}

fn others_unattended_exist() -> bool {
    is_bpffs("/sys/fs/bpf") && pinned_sensors().iter().any(|s| !s.2)
}

/// Load, attach, and report events until `on_event` returns false or the
/// process is interrupted. `ready` is called once the sensor is live.
pub fn watch(
    opts: &WatchOptions,
    ready: impl FnOnce(&Mechanism),
    mut on_event: impl FnMut(Event) -> bool,
) -> Result<(), String> {
    opts.rules.validate()?;
    // Only enforcement is worth keeping alive without a reader.
    let pinning = opts.pin && opts.enforce;
    if pinning {
        ensure_bpffs()?;
    }
    // Strongest mechanism first: BPF LSM (deny the exec). Many kernels
    // refuse LSM programs; then load again without it and kill at exec from
    // the tracepoint instead.
    let mut lsm_error = None;
    let mut object = MaybeUninit::uninit();
    let mut object2 = MaybeUninit::uninit();
    let mut object3 = MaybeUninit::uninit();
    let with_lsm = opts.enforce;
    // The LSM attempt is a probe: keep libbpf's verifier log for real failures only.
    let previous = if with_lsm {
        libbpf_rs::set_print(None)
    } else {
        None
    };
    if pinning {
        std::fs::create_dir_all(STATE_DIR).map_err(|e| format!("creating {STATE_DIR}: {e}"))?;
    }
    let first = open_and_load(&mut object, opts, with_lsm, pinning);
    if with_lsm {
        libbpf_rs::set_print(previous);
    }
    let mut skel = match first {
        Ok(s) => s,
        Err(e) if with_lsm => {
            lsm_error = Some(
                e.split(" (pickguard watch needs")
                    .next()
                    .unwrap_or(&e)
                    .replace(
                        "loading the BPF program: ",
                        "the kernel refused the LSM program: ",
                    ),
            );
            match open_and_load(&mut object2, opts, false, pinning) {
                Ok(s) => s,
                Err(e) if pinning => {
                    // State pinned by an incompatible (older) sensor: start
                    // from a fresh table rather than not at all.
                    eprintln!(
                        "pickguard watch: loading with the shared state in {STATE_DIR} failed ({e}); retrying once with a fresh one"
                    );
                    remove_pins(Path::new(STATE_DIR));
                    let _ = std::fs::create_dir_all(STATE_DIR);
                    open_and_load(&mut object3, opts, false, pinning)?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let found = fill_tables(&skel, &opts.rules)?;
    ensure_tracefs()?;
    skel.attach()
        .map_err(|e| format!("attaching the BPF programs: {e}"))?;
    let armed = prime_running(&skel.maps.states, &opts.rules);
    install_stop_handlers();

    let mut rep = Reporter {
        origins: Origins::default(),
        allow: &opts.allow,
        window_ns: opts.rules.window.saturating_mul(1_000_000_000),
        verbose: opts.verbose,
        host: hostname(),
        listens: crate::listen::Listens::new(opts.public_only),
    };
    // A previous sensor that was killed left its programs pinned (still
    // enforcing): ours are attached now, so report what it recorded and
    // let it go, with no moment unguarded.
    let mut stopped = false;
    let others = if is_bpffs("/sys/fs/bpf") {
        pinned_sensors()
    } else {
        Vec::new()
    };
    let running = others.iter().filter(|s| s.2).count();
    let left: Vec<PathBuf> = others
        .into_iter()
        .filter(|s| !s.2 && pinning)
        .map(|s| s.1)
        .collect();
    if !pinning && others_unattended_exist() {
        eprintln!(
            "pickguard watch: a killed sensor's programs are still pinned and enforcing; an enforcing sensor takes them over, `pickguard watch --stop` removes them"
        );
    }
    for d in &left {
        drain_pinned(d, &mut |data| {
            if !stopped
                && let Some(ev) = rep.handle(data, &|_, _| {}, true)
                && !on_event(ev)
            {
                stopped = true;
            }
        });
        remove_pins(d);
    }
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{PIN_PREFIX}{}", std::process::id()));
    if pinning {
        std::fs::create_dir_all(&pin_dir)
            .map_err(|e| format!("creating {}: {e}", pin_dir.display()))?;
        let links = &mut skel.links;
        let pin = |l: Option<&mut libbpf_rs::Link>, name: &str| -> Result<(), String> {
            if let Some(l) = l {
                l.pin(pin_dir.join(name))
                    .map_err(|e| format!("pinning {name}: {e}"))?;
            }
            Ok(())
        };
        pin(links.on_openat.as_mut(), "on_openat")?;
        pin(links.on_exec.as_mut(), "on_exec")?;
        pin(links.on_fork.as_mut(), "on_fork")?;
        pin(links.on_exit.as_mut(), "on_exit")?;
        pin(links.on_signal.as_mut(), "on_signal")?;
        pin(links.deny_exec.as_mut(), "deny_exec")?;
        pin(links.on_ptrace.as_mut(), "on_ptrace")?;
        pin(links.on_vm_writev.as_mut(), "on_vm_writev")?;
        pin(links.on_clock_settime.as_mut(), "on_clock_settime")?;
        pin(links.on_settimeofday.as_mut(), "on_settimeofday")?;
        pin(links.on_clock_adjtime.as_mut(), "on_clock_adjtime")?;
        pin(links.on_adjtimex.as_mut(), "on_adjtimex")?;
        pin(links.on_open.as_mut(), "on_open")?;
        pin(links.on_openat2.as_mut(), "on_openat2")?;
        pin(links.on_listen.as_mut(), "on_listen")?;
        skel.maps
            .events
            .pin(pin_dir.join("events"))
            .map_err(|e| format!("pinning the event ring: {e}"))?;
        skel.maps
            .opens
            .pin(pin_dir.join("opens"))
            .map_err(|e| format!("pinning the open ring: {e}"))?;
    }
    let mechanism = if opts.enforce && lsm_error.is_none() {
        Mechanism {
            name: "bpf-lsm-deny",
            description: "the exec is refused with EPERM by a BPF LSM hook (bprm_check_security)"
                .into(),
        }
    } else if opts.enforce {
        Mechanism {
            name: "bpf-sigkill-at-exec",
            description: format!(
                "the program is killed by the BPF program at exec, before its first instruction; BPF LSM denial is unavailable on this kernel ({})",
                lsm_error.as_deref().unwrap_or("")
            ),
        }
    } else {
        Mechanism {
            name: "detect-only",
            description: "alerts only; nothing is blocked (use --enforce)".into(),
        }
    };
    let mut mechanism = mechanism;
    mechanism.description.push_str(&format!(
        "; {} shell and network-tool and {} Python executables identified; {} running interpreter(s) already holding a model armed{}",
        found.iter().filter(|f| f.1 != K_PYTHON).count(),
        found.iter().filter(|f| f.1 == K_PYTHON).count(),
        armed,
        if pinning {
            format!("; pinned at {}: enforcement survives this process being killed (`pickguard watch --stop` removes it)", pin_dir.display())
        } else {
            String::new()
        }
    ));
    if running > 0 {
        mechanism
            .description
            .push_str(&format!("; {running} other sensor(s) running"));
    }
    ready(&mechanism);
    if stopped {
        if pinning {
            remove_pins(&pin_dir);
        }
        return Ok(());
    }
    let stop = RefCell::new(false);
    let allowed = &skel.maps.allowed;
    let grant = |pid: u32, v: u32| {
        let _ = allowed.update(&pid.to_ne_bytes(), &v.to_ne_bytes(), MapFlags::ANY);
    };
    let rep = RefCell::new(rep);
    let on_event = RefCell::new(on_event);
    let deliver = |data: &[u8]| {
        if *stop.borrow() {
            return 1;
        }
        if let Some(ev) = rep.borrow_mut().handle(data, &grant, false)
            && !(on_event.borrow_mut())(ev)
        {
            *stop.borrow_mut() = true;
            return 1;
        }
        0
    };
    let mut rb = RingBufferBuilder::new();
    // Model opens first in each poll: an alert then finds its models known.
    rb.add(&skel.maps.opens, deliver)
        .map_err(|e| format!("ring buffer: {e}"))?;
    rb.add(&skel.maps.events, deliver)
        .map_err(|e| format!("ring buffer: {e}"))?;
    let rb = rb.build().map_err(|e| format!("ring buffer: {e}"))?;
    let mut result = Ok(());
    let mut lost_seen = [0u64; 2];
    let host = hostname();
    while !*stop.borrow() && !STOP.load(Ordering::SeqCst) {
        // Events the kernel could not queue are reported as such.
        let mut lost_now = [0u64; 2];
        for (i, slot) in lost_now.iter_mut().enumerate() {
            if let Ok(Some(v)) = skel
                .maps
                .lost
                .lookup(&(i as u32).to_ne_bytes(), MapFlags::ANY)
            {
                *slot = u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8]));
            }
        }
        if lost_now != lost_seen {
            let ev = lost_event(
                &host,
                lost_now[0].saturating_sub(lost_seen[0]),
                lost_now[1].saturating_sub(lost_seen[1]),
            );
            lost_seen = lost_now;
            if !(on_event.borrow_mut())(ev) {
                break;
            }
        }
        match rb.poll(Duration::from_millis(200)) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) => {
                result = Err(format!("reading events: {e}"));
                break;
            }
        }
        // Listens are judged once listen(2) has returned (at most one
        // poll interval after they are due).
        let due = rep.borrow_mut().listens.tick(&host, false);
        for ev in due {
            if !(on_event.borrow_mut())(ev) {
                *stop.borrow_mut() = true;
                break;
            }
        }
    }
    // An orderly end: this sensor's pins go with it (SIGHUP instead leaves
    // them, for a restart with no moment unguarded); the shared state goes
    // when no other sensor uses it.
    if pinning && !KEEP.load(Ordering::SeqCst) {
        remove_pins(&pin_dir);
        if pinned_sensors().is_empty() {
            remove_pins(Path::new(STATE_DIR));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_that_open_no_model_cannot_push_out_an_origin_that_did() {
        let me = std::process::id();
        let mut o = Origins::default();
        o.early(me);
        o.opened(me, 1, "/m/evil.pth".into());
        // Pids above the kernel's limit (4194304): never alive.
        for p in 0..(8 * ORIGINS_KEPT as u32) {
            o.early(5_000_000 + p);
        }
        assert!(o.info.len() <= 4 * ORIGINS_KEPT + 1, "{}", o.info.len());
        let facts = o.info(me);
        assert_eq!(
            facts.exe.as_deref(),
            std::env::current_exe()
                .ok()
                .as_deref()
                .and_then(|p| p.to_str())
        );
        assert_eq!(o.models[&me].back().unwrap().1, "/m/evil.pth");
    }
}
