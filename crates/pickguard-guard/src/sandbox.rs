//! `pickguard run`: load untrusted models in an unprivileged sandbox.
//!
//! With namespaces (see `ns.rs`: private root, PID/network/IPC/UTS
//! namespaces, root dropped to uid 65534), then, in every case, the child
//! restricts itself before it executes the program:
//! * Landlock: read-only access beneath the system directories, the
//!   interpreter's prefix, and the paths given (the script and model among
//!   the arguments are added automatically); write access only where allowed;
//!   execute only the program and its ELF loader; TCP bind/connect denied
//!   (ABI 4+); signals and abstract sockets scoped (ABI 6+).
//! * seccomp with a user-notification listener: every `execve`/`execveat`
//!   and every non-`AF_UNIX` `socket` goes to the supervisor (this process),
//!   which lets the first exec (the program itself) through and refuses the
//!   rest, reporting each in plain words.
//!
//! `unsafe` here is confined to thin system-call wrappers (seccomp, pidfd,
//! ioctl, prctl) that have no safe binding in the libraries this project uses.
#![allow(unsafe_code)]

use landlock::{
    ABI, Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

/// What the sandbox allows.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub allow_read: Vec<PathBuf>,
    pub allow_write: Vec<PathBuf>,
    /// Allow network access (sockets other than AF_UNIX, TCP; no network namespace).
    pub allow_network: bool,
    /// Environment passed in besides the safe set: `NAME` (from the caller) or `NAME=VALUE`.
    pub env: Vec<String>,
    /// Kill the sandbox after this long.
    pub timeout: Option<std::time::Duration>,
    /// Memory limit in bytes: a cgroup's where one can be made (every
    /// page counted), else the address space (RLIMIT_AS).
    pub memory: Option<u64>,
    /// Most processes the sandbox may have at once: a cgroup's pids limit,
    /// else RLIMIT_NPROC (counted per uid).
    pub pids: Option<u64>,
    /// Do not use namespaces (Landlock + seccomp only).
    pub no_namespaces: bool,
    /// Size of the private tmp (and /dev/shm); default [`DEFAULT_TMP_SIZE`].
    pub tmp_size: Option<u64>,
}

/// The private tmp's default size: tmpfs is memory.
pub const DEFAULT_TMP_SIZE: u64 = 1 << 30;

/// One action the supervisor refused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Blocked {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// `exec`, `exec-anonymous` (memfd or deleted file), `socket`.
    pub kind: &'static str,
    pub pid: u32,
    /// What it tried, in words.
    pub what: String,
    /// The program or address family.
    pub target: String,
    /// A library probe every `import torch` makes (ldconfig, a C compiler
    /// for `ctypes.util.find_library`): refused, summarised, not counted.
    pub probe: bool,
}

/// Programs libraries run to look for shared libraries; refusing them is harmless.
const PROBES: &[&str] = &[
    "ldconfig",
    "ldconfig.real",
    "gcc",
    "cc",
    "x86_64-linux-gnu-gcc",
    "ld",
    "ld.bfd",
    "ld.gold",
    "objdump",
];

/// A library probe: a probe program looked up in a directory of the
/// sandbox's PATH or the system's (`dirs`), none of which the program can
/// write to; a payload's `gcc` in its tmp is not a probe.
fn is_probe(program: &str, dirs: &[String]) -> bool {
    let (dir, base) = program.rsplit_once('/').unwrap_or(("", program));
    (dir.is_empty() || dirs.iter().any(|d| d.trim_end_matches('/') == dir))
        && PROBES.contains(&base)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Result of a sandboxed run.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code as a shell reports it (128 + signal when killed, 124 on timeout).
    pub code: i32,
    pub blocked: Vec<Blocked>,
    /// What the kernel could enforce, in words.
    pub protections: Vec<String>,
    pub timed_out: bool,
    /// Whether the namespaces (mount view, PID, network...) were used.
    pub namespaces: bool,
    /// The kernel killed a sandboxed process for exceeding `--memory`
    /// (known where a cgroup enforced it).
    pub oom_killed: bool,
}

/// Landlock ABI version of the running kernel (0: unavailable).
pub fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns an integer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if r < 0 { 0 } else { r as i32 }
}

fn abi_of(v: i32) -> ABI {
    match v {
        i32::MIN..=1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        _ => ABI::V7,
    }
}

/// Describe what will be enforced on this kernel, for `policy` as given
/// (`no_namespaces` says whether namespaces will be used: decide it with
/// [`crate::ns::available`] first, so that this banner and the run agree).
pub fn protections(policy: &Policy) -> Vec<String> {
    // Whether a cgroup can hold the limits: made and removed again.
    let group = crate::cgroup::Group::create(&group_name(), policy.memory, policy.pids);
    if let Ok(g) = &group {
        g.remove();
    }
    protections_for(policy, !policy.no_namespaces, group.map(|g| g.describe()))
}

