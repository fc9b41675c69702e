//! The `pickguard` binary: argument parsing and dispatch only.

mod cli;
mod commands;
mod input;
mod size;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Scan(args) => commands::scan::run(args),
        cli::Command::Convert(args) => commands::convert::run(args),
        cli::Command::Inspect(args) => commands::inspect::run(args),
        cli::Command::Hash(args) => commands::sign::hash(args),
        cli::Command::Audit(args) => commands::audit::run(args),
        cli::Command::Run(args) => commands::run::run(args),
        cli::Command::Watch(args) => commands::watch::run(args),
        cli::Command::Rules(args) => commands::rules::run(args),
        cli::Command::Firewall(cli::FirewallCommand::Serve(args)) => {
            commands::firewall::serve(args)
        }
        cli::Command::Firewall(cli::FirewallCommand::HashToken) => commands::firewall::hash_token(),
        cli::Command::Sign(args) => commands::sign::sign(args),
        cli::Command::Verify(args) => commands::sign::verify(args),
    };
    match code {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            // A closed pipe (pickguard scan | head) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("pickguard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
