//! The acquisition commands from the outside: `meit replay` and `meit simulate`.

use std::process::Command;

fn meit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meit"))
}

#[test]
fn replay_fast_prints_one_line_per_window_with_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rec.csv");
    let mut text = String::from("time,I,II\n");
    for i in 0..1250 {
        text.push_str(&format!("{:.3},{},{}\n", i as f64 / 250.0, i % 7, -(i % 5)));
    }
    std::fs::write(&csv, text).unwrap();
    let out = meit()
        .args(["replay", "--fast", "--window-seconds", "2"])
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
    let windows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("window")).collect();
    assert_eq!(windows.len(), 3, "{stdout}");
    assert!(
        windows[0].contains("500 frames, gaps 0, uV I 0..6, II -4..0"),
        "{stdout}"
    );
    assert!(windows[2].contains("250 frames"), "{stdout}");
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