fn group_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "pickguard-run-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// What enforces `--memory` and `--pids`, in words.
fn limits_line(policy: &Policy, group: Result<&String, &String>) -> Option<String> {
    if policy.memory.is_none() && policy.pids.is_none() {
        return None;
    }
    let what = [
        policy.memory.map(|m| format!("memory {m} bytes")),
        policy.pids.map(|p| format!("{p} processes")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    Some(match group {
        Ok(how) => format!("limits: {what}: {how}"),
        Err(why) => format!(
            "limits: {what}: by rlimits only (RLIMIT_AS limits address space, not memory; RLIMIT_NPROC counts the uid's processes everywhere) because no cgroup could be made ({why})"
        ),
    })
}

fn protections_for(policy: &Policy, ns: bool, group: Result<String, String>) -> Vec<String> {
    let abi = landlock_abi();
    let mut p = Vec::new();
    if let Some(l) = limits_line(policy, group.as_ref()) {
        p.push(l);
    }
    if ns {
        p.push("view: a private root with only system directories, the interpreter, the program's files and allowed paths; other files and pathname UNIX sockets (docker.sock, D-Bus, agents) do not exist inside".into());
        p.push("processes: new session and PID namespace; every process left when the program ends, or when run is stopped, is killed".into());
        if getuid_is_root() {
            p.push(
                "identity: runs as uid 65534 with no capabilities outside (root dropped)".into(),
            );
        } else {
            p.push(
                "identity: the caller's uid in a user namespace, no capabilities outside".into(),
            );
        }
    } else {
        p.push("view: NOT isolated (user namespaces unavailable): files are limited by Landlock only, pathname UNIX sockets stay reachable".into());
        p.push("processes: new session; processes left behind are killed when the program ends (subreaper), but NOT if run itself is killed".into());
        if getuid_is_root() {
            p.push("identity: NOT dropped: the program runs as root (root files such as /etc/shadow readable)".into());
        }
    }
    if abi >= 1 {
        p.push(format!(
            "files: Landlock ABI {abi}: reads limited to system and allowed paths, writes to the private tmp{}",
            if policy.allow_write.is_empty() {
                String::new()
            } else {
                format!(" and {} allowed path(s)", policy.allow_write.len())
            }
        ));
        p.push("programs: only the program itself may be executed (Landlock and seccomp)".into());
    } else {
        p.push("files: NOT limited by Landlock (unavailable on this kernel)".into());
        p.push("programs: only the program itself may be executed (seccomp)".into());
    }
    if policy.allow_network {
        p.push("network: allowed (--allow-network)".into());
    } else if ns {
        p.push("network: denied (empty network namespace; seccomp refuses non-UNIX sockets and io_uring)".into());
    } else if abi >= 4 {
        p.push(
            "network: denied (seccomp refuses non-UNIX sockets and io_uring; Landlock TCP rules)"
                .into(),
        );
    } else {
        p.push("network: denied for new sockets (seccomp; io_uring refused); Landlock TCP rules unavailable".into());
    }
    p.push("kernel: io_uring, bpf, perf, ptrace, mounts, namespaces, keyrings, modules, device nodes and terminal injection (TIOCSTI) refused by seccomp".into());
    if abi >= 6 {
        p.push("signals and abstract UNIX sockets: scoped to the sandbox (Landlock ABI 6)".into());
    }
    p.push("environment: scrubbed (PATH, LANG, LC_*, TERM, TZ kept; HOME and TMPDIR point at the private tmp; --env passes more)".into());
    p
}

fn getuid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A directory that is an interpreter's installation prefix (or a venv):
/// it has `pyvenv.cfg` or a `lib/pythonX.Y` directory. Never `/`, never a
/// directory that merely holds the program (a home directory, `/sbin`).
fn is_prefix(dir: &Path) -> bool {
    if dir.parent().is_none() {
        return false;
    }
    dir.join("pyvenv.cfg").is_file()
        || std::fs::read_dir(dir.join("lib")).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("python"))
        })
}

fn interpreter_dirs(program: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // The program's prefix (venv or install) and the prefix of what it
    // resolves to (canonical: /bin/python3 is /usr/bin/python3 on merged /usr).
    let canonical = program
        .canonicalize()
        .unwrap_or_else(|_| program.to_path_buf());
    for p in [program.to_path_buf(), canonical] {
        if let Some(prefix) = p.parent().and_then(Path::parent)
            && let Ok(prefix) = prefix.canonicalize()
            && is_prefix(&prefix)
        {
            dirs.push(prefix);
        }
    }
    // A venv names its base installation in pyvenv.cfg.
    if let Some(prefix) = program.parent().and_then(Path::parent)
        && let Ok(cfg) = std::fs::read_to_string(prefix.join("pyvenv.cfg"))
    {
        for line in cfg.lines() {
            if let Some(home) = line
                .split_once('=')
                .filter(|(k, _)| k.trim() == "home")
                .map(|(_, v)| v.trim())
                && let Ok(home) = Path::new(home).canonicalize()
                && let Some(base) = home.parent()
                && is_prefix(base)
            {
                dirs.push(base.to_path_buf());
            }
        }
    }
    dirs
}

