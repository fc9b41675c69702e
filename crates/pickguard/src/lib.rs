//! The `pickguard` command line: argument parsing and dispatch only. The
//! binary (`main.rs`) and the Python wheel's console script both call
//! [`main`].

pub mod api;
mod cli;
#[macro_use]
mod printer;
mod commands;
mod input;
mod remote;
mod size;

use clap::Parser;
use std::ffi::OsString;

/// Run the command line on `args` (the program name first) and return the
/// exit status. Help, version and usage errors print as clap prints them.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // 0 for --help and --version, 2 for usage errors.
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
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
        cli::Command::Firewall(cli::FirewallCommand::Migrate(args)) => {
            commands::firewall::migrate(args)
        }
        cli::Command::Firewall(cli::FirewallCommand::Feed(cli::FeedCommand::Import(args))) => {
            commands::firewall::feed_import(args)
        }
        cli::Command::Firewall(cli::FirewallCommand::Feed(cli::FeedCommand::Status(args))) => {
            commands::firewall::feed_status(args)
        }
        cli::Command::Sign(args) => commands::sign::sign(args),
        cli::Command::Verify(args) => commands::sign::verify(args),
        cli::Command::Completions(args) => commands::docs::completions(args),
        cli::Command::Man(args) => commands::docs::man(args),
    };
    match code {
        Ok(c) => c,
        // Output goes through `printer`, which turns a closed pipe into the
        // end of the output; every error left is a real one.
        Err(e) => {
            eprintln!("pickguard: error: {e:#}");
            2
        }
    }
}
