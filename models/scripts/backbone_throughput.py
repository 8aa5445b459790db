#!/usr/bin/env python3
"""Training throughput of the pretrained SmolLM2 backbone on this machine, one short run a choice.

Each configuration is `models/configs/smollm2-lora.toml` with a few keys changed (layers kept,
the ChatML system turn, LoRA rank and targets, batch size), trained for a few optimiser steps with
the release `meit-models train --max-steps N` under `/usr/bin/time -v`. Records per second are
taken from the run's own `metrics.jsonl` (cumulative rate per step) between the end of step 1
and the end of step N, so the first step (allocation, first data batch) is left out and reported
separately; peak RSS is time's "Maximum resident set size". The encoder warm-up is measured
once with SmolLM2's encoder shape (head_dim 64), from the warm-up line of `metrics.jsonl`.
The estimated wall time is the tiny model's record budget (`models/configs/tiny-realism.toml`:
encoder warm-up records + epochs x train_records) at the measured rates.

Writes `docs/bench/backbone-throughput.md` (or `--out`). Run from the repository root after
`cargo build --release -p meit-models`:

    python3 models/scripts/backbone_throughput.py [--only NAME ...]
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

BINARY = Path("target/release/meit-models")
BASE_CONFIG = Path("models/configs/smollm2-lora.toml")
BUDGET_CONFIG = Path("models/configs/tiny-realism.toml")
ALL_TARGETS = ["q", "k", "v", "o", "gate", "up", "down"]
ATTENTION = ["q", "k", "v", "o"]


class Choice:
    """One configuration of the sweep."""

    def __init__(self, name, layers, system_turn, rank, targets, batch, steps, warmup=None):
        self.name = name
        self.layers = layers
        self.system_turn = system_turn
        self.rank = rank
        self.targets = targets
        self.batch = batch
        self.steps = steps
        self.warmup = warmup  # (records, batch) of an encoder warm-up to measure, or None


SWEEP = [
    Choice("L8-system-r64-all-b8", 8, True, 64, ALL_TARGETS, 8, 5),
    Choice("L30-system-r64-all-b8", 30, True, 64, ALL_TARGETS, 8, 4),
    Choice("L12-system-r64-all-b8", 12, True, 64, ALL_TARGETS, 8, 5),
    Choice("L8-short-r64-all-b8", 8, False, 64, ALL_TARGETS, 8, 5),
    Choice("L12-short-r64-all-b8", 12, False, 64, ALL_TARGETS, 8, 5),
    Choice("L30-short-r64-all-b8", 30, False, 64, ALL_TARGETS, 8, 4),
    Choice("L8-short-r16-all-b8", 8, False, 16, ALL_TARGETS, 8, 5),
    Choice("L8-short-r16-attn-b8", 8, False, 16, ATTENTION, 8, 5),
    Choice("L8-short-r16-all-b32", 8, False, 16, ALL_TARGETS, 32, 3),
    Choice("warmup-L8-short-r16-all-b8", 8, False, 16, ALL_TARGETS, 8, 2, warmup=(64 * 30, 64)),
]


def config_text(base: str, c: Choice) -> str:
    """`base` (smollm2-lora.toml) with the choice's keys changed; validation kept small."""
    text = base
    text = text.replace(
        'instruction = { style = "chat_ml", prompts = "mimic" }',
        'instruction = { style = "chat_ml", prompts = "ptbxl", system_turn = %s }'
        % ("true" if c.system_turn else "false"),
    )
    text = re.sub(r"# max_layers = 2 .*", f"max_layers = {c.layers}", text)
    text = re.sub(r"(?m)^batch_size = \d+", f"batch_size = {c.batch}", text)
    text = re.sub(r"(?m)^rank = \d+", f"rank = {c.rank}", text)
    text = re.sub(
        r"(?m)^targets = \[.*\]", "targets = [%s]" % ", ".join(f'"{t}"' for t in c.targets), text
    )
    text = re.sub(r"(?m)^validation_records = \d+", "validation_records = 8", text)
    if c.warmup:
        records, batch = c.warmup
        text = text.replace(
            "[model.encoder]",
            f"[train.encoder_warmup]\nrecords = {records}\nbatch_size = {batch}\n"
            "learning_rate = 3e-3\n\n[model.encoder]",
        )
    tomllib.loads(text)  # a typo in the substitution fails here, not in the trainer
    return text


