#!/usr/bin/env python3
"""Writes meit's external evaluation set: 10-second ECG windows the project did not make.

Sources (licences and attribution in models/external/README.md):
  mitdb-100         MIT-BIH Arrhythmia Database record 100 (MLII + V5, 360 Hz), windows cut as
                    they are (original digital values, gains and signal names); rhythm and rate
                    from the reference annotations 100.atr.
  ptbdb-s0010_re    PTB Diagnostic ECG Database record s0010_re (12 leads + Frank vx/vy/vz,
                    1000 Hz, original names in lower case); rate and regularity measured by
                    neurokit2's R-peak detector on lead ii, P waves by its delineation.
  nk2-ecgsyn        neurokit2 ecg_simulate(method="ecgsyn") (McSharry et al. 2003), one lead,
                    500 Hz, named II.
  nk2-multileads    neurokit2 ecg_simulate(method="multileads"), 12 leads, 500 Hz, written with
                    the lead set of a 12-lead cart, a 3-lead monitor (I, II, III), a Holter
                    (II, V5) or a single lead (II).

Each window is its own WFDB record (format 16) under OUT/records/, listed in OUT/manifest.json
with its split, source, expected rhythm class, rate (bpm) and rate class (bradycardia < 60,
normal 60-100, tachycardia > 100) and how they were established. Split "test" is the external
evaluation set (never used to train or to tune anything); split "dev" holds other windows of the
same sources for any tuning. Deterministic: the same inputs and package versions write the same
files.

Usage (the packages pinned by scripts/install-external-tools.sh):
  .venv-external/bin/python scripts/make_external_eval.py --sample-data DIR --out models/external
where DIR holds 100.hea/.dat/.atr and s0010_re.hea/.dat/.xyz (the sample-data folder of the
wfdb-python repository, commit recorded in models/external/README.md).
"""

import argparse
import json
import shutil
from pathlib import Path

import neurokit2 as nk
import numpy as np
import wfdb

WINDOW_S = 10.0
SIM_RATE_HZ = 500
# MIT-BIH record 100: test windows every 90 s from 60 s; dev windows every 300 s from 15 s (no
# overlap with a test window).
MITDB_TEST_STARTS = [60.0 + 90.0 * k for k in range(20)]
MITDB_DEV_STARTS = [15.0 + 300.0 * k for k in range(6)]
# PTB s0010_re is 38.4 s long: three whole windows, all test.
PTB_TEST_STARTS = [0.0, 10.0, 20.0]
# Simulator windows: (nominal rate bpm, seed, noise mV). Rates keep at least 5 bpm from the
# 60 / 100 bpm class borders so the class does not hinge on the simulator's variability.
ECGSYN_TEST = [(42, 101, 0.01), (48, 102, 0.02), (55, 103, 0.05), (65, 104, 0.01),
               (72, 105, 0.02), (80, 106, 0.05), (88, 107, 0.01), (95, 108, 0.02),
               (108, 109, 0.05), (115, 110, 0.01), (125, 111, 0.02), (140, 112, 0.05)]
ECGSYN_DEV = [(50, 201, 0.01), (70, 202, 0.02), (90, 203, 0.05), (120, 204, 0.01)]
MULTILEADS_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
LEAD_SETS = {
    "12-lead": MULTILEADS_LEADS,
    "monitor-3": ["I", "II", "III"],
    "holter-2": ["II", "V5"],
    "single-II": ["II"],
}
MULTILEADS_TEST = [(45, 301, "12-lead"), (52, 302, "monitor-3"), (66, 303, "holter-2"),
                   (75, 304, "single-II"), (82, 305, "12-lead"), (90, 306, "monitor-3"),
                   (110, 307, "holter-2"), (118, 308, "single-II"), (130, 309, "12-lead"),
                   (48, 310, "holter-2"), (70, 311, "12-lead"), (122, 312, "monitor-3")]
MULTILEADS_DEV = [(50, 401, "12-lead"), (72, 402, "single-II"), (112, 403, "holter-2"),
                  (85, 404, "monitor-3")]
# Annotation symbols that are beats (WFDB's beat codes).
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


def rate_class(bpm):
    """bradycardia < 60 bpm, tachycardia > 100 bpm, normal between."""
    if bpm < 60.0:
        return "bradycardia"
    if bpm > 100.0:
        return "tachycardia"
    return "normal"


