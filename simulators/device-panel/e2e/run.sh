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
say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node is not installed (Node.js 20 or newer is needed)"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old: 20 or newer is needed"

CHROMIUM="${OPENTELLER_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  [ "$CHROMIUM" = /usr/bin/chromium ] || die "OPENTELLER_CHROMIUM=$CHROMIUM is not an executable"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
      || die "/usr/bin/chromium is missing and we are neither root nor allowed to sudo: run 'apt-get install -y chromium' as root and retry"
    sudo="sudo -n"
  fi
  say "installing Debian chromium (apt-get)"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
    || die "could not install chromium with apt-get; install it (apt-get install -y chromium) and retry"
  [ -x /usr/bin/chromium ] || die "apt-get installed chromium but /usr/bin/chromium is still missing"
fi
export OPENTELLER_CHROMIUM="$CHROMIUM"

cd "$here"
# Playwright must never fetch its own browsers (that download does not work here).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -f package-lock.json ]; then
  say "npm ci (e2e)"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "npm install (e2e; no package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
fi

say "node --test panel.test.mjs"
node --test --test-reporter=spec panel.test.mjs