def measure(c: Choice, base: str, work: Path) -> dict:
    """Trains `c` for `c.steps` steps and returns its figures."""
    out = work / c.name
    cfg = work / f"{c.name}.toml"
    cfg.write_text(config_text(base, c))
    load_before = os.getloadavg()[0]
    env = dict(os.environ, RAYON_NUM_THREADS=os.environ.get("RAYON_NUM_THREADS", "1"))
    cmd = ["/usr/bin/time", "-v", str(BINARY), "train", "--config", str(cfg), "--out", str(out),
           "--max-steps", str(c.steps), "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    load_after = os.getloadavg()[0]
    row = {"name": c.name, "choice": c, "load": (load_before, load_after)}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", run.stderr)
    row["peak_rss_gib"] = int(rss.group(1)) / 2**20 if rss else None
    row["wall"] = wall.group(1) if wall else "?"
    if run.returncode != 0:
        row["error"] = (run.stderr.strip().splitlines() or ["?"])[-1][:120]
        return row
    steps, warm = {}, None
    for line in (out / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if "records_per_second" in m:
            steps[m["step"]] = m["records_per_second"]
        if "warmup_steps" in m:
            warm = m
    per_step = c.batch
    elapsed = {s: s * per_step / r for s, r in steps.items()}
    last = max(steps)
    row["first_step_s"] = elapsed[1]
    row["rate"] = (last - 1) * per_step / (elapsed[last] - elapsed[1])
    if warm:
        row["warmup_rate"] = warm["warmup_steps"] * c.warmup[1] / warm["seconds"]
    return row


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/bench/backbone-throughput.md")
    parser.add_argument("--only", nargs="*", help="names of the configurations to run")
    args = parser.parse_args()
    if not BINARY.is_file():
        print(f"{BINARY} missing: cargo build --release -p meit-models", file=sys.stderr)
        return 1
    base = BASE_CONFIG.read_text()
    budget = tomllib.loads(BUDGET_CONFIG.read_text())
    warm_records = budget["train"]["encoder_warmup"]["records"]
    meit_records = budget["train"]["epochs"] * budget["data"]["train_records"]
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    with tempfile.TemporaryDirectory(prefix="backbone-throughput-") as tmp:
        for c in SWEEP:
            if args.only and c.name not in args.only:
                continue
            print(f"{c.name} ...", file=sys.stderr, flush=True)
            row = measure(c, base, Path(tmp))
            print(f"  {row}", file=sys.stderr, flush=True)
            rows.append(row)
    warm = [r["warmup_rate"] for r in rows if "warmup_rate" in r]
    warm_rate = warm[0] if warm else None

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    lines = [
        "# SmolLM2-135M backbone: training throughput on this machine",
        "",
        "Written by `python3 models/scripts/backbone_throughput.py"
        + (" --only " + " ".join(args.only) if args.only else "")
        + f"` on {started:%Y-%m-%d %H:%M} UTC (release build, `RAYON_NUM_THREADS=1` + the data "
        "thread). Do not edit by hand.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"{int(mem) / 2**20:.0f} GiB, shared with other builds and training runs (load average "
        "per row: 1-minute figure before / after the run).",
        "",
        "Each row: `models/configs/smollm2-lora.toml` (SmolLM2-135M-Instruct Q4_1 GGUF, LoRA alpha "
        "128, dropout 0.1, max_tokens 128, prompt `ptbxl`) with the row's layers kept "
        "(`[base] max_layers`), ChatML with the default system turn (`system`) or one user turn "
        "(`short`, `system_turn = false`), LoRA rank and targets, batch size; "
        "`meit-models train --max-steps N`. records/s is measured from the end of step 1 to the "
        "end of step N (the trainer's `metrics.jsonl`); step 1 is reported apart. Peak RSS: "
        "`/usr/bin/time -v`, whole process (model load included).",
        "",
        f"Estimated wall time: the tiny model's record budget (`{BUDGET_CONFIG}`): encoder warm-up "
        f"{warm_records:,} records at the warm-up rate below + MEIT {budget['train']['epochs']} "
        f"epochs x {budget['data']['train_records']:,} = {meit_records:,} records at the row's "
        "rate.",
        "",
        "| configuration | layers | prompt | LoRA rank | targets | batch | steps | records/s "
        "(steps 2..N) | step 1 (s) | peak RSS (GiB) | wall | load | MEIT records (h) | "
        "est. warm-up + MEIT |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["choice"]
        targets = "all 7" if c.targets == ALL_TARGETS else "+".join(c.targets)
        rss = f"{r['peak_rss_gib']:.1f}" if r.get("peak_rss_gib") else "?"
        load = f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"
        head = (f"| {c.name} | {c.layers} | {'system' if c.system_turn else 'short'} | {c.rank} "
                f"| {targets} | {c.batch} | {c.steps} ")
        if "error" in r:
            lines.append(head + f"| failed: {r['error']} | | {rss} | {r['wall']} | {load} | | |")
            continue
        meit_s = meit_records / r["rate"]
        total = hours(warm_records / warm_rate + meit_s) if warm_rate else "?"
        lines.append(
            head + f"| {r['rate']:.2f} | {r['first_step_s']:.1f} | {rss} | {r['wall']} | {load} "
            f"| {hours(meit_s)} | {total} |"
        )
    lines.append("")
    if warm_rate:
        lines.append(
            f"Encoder warm-up (`[train.encoder_warmup]`, SmolLM2's encoder: head_dim 64, batch 64, "
            f"row `warmup-...`): **{warm_rate:.0f} records/s** (steps / seconds of the warm-up "
            f"line, its validation included): {warm_records:,} records take "
            f"{hours(warm_records / warm_rate)}."
        )
        lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
