//! The acquisition commands from the outside: `meit replay` and `meit simulate`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meit::ecg::Lead;
use meit::synth::{ConditionSet, RecordSpec, generate};
use meit::wfdb::{SignalFormat, WriteOptions, write_record};

fn meit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meit"))
}

/// Writes a synthesized record as WFDB `DIR/rec` (MIMIC-IV-ECG storage: format 16 at
/// 200 adu/mV), its signals described by `names` in standard lead order.
fn write_wfdb(dir: &Path, conditions: &str, rate_hz: f64, seconds: f64, names: [&str; 12]) {
    let spec = RecordSpec {
        sample_rate_hz: rate_hz,
        seconds,
        ..RecordSpec::ten_seconds(ConditionSet::parse_list(conditions).unwrap())
    };
    let recording = generate(&spec, 4).unwrap().recording;
    let options = WriteOptions {
        format: SignalFormat::Format16,
        adc_gain_per_mv: 200.0,
    };
    let mut header = write_record(dir, "rec", &recording, options, &[]).unwrap();
    for (s, name) in header.signals.iter_mut().zip(names) {
        s.description = name.to_string();
    }
    std::fs::write(dir.join("rec.hea"), header.to_text()).unwrap();
}

/// `meit replay --fast FILE` with a configuration whose model bundle does not exist (so the
/// outcome does not depend on what is built in this checkout); returns the bundle path too.
fn replay_fast(dir: &Path, file: &Path) -> (Output, PathBuf) {
    let bundle = dir.join("no-bundle");
    let config = dir.join("meit.toml");
    std::fs::write(
        &config,
        format!("[model]\nbundle = \"{}\"\n", bundle.display()),
    )
    .unwrap();
    let out = meit()
        .args(["replay", "--fast", "--config"])
        .arg(&config)
        .arg(file)
        .output()
        .unwrap();
    (out, bundle)
}

fn window_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("rec window"))
        .collect()
}

#[test]
fn replay_fast_runs_the_dsp_stage_and_prints_a_verdict_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rec.csv");
    // 25 s of a 72 bpm spike train on leads I and II at 250 Hz: two full 10 s windows.
    let mut text = String::from("time,I,II\n");
    for i in 0..6250 {
        let t = i as f64 / 250.0;
        let beat = if (t * 1.2).fract() < 0.04 {
            1000.0
        } else {
            0.0
        };
        text.push_str(&format!("{t:.3},{},{}\n", 0.6 * beat, beat));
    }
    std::fs::write(&csv, text).unwrap();
    let out = meit()
        .args(["replay", "--fast"])
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 leads at 250 Hz"), "{stdout}");
    let windows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("rec window"))
        .collect();
    assert_eq!(windows.len(), 2, "{stdout}");
    // Only I and II were recorded: the limb leads are derived, the chest leads masked (named),
    // not "missing (required)".
    assert!(
        windows[0].starts_with("rec window 0 [0.0-10.0 s]"),
        "{stdout}"
    );
    assert!(
        windows[0].contains("masked V1,V2,V3,V4,V5,V6") && !windows[0].contains("V1 missing"),
        "{stdout}"
    );
}

#[test]
fn replay_and_simulate_reject_bad_input_with_named_errors() {
    let out = meit()
        .args(["replay", "/nonexistent/x.csv"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.csv: cannot read"));
    let out = meit()
        .args(["simulate", "--condition", "vf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--condition `vf`"));
    let out = meit()
        .args(["simulate", "--bit-flip-rate", "2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bit-flip-rate 2"));
    for (args, named) in [
        (["--condition", "af+paced"], "--condition `af+paced`"),
        (["--sample-rate", "50"], "--sample-rate: sample rate 50 Hz"),
        (["--hr", "400"], "--hr: heart rate 400 bpm"),
        (["--noise", "3"], "--noise: artefact severity 3"),
        (["--leads", "I,I"], "--leads: 2 leads given"),
    ] {
        let out = meit().arg("simulate").args(args).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

#[test]
fn replay_of_a_synthesized_wfdb_record_prints_one_reportable_line_per_window() {
    let dir = tempfile::tempdir().unwrap();
    write_wfdb(
        dir.path(),
        "af+pvc",
        500.0,
        25.0,
        Lead::STANDARD_12.map(Lead::name),
    );
    let (out, bundle) = replay_fast(dir.path(), &dir.path().join("rec.hea"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("12 leads at 500 Hz, 25.0 s"), "{stdout}");
    let windows = window_lines(&stdout);
    assert_eq!(windows.len(), 2, "{stdout}");
    for (k, span) in ["[0.0-10.0 s]", "[10.0-20.0 s]"].iter().enumerate() {
        let line = windows[k];
        assert!(
            line.starts_with(&format!("rec window {k} {span} quality ")),
            "{line}"
        );
        // A clean 12-lead record is judged reportable; only the model is missing.
        let verdict = format!(
            ": signal reportable, no report generated: no model bundle at {}",
            bundle.display()
        );
        assert!(line.contains(&verdict), "{line}");
    }
}

#[test]
fn replay_of_wfdb_leaves_out_signals_that_are_not_standard_leads_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    // A 250 Hz record whose V1-V3 slots hold Frank leads; limb leads in other spellings.
    let names = [
        "i", "II", "iii", "AVR", "AVL", "AVF", "vx", "vy", "vz", "v4", "v5", "v6",
    ];
    write_wfdb(dir.path(), "normal", 250.0, 21.0, names);
    let (out, _) = replay_fast(dir.path(), &dir.path().join("rec.hea"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("9 leads at 250 Hz"), "{stdout}");
    assert!(
        stderr.contains("not one of the 12 standard leads") && stderr.contains("vx, vy, vz"),
        "{stderr}"
    );
    let windows = window_lines(&stdout);
    assert_eq!(windows.len(), 2, "{stdout}");
    // V1-V3 are masked (named), not required: the rest is judged reportable.
    assert!(
        windows[0].starts_with("rec window 0 [0.0-10.0 s]")
            && windows[0].contains("masked V1,V2,V3:")
            && windows[0].contains("signal reportable, no report generated"),
        "{stdout}"
    );
}

#[test]
fn replay_of_a_wfdb_record_without_a_standard_lead_fails_naming_its_signals() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["vx", "vy", "vz", "Resp", "ABP", "", "", "", "", "", "", ""];
    write_wfdb(dir.path(), "normal", 250.0, 2.0, names);
    let (out, _) = replay_fast(dir.path(), &dir.path().join("rec.hea"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no standard ECG lead among the signals (vx, vy, vz, Resp, ABP"),
        "{stderr}"
    );
}
