//! `pickguard run`: load untrusted models in an unprivileged sandbox.
//!
//! The child restricts itself before it executes the program:
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
    /// Allow network access (sockets other than AF_UNIX, TCP).
    pub allow_network: bool,
}

/// One action the supervisor refused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Blocked {
    pub pid: u32,
    pub what: String,
}

/// Result of a sandboxed run.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code as a shell reports it (128 + signal when killed).
    pub code: i32,
    pub blocked: Vec<Blocked>,
    /// What the kernel could enforce, in words.
    pub protections: Vec<String>,
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

/// Describe what will be enforced on this kernel.
pub fn protections(policy: &Policy) -> Vec<String> {
    let abi = landlock_abi();
    let mut p = Vec::new();
    if abi >= 1 {
        p.push(format!(
            "files: Landlock ABI {abi}: reads limited to system and allowed paths, writes to {}",
            if policy.allow_write.is_empty() {
                "nowhere".into()
            } else {
                format!("{} allowed path(s)", policy.allow_write.len())
            }
        ));
        p.push("programs: only the program itself may be executed (Landlock and seccomp)".into());
    } else {
        p.push("files: NOT protected (Landlock unavailable on this kernel)".into());
        p.push("programs: only the program itself may be executed (seccomp)".into());
    }
    if policy.allow_network {
        p.push("network: allowed (--allow-network)".into());
    } else if abi >= 4 {
        p.push("network: denied (seccomp for non-UNIX sockets, Landlock for TCP)".into());
    } else {
        p.push("network: denied for new sockets (seccomp); Landlock TCP rules unavailable".into());
    }
    if abi >= 6 {
        p.push("signals and abstract UNIX sockets: scoped to the sandbox (Landlock ABI 6)".into());
    }
    p
}

fn interpreter_dirs(program: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // The program's prefix (venv or install) and the prefix of what it resolves to.
    for p in [
        program.to_path_buf(),
        program
            .canonicalize()
            .unwrap_or_else(|_| program.to_path_buf()),
    ] {
        if let Some(prefix) = p.parent().and_then(Path::parent) {
            dirs.push(prefix.to_path_buf());
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
                && let Some(base) = Path::new(home).parent()
            {
                dirs.push(base.to_path_buf());
            }
        }
    }
    dirs
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

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The classic-BPF filter: execs to the supervisor, non-UNIX sockets to
/// the supervisor (or allowed with --allow-network), everything else allowed.
fn filter(allow_network: bool) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let socket_rule = if allow_network {
        SECCOMP_RET_ALLOW
    } else {
        SECCOMP_RET_USER_NOTIF
    };
    vec![
        stmt(LD_W_ABS, 4),                                 // 0: arch
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),                // 1
        stmt(RET, SECCOMP_RET_KILL_PROCESS),               // 2
        stmt(LD_W_ABS, 0),                                 // 3: nr
        jump(JGE, 0x4000_0000, 0, 1),                      // 4: x32 ABI
        stmt(RET, SECCOMP_RET_ERRNO | libc::EPERM as u32), // 5
        jump(JEQ, libc::SYS_execve as u32, 3, 0),          // 6
        jump(JEQ, libc::SYS_execveat as u32, 2, 0),        // 7
        jump(JEQ, libc::SYS_socket as u32, 2, 0),          // 8
        stmt(RET, SECCOMP_RET_ALLOW),                      // 9
        stmt(RET, SECCOMP_RET_USER_NOTIF),                 // 10: exec
        stmt(LD_W_ABS, 16),                                // 11: socket domain (args[0])
        jump(JEQ, libc::AF_UNIX as u32, 0, 1),             // 12
        stmt(RET, SECCOMP_RET_ALLOW),                      // 13
        stmt(RET, socket_rule),                            // 14
    ]
}

/// In the child, after fork: Landlock, then seccomp; report the listener fd.
fn restrict_child(
    policy: &Policy,
    program: &Path,
    reads: &[PathBuf],
    report_fd: RawFd,
) -> std::io::Result<()> {
    let err = |e: String| std::io::Error::other(e);
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
    // Tell the supervisor our pid and the listener's fd number.
    // SAFETY: getpid has no preconditions.
    let msg = format!("{} {}\n", unsafe { libc::getpid() }, listener);
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
fn supervise(listener: OwnedFd, report: impl Fn(Blocked)) {
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
            report(Blocked {
                pid: n.pid,
                what: format!("execute {}", read_child_str(n.pid, ptr)),
            });
            resp.error = -libc::EPERM;
        } else if nr == libc::SYS_socket {
            report(Blocked {
                pid: n.pid,
                what: format!("open a network socket ({})", domain_name(n.data.args[0])),
            });
            resp.error = -libc::EACCES;
        } else {
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
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
    if std::fs::read(&program)
        .map(|b| b.starts_with(b"#!"))
        .unwrap_or(false)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is a script (a pyenv shim?), which would need a second program to run; give the interpreter itself, e.g. the output of: python3 -c 'import sys; print(sys.executable)'",
                program.display()
            ),
        ));
    }
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
    reads.extend(policy.allow_read.iter().cloned());
    // Arguments that name existing files (the script, the model) are readable.
    for a in &argv[1..] {
        let p = Path::new(a);
        if p.exists() {
            reads.push(std::path::absolute(p)?);
        }
    }
    // A private scratch directory as TMPDIR (libraries such as torch need
    // one); it is removed afterwards, so nothing written there survives.
    let scratch = std::env::temp_dir().join(format!(
        "pickguard-run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir(&scratch)?;
    let mut policy = policy.clone();
    policy.allow_write.push(scratch.clone());
    let policy = &policy;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (tx, rx) = mpsc::channel::<Blocked>();
    let rd_file = std::fs::File::from(rd);
    let supervisor = std::thread::spawn(move || {
        // One line, not EOF: the parent still holds the write end while the
        // child's first exec waits for this supervisor.
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(rd_file), &mut line);
        let mut it = line
            .split_whitespace()
            .map(|x| x.parse::<i32>().unwrap_or(-1));
        let (Some(pid), Some(fd)) = (it.next(), it.next()) else {
            return;
        };
        let Ok(listener) = steal_fd(pid, fd) else {
            return;
        };
        supervise(listener, move |b| {
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
    cmd.args(&argv[1..]).env("TMPDIR", &scratch);
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // system calls and small allocations (this process has no other threads
    // holding locks at this point besides the supervisor, which is blocked in read).
    unsafe {
        cmd.pre_exec(move || {
            // Keep the write end open across fork only in the child: clear CLOEXEC is not
            // needed, we write before exec.
            restrict_child(&policy2, &program2, &reads, wr_raw)
        });
    }
    let spawned = cmd.spawn();
    drop(wr);
    let cleanup = || {
        let _ = std::fs::remove_dir_all(&scratch);
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = supervisor.join();
            cleanup();
            return Err(e);
        }
    };
    let status = child.wait();
    let _ = supervisor.join();
    cleanup();
    let status = status?;
    let blocked: Vec<Blocked> = rx.try_iter().collect();
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let mut prot = protections(policy);
    prot.push("a private TMPDIR, deleted afterwards, is the one place writable by default".into());
    Ok(Outcome {
        code,
        blocked,
        protections: prot,
    })
}
