#!/usr/bin/env python3
"""Side by side, one invocation, same machine: meit's engine against the LLM runtimes.

Writes docs/bench/infer.md (every figure in it comes from this run; nothing is typed in):

1. The default tiny bundle: `meit bench infer --json` (encoder, prefill, decode, report latency
   at batch 1 and over a batch sweep, beds in real time, peak RSS), and the training crate's
   candle path against the engine on the same windows, interleaved
   (`cargo run --release -p meit-models --example candle_vs_engine`); and the same benchmark with
   lookup drafts (`--draft-tokens N`, the daemon's `[runtime] draft_tokens`).
2. SmolLM2-135M int4, text only (no ECG slot), greedy, the same prompt ids, N new tokens,
   interleaved rounds (every round runs each runtime once, in rotating order):
   - meit: the engine's decoder (`examples/llm_text_bench.rs`, a long-lived process), threads
     sleeping (the daemon's default), spinning, and spinning with lookup drafts;
   - onnxruntime-genai on the SAME decoder.onnx (a genai_config.json written here: the graph
     already has genai's I/O names; past and present share one buffer when the graph's attention
     is GroupQueryAttention, as the engine's in-place decode does, and are separate buffers when
     plain operators concatenate the cache; EOS set to an id that never wins so both runs produce
     N tokens);
   - llama.cpp (llama-cpp-python) on the SmolLM2 Q4_1 GGUF, greedy argmax over its logits.
   Then tokens/s of each, the ratios, and the memory-bandwidth floor
   (weight bytes read per token / measured read bandwidth).
3. The SmolLM2 bundle through `meit bench infer` (ECG slot + prompt, the daemon's path).

Setup (once; pinned versions, PyPI only; the llama.cpp build takes ~5 min):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install onnxruntime-genai==0.18.0 onnxruntime==1.31.1 numpy==2.4.6 onnx==1.19.1 \
        typing-extensions==4.15.0 diskcache==5.6.3 jinja2==3.1.6
    CMAKE_ARGS="..." .venv-bench/bin/pip install --no-deps llama-cpp-python==0.3.36   (flags: README)
    make smollm2-bundle      # .models/bundles/smollm2 and .models/smollm2/*.gguf

Run:

    .venv-bench/bin/python bench/compare_llm.py [--rounds 5] [--new-tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def sh(cmd: list[str], **kw) -> str:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, **kw).stdout


def spread(values: list[float]) -> dict:
    v = sorted(values)
    return {"p50": statistics.median(v), "min": v[0], "max": v[-1]} if v else {"p50": 0, "min": 0, "max": 0}


def fmt(s: dict, digits: int = 1) -> str:
    return f"{s['p50']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}; load average at start "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")


# ----------------------------------------------------------------------------------------------
# Memory bandwidth and weight bytes


def read_bandwidth_gbs(mib: int = 1024, repeats: int = 7) -> float:
    """Best-of read bandwidth: a matrix-vector product over a 1 GiB float32 matrix (BLAS sgemv
    reads every byte once and does 2 flops per 4 bytes, so memory bounds it; BLAS uses all cores)."""
    a = np.ones((mib * 1024 * 1024 // 4 // 4096, 4096), dtype=np.float32)
    v = np.ones(4096, dtype=np.float32)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ v
        best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def onnx_weight_bytes_per_token(path: Path) -> tuple[int, int]:
    """(bytes of every initializer, bytes read per decoded token): an embedding table that is
    only gathered from (one row per token) is left out of the second."""
    import onnx
    from onnx import numpy_helper  # noqa: F401  (import check)

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    size = {}
    for init in g.initializer:
        n = len(init.raw_data)
        if n == 0:
            n = onnx.numpy_helper.to_array(init).nbytes
        size[init.name] = n
    gathered = {node.input[0] for node in g.node if node.op_type == "Gather"}
    used_elsewhere = {i for node in g.node if node.op_type != "Gather" for i in node.input}
    table = sum(n for name, n in size.items() if name in gathered and name not in used_elsewhere and n > 1 << 20)
    total = sum(size.values())
    return total, total - table


def gguf_bytes(path: Path) -> int:
    """llama.cpp reads every weight per token; the tied output uses token_embd: the whole file
    minus its header is the weight traffic (the header is a few MB of vocabulary)."""
    return path.stat().st_size


# ----------------------------------------------------------------------------------------------
# The three LLM runtimes


class MeitEngine:
    """The engine in one of the daemon's two thread settings (`[runtime] intra_op_spinning`), with
    `drafts` lookup drafts a call (`[runtime] draft_tokens`; 0: one token a call)."""

    def __init__(self, bundle: Path, prompt: list[int], new_tokens: int, threads: int, spinning: bool,
                 drafts: int = 0):
        self.name = ("meit engine, threads spin (intra_op_spinning = true)" if spinning
                     else "meit engine, threads sleep (default)")
        if drafts:
            self.name += f", lookup drafts (draft_tokens = {drafts})"
        exe = ROOT / "target/release/examples/llm_text_bench"
        self.proc = subprocess.Popen(
            [str(exe), "--bundle", str(bundle), "--threads", str(threads), "--new-tokens", str(new_tokens),
             "--prompt-ids", ",".join(map(str, prompt)), "--spinning", "true" if spinning else "false",
             "--draft-tokens", str(drafts)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = json.loads(self.proc.stdout.readline())
        self.peak_rss_mib = None
        self.drafted = self.accepted = 0

    def run(self) -> tuple[float, float, list[int]]:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        r = json.loads(self.proc.stdout.readline())
        self.peak_rss_mib = r.get("peak_rss_mib")
        self.drafted, self.accepted = r.get("drafted", 0), r.get("accepted", 0)
        return r["prefill_ms"], r["decode_ms"], r["ids"]

    def close(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def in_place(manifest: dict) -> bool:
    """Whether the decoder's attention is GroupQueryAttention (its cache can be written in place)."""
    return manifest["decoder_graph"].get("attention") == "group_query"


