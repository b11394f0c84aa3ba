#!/usr/bin/env bash
# Builds and runs the codec's libFuzzer target on the stable toolchain (no cargo-fuzz, no
# nightly): coverage instrumentation through stable -C flags, no sanitizer (the codec has no
# unsafe code; the fuzzer looks for panics, overflows and hangs).
#
#   online-txn/codec/fuzz/run.sh [SECONDS]     # default 60
#
# The corpus grows in online-txn/codec/fuzz/corpus/decode (not committed); crashes land in
# online-txn/codec/fuzz/artifacts/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${1:-60}"
target="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --target "$target" \
  --target-dir "${OPENTELLER_FUZZ_TARGET_DIR:-/var/tmp/openteller-fuzz-target}" --bin decode
bin="${OPENTELLER_FUZZ_TARGET_DIR:-/var/tmp/openteller-fuzz-target}/$target/release/decode"
mkdir -p "$here/corpus/decode" "$here/artifacts"
"$bin" -max_total_time="$seconds" -artifact_prefix="$here/artifacts/" "$here/corpus/decode"
