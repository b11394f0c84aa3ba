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
