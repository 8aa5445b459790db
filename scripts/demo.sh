#!/usr/bin/env bash
# `make demo`: the daemon on its built-in default configuration — one simulated bed streaming
# over a real pty through the serial source, the dsp stage, the default model bundle on ONNX
# Runtime, and one line per 10 s window (the generated report, or no report with the reasons)
# on standard output. Stop with Ctrl-C (or pass e.g. `--max-windows 3` through DEMO_ARGS).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
meit=target/release/meit

echo "== meit doctor =="
"$meit" doctor --config configs/meit.toml || true
echo
echo "Not in this build yet: MQTT publishing (reports print here instead)."
echo
echo "== meit run --config configs/meit.toml (first line after one 10 s window; Ctrl-C stops) =="
exec "$meit" run --config configs/meit.toml ${DEMO_ARGS:-}
