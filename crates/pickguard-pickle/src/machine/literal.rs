//! Numbers and strings as CPython reads them from opcode arguments.

use super::*;

pub(super) fn le_u64(b: &[u8]) -> u64 {
    let mut x = 0u64;
    for (i, &c) in b.iter().enumerate() {
        x |= (c as u64) << (8 * i);
    }
    x
}

/// Two's-complement little-endian integer of any width (LONG1/LONG4).
pub(super) fn decode_long(b: &[u8]) -> Int {
    if b.is_empty() {
        return Int::Small(0);
    }
    if b.len() > 16 {
        // Could still fit if it is sign extension; check.
        let neg = b[b.len() - 1] & 0x80 != 0;
        let fill = if neg { 0xff } else { 0 };
        if b[16..].iter().all(|&c| c == fill) && ((b[15] & 0x80 != 0) == neg) {
            return decode_long(&b[..16]);
        }
        return Int::Big {
            bytes: b.len() as u64,
        };
    }
    let mut x = 0u128;
    for (i, &c) in b.iter().enumerate() {
        x |= (c as u128) << (8 * i);
    }
    if b[b.len() - 1] & 0x80 != 0 && b.len() < 16 {
        x |= u128::MAX << (8 * b.len());
    }
    Int::from_i128(x as i128)
}

/// `strtol(s, &end, 0)` followed by CPython's `PyLong_FromString` fallback,
/// approximated: decimal, `0x`, `0o`, `0b`, leading-zero octal, underscores.
pub(super) fn parse_int_literal(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let t = t.replace('_', "");
    let lower = t.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i128::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Decode a Python string-literal body with backslash escapes (STRING opcode).
pub(super) fn unescape_bytes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' || i + 1 == s.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = s[i + 1];
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + (s[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' if i + 2 <= s.len() => {
                let h = std::str::from_utf8(&s[i..i + 2])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'\n' => {}
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    out
}

/// `raw-unicode-escape` decoding (UNICODE opcode).
pub(super) fn raw_unicode_escape(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() && (s[i + 1] == b'u' || s[i + 1] == b'U') {
            let n = if s[i + 1] == b'u' { 4 } else { 8 };
            if i + 2 + n <= s.len()
                && let Some(c) = std::str::from_utf8(&s[i + 2..i + 2 + n])
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
            {
                out.push(c);
                i += 2 + n;
                continue;
            }
        }
        out.push(s[i] as char);
        i += 1;
    }
    out
}
