#!/usr/bin/env bash
# `make demo`: the daemon on the demo configuration — one simulated bed streaming through the
# dsp stage and the default model bundle on ONNX Runtime — publishing each 10 s window's report
# over MQTT to a mosquitto started here on a free loopback port, with a nursing-station view
# (`meit subscribe`) printing what arrives. The daemon also prints each report as published.
# Without mosquitto (scripts/install-system-deps.sh installs it) the reports print only.
# Stop with Ctrl-C (or pass e.g. `--max-windows 3` through DEMO_ARGS).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
meit=target/release/meit

echo "== meit doctor =="
"$meit" doctor --config configs/meit.toml || true
echo

broker=$(command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true)
if [[ -z "$broker" ]]; then
  echo "mosquitto is not installed: reports print here only (scripts/install-system-deps.sh installs it)."
  exec "$meit" run --config configs/meit.toml ${DEMO_ARGS:-}
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\n' "$port" > "$work/mosquitto.conf"
"$broker" -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
broker_pid=$!
# The demo configuration, publishing to that broker.
sed -e "s/^port = 1883/port = $port/" -e 's/^\[mqtt\]$/[mqtt]\nenabled = true/' \
    configs/meit.toml > "$work/meit.toml"
printf '\n[mqtt.outbox]\ndir = "%s/outbox"\n' "$work" >> "$work/meit.toml"
cleanup() {
  kill "${sub_pid:-}" 2>/dev/null || true
  sleep 0.2
  kill "$broker_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
sleep 0.3
"$meit" subscribe --broker "mqtt://127.0.0.1:$port" > >(sed -u 's/^/[station] /') &
sub_pid=$!
echo "== mosquitto on 127.0.0.1:$port; [station] lines are what a subscriber receives =="
echo "== meit run (first report after one 10 s window; Ctrl-C stops) =="
"$meit" run --config "$work/meit.toml" ${DEMO_ARGS:-}
sleep 1
