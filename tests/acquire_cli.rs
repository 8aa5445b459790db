//! The acquisition commands from the outside: `meit replay` and `meit simulate`.

use std::process::Command;

fn meit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meit"))
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
    // Only I and II were recorded: the chest leads are missing, so no report, with reasons.
    assert!(
        windows[0].starts_with("rec window 0 [0.0-10.0 s]"),
        "{stdout}"
    );
    assert!(
        windows[0].contains("NO REPORT (") && windows[0].contains("V1 missing (required)"),
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
}