def genai_config(manifest: dict, decoder: Path, out: Path, threads: int, max_length: int) -> None:
    d = manifest["decoder"]
    out.mkdir(parents=True, exist_ok=True)
    link = out / "decoder.onnx"
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(decoder.resolve())
    config = {
        "model": {
            "bos_token_id": 1,
            "context_length": d["max_positions"],
            # An id that never wins the argmax here, so genai runs all N tokens as the others do.
            "eos_token_id": d["vocab_size"] - 1,
            "pad_token_id": manifest["tokens"]["pad_id"],
            "type": "llama",
            "vocab_size": d["vocab_size"],
            "decoder": {
                "filename": "decoder.onnx",
                "head_size": d["head_dim"],
                "hidden_size": d["hidden_size"],
                "num_attention_heads": d["num_heads"],
                "num_hidden_layers": d["num_layers"],
                "num_key_value_heads": d["num_kv_heads"],
                "session_options": {"log_id": "onnxruntime-genai", "intra_op_num_threads": threads,
                                    "provider_options": []},
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "max_length": max_length, "min_length": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": in_place(manifest), "top_k": 1, "top_p": 1.0,
                   "temperature": 1.0, "repetition_penalty": 1.0, "early_stopping": True,
                   "length_penalty": 1.0, "no_repeat_ngram_size": 0, "diversity_penalty": 0.0},
    }
    (out / "genai_config.json").write_text(json.dumps(config, indent=1))


class Genai:
    name = "onnxruntime-genai 0.18.0 (same decoder.onnx)"

    def __init__(self, config_dir: Path, prompt: list[int], new_tokens: int):
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(str(config_dir))
        self.prompt = np.array([prompt], dtype=np.int32)
        self.n = new_tokens

    def run(self) -> tuple[float, float, list[int]]:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.prompt.shape[1] + self.n, do_sample=False)
        gen = og.Generator(self.model, params)
        t0 = time.perf_counter()
        gen.append_tokens(self.prompt)  # runs the prompt
        gen.generate_next_token()  # picks token 1 from the prompt's logits
        t1 = time.perf_counter()
        ids = [int(gen.get_next_tokens()[0])]
        for _ in range(self.n - 1):
            gen.generate_next_token()  # runs the last token, picks the next
            ids.append(int(gen.get_next_tokens()[0]))
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, ids


