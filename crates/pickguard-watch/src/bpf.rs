//! Loading the BPF program and reading its events.

// The generated skeleton is FFI glue over libbpf (raw pointers into the
// BPF object's mmap'd sections); it is the only unsafe code in this crate.
#[allow(unsafe_code, clippy::all, clippy::pedantic, dead_code, unused_imports)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/watch.skel.rs"));
}

use crate::{Event, Mechanism, WatchOptions};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};
use skel::WatchSkelBuilder;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::Duration;

const EV_PICKLE: u32 = 1;
const EV_MODEL: u32 = 2;
const EV_ALERT: u32 = 3;
const NAME_LEN: usize = 64;
const PATH_LEN: usize = 256;

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

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let s: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (!s.is_empty()).then(|| s.join(" "))
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn unix_time() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Decode one ring-buffer record (`struct event` in watch.bpf.c).
fn decode(b: &[u8]) -> Option<Event> {
    // kind, pid, ppid, origin_pid, killed, pad (6 x u32), ts, model_ts (2 x u64),
    // comm[16], name[64], model[256].
    if b.len() < 24 + 16 + 16 + NAME_LEN + PATH_LEN {
        return None;
    }
    let kind = u32_at(b, 0);
    let pid = u32_at(b, 4);
    let ts = u64_at(b, 24);
    let now = monotonic_ns();
    let ev = Event {
        event: match kind {
            EV_ALERT => "alert",
            EV_PICKLE => "pickle-loaded",
            EV_MODEL => "model-opened",
            _ => "unknown",
        },
        pid,
        ppid: u32_at(b, 8),
        origin_pid: u32_at(b, 12),
        comm: cstr(&b[40..56]),
        name: cstr(&b[56..56 + NAME_LEN]),
        model: cstr(&b[56 + NAME_LEN..56 + NAME_LEN + PATH_LEN]),
        cmdline: None,
        parent_cmdline: None,
        origin_cmdline: None,
        verdict: if u32_at(b, 16) == 1 {
            "killed"
        } else {
            "detected"
        },
        ts_ns: ts,
        model_ts_ns: u64_at(b, 32),
        latency_us: now.saturating_sub(ts) / 1000,
        unix_time: unix_time(),
    };
    Some(ev)
}

/// Mark Python processes that were already running when the watch started.
fn prime_running_pythons(map: &libbpf_rs::MapMut) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        {
            let mut st = vec![0u8; 4 + 4 + 8 + PATH_LEN];
            st[0] = 1; // F_PYTHON
            let _ = map.update(&pid.to_ne_bytes(), &st, MapFlags::NO_EXIST);
        }
    }
}

fn fill_names(map: &libbpf_rs::MapMut, names: &[String], what: &str) -> Result<(), String> {
    if names.len() > 16 {
        return Err(format!("at most 16 {what}"));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || n.len() > 15 {
            return Err(format!("{what} {n:?}: 1 to 15 bytes"));
        }
        let mut v = [0u8; 16];
        v[..n.len()].copy_from_slice(n.as_bytes());
        map.update(&(i as u32).to_ne_bytes(), &v, MapFlags::ANY)
            .map_err(|e| format!("filling {what}: {e}"))?;
    }
    Ok(())
}

fn open_and_load<'a>(
    object: &'a mut MaybeUninit<libbpf_rs::OpenObject>,
    opts: &WatchOptions,
    lsm: bool,
) -> Result<skel::WatchSkel<'a>, String> {
    let mut open = WatchSkelBuilder::default()
        .open(object)
        .map_err(|e| format!("opening the BPF object: {e}"))?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.enforce = opts.enforce as u32;
        ro.window_ns = opts.window_secs.saturating_mul(1_000_000_000);
        ro.verbose = opts.verbose as u32;
        ro.lsm_deny = lsm as u32;
    }
    open.progs.deny_shell_exec.set_autoload(lsm);
    open.load().map_err(|e| {
        let hint = if e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
            " (pickguard watch needs root, or CAP_BPF and CAP_PERFMON, and a kernel with BTF; the verifier log above says more)"
        } else {
            ""
        };
        format!("loading the BPF program: {e}{hint}")
    })
}