/// `p` made absolute with `.` and `..` removed lexically (no file system
/// access), so that it can never climb out of the new root when joined to it.
fn normalize_abs(p: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(p)?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// Where an exposed path appears inside: its canonical path (symlinks and
/// `..` resolved, so Landlock and the bind agree), and also its lexical
/// spelling when that differs, so the program finds it by either name.
/// The root directory itself is never exposed.
fn expose_paths(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(c) = p.canonicalize()
        && c.parent().is_some()
    {
        v.push(c);
    }
    if let Ok(n) = normalize_abs(p)
        && n.parent().is_some()
        && !v.contains(&n)
    {
        v.push(n);
    }
    v
}

/// Find a program on PATH (the sandbox may not read PATH directories itself).
pub fn resolve_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The ELF interpreter named in a binary's PT_INTERP, if any.
fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return None;
    }
    let u16a = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64a = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or([0; 8])) as usize;
    let (phoff, phentsize, phnum) = (u64a(32), u16a(54), u16a(56));
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        if h + 40 > data.len() {
            break;
        }
        if u32::from_le_bytes(data[h..h + 4].try_into().ok()?) == 3 {
            let (off, size) = (u64a(h + 8), u64a(h + 32));
            let s = data.get(off..off + size)?;
            let s = s.split(|&b| b == 0).next()?;
            return Some(PathBuf::from(String::from_utf8_lossy(s).into_owned()));
        }
    }
    None
}

// --- seccomp ------------------------------------------------------------

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_uint = 1 << 3;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

