//! The `edge-node` binary: parses the command line and runs it.

mod cli;
mod deploy;
mod new;
mod serve;
mod settings;

fn main() -> std::process::ExitCode {
    cli::main()
}