class LlamaCpp:
    name = "llama.cpp (llama-cpp-python 0.3.36, Q4_1 GGUF)"

    def __init__(self, gguf: Path, prompt: list[int], new_tokens: int, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=max(512, len(prompt) + new_tokens + 8), n_batch=512,
                         n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
        self.prompt = prompt
        self.n = new_tokens
        self.vocab = self.llm.n_vocab()

    def last_argmax(self) -> int:
        # 0.3.36 keeps `scores` only with logits_all; read the last token's logits directly.
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.vocab,))
        return int(np.argmax(logits))

    def run(self) -> tuple[float, float, list[int]]:
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(self.prompt)
        ids = [self.last_argmax()]
        t1 = time.perf_counter()
        for _ in range(self.n - 1):
            llm.eval([ids[-1]])
            ids.append(self.last_argmax())
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, ids


def llama_cpp_problem(gguf: Path) -> str | None:
    """Why llama.cpp cannot run here (None when it can). Probed in a child process: a build for
    the wrong instruction set dies of SIGILL, which would end this script too."""
    if not gguf.is_file():
        return f"no GGUF at {gguf} (make smollm2)"
    probe = ("from llama_cpp import Llama\n"
             f"llm = Llama(model_path={str(gguf)!r}, n_ctx=64, n_threads=1, verbose=False)\n"
             "llm.eval([1, 2, 3])\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or [""])[-1]
        return f"llama-cpp-python does not run (exit {r.returncode}: {tail})"
    return None


# ----------------------------------------------------------------------------------------------


def graph_label(manifest: dict) -> str:
    return "GroupQueryAttention graph" if in_place(manifest) else "plain-operator graph"


def llm_comparison(args, bundles: list[tuple[Path, dict]]) -> dict:
    """Every bundle's decoder (the same weights, one graph each) through the engine in both
    thread settings and through genai, and the GGUF through llama.cpp, in interleaved rounds."""
    prompt = bundles[0][1]["prompt"]["ids"]
    n = args.new_tokens
    runtimes = []
    load = {}
    groups = []  # (graph label, decoder file, [engine sleep, engine spin, engine spin + drafts, genai] names)
    for bundle, manifest in bundles:
        if manifest["prompt"]["ids"] != prompt:
            raise SystemExit(f"{bundle}: a different prompt from {bundles[0][0]}")
        label = graph_label(manifest)
        tmp = Path(tempfile.mkdtemp(prefix="genai-"))
        decoder = bundle / manifest["decoder_graph"]["file"]
        genai_config(manifest, decoder, tmp, args.threads, len(prompt) + n)
        names = []
        for make in (lambda: MeitEngine(bundle, prompt, n, args.threads, False),
                     lambda: MeitEngine(bundle, prompt, n, args.threads, True),
                     lambda: MeitEngine(bundle, prompt, n, args.threads, True, args.draft_tokens),
                     lambda: Genai(tmp, prompt, n)):
            t = time.perf_counter()
            r = make()
            r.name = f"{r.name} [{label}]"
            load[r.name] = time.perf_counter() - t
            runtimes.append(r)
            names.append(r.name)
        groups.append((label, str(decoder.relative_to(ROOT) if decoder.is_relative_to(ROOT) else decoder),
                       names))
    llama_missing = llama_cpp_problem(args.gguf)
    llama = None
    if llama_missing is None:
        t = time.perf_counter()
        runtimes.append(LlamaCpp(args.gguf, prompt, n, args.threads))
        llama = runtimes[-1].name
        load[llama] = time.perf_counter() - t
    else:
        print(f"llama.cpp left out: {llama_missing}", file=sys.stderr)
    for r in runtimes:  # warm-up round
        r.run()
    results = {r.name: {"prefill": [], "decode": [], "ids": None} for r in runtimes}
    for round_ in range(args.rounds):
        order = runtimes[round_ % len(runtimes):] + runtimes[:round_ % len(runtimes)]
        for r in order:
            prefill_ms, decode_ms, ids = r.run()
            res = results[r.name]
            res["prefill"].append(len(prompt) / (prefill_ms / 1e3))
            res["decode"].append((len(ids) - 1) / (decode_ms / 1e3))
            res["ids"] = ids
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{name} {res['decode'][-1]:.0f} tok/s" for name, res in results.items()),
            file=sys.stderr, flush=True)
    rss = {}
    drafts = {}
    for r in runtimes:
        if isinstance(r, MeitEngine):
            rss[r.name] = r.peak_rss_mib
            if r.drafted:
                drafts[r.name] = (r.accepted, r.drafted)
            r.close()
    first_difference = lambda a, b: next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)  # noqa: E731
    same = []
    drafted_tokens = []
    for label, _, (sleep, spin, drafted, genai) in groups:
        if results[spin]["ids"] != results[sleep]["ids"]:
            raise SystemExit(f"the engine's two thread settings generated different tokens ({label})")
        a, b = results[sleep]["ids"], results[genai]["ids"]
        same.append((label, a == b, first_difference(a, b)))
        drafted_tokens.append((label, first_difference(results[drafted]["ids"], a)))
    # The graphs round differently (fused attention vs operators), so a greedy run on weights this
    # flat may part at a near-tie: reported, not required.
    first = results[groups[0][2][0]]["ids"]
    across = [(label, next((i for i, (x, y) in enumerate(zip(first, results[names[0]]["ids"])) if x != y), None))
              for label, _, names in groups[1:]]
    return {"across_graphs": across, "results": results, "groups": groups, "llama": llama, "load_s": load, "prompt_tokens": len(prompt),
            "onnxruntime": runtimes[0].ready.get("onnxruntime"), "new_tokens": n, "peak_rss_mib": rss,
            "same_tokens": same, "llama_missing": llama_missing, "drafts": drafts, "drafted_tokens": drafted_tokens}


