//! Sizes on the command line.

use anyhow::Result;

/// `8G`, `512M`, `64K`, or bytes (the scanner's budgets read them the same way).
pub fn parse_size(s: &str) -> Result<u64> {
    pickguard_scan::budgets::parse_size(s).map_err(anyhow::Error::msg)
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
