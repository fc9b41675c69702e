//! User space of `distributed-exposure`: the kernel reports each TCP socket
//! that starts listening (`struct listen_event` in watch.bpf.c); this
//! completes it from /proc and decides (see `exposure.rs` for the rules).

use crate::exposure::{self, Reach, TCP_LISTEN};
use crate::{Event, OriginInfo};
use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const EV_LISTEN: u32 = 5;
const F_PYTHON: u32 = 1;
const LISTEN_WORDS: usize = 8;

/// `struct listen_event` in watch.bpf.c.
mod off {
    pub const PID: usize = 4;
    pub const TID: usize = 8;
    pub const PPID: usize = 12;
    pub const UID: usize = 16;
    pub const GID: usize = 20;
    pub const TS: usize = 24;
    pub const CGROUP: usize = 32;
    pub const FAMILY: usize = 40;
    pub const PORT: usize = 42;
    pub const FLAGS: usize = 44;
    pub const ADDR: usize = 48;
    pub const COMM: usize = 64;
    pub const IP: usize = 80;
    pub const STACK: usize = 88;
    pub const END: usize = 152;
}

#[derive(Clone, Debug)]
pub struct RawListen {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub ts: u64,
    pub cgroup_id: u64,
    pub family: u16,
    pub port: u16,
    pub flags: u32,
    pub addr: [u8; 16],
    pub comm: String,
    pub ip: u64,
    pub stack: [u64; LISTEN_WORDS],
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

pub fn decode(b: &[u8]) -> Option<RawListen> {
    if b.len() < off::END || u32_at(b, 0) != EV_LISTEN {
        return None;
    }
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&b[off::ADDR..off::ADDR + 16]);
    let mut stack = [0u64; LISTEN_WORDS];
    for (i, w) in stack.iter_mut().enumerate() {
        *w = u64_at(b, off::STACK + 8 * i);
    }
    let comm = &b[off::COMM..off::COMM + 16];
    let end = comm.iter().position(|&c| c == 0).unwrap_or(16);
    Some(RawListen {
        pid: u32_at(b, off::PID),
        tid: u32_at(b, off::TID),
        ppid: u32_at(b, off::PPID),
        uid: u32_at(b, off::UID),
        gid: u32_at(b, off::GID),
        ts: u64_at(b, off::TS),
        cgroup_id: u64_at(b, off::CGROUP),
        family: u16_at(b, off::FAMILY),
        port: u16_at(b, off::PORT),
        flags: u32_at(b, off::FLAGS),
        addr,
        comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        ip: u64_at(b, off::IP),
        stack,
    })
}

enum Outcome {
    Alert(Box<Event>),
    /// Not (yet) in /proc/PID/net/tcp: listen(2) may not have returned.
    Retry,
    Drop,
}

/// How long after the kernel's report the listener is first looked up
/// (the TCPStore daemon thread that names the component starts right
/// after listen(2)), and how long it is looked for.
const SETTLE: Duration = Duration::from_millis(300);
/// How long a listener with no thread naming its component yet is given
/// for one to appear (a loaded machine starts the TCPStore thread late).
const NAME_WAIT: Duration = Duration::from_millis(1500);
const GIVE_UP: Duration = Duration::from_secs(3);
const SEEN_MAX: usize = 4096;

/// Listens waiting to be completed, and the (pid, address, port) already
/// reported: one alert per listener, however often it is seen.
pub struct Listens {
    pub public_only: bool,
    pending: VecDeque<(Instant, RawListen, bool)>,
    seen: HashSet<(u32, IpAddr, u16)>,
}

