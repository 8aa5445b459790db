#!/usr/bin/env bash
# The Python tools the test suite checks exported bundles with, pinned, in a git-ignored virtual
# environment .venv-tools/ (PyPI only, by package name):
#   onnx         onnx.checker.check_model on every graph `meit-models export` writes
#   onnxruntime  the reference Python runtime (side-by-side checks and benchmarks)
# Running it again does nothing once the pinned versions are installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-tools"
pins=(onnx==1.19.1 onnxruntime==1.31.1 numpy==2.4.6 protobuf==7.36.2 ml_dtypes==0.6.0
      typing_extensions==4.16.0 packaging==26.4 flatbuffers==25.12.19)
stamp="$venv/.pins"
if [[ -f "$stamp" && "$(cat "$stamp")" == "${pins[*]}" ]]; then
  echo "python tools present in $venv"
  exit 0
fi
python=${PYTHON:-python3}
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: "${pins[@]}"
"$venv/bin/python" -c "import onnx, onnxruntime; print('onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"
echo "${pins[*]}" > "$stamp"
