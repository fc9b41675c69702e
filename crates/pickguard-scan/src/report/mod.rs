//! Report writers.
pub mod json;
pub mod sarif;
pub mod text;

/// Text that came from a scanned file (a module or name string, a member
/// name, an error) made safe for a terminal: control characters (C0, DEL,
/// C1) and bidirectional overrides are shown as escapes, so a file cannot
/// print a forged line (`\nCLEAN ...`) or recolour the report.
pub fn safe_text(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        let u = c as u32;
        if u < 0x20 || u == 0x7f || (0x80..0xa0).contains(&u) {
            o.push_str(&format!("\\x{u:02x}"));
        } else if matches!(u, 0x202a..=0x202e | 0x2066..=0x2069 | 0x200e | 0x200f | 0x061c) {
            o.push_str(&format!("\\u{{{u:04x}}}"));
        } else {
            o.push(c);
        }
    }
    o
}

/// A path shown losslessly: valid UTF-8 as is (backslashes doubled, control
/// characters escaped), other bytes as `\xNN`, so two different names never
/// render the same.
pub fn display_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = p.as_os_str().as_bytes();
    let mut o = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                o.push_str("\\\\");
            } else {
                o.push_str(&safe_text(c.encode_utf8(&mut [0; 4])));
            }
        }
        for b in chunk.invalid() {
            o.push_str(&format!("\\x{b:02x}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_from_a_file_can_forge_a_line() {
        let forged = "os.system\nCLEAN         fake.pt (pickle)\x1b[32m";
        let shown = safe_text(forged);
        assert!(!shown.contains('\n') && !shown.contains('\x1b'), "{shown}");
        assert!(shown.contains("\\x0a"));
        assert_eq!(safe_text("evil\u{202e}txt.pt"), "evil\\u{202e}txt.pt");
        use std::os::unix::ffi::OsStrExt;
        let a = std::path::Path::new(std::ffi::OsStr::from_bytes(b"m\xff.pt"));
        let b = std::path::Path::new("m\u{fffd}.pt");
        assert_ne!(display_path(a), display_path(b));
        assert_eq!(display_path(a), "m\\xff.pt");
        assert_ne!(
            display_path(std::path::Path::new("a\\x41")),
            display_path(std::path::Path::new("aA"))
        );
    }
}
