//! `distributed-exposure`: a torch.distributed listener (TCPStore, gloo,
//! RPC) reachable from beyond the host. PyTorch's SECURITY.md: c10d, RPC
//! and TCPStore accept connections from anyone who can reach them and run
//! what they are sent.
//!
//! The BPF program reports every TCP socket that starts listening, with the
//! top of the caller's user stack. This module holds what user space decides
//! from that and from /proc, without BPF: how addresses are classified, how
//! /proc/net/tcp, maps, fib_trie and if_inet6 are read, and whether the code
//! that called listen(2) is torch's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where an address can be reached from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// 127/8, ::1, ::ffff:127.0.0.0/104: this host only.
    Loopback,
    /// 0.0.0.0 or :: (every address the host has, or later gets).
    Wildcard,
    /// RFC 1918, CGNAT 100.64/10, link-local 169.254/16 and fe80::/10,
    /// unique-local fc00::/7: beyond the host, but not the Internet.
    Private,
    /// Anything else.
    Public,
}

/// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 address.
fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => a,
        },
        v4 => v4,
    }
}

pub fn classify(addr: IpAddr) -> Reach {
    match unmapped(addr) {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_unspecified() {
                Reach::Wildcard
            } else if o[0] == 127 {
                Reach::Loopback
            } else if o[0] == 10
                || (o[0] == 172 && (16..=31).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168)
                || (o[0] == 100 && (64..=127).contains(&o[1]))
                || (o[0] == 169 && o[1] == 254)
            {
                Reach::Private
            } else {
                Reach::Public
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if a.is_unspecified() {
                Reach::Wildcard
            } else if a.is_loopback() {
                Reach::Loopback
            } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 {
                Reach::Private
            } else {
                Reach::Public
            }
        }
    }
}

/// One line of /proc/net/tcp or /proc/net/tcp6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: IpAddr,
    pub port: u16,
    /// The kernel's TCP state (0x0A is LISTEN).
    pub state: u8,
    pub uid: u32,
    pub inode: u64,
}

pub const TCP_LISTEN: u8 = 0x0a;

/// The kernel prints addresses as 32-bit words in host byte order (little
/// endian on every architecture pickguard watch runs on), in hex.
fn hex_addr(s: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(s.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    match s.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// `  0: 00000000:7347 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 13690 1 ...`
/// (the header line and anything malformed give `None`).
pub fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || !f[0].ends_with(':') {
        return None;
    }
    let (addr, port) = f[1].split_once(':')?;
    Some(TcpEntry {
        local: hex_addr(addr)?,
        port: u16::from_str_radix(port, 16).ok()?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        uid: f[7].parse().ok()?,
        inode: f[9].parse().ok()?,
    })
}

pub fn parse_tcp(text: &str) -> Vec<TcpEntry> {
    text.lines().filter_map(parse_tcp_line).collect()
}

/// The IPv4 addresses of the host (of a network namespace): the `/32 host
/// LOCAL` leaves of /proc/net/fib_trie.
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for l in text.lines() {
        let t = l.trim();
        if let Some(a) = t.strip_prefix("|-- ").or_else(|| t.strip_prefix("+-- ")) {
            last = a.split(['/', ' ']).next().and_then(|s| s.parse().ok());
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// The IPv6 addresses in /proc/net/if_inet6 (`fd000000000000000000000000000002 04 40 00 82 eth0`).
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| {
            let h = l.split_whitespace().next()?;
            if h.len() != 32 {
                return None;
            }
            let mut b = [0u8; 16];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok()?;
            }
            Some(Ipv6Addr::from(b))
        })
        .collect()
}

/// One line of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub exec: bool,
    pub offset: u64,
    pub path: String,
}

pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(6, ' ');
            let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
            let (_dev, _ino) = (f.next()?, f.next()?);
            let path = f.next().unwrap_or("").trim_start().to_owned();
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                exec: perms.as_bytes().get(2) == Some(&b'x'),
                offset: u64::from_str_radix(offset, 16).ok()?,
                path,
            })
        })
        .collect()
}