#[repr(C)]
#[derive(Default)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Default)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
#[derive(Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// A classic-BPF program built from rules, each a block that either returns
/// or falls through to the next rule. Jumps inside a block name their target
/// as "the end of this block" so no offset is counted by hand.
struct Bpf {
    out: Vec<libc::sock_filter>,
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

/// One instruction of a block; `Skip` jumps past the rest of the block.
enum I {
    Ld(u32),
    And(u32),
    /// if A == k: continue, else skip the block
    EqElseSkip(u32),
    /// if A == k: skip the block, else continue
    NeElseSkip(u32),
    /// if A & k: continue, else skip the block
    SetElseSkip(u32),
    Ret(u32),
}

impl Bpf {
    fn raw(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.out.push(libc::sock_filter { code, jt, jf, k });
    }
    fn block(&mut self, b: &[I]) {
        let n = b.len();
        for (i, ins) in b.iter().enumerate() {
            let skip = (n - i - 1) as u8;
            match *ins {
                I::Ld(o) => self.raw(LD_W_ABS, 0, 0, o),
                I::And(k) => self.raw(AND, 0, 0, k),
                I::EqElseSkip(k) => self.raw(JEQ, 0, skip, k),
                I::NeElseSkip(k) => self.raw(JEQ, skip, 0, k),
                I::SetElseSkip(k) => self.raw(JSET, 0, skip, k),
                I::Ret(k) => self.raw(RET, 0, 0, k),
            }
        }
    }
    /// `nr` returns `ret` whatever its arguments.
    fn syscall(&mut self, nr: i64, ret: u32) {
        self.block(&[I::Ld(NR), I::EqElseSkip(nr as u32), I::Ret(ret)]);
    }
}

fn errno(e: i32) -> u32 {
    SECCOMP_RET_ERRNO | (e as u32 & 0xffff)
}

/// Calls no model loader needs and every escape uses: kernel attack surface
/// (io_uring, whose IORING_OP_SOCKET/CONNECT bypass socket filters; bpf;
/// perf), other processes (ptrace, process_vm_*), keyrings, mounts and
/// namespaces, module and kexec loading, handle-based opens (a classic
/// container escape), device nodes.
const DENIED: &[i64] = &[
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_userfaultfd,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_chroot,
];

const NS_FLAGS: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32;

/// The seccomp filter. Execs and non-UNIX sockets go to the supervisor
/// (user notification); the calls in [`DENIED`], terminal injection ioctls,
/// device nodes, namespace-creating clones and personality changes fail
/// with EPERM; everything else is allowed.
fn filter(allow_network: bool) -> Vec<libc::sock_filter> {
    let mut b = Bpf { out: Vec::new() };
    // Only the native ABI: anything else (x32, i386 via int 0x80) is killed.
    b.block(&[
        I::Ld(ARCH),
        I::NeElseSkip(AUDIT_ARCH_X86_64),
        I::Ret(SECCOMP_RET_KILL_PROCESS),
    ]);
    b.raw(LD_W_ABS, 0, 0, NR);
    b.raw(JGE, 0, 1, 0x4000_0000);
    b.raw(RET, 0, 0, errno(libc::EPERM));
    b.syscall(libc::SYS_execve, SECCOMP_RET_USER_NOTIF);
    b.syscall(libc::SYS_execveat, SECCOMP_RET_USER_NOTIF);
    // socket(): AF_UNIX allowed; anything else to the supervisor (denied) unless allowed.
    if !allow_network {
        b.block(&[
            I::Ld(NR),
            I::EqElseSkip(libc::SYS_socket as u32),
            I::Ld(arg_lo(0)),
            I::NeElseSkip(libc::AF_UNIX as u32),
            I::Ret(SECCOMP_RET_USER_NOTIF),
        ]);
    }
    // Refused calls go to the supervisor, which refuses them (EPERM) and
    // reports each: a load that tried them exits 126.
    for nr in DENIED {
        b.syscall(*nr, SECCOMP_RET_USER_NOTIF);
    }
    // The parent-death signal chains the sandbox to `run`; clearing it
    // would let the program outlive `run`.
    b.block(&[
        I::Ld(NR),
        I::EqElseSkip(libc::SYS_prctl as u32),
        I::Ld(arg_lo(0)),
        I::EqElseSkip(libc::PR_SET_PDEATHSIG as u32),
        I::Ret(SECCOMP_RET_USER_NOTIF),
    ]);
    // clone3 passes its flags in memory the filter cannot read: ENOSYS makes
    // libc fall back to clone(), whose flags it can.
    b.syscall(libc::SYS_clone3, errno(libc::ENOSYS));
    b.block(&[
        I::Ld(NR),
        I::EqElseSkip(libc::SYS_clone as u32),
        I::Ld(arg_lo(0)),
        I::SetElseSkip(NS_FLAGS),
        I::Ret(SECCOMP_RET_USER_NOTIF),
    ]);
    // Typing into the caller's terminal (CVE-2017-5226) or its console.
    for req in [libc::TIOCSTI as u32, libc::TIOCLINUX as u32] {
        b.block(&[
            I::Ld(NR),
            I::EqElseSkip(libc::SYS_ioctl as u32),
            I::Ld(arg_lo(1)),
            I::EqElseSkip(req),
            I::Ret(SECCOMP_RET_USER_NOTIF),
        ]);
    }
    // Device nodes (FIFOs and sockets stay possible).
    for (nr, arg) in [(libc::SYS_mknod, 1), (libc::SYS_mknodat, 2)] {
        for kind in [libc::S_IFCHR, libc::S_IFBLK] {
            b.block(&[
                I::Ld(NR),
                I::EqElseSkip(nr as u32),
                I::Ld(arg_lo(arg)),
                I::And(libc::S_IFMT),
                I::EqElseSkip(kind),
                I::Ret(SECCOMP_RET_USER_NOTIF),
            ]);
        }
    }
    // personality(): only the query (0xffffffff) and PER_LINUX (0) are allowed
    // (ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC weaken exploits' mitigations).
    b.block(&[
        I::Ld(NR),
        I::EqElseSkip(libc::SYS_personality as u32),
        I::Ld(arg_lo(0)),
        I::NeElseSkip(0),
        I::NeElseSkip(0xffff_ffff),
        I::Ret(SECCOMP_RET_USER_NOTIF),
    ]);
    b.raw(RET, 0, 0, SECCOMP_RET_ALLOW);
    b.out
}

/// In the child, after fork: Landlock, then seccomp; report the listener fd.
fn restrict_child(
    policy: &Policy,
    program: &Path,
    reads: &[PathBuf],
    report_fd: RawFd,
) -> std::io::Result<()> {
    let err = |e: String| std::io::Error::other(e);
    // Descriptors the caller left open (a file, a socket, a directory) must
    // not reach the program: every one from 3 up closes at exec.
    // SAFETY: close_range(3, ~0, CLOSE_RANGE_CLOEXEC) only sets flags.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let abi_v = landlock_abi();
    if abi_v >= 1 {
        let abi = abi_of(abi_v);
        let read = AccessFs::from_read(abi) & !AccessFs::Execute;
        let mut rs = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .map_err(|e| err(e.to_string()))?;
        if abi_v >= 4 && !policy.allow_network {
            rs = rs
                .handle_access(AccessNet::from_all(abi))
                .map_err(|e| err(e.to_string()))?;
        }
        if abi_v >= 6 {
            rs = rs
                .scope(Scope::from_all(abi))
                .map_err(|e| err(e.to_string()))?;
        }
        let mut created = rs.create().map_err(|e| err(e.to_string()))?;
        let add = |c: landlock::RulesetCreated,
                   p: &Path,
                   a: landlock::BitFlags<AccessFs>|
         -> Result<landlock::RulesetCreated, String> {
            match PathFd::new(p) {
                Ok(fd) => {
                    // A rule on a file may only carry file rights.
                    let a = if p.is_dir() {
                        a
                    } else {
                        a & AccessFs::from_file(abi)
                    };
                    c.add_rule(PathBeneath::new(fd, a))
                        .map_err(|e| e.to_string())
                }
                Err(_) => Ok(c), // a path that does not exist grants nothing
            }
        };
        for p in reads {
            created = add(created, p, read).map_err(err)?;
        }
        for p in &policy.allow_write {
            created = add(created, p, AccessFs::from_all(abi) & !AccessFs::Execute).map_err(err)?;
        }
        created = add(
            created,
            Path::new("/dev/null"),
            AccessFs::ReadFile | AccessFs::WriteFile,
        )
        .map_err(err)?;
        let mut exe = vec![program.to_path_buf()];
        if let Ok(c) = program.canonicalize() {
            exe.push(c);
        }
        if let Some(i) = elf_interpreter(
            &program
                .canonicalize()
                .unwrap_or_else(|_| program.to_path_buf()),
        ) {
            exe.push(i);
        }
        for p in &exe {
            created = add(created, p, AccessFs::Execute | AccessFs::ReadFile).map_err(err)?;
        }
        created.restrict_self().map_err(|e| err(e.to_string()))?;
    } else {
        // SAFETY: prctl with constant arguments; seccomp needs no_new_privs when unprivileged.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let prog = filter(policy.allow_network);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER, &fprog); fprog points at `prog`, alive here.
    let listener = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if listener < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Tell the supervisor the listener's fd number.
    let msg = format!("F {listener}\n");
    // SAFETY: report_fd is the write end of a pipe owned by this child.
    let n = unsafe { libc::write(report_fd, msg.as_ptr().cast(), msg.len()) };
    if n != msg.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: closing our copy of the pipe's write end.
    unsafe { libc::close(report_fd) };
    Ok(())
}

/// Take the child's listener fd (pidfd_getfd).
fn steal_fd(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pidfd is ours; pidfd_getfd duplicates the target's fd into this process.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) } as i32;
    // SAFETY: closing the pidfd we opened.
    unsafe { libc::close(pidfd) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `got` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(got) })
}

/// A NUL-terminated string from the child's memory (for reports only).
fn read_child_str(pid: u32, addr: u64) -> String {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return "?".into();
    };
    let mut buf = vec![0u8; 512];
    match f.read_at(&mut buf, addr) {
        Ok(n) => {
            buf.truncate(n);
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        }
        Err(_) => "?".into(),
    }
}

