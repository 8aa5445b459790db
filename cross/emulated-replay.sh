#!/usr/bin/env bash
# Proves the aarch64 build of meit works without a Jetson: the aarch64 binary runs under
# qemu-aarch64 (Debian qemu-user) with the aarch64 ONNX Runtime from PyPI's manylinux wheel
# (scripts/fetch-onnxruntime.sh aarch64, sha256-pinned), replays synthesized records with the
# committed bundles (models/bundles/tiny int4, models/bundles/tiny-fp32; greedy), and compares
# every window's report with the x86-64 build's on the same records. Exits 1 when any differs.
#
#   cross/emulated-replay.sh              # compare and print the table
#   cross/emulated-replay.sh --write-doc  # also write docs/deploy/emulated-replay.md
#
# Compared: the whole WindowReport (quality, findings, measurements, outcome text, codes, flags)
# except `timings`, which are wall-clock. The emulated CPU is a Cortex-A76 (cross/qemu-aarch64.sh:
# ARMv8.2-A like the Jetson Orin's Cortex-A78AE, no SVE). Needs the aarch64 binary
# (cross/build-aarch64.sh: built here when missing) and an x86-64 one (MEIT_NATIVE, else
# target/release/meit, else target/debug/meit, else `cargo build --bin meit`).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
write_doc=false
case "${1:-}" in
  --write-doc) write_doc=true ;;
  "") ;;
  -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "emulated-replay: unknown argument '$1' (--write-doc)" >&2; exit 2 ;;
esac
cd "$root"

"$root/scripts/install-system-deps.sh" qemu-user libc6-arm64-cross libstdc++6-arm64-cross
"$root/scripts/fetch-onnxruntime.sh" x86_64 >/dev/null
"$root/scripts/fetch-onnxruntime.sh" aarch64 >/dev/null
ort_version=$(sed -n 's/^VERSION=//p' "$root/scripts/fetch-onnxruntime.sh")

arm_bin="$root/target/aarch64-unknown-linux-gnu/release/meit"
[[ -x "$arm_bin" ]] || "$root/cross/build-aarch64.sh"
native=${MEIT_NATIVE:-}
if [[ -z "$native" ]]; then
  for b in "$root/target/release/meit" "$root/target/debug/meit"; do
    [[ -x "$b" ]] && { native=$b; break; }
  done
fi
if [[ -z "$native" ]]; then
  cargo build -p meit --bin meit
  native="$root/target/debug/meit"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Records: rhythms the tiny model names differently, and one too noisy to report.
# Each: name, condition, seed, noise (0-1).
records=("normal normal 1 0" "af af 4 0" "lbbb lbbb 2 0" "tachy tachy 1 0" "af-noisy af 6 0.9")
names=()
for r in "${records[@]}"; do
  read -r name condition seed noise <<<"$r"
  "$native" synth --condition "$condition" --seed "$seed" --noise "$noise" --seconds 20 --wfdb "$work/$name" >/dev/null 2>&1
  names+=("$name")
done

# One configuration per architecture and bundle: that architecture's library, one thread.
config() {
  local arch=$1 bundle=$2
  cat <<EOF
[runtime]
onnxruntime = "$root/.onnxruntime/$arch/libonnxruntime.so.$ort_version"
execution_providers = ["cpu"]
intra_threads = 1
[model]
bundle = "$root/models/bundles/$bundle"
required = true
EOF
}

declare -A ms
for bundle in tiny tiny-fp32; do
  config x86_64 "$bundle" > "$work/x86_64-$bundle.toml"
  config aarch64 "$bundle" > "$work/aarch64-$bundle.toml"
  for side in native emulated; do
    start=$(date +%s%N)
    for name in "${names[@]}"; do
      if [[ $side == native ]]; then
        run=("$native" replay --fast --config "$work/x86_64-$bundle.toml")
      else
        run=("$root/cross/qemu-aarch64.sh" "$arm_bin" replay --fast --config "$work/aarch64-$bundle.toml")
      fi
      "${run[@]}" --output json "$work/$name.hea" > "$work/$side-$bundle-$name.jsonl" 2>"$work/$side.err" ||
        { cat "$work/$side.err" >&2; echo "emulated-replay: the $side run failed on $name ($bundle)" >&2; exit 1; }
    done
    ms[$side-$bundle]=$(( ($(date +%s%N) - start) / 1000000 ))
  done
