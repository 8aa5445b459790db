#!/usr/bin/env python3
"""Side-by-side: meit's filter chain vs scipy.signal.sosfilt, same coefficients, same data.

Installs nothing itself. Set up once (pinned):

    python3 -m venv .venv-dsp && .venv-dsp/bin/pip install scipy==1.16.3 numpy==2.3.5

then run from the repository root:

    .venv-dsp/bin/python scripts/bench_dsp_scipy.py [--markdown docs/bench/dsp.md]

It builds and runs `cargo run --release --example dsp_sosfilt_bench`, which times the Rust
streaming path and exports the second-order sections, the input (12 leads x 5000 samples at
500 Hz) and the Rust output. scipy then filters the identical data with the identical `sos`,
with the initial state the Rust cascade uses (`sosfilt_zi * first sample`), the outputs are
compared, and both timings and their ratio are printed.

The script exits with status 1 when the outputs disagree beyond float rounding: Rust computes
in f64 and stores f32, so each sample may differ from scipy's f64 result rounded to f32 by at
most ULP_TOLERANCE units in the last place of the f32 value, plus ABS_TOLERANCE_OF_PEAK times
the input's peak magnitude (the f64 cascade's own rounding, which can flip an f32 rounding near
zero). Anything larger is a different filter, not rounding.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
from scipy import signal

LEADS, SAMPLES, RATE_HZ = 12, 5000, 500.0
# Float rounding, as the module documentation states it.
ULP_TOLERANCE = 2.0
ABS_TOLERANCE_OF_PEAK = 1e-9


def rounding_excess(scipy_y, rust_y, x):
    """How far the outputs disagree beyond float rounding.

    Returns (largest excess over the tolerance in uV, the tolerance at that sample); an excess
    <= 0 means the outputs agree to float rounding everywhere.
    """
    scipy_f32 = scipy_y.astype(np.float32)
    magnitude = np.maximum(np.abs(scipy_f32), np.abs(rust_y).astype(np.float32))
    ulp = np.spacing(magnitude).astype(np.float64)
    tolerance = ULP_TOLERANCE * ulp + ABS_TOLERANCE_OF_PEAK * float(np.max(np.abs(x)))
    excess = np.abs(scipy_f32.astype(np.float64) - rust_y) - tolerance
    worst = int(np.argmax(excess))
    return float(excess.flat[worst]), float(tolerance.flat[worst])


def time_sosfilt(sos, x, zi, rounds=15, reps=40):
    """ns per sample per lead of sosfilt over the whole (leads, samples) array: (best, median)."""
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(reps):
            signal.sosfilt(sos, x, axis=-1, zi=zi)
        per_round.append((time.perf_counter_ns() - start) / (reps * x.size))
    per_round.sort()
    return per_round[0], per_round[len(per_round) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="also write the results table to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run(
            ["cargo", "run", "--quiet", "--release", "--example", "dsp_sosfilt_bench", "--", out],
            check=True, capture_output=True, text=True,
        )
        rust = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        x = np.fromfile(os.path.join(out, "input.f64"), dtype="<f8").reshape(LEADS, SAMPLES)
        rows = []
        for r in rust:
            name = r["config"]
            with open(os.path.join(out, f"{name}.sos.json")) as f:
                sos = np.array(json.load(f), dtype=np.float64)
            rust_y = np.fromfile(os.path.join(out, f"{name}.rust.f64"), dtype="<f8").reshape(LEADS, SAMPLES)
            zi = signal.sosfilt_zi(sos)[:, np.newaxis, :] * x[np.newaxis, :, 0:1]
            zi = np.ascontiguousarray(np.moveaxis(zi, 1, 1))
            y, _ = signal.sosfilt(sos, x, axis=-1, zi=zi)
            # Rust filters in f64 and stores f32: compare at f32 resolution.
            max_diff = float(np.max(np.abs(y.astype(np.float32).astype(np.float64) - rust_y)))
            excess, tolerance = rounding_excess(y, rust_y, x)
            best, median = time_sosfilt(sos, x, zi)
            rows.append({
                "config": name,
                "sections": r["sections"],
                "rust_best": r["ns_per_sample_per_lead_best"],
                "rust_median": r["ns_per_sample_per_lead_median"],
                "scipy_best": best,
                "scipy_median": median,
                "ratio_best": best / r["ns_per_sample_per_lead_best"],
                "ratio_median": median / r["ns_per_sample_per_lead_median"],
                "realtime": r["realtime_factor_12_leads_500hz"],
                "max_abs_diff_uv": max_diff,
                "beyond_rounding_uv": excess,
                "tolerance_uv": tolerance,
                "spec": r["spec"],
            })

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}.",
        f"Data: {LEADS} leads x {SAMPLES} samples at {RATE_HZ:g} Hz (10 s). Rust: streaming "
        "`FilterChain::process_block` on interleaved f32 (f64 inside), copy of the input included. "
        "scipy: `sosfilt(sos, x, axis=-1, zi=zi)` on a (12, 5000) float64 array. "
        "Best and median of 15 rounds of 40 passes.",
        "",
        "| config | sections | Rust ns/sample/lead (best / median) | scipy ns/sample/lead (best / median) "
        "| scipy / Rust (best / median) | Rust x real time (12 leads, 500 Hz) | max abs diff (uV) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['sections']} | {r['rust_best']:.2f} / {r['rust_median']:.2f} "
            f"| {r['scipy_best']:.2f} / {r['scipy_median']:.2f} "
            f"| {r['ratio_best']:.1f}x / {r['ratio_median']:.1f}x | {r['realtime']:,.0f}x "
            f"| {r['max_abs_diff_uv']:.2g} |"
        )
    text = "\n".join(lines)
    print(text)
    print(json.dumps(rows))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    disagreeing = [r for r in rows if not r["beyond_rounding_uv"] <= 0.0]
    for r in disagreeing:
        print(
            f"FAIL: {r['config']}: Rust and scipy differ by up to {r['max_abs_diff_uv']:.3g} uV, "
            f"{r['beyond_rounding_uv']:.3g} uV beyond float rounding "
            f"({ULP_TOLERANCE:g} f32 ULPs + {ABS_TOLERANCE_OF_PEAK:g} x input peak; "
            f"{r['tolerance_uv']:.3g} uV at the worst sample)",
            file=sys.stderr,
        )
    if not rows:
        print("FAIL: the Rust benchmark reported no configuration to compare", file=sys.stderr)
        return 1
    return 1 if disagreeing else 0


if __name__ == "__main__":
    sys.exit(main())
