#!/usr/bin/env python3
"""The backbone table (issue #17): one row per trained model, every figure read from files a run wrote.

    python3 models/scripts/backbone_table.py \
        --model models/trained/tiny --bench tiny-bench.json \
        --model /work/runs/smollm2-8 --bench smollm2-bench.json \
        --write docs/bench/backbones.md --readme models/README.md

Per model directory: `run.toml` (backbone, layers), `model.safetensors` (parameters; trainable:
the encoder and the LoRA adapters when the decoder is a pretrained LLM under LoRA, every
parameter of a model trained from scratch; batch-norm running statistics are not parameters),
`metrics.jsonl` (training time: the encoder warm-up's seconds plus, per invocation of `train`,
its steps times the batch over its last records-per-second figure; a resumed run counts every
invocation, including steps it re-ran; a run continued from another model, `[train] init_from`,
adds that model's time, and so does one whose encoder came from another, `encoder_from`),
`eval.json` (`meit-models eval --external`: synthetic
text and clinical metrics, shuffled-ECG control, the MEIT-20% paired ROUGE-L drop, the external
set). Per `--bench` (`meit bench infer --bundle B --json`): the int4 bundle's size on disk (its
manifest and the files the manifest lists),
decode tokens/s and report p50 at batch 1 in the daemon's engine. Standard library only.
"""

import argparse
import datetime
import json
import math
import re
import struct
import sys
import tomllib
from pathlib import Path

BEGIN = "<!-- backbone-table:begin (models/scripts/backbone_table.py) -->"
END = "<!-- backbone-table:end -->"


def tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {name: math.prod(t["shape"]) for name, t in header.items()}


def base_parameters(run):
    """Weights of a pretrained Llama decoder cut to `max_layers` (tied embeddings): what the
    weights file leaves to the base's own file."""
    d = run["model"]["decoder"]
    layers = min(run["base"].get("max_layers") or d["num_layers"], d["num_layers"])
    h, hd = d["hidden_size"], d["head_dim"]
    attention = h * d["num_heads"] * hd * 2 + h * d["num_kv_heads"] * hd * 2
    per_layer = attention + 3 * h * d["intermediate_size"] + 2 * h
    return d["vocab_size"] * h + layers * per_layer + h


def parameters(model_dir, run):
    sizes = {k: v for k, v in tensors(model_dir / "model.safetensors").items()
             if "running_mean" not in k and "running_var" not in k}
    stored = sum(sizes.values())
    if not any(".lora_" in k for k in sizes):
        return stored, stored
    trainable = sum(v for k, v in sizes.items() if k.startswith("encoder.") or ".lora_" in k)
    base = sum(v for k, v in sizes.items() if k.startswith("decoder.") and ".lora_" not in k)
    return trainable + (base or base_parameters(run)), trainable


