#!/usr/bin/env python3
"""Compare `meit-models score` with the reference implementations on the same text.

References: pycocoevalcap 1.2 (BLEU-1..4, ROUGE-L, CIDEr-D, PTBTokenizer via Java) and NLTK's
`meteor_score` (run with a WordNet stub that knows no synonyms, since meit-models has no WordNet:
both then align by exact word and Porter stem only). Install them with
`pip install -r models/scripts/requirements-metrics.txt`.

Three checks, each printed side by side with the absolute differences:
  1. metrics on identical tokens: the text is tokenised once (PTB via Java, or the paper's
     "." -> " ."), written out, and meit-models scores it with `--tokenize whitespace`;
  2. end to end: meit-models tokenises the raw text itself (`--tokenize ptb`);
  3. the tokenisers themselves: lines where `meit-models tokenize` differs from Java's.
Both corpus level and per batch of 32 are compared. Check 1 must agree to --tolerance
(exit status 1 otherwise); checks 2 and 3 are reported.

Without --hyp/--ref, a deterministic set of ECG-report-like pairs is generated (--lines, --seed).

    python3 models/scripts/check_metrics.py --bin target/release/meit-models
"""

import argparse
import contextlib
import io
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from nltk.translate.meteor_score import meteor_score
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

METRICS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d"]
SEPARATOR = "|||"
BATCH = 32

# Machine statements in the style of MIMIC-IV-ECG and PTB-XL reports.
STATEMENTS = [
    "sinus rhythm", "sinus bradycardia", "sinus tachycardia", "marked sinus bradycardia",
    "atrial fibrillation", "atrial fibrillation with rapid ventricular response",
    "atrial flutter with 2:1 a-v conduction", "sinus rhythm with pac(s)",
    "sinus rhythm with 1st degree a-v block", "junctional rhythm", "pacemaker rhythm - no further analysis",
    "left axis deviation", "right axis deviation", "left anterior fascicular block",
    "right bundle branch block", "left bundle branch block", "incomplete right bundle branch block",
    "iv conduction defect", "prolonged qt interval", "low qrs voltages in precordial leads",
    "poor r wave progression - probable normal variant", "rsr'(v1) - probable normal variant",
    "inferior infarct - age undetermined", "anterior infarct - age undetermined",
    "septal infarct, possibly acute", "lateral st-t changes may be due to myocardial ischemia",
    "nonspecific st-t changes", "t wave changes may be due to hypertrophy and/or ischemia",
    "extensive t wave changes", "left ventricular hypertrophy", "possible left atrial enlargement",
    "probable lvh with secondary repol abnrm", "st elevation, consider acute infarct",
    "st depression >1 mm in v4-v6", "ventricular premature complex(es)",
    "premature ventricular contractions", "baseline wander in lead(s) v1,v2",
    "artifact in lead(s) i, ii", "qtc 480 ms", "rate 72 bpm", "** ** acute mi ** **",
    "poss. inferior infarct", "borderline ecg", "abnormal ecg", "normal ecg", "otherwise normal ecg",
]
# Harder text for the tokeniser check only (capitals, abbreviations, quotes, symbols, numbers).
TRICKY = [
    "Sinus rhythm. Left axis deviation (LAD), possible anterior infarct - age undetermined.",
    "ST-T changes; T-wave inversion and/or ischemia. Patient's QTc 450ms, HR 72 bpm.",
    "1st degree A-V block... P-R 0.24s e.g. 50% 2:1 >= <3 x*y \"quoted\" a+b V1-V3 Dr. Smith",
    "st depression >1 mm in v4-v6, poss. inferior infarct. qtc 480 ms. rate 72 bpm",
    "artifact in lead(s) i, ii. baseline wander in lead(s) v1,v2. complex(es) [sic] {x}",
    "it's don't they're we'll i've he'd i'm 90's 1980s o'clock cannot 5' 10\"",
    "v-rate 50- 99. 1st-degree. ~100 #3 $5 100% 3/4 +1 -1 1,000 1.000 .5 5.",
    "a.... b---c x---- y. e.g. Text i.e. this. U.S. Army. ok... Next. 3.5. a:b 12:30 v1/v2",
    "jr. Smith. prof. dr. Gen. Jan. feb. Corp. Ltd. Fig. vol. approx. etc vs fri. Mt. no. 5 no.5",
    "probable lvh with secondary repol abnrm. st elev. 0.2mv... 12-lead ecg; hr=60",
    "1.5-2.0 mm, 1-2.5 mm, 0.1-0.2mv, v1-2, 1.5/2.0 and/or",
    "rock'n'roll @home",  # known to differ: see models/README.md
]
# Words for the Porter stemmer golden file (--write-stems): report vocabulary plus words that
# exercise every step of the algorithm and NLTK's extensions.
STEM_WORDS = """
abnormal abnormality abnormalities acute adjustable adjustment allowance analogousli
anterior arrhythmia arrhythmias atrial axis baseline bigger block blocked blocking bradycardia
bundle callousness caresses cats changes changed changing conditional conduction conflated
consider considered contraction contractions controlling controll cries dependent depression
deviation deviations died dies digitizer dying effective electrical electricity elevation
enjoy enjoyment enlargement extensive fascicular feed fibrillation filing flutter formalize
formative formaliti generalization geology goodness gyroscopic happy hopefulness hopping
hypertrophy incomplete infarct infarcts infarction inferior interval intervals ischemia
ischemic irritant junctional lateral leads lying marked motoring myocardial news nonspecific
normal normally otherwise pacemaker plastered ponies possible possibly precordial predication
premature probable probably progression prolonged radicalli rapid relational repolarization
response rhythm rhythms rsr septal sensibility sensitivity sing sinus skies sky spied st-t
tachycardia ties triplicate troubled undetermined variant ventricular voltage voltages wave
waves yyyy 1st 12-lead a-v and/or
"""
# Inflections that only a stemmer matches.
INFLECT = {"changes": "changed", "rhythm": "rhythms", "infarct": "infarcts",
           "deviation": "deviations", "contractions": "contraction", "leads": "lead",
           "probable": "probably", "possibly": "possible", "abnormal": "abnormality"}


