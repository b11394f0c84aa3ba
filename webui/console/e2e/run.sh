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
say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

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

# The console speaks zh-CN by default: without a CJK font the screenshots show empty boxes (the
# test itself reads text, not pixels, so this is best effort).
if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  say "installing a CJK font for readable screenshots (apt-get install fonts-wqy-microhei)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 \
    || printf 'warning: no CJK font (apt-get install -y fonts-wqy-microhei): zh-CN screenshots will show boxes\n' >&2
fi

cd "$here"
# Playwright must never fetch its own browsers (that download does not work here).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -f package-lock.json ]; then
  say "npm ci (console e2e)"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "npm install (console e2e; no package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
fi

say "node --test console.test.mjs (backoffice from $OPENTELLER_BIN_DIR)"
node --test --test-reporter=spec console.test.mjs