impl Listens {
    pub fn new(public_only: bool) -> Self {
        Listens {
            public_only,
            pending: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    pub fn push(&mut self, raw: RawListen, unattended: bool) {
        // Loopback is never reported: no need to keep it.
        if exposure::address_from_kernel(raw.family, &raw.addr)
            .is_some_and(|a| exposure::classify(a) != Reach::Loopback)
        {
            self.pending.push_back((Instant::now(), raw, unattended));
        }
    }

    /// Complete what is due (everything with `now`), as alerts.
    pub fn tick(&mut self, host: &str, now: bool) -> Vec<Event> {
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        while let Some((t, raw, unattended)) = self.pending.pop_front() {
            let age = t.elapsed();
            if !now && age < SETTLE {
                keep.push_back((t, raw, unattended));
                continue;
            }
            let patient = !now && age < NAME_WAIT;
            match self.complete(&raw, host, unattended, patient) {
                Outcome::Alert(ev) => out.push(*ev),
                Outcome::Retry if !now && age < GIVE_UP => keep.push_back((t, raw, unattended)),
                Outcome::Retry | Outcome::Drop => {}
            }
        }
        self.pending = keep;
        if self.seen.len() > SEEN_MAX {
            self.seen
                .retain(|(pid, _, _)| std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
        out
    }

    fn complete(
        &mut self,
        raw: &RawListen,
        host: &str,
        unattended: bool,
        patient: bool,
    ) -> Outcome {
        let Some(addr) = exposure::address_from_kernel(raw.family, &raw.addr) else {
            return Outcome::Drop;
        };
        let pid = raw.pid;
        // Gone: nothing listens any more.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return Outcome::Drop;
        };
        let maps = exposure::parse_maps(&maps);
        let Some((code, at)) = exposure::caller(&maps, raw.ip, &raw.stack) else {
            return Outcome::Drop;
        };
        if !exposure::is_torch_library(&code.path) {
            return Outcome::Drop;
        }
        let Some(entry) = held_listener(pid, addr, raw.port, &self.seen) else {
            return Outcome::Retry;
        };
        let key = (pid, addr, entry.port);
        if self.seen.contains(&key) {
            return Outcome::Drop;
        }
        let threads = torch_threads(pid);
        let tcpstore = threads.iter().any(|t| t.starts_with("pt_tcpstore"));
        if !tcpstore && patient {
            return Outcome::Retry;
        }
        let reach = exposure::classify(addr);
        let covered = (reach == Reach::Wildcard).then(|| host_addresses(pid, addr));
        let covered_list = covered.clone().flatten();
        let public = exposure::is_public(addr, covered_list.as_deref());
        if !exposure::reported(addr, public, self.public_only) {
            return Outcome::Drop;
        }
        self.seen.insert(key);
        let info = process_info(pid);
        let component = if tcpstore {
            "TCPStore"
        } else {
            "torch.distributed"
        };
        let python = raw.flags & F_PYTHON != 0
            || info.exe.as_deref().is_some_and(|e| {
                e.rsplit('/')
                    .next()
                    .is_some_and(|b| b.starts_with("python"))
            })
            || maps.iter().any(|m| m.path.contains("/libpython"));
        let family = if raw.family == 2 { "ipv4" } else { "ipv6" };
        let caller = format!(
            "{}+0x{:x}",
            code.path,
            at.saturating_sub(code.start) + code.offset
        );
        let mut evidence = vec![
            format!(
                "listen(2) called from torch's code: {caller} (the return address at the top of the user stack of thread {} '{}')",
                raw.tid, raw.comm
            ),
            format!(
                "socket inode {} held by pid {pid}, in LISTEN on {} port {} (/proc/{pid}/net/tcp{})",
                entry.inode,
                addr,
                entry.port,
                if raw.family == 2 { "" } else { "6" }
            ),
        ];
        if !threads.is_empty() {
            evidence.push(format!("torch threads: {}", threads.join(", ")));
        }
        if python {
            evidence.push("the process is a Python interpreter".into());
        }
        match (&covered, reach) {
            (Some(Some(c)), _) => evidence.push(format!(
                "a wildcard address: accepts on {}{}",
                if c.is_empty() {
                    "every address the host gets".to_owned()
                } else {
                    c.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                },
                if addr.is_ipv6() {
                    " (IPv4 too unless the socket set IPV6_V6ONLY, which /proc does not show)"
                } else {
                    ""
                }
            )),
            (Some(None), _) => evidence.push(
                "a wildcard address; the host's addresses could not be read, so it counts as public"
                    .into(),
            ),
            (None, Reach::Private) => {
                evidence.push("a private-range address: other hosts on that network reach it".into())
            }
            _ => {}
        }
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Outcome::Alert(Box::new(Event {
            event: "alert",
            kind: Some("distributed-exposure"),
            pid,
            ppid: raw.ppid,
            uid: raw.uid,
            gid: raw.gid,
            cgroup_id: raw.cgroup_id,
            comm: raw.comm.clone(),
            name: info
                .exe
                .as_deref()
                .and_then(|e| e.rsplit('/').next())
                .unwrap_or("")
                .to_owned(),
            cmdline: info.cmdline.clone(),
            argv,
            verdict: "detected",
            hostname: host.to_owned(),
            ts_ns: raw.ts,
            latency_us: crate::bpf::boot_ns().saturating_sub(raw.ts) / 1000,
            unix_time: crate::bpf::unix_time(),
            unattended,
            process: Some(info),
            tid: Some(raw.tid),
            address: Some(addr.to_string()),
            port: Some(entry.port),
            family: Some(family),
            reachable_beyond_host: Some(true),
            public: Some(public),
            exposed_on: covered_list
                .unwrap_or_default()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            component: Some(component.to_owned()),
            caller: Some(caller),
            evidence,
            ..Event::default()
        }))
    }
}

fn process_info(pid: u32) -> OriginInfo {
    crate::bpf::origin_info(pid)
}

/// Socket inodes of a process's descriptors.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut s = HashSet::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in rd.flatten() {
            if let Ok(t) = std::fs::read_link(fd.path())
                && let Some(n) = t
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|n| n.parse().ok())
            {
                s.insert(n);
            }
        }
    }
    s
}