/// Tracepoints are attached by id, read from tracefs: mount it when the
/// host has not (common in containers and minimal VMs).
fn ensure_tracefs() -> Result<(), String> {
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    if events.exists() || std::path::Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, target, fstype) = (c("nodev"), c("/sys/kernel/tracing"), c("tracefs"));
    // SAFETY: mount(2) with NUL-terminated strings we own and no data.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 || !events.exists() {
        return Err(format!(
            "tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    eprintln!("pickguard watch: mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

/// Load, attach, and report events until `on_event` returns false or the
/// process is interrupted. `ready` is called once the sensor is live.
pub fn watch(
    opts: &WatchOptions,
    ready: impl FnOnce(&Mechanism),
    mut on_event: impl FnMut(Event) -> bool,
) -> Result<(), String> {
    // Strongest mechanism first: BPF LSM (deny the exec). Many kernels
    // refuse LSM/trampoline programs; then load again without it and kill
    // the shell at exec from the tracepoint instead.
    let mut lsm_error = None;
    let mut object = MaybeUninit::uninit();
    let mut object2 = MaybeUninit::uninit();
    let with_lsm = opts.enforce;
    // The LSM attempt is a probe: keep libbpf's verifier log for real failures only.
    let previous = if with_lsm {
        libbpf_rs::set_print(None)
    } else {
        None
    };
    let first = open_and_load(&mut object, opts, with_lsm);
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
            open_and_load(&mut object2, opts, false)?
        }
        Err(e) => return Err(e),
    };
    fill_names(&skel.maps.shells, &opts.shells, "shells")?;
    fill_names(&skel.maps.exts, &opts.extensions, "model extensions")?;
    prime_running_pythons(&skel.maps.states);
    ensure_tracefs()?;
    skel.attach()
        .map_err(|e| format!("attaching the BPF programs: {e}"))?;
    let mechanism = if opts.enforce && lsm_error.is_none() {
        Mechanism {
            name: "bpf-lsm-deny",
            description:
                "the shell's exec is refused with EPERM by a BPF LSM hook (bprm_check_security)"
                    .into(),
        }
    } else if opts.enforce {
        Mechanism {
            name: "bpf-sigkill-at-exec",
            description: format!(
                "the shell is killed by the BPF program at exec, before its first instruction; BPF LSM denial is unavailable on this kernel ({})",
                lsm_error.as_deref().unwrap_or("")
            ),
        }
    } else {
        Mechanism {
            name: "detect-only",
            description: "alerts only; nothing is blocked (use --enforce)".into(),
        }
    };
    ready(&mechanism);
    let stop = RefCell::new(false);
    let allow = opts.allow.clone();
    let mut rb = RingBufferBuilder::new();
    rb.add(&skel.maps.events, |data: &[u8]| {
        if let Some(mut ev) = decode(data) {
            if allow.contains(&ev.comm) {
                return 0;
            }
            ev.cmdline = cmdline(ev.pid);
            ev.parent_cmdline = cmdline(ev.ppid);
            if ev.origin_pid != 0 {
                ev.origin_cmdline = cmdline(ev.origin_pid);
            }
            if !on_event(ev) {
                *stop.borrow_mut() = true;
                return 1;
            }
        }
        0
    })
    .map_err(|e| format!("ring buffer: {e}"))?;
    let rb = rb.build().map_err(|e| format!("ring buffer: {e}"))?;
    while !*stop.borrow() {
        match rb.poll(Duration::from_millis(200)) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => break,
            Err(e) => return Err(format!("reading events: {e}")),
        }
    }
    Ok(())
}