def write_doc(args, start: str, tiny: dict, tiny_drafted: dict, candle: dict, llm: dict | None,
              smol_bench: dict | None,
              bandwidth: float | None, weights: tuple[int, int] | None, gguf_size: int | None) -> str:
    L = []
    w = L.append
    w("# Inference benchmarks")
    w("")
    w("Written by `bench/compare_llm.py` (every figure below comes from one run of it; do not edit by hand).")
    w("")
    w(f"- Run: {start} UTC, `{' '.join(sys.argv)}`")
    w(f"- Machine: {machine_line}")
    ort_version = llm["onnxruntime"] if llm else "(project-local)"
    w(f"- meit: ONNX Runtime {ort_version} CPU provider through `ort`; {args.threads} intra-op threads for every "
      "runtime.")
    w("- Medians with (min-max) over the measured calls. The box is shared with other jobs: spreads are wide, "
      "compare systems only within one table (they ran interleaved in the same run).")
    w("")
    w("## Default tiny int4 bundle (`meit bench infer --bundle models/bundles/tiny --json`)")
    w("")
    w(f"Model `{tiny['model']}` ({tiny['precision']}), {tiny['windows']} synthesized 10 s windows through the "
      f"manifest's preprocessing, {tiny['prompt_tokens']} prompt tokens, {tiny['new_tokens_mean']:.1f} new tokens a "
      "report on average (the report ends at `</s>`).")
    w("")
    w("| figure | value |")
    w("|---|---|")
    w(f"| encoder, batch 1 | {fmt(tiny['encoder_ms'], 2)} ms |")
    w(f"| prefill, batch 1 | {fmt(tiny['prefill_tokens_per_s'], 0)} tokens/s |")
    w(f"| decode, batch 1 | {fmt(tiny['decode_tokens_per_s'], 0)} tokens/s |")
    b1, best = tiny["batch1"], tiny["best"]
    w(f"| whole report, batch 1 | p50 {b1['report_ms_p50']:.2f} ms, p99 {b1['report_ms_p99']:.2f} ms "
      f"(min {b1['report_ms_min']:.2f}, {b1['calls']} reports) |")
    w(f"| best batch | {best['batch']}: p50 {best['report_ms_p50']:.1f} ms a batch, p99 {best['report_ms_p99']:.1f} ms |")
    w(f"| beds served in real time (10 s windows) | {best['beds_realtime']:.0f} at batch {best['batch']}; "
      f"{b1['beds_realtime']:.0f} at batch 1 |")
    if tiny.get("peak_rss_mib"):
        w(f"| peak RSS of `meit bench infer` (VmHWM) | {tiny['peak_rss_mib']:.1f} MiB |")
    w("")
    w("Batch sweep (a call's wall time is every window's report latency in that batch):")
    w("")
    w("| batch | calls | p50 ms | p99 ms | windows/s | beds (10 s) | encode / prefill / decode ms (steps) |")
    w("|---|---|---|---|---|---|---|")
    for f in tiny["sweep"]:
        w(f"| {f['batch']} | {f['calls']} | {f['report_ms_p50']:.2f} | {f['report_ms_p99']:.2f} | "
          f"{f['windows_per_s']:.1f} | {f['beds_realtime']:.0f} | {f['encode_ms']:.2f} / {f['prefill_ms']:.2f} / "
          f"{f['decode_ms']:.2f} ({f['decode_steps']:.0f}) |")
    w("")
    w(f"### Lookup drafts at batch 1 (`meit bench infer ... --draft-tokens {args.draft_tokens}`, "
      "`[runtime] draft_tokens`)")
    w("")
    w("The same windows and rounds right after the run above; each round drafts from the other windows' reports "
      "only (the engine forgets its outputs between rounds).")
    w("")
    w("| draft tokens | whole report p50 / p99 ms | decode tokens/s | decode calls a report (median) | drafts kept |")
    w("|---|---|---|---|---|")
    for b in (tiny, tiny_drafted):
        kept = f"{100 * b['drafts_accepted']:.0f} %" if b.get("draft_tokens") else "-"
        w(f"| {b.get('draft_tokens', 0)} | {b['batch1']['report_ms_p50']:.2f} / {b['batch1']['report_ms_p99']:.2f} | "
          f"{fmt(b['decode_tokens_per_s'], 0)} | {b['batch1']['decode_steps']:.0f} | {kept} |")
    w("")
    w("### The training crate's candle path, same windows, interleaved")
    w("")
    w("`cargo run --release -p meit-models --example candle_vs_engine` times "
      "`meit_models::generate::report_for_input` (what `meit-models generate` runs per window: the fp32 candle "
      "model, greedy) and the engine at batch 1 on the same preprocessed windows, alternating window by window.")
    w("")
    w("| path | ms a report, p50 (min-max) |")
    w("|---|---|")
    w(f"| engine, {candle['bundle']} | {fmt(candle['engine_ms'], 2)} |")
    w(f"| candle, {candle['model']} | {fmt(candle['candle_ms'], 2)} |")
    w(f"| preprocessing of a 10 s window (both) | {fmt(candle['preprocess_ms'], 2)} |")
    w("")
    w(f"candle / engine (medians): **{candle['candle_over_engine']:.2f}x**; "
      f"reports equal text for text: {candle['equal_reports']} of {candle['compared_reports']} "
      "(int4 bundle vs fp32 candle model).")
    w("")
    if llm:
        res, groups, llama = llm["results"], llm["groups"], llm["llama"]
        w("## SmolLM2-135M int4: engine vs onnxruntime-genai vs llama.cpp (text only)")
        w("")
        w(f"Greedy, {llm['prompt_tokens']} prompt tokens (the bundle's prompt ids), {llm['new_tokens']} new tokens, "
          f"{args.rounds} interleaved rounds after one warm-up round each. Prefill tokens/s = prompt tokens / time to "
          f"the first token; decode tokens/s = {llm['new_tokens'] - 1} / time of the remaining tokens. Each decoder "
          "graph (the same int4 weights exported with plain attention operators, and with GroupQueryAttention) "
          "runs in the engine and in onnxruntime-genai.")
        w("")
        w("| runtime | model file | prefill tokens/s | decode tokens/s | load s |")
        w("|---|---|---|---|---|")
        files = {name: path for _, path, names in groups for name in names}
        if llama:
            files[llama] = str(args.gguf.relative_to(ROOT) if args.gguf.is_relative_to(ROOT) else args.gguf)
        for name in files:
            r = res[name]
            w(f"| {name} | `{files[name]}` | {fmt(spread(r['prefill']), 0)} | {fmt(spread(r['decode']), 1)} | "
              f"{llm['load_s'][name]:.1f} |")
        w("")
        med = lambda r, k: statistics.median(r[k])  # noqa: E731
        w("Ratios of medians (meit / peer; genai on the same graph as the engine):")
        w("")
        for label, _, (sleep, spin, drafted, genai) in groups:
            for engine in (sleep, spin, drafted):
                for peer in [genai] + ([llama] if llama else []):
                    w(f"- {engine} vs {peer}: decode **{med(res[engine], 'decode') / med(res[peer], 'decode'):.2f}x**, "
                      f"prefill **{med(res[engine], 'prefill') / med(res[peer], 'prefill'):.2f}x**")
        w("- Session settings: the engine's (`Engine::session_options`, with `--spinning` as the daemon's "
          "`[runtime] intra_op_spinning`; logits to the host through IoBinding; on the plain graph each step's "
          "present is a new tensor, on the GroupQueryAttention graph the cache is decoded in place in "
          "preallocated buffers); genai its defaults from genai_config.json (the thread count set, "
          "`past_present_share_buffer` true on the GroupQueryAttention graph, false on the plain one, which "
          "concatenates; ONNX Runtime's default lets intra-op threads spin); llama.cpp "
          "`n_threads = n_threads_batch = threads`. Both engine settings generated the same tokens.")
        if llm.get("llama_missing"):
            w(f"- llama.cpp is not in this run: {llm['llama_missing']}.")
        w("")
        for label, equal, first_difference in llm["same_tokens"]:
            w(f"- Greedy tokens of the engine and genai on the {label}: "
              f"{'identical' if equal else 'differ from token ' + str(first_difference)} "
              f"({llm['new_tokens']} tokens).")
        for label, first_difference in llm["across_graphs"]:
            w(f"- The engine's tokens on the {label} against the {groups[0][0]}: "
              f"{'identical' if first_difference is None else 'differ from token ' + str(first_difference)} "
              "(the graphs round attention differently; the committed model's reports are held equal by the test "
              "`a_group_query_attention_bundle_decodes_in_place_to_the_plain_bundles_reports`).")
        for label, first_difference in llm["drafted_tokens"]:
            w(f"- The engine with lookup drafts against the engine one token a call, on the {label}: "
              f"{'identical' if first_difference is None else 'differ from token ' + str(first_difference)} "
              "(a call of several tokens rounds the int4 products differently from a call of one; on the "
              "committed models' reports the test `lookup_drafts_give_the_greedy_reports_in_fewer_decoder_calls` "
              "holds them equal).")
        for name, (accepted, drafted) in llm["drafts"].items():
            w(f"- {name}: {drafted} drafts fed in the last round, {accepted} kept "
              f"({100 * accepted / max(drafted, 1):.0f} %): {llm['new_tokens'] - 1 - accepted} decode calls "
              f"for {llm['new_tokens'] - 1} tokens.")
        w("- llama.cpp runs the original GGUF weights (the bundle is the GGUF after one training step, LoRA "
          "merged, re-quantised), so its tokens are not compared.")
        for name, rss in llm["peak_rss_mib"].items():
            if rss and "sleep" in name:
                w(f"- Peak RSS of the engine's process, {name}: {rss:.0f} MiB.")
        w("")
    if bandwidth and weights:
        total, per_token = weights
        w("## Memory-bandwidth floor")
        w("")
        w(f"Read bandwidth measured here: **{bandwidth:.1f} GB/s** (numpy/BLAS matrix-vector product over a 1 GiB "
          "float32 matrix, all cores, best of 7).")
        w("")
        w("| weights | bytes read per token | floor tokens/s |")
        w("|---|---|---|")
        w(f"| bundle decoder.onnx (int4; the gathered embedding table left out; {total / 1e6:.0f} MB on disk) | "
          f"{per_token / 1e6:.1f} MB | {bandwidth * 1e9 / per_token:.0f} |")
        if gguf_size:
            w(f"| SmolLM2 Q4_1 GGUF (all of it: the tied output reads token_embd) | {gguf_size / 1e6:.1f} MB | "
              f"{bandwidth * 1e9 / gguf_size:.0f} |")
        if llm:
            w("")
            for engine in [n for _, _, names in llm["groups"] for n in names[:2]]:
                med = statistics.median(llm["results"][engine]["decode"])
                w(f"- {engine}: decode median {med * per_token / 1e9:.1f} GB/s of weight traffic, "
                  f"{100 * med * per_token / (bandwidth * 1e9):.0f}% of the floor.")
        w("")
    if smol_bench:
        s = smol_bench
        w("## SmolLM2 bundle through the daemon's path (`meit bench infer`, ECG slot + prompt)")
        w("")
        w(f"`{s['model']}`, {s['windows']} windows, {s['prompt_tokens']} prompt tokens, "
          f"{s['new_tokens_mean']:.0f} new tokens a report on average (a one-step smoke model: reports run to "
          "max_new_tokens).")
        w("")
        w(f"- encoder {fmt(s['encoder_ms'], 1)} ms; prefill {fmt(s['prefill_tokens_per_s'], 0)} tokens/s; "
          f"decode {fmt(s['decode_tokens_per_s'], 1)} tokens/s (batch 1)")
        w(f"- whole report at batch 1: p50 {s['batch1']['report_ms_p50']:.0f} ms; best batch {s['best']['batch']}: "
          f"{s['best']['windows_per_s']:.2f} windows/s = {s['best']['beds_realtime']:.1f} beds in real time")
        if s.get("peak_rss_mib"):
            w(f"- peak RSS (VmHWM): {s['peak_rss_mib']:.0f} MiB")
        w("")
    return "\n".join(L) + "\n"


