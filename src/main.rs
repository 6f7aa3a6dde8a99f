//! The `gambiarra` binary: parse the command line, run the subcommand.

fn main() -> std::process::ExitCode {
    gambiarra::cli::run(argh::from_env())
}
