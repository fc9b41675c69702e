//! Sizes on the command line.

use anyhow::{Context, Result, bail};

/// `8G`, `512M`, `64K`, or bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("size {s:?}: expected a size like 8G or 512M"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("size {s:?}: must be positive");
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(super::parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(super::parse_size("1000").unwrap(), 1000);
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("-1G").is_err());
    }
}