done

table="$work/table.md"
status=0
python3 - "$work" "$table" "${names[@]}" <<'PY' || status=$?
import json, sys
work, table, names = sys.argv[1], sys.argv[2], sys.argv[3:]

def rows(path):
    out = []
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            r.pop("timings", None)
            out.append(r)
    return out

def summary(r):
    o = r["outcome"]
    m = r.get("measurements") or {}
    hr = m.get("heart_rate_bpm")
    text = o.get("text") or "; ".join(o.get("reasons", [])) or o["kind"]
    return f'{o["kind"]}: {text}' + (f" (HR {hr:.2f})" if hr is not None else "")

lines = ["| bundle | record | window | x86-64 | aarch64 (qemu) | equal |", "| --- | --- | --- | --- | --- | --- |"]
differ = 0
total = 0
for bundle in ["tiny", "tiny-fp32"]:
    for name in names:
        a = rows(f"{work}/native-{bundle}-{name}.jsonl")
        b = rows(f"{work}/emulated-{bundle}-{name}.jsonl")
        if len(a) != len(b):
            differ += 1
            lines.append(f"| {bundle} | {name} | - | {len(a)} windows | {len(b)} windows | NO |")
            continue
        for x, y in zip(a, b):
            total += 1
            same = x == y
            differ += not same
            lines.append(f'| {bundle} | {name} | {x["window_index"]} | {summary(x)} | '
                         f'{"same" if same else summary(y)} | {"yes" if same else "NO"} |')
            if not same:
                for k in x:
                    if x[k] != y.get(k):
                        print(f"  {bundle} {name} window {x['window_index']}: {k}: x86-64 {x[k]!r} vs aarch64 {y.get(k)!r}",
                              file=sys.stderr)
lines.append("")
lines.append(f"{total - differ} of {total} window reports identical (every field but `timings`).")
open(table, "w").write("\n".join(lines) + "\n")
sys.exit(1 if differ else 0)
PY
cat "$table"
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }
timing="x86-64 $(secs "${ms[native-tiny]}") + $(secs "${ms[native-tiny-fp32]}"), aarch64 under qemu $(secs "${ms[emulated-tiny]}") + $(secs "${ms[emulated-tiny-fp32]}") (int4 + fp32 bundle; ${#names[@]} records of 20 s, one process each)"
echo "emulated-replay: replay wall time: $timing"

if $write_doc; then
  doc="$root/docs/deploy/emulated-replay.md"
  {
    echo "# aarch64 under emulation: reports equal the x86-64 build's"
    echo
    echo "Written by \`cross/emulated-replay.sh --write-doc\` (do not edit by hand) on $(date -u +'%Y-%m-%d %H:%M UTC')."
    echo
    echo "- Machine: $(uname -m), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other builds)."
    echo "- aarch64: \`target/aarch64-unknown-linux-gnu/release/meit\` (cross/build-aarch64.sh) under $(qemu-aarch64 --version | head -1 | sed 's/ version//') as a Cortex-A76 (\`cross/qemu-aarch64.sh\`), ONNX Runtime $ort_version from the manylinux aarch64 wheel."
    echo "- x86-64: \`${native#"$root/"}\`, ONNX Runtime $ort_version from the manylinux x86_64 wheel."
    echo "- Records: \`meit synth --seconds 20\`, each (name condition seed noise): $(printf '%s; ' "${records[@]}")replayed with \`--fast\`, one ONNX Runtime thread, greedy decoding."
    echo "- Replay wall time: $timing."
    echo
    cat "$table"
    if [[ $status -ne 0 ]]; then echo; echo "**The reports differ.**"; fi
  } > "$doc"
  echo "emulated-replay: wrote ${doc#"$root/"}"
fi
if [[ $status -ne 0 ]]; then
  echo "emulated-replay: FAILED: the aarch64 reports differ from the x86-64 ones" >&2
  exit 1
fi
echo "emulated-replay: ok: aarch64 (qemu) reports equal the x86-64 ones"
