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
