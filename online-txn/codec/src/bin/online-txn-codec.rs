//! `online-txn-codec`: the codec CLI on its own (the same commands as `online-txn codec`).
//! See `docs/codec.md`.

fn main() -> std::process::ExitCode {
    openteller_codec::cli::cli_main(std::env::args_os())
}
