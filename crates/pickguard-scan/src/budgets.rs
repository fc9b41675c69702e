//! Analysis budgets a user can set: the policy file's `[limits]` table and
//! `scan`/`convert`'s `--max-*` flags. Unset budgets keep the defaults of
//! [`ScanOptions`] and `pickguard_pickle::Limits`; a file that reaches one is
//! inconclusive (PG301), never clean.

use crate::ScanOptions;
use serde::{Deserialize, Deserializer, Serialize};

/// One budget: its name (the flag is `--max-…` with dashes, the `[limits]`
/// key the same with underscores), what it bounds, and how to read it.
pub struct BudgetInfo {
    pub key: &'static str,
    pub bounds: &'static str,
    /// A size (`4G`) rather than a count (`8M` = 8 000 000).
    pub size: bool,
}

/// Every budget, in the order `--help` and docs/policy.md give them.
pub const BUDGETS: &[BudgetInfo] = &[
    BudgetInfo {
        key: "max_ops",
        bounds: "pickle opcodes executed per stream",
        size: false,
    },
    BudgetInfo {
        key: "max_memo",
        bounds: "distinct memo entries per stream",
        size: false,
    },
    BudgetInfo {
        key: "max_nodes",
        bounds: "symbolic values built per stream (memory grows with it)",
        size: false,
    },
    BudgetInfo {
        key: "max_stack",
        bounds: "values on the pickle stack at once",
        size: false,
    },
    BudgetInfo {
        key: "max_streams",
        bounds: "pickle streams per file or member",
        size: false,
    },
    BudgetInfo {
        key: "max_members",
        bounds: "archive members per file, nested archives included",
        size: false,
    },
    BudgetInfo {
        key: "max_depth",
        bounds: "containers nested in containers (zip in tar in gzip...)",
        size: false,
    },
    BudgetInfo {
        key: "max_decompressed",
        bounds: "bytes one file's compressed streams and members may decompress to, in all",
        size: true,
    },
];

/// Budgets to override; `None` keeps the default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ops: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memo: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_nodes: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_stack: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_streams: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_members: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_depth: Option<u64>,
    #[serde(
        default,
        deserialize_with = "size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_decompressed: Option<u64>,
}

impl Budgets {
    /// `over`'s set budgets replace `self`'s (the CLI over the policy file).
    pub fn then(mut self, over: &Budgets) -> Budgets {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            max_ops,
            max_memo,
            max_nodes,
            max_stack,
            max_streams,
            max_members,
            max_depth,
            max_decompressed
        );
        self
    }

    /// Set `key` (`max_nodes` or `max-nodes`) from its text form.
    pub fn set(&mut self, key: &str, text: &str) -> Result<(), String> {
        let key = key.replace('-', "_");
        let info = BUDGETS
            .iter()
            .find(|b| b.key == key)
            .ok_or_else(|| format!("no budget named {key:?}"))?;
        let v = if info.size {
            parse_size(text)?
        } else {
            parse_count(text)?
        };
        *self
            .slot(&key)
            .ok_or_else(|| format!("no budget named {key:?}"))? = Some(v);
        Ok(())
    }

    fn slot(&mut self, key: &str) -> Option<&mut Option<u64>> {
        Some(match key {
            "max_ops" => &mut self.max_ops,
            "max_memo" => &mut self.max_memo,
            "max_nodes" => &mut self.max_nodes,
            "max_stack" => &mut self.max_stack,
            "max_streams" => &mut self.max_streams,
            "max_members" => &mut self.max_members,
            "max_depth" => &mut self.max_depth,
            "max_decompressed" => &mut self.max_decompressed,
            _ => return None,
        })
    }

    /// Write the set budgets into `opts`.
    pub fn apply(&self, opts: &mut ScanOptions) {
        let us = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let l = &mut opts.pickle.limits;
        if let Some(v) = self.max_ops {
            l.max_ops = v;
        }
        if let Some(v) = self.max_memo {
            l.max_memo = us(v);
        }
        if let Some(v) = self.max_nodes {
            l.max_nodes = us(v);
        }
        if let Some(v) = self.max_stack {
            l.max_stack = us(v);
        }
        if let Some(v) = self.max_streams {
            opts.max_streams = us(v);
        }
        if let Some(v) = self.max_members {
            opts.max_members = us(v);
        }
        if let Some(v) = self.max_depth {
            opts.max_depth = us(v);
        }
        if let Some(v) = self.max_decompressed {
            opts.max_decompressed = v;
        }
    }

    /// The value `opts` holds for `key`.
    pub fn current(opts: &ScanOptions, key: &str) -> Option<u64> {
        let l = &opts.pickle.limits;
        Some(match key {
            "max_ops" => l.max_ops,
            "max_memo" => l.max_memo as u64,
            "max_nodes" => l.max_nodes as u64,
            "max_stack" => l.max_stack as u64,
            "max_streams" => opts.max_streams as u64,
            "max_members" => opts.max_members as u64,
            "max_depth" => opts.max_depth as u64,
            "max_decompressed" => opts.max_decompressed,
            _ => return None,
        })
    }
}