def report(rng, k=None):
    k = k or rng.randint(1, 5)
    return ". ".join(rng.sample(STATEMENTS, k))


def hypothesis_for(rng, ref):
    parts = ref.split(". ")
    roll = rng.random()
    if roll < 0.15:
        return ref
    if roll < 0.45:
        i = rng.randrange(len(parts))
        if rng.random() < 0.5 and len(parts) > 1:
            del parts[i]
        else:
            parts[i] = rng.choice(STATEMENTS)
    elif roll < 0.6:
        rng.shuffle(parts)
    elif roll < 0.8:
        parts = [" ".join(INFLECT.get(w, w) for w in p.split()) for p in parts]
    elif roll < 0.97:
        return report(rng)
    else:
        return ""
    text = ". ".join(parts)
    if rng.random() < 0.2:
        text = text.capitalize() + "."
    return text


def generate(lines, seed):
    rng = random.Random(seed)
    hyps, refs = [], []
    for _ in range(lines):
        ref = report(rng)
        hyps.append(hypothesis_for(rng, ref))
        if rng.random() < 0.1:
            ref = ref + f" {SEPARATOR} " + report(rng)
        refs.append(ref)
    return hyps, refs


def ptb_tokenize(hyps, refs):
    """pycocoevalcap's PTBTokenizer (Java) on hypotheses and references."""
    tok = PTBTokenizer()
    res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    return [res[i][0] for i in range(len(hyps))], [gts[i] for i in range(len(refs))]


def paper_tokenize(hyps, refs):
    prep = lambda s: " ".join(s.replace(".", " .").split())
    return [prep(h) for h in hyps], [[prep(r) for r in rs] for rs in refs]


class NoWordNet:
    """A WordNet stand-in without synonyms: NLTK's METEOR then matches exact words and stems."""

    def synsets(self, word):
        return []


def reference_scores(hyps, refs):
    """pycocoevalcap + NLTK on tokenised strings (one hypothesis, a list of references each)."""
    res = {i: [h] for i, h in enumerate(hyps)}
    gts = {i: rs for i, rs in enumerate(refs)}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    wn = NoWordNet()
    meteors = [meteor_score([r.split() for r in rs], h.split(), wordnet=wn) for h, rs in zip(hyps, refs)]
    scores = dict(zip(METRICS[:4], bleu))
    scores.update(meteor=sum(meteors) / len(meteors), rouge_l=float(rouge), cider_d=float(cider))
    return scores


def reference_batches(hyps, refs):
    batches = [reference_scores(hyps[i:i + BATCH], refs[i:i + BATCH]) for i in range(0, len(hyps), BATCH)]
    return {m: sum(b[m] for b in batches) / len(batches) for m in METRICS}


