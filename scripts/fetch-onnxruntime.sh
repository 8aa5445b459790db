#!/usr/bin/env bash
# Provisions the ONNX Runtime shared library into .onnxruntime/<arch>/ (git-ignored).
#
# It is taken from the PyPI wheel `onnxruntime` by package name, pinned by version and by the
# wheel's sha256, so nothing is downloaded from any other host (no ort download-binaries).
# ONNX Runtime's LICENSE and ThirdPartyNotices.txt come along (the Debian package ships them).
#
#   scripts/fetch-onnxruntime.sh            # this machine's architecture
#   scripts/fetch-onnxruntime.sh aarch64    # for a Jetson / cross build (CPU build of ORT;
#                                           # CUDA/TensorRT builds come from JetPack, see cross/)
set -euo pipefail

VERSION=1.31.1
declare -A SHA256=(
  [x86_64]=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
  [aarch64]=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
)

arch=${1:-$(uname -m)}
[[ -n "${SHA256[$arch]:-}" ]] || { echo "fetch-onnxruntime: unsupported architecture '$arch' (x86_64 or aarch64)" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.onnxruntime/$arch"
stamp="$dest/.wheel-sha256"

if [[ -f "$stamp" && "$(cat "$stamp")" == "${SHA256[$arch]}" && -f "$dest/libonnxruntime.so.$VERSION" && -f "$dest/LICENSE" ]]; then
  echo "ONNX Runtime $VERSION ($arch) already in $dest"
  exit 0
fi

python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "Fetching onnxruntime==$VERSION ($arch) from PyPI ..."
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --platform "manylinux_2_28_$arch" \
  -d "$tmp" "onnxruntime==$VERSION"
wheel=$(ls "$tmp"/onnxruntime-"$VERSION"-*.whl)
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [[ "$got" != "${SHA256[$arch]}" ]]; then
  echo "fetch-onnxruntime: checksum mismatch for $(basename "$wheel"): got $got, pinned ${SHA256[$arch]}" >&2
  exit 1
fi

mkdir -p "$dest"
"$python" - "$wheel" "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime")]
    if not any(".so." in n for n in names):
        sys.exit("fetch-onnxruntime: no libonnxruntime.so.* inside " + wheel)
    names += ["onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"]
    for n in names:
        out = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(out + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(out + ".part", out)
        print("  ", out)
PY
echo "${SHA256[$arch]}" > "$stamp"
echo "ONNX Runtime $VERSION ($arch) ready in $dest"
