//! The `aegis` command. All of its logic lives in the library (`aegis::cli`),
//! so tests and other binaries can reuse it.

fn main() -> std::process::ExitCode {
    aegis::cli::main()
}
