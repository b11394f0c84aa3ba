#!/usr/bin/env bash
# Starts the local OpenTeller stack on embedded defaults and prints where everything is: the
# simulated bank host (host-sim), the online transaction engine (online-txn, SQLite journal,
# sealed key store), one complete virtual terminal T0000001 under its keeper (four driver-proxy
# processes — card reader, PIN pad, dispenser, receipt printer — and terminal-native serving
# the kiosk business pages headless), the testers' device panel on the same devices, and the
# backoffice with its console (SQLite, local object directory, in-process cache). The
# terminal's TMK goes into the virtual EPP (the key ceremony) so the kiosk can sign on.
# Ctrl-C stops it all (the keeper stops the terminal's processes in reverse order).
#
#   OPENTELLER_HOME            state and sockets              (default: ./.state/local)
#   OPENTELLER_PANEL           panel listen address           (default: 127.0.0.1:8090)
#   OPENTELLER_CONSOLE         backoffice listen address      (default: 127.0.0.1:8080)
#   OPENTELLER_KIOSK           kiosk (terminal-native) address (default: 127.0.0.1:8780)
#   OPENTELLER_KEEPER          keeper control API address     (default: 127.0.0.1:7700)
#   OPENTELLER_KIOSK_PACKAGE   a built business package to serve instead of building webui/kiosk
#   OPENTELLER_WINDOW=1        run terminal-native windowed (tao + wry kiosk window on $DISPLAY)
#                              instead of headless
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(repo_root)"