def rate_from_peaks(samples, fs):
    """Mean rate (bpm) and RR irregularity (RMSSD / mean RR) of R-peak sample indices."""
    rr = np.diff(np.asarray(samples, dtype=float)) / fs
    rmssd = float(np.sqrt(np.mean(np.diff(rr) ** 2))) if len(rr) > 1 else float("nan")
    return 60.0 / float(rr.mean()), rmssd / float(rr.mean())


def nk_peaks(signal, fs):
    """neurokit2's default R-peak detector (its ecg_clean + ecg_peaks)."""
    cleaned = nk.ecg_clean(signal, sampling_rate=fs)
    _, info = nk.ecg_peaks(cleaned, sampling_rate=fs)
    return cleaned, np.asarray(info["ECG_R_Peaks"])


def write(out, name, fs, names, **kwargs):
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=names,
                write_dir=str(out / "records"), **kwargs)


def mitdb(src, out, windows):
    record = wfdb.rdrecord(str(src / "100"), physical=False)
    ann = wfdb.rdann(str(src / "100"), "atr")
    fs = record.fs
    rhythm_changes = [(s, a.strip("\x00")) for s, a in zip(ann.sample, ann.aux_note) if a]
    beats = [(s, sym) for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS]
    for split, starts in (("test", MITDB_TEST_STARTS), ("dev", MITDB_DEV_STARTS)):
        for start in starts:
            a, b = int(round(start * fs)), int(round((start + WINDOW_S) * fs))
            rhythm = [r for s, r in rhythm_changes if s <= b]
            assert rhythm and rhythm[-1] == "(N" and all(r == "(N" for s, r in rhythm_changes
                                                         if a <= s < b), rhythm
            inside = [(s, sym) for s, sym in beats if a <= s < b]
            bpm, irregularity = rate_from_peaks([s for s, _ in inside], fs)
            kinds = {sym: sum(1 for _, k in inside if k == sym) for _, sym in inside}
            name = f"mitdb100_{int(start):04d}s"
            write(out, name, fs, record.sig_name, d_signal=record.d_signal[a:b].astype(np.int16),
                  fmt=["16"] * record.n_sig, adc_gain=record.adc_gain, baseline=record.baseline,
                  comments=[f"MIT-BIH Arrhythmia Database record 100, {start:.0f}-"
                            f"{start + WINDOW_S:.0f} s (ODC-By 1.0)"])
            windows.append({
                "record": name, "split": split, "source": "mitdb-100",
                "rhythm": "sinus", "rate_bpm": round(bpm, 1), "rate_class": rate_class(bpm),
                "leads": record.sig_name,
                "reference": f"100.atr: rhythm '(N' (normal sinus rhythm) throughout; "
                             f"{len(inside)} beats {kinds}; rate = 60 / mean RR of the annotated "
                             f"beats; RR irregularity {irregularity:.3f}",
            })


def ptbdb(src, out, windows):
    dat = wfdb.rdrecord(str(src / "s0010_re"), physical=False)
    phys = wfdb.rdrecord(str(src / "s0010_re"))
    fs = dat.fs
    ii = phys.sig_name.index("ii")
    for start in PTB_TEST_STARTS:
        a, b = int(round(start * fs)), int(round((start + WINDOW_S) * fs))
        cleaned, peaks = nk_peaks(phys.p_signal[a:b, ii], fs)
        bpm, irregularity = rate_from_peaks(peaks, fs)
        _, waves = nk.ecg_delineate(cleaned, peaks, sampling_rate=fs, method="dwt")
        p_found = int(np.sum(~np.isnan(np.asarray(waves["ECG_P_Peaks"], dtype=float))))
        # Sinus: regular RR and a P wave before (nearly) every QRS.
        assert irregularity < 0.05 and p_found >= 0.8 * len(peaks), (irregularity, p_found)
        name = f"ptb_s0010_re_{int(start):02d}s"
        write(out, name, fs, dat.sig_name, d_signal=dat.d_signal[a:b].astype(np.int16),
              fmt=["16"] * dat.n_sig, adc_gain=dat.adc_gain, baseline=dat.baseline,
              comments=[f"PTB Diagnostic ECG Database record s0010_re, {start:.0f}-"
                        f"{start + WINDOW_S:.0f} s (ODC-By 1.0); header: myocardial "
                        "infarction, infero-lateral"])
        windows.append({
            "record": name, "split": "test", "source": "ptbdb-s0010_re",
            "rhythm": "sinus", "rate_bpm": round(bpm, 1), "rate_class": rate_class(bpm),
            "leads": dat.sig_name,
            "reference": f"measured (no rhythm annotation): neurokit2 {nk.__version__} "
                         f"ecg_peaks on lead ii found {len(peaks)} beats, RR irregularity "
                         f"{irregularity:.3f} (regular), dwt delineation found P waves for "
                         f"{p_found}; rate = 60 / mean RR",
        })