def training_seconds(model_dir, batch):
    seconds, last = 0.0, None
    invocation = None  # (first step, last step, last records/s)
    for line in (model_dir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if "warmup_steps" in m:
            seconds += m["seconds"]
        elif "records_per_second" in m:
            step = m["step"]
            if last is not None and step <= last:
                seconds += (invocation[1] - invocation[0] + 1) * batch / invocation[2]
                invocation = None
            invocation = (invocation[0] if invocation else step, step, m["records_per_second"])
            last = step
    if invocation:
        seconds += (invocation[1] - invocation[0] + 1) * batch / invocation[2]
    return seconds


def total_training_seconds(model_dir, run):
    """This run's training time plus, for a run continued from another (`[train] init_from`, a
    path from the repository root) or started with another's encoder (`encoder_from`), that
    model's, down the chain."""
    batch = run["train"]["batch_size"] * run["train"].get("accumulation_steps", 1)
    seconds = training_seconds(model_dir, batch)
    for key in ("init_from", "encoder_from"):
        parent = run["train"].get(key)
        if parent:
            parent = Path(parent)
            seconds += total_training_seconds(parent,
                                              tomllib.loads((parent / "run.toml").read_text()))
    return seconds


def backbone(run):
    base = run.get("base")
    decoder = run.get("model", {}).get("decoder", {})
    if base:
        name = Path(base.get("gguf") or base.get("hf_dir", "?")).name
        name = re.sub(r"\.(Q\w+)\.gguf$", r" (\1 GGUF)", name)
        layers = base.get("max_layers")
        return f"{name}, LoRA rank {run.get('model', {}).get('lora', {}).get('rank', '?')}", layers
    return (f"from scratch ({decoder.get('hidden_size', '?')} wide)",
            decoder.get("num_layers"))


def row(model_dir, bench_path, eval_path=None):
    model_dir = Path(model_dir)
    run = tomllib.loads((model_dir / "run.toml").read_text())
    name, layers = backbone(run)
    total, trainable = parameters(model_dir, run)
    hours = total_training_seconds(model_dir, run) / 3600
    ev = json.loads(Path(eval_path or model_dir / "eval.json").read_text())
    results = {r["variant"]["name"]: r for r in ev["results"]}
    test = results["test"]
    corpus = test["text"]["corpus"]
    paired = {p["row"]: p for p in ev["paired"]}
    meit20 = paired.get("meit-20%")
    drop = "-" if meit20 is None else f"{meit20['baseline_rouge_l'] - meit20['rouge_l']:.3f}"
    ext = ev.get("external") or {}
    total_ext = ext.get("total")
    external = ("-" if not total_ext else
                f"{100 * total_ext['rhythm_right'] / total_ext['windows']:.1f} / "
                f"{100 * total_ext['rate_class_right'] / total_ext['windows']:.1f} / "
                f"{total_ext['unsupported_claims']}")
    size = decode = p50 = "-"
    if bench_path:
        b = json.loads(Path(bench_path).read_text())
        bundle = Path(b["bundle"])
        if bundle_measured(bundle, b["model"]):
            size = f"{bundle_bytes(bundle) / 2**20:.1f}"
        elif model_dir.name in previous_sizes:
            # The bundle is git-ignored and gone, or since re-exported from another model: the
            # size this script measured when it was there, marked.
            size = previous_sizes[model_dir.name] .rstrip("*") + "*"
        decode = f"{b['decode_tokens_per_s']['p50']:.0f}"
        p50 = f"{b['batch1']['report_ms_p50']:.1f}"
    return [f"`{model_dir.name}`", name, str(layers), f"{total / 1e6:.2f} M",
            f"{trainable / 1e6:.2f} M", f"{hours:.2f}",
            with_interval(test['clinical']['macro_f1'], test.get("macro_f1_interval")),
            f"{corpus['bleu_4']:.3f}",
            f"{corpus['meteor']:.3f}", f"{corpus['rouge_l']:.3f}", f"{corpus['cider_d']:.2f}",
            f"{results['shuffled-ecg']['clinical']['macro_f1']:.3f}", drop, external,
            size, decode, p50]


def with_interval(value, interval):
    """`value` to three places, with its bootstrap interval when the evaluation has one (the
    evaluations written before the interval existed have none)."""
    if not interval:
        return f"{value:.3f}"
    return f"{value:.3f} ({interval['low']:.3f}-{interval['high']:.3f})"


def bundle_measured(bundle, model):
    """True when `bundle` is on disk and still holds `model` (the bench's "id version")."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return f"{manifest['model']['id']} {manifest['model']['version']}" == model


def bundle_bytes(bundle):
    """What the daemon loads: the manifest and the files it lists (not evaluation output)."""
    manifest = bundle / "manifest.json"
    names = json.loads(manifest.read_text())["files"]
    return manifest.stat().st_size + sum((bundle / name).stat().st_size for name in names)


def read_previous_sizes(path):
    """Bundle sizes per model in a table this script wrote before (model name -> cell)."""
    sizes = {}
    if path is None or not path.exists():
        return sizes
    column = HEADER.index("int4 bundle MiB")
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(HEADER) and cells[0].startswith("`"):
            sizes[cells[0].strip("`")] = cells[column]
    return sizes


previous_sizes = {}

HEADER = ["model", "backbone", "decoder layers", "parameters", "trainable", "training h",
          "macro F1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "shuffled F1",
          "MEIT-20% ROUGE-L drop", "external rhythm / rate class % / absent-lead claims",
          "int4 bundle MiB", "decode tokens/s", "report p50 ms"]


def table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--bench", action="append", default=[],
                        help="`meit bench infer --json` output, one per --model, in order ('-' for none)")
    parser.add_argument("--eval", action="append", default=[],
                        help="eval.json to read instead of MODEL/eval.json, one per --model, in order ('-' for the default)")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    previous_sizes.update(read_previous_sizes(args.write))
    benches = args.bench + ["-"] * (len(args.model) - len(args.bench))
    evals = args.eval + ["-"] * (len(args.model) - len(args.eval))
    rows = [row(m, None if b == "-" else b, None if e == "-" else e)
            for m, b, e in zip(args.model, benches, evals)]
    command = "python3 models/scripts/backbone_table.py " + " ".join(sys.argv[1:])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = [f"`{Path(m).name}`: {json.loads(Path(e if e != '-' else Path(m) / 'eval.json').read_text())['records']} "
             f"held-out records a row, {json.loads(Path(e if e != '-' else Path(m) / 'eval.json').read_text())['generator']}"
             for m, e in zip(args.model, evals)]
    body = (f"Written by `{command}` on {when}; do not edit by hand. Synthetic figures on each "
            "model's held-out synthetic test records, greedy (" + "; ".join(notes) + "); macro "
            "F1 with its 95 % bootstrap interval over those records where the evaluation has one "
            "(evaluations written before the interval existed have none); decode "
            "tokens/s and report p50 at batch 1 from `meit bench infer` on the int4 bundle (2 "
            "threads, the project's 2-core x86_64 box); training hours on the same box; a bundle "
            "size marked * is the one this script measured in an earlier run (then every file in the "
            "bundle's directory), the bundle being no longer on disk (git-ignored).\n\n"
            + table(rows) + "\n")
    print(body)
    if args.write:
        args.write.write_text("# Backbones\n\n" + body)
    if args.readme:
        text = args.readme.read_text()
        block = f"{BEGIN}\n{body}{END}"
        if BEGIN in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text,
                          flags=re.S)
        else:
            sys.exit(f"{args.readme}: no {BEGIN} marker; add it where the table belongs")
        args.readme.write_text(text)


if __name__ == "__main__":
    main()
