#!/usr/bin/env bash
# The Python packages scripts/make_external_eval.py writes the external evaluation set with,
# pinned, in a git-ignored virtual environment .venv-external/ (PyPI only, by package name):
#   neurokit2  the independent ECG simulators (ecgsyn, multileads) and the R-peak detector the
#              set's measured rates come from
#   wfdb       reads the PhysioNet records and annotations, writes the windows as WFDB records
# The set itself is committed (models/external/): evaluating it needs no Python. Running this
# again does nothing once the pinned versions are installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-external"
pins=(neurokit2==0.2.13 wfdb==4.3.1 numpy==2.4.6 scipy==1.17.1 pandas==2.3.3
      scikit-learn==1.9.1 matplotlib==3.11.2 PyWavelets==1.9.0 python-dateutil==4.0.0
      pytz==2026.6 tzdata==2026.6 joblib==1.6.0 threadpoolctl==3.8.0
      contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1 packaging==26.4
      pillow==13.0.0 pyparsing==3.3.3 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
      requests==2.34.2 certifi==2026.10.19.post1 charset-normalizer==3.5.3 idna==3.20
      urllib3==2.8.0 fsspec==2026.9.0 aiohttp==3.14.5 aiohappyeyeballs==2.7.1
      aiosignal==1.4.0 attrs==26.1.0 frozenlist==1.8.0 multidict==7.2.1 propcache==0.5.4
      yarl==1.25.1 typing_extensions==4.16.0 narwhals==2.29.0 cloudpickle==3.1.3)
stamp="$venv/.pins"
if [[ -f "$stamp" && "$(cat "$stamp")" == "${pins[*]}" ]]; then
  echo "external-set tools present in $venv"
  exit 0
fi
python=${PYTHON:-python3}
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: "${pins[@]}"
"$venv/bin/python" -c "import neurokit2, wfdb; print('neurokit2', neurokit2.__version__, 'wfdb', wfdb.__version__)"
echo "${pins[*]}" > "$stamp"
