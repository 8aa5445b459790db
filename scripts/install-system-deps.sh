#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages meit's build, tests and demo use, and only those missing.
# Runs unattended (CI=true, no stdin). Needs root or sudo for apt-get.
# With arguments it installs those packages instead (the same check-then-install, used by
# cross/build-aarch64.sh for the aarch64 linker):  scripts/install-system-deps.sh PKG...
#
#   socat       pty pairs for serial tests and for wiring the simulator by hand
#   mosquitto   the MQTT broker the tests and the demo start on loopback
#   protobuf-compiler  `protoc` for candle-onnx's build (meit-models writes ONNX with its types)
#   python3-venv       the pinned Python checkers (onnx.checker) in .venv-tools/
#   libdbus-1-dev, pkg-config   the `ble` feature's build (btleplug over BlueZ/D-Bus), built by CI
set -euo pipefail

packages=(socat mosquitto mosquitto-clients protobuf-compiler python3-venv libdbus-1-dev pkg-config)
[[ $# -gt 0 ]] && packages=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "system packages present: ${packages[*]}"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-system-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts a system-wide mosquitto on :1883 when the package installs; the tests and the demo
# start their own brokers on their own ports, so the service is left as the package set it up.