/// The executable mapping holding `addr`.
pub fn code_at(maps: &[Mapping], addr: u64) -> Option<&Mapping> {
    maps.iter()
        .find(|m| m.exec && m.start <= addr && addr < m.end && addr != 0)
}

/// The code that called listen(2): the first word at the top of the user
/// stack that points into executable code other than the mapping the
/// syscall instruction is in (libc). glibc's listen() is a leaf, so that is
/// the return address itself; a libc whose listen() pushes registers first
/// leaves it a few words further. The instruction pointer counts when it is
/// not in libc (a static binary, an inlined syscall).
pub fn caller<'a>(maps: &'a [Mapping], ip: u64, stack: &[u64]) -> Option<(&'a Mapping, u64)> {
    let sys = code_at(maps, ip);
    if let Some(m) = sys
        && !is_libc(&m.path)
    {
        return Some((m, ip));
    }
    stack.iter().find_map(|&w| {
        let m = code_at(maps, w)?;
        (sys.is_none_or(|s| s.start != m.start)).then_some((m, w))
    })
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_libc(path: &str) -> bool {
    let b = base(path);
    b.starts_with("libc.so") || b.starts_with("libc-") || b.starts_with("ld-musl")
}

/// A library of torch whose code opens torch.distributed's listeners:
/// libtorch_cpu.so holds c10d (TCPStore, both backends, with libuv linked
/// in), gloo and tensorpipe (RPC); libtorch*.so and libc10*.so cover the
/// other wheels' splits (libtorch_cuda, libc10d in source builds).
pub fn is_torch_library(path: &str) -> bool {
    let b = base(path);
    (b.starts_with("libtorch") || b.starts_with("libc10") || b.starts_with("libgloo"))
        && b.contains(".so")
}

/// The component a torch thread name belongs to (torch names its daemon
/// threads with c10::setThreadName).
pub fn component_of_thread(name: &str) -> Option<&'static str> {
    if name.starts_with("pt_tcpstore") {
        Some("TCPStore")
    } else if name.starts_with("pt_") || name.starts_with("gloo") || name.starts_with("tensorpipe")
    {
        Some("torch.distributed")
    } else {
        None
    }
}

/// The addresses a wildcard listener accepts on, beyond loopback: for
/// 0.0.0.0 the IPv4 addresses, for :: both (a socket on :: is dual-stack
/// unless it set IPV6_V6ONLY, which /proc does not show).
pub fn wildcard_addresses(listen: IpAddr, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = v4.iter().map(|a| IpAddr::V4(*a)).collect();
    if listen.is_ipv6() {
        out.extend(v6.iter().map(|a| IpAddr::V6(*a)));
    }
    out.retain(|a| classify(*a) != Reach::Loopback && classify(*a) != Reach::Wildcard);
    out
}

/// `public` for a listener: a concrete address by its class; a wildcard
/// when any address it covers is public, or when they could not be read.
pub fn is_public(listen: IpAddr, covered: Option<&[IpAddr]>) -> bool {
    match classify(listen) {
        Reach::Public => true,
        Reach::Wildcard => covered.is_none_or(|c| c.iter().any(|a| classify(*a) == Reach::Public)),
        Reach::Loopback | Reach::Private => false,
    }
}

/// Is this listener reported? Loopback never; with `public_only`, only a
/// public one.
pub fn reported(listen: IpAddr, public: bool, public_only: bool) -> bool {
    classify(listen) != Reach::Loopback && (public || !public_only)
}

