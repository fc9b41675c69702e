//! `--memory` and `--pids` by cgroup, where this process may make one.
//!
//! The kernel then counts every page the sandbox uses (heap, tmpfs, page
//! cache, memfd) and every task it has, whatever uid it runs as. The
//! fallback rlimits do neither: RLIMIT_AS limits address space (which
//! CUDA libraries reserve by the gigabyte without using it) and
//! RLIMIT_NPROC counts the uid's processes system-wide.
//!
//! cgroup v2 (the unified hierarchy) is used when this process's cgroup
//! lets it enable the controllers for a child; otherwise the v1 `memory`
//! and `pids` hierarchies when they are mounted and writable. A group is
//! made under this process's own cgroup, the sandboxed program enters it
//! before it runs anything, and the group is emptied and removed after.

use std::path::{Path, PathBuf};

/// A cgroup (one directory per v1 hierarchy, or one v2 directory) that
/// holds the sandbox.
#[derive(Debug)]
pub struct Group {
    dirs: Vec<PathBuf>,
    /// The `cgroup.procs` files the program writes its pid into.
    pub procs: Vec<PathBuf>,
    pub v2: bool,
    /// Which limits the group enforces.
    pub memory: bool,
    pub pids: bool,
}

/// (mount point, super options or "cgroup2") of every cgroup mount.
fn mounts() -> Vec<(PathBuf, String, bool)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split_whitespace().nth(4);
        let mut r = right.split_whitespace();
        let (fstype, _source, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
        match (mount, fstype) {
            (Some(m), Some("cgroup2")) => out.push((PathBuf::from(m), String::new(), true)),
            (Some(m), Some("cgroup")) => out.push((PathBuf::from(m), opts.to_owned(), false)),
            _ => {}
        }
    }
    out
}

/// This process's cgroup path in the hierarchy of `controller` ("" for v2).
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_owned())
    })
}

fn under(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    std::fs::write(p, v).map_err(|e| format!("{}: {e}", p.display()))
}

impl Group {
    /// Make a group enforcing `memory` bytes and `pids` tasks (those given),
    /// or say why none can be made here.
    pub fn create(name: &str, memory: Option<u64>, pids: Option<u64>) -> Result<Group, String> {
        if memory.is_none() && pids.is_none() {
            return Err("no limit asked for".into());
        }
        let mounts = mounts();
        let v2_err = match Self::create_v2(&mounts, name, memory, pids) {
            Ok(g) => return Ok(g),
            Err(e) => e,
        };
        match Self::create_v1(&mounts, name, memory, pids) {
            Ok(g) => Ok(g),
            Err(e) => Err(format!("cgroup v2: {v2_err}; cgroup v1: {e}")),
        }
    }

    fn create_v2(
        mounts: &[(PathBuf, String, bool)],
        name: &str,
        memory: Option<u64>,
        pids: Option<u64>,
    ) -> Result<Group, String> {
        let (mount, _, _) = mounts.iter().find(|m| m.2).ok_or("no cgroup2 mount")?;
        let own = under(mount, &own_path("").ok_or("not in a v2 cgroup")?);
        let want: Vec<&str> = [memory.map(|_| "memory"), pids.map(|_| "pids")]
            .into_iter()
            .flatten()
            .collect();
        let enabled =
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap_or_default();
        let missing: Vec<&&str> = want
            .iter()
            .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
            .collect();
        if !missing.is_empty() {
            let add: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
            // Refused (EBUSY) where the cgroup holds processes itself: a
            // delegated cgroup (systemd-run --scope -p Delegate=yes) works.
            write(&own.join("cgroup.subtree_control"), &add.join(" "))?;
        }
        let dir = own.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let g = Group {
            procs: vec![dir.join("cgroup.procs")],
            dirs: vec![dir.clone()],
            v2: true,
            memory: memory.is_some(),
            pids: pids.is_some(),
        };
        let set = || -> Result<(), String> {
            if let Some(m) = memory {
                write(&dir.join("memory.max"), &m.to_string())?;
                // Swap would let the sandbox hold more than the limit.
                let _ = write(&dir.join("memory.swap.max"), "0");
            }
            if let Some(p) = pids {
                write(&dir.join("pids.max"), &p.to_string())?;
            }
            Ok(())
        };
        match set() {
            Ok(()) => Ok(g),
            Err(e) => {
                g.remove();
                Err(e)
            }
        }
    }

    fn create_v1(
        mounts: &[(PathBuf, String, bool)],
        name: &str,
        memory: Option<u64>,
        pids: Option<u64>,
    ) -> Result<Group, String> {
        let mut g = Group {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2: false,
            memory: false,
            pids: false,
        };
        for (ctrl, limit) in [("memory", memory), ("pids", pids)] {
            let Some(limit) = limit else { continue };
            let made = (|| -> Result<PathBuf, String> {
                let (mount, _, _) = mounts
                    .iter()
                    .find(|m| !m.2 && m.1.split(',').any(|o| o == ctrl))
                    .ok_or(format!("no {ctrl} hierarchy"))?;
                let own = under(
                    mount,
                    &own_path(ctrl).ok_or(format!("not in a {ctrl} cgroup"))?,
                );
                let dir = own.join(name);
                std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let set = if ctrl == "memory" {
                    write(&dir.join("memory.limit_in_bytes"), &limit.to_string()).and_then(|()| {
                        // With swap accounting, swap counts too.
                        let sw = dir.join("memory.memsw.limit_in_bytes");
                        if sw.exists() {
                            write(&sw, &limit.to_string())
                        } else {
                            Ok(())
                        }
                    })
                } else {
                    write(&dir.join("pids.max"), &limit.to_string())
                };
                if let Err(e) = set {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(e);
                }
                Ok(dir)
            })();
            match made {
                Ok(dir) => {
                    g.procs.push(dir.join("cgroup.procs"));
                    g.dirs.push(dir);
                    if ctrl == "memory" {
                        g.memory = true;
                    } else {
                        g.pids = true;
                    }
                }
                Err(e) => {
                    g.remove();
                    return Err(e);
                }
            }
        }
        Ok(g)
    }

    /// How the limits are enforced, in words.
    pub fn describe(&self) -> String {
        let what: Vec<&str> = [self.memory.then_some("memory"), self.pids.then_some("pids")]
            .into_iter()
            .flatten()
            .collect();
        format!(
            "{} counted by the kernel for every process of the sandbox (cgroup {})",
            what.join(" and "),
            if self.v2 { "v2" } else { "v1" }
        )
    }

    /// Whether the kernel killed a process of the group for memory.
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|d| {
            let f = if self.v2 {
                d.join("memory.events")
            } else {
                d.join("memory.oom_control")
            };
            std::fs::read_to_string(f).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    }

    /// Pids still in the group.
    pub fn members(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .procs
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Remove the group's directories (each must be empty of processes).
    pub fn remove(&self) {
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
