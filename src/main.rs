//! The `paperclip` command; all logic lives in the library and the `cli` module.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
