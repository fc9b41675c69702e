//! `pickguard completions` and `pickguard man`: generated from the clap
//! definition, so they never drift from `--help`.

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use anyhow::{Context, Result};
use clap::CommandFactory;

pub fn completions(args: CompletionsArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "pickguard", &mut out);
    crate::printer::write_bytes(&out)?;
    Ok(0)
}

/// Every command's page: `pickguard`, `pickguard-scan`, `pickguard-firewall-serve`...
fn pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
    let name = if prefix.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    let page = cmd.clone().name(name.clone());
    out.push((name.clone(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, &name, out);
    }
}

pub fn man(args: ManArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    cmd.build();
    let Some(dir) = args.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        crate::printer::write_bytes(&out)?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut all = Vec::new();
    pages(&cmd, "", &mut all);
    for (name, page) in &all {
        let mut out = Vec::new();
        clap_mangen::Man::new(page.clone()).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    outln!("wrote {} manual pages to {}", all.len(), dir.display())?;
    Ok(0)
}
