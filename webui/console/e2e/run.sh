#!/usr/bin/env bash
# Browser end-to-end test of the backoffice console: a real `backoffice serve` (SQLite, local
# object directory, a free loopback port, all in a temp dir) and the console it embeds, in
# headless Debian Chromium driven by playwright-core.
#
# Needs the backoffice binary built first (cargo build -p <the backoffice crate>; it embeds
# webui/console/dist, so build the console before it). It is taken from $OPENTELLER_BIN_DIR, else
# $CARGO_TARGET_DIR/debug, else <repo>/target/debug.
# Installs Debian's chromium when /usr/bin/chromium is missing (as root or through sudo) and the
# npm dependencies (npm ci). Screenshots and the server log go to $OPENTELLER_ARTIFACTS (default:
# a temp dir).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
. "$here/../../../deploy/local/lib.sh"

if [ -n "${OPENTELLER_BIN_DIR:-}" ]; then
  bin_dir="$OPENTELLER_BIN_DIR"
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
  case "$CARGO_TARGET_DIR" in
    /*) bin_dir="$CARGO_TARGET_DIR/debug" ;;
    *) bin_dir="$repo/$CARGO_TARGET_DIR/debug" ;;
  esac
else
  bin_dir="$repo/target/debug"
fi
[ -x "$bin_dir/backoffice" ] \
  || die "$bin_dir/backoffice is missing: build it first (cargo build, with webui/console built for it to embed), or point OPENTELLER_BIN_DIR / CARGO_TARGET_DIR at the build"
export OPENTELLER_BIN_DIR="$(cd "$bin_dir" && pwd)"

need_node

ensure_chromium
ensure_cjk_font

cd "$here"
if [ -f package-lock.json ]; then
  say "npm ci (console e2e)"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "npm install (console e2e; no package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
fi

say "node --test console.test.mjs (backoffice from $OPENTELLER_BIN_DIR)"
node --test --test-reporter=spec console.test.mjs
