# Shared helpers of the local scripts: checks and installs of what the commands need.
# Sourced, not run.

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# need_cmd CMD HINT: stop with a clear message when CMD is missing.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed. $2"
}

# need_apt PKG...: install Debian packages that are missing (as root or through sudo).
need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing Debian packages: ${missing[*]} (run: apt-get install ${missing[*]})"
    sudo="sudo"
  fi
  say "installing ${missing[*]}"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "could not install ${missing[*]}; install them with apt-get and retry"
}

# need_node: Node.js 20 or newer with npm (the web pages are built and tested with them).
need_node() {
  need_cmd node "Install Node.js 20 or newer."
  need_cmd npm "Install npm (it comes with Node.js)."
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 20 ] || die "Node.js $(node --version) is too old: 20 or newer is needed"
}

# ensure_chromium: exports OPENTELLER_CHROMIUM (default /usr/bin/chromium, Debian's package,
# installed when missing) for the browser tests, and keeps Playwright from downloading browsers
# of its own (that download does not work here).
ensure_chromium() {
  local c="${OPENTELLER_CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$c" ]; then
    [ "$c" = /usr/bin/chromium ] || die "OPENTELLER_CHROMIUM=$c is not an executable"
    need_apt chromium
    [ -x /usr/bin/chromium ] || die "apt-get installed chromium but /usr/bin/chromium is still missing"
  fi
  export OPENTELLER_CHROMIUM="$c"
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
}

# ensure_cjk_font: a CJK font, so that screenshots of zh-CN pages show characters rather than
# boxes. Best effort: the tests read text, not pixels.
ensure_cjk_font() {
  if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
    (need_apt fonts-wqy-microhei) \
      || printf 'warning: no CJK font (apt-get install -y fonts-wqy-microhei): zh-CN screenshots will show boxes\n' >&2
  fi
}

# The toolchain every command needs.
need_toolchain() {
  need_cmd cargo "Install Rust from https://rustup.rs (rustc 1.88 or newer)."
  need_apt gcc pkg-config
}

# ensure_postgres: PostgreSQL on 127.0.0.1:5432 with trust auth for local users (the journal
# and repository suites use it). Starts the Debian cluster when it is installed but stopped,
# installs it when missing.
ensure_postgres() {
  command -v pg_isready >/dev/null 2>&1 || need_apt postgresql-client
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    need_apt postgresql
  fi
  say "starting PostgreSQL"
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 \
    || pg_ctlcluster "$version" main start >/dev/null 2>&1 || true
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432; start it and retry"
  # The tests connect as postgres without a password from 127.0.0.1.
  psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1 \
    || die "PostgreSQL refuses postgres@127.0.0.1 without a password: allow trust for 127.0.0.1 in pg_hba.conf, or set OPENTELLER_TEST_POSTGRES=postgres://user:pass@127.0.0.1:5432/postgres"
}

# ensure_redis: Redis on 127.0.0.1:6379 (the cache/bus suite, and the backoffice when
# cache.redis is set). Installs redis-server when missing; when Redis does not answer, starts
# the Debian service, else a daemon of its own without persistence.
ensure_redis() {
  command -v redis-cli >/dev/null 2>&1 || need_apt redis-tools
  [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] && return 0
  command -v redis-server >/dev/null 2>&1 || need_apt redis-server
  say "starting Redis"
  if ! { [ "$(id -u)" -eq 0 ] && service redis-server start >/dev/null 2>&1; }; then
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
      >/dev/null 2>&1 || true
  fi
  for _ in $(seq 50); do
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] && return 0
    sleep 0.2
  done
  die "Redis does not answer PING on 127.0.0.1:6379 (is the port taken, or a password set?); start it and retry, or set OPENTELLER_TEST_REDIS=redis://HOST:PORT/"
}