/// The address as the kernel tracepoint gave it: AF_INET's 4 bytes or
/// AF_INET6's 16.
pub fn address_from_kernel(family: u16, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        2 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        10 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified_by_where_they_reach() {
        for (a, r) in [
            ("0.0.0.0", Reach::Wildcard),
            ("::", Reach::Wildcard),
            ("::ffff:0.0.0.0", Reach::Wildcard),
            ("127.0.0.1", Reach::Loopback),
            ("127.1.2.3", Reach::Loopback),
            ("::1", Reach::Loopback),
            ("::ffff:127.0.0.1", Reach::Loopback),
            ("10.0.0.1", Reach::Private),
            ("10.255.255.255", Reach::Private),
            ("172.16.0.1", Reach::Private),
            ("172.31.255.254", Reach::Private),
            ("172.15.0.1", Reach::Public),
            ("172.32.0.1", Reach::Public),
            ("192.168.1.1", Reach::Private),
            ("192.169.1.1", Reach::Public),
            ("100.64.0.1", Reach::Private),
            ("100.127.255.255", Reach::Private),
            ("100.63.0.1", Reach::Public),
            ("100.128.0.1", Reach::Public),
            ("169.254.169.254", Reach::Private),
            ("::ffff:10.1.2.3", Reach::Private),
            ("::ffff:8.8.8.8", Reach::Public),
            ("fc00::1", Reach::Private),
            ("fd00::2", Reach::Private),
            ("fe80::1", Reach::Private),
            ("febf::1", Reach::Private),
            ("fec0::1", Reach::Public),
            ("8.8.8.8", Reach::Public),
            ("192.0.2.2", Reach::Public),
            ("2001:db8::1", Reach::Public),
            ("2606:4700::1111", Reach::Public),
        ] {
            assert_eq!(classify(ip(a)), r, "{a}");
        }
    }

    #[test]
    fn what_is_reported() {
        assert!(!reported(ip("127.0.0.1"), false, false));
        assert!(!reported(ip("::ffff:127.0.0.1"), false, false));
        assert!(reported(ip("10.0.0.1"), false, false));
        assert!(!reported(ip("10.0.0.1"), false, true));
        assert!(reported(ip("8.8.8.8"), true, true));
        // A wildcard is public when one of the addresses it covers is.
        let private = [ip("10.0.0.5"), ip("fd00::2")];
        assert!(!is_public(ip("::"), Some(&private)));
        assert!(is_public(
            ip("::"),
            Some(&[ip("10.0.0.5"), ip("192.0.2.2")])
        ));
        assert!(is_public(ip("0.0.0.0"), None));
        assert!(!is_public(ip("fe80::1"), None));
        assert!(is_public(ip("2001:db8::1"), None));
    }

    #[test]
    fn wildcard_covers_the_hosts_addresses() {
        let v4 = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 2)];
        let v6: [Ipv6Addr; 2] = ["::1".parse().unwrap(), "fd00::2".parse().unwrap()];
        assert_eq!(
            wildcard_addresses(ip("0.0.0.0"), &v4, &v6),
            vec![ip("192.0.2.2")]
        );
        assert_eq!(
            wildcard_addresses(ip("::"), &v4, &v6),
            vec![ip("192.0.2.2"), ip("fd00::2")]
        );
    }

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "  0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 640 1 00000000bdc45b61 100 0 0 10 0";
        assert_eq!(
            parse_tcp_line(v4),
            Some(TcpEntry {
                local: ip("0.0.0.0"),
                port: 2024,
                state: TCP_LISTEN,
                uid: 0,
                inode: 640
            })
        );
        let lo = "   3: 0100007F:7349 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000  1000        0 15624 1 0000000053255e9b 20 4 30 10 -1";
        let e = parse_tcp_line(lo).unwrap();
        assert_eq!(
            (e.local, e.port, e.state, e.uid),
            (ip("127.0.0.1"), 29513, 1, 1000)
        );
        let v6 = "  0: 00000000000000000000000000000000:7347 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 13690 1 0000000053255e9b 100 0 0 10 0";
        let e = parse_tcp_line(v6).unwrap();
        assert_eq!((e.local, e.port, e.inode), (ip("::"), 29511, 13690));
        // ::1 and ::ffff:127.0.0.1 as the kernel prints them.
        let one = "  1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(parse_tcp_line(one).unwrap().local, ip("::1"));
        let mapped = "  2: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0";
        let e = parse_tcp_line(mapped).unwrap();
        assert_eq!(e.local, ip("::ffff:127.0.0.1"));
        assert_eq!(classify(e.local), Reach::Loopback);
        let fd = "  3: 000000FD000000000000000002000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0";
        assert_eq!(parse_tcp_line(fd).unwrap().local, ip("fd00::2"));
        // The header and malformed lines.
        assert_eq!(
            parse_tcp_line(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
            ),
            None
        );
        assert_eq!(parse_tcp_line(""), None);
        assert_eq!(
            parse_tcp_line("  0: 0000:07E8 00000000:0000 0A a b c 0 0 640"),
            None
        );
        assert_eq!(
            parse_tcp_line("  0: 00000000:XYZW 00000000:0000 0A a b c 0 0 640"),
            None
        );
        assert_eq!(
            parse_tcp_line("  0: 00000000:07E8 00000000:0000 0A a b c x 0 640"),
            None
        );
        assert_eq!(parse_tcp(&format!("header line\n{v4}\n{v6}\n")).len(), 2);
    }

    #[test]
    fn host_addresses() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n     |-- 192.0.2.2\n        /32 host LOCAL\n     |-- 192.0.2.255\n        /32 link BROADCAST\nLocal:\n     |-- 192.0.2.2\n        /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie_local(fib),
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
        let if6 = "00000000000000000000000000000001 01 80 10 80       lo\nfd000000000000000000000000000002 04 40 00 82     eth0\nbad\n";
        assert_eq!(
            parse_if_inet6(if6),
            vec![
                "::1".parse::<Ipv6Addr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
    }

    #[test]
    fn the_caller_of_listen_is_found_past_libc() {
        let maps = parse_maps(
            "7f0000000000-7f0000100000 r-xp 00028000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
             7f1000000000-7f1020000000 r-xp 00400000 08:01 2 /venv/torch/lib/libtorch_cpu.so\n\
             7f2000000000-7f2000010000 r-xp 00002000 08:01 3 /py/lib-dynload/_socket.cpython-311-x86_64-linux-gnu.so\n\
             7f3000000000-7f3000010000 rw-p 00000000 00:00 0 \n\
             garbage line\n",
        );
        assert_eq!(maps.len(), 4);
        let libc_ip = 0x7f0000000107;
        let torch_ret = 0x7f1000001e4c;
        let (m, a) = caller(&maps, libc_ip, &[torch_ret, 0]).unwrap();
        assert!(is_torch_library(&m.path), "{m:?}");
        assert_eq!(a, torch_ret);
        // A data pointer and a libc address before the return address are skipped.
        let (m, _) = caller(
            &maps,
            libc_ip,
            &[0x7f3000000010, 0x7f0000000200, 0x7f2000000123],
        )
        .unwrap();
        assert!(m.path.ends_with("_socket.cpython-311-x86_64-linux-gnu.so"));
        assert!(!is_torch_library(&m.path));
        assert!(caller(&maps, libc_ip, &[0, 1, 2]).is_none());
        // A syscall made outside libc names its own code.
        let (m, _) = caller(&maps, torch_ret, &[]).unwrap();
        assert!(is_torch_library(&m.path));
    }

    #[test]
    fn torch_libraries_and_threads() {
        assert!(is_torch_library("/v/torch/lib/libtorch_cpu.so"));
        assert!(is_torch_library("/v/torch/lib/libc10.so"));
        assert!(is_torch_library("/usr/lib/libtorch.so.2.5"));
        assert!(!is_torch_library("/v/torch/lib/libgomp.so.1"));
        assert!(!is_torch_library("/py/lib-dynload/_socket.cpython-311.so"));
        assert!(!is_torch_library("/usr/lib/libtorchbearer.py"));
        assert_eq!(component_of_thread("pt_tcpstore_uv"), Some("TCPStore"));
        assert_eq!(component_of_thread("pt_tcpstore"), Some("TCPStore"));
        assert_eq!(component_of_thread("python"), None);
    }

    #[test]
    fn kernel_addresses() {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(address_from_kernel(2, &b), Some(ip("127.0.0.1")));
        assert_eq!(address_from_kernel(10, &[0; 16]), Some(ip("::")));
        assert_eq!(address_from_kernel(1, &b), None);
    }
}