def simulated(out, windows, method, spec, split):
    rate, seed = spec[0], spec[1]
    if method == "ecgsyn":
        noise, lead_set = spec[2], "single-II"
        ecg = nk.ecg_simulate(duration=WINDOW_S, sampling_rate=SIM_RATE_HZ, heart_rate=rate,
                              noise=noise, method="ecgsyn", random_state=seed)
        signals = {"II": np.asarray(ecg)}
        leads = ["II"]
    else:
        noise, lead_set = 0.01, spec[2]
        frame = nk.ecg_simulate(duration=WINDOW_S, sampling_rate=SIM_RATE_HZ, heart_rate=rate,
                                noise=noise, method="multileads", random_state=seed)
        signals = {lead: frame[lead].to_numpy() for lead in MULTILEADS_LEADS}
        leads = LEAD_SETS[lead_set]
    # The rate of the signal as simulated: neurokit2's detector on every simulated lead, the
    # median of the per-lead rates (on multileads' lead II, small QRS and tall T, and on a few
    # other leads its detector counts T waves; most leads agree), regularity from that lead.
    per_lead = []
    for lead, signal in signals.items():
        _, peaks = nk_peaks(signal, SIM_RATE_HZ)
        if len(peaks) >= 3:
            per_lead.append((rate_from_peaks(peaks, SIM_RATE_HZ), lead, len(peaks)))
    per_lead.sort()
    (bpm, irregularity), measured_on, beats = per_lead[len(per_lead) // 2]
    agreeing = sum(1 for (r, _), _, _ in per_lead if abs(r - bpm) <= 2.0)
    assert agreeing > len(per_lead) / 2, (method, rate, per_lead)
    assert rate_class(bpm) == rate_class(rate), (method, rate, bpm)
    name = f"nk2_{method}_{rate:03d}bpm_s{seed}"
    p_signal = np.column_stack([signals[lead] for lead in leads])
    write(out, name, SIM_RATE_HZ, leads, p_signal=p_signal, fmt=["16"] * len(leads),
          adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads),
          comments=[f"neurokit2 {nk.__version__} ecg_simulate(method={method!r}, "
                    f"heart_rate={rate}, noise={noise}, random_state={seed}, "
                    f"sampling_rate={SIM_RATE_HZ}), leads {lead_set}"])
    windows.append({
        "record": name, "split": split, "source": f"nk2-{method}",
        "rhythm": "sinus", "rate_bpm": round(bpm, 1), "rate_class": rate_class(bpm),
        "leads": leads,
        "reference": f"simulated sinus rhythm at a nominal {rate} bpm; rate = 60 / mean RR of "
                     f"neurokit2 ecg_peaks, median over the {len(per_lead)} simulated leads "
                     f"({agreeing} within 2 bpm; lead {measured_on}: {beats} beats, RR "
                     f"irregularity {irregularity:.3f})",
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample-data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("models/external"))
    args = parser.parse_args()
    records = args.out / "records"
    if records.exists():
        shutil.rmtree(records)
    records.mkdir(parents=True)
    windows = []
    mitdb(args.sample_data, args.out, windows)
    ptbdb(args.sample_data, args.out, windows)
    for split, specs in (("test", ECGSYN_TEST), ("dev", ECGSYN_DEV)):
        for spec in specs:
            simulated(args.out, windows, "ecgsyn", spec, split)
    for split, specs in (("test", MULTILEADS_TEST), ("dev", MULTILEADS_DEV)):
        for spec in specs:
            simulated(args.out, windows, "multileads", spec, split)
    manifest = {
        "window_s": WINDOW_S,
        "rate_classes": "bradycardia < 60 bpm, normal 60-100 bpm, tachycardia > 100 bpm",
        "generator": f"scripts/make_external_eval.py (neurokit2 {nk.__version__}, "
                     f"wfdb {wfdb.__version__}, numpy {np.__version__})",
        "windows": windows,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for split in ("test", "dev"):
        n = sum(1 for w in windows if w["split"] == split)
        print(f"{split}: {n} windows")


if __name__ == "__main__":
    main()
