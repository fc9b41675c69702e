//! Namespaces and the sandbox's view of the file system, bubblewrap-style,
//! without privileges.
//!
//! Run in the forked child before exec ([`enter`]):
//! 1. a new session (no controlling terminal);
//! 2. a new mount namespace (as root directly; otherwise inside a new user
//!    namespace mapping only the caller's own uid), in which a fresh tmpfs
//!    becomes the root: only the exposed paths are bind-mounted into it, at
//!    their own paths (system directories, the interpreter, the program's
//!    file arguments, allowed paths), plus a minimal `/dev`, `/proc`,
//!    `/sys`, and a private writable tmpfs. Nothing else of the host — no
//!    `/run`, no `/home`, no other `/tmp` — exists inside, so pathname UNIX
//!    sockets (docker.sock, D-Bus, ssh-agent) cannot be reached;
//! 3. as root: every privilege dropped (groups, gid, uid → 65534) before a
//!    user namespace is created, so root gains nothing inside;
//! 4. new network (empty: loopback down), IPC, UTS and PID namespaces; the
//!    process forks once more and the grandchild, pid 1 of the new PID
//!    namespace, becomes the program. When it exits, or when `run` dies
//!    (parent-death signals chain the two), the kernel kills every process
//!    left in the namespace: no daemon outlives the sandbox.
//!
//! `unsafe` is confined to the `fork`, `prctl` and `_exit` calls below (nix
//! marks fork unsafe; the child only makes system calls before exec).
#![allow(unsafe_code)]

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{ForkResult, Gid, Uid, chdir, fork, pivot_root, setresgid, setresuid};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The uid (and gid) a sandbox started by root runs as.
pub const NOBODY: u32 = 65534;

/// The private writable directory inside the sandbox (TMPDIR and HOME).
pub const PRIVATE_TMP: &str = "/tmp/pickguard-tmp";

/// One path made visible inside the sandbox, at the same path.
#[derive(Clone, Debug)]
pub struct Expose {
    pub path: PathBuf,
    pub writable: bool,
}

/// Everything [`enter`] needs, computed before fork.
#[derive(Clone, Debug)]
pub struct Plan {
    pub exposes: Vec<Expose>,
    pub cwd: PathBuf,
    pub new_net: bool,
    /// Size limit of the private tmp and of /dev/shm, in bytes.
    pub tmp_size: u64,
}

/// A failed step. Only the errno crosses back from the child to the
/// parent's spawn, so the step is also written to stderr (fd 2 is the
/// caller's) before exec fails.
fn fail(what: &str, e: std::io::Error) -> std::io::Error {
    let msg = format!("pickguard run: sandbox setup failed: {what}: {e}\n");
    // SAFETY: write(2) to fd 2 of a buffer we own.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    e
}

fn ctx<T>(what: &str, r: nix::Result<T>) -> std::io::Result<T> {
    r.map_err(|e| fail(what, std::io::Error::from(e)))
}

fn io_ctx<T>(what: &str, r: std::io::Result<T>) -> std::io::Result<T> {
    r.map_err(|e| fail(what, e))
}

fn write_file(path: &str, data: &str) -> std::io::Result<()> {
    io_ctx(
        path,
        File::options()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(data.as_bytes())),
    )
}

/// Map only our own ids into the user namespace just created.
fn map_self(uid: u32, gid: u32) -> std::io::Result<()> {
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
    write_file("/proc/self/gid_map", &format!("{gid} {gid} 1"))
}

/// Is `p` beneath one of `others` (strictly)?
fn beneath(p: &Path, others: &[&Path]) -> bool {
    others.iter().any(|o| p != *o && p.starts_with(o))
}

/// Create `dst` (a directory, or an empty file when `file`) inside the new
/// root, where every missing parent lies in the new root's tmpfs.
fn make_target(dst: &Path, file: bool) -> std::io::Result<()> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if file {
        if !dst.exists() {
            File::create(dst)?;
        }
    } else {
        std::fs::create_dir_all(dst)?;
    }
    Ok(())
}