/// The name of a refused system call, for reports.
fn syscall_name(nr: i64, args: &[u64; 6]) -> String {
    let names: &[(i64, &str)] = &[
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_io_uring_enter, "io_uring_enter"),
        (libc::SYS_io_uring_register, "io_uring_register"),
        (libc::SYS_bpf, "bpf"),
        (libc::SYS_perf_event_open, "perf_event_open"),
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_process_vm_readv, "process_vm_readv"),
        (libc::SYS_process_vm_writev, "process_vm_writev"),
        (libc::SYS_keyctl, "keyctl"),
        (libc::SYS_add_key, "add_key"),
        (libc::SYS_request_key, "request_key"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_umount2, "umount2"),
        (libc::SYS_pivot_root, "pivot_root"),
        (libc::SYS_unshare, "unshare"),
        (libc::SYS_setns, "setns"),
        (libc::SYS_userfaultfd, "userfaultfd"),
        (libc::SYS_init_module, "init_module"),
        (libc::SYS_finit_module, "finit_module"),
        (libc::SYS_kexec_load, "kexec_load"),
        (libc::SYS_open_by_handle_at, "open_by_handle_at"),
        (libc::SYS_chroot, "chroot"),
        (libc::SYS_clone, "clone with new namespaces"),
        (libc::SYS_personality, "personality"),
        (libc::SYS_mknod, "mknod of a device"),
        (libc::SYS_mknodat, "mknodat of a device"),
        (libc::SYS_prctl, "prctl(PR_SET_PDEATHSIG)"),
    ];
    if nr == libc::SYS_ioctl {
        return match args[1] as u32 as libc::c_ulong {
            libc::TIOCSTI => "ioctl(TIOCSTI): typing into a terminal".into(),
            libc::TIOCLINUX => "ioctl(TIOCLINUX)".into(),
            r => format!("ioctl({r:#x})"),
        };
    }
    names
        .iter()
        .find(|(n, _)| *n == nr)
        .map(|(_, s)| (*s).to_owned())
        .unwrap_or_else(|| format!("system call {nr}"))
}

/// Strings from the sandboxed program (exec paths) made safe to print.
fn printable(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        let u = c as u32;
        if u < 0x20 || u == 0x7f || (0x80..0xa0).contains(&u) || (0x202a..=0x202e).contains(&u) {
            o.push_str(&format!("\\x{{{u:02x}}}"));
        } else {
            o.push(c);
        }
    }
    o
}

fn domain_name(d: u64) -> String {
    match d as i32 {
        libc::AF_INET => "AF_INET (IPv4)".into(),
        libc::AF_INET6 => "AF_INET6 (IPv6)".into(),
        libc::AF_NETLINK => "AF_NETLINK".into(),
        libc::AF_PACKET => "AF_PACKET (raw)".into(),
        x => format!("address family {x}"),
    }
}

