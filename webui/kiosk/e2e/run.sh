#!/usr/bin/env bash
# Browser end-to-end test of the kiosk business pages against the whole terminal: host-sim,
# online-txn, terminal-native --headless (serving the built kiosk), four virtual driver-proxies and
# devsim panel's simulator API, with the kiosk in headless Debian Chromium (playwright-core).
#
# Builds what it needs: the kiosk (npm ci + vite build into webui/kiosk/dist) and, unless
# OPENTELLER_BIN_DIR points at ready binaries, `cargo build` of the five packages into
# $CARGO_TARGET_DIR (default <repo>/target). Installs Debian's chromium when /usr/bin/chromium is
# missing (as root or through sudo) and a CJK font for readable screenshots. Screenshots, logs and
# the e-journal go to $OPENTELLER_ARTIFACTS (default: a temp dir). With OPENTELLER_WINDOWED_BIN (a
# terminal-native built with --features window) the kiosk also runs in the windowed host under Xvfb.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kiosk="$(cd "$here/.." && pwd)"
repo="$(cd "$kiosk/../.." && pwd)"
. "$here/../../../deploy/local/lib.sh"

need_node

if [ -n "${OPENTELLER_BIN_DIR:-}" ]; then
  bin_dir="$OPENTELLER_BIN_DIR"
else
  say "cargo build (terminal-native, driver-proxy, online-txn, host-sim, devsim)"
  (cd "$repo" && cargo build -q -p openteller-terminal-native -p openteller-driver-proxy \
    -p openteller-online-txn -p openteller-host-sim -p openteller-device-panel)
  case "${CARGO_TARGET_DIR:-}" in
    "") bin_dir="$repo/target/debug" ;;
    /*) bin_dir="$CARGO_TARGET_DIR/debug" ;;
    *) bin_dir="$repo/$CARGO_TARGET_DIR/debug" ;;
  esac
fi
for b in terminal-native driver-proxy online-txn host-sim devsim; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: build it (cargo build -p ...) or point OPENTELLER_BIN_DIR at the build"
done
export OPENTELLER_BIN_DIR="$(cd "$bin_dir" && pwd)"

ensure_chromium
ensure_cjk_font


if [ -z "${OPENTELLER_KIOSK_DIST:-}" ]; then
  say "npm ci + unit tests + vite build (webui/kiosk)"
  (cd "$kiosk" && npm ci --no-audit --no-fund --loglevel=error && npm test --silent && npm run build --silent)
fi

cd "$here"
say "npm ci (kiosk e2e)"
npm ci --no-audit --no-fund --loglevel=error

say "node --test kiosk.test.mjs (binaries from $OPENTELLER_BIN_DIR)"
node --test --test-reporter=spec kiosk.test.mjs

# The windowed host (wry IPC under Xvfb) when a binary built with --features window is given.
if [ -n "${OPENTELLER_WINDOWED_BIN:-}" ]; then
  say "node --test windowed.test.mjs ($OPENTELLER_WINDOWED_BIN under Xvfb)"
  node --test --test-reporter=spec windowed.test.mjs
fi