/// Build the new root on a tmpfs mounted over `/tmp` and pivot into it.
fn build_root(plan: &Plan) -> std::io::Result<()> {
    ctx(
        "make mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    // Open everything first: the new root will hide /tmp.
    let mut exposes: Vec<&Expose> = plan.exposes.iter().collect();
    exposes.sort_by(|a, b| a.path.cmp(&b.path));
    exposes.dedup_by(|a, b| a.path == b.path);
    let mut opened: Vec<(&Expose, OwnedFd, std::fs::Metadata)> = Vec::new();
    for e in exposes {
        // Only absolute, normalised paths below the root (sandbox.rs makes
        // them so); anything else could climb out of the new root.
        if !e.path.is_absolute()
            || e.path.parent().is_none()
            || e.path.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            })
        {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&e.path) else {
            continue; // a path that does not exist exposes nothing
        };
        let fd = nix::fcntl::open(
            &e.path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        if let Ok(fd) = fd {
            opened.push((e, fd, meta));
        }
    }
    let devs: Vec<(&str, OwnedFd)> = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
    ]
    .into_iter()
    .filter_map(|d| {
        nix::fcntl::open(
            d,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(|fd| (d, fd))
    })
    .collect();
    let proc_fd = io_ctx(
        "open /proc",
        nix::fcntl::open(
            "/proc",
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(std::io::Error::from),
    )?;
    let sys_fd = nix::fcntl::open(
        "/sys",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok();
    let root = Path::new("/tmp");
    ctx(
        "mount the new root",
        mount(
            Some("tmpfs"),
            root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=64k"),
        ),
    )?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let bind = |fd: &OwnedFd, target: &Path, what: &Path| -> std::io::Result<()> {
        ctx(
            &format!("bind {}", what.display()),
            mount(
                Some(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd()))),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            ),
        )
    };
    // The skeleton /tmp (read-only to the program through Landlock) and the
    // private writable tmpfs inside it.
    io_ctx(
        "mkdir /tmp",
        std::fs::create_dir_all(inside(Path::new(PRIVATE_TMP))),
    )?;
    ctx(
        "mount the private tmp",
        mount(
            Some("tmpfs"),
            &inside(Path::new(PRIVATE_TMP)),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=1777,size={}", plan.tmp_size).as_str()),
        ),
    )?;
    let bound: Vec<&Path> = opened.iter().map(|(e, _, _)| e.path.as_path()).collect();
    for (e, fd, meta) in &opened {
        let target = inside(&e.path);
        if meta.file_type().is_symlink() {
            // Replicate the link (merged /usr: /bin -> usr/bin), never follow it.
            if !beneath(&e.path, &bound) && !target.exists() {
                if let Some(parent) = target.parent() {
                    io_ctx("mkdir", std::fs::create_dir_all(parent))?;
                }
                let to = io_ctx("readlink", std::fs::read_link(&e.path))?;
                io_ctx("symlink", std::os::unix::fs::symlink(to, &target))?;
            }
            continue;
        }
        // Beneath an exposed directory the target already exists (it is the
        // same tree); never create anything inside a bind mount.
        if beneath(&e.path, &bound) && std::fs::symlink_metadata(&target).is_err() {
            continue;
        }
        if !beneath(&e.path, &bound) {
            io_ctx(
                &format!("mkdir {}", e.path.display()),
                make_target(&target, !meta.is_dir()),
            )?;
        }
        bind(fd, &target, &e.path)?;
    }
    let dev = inside(Path::new("/dev"));
    io_ctx("mkdir /dev", std::fs::create_dir_all(dev.join("shm")))?;
    for (d, fd) in &devs {
        let t = inside(Path::new(d));
        io_ctx("mknod target", make_target(&t, true))?;
        bind(fd, &t, Path::new(d))?;
    }
    ctx(
        "mount /dev/shm",
        mount(
            Some("tmpfs"),
            &dev.join("shm"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=1777,size={}", plan.tmp_size).as_str()),
        ),
    )?;
    let p = inside(Path::new("/proc"));
    io_ctx("mkdir /proc", std::fs::create_dir_all(&p))?;
    bind(&proc_fd, &p, Path::new("/proc"))?;
    if let Some(s) = &sys_fd {
        let t = inside(Path::new("/sys"));
        io_ctx("mkdir /sys", std::fs::create_dir_all(&t))?;
        let _ = bind(s, &t, Path::new("/sys"));
    }
    // The working directory exists inside (empty unless exposed), so that
    // relative file arguments resolve.
    let cwd = inside(&plan.cwd);
    if std::fs::symlink_metadata(&cwd).is_err() && !beneath(&plan.cwd, &bound) {
        let _ = std::fs::create_dir_all(&cwd);
    }
    drop(opened);
    drop(devs);
    io_ctx("chdir new root", chdir(root).map_err(std::io::Error::from))?;
    ctx("pivot_root", pivot_root(".", "."))?;
    ctx("detach the old root", umount2(".", MntFlags::MNT_DETACH))?;
    io_ctx("chdir /", chdir("/").map_err(std::io::Error::from))?;
    Ok(())
}

/// In the forked child: enter the namespaces and the new root. Returns in
/// the grandchild (pid 1 of the new PID namespace), which goes on to exec;
/// the intermediate process waits for it and exits with its status.
pub fn enter(plan: &Plan, report_fd: i32) -> std::io::Result<()> {
    ctx("setsid", nix::unistd::setsid())?;
    let root = Uid::effective().is_root();
    let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
    if root {
        ctx("unshare mount namespace", unshare(CloneFlags::CLONE_NEWNS))?;
    } else {
        ctx(
            "unshare user and mount namespaces",
            unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS),
        )?;
        map_self(uid, gid)?;
    }
    build_root(plan)?;
    if root {
        // Drop everything before the user namespace: root gains nothing inside.
        ctx("setgroups", nix::unistd::setgroups(&[]))?;
        let g = Gid::from_raw(NOBODY);
        let u = Uid::from_raw(NOBODY);
        ctx("setresgid", setresgid(g, g, g))?;
        ctx("setresuid", setresuid(u, u, u))?;
        // A credential change makes the process non-dumpable, which leaves
        // /proc/self owned by root: make it ours again to write the id maps.
        // SAFETY: prctl(PR_SET_DUMPABLE, 1) with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        ctx("unshare user namespace", unshare(CloneFlags::CLONE_NEWUSER))?;
        map_self(NOBODY, NOBODY)?;
    }
    let mut flags = CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID;
    if plan.new_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    ctx("unshare ipc/uts/pid/net namespaces", unshare(flags))?;
    set_pdeathsig()?;
    // SAFETY: this process has one thread (it is the child of a fork); the
    // intermediate only waits and exits, the grandchild returns to exec.
    match ctx("fork", unsafe { fork() })? {
        ForkResult::Child => {
            set_pdeathsig()?;
            // A mount namespace owned by our user namespace, for /proc.
            if root {
                let _ = unshare(CloneFlags::CLONE_NEWNS);
            }
            // A /proc that shows only the sandbox's processes (best effort:
            // the host's, bound read-only by the kernel's rules, remains otherwise).
            let _ = mount(
                Some("proc"),
                "/proc",
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            );
            let _ = nix::unistd::sethostname("pickguard-sandbox");
            if chdir(&plan.cwd).is_err() {
                let _ = chdir(PRIVATE_TMP);
            }
            Ok(())
        }
        ForkResult::Parent { child } => {
            use nix::sys::wait::{WaitStatus, waitpid};
            // Tell the supervisor the program's pid as the host sees it
            // (inside, it is 1), then close every other descriptor: the
            // spawner's exec-status pipe must see only the program's exec.
            let msg = format!("P {}\n", child.as_raw());
            // SAFETY: write(2) of our buffer to the report pipe; close_range
            // on descriptors this process no longer needs.
            unsafe {
                libc::write(report_fd, msg.as_ptr().cast(), msg.len());
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => break c,
                    Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break 125,
                }
            };
            // SAFETY: _exit ends this intermediate process without running
            // the parent's destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
    }
}

fn set_pdeathsig() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, SIGKILL) with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(std::io::Error::other(format!(
            "namespace setup: prctl: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Can this process create the namespaces [`enter`] needs? (Probed in a
/// throwaway child, so the answer reflects the kernel and its settings.)
pub fn available() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new("/bin/true");
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let root = Uid::effective().is_root();
    // SAFETY: the closure only makes the unshare system call.
    unsafe {
        c.pre_exec(move || {
            let f = if root {
                CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNET
            } else {
                CloneFlags::CLONE_NEWUSER
                    | CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWPID
                    | CloneFlags::CLONE_NEWNET
            };
            unshare(f).map_err(std::io::Error::from)
        });
    }
    match c.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("probe exited with {s}")),
        Err(e) => Err(e.to_string()),
    }
}