/// Answer notifications until the listener closes (every sandboxed process exited).
fn supervise(listener: OwnedFd, probe_dirs: &[String], report: impl Fn(Blocked)) {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    let mut first_exec = true;
    loop {
        let mut n = SeccompNotif::default();
        // SAFETY: NOTIF_RECV fills a struct seccomp_notif we own.
        let r = unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &mut n as *mut SeccompNotif) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return; // ENOENT/EBADF: the filter's last user is gone
        }
        let mut resp = SeccompNotifResp {
            id: n.id,
            ..Default::default()
        };
        let nr = n.data.nr as i64;
        if (nr == libc::SYS_execve || nr == libc::SYS_execveat) && first_exec {
            first_exec = false;
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        } else if nr == libc::SYS_execve || nr == libc::SYS_execveat {
            let ptr = if nr == libc::SYS_execve {
                n.data.args[0]
            } else {
                n.data.args[1]
            };
            let mut target = printable(&read_child_str(n.pid, ptr));
            let mut kind = "exec";
            // fexecve / execveat(fd, "", AT_EMPTY_PATH): name what the fd is.
            if nr == libc::SYS_execveat && target.is_empty() {
                let link =
                    std::fs::read_link(format!("/proc/{}/fd/{}", n.pid, n.data.args[0] as i32))
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "?".into());
                target = link;
            }
            if target.starts_with("/memfd:") || target.ends_with(" (deleted)") {
                kind = "exec-anonymous";
            }
            let what = if kind == "exec-anonymous" {
                format!("execute anonymous code ({target})")
            } else {
                format!("execute {target}")
            };
            report(Blocked {
                time: now_secs(),
                kind,
                pid: n.pid,
                probe: kind == "exec" && is_probe(&target, probe_dirs),
                what,
                target,
            });
            resp.error = -libc::EPERM;
        } else if nr == libc::SYS_socket {
            let target = domain_name(n.data.args[0]);
            report(Blocked {
                time: now_secs(),
                kind: "socket",
                pid: n.pid,
                what: format!("open a network socket ({target})"),
                target,
                probe: false,
            });
            resp.error = -libc::EACCES;
        } else {
            // Everything else the filter sends here is a refused kernel call.
            let target = syscall_name(nr, &n.data.args);
            report(Blocked {
                time: now_secs(),
                kind: "syscall",
                pid: n.pid,
                what: format!("call {target}"),
                target,
                probe: false,
            });
            resp.error = -libc::EPERM;
        }
        // SAFETY: NOTIF_SEND reads the response struct we own.
        unsafe {
            libc::ioctl(
                fd,
                SECCOMP_IOCTL_NOTIF_SEND,
                &resp as *const SeccompNotifResp,
            )
        };
    }
}

/// The environment inside: a small safe set, plus what the policy passes.
/// Secrets in the caller's environment (cloud keys, tokens) stay outside.
fn sandbox_env(policy: &Policy, tmp: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for k in ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ"] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.into(), v));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    let t = tmp.display().to_string();
    env.push(("HOME".into(), t.clone()));
    env.push(("TMPDIR".into(), t));
    for e in &policy.env {
        match e.split_once('=') {
            Some((k, v)) => env.push((k.into(), v.into())),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push((e.clone(), v));
                }
            }
        }
    }
    env
}

