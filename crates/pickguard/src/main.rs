//! The `pickguard` binary: everything is in the library (`pickguard::main`),
//! which the Python wheel's `pickguard` command calls too.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(pickguard::main(std::env::args_os()))
}