def rust_score(binary, hyps, refs, tokenization, workdir):
    hyp_file, ref_file = workdir / f"hyp-{tokenization}.txt", workdir / f"ref-{tokenization}.txt"
    hyp_file.write_text("".join(h + "\n" for h in hyps))
    ref_file.write_text("".join(f" {SEPARATOR} ".join(rs) + "\n" for rs in refs))
    out = subprocess.run([binary, "score", "--hyp", hyp_file, "--ref", ref_file, "--batch", str(BATCH),
                          "--tokenize", tokenization], check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    return result["corpus"], result["per_batch"]["mean"]


def compare_tokens(title, binary, lines, java, workdir):
    raw = workdir / "raw.txt"
    raw.write_text("".join(line + "\n" for line in lines))
    ours = subprocess.run([binary, "tokenize", "--tokenize", "ptb", raw], check=True,
                          capture_output=True, text=True).stdout.splitlines()
    differ = [(line, o, j) for line, o, j in zip(lines, ours, java) if o != j]
    print(f"\n{title}: {len(lines) - len(differ)} of {len(lines)} lines identical to Java's")
    for line, o, j in differ[:10]:
        print(f"  text: {line}\n    meit: {o}\n    java: {j}")


def compare(title, ours, theirs):
    print(f"\n{title}\n  {'metric':<8} {'meit-models':>14} {'reference':>14} {'abs diff':>10}")
    worst = 0.0
    for m in METRICS:
        diff = abs(ours[m] - theirs[m])
        worst = max(worst, diff)
        print(f"  {m:<8} {ours[m]:>14.9f} {theirs[m]:>14.9f} {diff:>10.2e}")
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/debug/meit-models", help="the meit-models binary")
    parser.add_argument("--hyp", type=Path, help="hypotheses, one per line (default: generated)")
    parser.add_argument("--ref", type=Path, help="references, line-aligned, '|||'-separated")
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--dump", type=Path, help="also write the generated pairs here (a folder)")
    parser.add_argument("--write-stems", type=Path, metavar="TSV",
                        help="write NLTK's Porter stems of a test vocabulary (word<TAB>stem) and exit; "
                             "models/tests/data/porter_nltk.tsv is made this way")
    args = parser.parse_args()

    if args.write_stems:
        from nltk.stem.porter import PorterStemmer
        stemmer = PorterStemmer()
        words = sorted(set(STEM_WORDS.split()) | {w for s in STATEMENTS for w in s.split()}
                       | set(INFLECT) | set(INFLECT.values()))
        args.write_stems.write_text("".join(f"{w}\t{stemmer.stem(w)}\n" for w in words))
        print(f"{len(words)} stems written to {args.write_stems}")
        return 0

    if args.hyp and args.ref:
        hyps = args.hyp.read_text().splitlines()
        refs_raw = args.ref.read_text().splitlines()
    else:
        hyps, refs_raw = generate(args.lines, args.seed)
    refs = [[r.strip() for r in line.split(SEPARATOR)] for line in refs_raw]
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        (args.dump / "hyp.txt").write_text("".join(h + "\n" for h in hyps))
        (args.dump / "ref.txt").write_text("".join(r + "\n" for r in refs_raw))
    print(f"{len(hyps)} pairs, {sum(len(r) for r in refs)} references, batches of {BATCH}")

    worst_same_tokens = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, tokenize in [("ptb", ptb_tokenize), ("paper", paper_tokenize)]:
            tok_hyps, tok_refs = tokenize(hyps, refs)
            corpus, batched = rust_score(args.bin, tok_hyps, tok_refs, "whitespace", work)
            worst_same_tokens[f"{name} corpus"] = compare(
                f"[1] {name} tokens, corpus level", corpus, reference_scores(tok_hyps, tok_refs))
            worst_same_tokens[f"{name} per-batch"] = compare(
                f"[1] {name} tokens, mean over batches of {BATCH}", batched, reference_batches(tok_hyps, tok_refs))
            if name == "paper":
                continue
            # End to end: meit-models tokenises the raw text itself.
            corpus, batched = rust_score(args.bin, hyps, refs, "ptb", work)
            compare("[2] raw text, meit-models' own PTB tokeniser, corpus level", corpus,
                    reference_scores(tok_hyps, tok_refs))
            # Token agreement, line by line, on the scored text and on harder text.
            compare_tokens("[3] PTB tokens of the scored text", args.bin, hyps + [r for rs in refs for r in rs],
                           tok_hyps + [r for rs in tok_refs for r in rs], work)
            tricky_java, _ = ptb_tokenize(TRICKY, [[t] for t in TRICKY])
            compare_tokens("[3] PTB tokens of harder text", args.bin, TRICKY, tricky_java, work)

    print("\nmax abs difference on identical tokens:")
    for key, worst in worst_same_tokens.items():
        print(f"  {key:<16} {worst:.2e}")
    worst = max(worst_same_tokens.values())
    if worst > args.tolerance:
        print(f"FAIL: {worst:.2e} > tolerance {args.tolerance:.0e}")
        return 1
    print(f"OK: every metric within {args.tolerance:.0e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
