//! `host-sim`: the simulated bank host. Everything lives in the library; see
//! [`openteller_host_sim::cli`].

fn main() -> std::process::ExitCode {
    openteller_host_sim::cli::main()
}
