//! `meit run` end to end: a simulated bed streams over a real pty through the serial source,
//! the bed pipeline windows and judges the signal, and reports come out on standard output.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `meit run` on a one-bed simulated config with 2 s windows; kills it after `limit`.
fn run_simulated(bed: &str, windows: u64, limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meit.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nkind = \"simulated\"\nbed = \"{bed}\"\n\n[dsp]\nwindow_seconds = 2\nhop_seconds = 2\n\n[model]\nbundle = \"{}\"\n",
            dir.path().join("no-bundle").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meit"))
        .args([
            "run",
            "--output",
            "json",
            "--max-windows",
            &windows.to_string(),
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.is_some_and(|s| s.success()), out, err)
}

#[test]
fn simulated_bed_streams_windows_through_the_serial_path_to_stdout() {
    let bed = format!("run-test-{}", std::process::id());
    let (ok, out, err) = run_simulated(&bed, 3, Duration::from_secs(60));
    assert!(
        ok,
        "meit run failed or hung\nstdout:\n{out}\nstderr:\n{err}"
    );
    let reports: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(reports.len(), 3, "{out}");
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r["bed"], bed.as_str());
        assert_eq!(r["window_index"], i as u64);
        let q = r["quality_index"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&q), "{r}");
        let kind = r["outcome"]["kind"].as_str().unwrap();
        assert!(kind == "no_model" || kind == "no_report", "{r}");
        // Every window spans 2 s of device time and follows the previous one without a hole.
        let (start, end) = (
            r["device_start_ns"].as_u64().unwrap(),
            r["device_end_ns"].as_u64().unwrap(),
        );
        assert!((end - start).abs_diff(2_000_000_000) < 5_000_000, "{r}");
        if i > 0 {
            assert_eq!(
                start,
                reports[i - 1]["device_end_ns"].as_u64().unwrap(),
                "{out}"
            );
        }
    }
    assert!(err.contains("serial device connected"), "{err}");
}

#[test]
fn run_without_sources_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meit"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[source]] configured"));
}