# ensure_s3s_fs: the s3s-fs binary, a small S3 server over a directory that the object-store
# suite starts. Installed once with cargo into ~/.cargo/bin, built in a target directory kept
# between runs. 0.14.1: newer releases need a newer rustc than 1.95.
ensure_s3s_fs() {
  if [ -n "${OPENTELLER_S3S_FS:-}" ] && [ -x "$OPENTELLER_S3S_FS" ]; then return 0; fi
  if command -v s3s-fs >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
    return 0
  fi
  need_toolchain
  say "installing s3s-fs 0.14.1 (about 2 minutes, once)"
  local log
  log="$(mktemp)"
  if ! cargo install s3s-fs@0.14.1 --locked --features binary \
      --target-dir /var/tmp/openteller-s3s-fs-target >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    die "could not install s3s-fs (see above); run: cargo install s3s-fs@0.14.1 --locked --features binary"
  fi
  rm -f "$log"
  command -v s3s-fs >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ] \
    || die "s3s-fs was installed but is not in ${CARGO_HOME:-$HOME/.cargo}/bin; add it to PATH"
}

# ensure_webview_deps: what the windowed terminal-native (feature `window`: tao + wry over
# WebKitGTK 4.1) needs to build and run, and Xvfb for its test.
ensure_webview_deps() {
  need_apt pkg-config libwebkit2gtk-4.1-dev libgtk-3-dev libsoup-3.0-dev \
    libjavascriptcoregtk-4.1-dev xvfb
}

# need_free_ports HOST:PORT...: stop when something already listens on one of them.
need_free_ports() {
  local a
  for a in "$@"; do
    if (exec 3<>"/dev/tcp/${a%:*}/${a##*:}") 2>/dev/null; then
      die "$a is already in use (another up.sh, or another program); stop it or choose another address (see the variables at the top of up.sh)"
    fi
  done
}

# socket_alive PATH: a server accepts connections on this Unix socket.
socket_alive() {
  local rc=0
  curl -s --max-time 2 --unix-socket "$1" -o /dev/null http://localhost/ 2>/dev/null || rc=$?
  [ "$rc" -ne 7 ]
}

# kiosk_package HOME: prints the directory of the kiosk business package. OPENTELLER_KIOSK_PACKAGE
# if set; else webui/kiosk built with Vite (npm ci when its dependencies changed); else a page
# saying that the kiosk is missing from this checkout. Progress goes to stderr.
kiosk_package() {
  local home="$1"
  if [ -n "${OPENTELLER_KIOSK_PACKAGE:-}" ]; then
    [ -f "$OPENTELLER_KIOSK_PACKAGE/index.html" ] \
      || die "OPENTELLER_KIOSK_PACKAGE=$OPENTELLER_KIOSK_PACKAGE has no index.html"
    (cd "$OPENTELLER_KIOSK_PACKAGE" && pwd)
    return 0
  fi
  if [ -f webui/kiosk/package.json ] && [ -f webui/kiosk/index.html ]; then
    say "building the kiosk (webui/kiosk)" >&2
    if [ ! -d webui/kiosk/node_modules ] \
        || [ webui/kiosk/package-lock.json -nt webui/kiosk/node_modules/.package-lock.json ]; then
      (cd webui/kiosk && npm ci --no-audit --no-fund --loglevel=error) >&2 \
        || die "npm ci failed in webui/kiosk"
    fi
    (cd webui/kiosk && npm run --silent build) >"$home/log/kiosk-build.log" 2>&1 \
      || die "the kiosk build failed; see $home/log/kiosk-build.log"
    [ -f webui/kiosk/dist/index.html ] || die "the kiosk build made no webui/kiosk/dist/index.html"
    (cd webui/kiosk/dist && pwd)
    return 0
  fi
  local missing="$home/kiosk-missing"
  mkdir -p "$missing"
  cat >"$missing/index.html" <<'HTML'
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>OpenTeller: no kiosk</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>The kiosk business pages are not in this checkout</h1>
<p>terminal-native is running, but <code>webui/kiosk</code> (the Vue kiosk with the SJSL
library) was not found, so there is nothing to show. Update the checkout and run
<code>deploy/local/up.sh</code> again, or point <code>OPENTELLER_KIOSK_PACKAGE</code> at a
built business package.</p>
</body></html>
HTML
  say "webui/kiosk is missing: the kiosk URL shows a page saying so" >&2
  printf '%s\n' "$missing"
}

# hex_to_base64 HEX: the bytes as base64 (proto3 JSON writes bytes so).
hex_to_base64() {
  printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')" | base64 -w0
}

