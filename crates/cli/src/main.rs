//! The `edge-node` binary: parses the command line and runs it.

mod cli;
mod serve;

fn main() -> std::process::ExitCode {
    cli::main()
}
