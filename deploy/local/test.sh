#!/usr/bin/env bash
# Runs every test of OpenTeller: formatting, lints, unit and integration tests (which spawn the
# real binaries). Installs what it needs; set CARGO_TARGET_DIR to reuse builds between runs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(repo_root)"

need_toolchain
need_node
if [ -z "${OPENTELLER_TEST_POSTGRES:-}" ]; then ensure_postgres; fi
if [ -z "${OPENTELLER_TEST_REDIS:-}" ]; then ensure_redis; fi
ensure_s3s_fs
ensure_webview_deps
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p openteller-terminal-native --features window --all-targets --locked -- -D warnings
say "cargo build (binaries the integration tests spawn)"
cargo build --workspace --locked
say "cargo test"
cargo test --workspace --locked -- --test-threads="${OPENTELLER_TEST_THREADS:-4}"
say "windowed terminal-native (kiosk window under its own Xvfb, bridge over wry IPC)"
cargo test -p openteller-terminal-native --features window --locked --bin terminal-native --test windowed
say "fuzz the 8583 codec for 30 s (libFuzzer, stable toolchain)"
bash online-txn/codec/fuzz/run.sh 30 2>&1 | tail -n 2
say "browser end-to-end (device panel)"
bash simulators/device-panel/e2e/run.sh
say "browser end-to-end (console)"
bash webui/console/e2e/run.sh
bash webui/kiosk/e2e/run.sh  # browser end-to-end (kiosk SPA against the whole terminal)
say "all tests passed"
