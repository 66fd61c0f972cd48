//! The `rainier` binary (everything is in the library: `rainier_cli::main`).

fn main() -> std::process::ExitCode {
    rainier_cli::main()
}