# load_tmk DEVSIM ENDPOINT TMK_HEX: the key ceremony of the virtual EPP — the TMK as two
# components whose XOR is the key, imported straight at the PIN pad's driver-proxy.
load_tmk() {
  local devsim="$1" endpoint="$2" tmk="$3" c1 c2="" i out
  c1="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  for i in $(seq 0 2 30); do
    c2+="$(printf '%02x' $(( 0x${tmk:$i:2} ^ 0x${c1:$i:2} )))"
  done
  out="$("$devsim" --device "$endpoint" exec \
    "{\"pinPad\":{\"importKeyComponents\":{\"name\":\"TMK\",\"usage\":\"KEY_USAGE_KEY_ENCRYPTION\",\"algorithm\":\"KEY_ALGORITHM_TDES\",\"components\":[\"$(hex_to_base64 "$c1")\",\"$(hex_to_base64 "$c2")\"]}}}" 2>&1)" \
    || { printf '%s\n' "$out" >&2; return 1; }
  grep -q 'COMPLETION_CODE_SUCCESS' <<<"$out" || { printf '%s\n' "$out" >&2; return 1; }
}

# write_terminal_config HOME BIN PACKAGE KIOSK_ADDR KEEPER_ADDR [windowed]: the keeper's
# configuration (four driver-proxies, then terminal-native) and terminal-native's, for the
# virtual terminal T0000001 of the local stack.
write_terminal_config() {
  local home="$1" bin="$2" package="$3" kiosk="$4" keeper="$5" windowed="${6:-}"
  local native_args='"--config", "'"$home/native.toml"'", "--headless"'
  if [ -n "$windowed" ]; then native_args='"--config", "'"$home/native.toml"'"'; fi
  mkdir -p "$home/native"
  cat >"$home/native.toml" <<CFG
terminal_id = "T0000001"
business_package = "$package"
journal_dir = "$home/native/ej"
state_dir = "$home/native/state"

[headless]
listen = "$kiosk"

[window]
fullscreen = true
cursor = false

[devices.idc]
class = "CardReader"
endpoint = "unix:$home/run/idc.sock"

[devices.pin]
class = "PinPad"
endpoint = "unix:$home/run/pin.sock"

[devices.cdm]
class = "CashDispenser"
endpoint = "unix:$home/run/cdm.sock"

[devices.ptr]
class = "ReceiptPrinter"
endpoint = "unix:$home/run/ptr.sock"
critical = false

[keeper]
control = "tcp:$keeper"
process = "native"

[online]
address = "127.0.0.1:5800"
pinpad = "pin"
CFG
  {
    cat <<CFG
# The keeper of the local virtual terminal T0000001 (written by deploy/local/up.sh).
[control]
listen = "tcp:$keeper"

[restart]
initial_backoff_ms = 500
max_backoff_ms = 10000
budget = 5
window_ms = 300000

[environment]
interval_ms = 10000
min_free_memory_mb = 128
warn_free_memory_mb = 512
warn_load_per_cpu = 4.0
disk = [ { path = "$home", min_free_mb = 100, warn_free_mb = 1024 } ]
CFG
    local spec name class
    for spec in idc:CardReader pin:PinPad cdm:CashDispenser ptr:ReceiptPrinter; do
      name="${spec%%:*}" class="${spec#*:}"
      cat <<CFG

[[process]]
name = "$name"
command = "$bin/driver-proxy"
args = ["--class", "$class", "--backend", "virtual",
        "--listen", "unix:$home/run/$name.sock", "--state-dir", "$home/$name"]
env = { RUST_LOG = "warn" }
permanent_exit_codes = [64, 69, 78]
health = { grpc = "unix:$home/run/$name.sock", interval_ms = 500, start_grace_ms = 30000 }
CFG
    done
    cat <<CFG

[[process]]
name = "native"
command = "$bin/terminal-native"
args = [$native_args]
env = { RUST_LOG = "info" }
depends_on = ["idc", "pin", "cdm", "ptr"]
permanent_exit_codes = [64, 78]
health = { heartbeat_timeout_ms = 10000, start_grace_ms = 60000 }
CFG
  } >"$home/keeper.toml"
}