/// Enter the cgroup (its `cgroup.procs` files): the first thing the
/// program does, before it can run anything.
fn enter_group(procs: &[std::ffi::CString]) -> std::io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let me = format!("{}", unsafe { libc::getpid() });
    for p in procs {
        // SAFETY: open/write/close on a path we own the string of.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: writes our own buffer to the fd just opened.
        let n = unsafe { libc::write(fd, me.as_ptr().cast(), me.len()) };
        // SAFETY: closes the fd just opened.
        unsafe { libc::close(fd) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_limits(policy: &Policy, by_group: (bool, bool)) -> std::io::Result<()> {
    let set = |res: libc::__rlimit_resource_t, v: u64| -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    if let Some(m) = policy.memory.filter(|_| !by_group.0) {
        set(libc::RLIMIT_AS, m)?;
        // tmpfs and memfd pages are memory too, and not in the address space.
        set(libc::RLIMIT_FSIZE, m)?;
    }
    if let Some(p) = policy.pids.filter(|_| !by_group.1) {
        set(libc::RLIMIT_NPROC, p)?;
    }
    // No core dumps of a process that read a model (and maybe secrets).
    set(libc::RLIMIT_CORE, 0)
}

/// Run `argv` in the sandbox; blocked actions are passed to `on_block` as they happen.
pub fn run(
    argv: &[String],
    policy: &Policy,
    on_block: impl Fn(&Blocked) + Send + 'static,
) -> std::io::Result<Outcome> {
    let program = resolve_program(&argv[0]).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: command not found", argv[0]),
        )
    })?;
    let program = std::path::absolute(&program)?;
    let program = if std::fs::read(&program)
        .map(|b| b.starts_with(b"#!"))
        .unwrap_or(false)
    {
        // A pyenv shim or wrapper script: ask it (outside the sandbox) which
        // interpreter it runs, and run that instead.
        resolve_script_interpreter(&program)?
    } else {
        program
    };
    let mut reads: Vec<PathBuf> = [
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/bin",
        "/sbin",
        "/etc",
        "/proc",
        "/sys",
        "/dev/urandom",
        "/dev/random",
        "/dev/zero",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    reads.extend(interpreter_dirs(&program));
    for p in &policy.allow_read {
        reads.extend(expose_paths(p));
    }
    // Arguments that name existing files (the script, the model) are readable.
    for a in &argv[1..] {
        let p = Path::new(a);
        if p.exists() {
            reads.extend(expose_paths(p));
        }
    }
    let use_ns = !policy.no_namespaces && crate::ns::available().is_ok();
    // The writable scratch directory: a tmpfs inside the namespaces (gone
    // with them), or a directory removed afterwards without them.
    let scratch = if use_ns {
        PathBuf::from(crate::ns::PRIVATE_TMP)
    } else {
        let d = std::env::temp_dir().join(format!(
            "pickguard-run-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&d)?;
        d
    };
    let mut policy = policy.clone();
    policy.allow_write = policy
        .allow_write
        .iter()
        .flat_map(|p| expose_paths(p))
        .collect();
    policy.allow_write.push(scratch.clone());
    let policy = &policy;
    let plan = crate::ns::Plan {
        exposes: reads
            .iter()
            .filter(|p| !p.starts_with("/proc") && !p.starts_with("/sys") && !p.starts_with("/dev"))
            .map(|p| crate::ns::Expose {
                path: p.clone(),
                writable: false,
            })
            .chain(
                policy
                    .allow_write
                    .iter()
                    .filter(|p| **p != scratch)
                    .flat_map(|p| expose_paths(p))
                    .map(|path| crate::ns::Expose {
                        path,
                        writable: true,
                    }),
            )
            .chain(
                expose_paths(&program)
                    .into_iter()
                    .map(|path| crate::ns::Expose {
                        path,
                        writable: false,
                    }),
            )
            .collect(),
        cwd: std::env::current_dir()?,
        new_net: !policy.allow_network,
        tmp_size: policy.tmp_size.unwrap_or(DEFAULT_TMP_SIZE),
    };
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (tx, rx) = mpsc::channel::<Blocked>();
    let rd_file = std::fs::File::from(rd);
    // Where a library probe may be looked up: PATH and system directories,
    // minus anything the sandbox can write to.
    let writable: Vec<PathBuf> = policy.allow_write.clone();
    let probe_dirs: Vec<String> = sandbox_env(policy, &scratch)
        .iter()
        .filter(|(k, _)| k == "PATH")
        .flat_map(|(_, v)| v.split(':').map(str::to_owned).collect::<Vec<_>>())
        .chain(
            [
                "/usr/bin",
                "/bin",
                "/usr/sbin",
                "/sbin",
                "/usr/local/bin",
                "/usr/local/sbin",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        )
        .filter(|d| d.starts_with('/') && !writable.iter().any(|w| Path::new(d).starts_with(w)))
        .collect();
    let supervisor = std::thread::spawn(move || {
        // Two lines, in either order: "P pid" (the program's pid as this
        // process sees it) and "F fd" (its seccomp listener). Not EOF: the
        // parent still holds the write end while the program's first exec
        // waits for this supervisor.
        let (mut pid, mut fd) = (None, None);
        let mut reader = std::io::BufReader::new(rd_file);
        while pid.is_none() || fd.is_none() {
            let mut line = String::new();
            match std::io::BufRead::read_line(&mut reader, &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let mut it = line.split_whitespace();
            let (tag, v) = (it.next(), it.next().and_then(|x| x.parse::<i32>().ok()));
            match (tag, v) {
                (Some("P"), Some(v)) => pid = Some(v),
                (Some("F"), Some(v)) => fd = Some(v),
                _ => return,
            }
        }
        let (Some(pid), Some(fd)) = (pid, fd) else {
            return;
        };
        let Ok(listener) = steal_fd(pid, fd) else {
            return;
        };
        supervise(listener, &probe_dirs, move |b| {
            on_block(&b);
            let _ = tx.send(b);
        });
    });
    let policy2 = policy.clone();
    let program2 = program.clone();
    let wr_raw = {
        use std::os::fd::AsRawFd;
        wr.as_raw_fd()
    };
    let mut cmd = Command::new(&program);
    cmd.args(&argv[1..]).env_clear();
    for (k, v) in sandbox_env(policy, &scratch) {
        cmd.env(k, v);
    }
    let plan2 = plan.clone();
    // --memory/--pids in a cgroup where one can be made (the program enters
    // it first thing), rlimits otherwise.
    let group = crate::cgroup::Group::create(&group_name(), policy.memory, policy.pids);
    let group_err = group.as_ref().err().cloned();
    let group = group.ok();
    let by_group = group
        .as_ref()
        .map_or((false, false), |g| (g.memory, g.pids));
    let procs: Vec<std::ffi::CString> = group
        .iter()
        .flat_map(|g| g.procs.iter())
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok())
        .collect();
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // system calls and small allocations (this process has no other threads
    // holding locks at this point besides the supervisor, which is blocked in read).
    unsafe {
        cmd.pre_exec(move || {
            enter_group(&procs)?;
            if use_ns {
                crate::ns::enter(&plan2, wr_raw)?;
            } else {
                // A new session: no controlling terminal to type into.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let msg = format!("P {}\n", libc::getpid());
                libc::write(wr_raw, msg.as_ptr().cast(), msg.len());
            }
            set_limits(&policy2, by_group)?;
            restrict_child(&policy2, &program2, &reads, wr_raw)
        });
    }
    if !use_ns {
        // Orphans of the sandbox are re-parented to this process, which
        // kills them when the program ends (see kill_orphans).
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let spawned = cmd.spawn();
    drop(wr);
    let cleanup = || {
        if !use_ns {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        if let Some(g) = &group {
            // Nothing of the sandbox outlives it, namespaces or not.
            for _ in 0..100 {
                let left = g.members();
                if left.is_empty() {
                    break;
                }
                for pid in left {
                    // SAFETY: kill(2) on a process of the sandbox's cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            g.remove();
        }
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = supervisor.join();
            cleanup();
            return Err(e);
        }
    };
    // --timeout: kill the sandbox (with namespaces, killing the intermediate
    // kills the PID namespace through the parent-death signals).
    let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    if let Some(t) = policy.timeout {
        let pid = child.id() as i32;
        let flag = timed_out.clone();
        std::thread::spawn(move || {
            if done_rx.recv_timeout(t).is_err() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                // SAFETY: kill(2) on the child we started (and its group, when it leads one).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        });
    }
    let status = child.wait();
    let _ = done_tx.send(());
    // Without a PID namespace, what the program left behind dies now: its
    // session, and every orphan that was re-parented to us (the subreaper),
    // including daemons that made their own session.
    if !use_ns {
        // SAFETY: kill(2) on the process group the child led (setsid).
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        kill_orphans();
    }
    // The supervisor ends when the last sandboxed process is gone; wait for
    // it, but never forever.
    let (sup_tx, sup_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = supervisor.join();
        let _ = sup_tx.send(());
    });
    let stragglers = sup_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .is_err();
    let oom_killed = group.as_ref().is_some_and(|g| g.oom_killed());
    cleanup();
    let status = status?;
    let blocked: Vec<Blocked> = rx.try_iter().collect();
    let mut code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if timed_out.load(std::sync::atomic::Ordering::SeqCst) {
        code = 124;
    }
    let mut prot = protections_for(
        policy,
        use_ns,
        match (&group, group_err) {
            (Some(g), _) => Ok(g.describe()),
            (None, e) => Err(e.unwrap_or_default()),
        },
    );
    if stragglers {
        prot.push(
            "WARNING: sandboxed processes were still running 10 s after the program ended".into(),
        );
    }
    Ok(Outcome {
        code,
        blocked,
        protections: prot,
        timed_out: timed_out.load(std::sync::atomic::Ordering::SeqCst),
        namespaces: use_ns,
        oom_killed,
    })
}

/// Kill and reap every child of this process (orphans of the sandbox that
/// were re-parented here), until none is left; bounded.
fn kill_orphans() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for _ in 0..200 {
        let kids: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|st| {
                        // pid (comm) state ppid ...: comm may hold spaces.
                        let rest = &st[st.rfind(')')? + 2..];
                        rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                    })
                    == Some(me)
            })
            .collect();
        if kids.is_empty() {
            return;
        }
        for k in &kids {
            // SAFETY: kill(2) and waitpid(2) on our own children.
            unsafe {
                libc::kill(*k, libc::SIGKILL);
                libc::waitpid(*k, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The interpreter a wrapper script (a pyenv shim) really runs, asked of
/// the script itself, outside the sandbox.
fn resolve_script_interpreter(script: &Path) -> std::io::Result<PathBuf> {
    let out = Command::new(script)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let exe = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty());
    match exe {
        Some(p)
            if std::fs::read(&p)
                .map(|b| b.starts_with(b"\x7fELF"))
                .unwrap_or(false) =>
        {
            Ok(PathBuf::from(p))
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is a script, and asking it for sys.executable gave no interpreter; give the interpreter itself, e.g. the output of: python3 -c 'import sys; print(sys.executable)'",
                script.display()
            ),
        )),
    }
}
