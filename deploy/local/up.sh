#!/usr/bin/env bash
# Starts the local OpenTeller stack on embedded defaults and prints where everything is: the
# simulated bank host (host-sim), the online transaction engine (online-txn, SQLite journal,
# sealed key store), one virtual terminal's devices (card reader, PIN pad, dispenser, receipt
# printer — one driver-proxy process each), the testers' device panel, and the backoffice with
# its console (SQLite, local object directory, in-process cache). Ctrl-C stops it all.
#
#   OPENTELLER_HOME     state and sockets        (default: ./.state/local)
#   OPENTELLER_PANEL    panel listen address     (default: 127.0.0.1:8090)
#   OPENTELLER_CONSOLE  backoffice listen address (default: 127.0.0.1:8080)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(repo_root)"

need_toolchain
need_apt curl
need_cmd node "Install Node.js 20 or newer (the console is built with npm)."
need_cmd npm "Install npm (it comes with Node.js)."
home="${OPENTELLER_HOME:-$PWD/.state/local}"
panel="${OPENTELLER_PANEL:-127.0.0.1:8090}"
console="${OPENTELLER_CONSOLE:-127.0.0.1:8080}"
mkdir -p "$home/run" "$home/log"

say "building (first run takes a few minutes)"
cargo build --workspace --bins --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"

pids=()
stop() {
  trap - INT TERM EXIT
  say "stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

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

devices=()
for spec in idc:CardReader pin:PinPad cdm:CashDispenser ptr:ReceiptPrinter; do
  name="${spec%%:*}" class="${spec#*:}"
  "$bin/driver-proxy" --class "$class" --backend virtual \
    --listen "unix:$home/run/$name.sock" --state-dir "$home/$name" \
    >"$home/log/$name.log" 2>&1 &
  pids+=($!)
  devices+=(--device "$name=unix:$home/run/$name.sock")
done

for name in idc pin cdm ptr; do
  for _ in $(seq 100); do [ -S "$home/run/$name.sock" ] && break; sleep 0.1; done
  [ -S "$home/run/$name.sock" ] || die "driver-proxy $name did not start; see $home/log/$name.log"
done

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

cat <<MSG

OpenTeller local stack is up.

  Bank host (host-sim)    8583 on 127.0.0.1:9583, control http://127.0.0.1:9584/state/accounts
  online-txn              terminals connect to 127.0.0.1:5800 (cup profile, 2-byte length)
                          admin API http://127.0.0.1:5801/api/v2/repair/plans (repair plans, seed 002)
                          journal $txn/journal.db, terminal T0000001's TMK in $txn/T0000001.tmk

  Console (backoffice)    http://$console/   user sysadmin, password in $bo/init-admin-password
                          API http://$console/api/v2/openapi.json, metrics http://$console/metrics

  Testers' device panel   http://$panel/
  Card reader             unix:$home/run/idc.sock
  PIN pad                 unix:$home/run/pin.sock
  Cash dispenser          unix:$home/run/cdm.sock
  Receipt printer         unix:$home/run/ptr.sock   (receipts in $home/ptr/receipts)
  Logs                    $home/log/

  Try the CLI:  $bin/devsim --device unix:$home/run/idc.sock status

Press Ctrl-C to stop.
MSG
wait
