//! The `edge-node` binary: parses the command line and runs it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