/// The listener in the process's network namespace, with this address and
/// port (any port not yet reported when the kernel had none), held by the
/// process.
fn held_listener(
    pid: u32,
    addr: IpAddr,
    port: u16,
    seen: &HashSet<(u32, IpAddr, u16)>,
) -> Option<exposure::TcpEntry> {
    let table = if addr.is_ipv4() { "tcp" } else { "tcp6" };
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
    let fds = socket_inodes(pid);
    exposure::parse_tcp(&text).into_iter().find(|e| {
        e.state == TCP_LISTEN
            && e.local == addr
            && (e.port == port || (port == 0 && !seen.contains(&(pid, addr, e.port))))
            && fds.contains(&e.inode)
    })
}

/// The non-loopback addresses of the process's network namespace that a
/// wildcard listener accepts on (`None` when they cannot be read).
fn host_addresses(pid: u32, listen: IpAddr) -> Option<Vec<IpAddr>> {
    let fib = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).ok()?;
    let v6 = std::fs::read_to_string(format!("/proc/{pid}/net/if_inet6")).unwrap_or_default();
    Some(exposure::wildcard_addresses(
        listen,
        &exposure::parse_fib_trie_local(&fib),
        &exposure::parse_if_inet6(&v6),
    ))
}

/// Names of the process's threads that torch names (pt_tcpstore_uv, ...).
fn torch_threads(pid: u32) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("comm")) {
                let c = c.trim().to_owned();
                if exposure::component_of_thread(&c).is_some() && !v.contains(&c) {
                    v.push(c);
                }
            }
        }
    }
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_kernel_record() {
        let mut b = vec![0u8; off::END];
        b[0..4].copy_from_slice(&EV_LISTEN.to_le_bytes());
        b[off::PID..off::PID + 4].copy_from_slice(&42u32.to_le_bytes());
        b[off::FAMILY..off::FAMILY + 2].copy_from_slice(&10u16.to_le_bytes());
        b[off::PORT..off::PORT + 2].copy_from_slice(&29500u16.to_le_bytes());
        b[off::COMM..off::COMM + 6].copy_from_slice(b"python");
        b[off::STACK + 8..off::STACK + 16].copy_from_slice(&7u64.to_le_bytes());
        let r = decode(&b).unwrap();
        assert_eq!((r.pid, r.family, r.port), (42, 10, 29500));
        assert_eq!(r.comm, "python");
        assert_eq!(r.stack[1], 7);
        assert!(decode(&b[..off::END - 1]).is_none());
        b[0] = 3;
        assert!(decode(&b).is_none());
    }

    #[test]
    fn loopback_is_not_kept() {
        let mut l = Listens::new(false);
        let mut raw = decode(&{
            let mut b = vec![0u8; off::END];
            b[0..4].copy_from_slice(&EV_LISTEN.to_le_bytes());
            b
        })
        .unwrap();
        raw.family = 2;
        raw.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        l.push(raw.clone(), false);
        assert!(l.pending.is_empty());
        raw.addr[..4].copy_from_slice(&[0, 0, 0, 0]);
        l.push(raw, false);
        assert_eq!(l.pending.len(), 1);
        // pid 0 has no /proc entry: dropped when due.
        assert!(l.tick("h", true).is_empty());
        assert!(l.pending.is_empty());
    }
}