def main() -> int:
    global machine_line
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smollm2-bundle", type=Path, action="append",
                    help="SmolLM2 bundles to compare (repeatable; default .models/bundles/smollm2 and, when "
                         "exported, .models/bundles/smollm2-gqa)")
    ap.add_argument("--gguf", type=Path, default=ROOT / ".models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tiny-bundle", type=Path, default=ROOT / "models/bundles/tiny")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/bench/infer.md")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--draft-tokens", type=int, default=4,
                    help="lookup drafts a call of the engine's drafted rows (the daemon's [runtime] draft_tokens)")
    args = ap.parse_args()
    if args.draft_tokens < 1:
        raise SystemExit("--draft-tokens must be 1 or more (the drafted rows would repeat the spinning rows)")
    start = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    machine_line = machine()
    if not args.skip_build:
        sh(["cargo", "build", "--release", "--bin", "meit", "--example", "llm_text_bench"])
        sh(["cargo", "build", "--release", "-p", "meit-models", "--example", "candle_vs_engine"])
    meit = str(ROOT / "target/release/meit")
    tiny = json.loads(sh([meit, "bench", "infer", "--bundle", str(args.tiny_bundle), "--json",
                          "--threads", str(args.threads)]))
    tiny_drafted = json.loads(sh([meit, "bench", "infer", "--bundle", str(args.tiny_bundle), "--json",
                                  "--threads", str(args.threads), "--draft-tokens", str(args.draft_tokens)]))
    candle = json.loads(sh([str(ROOT / "target/release/examples/candle_vs_engine"), "--bundle",
                            str(args.tiny_bundle), "--threads", str(args.threads)]))
    llm = smol_bench = None
    weights = None
    if not args.smollm2_bundle:
        args.smollm2_bundle = [b for b in (ROOT / ".models/bundles/smollm2", ROOT / ".models/bundles/smollm2-gqa")
                               if (b / "manifest.json").is_file()] or [ROOT / ".models/bundles/smollm2"]
    bundles = [(b, json.loads((b / "manifest.json").read_text())) for b in args.smollm2_bundle
               if (b / "manifest.json").is_file()]
    if bundles:
        fastest, manifest = bundles[-1]
        weights = onnx_weight_bytes_per_token(fastest / manifest["decoder_graph"]["file"])
        llm = llm_comparison(args, bundles)
        smol_bench = json.loads(sh([meit, "bench", "infer", "--bundle", str(fastest), "--json",
                                    "--threads", str(args.threads), "--batch", "4", "--windows", "4",
                                    "--rounds", "1", "--calls", "2"]))
    else:
        print(f"no SmolLM2 bundle at {args.smollm2_bundle} (make smollm2-bundle): LLM comparison left out",
              file=sys.stderr)
    bandwidth = read_bandwidth_gbs()
    gguf_size = gguf_bytes(args.gguf) if args.gguf.is_file() else None
    doc = write_doc(args, start, tiny, tiny_drafted, candle, llm, smol_bench, bandwidth, weights, gguf_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    print(doc)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


machine_line = ""

if __name__ == "__main__":
    sys.exit(main())
