//! End-to-end tests of `meit-models train-tokenizer`, `check-config` and `plot-loss`.

use std::process::{Command, Output};

fn meit_models(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meit-models"))
        .args(args)
        .output()
        .expect("the meit-models binary runs")
}

#[test]
fn train_tokenizer_writes_a_loadable_tokenizer_json() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let reports = dir.path().join("reports.txt");
    let lines = "sinus rhythm. normal ecg\n\nsinus bradycardia. abnormal ecg\natrial fibrillation. abnormal ecg\n";
    std::fs::write(&reports, lines.repeat(10))?;
    let out = dir.path().join("tokenizer.json");
    let run = meit_models(&[
        "train-tokenizer",
        "--reports",
        &reports.to_string_lossy(),
        "--vocab-size",
        "300",
        "--out",
        &out.to_string_lossy(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tokenizer = meit_models::tokenizer::ReportTokenizer::load(&out)?;
    let ids = tokenizer.encode("sinus rhythm. abnormal ecg")?;
    assert_eq!(tokenizer.decode(&ids, false)?, "sinus rhythm. abnormal ecg");
    Ok(())
}

#[test]
fn check_config_accepts_the_shipped_configs_and_rejects_a_broken_one()
-> Result<(), Box<dyn std::error::Error>> {
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
    for name in ["tiny.toml", "smollm2-edge.toml"] {
        let run = meit_models(&["check-config", &format!("{configs}/{name}")]);
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&run.stdout)?;
        assert!(
            json["model"]["decoder"]["num_layers"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
    }
    let dir = tempfile::tempdir()?;
    let broken = dir.path().join("broken.toml");
    let text = std::fs::read_to_string(format!("{configs}/tiny.toml"))?
        .replace("head_dim = 32 ", "head_dim = 16 ");
    std::fs::write(&broken, text)?;
    let run = meit_models(&["check-config", &broken.to_string_lossy()]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("head_dim"));
    Ok(())
}

#[test]
fn plot_loss_draws_the_metrics_of_a_run_and_names_a_missing_file()
-> Result<(), Box<dyn std::error::Error>> {
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/trained/tiny/metrics.jsonl");
    let metrics = std::fs::read_to_string(committed)?;
    let mut pngs = Vec::new();
    // The committed run, and the same run with the losses of its second half ten times larger
    // (on a log axis a uniform scale would move only the labels).
    let step = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
    };
    let half = metrics.lines().filter_map(step).max().ok_or("no steps")? / 2;
    let scaled: String = metrics
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let late = step(line) > Some(half);
            for key in ["loss", "validation_loss"].into_iter().filter(|_| late) {
                if let Some(loss) = v.get(key).and_then(serde_json::Value::as_f64) {
                    v[key] = serde_json::json!(loss * 10.0);
                }
            }
            v.to_string() + "\n"
        })
        .collect();
    for text in [metrics.as_str(), scaled.as_str()] {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("metrics.jsonl"), text)?;
        let run = meit_models(&["plot-loss", "--model", &dir.path().to_string_lossy()]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let png = std::fs::read(dir.path().join("loss.png"))?;
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        // IHDR: width and height, big-endian, after the signature and the chunk header.
        assert_eq!(&png[16..24], &[0, 0, 3, 132, 0, 0, 1, 244], "900 x 500");
        pngs.push(png);
    }
    assert_ne!(pngs[0], pngs[1], "the curve follows the losses");
    let empty = tempfile::tempdir()?;
    let run = meit_models(&["plot-loss", "--model", &empty.path().to_string_lossy()]);
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("metrics.jsonl"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Ok(())
}