need_toolchain
need_apt curl
need_node
ensure_webview_deps
windowed="${OPENTELLER_WINDOW:-}"
if [ -n "$windowed" ] && [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  die "OPENTELLER_WINDOW=1 needs a display: set DISPLAY (or run under xvfb-run), or leave it unset for the headless kiosk"
fi
home="${OPENTELLER_HOME:-$PWD/.state/local}"
panel="${OPENTELLER_PANEL:-127.0.0.1:8090}"
console="${OPENTELLER_CONSOLE:-127.0.0.1:8080}"
kiosk="${OPENTELLER_KIOSK:-127.0.0.1:8780}"
keeper="${OPENTELLER_KEEPER:-127.0.0.1:7700}"
mkdir -p "$home/run" "$home/log"

# Every fixed port must be free: a second up.sh (or anything else) on them stops here.
need_free_ports "$panel" "$console" "$kiosk" "$keeper" 127.0.0.1:9583 127.0.0.1:9584 \
  127.0.0.1:5800 127.0.0.1:5801
for name in idc pin cdm ptr; do
  sock="$home/run/$name.sock"
  if [ -S "$sock" ] && socket_alive "$sock"; then
    die "$sock is served by a running driver-proxy (another up.sh?); stop it first"
  fi
done

say "building (first run takes a few minutes)"
cargo build --workspace --bins --quiet
# terminal-native with its kiosk window (the `window` feature) in place of the plain build.
cargo build -p openteller-terminal-native --features window --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"

# The kiosk business package: webui/kiosk built with Vite, or a package given by the caller.
package="$(kiosk_package "$home")"

pids=()
stop() {
  trap - INT TERM HUP EXIT
  say "stopping" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM HUP EXIT

# The simulated bank host, with the shipped accounts and host keys.
"$bin/host-sim" serve --config simulators/host-sim/host-sim.toml >"$home/log/host-sim.log" 2>&1 &
pids+=($!)

# The online transaction engine. First start: a master key, the terminal's TMK (kept for the
# terminal's key ceremony) and the host keys of host-sim.toml go into the sealed key store.
txn="$home/online-txn"
mkdir -p "$txn"
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -s "$txn/master.key" ]; then
  (umask 077; random_hex 32 >"$txn/master.key")
fi
cat >"$txn/online-txn.toml" <<CFG
[journal]
url = "sqlite://$txn/journal.db"
[keys]
file = "$txn/keys.json"
master_key_file = "$txn/master.key"
[terminals]
listen = "127.0.0.1:5800"
[host]
address = "127.0.0.1:9583"
[admin]
listen = "127.0.0.1:5801"
CFG
if [ ! -s "$txn/keys.json" ]; then
  (umask 077; random_hex 16 >"$txn/T0000001.tmk")
  hostkey() { sed -n "s/^$1 *= *\"\([0-9A-Fa-f]*\)\".*/\1/p" simulators/host-sim/host-sim.toml; }
  "$bin/online-txn" keys --config "$txn/online-txn.toml" import --name term/T0000001/TMK --usage kek --hex "$(cat "$txn/T0000001.tmk")" >/dev/null
  "$bin/online-txn" keys --config "$txn/online-txn.toml" import --name host/ZPK --usage pin --hex "$(hostkey zpk)" >/dev/null
  "$bin/online-txn" keys --config "$txn/online-txn.toml" import --name host/ZAK --usage mac --hex "$(hostkey zak)" >/dev/null
fi
"$bin/online-txn" serve --config "$txn/online-txn.toml" >"$home/log/online-txn.out" 2>"$home/log/online-txn.log" &
pids+=($!)

# The terminal: the keeper starts and watches the four driver-proxies, then terminal-native.
# In its own session: a Ctrl-C or a closed terminal reaches this script, whose SIGTERM lets the
# keeper stop its processes in reverse order before it exits.
write_terminal_config "$home" "$bin" "$package" "$kiosk" "$keeper" "$windowed"
setsid "$bin/keeper" --config "$home/keeper.toml" >"$home/log/keeper.log" 2>&1 </dev/null &
pids+=($!)
devices=()
for name in idc pin cdm ptr; do
  devices+=(--device "$name=unix:$home/run/$name.sock")
done
for name in idc pin cdm ptr; do
  for _ in $(seq 300); do [ -S "$home/run/$name.sock" ] && break; sleep 0.1; done
  [ -S "$home/run/$name.sock" ] || die "driver-proxy $name did not start; see $home/log/keeper.log"
done

# The key ceremony: the terminal's TMK (the one online-txn holds) into the virtual EPP as two
# clear components, straight to the proxy, never through terminal-native.
load_tmk "$bin/devsim" "unix:$home/run/pin.sock" "$(cat "$txn/T0000001.tmk")" \
  || die "could not load the TMK into the PIN pad; see $home/log/keeper.log"

"$bin/devsim" panel --listen "$panel" "${devices[@]}" >"$home/log/panel.log" 2>&1 &
pids+=($!)
sleep 0.5
kill -0 "${pids[-1]}" 2>/dev/null || die "the device panel did not start; see $home/log/panel.log"

# The backoffice and its console. The initial administrator's password is made once and kept
# (mode 600) beside its database; it stops working once a bank administrator has signed in.
bo="$home/backoffice"
mkdir -p "$bo"
if [ ! -s "$bo/init-admin-password" ]; then
  (umask 077; printf '%s#Aa7\n' "$(random_hex 9)" >"$bo/init-admin-password")
fi
cat >"$bo/backoffice.toml" <<CFG
[http]
listen = "$console"
[database]
url = "sqlite://$bo/backoffice.db"
[objects]
dir = "$bo/objects"
CFG
OPENTELLER_INIT_ADMIN_PASSWORD="$(cat "$bo/init-admin-password")" \
  "$bin/backoffice" serve --config "$bo/backoffice.toml" >"$home/log/backoffice.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do curl -sf "http://$console/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "http://$console/readyz" >/dev/null 2>&1 || die "the backoffice did not start; see $home/log/backoffice.log"

for _ in $(seq 100); do grep -q "listening" "$home/log/online-txn.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening" "$home/log/online-txn.out" || die "online-txn did not start; see $home/log/online-txn.log"

if [ -z "$windowed" ]; then
  for _ in $(seq 600); do curl -sf "http://$kiosk/" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "http://$kiosk/" >/dev/null 2>&1 \
    || die "terminal-native does not serve the kiosk on $kiosk; see $home/log/keeper.log"
  kiosk_where="http://$kiosk/"
else
  kiosk_where="the kiosk window on display ${DISPLAY:-$WAYLAND_DISPLAY}"
fi

cat <<MSG

OpenTeller local stack is up.

  Bank host (host-sim)    8583 on 127.0.0.1:9583, control http://127.0.0.1:9584/state/accounts
  online-txn              terminals connect to 127.0.0.1:5800 (cup profile, 2-byte length)
                          admin API http://127.0.0.1:5801/api/v2/repair/plans (repair plans, seed 002)
                          journal $txn/journal.db, terminal T0000001's TMK in $txn/T0000001.tmk

  Console (backoffice)    http://$console/   user sysadmin, password in $bo/init-admin-password
                          API http://$console/api/v2/openapi.json, metrics http://$console/metrics

  Kiosk (T0000001)        $kiosk_where
                          business package $package
                          terminal-native under the keeper; e-journal $home/native/ej
  Keeper control API      http://$keeper/api/v1/status   (CLI: $bin/keeper status --control tcp:$keeper)
                          config $home/keeper.toml, native config $home/native.toml

  Testers' device panel   http://$panel/
  Card reader             unix:$home/run/idc.sock
  PIN pad                 unix:$home/run/pin.sock
  Cash dispenser          unix:$home/run/cdm.sock
  Receipt printer         unix:$home/run/ptr.sock   (receipts in $home/ptr/receipts)
  Logs                    $home/log/   (the terminal's processes: keeper.log)

  Try the CLI:  $bin/devsim --device unix:$home/run/idc.sock status

Press Ctrl-C to stop.
MSG
wait
