//! The `radacctd` binary: all work is in the library; see `cli`.

fn main() -> std::process::ExitCode {
    radacctd::cli::main()
}
