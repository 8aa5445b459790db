#!/usr/bin/env bash
# Paired comparison of the default tiny model and the SmolLM2 reporters on the same 512 held-out
# synthetic test records (the tiny model's own evaluation protocol; the backbone table's SmolLM2
# rows use 256): each SmolLM2 bundle is evaluated with the quick suite on 512 records (skipped
# when its JSON exists; FORCE=1 re-runs it), then `meit-models compare` gives each pair's macro F1
# difference with its 95 % paired bootstrap interval. Writes docs/bench/backbone-paired.md.
#
#   models/scripts/paired_backbones.sh            # from the repository root, after
#                                                 # make smollm2-model-bundle MODEL=<each model>
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=target/release/meit-models
OUT=docs/bench/experiments
DOC=docs/bench/backbone-paired.md
MODELS=(smollm2-8layer-recall smollm2-8layer-full)
TINY=models/bundles/tiny/eval.json # 512 records, written by the tiny bundle's evaluation

cargo build --release -q -p meit-models --bin meit-models
for m in "${MODELS[@]}"; do
  json="$OUT/$m-512.json"
  if [[ ! -f "$json" || "${FORCE:-0}" == 1 ]]; then
    test -d ".models/bundles/$m" || {
      echo "missing .models/bundles/$m: make smollm2-model-bundle MODEL=$m" >&2
      exit 2
    }
    "$BIN" eval --model "models/trained/$m" --bundle ".models/bundles/$m" --suite quick \
      --records 512 --json "$json" --markdown "$OUT/$m-512.md"
  fi
done

pairs=("$TINY $OUT/smollm2-8layer-recall-512.json"
  "$TINY $OUT/smollm2-8layer-full-512.json"
  "$OUT/smollm2-8layer-recall-512.json $OUT/smollm2-8layer-full-512.json")
{
  echo "# Backbones, paired on the same records"
  echo
  echo "Written by \`models/scripts/paired_backbones.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand."
  echo "The same 512 held-out synthetic test records for every model (\`meit-models compare\` refuses"
  echo "two evaluations whose records differ), int4 bundles through ONNX Runtime CPU, greedy; the"
  echo "SmolLM2 evaluations (quick suite) are \`$OUT/<model>-512.md\`. Each line: the records,"
  echo "how many reports changed, both macro F1 figures and the difference with its 95 % paired"
  echo "bootstrap interval (1,000 resamples over the records)."
  echo
  for pair in "${pairs[@]}"; do
    set -- $pair
    echo "- \`meit-models compare --baseline $1 --candidate $2\`:"
    echo "  $("$BIN" compare --baseline "$1" --candidate "$2")"
  done
} >"$DOC"
echo "wrote $DOC"
