//! `backoffice`: parses the command line and runs the services (see `docs/backoffice.md`).

use std::process::ExitCode;

fn main() -> ExitCode {
    openteller_backoffice::cli::main()
}
