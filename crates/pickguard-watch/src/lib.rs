/*!
`pickguard watch`: an eBPF sensor for the sequence "Python process loads the
pickle module, opens a model file, then (it or a child) executes a shell".

The BPF program (`src/bpf/watch.bpf.c`, compiled by clang at build time,
CO-RE against the kernel's BTF) keeps per-process state on the
`sys_enter_openat`, `sched_process_exec`, `sched_process_fork` and
`sched_process_exit` tracepoints and reports matches through a ring buffer.
With enforcement, the shell is killed by the BPF program at exec, before its
first instruction.
*/

use serde::Serialize;

/// Options for a watch session.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub enforce: bool,
    /// Alert only when the shell comes within this many seconds of the model open.
    pub window_secs: u64,
    /// Shell program names (basenames after symlink resolution: `sh` is usually `dash`).
    pub shells: Vec<String>,
    /// Model file suffixes.
    pub extensions: Vec<String>,
    /// Also report pickle-module and model-open events.
    pub verbose: bool,
    /// Programs never reported (by the alerting process's command name).
    pub allow: Vec<String>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            enforce: false,
            window_secs: 300,
            shells: [
                "sh", "dash", "bash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            extensions: [
                ".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".model",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            verbose: false,
            allow: Vec::new(),
        }
    }
}

/// One report.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// `alert`, `pickle-loaded`, `model-opened`.
    pub event: &'static str,
    /// Process that executed the shell (or opened the file).
    pub pid: u32,
    pub ppid: u32,
    /// The Python process that opened the model.
    pub origin_pid: u32,
    pub comm: String,
    /// Shell (for alerts) or file name.
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Command lines, read from /proc when the event arrives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_cmdline: Option<String>,
    /// `denied` (exec refused by the LSM hook), `killed` (shell killed at exec) or `detected`.
    pub verdict: &'static str,
    /// Kernel time of the event and of the model open (ns since boot).
    pub ts_ns: u64,
    pub model_ts_ns: u64,
    /// From the kernel event to user space, microseconds.
    pub latency_us: u64,
    /// Wall-clock time the event was read, seconds since the Unix epoch.
    pub unix_time: String,
}

/// Which enforcement mechanism a session uses.
#[derive(Clone, Debug, Serialize)]
pub struct Mechanism {
    pub name: &'static str,
    pub description: String,
}

#[cfg(all(target_os = "linux", pickguard_bpf))]
mod bpf;

#[cfg(all(target_os = "linux", pickguard_bpf))]
pub use bpf::watch;

/// Without the BPF program (built without clang, or not Linux).
#[cfg(not(all(target_os = "linux", pickguard_bpf)))]
pub fn watch(
    _opts: &WatchOptions,
    _ready: impl FnOnce(&Mechanism),
    _on_event: impl FnMut(Event) -> bool,
) -> Result<(), String> {
    Err("this pickguard was built without the eBPF program (clang was not available at build time); rebuild on Linux with clang, libelf and zlib installed".into())
}