/// A budget's value as `--help` shows it: `8M`, `200k`, `1G` (bytes), `4`.
pub fn show(info: &BudgetInfo, v: u64) -> String {
    if info.size {
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if v >= 1 << shift && v.is_multiple_of(1 << shift) {
                return format!("{}{unit}", v >> shift);
            }
        }
        return v.to_string();
    }
    for (unit, m) in [("G", 1_000_000_000), ("M", 1_000_000), ("k", 1_000)] {
        if v >= m && v.is_multiple_of(m) {
            return format!("{}{unit}", v / m);
        }
    }
    v.to_string()
}

/// `8000000`, `8_000_000`, `8M`, `500k`, `2G` (decimal: k = 1 000).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1_000u64),
        Some('M') => (&t[..t.len() - 1], 1_000_000),
        Some('G') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t.as_str(), 1),
    };
    let n: u64 = num
        .parse()
        .ok()
        .filter(|_| num.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| format!("{s:?}: expected a whole number like 8000000 or 8M"))?;
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    if v == 0 {
        return Err(format!("{s:?}: must be at least 1"));
    }
    Ok(v)
}

/// `4G`, `512M`, `64K`, `1.5G` or bytes (binary: K = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    // Digits with at most one point: `1e3`, `+1G`, `inf` are not sizes.
    let plain = !num.is_empty()
        && num.chars().all(|c| c.is_ascii_digit() || c == '.')
        && num.matches('.').count() <= 1;
    let n: f64 = num
        .parse()
        .ok()
        .filter(|_| plain)
        .ok_or_else(|| format!("size {s:?}: expected a size like 8G or 512M"))?;
    let v = n * mult as f64;
    if !(v.is_finite() && v >= 1.0) {
        return Err(format!("size {s:?}: must be at least one byte"));
    }
    if v >= u64::MAX as f64 {
        return Err(format!("size {s:?}: too large"));
    }
    if v.fract() != 0.0 {
        return Err(format!("size {s:?}: not a whole number of bytes"));
    }
    Ok(v as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    Int(u64),
    Str(String),
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Text::deserialize(d)? {
        Text::Int(0) => Err(serde::de::Error::custom("must be at least 1")),
        Text::Int(n) => Ok(Some(n)),
        Text::Str(s) => parse_count(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Text::deserialize(d)? {
        Text::Int(0) => Err(serde::de::Error::custom("must be at least one byte")),
        Text::Int(n) => Ok(Some(n)),
        Text::Str(s) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sizes_and_precedence() {
        assert_eq!(parse_count("8M").unwrap(), 8_000_000);
        assert_eq!(parse_count("8_000_000").unwrap(), 8_000_000);
        assert_eq!(parse_count("500k").unwrap(), 500_000);
        assert!(parse_count("0").is_err());
        assert!(parse_count("-1").is_err());
        assert!(parse_count("1.5M").is_err());
        assert!(parse_count("99999999999G").is_err());
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("0.5G").unwrap(), 512 << 20);
        for bad in ["1e3", "+1G", "inf", "1.2.3M", "", "G", "1.0000001", "0.1K"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_count("+3").is_err());
        assert!(parse_size("0.5").is_err());
        let file: Budgets =
            toml::from_str("max_nodes = \"32M\"\nmax_depth = 6\nmax_decompressed = \"4G\"")
                .unwrap();
        assert_eq!(file.max_nodes, Some(32_000_000));
        assert_eq!(file.max_decompressed, Some(4 << 30));
        assert!(toml::from_str::<Budgets>("max_nodez = 1").is_err());
        assert!(toml::from_str::<Budgets>("max_depth = 0").is_err());
        let mut cli = Budgets::default();
        cli.set("max-depth", "2").unwrap();
        assert!(cli.set("max-depth", "two").is_err());
        assert!(cli.set("max-everything", "2").is_err());
        let both = file.then(&cli);
        assert_eq!(
            (both.max_depth, both.max_nodes),
            (Some(2), Some(32_000_000))
        );
        let mut o = ScanOptions::default();
        both.apply(&mut o);
        assert_eq!(o.max_depth, 2);
        assert_eq!(o.pickle.limits.max_nodes, 32_000_000);
        for b in BUDGETS {
            assert!(Budgets::current(&o, b.key).is_some(), "{}", b.key);
            assert!(Budgets::default().slot(b.key).is_some(), "{}", b.key);
        }
    }
}
