#!/usr/bin/env bash
# Browser end-to-end test of the device panel: real driver-proxies with virtual devices, a real
# `devsim panel`, and the page in headless Debian Chromium driven by playwright-core.
#
# Needs the binaries built first (cargo build -p openteller-driver-proxy -p openteller-device-panel).
# They are taken from $OPENTELLER_BIN_DIR, else $CARGO_TARGET_DIR/debug, else <repo>/target/debug.
# Installs Debian's chromium when /usr/bin/chromium is missing (as root or through sudo) and the
# npm dependencies (npm ci). The screenshot goes to $OPENTELLER_ARTIFACTS (default: a temp dir).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/../../../deploy/local/lib.sh"

need_node

ensure_chromium

cd "$here"
if [ -f package-lock.json ]; then
  say "npm ci (e2e)"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "npm install (e2e; no package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
fi

say "node --test panel.test.mjs"
node --test --test-reporter=spec panel.test.mjs
